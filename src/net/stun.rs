//! STUN Binding (RFC 8489), sans-IO: the one exchange the media ports answer for anyone and the
//! setup checks use to probe them and to learn the public address.
//!
//! Server side: [`parse_binding_request`] and [`binding_success`] (XOR-MAPPED-ADDRESS plus
//! FINGERPRINT), combined in [`answer_plain_binding`]. Client side: [`binding_request`] and
//! [`parse_binding_success`] (XOR-MAPPED-ADDRESS, or the classic MAPPED-ADDRESS).
//!
//! The header is validated here (type bits, magic cookie, length a multiple of 4 and equal to
//! what follows the header); attributes are decoded with `rtc-stun`, webrtc-rs's codec, which the
//! TURN server will also use. Every function takes untrusted bytes and returns a typed error on
//! garbage, never panics.

use std::net::SocketAddr;

use rtc_stun::addr::MappedAddress;
use rtc_stun::attributes::{
    ATTR_FINGERPRINT, ATTR_MAPPED_ADDRESS, ATTR_USERNAME, ATTR_XORMAPPED_ADDRESS,
};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::message::{
    BINDING_ERROR, BINDING_REQUEST, BINDING_SUCCESS, Getter as _, Message, Setter,
    TransactionId as RawTransactionId,
};
use rtc_stun::xoraddr::XorMappedAddress;

/// The fixed value in every RFC 5389/8489 header, bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Header size: type, length, cookie, transaction id.
pub const HEADER_LEN: usize = 20;

/// A transaction's 96-bit id; an answer echoes its request's.
pub type TransactionId = [u8; 12];

/// What the media ports need to know about a Binding Request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingRequest {
    pub transaction_id: TransactionId,
    /// ICE connectivity checks always carry USERNAME (and MESSAGE-INTEGRITY); a request without
    /// it is a plain "what is my address" query.
    pub has_username: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("not a STUN message")]
    NotStun,
    #[error("the STUN length field does not match the message ({0})")]
    Length(String),
    #[error("malformed STUN attributes: {0}")]
    Malformed(String),
    #[error("STUN message type {0:#06x}, not the expected binding message")]
    UnexpectedType(u16),
    #[error("the STUN FINGERPRINT does not match")]
    Fingerprint,
    #[error("the STUN answer belongs to another transaction")]
    OtherTransaction,
    #[error("the STUN server answered with a binding error")]
    ErrorResponse,
    #[error("the STUN answer carries no usable (XOR-)MAPPED-ADDRESS: {0}")]
    NoAddress(String),
}

/// A fresh random transaction id (OS CSPRNG).
pub fn new_transaction_id() -> TransactionId {
    let mut id = [0u8; 12];
    // Unpredictability only guards against off-path spoofing of a probe's answer; should the OS
    // generator fail, a clock-derived id still keeps concurrent probes apart.
    if getrandom::fill(&mut id).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id.copy_from_slice(&nanos.to_be_bytes()[4..]);
    }
    id
}

/// Parses a Binding Request. Other STUN messages, truncated or padded input, and a FINGERPRINT
/// that does not match are errors.
pub fn parse_binding_request(bytes: &[u8]) -> Result<BindingRequest, StunError> {
    let message = decode(bytes)?;
    if message.typ != BINDING_REQUEST {
        return Err(StunError::UnexpectedType(message_type(bytes)));
    }
    Ok(BindingRequest {
        transaction_id: message.transaction_id.0,
        has_username: message.contains(ATTR_USERNAME),
    })
}

/// A Binding Success Response telling the requester `mapped` (the source address its request
/// came from) as XOR-MAPPED-ADDRESS, with FINGERPRINT: 40 bytes for IPv4, 52 for IPv6.
pub fn binding_success(transaction_id: &TransactionId, mapped: SocketAddr) -> Vec<u8> {
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; they want their IPv4 back.
    let ip = mapped.ip().to_canonical();
    encode(&[
        Box::new(BINDING_SUCCESS),
        Box::new(RawTransactionId(*transaction_id)),
        Box::new(XorMappedAddress {
            ip,
            port: mapped.port(),
        }),
        Box::new(FINGERPRINT),
    ])
}

/// A plain Binding Request (20 bytes, no attributes), as classic STUN clients send it.
pub fn binding_request(transaction_id: &TransactionId) -> Vec<u8> {
    encode(&[
        Box::new(BINDING_REQUEST),
        Box::new(RawTransactionId(*transaction_id)),
    ])
}

/// The address a Binding Success Response for `transaction_id` reports: XOR-MAPPED-ADDRESS, or
/// MAPPED-ADDRESS from servers that predate RFC 5389.
pub fn parse_binding_success(
    bytes: &[u8],
    transaction_id: &TransactionId,
) -> Result<SocketAddr, StunError> {
    let message = decode(bytes)?;
    if message.transaction_id.0 != *transaction_id {
        return Err(StunError::OtherTransaction);
    }
    if message.typ == BINDING_ERROR {
        return Err(StunError::ErrorResponse);
    }
    if message.typ != BINDING_SUCCESS {
        return Err(StunError::UnexpectedType(message_type(bytes)));
    }
    if let Ok(value) = message.get(ATTR_XORMAPPED_ADDRESS) {
        check_address_length(&value)?;
        let mut address = XorMappedAddress::default();
        address
            .get_from(&message)
            .map_err(|e| StunError::NoAddress(e.to_string()))?;
        return Ok(SocketAddr::new(address.ip, address.port));
    }
    if let Ok(value) = message.get(ATTR_MAPPED_ADDRESS) {
        check_address_length(&value)?;
        let mut address = MappedAddress::default();
        address
            .get_from(&message)
            .map_err(|e| StunError::NoAddress(e.to_string()))?;
        return Ok(SocketAddr::new(address.ip, address.port));
    }
    Err(StunError::NoAddress("neither attribute is present".into()))
}

/// The answer a media port gives to a plain Binding Request (one without USERNAME, so not an
/// ICE check) from `source`, or `None` for anything else, which the caller handles as before.
///
/// No amplification: the answer is at most 52 bytes and the smallest request 20, so an answer is
/// never more than 32 bytes larger than the datagram that caused it, and nothing is remembered.
pub fn answer_plain_binding(bytes: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    // Cheap test first: this runs on every datagram before the media path.
    if bytes.len() < HEADER_LEN || bytes[0] != 0x00 || bytes[1] != 0x01 || !has_cookie(bytes) {
        return None;
    }
    match parse_binding_request(bytes) {
        Ok(request) if !request.has_username => {
            Some(binding_success(&request.transaction_id, source))
        }
        _ => None,
    }
}

/// Whether `bytes` starts like a STUN Binding request (type and magic cookie; nothing decoded):
/// the first thing an ICE agent sends on a new ICE-TCP connection.
pub fn looks_like_binding_request(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] == 0x00 && bytes[1] == 0x01 && has_cookie(bytes)
}

/// Validates the header and decodes the attributes; checks FINGERPRINT when present.
pub(crate) fn decode(bytes: &[u8]) -> Result<Message, StunError> {
    if bytes.len() < HEADER_LEN || bytes[0] & 0xC0 != 0 || !has_cookie(bytes) {
        return Err(StunError::NotStun);
    }
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if length % 4 != 0 {
        return Err(StunError::Length(format!(
            "{length} is not a multiple of 4"
        )));
    }
    if HEADER_LEN + length != bytes.len() {
        return Err(StunError::Length(format!(
            "{length} attribute bytes announced, {} present",
            bytes.len() - HEADER_LEN
        )));
    }
    let mut message = Message::new();
    message
        .write(bytes)
        .map_err(|e| StunError::Malformed(e.to_string()))?;
    if message.contains(ATTR_FINGERPRINT) {
        // FINGERPRINT must be the last attribute: exactly 8 bytes before the end.
        let last_is_fingerprint = bytes.len() >= HEADER_LEN + 8
            && u16::from_be_bytes([bytes[bytes.len() - 8], bytes[bytes.len() - 7]])
                == ATTR_FINGERPRINT.value();
        if !last_is_fingerprint || FINGERPRINT.check(&message).is_err() {
            return Err(StunError::Fingerprint);
        }
    }
    Ok(message)
}

fn has_cookie(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) == MAGIC_COOKIE
}

fn message_type(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// A (XOR-)MAPPED-ADDRESS value is 8 bytes (IPv4) or 20 (IPv6): reserved, family, port, address.
fn check_address_length(value: &[u8]) -> Result<(), StunError> {
    let expected = match value.get(1) {
        Some(0x01) => 8,
        Some(0x02) => 20,
        _ => return Err(StunError::NoAddress("unknown address family".into())),
    };
    if value.len() != expected {
        return Err(StunError::NoAddress(format!(
            "{} bytes for a {expected}-byte address",
            value.len()
        )));
    }
    Ok(())
}

fn encode(setters: &[Box<dyn Setter>]) -> Vec<u8> {
    let mut message = Message::new();
    message
        .build(setters)
        .expect("type, transaction id, address and fingerprint setters cannot fail");
    message.raw
}

#[cfg(test)]
mod tests;
