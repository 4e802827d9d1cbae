//! The LiveKit wire format. Today: access tokens. Signaling and Twirp arrive with the SFU.

pub mod token;
