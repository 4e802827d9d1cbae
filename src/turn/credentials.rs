//! TURN credentials in coturn's REST scheme (`use-auth-secret`), which Synapse's
//! `turn_shared_secret` produces for legacy 1:1 calls and which the SFU will mint for LiveKit
//! clients:
//!
//! - username `"<unix expiry>:<user>"` (coturn also accepts `"<user>:<expiry>"` and a bare
//!   `"<expiry>"`);
//! - password `base64(HMAC-SHA1(secret, username))`, standard alphabet with padding;
//! - the long-term key for MESSAGE-INTEGRITY is `MD5(username ":" realm ":" password)`
//!   (RFC 8489 §9.2.2).
//!
//! Pure functions of their inputs; `now` is an argument.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use md5::{Digest as _, Md5};
use sha1::Sha1;

use crate::secret::Secret;

/// Longest username accepted (coturn's limit is 512 bytes).
pub const MAX_USERNAME_LEN: usize = 512;

/// Why a REST username is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the username is empty or longer than {MAX_USERNAME_LEN} bytes")]
    Length,
    #[error("the username has no expiry timestamp")]
    NoTimestamp,
    #[error("the credentials expired at {0}")]
    Expired(u64),
}

/// The expiry (unix seconds) in a REST username, coturn's way: if the part before the first
/// `:` is all digits it is the timestamp; otherwise the part after the last `:` must be.
pub fn expiry(username: &str) -> Result<u64, CredentialError> {
    if username.is_empty() || username.len() > MAX_USERNAME_LEN {
        return Err(CredentialError::Length);
    }
    let digits = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (first, rest) = username.split_once(':').unwrap_or((username, ""));
    if let Some(ts) = digits(first) {
        return Ok(ts);
    }
    if rest.is_empty() {
        return Err(CredentialError::NoTimestamp);
    }
    username
        .rsplit_once(':')
        .and_then(|(_, last)| digits(last))
        .ok_or(CredentialError::NoTimestamp)
}

/// The password coturn (and Synapse) derive for `username` from the shared secret.
pub fn rest_password(secret: &Secret, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The password for `username` if it has not expired at `now` (unix seconds).
pub fn check_rest_username(
    secret: &Secret,
    username: &str,
    now: u64,
) -> Result<Secret, CredentialError> {
    let expires = expiry(username)?;
    if expires < now {
        return Err(CredentialError::Expired(expires));
    }
    Ok(Secret::new(rest_password(secret, username)))
}

/// A username valid until `expires` for `user`.
pub fn rest_username(expires: u64, user: &str) -> String {
    format!("{expires}:{user}")
}

/// The user part that marks credentials the SFU minted for one participant session
/// (`"<expiry>:sfu:<session>:<identity>"`, the session being the participant's sid, or empty
/// for credentials of no session). They are checked against the server's participant secret,
/// not the shared secret, and may relay only to the SFU's own media sockets; the session's
/// allocations end when it does ([`participant_session`]). Synapse's usernames are
/// `"<expiry>:@user:server"`, so the two never collide.
pub const PARTICIPANT_PREFIX: &str = "sfu:";

/// Whose secret signs a username.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CredentialKind {
    /// Minted by the SFU for a LiveKit participant: relays only to the SFU.
    Participant,
    /// coturn's REST scheme with the shared secret (Synapse, legacy 1:1 calls).
    Rest,
}

/// A participant username valid until `expires`, for one SFU session (its sid, which never
/// contains `:`; empty for none) of `identity`.
pub fn participant_username(expires: u64, session: &str, identity: &str) -> String {
    debug_assert!(!session.contains(':'), "a session id with ':'");
    rest_username(
        expires,
        &format!("{PARTICIPANT_PREFIX}{session}:{identity}"),
    )
}

/// The SFU session a participant username was minted for; `None` for REST usernames and
/// participant credentials of no session.
pub fn participant_session(username: &str) -> Option<&str> {
    if kind(username) != CredentialKind::Participant {
        return None;
    }
    let (_, user) = username.split_once(':')?;
    let (session, _) = user.strip_prefix(PARTICIPANT_PREFIX)?.split_once(':')?;
    (!session.is_empty()).then_some(session)
}

/// Which secret `username` must be checked against.
pub fn kind(username: &str) -> CredentialKind {
    let user = match username.split_once(':') {
        Some((first, rest)) if all_digits(first) => rest,
        _ => "",
    };
    if user.starts_with(PARTICIPANT_PREFIX) {
        CredentialKind::Participant
    } else {
        CredentialKind::Rest
    }
}

/// Who a username names, for people to read and for the per-identity quota: without its
/// expiry, and for participants the identity alone (no prefix, no session). Empty for a bare
/// timestamp.
pub fn user(username: &str) -> &str {
    let user = match username.split_once(':') {
        Some((first, rest)) if all_digits(first) => rest,
        _ => match username.rsplit_once(':') {
            Some((head, last)) if all_digits(last) => head,
            _ if all_digits(username) => "",
            _ => username,
        },
    };
    match kind(username) {
        CredentialKind::Participant => {
            let user = user.strip_prefix(PARTICIPANT_PREFIX).unwrap_or(user);
            user.split_once(':').map_or(user, |(_, identity)| identity)
        }
        CredentialKind::Rest => user,
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 8489 long-term credential key: MD5 of `username:realm:password`.
pub fn long_term_key(username: &str, realm: &str, password: &Secret) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.expose().as_bytes());
    md5.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_usernames_are_told_apart() {
        let name = participant_username(1_700_000_000, "PA_x", "alice");
        assert_eq!(name, "1700000000:sfu:PA_x:alice");
        assert_eq!(kind(&name), CredentialKind::Participant);
        assert_eq!(expiry(&name), Ok(1_700_000_000));
        assert_eq!(kind("1700000000:@bob:example.org"), CredentialKind::Rest);
        assert_eq!(kind("1700000000"), CredentialKind::Rest);
        // Only the part after the timestamp counts.
        assert_eq!(kind("sfu:alice:1700000000"), CredentialKind::Rest);
        assert_eq!(kind(":sfu:alice"), CredentialKind::Rest);
    }

    #[test]
    fn user_parts() {
        let check = |username: &str, expected: &str| assert_eq!(user(username), expected);
        check("1700000000:sfu:PA_x:alice", "alice");
        check(
            "1700000000:sfu::@alice:example.org:DEV",
            "@alice:example.org:DEV",
        );
        check("1700000000:@bob:example.org", "@bob:example.org");
        check("@bob:example.org:1700000000", "@bob:example.org");
        check("bob:1700000000", "bob");
        check("1700000000", "");
        check("sfu:alice:1700000000", "sfu:alice");
        check("no-expiry", "no-expiry");
    }

    #[test]
    fn participant_sessions() {
        let check = |username: &str, expected: Option<&str>| {
            assert_eq!(participant_session(username), expected, "{username}");
        };
        check(
            &participant_username(1, "PA_abc", "@a:b:DEV"),
            Some("PA_abc"),
        );
        check(&participant_username(1, "", "rtcbox-verify"), None);
        check("1700000000:@bob:example.org", None);
        check("1700000000:sfu:", None);
        check("sfu:PA_abc:alice:1700000000", None);
    }

    #[test]
    fn synapse_and_coturn_agree_on_the_password() {
        // The example from ../shared/reference/matrixrtc-auth.md §5 (Synapse's voip.py scheme).
        let secret = Secret::new("s3cret");
        assert_eq!(
            rest_password(&secret, "1700000000:@alice:example.com"),
            "XNVV4PFVMP9mroyuQ+NRSCZQ6xw="
        );
    }

    #[test]
    fn expiry_forms() {
        let check = |username: &str, expected: Result<u64, CredentialError>| {
            assert_eq!(expiry(username), expected, "{username}");
        };
        check("1700000000:@alice:example.com", Ok(1_700_000_000));
        check("1700000000", Ok(1_700_000_000));
        check("bob:1700000000", Ok(1_700_000_000));
        check("@alice:example.com:1700000000", Ok(1_700_000_000));
        check("@alice:example.com", Err(CredentialError::NoTimestamp));
        check("alice", Err(CredentialError::NoTimestamp));
        check(":", Err(CredentialError::NoTimestamp));
        check(
            "99999999999999999999999:x",
            Err(CredentialError::NoTimestamp),
        );
        check("", Err(CredentialError::Length));
        check(&"1".repeat(600), Err(CredentialError::Length));
    }

    #[test]
    fn expired_usernames_are_refused() {
        let secret = Secret::new("s3cret");
        let username = rest_username(1000, "bob");
        assert_eq!(username, "1000:bob");
        assert_eq!(
            check_rest_username(&secret, &username, 1000).unwrap(),
            Secret::new(rest_password(&secret, &username))
        );
        assert_eq!(
            check_rest_username(&secret, &username, 1001),
            Err(CredentialError::Expired(1000))
        );
    }

    #[test]
    fn long_term_key_is_md5_of_the_triple() {
        // MD5("user:realm:pass") computed independently (RFC 8489 §9.2.2's construction).
        let key = long_term_key("user", "realm", &Secret::new("pass"));
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8493fbc53ba582fb4c044c456bdc40eb");
    }
}
