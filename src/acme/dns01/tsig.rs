//! TSIG (RFC 8945): signing a DNS message with a shared key and checking the server's signed
//! answer. HMAC-SHA256 and HMAC-SHA512, through the RustCrypto `hmac`/`sha2` crates already in
//! the build. No IO; the time is an input.

use std::fmt;

use hmac::Hmac;

use super::wire::{self, CLASS_ANY, Name, Response, TYPE_TSIG};

/// Allowed difference between the signer's clock and ours, in seconds (RFC 8945 recommends 300).
pub const FUDGE: u16 = 300;

/// TSIG error codes (RFC 8945 §3), carried in the TSIG record of an answer.
pub const BADSIG: u16 = 16;
pub const BADKEY: u16 = 17;
pub const BADTIME: u16 = 18;
pub const BADTRUNC: u16 = 22;

pub use crate::config::TsigAlgorithm as Algorithm;

/// The algorithm's name inside TSIG records (RFC 8945 §6).
fn wire_name(algorithm: Algorithm) -> Name {
    Name::parse(algorithm.as_str()).expect("the algorithm names are valid DNS names")
}

fn mac_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::HmacSha256 => 32,
        Algorithm::HmacSha512 => 64,
    }
}

/// A TSIG key: its name, algorithm and secret. Debug never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    pub name: Name,
    pub algorithm: Algorithm,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"***")
            .finish()
    }
}

impl TsigKey {
    pub fn new(name: Name, algorithm: Algorithm, secret: Vec<u8>) -> TsigKey {
        TsigKey {
            name,
            algorithm,
            secret,
        }
    }
}

/// Appends a TSIG record to `message` (raising ARCOUNT) signed at unix time `now`; returns the
/// MAC, which the answer's MAC covers.
pub fn sign(message: &mut Vec<u8>, key: &TsigKey, now: u64) -> Vec<u8> {
    let fields = Fields {
        time_signed: now & 0xffff_ffff_ffff,
        fudge: FUDGE,
        error: 0,
        other: &[],
    };
    let mac = compute(key, &[&message[..], &variables(key, &fields)]);
    let id = [message[0], message[1]];
    let mut rdata = wire_name(key.algorithm).wire().to_vec();
    rdata.extend_from_slice(&fields.time_signed.to_be_bytes()[2..]);
    wire::push_u16(&mut rdata, fields.fudge);
    wire::push_u16(&mut rdata, mac.len() as u16);
    rdata.extend_from_slice(&mac);
    rdata.extend_from_slice(&id);
    wire::push_u16(&mut rdata, 0);
    wire::push_u16(&mut rdata, 0);
    message.extend_from_slice(key.name.wire());
    wire::push_u16(message, TYPE_TSIG);
    wire::push_u16(message, CLASS_ANY);
    message.extend_from_slice(&0u32.to_be_bytes());
    wire::push_u16(message, rdata.len() as u16);
    message.extend_from_slice(&rdata);
    let arcount = u16::from_be_bytes([message[10], message[11]]).wrapping_add(1);
    message[10..12].copy_from_slice(&arcount.to_be_bytes());
    mac
}

/// Why an answer's signature is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TsigError {
    #[error("the answer is not signed")]
    Unsigned,
    #[error("the answer is signed with another key ({0})")]
    OtherKey(String),
    #[error("the server reports TSIG error {}", error_name(*.0))]
    Reported(u16),
    #[error("the answer's signature does not match")]
    BadSignature,
    #[error("the answer was signed at {signed}, more than {fudge} s from this machine's clock")]
    BadTime { signed: u64, fudge: u16 },
}

/// Checks the TSIG of `response` (parsed from `message`) to a request whose MAC was
/// `request_mac`, at unix time `now`.
pub fn verify(
    message: &[u8],
    response: &Response,
    key: &TsigKey,
    request_mac: &[u8],
    now: u64,
) -> Result<(), TsigError> {
    let tsig = response.tsig.as_ref().ok_or(TsigError::Unsigned)?;
    if tsig.key != key.name || tsig.algorithm != wire_name(key.algorithm) {
        return Err(TsigError::OtherKey(format!(
            "{} {}",
            tsig.key, tsig.algorithm
        )));
    }
    if tsig.error != 0 {
        return Err(TsigError::Reported(tsig.error));
    }
    // The MAC covers the message as it was before the TSIG record was added: the original ID
    // and one additional record fewer.
    let mut unsigned = message
        .get(..tsig.start)
        .ok_or(TsigError::BadSignature)?
        .to_vec();
    if unsigned.len() < 12 {
        return Err(TsigError::BadSignature);
    }
    unsigned[..2].copy_from_slice(&tsig.original_id.to_be_bytes());
    let arcount = u16::from_be_bytes([unsigned[10], unsigned[11]]).wrapping_sub(1);
    unsigned[10..12].copy_from_slice(&arcount.to_be_bytes());
    let fields = Fields {
        time_signed: tsig.time_signed,
        fudge: tsig.fudge,
        error: tsig.error,
        other: &tsig.other,
    };
    let request_len = (request_mac.len() as u16).to_be_bytes();
    let expected = compute(
        key,
        &[
            &request_len,
            request_mac,
            &unsigned,
            &variables(key, &fields),
        ],
    );
    // A truncated MAC must keep at least half the output and 10 bytes (RFC 8945 §5.2.2.1).
    let shortest = (mac_len(key.algorithm) / 2).max(10);
    if tsig.mac.len() < shortest || tsig.mac.len() > expected.len() {
        return Err(TsigError::BadSignature);
    }
    if !constant_time_eq(&expected[..tsig.mac.len()], &tsig.mac) {
        return Err(TsigError::BadSignature);
    }
    if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
        return Err(TsigError::BadTime {
            signed: tsig.time_signed,
            fudge: tsig.fudge,
        });
    }
    Ok(())
}

/// The TSIG error's name, for messages.
pub fn error_name(code: u16) -> String {
    match code {
        BADSIG => "BADSIG".into(),
        BADKEY => "BADKEY".into(),
        BADTIME => "BADTIME".into(),
        BADTRUNC => "BADTRUNC".into(),
        other => other.to_string(),
    }
}

struct Fields<'a> {
    time_signed: u64,
    fudge: u16,
    error: u16,
    other: &'a [u8],
}

/// The TSIG variables the MAC covers after the message (RFC 8945 §4.3.3): names in canonical
/// (lowercase, uncompressed) form.
fn variables(key: &TsigKey, fields: &Fields<'_>) -> Vec<u8> {
    let mut out = key.name.wire().to_vec();
    wire::push_u16(&mut out, CLASS_ANY);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(wire_name(key.algorithm).wire());
    out.extend_from_slice(&fields.time_signed.to_be_bytes()[2..]);
    wire::push_u16(&mut out, fields.fudge);
    wire::push_u16(&mut out, fields.error);
    wire::push_u16(&mut out, fields.other.len() as u16);
    out.extend_from_slice(fields.other);
    out
}

fn compute(key: &TsigKey, parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: hmac::Mac + hmac::digest::KeyInit>(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match key.algorithm {
        Algorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(&key.secret, parts),
        Algorithm::HmacSha512 => run::<Hmac<sha2::Sha512>>(&key.secret, parts),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
