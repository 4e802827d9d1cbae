//! LiveKit-style ids: a type prefix and 12 random base57 characters (`PA_…`, `TR_…`, `RM_…`).
//!
//! Clients check the prefixes (the Rust SDK panics on a participant sid without `PA_`, the JS SDK
//! only resolves track sids starting with `TR`), so every id the SFU hands out comes from here.

/// LiveKit's alphabet: no look-alike characters (0, 1, I, O, l).
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const LEN: usize = 12;

pub fn participant_sid() -> String {
    with_prefix("PA_")
}

pub fn room_sid() -> String {
    with_prefix("RM_")
}

/// `TR_` + `A`/`V` (kind) + source letter, as LiveKit writes them.
pub fn track_sid(video: bool, source: i32) -> String {
    let kind = if video { 'V' } else { 'A' };
    let source = match source {
        1 => 'C', // camera
        2 => 'M', // microphone
        3 => 'S', // screen share
        4 => 's', // screen share audio
        _ => 'U',
    };
    with_prefix(&format!("TR_{kind}{source}"))
}

fn with_prefix(prefix: &str) -> String {
    let mut bytes = [0u8; LEN];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    let mut id = String::with_capacity(prefix.len() + LEN);
    id.push_str(prefix);
    // 57 does not divide 256; the slight bias is irrelevant for identifiers.
    id.extend(
        bytes
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char),
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_prefixes_clients_check() {
        let pa = participant_sid();
        assert!(pa.starts_with("PA_") && pa.len() == 15, "{pa}");
        assert!(room_sid().starts_with("RM_"));
        assert!(track_sid(true, 1).starts_with("TR_VC"));
        assert!(track_sid(false, 2).starts_with("TR_AM"));
        assert_ne!(participant_sid(), participant_sid());
        assert!(pa[3..].bytes().all(|b| ALPHABET.contains(&b)));
    }
}
