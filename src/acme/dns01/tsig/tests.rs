//! The vector is a real exchange: Knot DNS 3.2.6's `knsupdate` signed an UPDATE (adding
//! `_acme-challenge.rtc.test. 60 TXT "vector-value"` to zone `rtc.test.`) with the key
//! `rtcbox-key.` (hmac-sha256, secret bytes 0..32), and `knotd` answered it, signed. Neither
//! side is ours, so matching both MACs checks the signer and the verifier against another
//! implementation.

use super::*;
use crate::acme::dns01::wire;

const REQUEST: &str = "7e612800000100000001000103727463047465737400000600010f5f61636d652d6368616c6c656e6765c00c001000010000003c000d0c766563746f722d76616c75650a727463626f782d6b65790000fa00ff00000000003d0b686d61632d7368613235360000006b12da76012c002051cc6d24193c36aa50622ef3a009000dcafce70540cb224263045912c41f49a37e6100000000";
const RESPONSE: &str = "7e61a800000100000000000103727463047465737400000600010a727463626f782d6b65790000fa00ff00000000003d0b686d61632d7368613235360000006b12da76012c00202486ff026bba3275250309b0c9f6d06e09fe9394f4a3d2b63dce02689fcb44837e6100000000";
const SIGNED_AT: u64 = 0x6b12_da76;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn key(secret: Vec<u8>) -> TsigKey {
    TsigKey::new(
        Name::parse("rtcbox-key.").unwrap(),
        Algorithm::HmacSha256,
        secret,
    )
}

fn vector_key() -> TsigKey {
    key((0u8..32).collect())
}

/// knsupdate's request without its TSIG record (ARCOUNT back to 0).
fn unsigned_request() -> (Vec<u8>, Vec<u8>) {
    let request = hex(REQUEST);
    let parsed = wire::parse(&request).unwrap();
    let tsig = parsed.tsig.unwrap();
    let mut unsigned = request[..tsig.start].to_vec();
    unsigned[11] = 0;
    (unsigned, tsig.mac)
}

#[test]
fn signing_reproduces_knsupdate_byte_for_byte() {
    let (mut message, their_mac) = unsigned_request();
    let mac = sign(&mut message, &vector_key(), SIGNED_AT);
    assert_eq!(mac, their_mac);
    assert_eq!(message, hex(REQUEST));
}

#[test]
fn knots_signed_answer_verifies_and_a_changed_one_does_not() {
    let (_, request_mac) = unsigned_request();
    let message = hex(RESPONSE);
    let response = wire::parse(&message).unwrap();
    assert_eq!(response.rcode, 0);
    let check = |message: &[u8], key: &TsigKey, request_mac: &[u8], now: u64| {
        let response = wire::parse(message).unwrap();
        verify(message, &response, key, request_mac, now)
    };
    assert_eq!(
        check(&message, &vector_key(), &request_mac, SIGNED_AT),
        Ok(())
    );
    // Within the fudge either way; outside it the clock is named.
    assert_eq!(
        check(&message, &vector_key(), &request_mac, SIGNED_AT + 300),
        Ok(())
    );
    assert_eq!(
        check(&message, &vector_key(), &request_mac, SIGNED_AT - 301),
        Err(TsigError::BadTime {
            signed: SIGNED_AT,
            fudge: 300
        })
    );
    // Another secret, another request MAC, a flipped header bit: the MAC does not match.
    assert_eq!(
        check(&message, &key(vec![1; 32]), &request_mac, SIGNED_AT),
        Err(TsigError::BadSignature)
    );
    let mut other_request = request_mac.clone();
    other_request[0] ^= 1;
    assert_eq!(
        check(&message, &vector_key(), &other_request, SIGNED_AT),
        Err(TsigError::BadSignature)
    );
    let mut flipped = message.clone();
    flipped[3] ^= 0x01; // RCODE NOERROR -> FORMERR
    assert_eq!(
        check(&flipped, &vector_key(), &request_mac, SIGNED_AT),
        Err(TsigError::BadSignature)
    );
    // Another key name.
    let other = TsigKey::new(
        Name::parse("other.").unwrap(),
        Algorithm::HmacSha256,
        (0u8..32).collect(),
    );
    assert!(matches!(
        check(&message, &other, &request_mac, SIGNED_AT),
        Err(TsigError::OtherKey(_))
    ));
    // Unsigned: the same answer without its TSIG record.
    let tsig_start = response.tsig.as_ref().unwrap().start;
    let mut unsigned = message[..tsig_start].to_vec();
    unsigned[11] = 0;
    assert_eq!(
        check(&unsigned, &vector_key(), &request_mac, SIGNED_AT),
        Err(TsigError::Unsigned)
    );
}

#[test]
fn a_reported_tsig_error_is_returned_before_any_mac_check() {
    // knot's answer to a wrong secret: NOTAUTH, TSIG error BADSIG, empty MAC.
    let mut message = hex(RESPONSE);
    let response = wire::parse(&message).unwrap();
    let start = response.tsig.unwrap().start;
    message.truncate(start);
    message[3] = (message[3] & 0xf0) | 9;
    message.extend_from_slice(b"\x0artcbox-key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x1d");
    message.extend_from_slice(b"\x0bhmac-sha256\x00\x00\x00\x6b\x12\xda\x76\x01\x2c\x00\x00");
    message.extend_from_slice(&[0x7e, 0x61, 0, 16, 0, 0]);
    let response = wire::parse(&message).unwrap();
    assert_eq!(response.rcode, 9);
    assert_eq!(
        verify(&message, &response, &vector_key(), &[1; 32], SIGNED_AT),
        Err(TsigError::Reported(BADSIG))
    );
    assert_eq!(error_name(BADSIG), "BADSIG");
}

#[test]
fn sha512_signs_with_a_64_byte_mac_and_algorithms_parse() {
    let mut message = wire::query(1, &Name::parse("rtc.test").unwrap(), wire::TYPE_SOA);
    let sha512 = TsigKey::new(
        Name::parse("k").unwrap(),
        Algorithm::HmacSha512,
        b"secret".to_vec(),
    );
    let mac = sign(&mut message, &sha512, 1);
    assert_eq!(mac.len(), 64);
    let parsed = wire::parse(&message).unwrap();
    assert_eq!(parsed.tsig.unwrap().algorithm.to_string(), "hmac-sha512.");
    assert_eq!(Algorithm::parse(" HMAC-SHA256 "), Ok(Algorithm::HmacSha256));
    assert!(
        Algorithm::parse("hmac-md5")
            .unwrap_err()
            .contains("hmac-sha256")
    );
    let shown = format!("{sha512:?}");
    assert!(shown.contains("***") && !shown.contains("115"), "{shown}");
}
