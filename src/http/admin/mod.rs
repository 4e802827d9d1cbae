//! The admin panel: its own listener (`RTCBOX_ADMIN_BIND`, LAN), separate from the public one.
//!
//! - First run: a one-time setup token (printed to the log, stored hashed, 24 h) unlocks the
//!   "choose a password" page ([`auth`]).
//! - Then password login (argon2id), a session cookie (HttpOnly, SameSite=Strict, Secure when the
//!   browser came over https), a CSRF token on every form, a login rate limit, logout.
//! - Pages: dashboard, the setup wizard, the generated outputs, the verification page, recent
//!   logs, settings (environment-pinned settings shown locked), API key rotation, "Renew
//!   now" for an ACME certificate, and backup/restore ([`backup`]). The verification page runs
//!   its checks only when asked, and streams them ([`verify`]).
//! - `/metrics` for Prometheus ([`metrics`]: a bearer token, loopback or a session).
//!
//! Handlers are thin: the wizard's logic lives in `setup::wizard`, the generated files in
//! `setup::outputs`, the checks in `setup::verify`. Every error becomes a page without internals;
//! the cause is logged once.

// Handlers return early with a finished error page (`Result<_, Response>`); the page is built
// once per request, so its size on the stack does not matter.
#![allow(clippy::result_large_err)]

mod assets;
mod auth;
mod backup;
mod health;
mod logs;
mod metrics;
mod pages;
mod settings_form;
mod verify;
mod views;
mod wizard;

use crate::http::forwarded::TrustedProxies;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use sqlx::SqlitePool;

use crate::config::{SettingKey, Settings};
use crate::logbuf::LogBuffer;
use crate::matrix::FederationClient;
use crate::setup::fetch::HttpClient;
use crate::sfu::SfuHandle;
use crate::turn::TurnHandle;

use super::ratelimit::RateLimiter;

pub use assets::static_file;
pub use auth::{
    SETUP_TOKEN_TTL_SECS, SETUP_URL_FILE, ensure_setup_token, new_setup_token, remove_setup_url,
    setup_url, write_setup_url,
};

/// Largest form accepted (the biggest is the wizard's network step).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What the admin handlers share.
pub struct AdminState {
    pub pool: SqlitePool,
    /// The settings rtcbox is running with (changes apply at the next start).
    pub settings: Settings,
    /// The command-line flags, so a settings change is validated with the same precedence.
    pub flags: BTreeMap<SettingKey, String>,
    /// The SFU, for the dashboard and the WebSocket check; absent in tests of the panel alone.
    pub sfu: Option<SfuHandle>,
    /// The TURN server, for the dashboard and the TURN checks; absent in tests of the panel
    /// alone and when it does not run.
    pub turn: Option<TurnHandle>,
    /// Where the SFU's media sockets are advertised.
    pub media: MediaAddresses,
    pub logs: LogBuffer,
    /// Outgoing requests of the wizard and the checks; absent in tests of the panel alone.
    pub net: Option<NetClients>,
    pub login_limiter: Mutex<RateLimiter>,
    /// The process environment, for validating a settings change with the same precedence.
    pub env: EnvReader,
    /// The data directory, as configured (for the container file); absent in tests of the panel
    /// alone.
    pub data_dir: Option<PathBuf>,
    /// The certificate rtcbox serves (TURN over TLS); absent when nothing uses one.
    pub certificates: Option<crate::tls::TlsCertificates>,
    /// Settings that apply without a restart, and the settings in effect now; absent in tests
    /// of the panel alone (then `settings` is what runs).
    pub live: Option<Arc<crate::live::Live>>,
    /// The proxies whose forwarding headers the panel believes (shared with the public
    /// listener, so a change in Settings reaches both).
    pub trusted_proxies: TrustedProxies,
    /// "Restart now"; absent in tests of the panel alone.
    pub restart: Option<crate::restart::Restarter>,
    /// The public IP monitor (`net::public_ip`); absent in tests of the panel alone.
    pub public_ip: Option<crate::net::public_ip::PublicIpHandle>,
    /// The ACME renewal loop's state; present when `RTCBOX_TLS_MODE=acme`.
    pub acme: Option<crate::acme::AcmeHandle>,
    /// The stream listeners' connection caps, for the dashboard's counters (TURN's are in its
    /// status).
    pub connection_caps: Vec<crate::net::caps::ConnectionCaps>,
    /// This machine's LAN addresses, offered and checked in the wizard's network step
    /// (`discover::lan_addresses`; a fixed list in tests).
    pub lan_addresses: fn() -> Vec<std::net::IpAddr>,
    /// The verification page's last results (in memory: the checks run only when asked).
    pub last_checks: Mutex<Option<verify::LastChecks>>,
}

/// Reads one environment variable (the process's in production, a table in tests).
pub type EnvReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The clients the wizard uses to look at the homeserver and the deployment from outside.
#[derive(Clone)]
pub struct NetClients {
    pub http: Arc<HttpClient>,
    pub federation: Arc<FederationClient>,
}

#[derive(Clone, Debug, Default)]
pub struct MediaAddresses {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
}

impl AdminState {
    /// The settings in effect now: those at start with the live changes applied.
    pub fn running(&self) -> Settings {
        match &self.live {
            Some(live) => live.running(),
            None => self.settings.clone(),
        }
    }

    /// Carries the live settings of `next` over to the running parts; their names.
    pub fn apply_live(&self, next: &Settings) -> Vec<&'static str> {
        match &self.live {
            Some(live) => live.apply(next),
            None => Vec::new(),
        }
    }

    pub fn new(pool: SqlitePool, settings: Settings, flags: BTreeMap<SettingKey, String>) -> Self {
        AdminState {
            pool,
            trusted_proxies: TrustedProxies::new(settings.trusted_proxies.clone()),
            settings,
            flags,
            sfu: None,
            turn: None,
            media: MediaAddresses::default(),
            logs: LogBuffer::new(),
            net: None,
            // Five attempts at once, then one every 12 s, per client address.
            login_limiter: Mutex::new(RateLimiter::new(5, 1.0 / 12.0)),
            env: Arc::new(|name| std::env::var(name).ok()),
            data_dir: None,
            certificates: None,
            acme: None,
            public_ip: None,
            live: None,
            restart: None,
            connection_caps: Vec::new(),
            lan_addresses: crate::setup::discover::lan_addresses,
            last_checks: Mutex::new(None),
        }
    }
}

/// Every admin route. Static assets are public; everything else needs a session, except the
/// setup and login pages and `/metrics` (its bearer token, or loopback: see [`metrics`]).
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/static/{*path}", get(assets::serve))
        .route("/setup", get(auth::setup_page).post(auth::setup_submit))
        .route("/login", get(auth::login_page).post(auth::login_submit))
        .route("/logout", post(auth::logout))
        .route("/", get(pages::dashboard))
        .route("/wizard", get(wizard::resume))
        .route("/wizard/{step}", get(wizard::show).post(wizard::submit))
        .route("/outputs", get(pages::outputs))
        .route("/outputs/{id}", get(pages::download))
        .route("/outputs/well-known", post(pages::paste_well_known))
        .route("/verify", get(verify::page).post(verify::run_and_show))
        .route("/verify/run", post(verify::run_streaming))
        .route("/verify/test-call", post(verify::start_test_call))
        .route("/logs", get(logs::page))
        .route("/logs/download", get(logs::download))
        .route(
            "/settings",
            get(pages::settings).post(pages::settings_submit),
        )
        .route("/settings/keys", post(pages::rotate_keys))
        .route("/settings/password", post(pages::change_password))
        .route("/certificate/renew", post(pages::renew_certificate))
        .route("/public-ip/check", post(pages::check_public_ip))
        .route("/restart", post(pages::restart))
        .route("/metrics", get(metrics::metrics))
        .route("/backup", get(backup::page))
        .route("/backup/download", get(backup::download))
        .route(
            "/backup/restore",
            post(backup::restore).layer(DefaultBodyLimit::max(backup::MAX_UPLOAD_BYTES)),
        )
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(same_origin_posts))
        .layer(middleware::from_fn(security_headers))
        .layer(axum::Extension(state.trusted_proxies.clone()))
        .with_state(state)
}

/// A cross-site POST is refused before any handler runs (defence in depth next to the CSRF
/// tokens and SameSite=Strict cookies): when the browser says where the form came from, it
/// must be this panel.
async fn same_origin_posts(request: Request<Body>, next: Next) -> Response<Body> {
    if request.method() == axum::http::Method::POST {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok());
        if let (Some(origin), Some(host)) = (origin, host) {
            let origin_authority = origin
                .split_once("://")
                .map_or(origin, |(_, rest)| rest)
                .trim_end_matches('/');
            if origin_authority != host {
                return views::error_response(
                    StatusCode::FORBIDDEN,
                    "This form was sent from another site, so it was refused. Open the admin panel \
                     directly and try again.",
                );
            }
        }
    }
    next.run(request).await
}

/// Headers on every admin response: no framing, no sniffing, no referrer to other sites, no
/// caching of pages,
/// and a content security policy that allows only the panel's own files.
async fn security_headers(request: Request<Body>, next: Next) -> Response<Body> {
    let is_asset = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Not `no-referrer`: under it Chromium sends `Origin: null` with form POSTs, which the
    // same-origin check must refuse. `same-origin` still sends nothing to other sites.
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !is_asset {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

use crate::db::unix_now;

#[cfg(test)]
mod tests;
