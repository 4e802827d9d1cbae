//! LiveKit room names and identities, derived exactly as lk-jwt-service and the Matrix clients do
//! (MSC4195): unpadded standard base64 of SHA-256 over the compact JSON array of the parts.
//!
//! The JSON is serde_json's compact form, which equals JavaScript's `JSON.stringify` for strings,
//! because matrix-js-sdk computes the same hash to map E2EE keys to participants.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest as _, Sha256};

/// The slot of every Element Call call; `/sfu/get` always uses it.
pub const CALL_SLOT: &str = "m.call#ROOM";

/// The LiveKit room for a Matrix room and slot.
pub fn room_alias(room_id: &str, slot_id: &str) -> String {
    hash_parts(&[room_id, slot_id])
}

/// The LiveKit identity for `/get_token`: hash of user, claimed device and membership id.
pub fn rtc_identity(user_id: &str, device_id: &str, member_id: &str) -> String {
    hash_parts(&[user_id, device_id, member_id])
}

/// The LiveKit identity for the legacy `/sfu/get`: `<mxid>:<device_id>`.
pub fn legacy_identity(user_id: &str, device_id: &str) -> String {
    format!("{user_id}:{device_id}")
}

fn hash_parts(parts: &[&str]) -> String {
    let json = serde_json::to_vec(parts).expect("a list of strings always serialises");
    STANDARD_NO_PAD.encode(Sha256::digest(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msc4195_test_vectors() {
        let check = |got: String, want: &str| assert_eq!(got, want);
        check(
            room_alias("!roomid:example.com", "slot1234"),
            "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc",
        );
        check(
            room_alias("!tDLCaLXijNtYcJZEey:example.com", CALL_SLOT),
            "ZTyUV3ZQszO5Jp4u6Wc/s2q3djpWicH5oS8B5nxw5D4",
        );
        check(
            rtc_identity("@alice:example.com", "DEVICE123", "memberABC"),
            "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU",
        );
    }

    #[test]
    fn json_escaping_follows_javascript_not_go() {
        // JSON.stringify(["a<b","&"]) leaves < and & alone (Go would write \u003c and \u0026).
        let ours = hash_parts(&["a<b", "&"]);
        let js = STANDARD_NO_PAD.encode(Sha256::digest(br#"["a<b","&"]"#));
        assert_eq!(ours, js);
        // Quotes and control characters are escaped as JSON.stringify does.
        let js = STANDARD_NO_PAD.encode(Sha256::digest(br#"["q\"","\n"]"#));
        assert_eq!(hash_parts(&["q\"", "\n"]), js);
    }

    #[test]
    fn legacy_identity_joins_with_a_colon() {
        assert_eq!(
            legacy_identity("@alice:example.com", "DEV"),
            "@alice:example.com:DEV"
        );
        assert_eq!(
            legacy_identity("@alice:example.com", ""),
            "@alice:example.com:"
        );
    }
}
