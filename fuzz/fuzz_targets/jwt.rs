//! Access tokens (src/livekit/token.rs): whatever the bytes, `verify` returns. A token it
//! accepts is HS256 over its exact first two parts with our secret (checked here independently
//! with HMAC-SHA256), names our key as issuer and has not expired.

#![no_main]

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use libfuzzer_sys::fuzz_target;
use rtcbox::config::ApiKey;
use rtcbox::livekit::token;
use rtcbox::secret::Secret;
use sha2::Sha256;

const SECRET: &str = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

fuzz_target!(|data: &[u8]| {
    let key = ApiKey::parse("APIfuzz").unwrap();
    let secret = Secret::new(SECRET);
    let text = String::from_utf8_lossy(data);
    // Half the inputs are re-signed correctly, so the claims parser sees everything too.
    let text = if data.first().is_some_and(|b| b & 1 == 1) {
        let body = text.get(1..).unwrap_or_default();
        let (head, _) = body.rsplit_once('.').unwrap_or((body, ""));
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(head.as_bytes());
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{head}.{signature}")
    } else {
        text.into_owned()
    };
    if let Ok(claims) = token::verify(&text, &key, &secret) {
        assert_eq!(claims.iss, "APIfuzz");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(claims.exp + 60 >= now, "expired: {}", claims.exp);
        let (head, signature) = text.rsplit_once('.').unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(head.as_bytes());
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .expect("an accepted signature is base64url");
        mac.verify_slice(&signature)
            .expect("an accepted token is signed with our secret");
        // What verifies re-signs and verifies again with the same claims.
        let again = token::sign(&claims, &secret).unwrap();
        assert_eq!(
            token::verify(&again, &key, &secret).unwrap().sub,
            claims.sub
        );
    }
});
