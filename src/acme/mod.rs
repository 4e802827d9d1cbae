//! ACME (RFC 8555): rtcbox obtains and renews its certificate from a CA such as Let's Encrypt.
//!
//! - [`plan`]: the loop's decisions as pure functions of a virtual `now` (when to renew, with
//!   the CA's ARI window or without, the retry backoff, errors in plain words); no IO.
//! - [`order`]: one order with instant-acme: the account (created once, stored in SQLite), the
//!   challenges answered by a [`order::Responder`] (HTTP-01, TLS-ALPN-01, or DNS-01 through
//!   [`dns01`]), a CSR for a fresh key, the chain; and the CA's renewal window for a
//!   certificate (ARI, RFC 9773).
//! - [`dns01`]: TXT records through RFC 2136 + TSIG, Cloudflare's API, or the admin's hands.
//! - [`task`]: the renewal loop `app` spawns: it stores each new certificate before it installs it
//!   into the live resolver ([`crate::tls::TlsCertificates::install`]), so listeners never need a
//!   restart; on failure the old certificate stays and a retry is scheduled. The admin panel's
//!   "Renew now" wakes it through [`AcmeHandle::renew_now`].
//!
//! The public HTTP listener answers `/.well-known/acme-challenge/{token}` from [`Challenges`],
//! the token map this module fills while an HTTP-01 order waits for the CA; the HTTPS listener
//! answers `acme-tls/1` handshakes from [`crate::tls::AlpnChallenges`]. Secrets (the account key,
//! certificate keys, key authorizations) are never logged.

pub mod dns01;
pub mod order;
pub mod plan;
pub mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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

/// A shared view of [`AcmeStatus`] (the task writes, the admin panel reads), and the admin
/// panel's way to ask for a renewal now.
#[derive(Clone, Debug, Default)]
pub struct AcmeHandle {
    status: Arc<Mutex<AcmeStatus>>,
    renew: Arc<RenewRequest>,
}

#[derive(Debug, Default)]
struct RenewRequest {
    asked: AtomicBool,
    wake: Notify,
}

impl AcmeHandle {
    pub fn status(&self) -> AcmeStatus {
        lock(&self.status).clone()
    }

    /// Asks the task for a new certificate now, whatever its schedule (after fixing a port
    /// forward, say). An order already running counts as the answer.
    pub fn renew_now(&self) {
        self.renew.asked.store(true, Ordering::SeqCst);
        self.renew.wake.notify_one();
    }

    fn update(&self, change: impl FnOnce(&mut AcmeStatus)) {
        change(&mut lock(&self.status));
    }

    /// Whether a renewal was asked for since the last call; the task calls it as an order
    /// starts, so a request during an order does not order twice.
    pub(crate) fn take_renew_request(&self) -> bool {
        self.renew.asked.swap(false, Ordering::SeqCst)
    }

    /// Waits for [`AcmeHandle::renew_now`] (returns at once when it was called while nobody
    /// waited).
    async fn renew_requested(&self) {
        self.renew.wake.notified().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
