//! Who may use the panel: the one-time setup token, the password, sessions and CSRF tokens.
//!
//! - Before a password exists, only `/setup` works; it needs the setup token from the log.
//! - Login forms (no session yet) carry a CSRF token that must equal the `rtcbox_csrf` cookie
//!   (double submit, with SameSite=Strict cookies); forms of a logged-in session carry the
//!   session's own token, stored with the session.
//! - Passwords are hashed with argon2id on a blocking thread; a failed login costs as much as
//!   a good one and is rate-limited per client address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Redirect, Response};

use super::views::{self, Layout, LoginPage, SetupPage};
use super::{AdminState, unix_now};
use crate::db::admin::{self as db, AccountState};
use crate::http::forwarded::Client;
use crate::secret::random_alphanumeric;

/// How long a setup token stays valid.
pub const SETUP_TOKEN_TTL_SECS: i64 = 24 * 3600;
/// How long a login lasts.
const SESSION_TTL_SECS: i64 = 12 * 3600;
const SESSION_COOKIE: &str = "rtcbox_session";
const CSRF_COOKIE: &str = "rtcbox_csrf";
/// Passwords shorter than this are refused; long passphrases are welcome.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longer passwords are refused, so hashing cannot be made arbitrarily expensive.
const MAX_PASSWORD_BYTES: usize = 1024;

/// A random setup token: 32 alphanumerics (190 bits), easy to copy from a log.
pub fn new_setup_token() -> String {
    random_alphanumeric(32)
}

/// At start: when no password is set yet, stores a fresh setup token and returns it (to be
/// printed to the log). Each start without a password replaces the previous token, because only
/// its hash was kept.
pub async fn ensure_setup_token(
    pool: &sqlx::SqlitePool,
    preset: Option<&str>,
) -> sqlx::Result<Option<String>> {
    if let AccountState::Ready { .. } = db::account(pool).await? {
        return Ok(None);
    }
    let token = preset.map_or_else(new_setup_token, str::to_owned);
    let now = unix_now();
    let stored = db::store_setup_token(pool, &token, now + SETUP_TOKEN_TTL_SECS, now).await?;
    Ok(stored.then_some(token))
}

/// The file in the data directory that holds the setup URL while no password exists, for
/// those who find a file easier than a log (a NAS package's shell, a container's volume).
pub const SETUP_URL_FILE: &str = "setup-url.txt";

/// The URL the start log prints: `/setup` with the token, on the address a browser on the LAN
/// reaches: the admin listener's own address, or when it listens on every interface, this
/// machine's LAN address (`lan`, the first of `discover::lan_addresses`).
pub fn setup_url(scheme: &str, admin: SocketAddr, lan: Option<IpAddr>, token: &str) -> String {
    let ip = if admin.ip().is_unspecified() {
        lan
    } else {
        Some(admin.ip())
    };
    let host = match ip {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        None => "<this machine's address>".to_owned(),
    };
    format!("{scheme}://{host}:{}/setup?token={token}", admin.port())
}

/// Writes the setup URL to [`SETUP_URL_FILE`], readable by the owner only (the token in it
/// unlocks the panel). A file left from before is replaced, never appended to.
pub fn write_setup_url(dir: &Path, url: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(SETUP_URL_FILE);
    remove_if_present(&path)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(
        file,
        "Open this in a browser on your LAN to choose the rtcbox admin password (one-time, valid \
         for 24 hours; the file disappears once the password is set):\n\n{url}"
    )
}

/// Deletes [`SETUP_URL_FILE`] once it is useless (the password is set); a failure is logged.
pub fn remove_setup_url(dir: &Path) {
    if let Err(error) = remove_if_present(&dir.join(SETUP_URL_FILE)) {
        tracing::warn!(%error, "cannot delete {SETUP_URL_FILE} in the data directory");
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// A logged-in browser. Extracting it from a request that has no valid session redirects to
/// the login page (or to the setup page while no password exists).
pub struct Session {
    pub id: String,
    pub csrf: String,
}

impl Session {
    /// The form's `csrf` field must be this session's token.
    pub fn check_csrf(&self, form: &HashMap<String, String>) -> Result<(), Response> {
        let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(csrf_rejected())
        }
    }

    pub fn layout(&self, title: &str, active: &'static str) -> Layout {
        Layout {
            title: title.to_owned(),
            active,
            csrf: self.csrf.clone(),
            logged_in: true,
        }
    }
}

pub fn csrf_rejected() -> Response {
    views::error_response(
        StatusCode::FORBIDDEN,
        "The form expired or did not come from this panel (missing or wrong security token). \
         Reload the page and submit it again; nothing was changed.",
    )
}

impl FromRequestParts<Arc<AdminState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        let now = unix_now();
        if let Some(id) = cookie(&parts.headers, SESSION_COOKIE) {
            match db::session(&state.pool, &id, now).await {
                Ok(Some(row)) => return Ok(Session { id, csrf: row.csrf }),
                Ok(None) => {}
                Err(error) => return Err(views::internal_error("reading a session", &error)),
            }
        }
        match db::account(&state.pool).await {
            Ok(AccountState::Ready { .. }) => Err(Redirect::to("/login").into_response()),
            Ok(AccountState::AwaitingSetup { .. }) => Err(Redirect::to("/setup").into_response()),
            Err(error) => Err(views::internal_error("reading the admin account", &error)),
        }
    }
}

/// `/setup`, also as the setup URL from the log (`/setup?token=…`), which fills in the token.
pub async fn setup_page(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match db::account(&state.pool).await {
        Ok(AccountState::Ready { .. }) => Redirect::to("/login").into_response(),
        Ok(AccountState::AwaitingSetup { expires, .. }) => {
            let (csrf, set_cookie) = pre_login_csrf(&headers);
            let token = query.get("token").map(|t| t.trim()).unwrap_or_default();
            let page = SetupPage {
                layout: Layout::public("Set up rtcbox", &csrf),
                expired: expires <= unix_now(),
                error: None,
                errors: Default::default(),
                token: token.to_owned(),
            };
            with_cookie(views::render(&page), set_cookie)
        }
        Err(error) => views::internal_error("reading the admin account", &error),
    }
}

pub async fn setup_submit(
    State(state): State<Arc<AdminState>>,
    client: Client,
    headers: HeaderMap,
    form: views::FormData,
) -> Response {
    let form = form.0;
    if let Err(refused) = pre_login_gate(&state, client.ip, &headers, &form) {
        return refused;
    }
    let csrf = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    // A refused form keeps the token as typed (the passwords are never sent back).
    let render_error = |status: StatusCode, error: Option<String>, errors| {
        let page = SetupPage {
            layout: Layout::public("Set up rtcbox", &csrf),
            expired: false,
            error,
            errors,
            token: token.to_owned(),
        };
        let mut response = views::render(&page);
        *response.status_mut() = status;
        response
    };
    let (stored_hash, expires) = match db::account(&state.pool).await {
        Ok(AccountState::Ready { .. }) => return Redirect::to("/login").into_response(),
        Ok(AccountState::AwaitingSetup {
            token_hash,
            expires,
        }) => (token_hash, expires),
        Err(error) => return views::internal_error("reading the admin account", &error),
    };
    let token_hash = db::hash_token(token);
    let token_ok = stored_hash
        .as_deref()
        .is_some_and(|stored| constant_time_eq(stored.as_bytes(), token_hash.as_bytes()));
    // Every problem at once, each at its field: a fixed password must not reveal a second one.
    let password = form.get("password").cloned().unwrap_or_default();
    let confirm = form.get("confirm").cloned().unwrap_or_default();
    let mut errors = password_problems(&password, &confirm).unwrap_or_default();
    if !token_ok || expires <= unix_now() {
        let message = if token_ok {
            "This setup token has expired. Restart rtcbox (a new token is printed to its log) or run \
             `rtcbox admin reset-password`."
        } else {
            "That is not the current setup token. Copy it from rtcbox's log (the line that says \
             \"setup token\"), or run `rtcbox admin reset-password` to get a new one."
        };
        errors.insert("token", message.to_owned());
    }
    if !errors.is_empty() {
        return render_error(StatusCode::BAD_REQUEST, None, errors);
    }
    let hash = match hash_password(password).await {
        Ok(hash) => hash,
        Err(error) => return views::internal_error("hashing the new password", &error),
    };
    match db::set_first_password(&state.pool, &token_hash, &hash, unix_now()).await {
        Ok(true) => {
            tracing::info!("admin password set with the setup token");
            if let Some(dir) = &state.data_dir {
                remove_setup_url(dir);
            }
            // A new admin continues with the setup wizard (it resumes at its first open step).
            start_session(&state, client, "/wizard").await
        }
        Ok(false) => render_error(
            StatusCode::CONFLICT,
            Some("The setup token was used or replaced meanwhile; nothing was changed.".into()),
            Default::default(),
        ),
        Err(error) => views::internal_error("storing the password", &error),
    }
}

pub async fn login_page(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    match db::account(&state.pool).await {
        Ok(AccountState::AwaitingSetup { .. }) => Redirect::to("/setup").into_response(),
        Ok(AccountState::Ready { .. }) => {
            let (csrf, set_cookie) = pre_login_csrf(&headers);
            let page = LoginPage {
                layout: Layout::public("Log in", &csrf),
                error: None,
            };
            with_cookie(views::render(&page), set_cookie)
        }
        Err(error) => views::internal_error("reading the admin account", &error),
    }
}

pub async fn login_submit(
    State(state): State<Arc<AdminState>>,
    client: Client,
    headers: HeaderMap,
    form: views::FormData,
) -> Response {
    let form = form.0;
    if let Err(refused) = pre_login_gate(&state, client.ip, &headers, &form) {
        return refused;
    }
    let password_hash = match db::account(&state.pool).await {
        Ok(AccountState::Ready { password_hash }) => password_hash,
        Ok(AccountState::AwaitingSetup { .. }) => return Redirect::to("/setup").into_response(),
        Err(error) => return views::internal_error("reading the admin account", &error),
    };
    let password = form.get("password").cloned().unwrap_or_default();
    match verify_password(password, password_hash).await {
        Ok(true) => {
            tracing::info!(client = %client.ip, "admin logged in");
            start_session(&state, client, "/").await
        }
        Ok(false) => {
            tracing::info!(client = %client.ip, "admin login failed: wrong password");
            let csrf = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
            let page = LoginPage {
                layout: Layout::public("Log in", &csrf),
                error: Some("Wrong password.".into()),
            };
            let mut response = views::render(&page);
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
        Err(error) => views::internal_error("checking the password", &error),
    }
}

pub async fn logout(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: views::FormData,
) -> Response {
    if let Err(rejected) = session.check_csrf(&form.0) {
        return rejected;
    }
    if let Err(error) = db::delete_session(&state.pool, &session.id).await {
        return views::internal_error("ending a session", &error);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("rtcbox_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    response
}

/// Problems with a new password and its confirmation, by field.
pub fn password_problems(
    password: &str,
    confirm: &str,
) -> Option<std::collections::BTreeMap<&'static str, String>> {
    let mut errors = std::collections::BTreeMap::new();
    if password.chars().count() < MIN_PASSWORD_CHARS {
        errors.insert(
            "password",
            format!("Choose a password of at least {MIN_PASSWORD_CHARS} characters."),
        );
    } else if password.len() > MAX_PASSWORD_BYTES {
        errors.insert(
            "password",
            format!("Choose a password of at most {MAX_PASSWORD_BYTES} bytes."),
        );
    } else if password != confirm {
        errors.insert("confirm", "The two passwords differ.".to_owned());
    }
    (!errors.is_empty()).then_some(errors)
}

pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })
    .await?
}

/// Whether `password` matches the stored PHC string. An unreadable stored hash is an error.
pub async fn verify_password(password: String, stored: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        match Argon2::default().verify_password(password.as_bytes(), stored.as_str()) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(anyhow::anyhow!("argon2: {e}")),
        }
    })
    .await?
}

/// Creates a session and redirects to the dashboard with its cookie.
/// Logs the browser in and sends it to `to`.
async fn start_session(state: &AdminState, client: Client, to: &str) -> Response {
    let id = random_alphanumeric(43);
    let csrf = random_alphanumeric(32);
    let now = unix_now();
    if let Err(error) =
        db::create_session(&state.pool, &id, &csrf, now, now + SESSION_TTL_SECS).await
    {
        return views::internal_error("starting a session", &error);
    }
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={SESSION_TTL_SECS}; HttpOnly; SameSite=Strict{}",
        secure_suffix(client, state.settings.admin_tls)
    );
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Cookies get `Secure` when the browser reached the panel over https: the admin listener
/// serves TLS itself (`RTCBOX_ADMIN_TLS`, the setting it started with), or a TLS-terminating
/// proxy in front of it, one of `RTCBOX_TRUSTED_PROXIES`, says `X-Forwarded-Proto: https`. A
/// plain-HTTP panel on the LAN gets none (the browser would drop a Secure cookie there).
fn secure_suffix(client: Client, listener_tls: bool) -> &'static str {
    if listener_tls || client.forwarded_https {
        "; Secure"
    } else {
        ""
    }
}

/// Both forms without a session (setup and login): the double-submit CSRF check, then one
/// token from the client's login bucket.
fn pre_login_gate(
    state: &AdminState,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), Response> {
    check_pre_login_csrf(headers, form)?;
    rate_limit(state, client)
}

fn rate_limit(state: &AdminState, client: std::net::IpAddr) -> Result<(), Response> {
    let checked = state
        .login_limiter
        .lock()
        .expect("limiter lock")
        .check(client, Instant::now());
    checked.map_err(|wait| {
        crate::metrics::LOGIN_RATE_LIMITED.inc();
        tracing::warn!(client = %client, "admin login rate limit reached");
        let mut response = views::error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many attempts. Wait {} seconds and try again.",
                wait.as_secs().max(1)
            ),
        );
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    })
}

/// The pre-login CSRF token: the cookie's if the browser has one, otherwise a new one to set.
fn pre_login_csrf(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(token) if token.len() == 32 => (token, None),
        _ => {
            let token = random_alphanumeric(32);
            let value = HeaderValue::from_str(&format!(
                "{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            ))
            .ok();
            (token, value)
        }
    }
}

fn check_pre_login_csrf(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), Response> {
    let cookie = cookie(headers, CSRF_COOKIE).unwrap_or_default();
    let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !cookie.is_empty() && constant_time_eq(cookie.as_bytes(), sent.as_bytes()) {
        Ok(())
    } else {
        Err(csrf_rejected())
    }
}

fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The value of cookie `name` from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric()))
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
