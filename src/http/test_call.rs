//! The test call: a throwaway room in the SFU that the admin's browser (the verification page)
//! and a phone join through the public URL, to see media go through rtcbox for real.
//!
//! - [`start`] (for the admin panel's `POST /verify/test-call`) creates a room named
//!   `rtcbox-test-call-<random>` (the authorization service names MatrixRTC rooms with unpadded
//!   standard base64, which has no `-`, so no real room has such a name), at most
//!   [`MAX_PARTICIPANTS`], gone
//!   [`EMPTY_TIMEOUT`] after it empties, and mints LiveKit tokens for it alone, valid
//!   [`TOKEN_TTL`]: a sender and a hidden viewer for the admin's page, one for a phone. Nothing
//!   else can mint tokens for it, so the room is usable for nothing else.
//! - The phone's page is on the public listener ([`routes`]: `/test-call`, also under
//!   `/livekit/sfu/`), at the SFU's own public origin, so it tests the path a caller takes: DNS,
//!   the reverse proxy or rtcbox's HTTPS, the WebSocket and the media ports. Its token travels
//!   in the link's fragment (`#…`), which browsers never send to a server, so no log or proxy
//!   sees it. The page and its scripts are static: the SFU URL is the page's own origin, never
//!   something a link can choose (a link could otherwise send a phone's camera elsewhere).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::get;
use serde::Serialize;

use crate::config::ApiKey;
use crate::livekit::token::{self, VideoGrant};
use crate::rooms::RoomOptions;
use crate::secret::Secret;
use crate::sfu::SfuHandle;

/// Test rooms' names start with this.
pub const ROOM_PREFIX: &str = "rtcbox-test-call-";
/// How long the test call's tokens (and so the phone's link) are valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// The admin's sender and viewer, a phone, and a second phone.
pub const MAX_PARTICIPANTS: u32 = 4;
/// A test room without participants is deleted after this.
pub const EMPTY_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// The phone page's path on the public listener (the SFU's origin).
pub const PHONE_PATH: &str = "/test-call";

/// What the admin's page needs to run a test call (sent to it as JSON).
#[derive(Debug, Serialize)]
pub struct TestCall {
    /// The SFU's public URL (`RTCBOX_PUBLIC_URL`), which the browser connects to.
    pub url: String,
    pub room: String,
    /// Publishes the test pattern.
    pub sender: String,
    /// Subscribes to everything, hidden from the others.
    pub viewer: String,
    /// The phone's page with its token in the fragment.
    pub phone_link: String,
    /// The phone link as a QR code (SVG).
    pub phone_qr: String,
    pub expires_in_secs: u64,
}

/// Why no test call could be started (shown to the admin as it is).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the SFU is not running in this process")]
    NoSfu,
    #[error("the SFU could not create the test room: {0}")]
    Room(String),
    #[error("no token for the test call: {0}")]
    Token(String),
}

/// Creates a test room and its tokens. `public_url` is the SFU's (`ws(s)://host[:port][/path]`).
pub async fn start(
    sfu: Option<&SfuHandle>,
    key: &ApiKey,
    secret: &Secret,
    public_url: &str,
    now_unix: u64,
) -> Result<TestCall, StartError> {
    let sfu = sfu.ok_or(StartError::NoSfu)?;
    let room = format!(
        "{ROOM_PREFIX}{}",
        crate::secret::random_alphanumeric(16).to_ascii_lowercase()
    );
    let options = RoomOptions {
        empty_timeout: EMPTY_TIMEOUT,
        departure_timeout: Duration::from_secs(5),
        max_participants: MAX_PARTICIPANTS,
    };
    let name = room.clone();
    sfu.call(move |core, now| core.create_room(now, &name, options, None).map(|_| ()))
        .await
        .map_err(|_| StartError::NoSfu)?
        .map_err(|e| StartError::Room(e.to_string()))?;
    let mint = |identity: &str, publish: bool, subscribe: bool, hidden: bool| {
        let grant = VideoGrant {
            room_join: true,
            room: room.clone(),
            can_publish: Some(publish),
            can_subscribe: Some(subscribe),
            can_publish_data: Some(publish),
            hidden,
            ..VideoGrant::default()
        };
        token::mint(key, secret, identity, grant, TOKEN_TTL, now_unix)
            .map_err(|e| StartError::Token(e.to_string()))
    };
    let phone_token = mint("phone", true, true, false)?;
    let phone_link = format!("{}#{phone_token}", phone_page(public_url));
    Ok(TestCall {
        url: public_url.to_owned(),
        sender: mint("test-pattern", true, false, false)?,
        viewer: mint("admin-viewer", false, true, true)?,
        phone_qr: qr_svg(&phone_link),
        phone_link,
        room,
        expires_in_secs: TOKEN_TTL.as_secs(),
    })
}

/// `wss://host/livekit/sfu` → `https://host/livekit/sfu/test-call` (the SFU's routes, which the
/// public listener serves at `/` and under `/livekit/sfu/`).
pub fn phone_page(public_url: &str) -> String {
    let https = if let Some(rest) = public_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = public_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        public_url.to_owned()
    };
    format!("{}{PHONE_PATH}", https.trim_end_matches('/'))
}

/// The origins a page that joins the SFU at `public_url` connects to: its WebSocket and its
/// HTTP(S) twin (livekit-client asks `/rtc/validate` after a failed connection), for a content
/// security policy's `connect-src`.
pub fn connect_sources(public_url: &str) -> String {
    let Some((scheme, rest)) = public_url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Only what a CSP source may contain; anything else is left out rather than passed on.
    if authority.is_empty()
        || !authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    {
        return String::new();
    }
    let http = match scheme {
        "wss" => "https",
        "ws" => "http",
        _ => return String::new(),
    };
    format!("{scheme}://{authority} {http}://{authority}")
}

/// `data` as an SVG QR code (medium error correction, a quiet zone, black on white so phone
/// cameras read it in dark mode too).
pub fn qr_svg(data: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(220, 220)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// The phone's page and its files, on the public listener.
pub fn routes() -> Router {
    Router::new()
        .route(PHONE_PATH, get(phone))
        .route("/test-call/{file}", get(file))
}

/// The page's own files (name, file in web/static, type): its script, style and icon, and
/// livekit-client.
const FILES: [(&str, &str, &str); 4] = [
    ("icon.svg", "icon.svg", "image/svg+xml"),
    (
        "test-call.js",
        "test-call.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "livekit-client.umd.js",
        "vendor/livekit-client.umd.js",
        "text/javascript; charset=utf-8",
    ),
    ("app.css", "app.css", "text/css; charset=utf-8"),
];

async fn phone() -> Response<Body> {
    let html = crate::http::admin::static_file("test-call.html").unwrap_or_default();
    let mut response = Response::new(Body::from(html));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn file(Path(name): Path<String>) -> Response<Body> {
    let found = FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .and_then(|(_, path, kind)| Some((crate::http::admin::static_file(path)?, *kind)));
    let Some((data, kind)) = found else {
        let mut response = Response::new(Body::from("no such file"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let mut response = Response::new(Body::from(data));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests;
