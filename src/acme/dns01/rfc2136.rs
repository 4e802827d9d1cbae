//! DNS-01 through dynamic updates (RFC 2136) signed with a TSIG key (RFC 8945), sent over TCP
//! to the server in `RTCBOX_ACME_DNS_SERVER` (usually the zone's primary). The zone is
//! `RTCBOX_ACME_DNS_ZONE`, or the owner of the SOA record that server returns for the record's
//! name. Every answer to an update must carry a valid TSIG from the same key before it counts
//! as done; what a refusal means is decided by [`update_outcome`], a pure function.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::TxtRecord;
use super::tsig::{self, TsigError, TsigKey};
use super::wire::{self, Change, Name};
use crate::config::{DnsServer, TsigAlgorithm};
use crate::secret::Secret;

/// One TCP exchange with the DNS server: connect, send, answer.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server, zone and key of `RTCBOX_ACME_DNS_*`.
#[derive(Clone, Debug)]
pub struct Rfc2136 {
    server: DnsServer,
    zone: Option<Name>,
    key: TsigKey,
}

impl Rfc2136 {
    /// From the settings (already checked by `config`): a key name, its algorithm and its
    /// base64 secret.
    pub fn new(
        server: DnsServer,
        zone: Option<&str>,
        key_name: &str,
        algorithm: TsigAlgorithm,
        secret: &Secret,
    ) -> Result<Rfc2136, String> {
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| "RTCBOX_ACME_DNS_TSIG_SECRET is not base64".to_owned())?;
        let name = Name::parse(key_name).map_err(|e| format!("RTCBOX_ACME_DNS_TSIG_KEY: {e}"))?;
        let zone = zone
            .map(Name::parse)
            .transpose()
            .map_err(|e| format!("RTCBOX_ACME_DNS_ZONE: {e}"))?;
        Ok(Rfc2136 {
            server,
            zone,
            key: TsigKey::new(name, algorithm, secret),
        })
    }

    /// Adds the record.
    pub async fn add(&self, record: &TxtRecord) -> Result<(), String> {
        self.update(
            record,
            Change::Add {
                ttl: super::TXT_TTL,
            },
        )
        .await
    }

    /// Deletes exactly this record (others of the same name, e.g. a wildcard's, stay).
    pub async fn delete(&self, record: &TxtRecord) -> Result<(), String> {
        self.update(record, Change::Delete).await
    }

    /// Whether the server itself answers the TXT record with this value.
    pub async fn serves(&self, record: &TxtRecord) -> Result<bool, String> {
        query_txt(&self.server, record).await
    }

    async fn update(&self, record: &TxtRecord, change: Change) -> Result<(), String> {
        let name = Name::parse(&record.name)?;
        let zone = match &self.zone {
            Some(zone) => zone.clone(),
            None => self.find_zone(&name).await?,
        };
        let id = random_id();
        let mut message = wire::update_txt(id, &zone, &name, &record.value, change);
        let now = crate::db::unix_now().max(0) as u64;
        let request_mac = tsig::sign(&mut message, &self.key, now);
        let answer = exchange(&self.server, &message).await?;
        let now = crate::db::unix_now().max(0) as u64;
        update_outcome(&answer, id, &self.key, &request_mac, now, &zone, &name)
            .map_err(|refusal| format!("{} {refusal}", self.server))
    }

    /// The zone holding `name`: the owner of the SOA the server returns for it (in the answer
    /// at a zone's apex, else in the authority section).
    async fn find_zone(&self, name: &Name) -> Result<Name, String> {
        let id = random_id();
        let answer = exchange(&self.server, &wire::query(id, name, wire::TYPE_SOA)).await?;
        let unknown = |why: String| {
            format!(
                "the DNS server {} does not say which zone holds {name} ({why}); set \
                 RTCBOX_ACME_DNS_ZONE",
                self.server
            )
        };
        let response = wire::parse(&answer).map_err(|e| unknown(e.to_string()))?;
        if response.id != id || !response.is_response {
            return Err(unknown("its answer is not for this query".into()));
        }
        if !response.authoritative {
            return Err(unknown(format!(
                "it is not authoritative for it: answer {}",
                rcode_name(response.rcode)
            )));
        }
        response
            .answers
            .iter()
            .chain(&response.authority)
            .find(|r| r.rtype == wire::TYPE_SOA && name.is_within(&r.name))
            .map(|soa| soa.name.clone())
            .ok_or_else(|| {
                unknown(format!(
                    "answer {} without an SOA",
                    rcode_name(response.rcode)
                ))
            })
    }
}

/// Why the server did not apply an update, in plain words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error(
        "does not accept the TSIG key {key}: {why}; compare RTCBOX_ACME_DNS_TSIG_KEY, \
         RTCBOX_ACME_DNS_TSIG_ALGORITHM and RTCBOX_ACME_DNS_TSIG_SECRET with the key configured \
         on the server"
    )]
    WrongKey { key: String, why: &'static str },
    #[error(
        "says this machine's clock is more than 5 minutes off its own (BADTIME); set the time \
         right (NTP)"
    )]
    Clock,
    #[error(
        "refused the update of zone {zone} (REFUSED): the server does not let key {key} update \
         it; allow it (knot: an acl with action: update for the key, on the zone; BIND: \
         update-policy or allow-update with the key)"
    )]
    Refused { zone: String, key: String },
    #[error(
        "refused the update of zone {zone} (NOTAUTH): it is not the zone's primary server, or \
         its policy does not let key {key} update the zone; point RTCBOX_ACME_DNS_SERVER at the \
         primary and allow the key to update the zone"
    )]
    NotAuthoritative { zone: String, key: String },
    #[error(
        "says {name} is not in zone {zone} (NOTZONE): set RTCBOX_ACME_DNS_ZONE to the zone that \
         holds it"
    )]
    NotZone { name: String, zone: String },
    #[error("does not take dynamic updates (NOTIMP)")]
    NotImplemented,
    #[error("could not apply the update ({0}); its log says why")]
    Failed(String),
    #[error("sent an answer rtcbox does not trust ({0})")]
    Untrusted(String),
}

/// What the answer to an UPDATE (request `id`, signed with `request_mac`) means. Success needs
/// NOERROR and a valid TSIG from `key`; error answers are read without one (servers must not
/// sign BADSIG/BADKEY answers, RFC 8945 §5.3.2), since they only ever mean failure.
pub fn update_outcome(
    message: &[u8],
    id: u16,
    key: &TsigKey,
    request_mac: &[u8],
    now: u64,
    zone: &Name,
    name: &Name,
) -> Result<(), UpdateError> {
    let response = wire::parse(message).map_err(|e| UpdateError::Untrusted(e.to_string()))?;
    if response.id != id || !response.is_response {
        return Err(UpdateError::Untrusted("it answers another request".into()));
    }
    let key_name = key.name.to_string();
    let tsig_error = response.tsig.as_ref().map_or(0, |t| t.error);
    match tsig_error {
        0 => {}
        tsig::BADSIG => {
            return Err(UpdateError::WrongKey {
                key: key_name,
                why: "the secret does not match (BADSIG)",
            });
        }
        tsig::BADKEY => {
            return Err(UpdateError::WrongKey {
                key: key_name,
                why: "the server does not know a key of this name and algorithm (BADKEY)",
            });
        }
        tsig::BADTIME => return Err(UpdateError::Clock),
        other => {
            return Err(UpdateError::Failed(format!(
                "TSIG error {}",
                tsig::error_name(other)
            )));
        }
    }
    let zone_name = zone.to_string();
    match response.rcode {
        0 => {}
        5 => {
            return Err(UpdateError::Refused {
                zone: zone_name,
                key: key_name,
            });
        }
        9 => {
            return Err(UpdateError::NotAuthoritative {
                zone: zone_name,
                key: key_name,
            });
        }
        10 => {
            return Err(UpdateError::NotZone {
                name: name.to_string(),
                zone: zone_name,
            });
        }
        4 => return Err(UpdateError::NotImplemented),
        other => return Err(UpdateError::Failed(rcode_name(other))),
    }
    match tsig::verify(message, &response, key, request_mac, now) {
        Ok(()) => Ok(()),
        Err(TsigError::BadTime { .. }) => Err(UpdateError::Clock),
        Err(error) => Err(UpdateError::Untrusted(error.to_string())),
    }
}

/// The RCODE's mnemonic (RFC 1035, RFC 2136).
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        other => format!("RCODE {other}"),
    }
}

/// Whether `server` answers the TXT record with this value (asked directly, no recursion).
pub async fn query_txt(server: &DnsServer, record: &TxtRecord) -> Result<bool, String> {
    let name = Name::parse(&record.name)?;
    let id = random_id();
    let answer = exchange(server, &wire::query(id, &name, wire::TYPE_TXT)).await?;
    let response =
        wire::parse(&answer).map_err(|e| format!("{server} sent a malformed answer ({e})"))?;
    if response.id != id || !response.is_response {
        return Err(format!("{server} answered another query"));
    }
    Ok(super::answer_holds(&response, &name, &record.value))
}

/// One DNS exchange over TCP (two-byte length before each message).
async fn exchange(server: &DnsServer, message: &[u8]) -> Result<Vec<u8>, String> {
    let addrs = crate::net::dns::lookup(&server.host, server.port)
        .await
        .map_err(|e| {
            format!(
                "the DNS server name {} cannot be resolved: {e}",
                server.host
            )
        })?;
    let attempt = async {
        let mut last = String::from("it has no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(mut stream) => {
                    let len = u16::try_from(message.len())
                        .map_err(|_| "the DNS message is too large".to_owned())?;
                    let mut framed = len.to_be_bytes().to_vec();
                    framed.extend_from_slice(message);
                    let io =
                        |e: std::io::Error| format!("the DNS exchange with {addr} failed: {e}");
                    stream.write_all(&framed).await.map_err(io)?;
                    let mut len = [0u8; 2];
                    stream.read_exact(&mut len).await.map_err(io)?;
                    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    stream.read_exact(&mut answer).await.map_err(io)?;
                    return Ok(answer);
                }
                Err(e) => {
                    last = format!(
                        "cannot connect to {addr} over TCP ({e}): is RTCBOX_ACME_DNS_SERVER \
                         right, and does the server listen on TCP?"
                    )
                }
            }
        }
        Err(last)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, attempt)
        .await
        .map_err(|_| {
            format!(
                "the DNS server {server} did not answer within {} s",
                EXCHANGE_TIMEOUT.as_secs()
            )
        })?
}

fn random_id() -> u16 {
    let mut id = [0u8; 2];
    // A predictable id only weakens spoofing protection, which TSIG provides anyway.
    let _ = getrandom::fill(&mut id);
    u16::from_be_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TsigKey {
        TsigKey::new(
            Name::parse("rtcbox-key").unwrap(),
            TsigAlgorithm::HmacSha256,
            vec![7; 32],
        )
    }

    /// An answer to request 0x0102 with `rcode`, unsigned, or with a TSIG record carrying
    /// `tsig_error` and an empty MAC (as servers answer key errors).
    fn answer(rcode: u8, tsig_error: Option<u16>) -> Vec<u8> {
        let zone = Name::parse("rtc.test").unwrap();
        let name = Name::parse("_acme-challenge.rtc.test").unwrap();
        let mut message = wire::update_txt(0x0102, &zone, &name, "v", Change::Delete);
        message[2] |= 0x80;
        message[3] = rcode;
        if let Some(error) = tsig_error {
            message[11] = 1;
            message
                .extend_from_slice(b"\x0artcbox-key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x1d");
            message
                .extend_from_slice(b"\x0bhmac-sha256\x00\x00\x00\x00\x00\x00\x01\x01\x2c\x00\x00");
            message.extend_from_slice(&[1, 2]);
            message.extend_from_slice(&error.to_be_bytes());
            message.extend_from_slice(&[0, 0]);
        }
        message
    }

    fn check(message: &[u8], expected: Result<(), &str>) {
        let outcome = update_outcome(
            message,
            0x0102,
            &key(),
            &[0; 32],
            1,
            &Name::parse("rtc.test").unwrap(),
            &Name::parse("_acme-challenge.rtc.test").unwrap(),
        )
        .map_err(|e| e.to_string());
        match (outcome, expected) {
            (Ok(()), Ok(())) => {}
            (Err(text), Err(want)) => assert!(text.contains(want), "{text:?} lacks {want:?}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn rcodes_and_tsig_errors_become_plain_words() {
        check(
            &answer(9, Some(tsig::BADSIG)),
            Err("does not accept the TSIG key rtcbox-key.: the secret does not match (BADSIG)"),
        );
        check(
            &answer(9, Some(tsig::BADKEY)),
            Err("does not know a key of this name and algorithm (BADKEY)"),
        );
        check(&answer(9, Some(tsig::BADTIME)), Err("clock"));
        check(
            &answer(5, None),
            Err("refused the update of zone rtc.test. (REFUSED)"),
        );
        check(
            &answer(9, None),
            Err("(NOTAUTH): it is not the zone's primary"),
        );
        check(
            &answer(10, None),
            Err("_acme-challenge.rtc.test. is not in zone rtc.test. (NOTZONE)"),
        );
        check(&answer(4, None), Err("does not take dynamic updates"));
        check(
            &answer(2, None),
            Err("could not apply the update (SERVFAIL)"),
        );
        // NOERROR counts only when signed by the key.
        check(&answer(0, None), Err("not signed"));
        check(&answer(0, Some(0)), Err("signature does not match"));
        // Not an answer to this request, or garbage.
        let mut other = answer(0, None);
        other[1] = 9;
        check(&other, Err("another request"));
        check(&[1, 2, 0x80], Err("ends early"));
    }

    #[test]
    fn rcode_names() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(15), "RCODE 15");
    }
}
