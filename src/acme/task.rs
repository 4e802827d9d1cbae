//! The renewal loop: look at the stored ACME certificate, ask the CA for its renewal window
//! (ARI, at most as often as [`plan::ari_recheck_at`] allows), wait until [`plan::next`] says
//! so or the admin panel asks for a renewal ([`AcmeHandle::renew_now`]), order, store, install;
//! after a failure keep the old certificate and retry with [`plan::retry_delay`]. Every state
//! change is logged and shown on the dashboard.

use std::time::Duration;

use sqlx::SqlitePool;

use super::AcmeHandle;
use super::order::{self, OrderSetup};
use super::plan::{self, AcmeError, Next, Ports, Window};
use crate::db;
use crate::tls::TlsCertificates;

/// The loop wakes at least this often to look at the wall clock again (a suspended machine's
/// monotonic timers drift from it).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// Everything the loop uses.
pub struct AcmeTask {
    pub pool: SqlitePool,
    pub setup: OrderSetup,
    pub certificates: TlsCertificates,
    pub handle: AcmeHandle,
    /// rtcbox's public ports, named in advice about port forwarding.
    pub ports: Ports,
}

/// What the CA said about the stored certificate's renewal (ARI).
struct AriAnswer {
    /// The certificate it is about.
    chain_pem: String,
    /// `None`: the CA has no ARI or did not answer; a third of the lifetime then.
    window: Option<Window>,
    /// Where in the window to renew (0 to 1), drawn once per answer.
    pick: f64,
    /// Unix seconds when to ask again.
    ask_again: i64,
}

impl AcmeTask {
    /// Runs until the process ends.
    pub async fn run(self) {
        tracing::info!(
            domains = ?self.setup.domains,
            directory = %self.setup.directory,
            challenge = self.setup.responder.label(),
            "ACME: certificates come from the CA"
        );
        self.install_stored().await;
        let mut failures: u32 = 0;
        let mut announced_renewal = None;
        let mut ari: Option<AriAnswer> = None;
        loop {
            let now = db::unix_now();
            let asked = self.handle.take_renew_request();
            let stored = self.stored().await;
            let next = if asked {
                tracing::info!("ACME: a renewal was asked for in the admin panel");
                Next::OrderNow
            } else {
                if let Some((chain_pem, _)) = &stored {
                    self.refresh_ari(now, chain_pem, &mut ari).await;
                }
                let window = ari.as_ref().and_then(|a| Some((a.window?, a.pick)));
                plan::next(
                    now,
                    stored
                        .as_ref()
                        .map(|(_, f)| (f.names.as_slice(), f.not_before, f.not_after)),
                    &self.setup.domains,
                    window,
                )
            };
            if let Next::RenewAt(at) = next {
                if announced_renewal != Some(at) {
                    announced_renewal = Some(at);
                    let why = match ari.as_ref().and_then(|a| a.window) {
                        Some(_) => "in the CA's suggested window",
                        None => "when a third of its lifetime is left",
                    };
                    tracing::info!(
                        "ACME: the certificate for {} is renewed in {} days ({why})",
                        self.setup.domains.join(", "),
                        (at - now) / 86_400
                    );
                }
                self.handle.update(|s| {
                    s.state = "valid";
                    s.next_attempt = Some(at);
                });
                let ask_again = ari.as_ref().map_or(i64::MAX, |a| a.ask_again);
                self.sleep_until(at.min(ask_again)).await;
                continue;
            }
            self.handle.update(|s| s.state = "ordering");
            let replacing = stored.as_ref().and_then(|(chain_pem, facts)| {
                plan::replaces_stored(
                    now,
                    Some((facts.names.as_slice(), facts.not_after)),
                    &self.setup.domains,
                )
                .then_some(chain_pem.as_str())
            });
            let result = self.order_once(replacing).await;
            // A request that came while this order ran is answered by it.
            self.handle.take_renew_request();
            match result {
                Ok(facts) => {
                    failures = 0;
                    tracing::info!(
                        domains = ?self.setup.domains,
                        not_after = facts.not_after,
                        renewal_due = plan::renewal_due(facts.not_before, facts.not_after),
                        "ACME: installed a new certificate"
                    );
                    self.handle.update(|s| {
                        s.state = "valid";
                        s.last_error = None;
                        s.last_success = Some(db::unix_now());
                    });
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = plan::retry_delay(failures);
                    let retry_at = db::unix_now() + delay.as_secs() as i64;
                    let advice = plan::explain(&error, self.ports);
                    tracing::warn!(
                        "ACME: no certificate for {} ({advice}); the current certificate stays; \
                         retrying in {} s (error: {error})",
                        self.setup.domains.join(", "),
                        delay.as_secs()
                    );
                    self.handle.update(|s| {
                        s.state = "failed";
                        s.last_error = Some(advice);
                        s.next_attempt = Some(retry_at);
                    });
                    self.sleep_until(retry_at).await;
                }
            }
        }
    }

    /// At start, a stored ACME certificate that is still valid is served (the resolver may
    /// hold a self-signed one).
    async fn install_stored(&self) {
        if self.certificates.info().source == "acme" {
            return;
        }
        let Ok(Some(stored)) = db::certificates::acme(&self.pool).await else {
            return;
        };
        if stored.not_after <= db::unix_now() {
            return;
        }
        let key = db::certificates::acme_key(&self.pool).await;
        if let Ok(Some(key)) = key
            && let Err(e) = self.certificates.install(&stored.chain_pem, &key, "acme")
        {
            tracing::warn!("ACME: the stored certificate cannot be served ({e:#})");
        }
    }

    /// The stored ACME certificate (chain, facts), if there is a readable one.
    async fn stored(&self) -> Option<(String, crate::tls::LeafFacts)> {
        let stored = match db::certificates::acme(&self.pool).await {
            Ok(stored) => stored?,
            Err(e) => {
                tracing::warn!("ACME: cannot read the stored certificate ({e})");
                return None;
            }
        };
        let facts = crate::tls::leaf_facts(&stored.chain_pem).ok()?;
        Some((stored.chain_pem, facts))
    }

    /// Asks the CA for its renewal window of `chain_pem` unless `ari` holds an answer about it
    /// that is not due to be asked again. A CA without ARI is not asked again about the same
    /// certificate; a failed question keeps the previous window and is asked again later.
    async fn refresh_ari(&self, now: i64, chain_pem: &str, ari: &mut Option<AriAnswer>) {
        let previous = ari.take().filter(|a| a.chain_pem == chain_pem);
        if let Some(answer) = previous.as_ref()
            && answer.ask_again > now
        {
            *ari = previous;
            return;
        }
        let answer = match order::renewal_window(&self.pool, &self.setup, chain_pem).await {
            Ok(Some((window, retry_after))) => {
                if previous.as_ref().and_then(|a| a.window) != Some(window) {
                    tracing::info!(
                        window_start = window.start,
                        window_end = window.end,
                        "ACME: the CA suggests a renewal window (ARI)"
                    );
                }
                AriAnswer {
                    chain_pem: chain_pem.to_owned(),
                    window: Some(window),
                    pick: random_fraction(),
                    ask_again: plan::ari_recheck_at(now, retry_after),
                }
            }
            Ok(None) => AriAnswer {
                chain_pem: chain_pem.to_owned(),
                window: None,
                pick: 0.0,
                ask_again: i64::MAX,
            },
            Err(error) => {
                tracing::warn!(
                    "ACME: cannot ask the CA when to renew ({error}); asking again later, \
                     meanwhile renewing when a third of the lifetime is left"
                );
                let (window, pick) = previous.map_or((None, 0.0), |a| (a.window, a.pick));
                AriAnswer {
                    chain_pem: chain_pem.to_owned(),
                    window,
                    pick,
                    ask_again: plan::ari_recheck_at(now, Duration::ZERO),
                }
            }
        };
        *ari = Some(answer);
    }

    /// One order; on success the certificate is stored, then served. Returns what it says.
    async fn order_once(
        &self,
        replacing: Option<&str>,
    ) -> Result<crate::tls::LeafFacts, AcmeError> {
        let issued = order::obtain(&self.pool, &self.setup, replacing).await?;
        let facts = crate::tls::leaf_facts(&issued.chain_pem)
            .map_err(|e| AcmeError::Other(format!("the issued certificate: {e:#}")))?;
        let now = db::unix_now();
        db::certificates::store(
            &self.pool,
            "acme",
            &facts.names,
            &issued.chain_pem,
            &issued.key_pem,
            facts.not_after,
            now,
        )
        .await
        .map_err(|e| AcmeError::Other(format!("storing the certificate: {e}")))?;
        self.certificates
            .install(&issued.chain_pem, &issued.key_pem, "acme")
            .map_err(|e| AcmeError::Other(format!("serving the certificate: {e:#}")))?;
        Ok(facts)
    }
}

impl AcmeTask {
    /// Sleeps until `at` (at most [`LONGEST_SLEEP`]), or until a renewal is asked for.
    async fn sleep_until(&self, at: i64) {
        let wait = (at - db::unix_now()).clamp(1, i64::from(u32::MAX)) as u64;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(wait).min(LONGEST_SLEEP)) => {}
            () = self.handle.renew_requested() => {}
        }
    }
}

/// A uniform random number from 0 to 1.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
