//! The v1 `join_request` query parameter (src/livekit/signal.rs `decode_join_request`): base64url
//! of a `WrappedJoinRequest`, its `JoinRequest` plain or gzipped. The input is taken both as the
//! wrapped bytes (base64url-encoded here, so the protobuf and gzip layers are reached) and as the
//! raw parameter text. Whatever it is, decoding returns; a request it accepts, wrapped again
//! without compression, decodes to the same request.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use livekit_protocol as proto;
use prost::Message as _;
use rtcbox::livekit::signal::decode_join_request;

fuzz_target!(|data: &[u8]| {
    let _ = decode_join_request(&String::from_utf8_lossy(data));
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    if let Ok(request) = decode_join_request(&encoded) {
        let again = proto::WrappedJoinRequest {
            compression: 0,
            join_request: request.encode_to_vec(),
        }
        .encode_to_vec();
        let again = base64::engine::general_purpose::URL_SAFE.encode(again);
        assert_eq!(decode_join_request(&again), Ok(request));
    }
});
