//! CSS, JS and images from web/static, embedded in the binary (no CDN: the panel works offline).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use super::views;

#[derive(rust_embed::Embed)]
#[folder = "web/static/"]
struct Static;

pub async fn serve(Path(path): Path<String>) -> Response {
    let Some(file) = Static::get(&path) else {
        return views::error_response(StatusCode::NOT_FOUND, "There is no such file.");
    };
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// An embedded file's bytes (the public listener's test-call page serves a few of them).
pub fn static_file(path: &str) -> Option<Vec<u8>> {
    Static::get(path).map(|file| file.data.into_owned())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Every embedded file's name, for tests.
#[cfg(test)]
pub fn names() -> Vec<String> {
    Static::iter().map(|name| name.into_owned()).collect()
}
