//! ACME (RFC 8555): rtcbox obtains and renews its certificate from a CA such as Let's Encrypt.
//!
//! - [`plan`]: the loop's decisions as pure functions of a virtual `now` (when to renew, the
//!   retry backoff, errors in plain words); no IO.
//! - [`order`]: one order with instant-acme: the account (created once, stored in SQLite), the
//!   challenges (HTTP-01, or DNS-01 through [`dns01`]), a CSR for a fresh key, the chain.
//! - [`dns01`]: TXT records through RFC 2136 + TSIG, Cloudflare's API, or the admin's hands.
//! - [`task`]: the renewal loop `app` spawns: it stores each new certificate before it installs it
//!   into the live resolver ([`crate::tls::TlsCertificates::install`]), so listeners never need a
//!   restart; on failure the old certificate stays and a retry is scheduled.
//!
//! The public HTTP listener answers `/.well-known/acme-challenge/{token}` from [`Challenges`],
//! the token map this module fills while an order waits for the CA. Secrets (the account key,
//! certificate keys, key authorizations) are never logged.

pub mod dns01;
pub mod order;
pub mod plan;
pub mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// HTTP-01 tokens and their key authorizations, shared by the ACME task (writes) and the public
/// HTTP listener (reads). Cloning shares the map.
#[derive(Clone, Default)]
pub struct Challenges {
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

/// Key authorizations stay out of logs: only their number is shown.
impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("pending", &lock(&self.tokens).len())
            .finish()
    }
}

impl Challenges {
    /// The key authorization to answer for `token`, while its order waits.
    pub fn answer(&self, token: &str) -> Option<String> {
        lock(&self.tokens).get(token).cloned()
    }

    /// Publishes `token` until [`Challenges::remove`].
    pub fn insert(&self, token: String, key_authorization: String) {
        lock(&self.tokens).insert(token, key_authorization);
    }

    pub fn remove(&self, token: &str) {
        lock(&self.tokens).remove(token);
    }
}

/// What the renewal loop is doing, for the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcmeStatus {
    /// One of "starting", "ordering", "valid", "failed".
    pub state: &'static str,
    /// Unix seconds of the next order attempt (renewal or retry).
    pub next_attempt: Option<i64>,
    /// The last failure in plain words, until an order succeeds.
    pub last_error: Option<String>,
    /// Unix seconds of the last certificate obtained by this process.
    pub last_success: Option<i64>,
    /// DNS-01 TXT records published (or, `by_hand`, to create) while an order waits.
    pub pending_dns: Vec<PendingRecord>,
}

/// A DNS-01 TXT record the dashboard shows while the order waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecord {
    /// `_acme-challenge.rtc.example.org`.
    pub name: String,
    /// The TXT value (public: it is the digest the CA looks up).
    pub value: String,
    /// The admin creates it (manual provider); otherwise rtcbox did and waits until it is seen.
    pub by_hand: bool,
}

/// A shared view of [`AcmeStatus`]; the task writes, the admin panel reads.
#[derive(Clone, Debug, Default)]
pub struct AcmeHandle {
    status: Arc<Mutex<AcmeStatus>>,
}

impl AcmeHandle {
    pub fn status(&self) -> AcmeStatus {
        lock(&self.status).clone()
    }

    fn update(&self, change: impl FnOnce(&mut AcmeStatus)) {
        change(&mut lock(&self.status));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
