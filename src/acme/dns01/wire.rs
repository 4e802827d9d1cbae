//! The few DNS messages DNS-01 needs, as bytes (RFC 1035, RFC 2136): a query, an UPDATE that adds
//! or deletes one TXT record, and a parser for the answers. No IO, no clock.
//!
//! The parser takes whatever a server (or anything pretending to be one) sends: every length is
//! checked, compression pointers must point backwards, and a malformed message is a
//! [`WireError`], never a panic. It keeps where the last additional record starts, because a TSIG
//! MAC covers the message without its TSIG record ([`super::tsig`]).

use std::fmt;

/// Record types used here.
pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_TSIG: u16 = 250;
/// Classes: IN for data, NONE to delete one record (RFC 2136 §2.5.4), ANY for TSIG.
pub const CLASS_IN: u16 = 1;
pub const CLASS_NONE: u16 = 254;
pub const CLASS_ANY: u16 = 255;

const OPCODE_QUERY: u8 = 0;
const OPCODE_UPDATE: u8 = 5;
/// Longest name in wire form (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

/// A domain name in wire form (labels, then the root), lower case. Built from text or read
/// from a message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(Vec<u8>);

impl Name {
    /// `rtc.example.org` or `rtc.example.org.`; labels of 1 to 63 bytes, at most 255 in all.
    /// Letters are lowered (DNS compares names case-insensitively; TSIG wants them lowered).
    pub fn parse(text: &str) -> Result<Name, String> {
        let trimmed = text.trim().trim_end_matches('.');
        let mut wire = Vec::with_capacity(trimmed.len() + 2);
        if !trimmed.is_empty() {
            for label in trimmed.split('.') {
                let bytes = label.as_bytes();
                if bytes.is_empty() || bytes.len() > 63 {
                    return Err(format!("'{text}' has an empty label or one over 63 bytes"));
                }
                if bytes.iter().any(|b| !b.is_ascii_graphic()) {
                    return Err(format!("'{text}' has spaces or non-ASCII characters"));
                }
                wire.push(bytes.len() as u8);
                wire.extend(bytes.iter().map(u8::to_ascii_lowercase));
            }
        }
        wire.push(0);
        if wire.len() > MAX_NAME {
            return Err(format!("'{text}' is longer than 255 bytes"));
        }
        Ok(Name(wire))
    }

    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    /// Whether `self` is `zone` or below it.
    pub fn is_within(&self, zone: &Name) -> bool {
        self.0.ends_with(&zone.0) && {
            // The suffix must start at a label boundary.
            let mut at = 0;
            while at < self.0.len() && self.0.len() - at > zone.0.len() {
                at += 1 + usize::from(self.0[at]);
            }
            self.0.len() - at == zone.0.len()
        }
    }

    fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let len = usize::from(*self.0.get(at)?);
            if len == 0 {
                return None;
            }
            let label = self.0.get(at + 1..at + 1 + len)?;
            at += 1 + len;
            Some(label)
        })
    }
}

/// `rtc.example.org.`; bytes that are not printable appear as `\DDD`.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for label in self.labels() {
            any = true;
            for &byte in label {
                if byte.is_ascii_graphic() && byte != b'.' && byte != b'\\' {
                    write!(f, "{}", byte as char)?;
                } else {
                    write!(f, "\\{byte:03}")?;
                }
            }
            f.write_str(".")?;
        }
        if !any {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// A query for `name`/`rtype` without recursion (asked of an authoritative server).
pub fn query(id: u16, name: &Name, rtype: u16) -> Vec<u8> {
    let mut out = header(id, OPCODE_QUERY, [1, 0, 0, 0]);
    out.extend_from_slice(name.wire());
    push_u16(&mut out, rtype);
    push_u16(&mut out, CLASS_IN);
    out
}

/// What an UPDATE does with the TXT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Adds it (to whatever the RRset holds already).
    Add { ttl: u32 },
    /// Deletes exactly this record; others of the same name stay (RFC 2136 §2.5.4).
    Delete,
}

/// An UPDATE of `zone` that adds or deletes the TXT record `name` = `text`, without
/// prerequisites. Not signed yet: [`super::tsig::sign`] appends the TSIG record.
pub fn update_txt(id: u16, zone: &Name, name: &Name, text: &str, change: Change) -> Vec<u8> {
    let mut out = header(id, OPCODE_UPDATE, [1, 0, 1, 0]);
    // Zone section: the zone's name, type SOA.
    out.extend_from_slice(zone.wire());
    push_u16(&mut out, TYPE_SOA);
    push_u16(&mut out, CLASS_IN);
    // Update section: one record.
    let (class, ttl) = match change {
        Change::Add { ttl } => (CLASS_IN, ttl),
        Change::Delete => (CLASS_NONE, 0),
    };
    out.extend_from_slice(name.wire());
    push_u16(&mut out, TYPE_TXT);
    push_u16(&mut out, class);
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdata = txt_rdata(text);
    push_u16(&mut out, rdata.len() as u16);
    out.extend_from_slice(&rdata);
    out
}

/// TXT RDATA: character strings of at most 255 bytes each. An ACME value is 43 bytes.
fn txt_rdata(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    for chunk in text.as_bytes().chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    if text.is_empty() {
        out.push(0);
    }
    out
}

fn header(id: u16, opcode: u8, counts: [u16; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    push_u16(&mut out, id);
    out.push(opcode << 3);
    out.push(0);
    for count in counts {
        push_u16(&mut out, count);
    }
    out
}

pub(super) fn push_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// A message as read back. Only what DNS-01 looks at is kept.
#[derive(Clone, Debug)]
pub struct Response {
    pub id: u16,
    pub is_response: bool,
    /// Authoritative answer (AA).
    pub authoritative: bool,
    /// The header's 4-bit RCODE (TSIG errors travel in the TSIG record).
    pub rcode: u8,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    /// The TSIG record, when the last additional record is one.
    pub tsig: Option<TsigRecord>,
}

/// A resource record with its RDATA as sent (names inside it not decompressed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

impl Record {
    /// A TXT record's text, its strings joined; `None` for other types or bad RDATA.
    pub fn txt(&self) -> Option<String> {
        if self.rtype != TYPE_TXT {
            return None;
        }
        let mut text = Vec::new();
        let mut rest = self.rdata.as_slice();
        while let Some((&len, tail)) = rest.split_first() {
            let piece = tail.get(..usize::from(len))?;
            text.extend_from_slice(piece);
            rest = &tail[usize::from(len)..];
        }
        String::from_utf8(text).ok()
    }
}

/// The TSIG record of a message (RFC 8945 §4.2) and where it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsigRecord {
    pub key: Name,
    pub algorithm: Name,
    pub time_signed: u64,
    pub fudge: u16,
    pub mac: Vec<u8>,
    pub original_id: u16,
    pub error: u16,
    pub other: Vec<u8>,
    /// Offset of the TSIG record in the message: the MAC covers the bytes before it.
    pub start: usize,
}

/// Why a message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message ends early")]
    Truncated,
    #[error("a name in the message is malformed")]
    BadName,
    #[error("a TSIG record is not the last record or is malformed")]
    BadTsig,
}

/// Reads a DNS message. Questions are skipped; answer and authority records are kept; of the
/// additional records only a final TSIG.
pub fn parse(message: &[u8]) -> Result<Response, WireError> {
    let mut reader = Reader { message, at: 0 };
    let id = reader.u16()?;
    let flags = reader.u16()?;
    let qdcount = reader.u16()?;
    let ancount = reader.u16()?;
    let nscount = reader.u16()?;
    let arcount = reader.u16()?;
    for _ in 0..qdcount {
        reader.name()?;
        reader.take(4)?;
    }
    let mut answers = Vec::new();
    for _ in 0..ancount {
        answers.push(reader.record()?.1);
    }
    let mut authority = Vec::new();
    for _ in 0..nscount {
        authority.push(reader.record()?.1);
    }
    let mut tsig = None;
    for index in 0..arcount {
        let (start, record) = reader.record()?;
        if record.rtype == TYPE_TSIG {
            if index + 1 != arcount {
                return Err(WireError::BadTsig);
            }
            tsig = Some(tsig_record(start, record)?);
        }
    }
    if tsig.is_some() && reader.at != message.len() {
        // Nothing may follow the TSIG record: the MAC would not cover it.
        return Err(WireError::BadTsig);
    }
    Ok(Response {
        id,
        is_response: flags & 0x8000 != 0,
        authoritative: flags & 0x0400 != 0,
        rcode: (flags & 0x000f) as u8,
        answers,
        authority,
        tsig,
    })
}

fn tsig_record(start: usize, record: Record) -> Result<TsigRecord, WireError> {
    // The algorithm name inside is uncompressed (RFC 8945 §4.2), so it is read from the RDATA.
    let rdata = record.rdata.as_slice();
    let mut reader = Reader {
        message: rdata,
        at: 0,
    };
    let algorithm = reader.name().map_err(|_| WireError::BadTsig)?;
    let mut fixed = || -> Result<_, WireError> {
        let time = reader.take(6)?;
        let time_signed = time.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let fudge = reader.u16()?;
        let mac_len = reader.u16()?;
        let mac = reader.take(usize::from(mac_len))?.to_vec();
        let original_id = reader.u16()?;
        let error = reader.u16()?;
        let other_len = reader.u16()?;
        let other = reader.take(usize::from(other_len))?.to_vec();
        Ok((time_signed, fudge, mac, original_id, error, other))
    };
    let (time_signed, fudge, mac, original_id, error, other) =
        fixed().map_err(|_| WireError::BadTsig)?;
    if reader.at != rdata.len() || record.class != CLASS_ANY {
        return Err(WireError::BadTsig);
    }
    Ok(TsigRecord {
        key: record.name,
        algorithm,
        time_signed,
        fudge,
        mac,
        original_id,
        error,
        other,
        start,
    })
}

struct Reader<'a> {
    message: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(len).ok_or(WireError::Truncated)?;
        let bytes = self.message.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A name at the current position, following compression pointers (each strictly
    /// backwards, so there are no loops).
    fn name(&mut self) -> Result<Name, WireError> {
        let mut wire = Vec::new();
        let mut at = self.at;
        let mut resume = None;
        loop {
            let len = *self.message.get(at).ok_or(WireError::Truncated)?;
            match len & 0xc0 {
                0x00 => {
                    let len = usize::from(len);
                    let label = self
                        .message
                        .get(at + 1..at + 1 + len)
                        .ok_or(WireError::Truncated)?;
                    wire.push(len as u8);
                    wire.extend(label.iter().map(u8::to_ascii_lowercase));
                    if wire.len() > MAX_NAME {
                        return Err(WireError::BadName);
                    }
                    at += 1 + len;
                    if len == 0 {
                        break;
                    }
                }
                0xc0 => {
                    let low = *self.message.get(at + 1).ok_or(WireError::Truncated)?;
                    let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                    if target >= at {
                        return Err(WireError::BadName);
                    }
                    resume.get_or_insert(at + 2);
                    at = target;
                }
                _ => return Err(WireError::BadName),
            }
        }
        self.at = resume.unwrap_or(at);
        Ok(Name(wire))
    }

    /// A record and its start offset.
    fn record(&mut self) -> Result<(usize, Record), WireError> {
        let start = self.at;
        let name = self.name()?;
        let rtype = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let len = self.u16()?;
        let rdata = self.take(usize::from(len))?.to_vec();
        Ok((
            start,
            Record {
                name,
                rtype,
                class,
                ttl,
                rdata,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    #[test]
    fn names_parse_lowered_and_refuse_bad_labels() {
        assert_eq!(name("RTC.Example.org.").to_string(), "rtc.example.org.");
        assert_eq!(
            name("_acme-challenge.rtc.test").wire()[..16],
            *b"\x0f_acme-challenge"
        );
        assert_eq!(name(".").wire(), [0]);
        for bad in ["a..b", "a b.c", &format!("{}.org", "x".repeat(64)), "ü.org"] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(Name::parse(&long).is_err(), "over 255 bytes");
    }

    #[test]
    fn within_compares_whole_labels() {
        let check = |child: &str, zone: &str, expected: bool| {
            assert_eq!(
                name(child).is_within(&name(zone)),
                expected,
                "{child} in {zone}"
            );
        };
        check("_acme-challenge.rtc.test", "rtc.test", true);
        check("rtc.test", "rtc.test", true);
        check("a.xrtc.test", "rtc.test", false);
        check("rtc.test", "a.rtc.test", false);
        check("anything.org", ".", true);
    }

    #[test]
    fn update_has_the_zone_and_one_record() {
        let message = update_txt(
            0x1234,
            &name("rtc.test"),
            &name("_acme-challenge.rtc.test"),
            "abc",
            Change::Add { ttl: 60 },
        );
        let mut expected = vec![0x12, 0x34, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 0];
        expected.extend_from_slice(b"\x03rtc\x04test\x00\x00\x06\x00\x01");
        expected.extend_from_slice(b"\x0f_acme-challenge\x03rtc\x04test\x00");
        expected.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 60, 0, 4, 3, b'a', b'b', b'c']);
        assert_eq!(message, expected);
        let delete = update_txt(
            1,
            &name("rtc.test"),
            &name("_acme-challenge.rtc.test"),
            "abc",
            Change::Delete,
        );
        let tail = &delete[delete.len() - 14..];
        assert_eq!(tail, [0, 16, 0, 254, 0, 0, 0, 0, 0, 4, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn a_response_with_compressed_names_is_read() {
        // A query for TXT _acme-challenge.rtc.test answered with one record (name compressed
        // to the question) and an SOA in the authority section.
        let mut message = query(7, &name("_acme-challenge.rtc.test"), TYPE_TXT);
        message[2] = 0x84; // QR, AA
        message[7] = 1; // ANCOUNT
        message[9] = 1; // NSCOUNT
        message.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 4, 3]);
        message.extend_from_slice(b"xyz");
        // SOA owner rtc.test: a pointer into the question's name (offset 12 + 16).
        message.extend_from_slice(&[0xc0, 28, 0, 6, 0, 1, 0, 0, 0, 60, 0, 0]);
        let response = parse(&message).unwrap();
        assert!(response.is_response && response.authoritative);
        assert_eq!(response.rcode, 0);
        assert_eq!(
            response.answers[0].name.to_string(),
            "_acme-challenge.rtc.test."
        );
        assert_eq!(response.answers[0].txt().as_deref(), Some("xyz"));
        assert_eq!(response.authority[0].name, name("rtc.test"));
        assert_eq!(response.tsig, None);
    }

    #[test]
    fn malformed_messages_are_errors() {
        let check = |bytes: &[u8], expected: WireError| {
            assert_eq!(parse(bytes).unwrap_err(), expected, "{bytes:?}");
        };
        check(&[0; 5], WireError::Truncated);
        // One question whose name points at itself.
        check(
            &[0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
            WireError::BadName,
        );
        // A label type 0x40 (obsolete extended label).
        check(
            &[0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0, 0, 1, 0, 1],
            WireError::BadName,
        );
        // An answer whose RDATA runs past the end.
        check(
            &[
                0, 0, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 16, 0, 1, 0, 0, 0, 0, 0, 9, 1,
            ],
            WireError::Truncated,
        );
    }
}
