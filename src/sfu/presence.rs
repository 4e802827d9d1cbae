//! Who joins and leaves rooms, for services outside the SFU (the delayed-leave delegation).
//!
//! The driver publishes a [`PresenceEvent`] when a participant is admitted and when the core
//! removes one, for whatever reason (it left, its session timed out, it was removed, its room
//! was deleted). The channel is a broadcast: a subscriber that falls behind is told how many
//! events it missed (`RecvError::Lagged`) and must ask the SFU who is present.

/// How many events a slow subscriber may fall behind before it loses some.
pub const PRESENCE_CAPACITY: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceEvent {
    Joined { room: String, identity: String },
    Left { room: String, identity: String },
}
