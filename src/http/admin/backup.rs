//! The Backup page: download the backup file, upload one to restore (`crate::backup` checks
//! it; nothing is written unless all of it is usable).
//!
//! A restore replaces the database under the running process, which keeps the settings, keys
//! and certificates it started with until it restarts; the page says so. Every session ends
//! with the restore (the restored password may be another one).

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use super::auth::Session;
use super::views::{self, Layout};
use super::{AdminState, unix_now};
use crate::backup::{self, RestoreError};
use crate::db;

/// The largest upload the restore route accepts: a backup and the form around it.
pub const MAX_UPLOAD_BYTES: usize = backup::MAX_BYTES + 64 * 1024;

#[derive(Template)]
#[template(path = "backup.html")]
pub struct BackupPage {
    pub layout: Layout,
    /// What a restore just wrote (then the process needs a restart).
    pub restored: Option<Vec<String>>,
    /// Why an uploaded file was refused.
    pub error: Option<String>,
    /// After a restore: rtcbox restarts itself to use it (who supervises it), or `None` when
    /// this panel cannot restart it.
    pub restarting: Option<&'static str>,
}

pub async fn page(session: Session) -> Response {
    views::render(&BackupPage {
        layout: session.layout("Backup", "backup"),
        restored: None,
        error: None,
        restarting: None,
    })
}

pub async fn download(State(state): State<Arc<AdminState>>, _session: Session) -> Response {
    let snapshot = match db::backup::snapshot(&state.pool).await {
        Ok(snapshot) => snapshot,
        Err(error) => return views::internal_error("reading the database for a backup", &error),
    };
    let now = unix_now();
    tracing::info!("backup downloaded from the admin panel");
    let mut response = backup::write(snapshot, now).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        backup::file_name(now)
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

pub async fn restore(
    State(state): State<Arc<AdminState>>,
    session: Session,
    upload: Upload,
) -> Response {
    let csrf: HashMap<String, String> = upload
        .0
        .get("csrf")
        .map(|v| ("csrf".to_owned(), String::from_utf8_lossy(v).into_owned()))
        .into_iter()
        .collect();
    if let Err(rejected) = session.check_csrf(&csrf) {
        return rejected;
    }
    let bytes = upload
        .0
        .get("backup")
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Checked as the next start would read them (the flags and environment this process has).
    let (status, restored, error) =
        match backup::restore(&state.pool, bytes, &state.flags, &*state.env, unix_now()).await {
            Ok(snapshot) => {
                tracing::info!("backup restored from the admin panel; restarting to use it");
                (StatusCode::OK, Some(backup::summary(&snapshot)), None)
            }
            Err(RestoreError::Refused(why)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(format!(
                    "The file was not restored: {why}. Nothing was changed."
                )),
            ),
            Err(RestoreError::Storing(error)) => {
                return views::internal_error("restoring a backup", &error);
            }
        };
    // The running process still holds the old settings, keys and certificates (and could
    // write some back): it restarts at once, after this page has left.
    let restarting = match (&restored, state.restart.clone()) {
        (Some(_), Some(restarter)) => {
            restarter.request_soon();
            Some(crate::restart::supervisor())
        }
        _ => None,
    };
    let mut response = views::render(&BackupPage {
        layout: session.layout("Backup", "backup"),
        restored,
        error,
        restarting,
    });
    *response.status_mut() = status;
    if restarting.is_some() {
        response.headers_mut().insert(
            "refresh",
            axum::http::HeaderValue::from_static("5; url=/login"),
        );
    }
    response
}

/// A form as field → bytes, sent as `multipart/form-data` (a browser uploading a file) or
/// URL-encoded (a script posting the file's text in a field). Anything else gets a clear page.
pub struct Upload(pub HashMap<String, Vec<u8>>);

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let unreadable = |status| {
            views::error_response(
                status,
                "The upload could not be read. Choose the backup file in the form and send it \
                 again; nothing was changed.",
            )
        };
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            let views::FormData(form) = views::FormData::from_request(request, state).await?;
            return Ok(Upload(
                form.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
            ));
        }
        if !essence.eq_ignore_ascii_case("multipart/form-data") {
            return Err(unreadable(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let body = Bytes::from_request(request, state).await.map_err(|rejection| {
            views::error_response(
                rejection.status(),
                "The upload could not be read (is it larger than a backup can be?). Nothing was \
                 changed.",
            )
        })?;
        multipart_fields(&content_type, &body)
            .map(Upload)
            .ok_or_else(|| unreadable(StatusCode::BAD_REQUEST))
    }
}

/// Most fields a form may have.
const MAX_PARTS: usize = 16;

/// The fields of a `multipart/form-data` body (RFC 7578) by name; `None` when it is not one.
/// Only what a browser's form sends is understood: a boundary parameter, parts with a
/// `Content-Disposition: form-data; name="…"` header.
pub fn multipart_fields(content_type: &str, body: &[u8]) -> Option<HashMap<String, Vec<u8>>> {
    let boundary = content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })?;
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let delimiter = format!("--{boundary}").into_bytes();
    let next_delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    let mut fields = HashMap::new();
    loop {
        let rest = body.get(at..)?;
        if rest.starts_with(b"--") {
            return Some(fields);
        }
        if !rest.starts_with(b"\r\n") || fields.len() >= MAX_PARTS {
            return None;
        }
        let start = at + 2;
        let end = find(body, &next_delimiter, start)?;
        let part = &body[start..end];
        let split = find(part, b"\r\n\r\n", 0)?;
        let headers = std::str::from_utf8(&part[..split]).ok()?;
        let name = headers.split("\r\n").find_map(|line| {
            let (header, value) = line.split_once(':')?;
            if !header.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            value.split(';').find_map(|param| {
                let (key, value) = param.split_once('=')?;
                (key.trim() == "name").then(|| value.trim().trim_matches('"').to_owned())
            })
        })?;
        fields.insert(name, part[split + 4..].to_vec());
        at = end + next_delimiter.len();
    }
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}
