//! The log page: the lines rtcbox logged (kept across restarts in the data directory,
//! `logbuf`), filtered by level, and the same as a download.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use super::AdminState;
use super::auth::Session;
use super::views::{self, Layout};
use crate::logbuf::{self, Level};

/// Lines shown on the page (the download has them all).
const SHOWN: usize = 500;

#[derive(Template)]
#[template(path = "logs.html")]
pub struct LogsPage {
    pub layout: Layout,
    pub lines: Vec<String>,
    /// The level chosen (its name), and every level, most severe first.
    pub level: &'static str,
    pub levels: [Level; 5],
    /// How many lines at that level there are in all (more than shown, possibly).
    pub total: usize,
    /// Where the log is kept, or why it is not.
    pub file: Option<Result<String, String>>,
}

impl LogsPage {
    pub fn is_chosen(&self, level: &Level) -> bool {
        self.level == level.name()
    }
}

#[derive(Deserialize)]
pub struct LogsQuery {
    level: Option<String>,
}

impl LogsQuery {
    /// The level asked for; unknown or missing names mean everything rtcbox logs (`trace`).
    fn level(&self) -> Level {
        self.level
            .as_deref()
            .and_then(Level::parse)
            .unwrap_or(Level::Trace)
    }
}

pub async fn page(
    State(state): State<Arc<AdminState>>,
    session: Session,
    Query(query): Query<LogsQuery>,
) -> Response {
    let level = query.level();
    let lines = logbuf::at_least(&state.logs.recent(logbuf::CAPACITY), level);
    views::render(&LogsPage {
        layout: session.layout("Logs", "logs"),
        total: lines.len(),
        lines: lines[lines.len().saturating_sub(SHOWN)..].to_vec(),
        level: level.name(),
        levels: Level::ALL,
        file: state
            .logs
            .file()
            .map(|f| f.map(|path| path.display().to_string())),
    })
}

/// Every line kept (both log files), at the level asked for, as a text file.
pub async fn download(
    State(state): State<Arc<AdminState>>,
    _session: Session,
    Query(query): Query<LogsQuery>,
) -> Response {
    let level = query.level();
    let mut text = logbuf::at_least(&state.logs.everything(), level).join("\n");
    text.push('\n');
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let name = format!("attachment; filename=\"rtcbox-log-{}.txt\"", level.name());
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}
