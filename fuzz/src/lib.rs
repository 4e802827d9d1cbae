//! The fuzz targets' bodies (each `fuzz_targets/*.rs` calls one `run`), kept in a library so the
//! targets stay one line and share their helpers.

pub mod sfu;
pub mod turn;
// Shared with the seeded fuzz loop of the integration tests.
#[path = "../../tests/it/turn_fuzzing.rs"]
mod turn_fuzzing;

pub use turn_fuzzing::checked_frame;
pub mod twirp;

/// Splits `data` into records: one byte saying what, two bytes of length, that many bytes.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (record, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((op, record))
    })
}
