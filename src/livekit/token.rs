//! LiveKit access tokens: HS256 JWTs whose `iss` is the API key and whose `video` claim carries
//! the grants (field names as LiveKit's `VideoGrant` JSON).
//!
//! Verification is strict: the algorithm is pinned to HS256, `iss` must be our key, `exp` is
//! required, `nbf` is honoured, with LiveKit's 60 s leeway.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::ApiKey;
use crate::secret::Secret;

/// Clock skew tolerated on `exp` and `nbf`, as LiveKit does.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// The `video` claim. Optional booleans keep LiveKit's meaning of "absent" (see each field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_join: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub room: String,
    /// Absent means true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    /// Absent means true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    /// Absent means the value of `can_publish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    /// Absent means false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub hidden: bool,
}

/// The claims rtcbox writes and reads. Unknown claims in tokens from other minters are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoGrant>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
    #[error("invalid token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
}

/// Signs a token for `identity` valid from `now_unix` for `ttl`.
pub fn mint(
    key: &ApiKey,
    secret: &Secret,
    identity: &str,
    video: VideoGrant,
    ttl: Duration,
    now_unix: u64,
) -> Result<String, TokenError> {
    let claims = Claims {
        iss: key.as_str().to_owned(),
        sub: identity.to_owned(),
        iat: Some(now_unix),
        nbf: Some(now_unix),
        exp: now_unix + ttl.as_secs(),
        name: None,
        metadata: None,
        video: Some(video),
    };
    sign(&claims, secret)
}

/// Signs arbitrary claims with HS256 (the caller sets `iss` to the key).
pub fn sign(claims: &Claims, secret: &Secret) -> Result<String, TokenError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(TokenError::Sign)
}

/// Verifies a token signed with our key pair, against the system clock.
pub fn verify(token: &str, key: &ApiKey, secret: &Secret) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[key.as_str()]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(TokenError::Invalid)
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn key() -> ApiKey {
        ApiKey::parse("APIkey123").unwrap()
    }
    fn secret() -> Secret {
        Secret::new("s".repeat(40))
    }
    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
    fn join(room: &str) -> VideoGrant {
        VideoGrant {
            room_join: true,
            room: room.into(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn minted_token_has_livekit_claims_and_verifies() {
        let now = now();
        let token = mint(
            &key(),
            &secret(),
            "@a:b:DEV",
            join("room1"),
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "iss": "APIkey123", "sub": "@a:b:DEV", "iat": now, "nbf": now, "exp": now + 3600,
                "video": {"roomJoin": true, "room": "room1", "canPublish": true, "canSubscribe": true}
            })
        );
        let header = token.split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");

        let claims = verify(&token, &key(), &secret()).unwrap();
        assert_eq!(claims.video.unwrap().room, "room1");
    }

    #[test]
    fn verification_is_strict() {
        let now = now();
        let good = mint(
            &key(),
            &secret(),
            "id",
            join("r"),
            Duration::from_secs(600),
            now,
        )
        .unwrap();
        // Wrong secret, wrong issuer.
        assert!(verify(&good, &key(), &Secret::new("t".repeat(40))).is_err());
        assert!(verify(&good, &ApiKey::parse("other").unwrap(), &secret()).is_err());
        // Expired beyond the leeway; within the leeway is accepted.
        let old = mint(
            &key(),
            &secret(),
            "id",
            join("r"),
            Duration::from_secs(10),
            now - 100,
        )
        .unwrap();
        assert!(verify(&old, &key(), &secret()).is_err());
        let recent = mint(
            &key(),
            &secret(),
            "id",
            join("r"),
            Duration::from_secs(10),
            now - 30,
        )
        .unwrap();
        assert!(verify(&recent, &key(), &secret()).is_ok());
        // Not yet valid beyond the leeway.
        let future = mint(
            &key(),
            &secret(),
            "id",
            join("r"),
            Duration::from_secs(600),
            now + 300,
        )
        .unwrap();
        assert!(verify(&future, &key(), &secret()).is_err());
        // Another algorithm with the same secret is refused (alg pinned).
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"iss": "APIkey123", "sub": "id", "exp": now + 600}),
            &EncodingKey::from_secret(secret().expose().as_bytes()),
        )
        .unwrap();
        assert!(verify(&hs512, &key(), &secret()).is_err());
        // exp is required.
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"iss": "APIkey123", "sub": "id"}),
            &EncodingKey::from_secret(secret().expose().as_bytes()),
        )
        .unwrap();
        assert!(verify(&no_exp, &key(), &secret()).is_err());
        // "none" and garbage.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"APIkey123","exp":{}}}"#, now + 600));
        assert!(verify(&format!("{header}.{body}."), &key(), &secret()).is_err());
        for garbage in ["", ".", "a.b.c", "\u{0}\u{1}", &"x".repeat(10_000)] {
            assert!(verify(garbage, &key(), &secret()).is_err());
        }
    }
}
