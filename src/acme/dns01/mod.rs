//! DNS-01 (RFC 8555 §8.4): the CA looks up the TXT record `_acme-challenge.<name>`, whose value
//! is the base64url SHA-256 of the key authorization. [`Dns01`] is the [`super::order::Responder`]
//! behind `RTCBOX_ACME_CHALLENGE=dns-01`: it publishes the record through a provider, waits
//! until the record is visible where the CA will look, and deletes it after the CA's verdict.
//!
//! - [`rfc2136`]: dynamic UPDATE signed with TSIG ([`tsig`]) to the admin's DNS server; visible
//!   means that server answers the TXT itself.
//! - [`cloudflare`]: Cloudflare's API with a token; visible means the zone's Cloudflare name
//!   servers answer it.
//! - manual: the dashboard shows the record to create; visible means this system's resolver
//!   (`net::dns`) returns it. Nothing is deleted by rtcbox (the log says it may go).
//!
//! While a record waits it is listed in [`super::AcmeStatus::pending_dns`] for the dashboard.
//! Failures come back as [`AcmeError::Dns`] in plain words naming the record.

pub mod cloudflare;
pub mod rfc2136;
pub mod tsig;
pub mod wire;

use std::time::Duration;

use super::plan::AcmeError;
use super::{AcmeHandle, PendingRecord};
use crate::config::DnsServer;

/// TTL of the published records: short, so a stale value does not linger in resolvers.
pub const TXT_TTL: u32 = 60;
/// How long a provider's record may take to become visible.
const AUTOMATIC_WAIT: Duration = Duration::from_secs(120);
/// How long the admin has to create a manual record.
const MANUAL_WAIT: Duration = Duration::from_secs(3600);

/// Who publishes the records.
#[derive(Clone, Debug)]
pub enum Provider {
    Rfc2136(rfc2136::Rfc2136),
    Cloudflare(cloudflare::Cloudflare),
    /// The admin creates the record. rtcbox waits until `check` (the zone's authoritative
    /// server, `RTCBOX_ACME_DNS_SERVER`) answers it, or without one this system's resolver.
    Manual {
        check: Option<DnsServer>,
    },
}

/// The DNS-01 responder: a provider, and the status the dashboard reads.
#[derive(Clone, Debug)]
pub struct Dns01 {
    provider: Provider,
    handle: AcmeHandle,
}

/// A TXT record DNS-01 asks for. The value is public (it is in DNS), the key authorization
/// it digests is not and never leaves [`super::order`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtRecord {
    /// `_acme-challenge.rtc.example.org`, without a final dot.
    pub name: String,
    pub value: String,
}

impl TxtRecord {
    /// The record for `identifier` (see [`record_name`]).
    pub fn for_identifier(identifier: &str, value: String) -> TxtRecord {
        TxtRecord {
            name: record_name(identifier),
            value,
        }
    }
}

/// The name of the TXT record that proves `identifier` (as the CA names it; a wildcard
/// `*.example.org` is proven by `_acme-challenge.example.org`).
pub fn record_name(identifier: &str) -> String {
    let base = identifier.trim_start_matches("*.").trim_end_matches('.');
    format!("_acme-challenge.{}", base.to_ascii_lowercase())
}

/// A published record, to delete after the CA's verdict.
#[derive(Debug)]
pub struct PublishedTxt {
    record: TxtRecord,
    /// Cloudflare's record, which is deleted by its id.
    cloudflare: Option<cloudflare::Created>,
}

impl Dns01 {
    pub fn new(provider: Provider, handle: AcmeHandle) -> Dns01 {
        Dns01 { provider, handle }
    }

    fn by_hand(&self) -> bool {
        matches!(self.provider, Provider::Manual { .. })
    }

    /// Publishes `record` and returns once it is visible; on any failure nothing stays
    /// published.
    pub async fn publish(&self, record: TxtRecord) -> Result<PublishedTxt, AcmeError> {
        let failed = |detail: String| AcmeError::Dns {
            record: record.name.clone(),
            detail,
        };
        self.handle.update(|s| {
            s.pending_dns.push(PendingRecord {
                name: record.name.clone(),
                value: record.value.clone(),
                by_hand: self.by_hand(),
            })
        });
        let created = match &self.provider {
            Provider::Rfc2136(server) => server.add(&record).await.map(|()| None),
            Provider::Cloudflare(api) => api.add(&record).await.map(Some),
            Provider::Manual { .. } => {
                tracing::warn!(
                    "ACME: create the DNS record {} TXT \"{}\" (rtcbox waits up to {} min for \
                     it; the dashboard shows it too)",
                    record.name,
                    record.value,
                    MANUAL_WAIT.as_secs() / 60
                );
                Ok(None)
            }
        };
        let published = match created {
            Ok(cloudflare) => PublishedTxt {
                record: record.clone(),
                cloudflare,
            },
            Err(detail) => {
                self.forget(&record);
                return Err(failed(detail));
            }
        };
        if let Err(detail) = self.wait_until_visible(&published).await {
            self.withdraw(published).await;
            return Err(failed(detail));
        }
        tracing::info!(record = %record.name, "ACME: the TXT record is visible");
        Ok(published)
    }

    /// Deletes a published record; a failure is logged (the certificate matters more).
    pub async fn withdraw(&self, published: PublishedTxt) {
        self.forget(&published.record);
        let record = &published.record;
        let deleted = match (&self.provider, &published.cloudflare) {
            (Provider::Rfc2136(server), _) => server.delete(record).await,
            (Provider::Cloudflare(api), Some(created)) => api.delete(created).await,
            (Provider::Cloudflare(_), None) => Ok(()),
            (Provider::Manual { .. }, _) => {
                tracing::info!(
                    "ACME: the CA has looked; the DNS record {} TXT \"{}\" may be deleted now",
                    record.name,
                    record.value
                );
                Ok(())
            }
        };
        if let Err(detail) = deleted {
            tracing::warn!(
                "ACME: could not delete the DNS record {} ({detail}); delete it by hand",
                record.name
            );
        }
    }

    fn forget(&self, record: &TxtRecord) {
        self.handle.update(|s| {
            s.pending_dns
                .retain(|p| !(p.name == record.name && p.value == record.value))
        });
    }

    /// Polls until the record is visible where the provider says the CA will look.
    async fn wait_until_visible(&self, published: &PublishedTxt) -> Result<(), String> {
        let (limit, every) = if self.by_hand() {
            (MANUAL_WAIT, Duration::from_secs(10))
        } else {
            (AUTOMATIC_WAIT, Duration::from_secs(1))
        };
        let record = &published.record;
        let rounds = limit.as_secs() / every.as_secs();
        let mut last = String::new();
        for round in 0..=rounds {
            if round > 0 {
                tokio::time::sleep(every).await;
            }
            let seen = match (&self.provider, &published.cloudflare) {
                (Provider::Rfc2136(server), _) => server.serves(record).await,
                (Provider::Cloudflare(_), Some(created)) => created.serves(record).await,
                (
                    Provider::Manual {
                        check: Some(server),
                    },
                    _,
                ) => rfc2136::query_txt(server, record).await,
                _ => resolver_serves(record).await,
            };
            match seen {
                Ok(true) => return Ok(()),
                Ok(false) => last = "the value is not there yet".to_owned(),
                Err(reason) => last = reason,
            }
        }
        Err(format!(
            "the TXT record was not visible within {} s ({last})",
            limit.as_secs()
        ))
    }
}

/// Whether this system's resolver (`net::dns`, /etc/resolv.conf) returns `record`. A fresh
/// resolver each time, so no answer is cached between polls here.
async fn resolver_serves(record: &TxtRecord) -> Result<bool, String> {
    let (resolver, configured) = crate::net::dns::system_resolver();
    if !configured {
        return Err("this system has no DNS configuration (/etc/resolv.conf) to look it up".into());
    }
    match resolver.txt_lookup(format!("{}.", record.name)).await {
        Ok(found) => Ok(found.iter().any(|txt| {
            let joined: Vec<u8> = txt
                .txt_data()
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            joined == record.value.as_bytes()
        })),
        Err(error) if error.is_no_records_found() => Ok(false),
        Err(error) => Err(format!("looking it up failed: {error}")),
    }
}

/// Whether `answer` holds `record` among its TXT answers.
fn answer_holds(answer: &wire::Response, name: &wire::Name, value: &str) -> bool {
    answer
        .answers
        .iter()
        .any(|r| &r.name == name && r.txt().as_deref() == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_named_after_the_identifier() {
        let check = |identifier: &str, expected: &str| {
            assert_eq!(
                TxtRecord::for_identifier(identifier, "v".into()).name,
                expected,
                "{identifier}"
            );
        };
        check("rtc.example.org", "_acme-challenge.rtc.example.org");
        check("*.Example.org", "_acme-challenge.example.org");
        check("rtc.example.org.", "_acme-challenge.rtc.example.org");
    }
}
