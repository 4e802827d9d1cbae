//! The renewal loop: look at the stored ACME certificate, wait until [`plan::next`] says so,
//! order, store, install; after a failure keep the old certificate and retry with
//! [`plan::retry_delay`]. Every state change is logged and shown on the dashboard.

use std::time::Duration;

use sqlx::SqlitePool;

use super::AcmeHandle;
use super::order::{self, OrderSetup};
use super::plan::{self, AcmeError, Next};
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
    /// rtcbox's public HTTP port, named in advice about port forwarding.
    pub http_port: u16,
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
        loop {
            let now = db::unix_now();
            let wake = match self.next(now).await {
                Next::OrderNow => None,
                Next::RenewAt(at) => Some(at),
            };
            if let Some(at) = wake {
                if announced_renewal != Some(at) {
                    announced_renewal = Some(at);
                    tracing::info!(
                        "ACME: the certificate for {} is renewed in {} days",
                        self.setup.domains.join(", "),
                        (at - now) / 86_400
                    );
                }
                self.handle.update(|s| {
                    s.state = "valid";
                    s.next_attempt = Some(at);
                });
                sleep_until(at).await;
                continue;
            }
            self.handle.update(|s| s.state = "ordering");
            match self.order_once().await {
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
                    let advice = plan::explain(&error, self.http_port);
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
                    sleep_until(retry_at).await;
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

    async fn next(&self, now: i64) -> Next {
        let stored = match db::certificates::acme(&self.pool).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!("ACME: cannot read the stored certificate ({e})");
                None
            }
        };
        let facts = stored
            .as_ref()
            .and_then(|s| crate::tls::leaf_facts(&s.chain_pem).ok());
        plan::next(
            now,
            facts
                .as_ref()
                .map(|f| (f.names.as_slice(), f.not_before, f.not_after)),
            &self.setup.domains,
        )
    }

    /// One order; on success the certificate is stored, then served. Returns what it says.
    async fn order_once(&self) -> Result<crate::tls::LeafFacts, AcmeError> {
        let issued = order::obtain(&self.pool, &self.setup).await?;
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

async fn sleep_until(at: i64) {
    let wait = (at - db::unix_now()).max(1) as u64;
    tokio::time::sleep(Duration::from_secs(wait).min(LONGEST_SLEEP)).await;
}
