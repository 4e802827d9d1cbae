//! Where one TURN message ends in a TCP or TLS byte stream (RFC 8656 §12.5), pure: the driver
//! appends what it reads to a buffer, asks [`next_frame`], hands each complete frame to
//! [`Server::handle_client`](crate::turn::server::Server::handle_client) and closes the
//! connection on [`Frame::Invalid`].
//!
//! - STUN (first two bits `00`): a 20-byte header whose length field counts the attributes,
//!   always a multiple of 4, and the magic cookie in bytes 4..8.
//! - ChannelData (first byte `0x40`–`0x7F`, channel numbers `0x4000`–`0x7FFE`, see
//!   [`CHANNELS`](crate::turn::server::CHANNELS)): a 4-byte header
//!   whose length counts the data, which over a stream is padded to a multiple of 4.
//! - Anything else cannot start a message: the stream is out of step or not TURN.

use crate::net::stun::{HEADER_LEN, MAGIC_COOKIE};

/// The longest frame either kind can announce (a STUN message with 65532 attribute bytes), and so
/// the most a connection's read buffer ever has to hold.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + 0xFFFC;

/// What the front of a stream holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole message yet: read more.
    Incomplete,
    /// The first this many bytes are one message (ChannelData with its padding).
    Complete(usize),
    /// Not a TURN stream: close the connection.
    Invalid,
}

/// How many bytes at the front of `buf` form one message.
pub fn next_frame(buf: &[u8]) -> Frame {
    let (Some(first), Some(length)) = (buf.first(), length_field(buf)) else {
        return match buf.first() {
            None | Some(0x00..=0x7F) => Frame::Incomplete,
            Some(_) => Frame::Invalid,
        };
    };
    let total = match first {
        0x00..=0x3F => {
            if length % 4 != 0 {
                return Frame::Invalid;
            }
            if let Some(cookie) = buf.get(4..8)
                && cookie != MAGIC_COOKIE.to_be_bytes()
            {
                return Frame::Invalid;
            }
            HEADER_LEN + length
        }
        0x40..=0x7F => 4 + length.next_multiple_of(4),
        _ => return Frame::Invalid,
    };
    if total > MAX_FRAME_LEN {
        Frame::Invalid
    } else if total <= buf.len() {
        Frame::Complete(total)
    } else {
        Frame::Incomplete
    }
}

/// What a new TLS connection on the public HTTPS port carries, judged by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A STUN message: a TURN client.
    Turn,
    /// Anything else (HTTP): the web server.
    Other,
    /// Too few bytes to tell: read more.
    Undecided,
}

/// The bytes [`opening`] needs at most.
pub const OPENING_LEN: usize = 8;

/// Whether a stream opens with a STUN message header: first two bits `00` and the magic cookie
/// in bytes 4..8. A TURN client's first message on a connection is always STUN (an Allocate or
/// Binding request): ChannelData needs a channel bound on that connection first. A leading
/// ChannelData-like byte (`0x40`–`0x7F`) is therefore not TURN — and it is how every HTTP
/// method starts (`G` is `0x47`, `P` is `0x50`).
pub fn opening(buf: &[u8]) -> Opening {
    match buf.first() {
        None => return Opening::Undecided,
        Some(0x00..=0x3F) => {}
        Some(_) => return Opening::Other,
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let seen = buf.get(4..buf.len().min(OPENING_LEN)).unwrap_or_default();
    if cookie.get(..seen.len()) != Some(seen) {
        Opening::Other
    } else if buf.len() < OPENING_LEN {
        Opening::Undecided
    } else {
        Opening::Turn
    }
}

/// Bytes 2..4, the length field both kinds share.
fn length_field(buf: &[u8]) -> Option<usize> {
    let field = buf.get(2..4)?;
    Some(usize::from(u16::from_be_bytes([
        *field.first()?,
        *field.get(1)?,
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(buf: &[u8], expected: Frame) {
        assert_eq!(next_frame(buf), expected, "{buf:02x?}");
    }

    fn stun_header(length: u16) -> Vec<u8> {
        let mut header = vec![0x00, 0x01];
        header.extend_from_slice(&length.to_be_bytes());
        header.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header.extend_from_slice(&[7; 12]);
        header
    }

    #[test]
    fn stun_frames() {
        let mut message = stun_header(8);
        message.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b't', b'e', b's', b't']);
        for cut in 0..message.len() {
            check(&message[..cut], Frame::Incomplete);
        }
        check(&message, Frame::Complete(28));
        // The next message's first bytes do not matter.
        let mut two = message.clone();
        two.extend_from_slice(&stun_header(0));
        check(&two, Frame::Complete(28));
        check(&stun_header(0), Frame::Complete(20));
        // Length not a multiple of 4, wrong cookie.
        check(&stun_header(6)[..4], Frame::Invalid);
        let mut no_cookie = stun_header(0);
        no_cookie[4] ^= 1;
        check(&no_cookie[..8], Frame::Invalid);
        check(&no_cookie[..7], Frame::Incomplete);
        // The largest a STUN length field allows is still a frame.
        check(&stun_header(0xFFFC), Frame::Incomplete);
    }

    #[test]
    fn channel_data_frames_are_padded() {
        check(&[0x40, 0x00, 0x00, 0x00], Frame::Complete(4));
        let data = [0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 0x40];
        check(&data[..9], Frame::Incomplete);
        check(&data[..11], Frame::Incomplete);
        check(&data[..12], Frame::Complete(12));
        check(&data, Frame::Complete(12));
        check(&[0x4F, 0xFF, 0x00, 0x04, 1, 2, 3, 4], Frame::Complete(8));
        check(&[0x40, 0x00, 0x00], Frame::Incomplete);
        // The longest ChannelData (65535 bytes, padded to 65536) fits the limit.
        check(&[0x4A, 0x00, 0xFF, 0xFF], Frame::Incomplete);
        const { assert!(4 + 0x10000 <= MAX_FRAME_LEN) };
    }

    fn check_opening(buf: &[u8], expected: Opening) {
        assert_eq!(opening(buf), expected, "{buf:02x?}");
    }

    #[test]
    fn openings() {
        // A STUN header is TURN once the cookie is complete; each shorter cut waits.
        let stun = stun_header(8);
        for cut in 0..OPENING_LEN {
            check_opening(&stun[..cut], Opening::Undecided);
        }
        check_opening(&stun[..OPENING_LEN], Opening::Turn);
        check_opening(&stun, Opening::Turn);
        // HTTP, at any length, even one byte.
        for request in [
            &b"GET /healthz HTTP/1.1\r\n"[..],
            b"POST /sfu/get HTTP/1.1\r\n",
        ] {
            for cut in 1..request.len() {
                check_opening(&request[..cut], Opening::Other);
            }
        }
        // ChannelData cannot open a connection; a TLS record inside TLS is garbage.
        check_opening(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], Opening::Other);
        check_opening(b"\x16\x03\x01\x02\x00", Opening::Other);
        // STUN-like first byte, wrong cookie: decided as soon as the first wrong byte is seen.
        let mut no_cookie = stun_header(0);
        no_cookie[5] ^= 1;
        check_opening(&no_cookie[..5], Opening::Undecided);
        check_opening(&no_cookie[..6], Opening::Other);
        // A leading empty line before an HTTP request (allowed by RFC 9112).
        check_opening(b"\r\nGET / HTTP/1.1", Opening::Other);
    }

    #[test]
    fn anything_else_is_invalid() {
        check(&[], Frame::Incomplete);
        for first in [0x80, 0xC0, 0xFF] {
            check(&[first], Frame::Invalid);
            check(&[first, 0, 0, 0], Frame::Invalid);
        }
        // TLS sent to the plain listener.
        check(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            Frame::Invalid,
        );
        // HTTP reads as ChannelData ("GE" is channel 0x4745, "PO" 0x504F) announcing thousands
        // of bytes: it waits for them, and the driver's first-message timeout ends it.
        check(b"POST / HTTP/1.1\r\n", Frame::Incomplete);
        check(b"GET / HTTP/1.1\r\n", Frame::Incomplete);
    }
}
