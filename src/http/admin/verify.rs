//! The verification page. Nothing goes out when the page is opened: the checks run when the
//! admin presses "Run the checks". A plain form POST (`/verify`) answers with every result at
//! the end; the page's script posts the same form to `/verify/run` instead and reads the answer
//! as a stream of server-sent events, each an HTML fragment: `start` (every check, waiting),
//! `check` (one check, the moment it finishes) and `done` (the results again, with the root
//! causes several checks share, `setup::verify::causes`). The last results are kept in memory
//! and shown when the page is opened again.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use http_body_util::Channel;

use super::auth::Session;
use super::pages::utc_minute;
use super::views::{self, FormData, Layout};
use super::wizard::deployment;
use super::{AdminState, unix_now};
use crate::config::SettingKey;
use crate::http::test_call;
use crate::secret::Secret;
use crate::setup::verify::{self, Check, Status as CheckStatus, causes};
use crate::setup::wizard::Step;

/// The results of the last run, shown when the page is opened again (until a restart).
#[derive(Clone, Debug)]
pub struct LastChecks {
    pub at: i64,
    pub checks: Vec<Check>,
}

#[derive(Template)]
#[template(path = "verify.html")]
pub struct VerifyPage {
    pub layout: Layout,
    pub missing: Vec<Step>,
    pub results: Option<ResultsView>,
    /// The SFU's public URL, which the test call joins through.
    pub public_url: String,
}

/// The results block: root causes first, then every check.
#[derive(Template)]
#[template(path = "_results.html")]
pub struct ResultsView {
    /// "Checked at …", or what is going on.
    pub status: String,
    pub causes: Vec<CauseView>,
    pub checks: Vec<CheckView>,
}

/// One check (an `<li>`; the stream sends it alone as it finishes).
#[derive(Template)]
#[template(path = "_check.html")]
pub struct CheckView {
    pub id: &'static str,
    pub title: &'static str,
    /// `pass`, `fail`, `warn`, `unavailable` or `running` (CSS class and badge).
    pub status: &'static str,
    pub label: &'static str,
    pub detail: String,
    pub fix: Option<String>,
    /// The root causes above that explain this check: (anchor number, title).
    pub explained_by: Vec<(usize, String)>,
}

pub struct CauseView {
    pub number: usize,
    pub title: String,
    pub detail: String,
    pub fix: String,
    pub checks: Vec<&'static str>,
}

impl CheckView {
    fn of(check: &Check, causes: &[causes::RootCause]) -> CheckView {
        let (status, label) = match check.status {
            CheckStatus::Pass => ("pass", "pass"),
            CheckStatus::Fail => ("fail", "fail"),
            CheckStatus::Warn => ("warn", "warning"),
            CheckStatus::Unavailable => ("unavailable", "not checked"),
        };
        CheckView {
            id: check.id,
            title: check.title,
            status,
            label,
            detail: check.detail.clone(),
            fix: check.fix.clone(),
            explained_by: causes
                .iter()
                .enumerate()
                .filter(|(_, cause)| cause.checks.contains(&check.id))
                .map(|(i, cause)| (i + 1, cause.title.clone()))
                .collect(),
        }
    }

    fn waiting(id: &'static str) -> CheckView {
        CheckView {
            id,
            title: verify::title(id),
            status: "running",
            label: "checking…",
            detail: String::new(),
            fix: None,
            explained_by: Vec::new(),
        }
    }
}

impl ResultsView {
    fn of(last: &LastChecks) -> ResultsView {
        let groups = causes::group(&last.checks);
        ResultsView {
            status: format!("Checked at {}.", utc_minute(last.at)),
            checks: last
                .checks
                .iter()
                .map(|c| CheckView::of(c, &groups))
                .collect(),
            causes: groups
                .into_iter()
                .enumerate()
                .map(|(i, cause)| CauseView {
                    number: i + 1,
                    checks: cause.checks.iter().map(|id| verify::title(id)).collect(),
                    title: cause.title,
                    detail: cause.detail,
                    fix: cause.fix,
                })
                .collect(),
        }
    }

    fn waiting() -> ResultsView {
        ResultsView {
            status: "Running the checks…".into(),
            causes: Vec::new(),
            checks: verify::ids::ALL
                .iter()
                .map(|id| CheckView::waiting(id))
                .collect(),
        }
    }
}

/// The page, with the last results if there are any; runs nothing.
pub async fn page(State(state): State<Arc<AdminState>>, session: Session) -> Response {
    let missing = deployment(&state).await.err().unwrap_or_default();
    let last = last_checks(&state);
    verify_page(
        &state,
        &session,
        missing,
        last.as_ref().map(ResultsView::of),
    )
}

/// The page; its content security policy lets the test call reach the SFU's public URL.
fn verify_page(
    state: &AdminState,
    session: &Session,
    missing: Vec<Step>,
    results: Option<ResultsView>,
) -> Response {
    let public_url = state.settings.public_url.as_str().to_owned();
    let policy = format!(
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self' {}; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        test_call::connect_sources(&public_url)
    );
    let mut response = views::render(&VerifyPage {
        layout: session.layout("Verify", "verify"),
        results: results.filter(|_| missing.is_empty()),
        missing,
        public_url,
    });
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// "Start a test call": a throwaway room and its tokens, as JSON for the page's script
/// (`http::test_call`). Needs the finished wizard, like the checks.
pub async fn start_test_call(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    if let Err(rejected) = session.check_csrf(&form.0) {
        return rejected;
    }
    if deployment(&state).await.is_err() {
        return json_error(
            StatusCode::CONFLICT,
            "The setup wizard is not finished: finish it first, then start the test call.",
        );
    }
    let started = test_call::start(
        state.sfu.as_ref(),
        &state.settings.api_key,
        &state.settings.api_secret,
        state.settings.public_url.as_str(),
        u64::try_from(unix_now()).unwrap_or(0),
    )
    .await;
    match started {
        Ok(call) => {
            let mut response = axum::Json(call).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            tracing::warn!(%error, "admin panel: no test call");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("No test call: {error}."),
            )
        }
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// "Run the checks" without JavaScript: the page with every result, once all are in.
pub async fn run_and_show(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    let (access_token, deployment) = match accepted(&state, &session, &form).await {
        Ok(accepted) => accepted,
        Err(Refused::Response(rejected)) => return rejected,
        Err(Refused::Missing(missing)) => return verify_page(&state, &session, missing, None),
    };
    let last = run(&state, deployment, access_token, None).await;
    verify_page(&state, &session, Vec::new(), Some(ResultsView::of(&last)))
}

/// "Run the checks" from the page's script: server-sent events, each check as it finishes.
pub async fn run_streaming(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    let (access_token, deployment) = match accepted(&state, &session, &form).await {
        Ok(accepted) => accepted,
        Err(Refused::Response(rejected)) => return rejected,
        Err(Refused::Missing(_)) => {
            return views::error_response(
                StatusCode::CONFLICT,
                "The setup wizard is not finished, so there is nothing to check yet.",
            );
        }
    };
    let (mut body, channel) = Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(Box::pin(async move {
        let (progress, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let checks = async {
            let last = run(&state, deployment, access_token, Some(&progress)).await;
            drop(progress);
            last
        };
        let send = async {
            // A closed page stops the sending, not the checks (each is bounded).
            let mut open = send_event(&mut body, "start", ResultsView::waiting()).await;
            while let Some(check) = finished.recv().await {
                if open {
                    open = send_event(&mut body, "check", CheckView::of(&check, &[])).await;
                }
            }
            open
        };
        let (last, open) = tokio::join!(checks, send);
        if open {
            send_event(&mut body, "done", ResultsView::of(&last)).await;
        }
    }));
    let mut response = Response::new(Body::new(channel));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// One server-sent event whose data is `fragment` rendered; false once the page is gone.
async fn send_event<T: Template>(
    body: &mut http_body_util::channel::Sender<Bytes, Infallible>,
    event: &str,
    fragment: T,
) -> bool {
    let html = fragment.render().unwrap_or_else(|error| {
        tracing::error!(%error, "admin panel: failed rendering a check");
        String::new()
    });
    body.send_data(Bytes::from(sse_event(event, &html)))
        .await
        .is_ok()
}

/// `event: NAME`, then each line of `data` as a `data:` line, then a blank line.
fn sse_event(event: &str, data: &str) -> String {
    let mut out = format!("event: {event}\n");
    for line in data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Why "Run the checks" was refused.
enum Refused {
    /// A wrong CSRF token: the page to answer with.
    Response(Response),
    /// The wizard's steps still missing.
    Missing(Vec<Step>),
}

/// The CSRF token checked and the wizard finished: the optional access token (never stored)
/// and the deployment to check.
async fn accepted(
    state: &AdminState,
    session: &Session,
    form: &FormData,
) -> Result<(Option<Secret>, crate::setup::model::Deployment), Refused> {
    session.check_csrf(&form.0).map_err(Refused::Response)?;
    let deployment = deployment(state).await.map_err(Refused::Missing)?;
    let access_token = form
        .0
        .get("access_token")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && t.len() <= 1024)
        .map(Secret::new);
    Ok((access_token, deployment))
}

fn last_checks(state: &AdminState) -> Option<LastChecks> {
    state
        .last_checks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Runs every check (reporting each to `progress`) and keeps the results as the last run.
async fn run(
    state: &AdminState,
    deployment: crate::setup::model::Deployment,
    access_token: Option<Secret>,
    progress: Option<&verify::Progress>,
) -> LastChecks {
    let checks = run_checks(state, deployment, access_token, progress).await;
    let last = LastChecks {
        at: unix_now(),
        checks,
    };
    *state
        .last_checks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(last.clone());
    last
}

async fn run_checks(
    state: &AdminState,
    deployment: crate::setup::model::Deployment,
    access_token: Option<Secret>,
    progress: Option<&verify::Progress>,
) -> Vec<Check> {
    let Some(net) = &state.net else {
        let check = Check {
            title: "Live checks",
            ..Check::new(
                "network",
                CheckStatus::Unavailable,
                "This panel runs without network access, so nothing can be checked.".into(),
                None,
            )
        };
        if let Some(progress) = progress {
            let _ = progress.send(check.clone());
        }
        return vec![check];
    };
    // Where media is advertised now (it follows the public IP) and the STUN servers in effect.
    let media = super::pages::live_media(state).await;
    let input = verify::VerifyInput {
        deployment,
        access_token,
        advertised_udp: media.udp,
        advertised_tcp: media.tcp,
        stun_servers: state.running().stun_servers,
        own_tls: verify::evaluate::OwnTls {
            served: state.certificates.as_ref().map(|c| c.info()),
            acme: state.acme.as_ref().map(|a| a.status()),
            now: crate::db::unix_now(),
        },
    };
    let sfu = state.sfu.as_ref().map(|handle| verify::SfuAccess {
        handle: handle.clone(),
        api_key: state.settings.api_key.clone(),
        api_secret: state.settings.api_secret.clone(),
    });
    let turn = state.turn.as_ref().map(|handle| verify::TurnAccess {
        handle: handle.clone(),
        shared_secret: state.settings.turn_shared_secret.clone(),
        shared_secret_pinned: state.settings.is_pinned(SettingKey::TurnSharedSecret),
    });
    // Boxed: the checks' futures are large (TLS state included), too large for a worker
    // thread's stack in debug builds when moved around unboxed.
    match progress {
        Some(progress) => {
            Box::pin(verify::run_all_reporting(
                &input,
                &net.http,
                sfu.as_ref(),
                turn.as_ref(),
                progress,
            ))
            .await
        }
        None => {
            Box::pin(verify::run_all(
                &input,
                &net.http,
                sfu.as_ref(),
                turn.as_ref(),
            ))
            .await
        }
    }
}
