//! HTTP: the public listener's router and the connection loop that serves it.
//!
//! `public_service(state)` is the whole public application as a tower service; tests drive it
//! with `oneshot`, and [`serve`] runs it on a socket. Limits are enforced here, once:
//! header read timeout, request timeout, body cap (in the handlers), connection cap, per-client
//! rate limit.

pub mod admin;
mod auth_routes;
pub mod forwarded;
pub mod https;
pub mod ratelimit;
pub mod test_call;

use std::convert::Infallible;
use std::future::Future;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, Uri};
use axum::middleware::{self, Next};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;
use tower::util::MapRequest;

use crate::auth::AuthService;
use crate::net::caps::{ConnectionCaps, Limits};
use forwarded::TrustedProxies;
use ratelimit::RateLimiter;

/// Time allowed for a client to send a request's headers (slow-loris protection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one request, body and our work included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body accepted by the token endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most simultaneous connections on the public listeners, and from one address: browsers use a
/// few each (a participant's signaling WebSocket stays open), so 256 serve a large office behind
/// one NAT. A reverse proxy carries everyone: list it in `RTCBOX_TRUSTED_PROXIES` to exempt it.
pub const PUBLIC_LIMITS: Limits = Limits {
    total: 4096,
    per_address: 256,
};
/// The same for the admin panel (a few browsers on the LAN).
pub const ADMIN_LIMITS: Limits = Limits {
    total: 1024,
    per_address: 64,
};
/// What a per-address refusal on an HTTP listener tells the operator.
pub const PROXY_HINT: &str =
    " (if this address is your reverse proxy, list it in RTCBOX_TRUSTED_PROXIES)";
/// How long in-flight requests may finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the public listener's handlers share.
pub struct PublicState {
    pub auth: Arc<AuthService>,
    pub limiter: Mutex<RateLimiter>,
    /// The SFU's routes (signaling, room service), served at `/` and under `/livekit/sfu/`.
    pub rtc: Option<Router>,
    /// HTTP-01 answers while an ACME order waits (empty unless `RTCBOX_TLS_MODE=acme`).
    pub acme: crate::acme::Challenges,
    /// Whose `X-Forwarded-*` headers name the client (`RTCBOX_TRUSTED_PROXIES`; none by default).
    pub trusted_proxies: TrustedProxies,
}

impl PublicState {
    pub fn new(auth: Arc<AuthService>) -> Self {
        // Element Call makes a few token requests per join; a NAT may hide a whole office.
        PublicState {
            auth,
            limiter: Mutex::new(RateLimiter::new(30, 2.0)),
            rtc: None,
            acme: crate::acme::Challenges::default(),
            trusted_proxies: TrustedProxies::default(),
        }
    }

    pub fn with_trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        self.trusted_proxies = trusted;
        self
    }

    pub fn with_acme(mut self, challenges: crate::acme::Challenges) -> Self {
        self.acme = challenges;
        self
    }

    pub fn with_rtc(mut self, rtc: Router) -> Self {
        self.rtc = Some(rtc);
        self
    }
}

/// The public application with path normalisation in front of routing.
pub type PublicService = MapRequest<Router, fn(Request<Body>) -> Request<Body>>;

pub fn public_service(state: Arc<PublicState>) -> PublicService {
    public_router(state).map_request(normalize_path as fn(Request<Body>) -> Request<Body>)
}

/// Routes of the public listener: the authorization service at `/` and under `/livekit/jwt/`, the
/// SFU at `/` and under `/livekit/sfu/`, so one hostname works behind a proxy whether or not the
/// proxy strips the prefixes.
pub fn public_router(state: Arc<PublicState>) -> Router {
    let auth = auth_routes::routes();
    let mut router: Router = Router::new()
        .merge(auth.clone())
        .nest("/livekit/jwt", auth)
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(acme_challenge),
        )
        .with_state(state.clone());
    if let Some(rtc) = &state.rtc {
        // The test call's phone page sits at the SFU's public origin, with the SFU's routes.
        let rtc = rtc.clone().merge(test_call::routes());
        router = router.merge(rtc.clone()).nest("/livekit/sfu", rtc);
    }
    router
        .layer(middleware::from_fn(request_timeout))
        .layer(axum::Extension(state.trusted_proxies.clone()))
}

/// HTTP-01 (RFC 8555 §8.3): the key authorization for a token of a pending ACME order.
async fn acme_challenge(
    axum::extract::State(state): axum::extract::State<Arc<PublicState>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response<Body> {
    match state.acme.answer(&token) {
        Some(key_authorization) => Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Body::from(key_authorization))
            .expect("static response"),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("no such ACME challenge"))
            .expect("static response"),
    }
}

/// Collapses repeated slashes and drops a trailing one, so `//get_token` and `/sfu/get/` (common
/// results of a `livekit_service_url` with a trailing slash) reach their handlers.
fn normalize_path(mut request: Request<Body>) -> Request<Body> {
    let path = request.uri().path();
    if !path.contains("//") && (path.len() <= 1 || !path.ends_with('/')) {
        return request;
    }
    let mut clean = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        clean.push('/');
        clean.push_str(segment);
    }
    if clean.is_empty() {
        clean.push('/');
    }
    if let Some(query) = request.uri().query() {
        clean.push('?');
        clean.push_str(query);
    }
    let mut parts = request.uri().clone().into_parts();
    if let Ok(path_and_query) = clean.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

async fn request_timeout(request: Request<Body>, next: Next) -> Response<Body> {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from("request timed out"))
            .expect("static response"),
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for a grace period. HTTP/1.1 with upgrades (the SFU's WebSocket will need them).
pub async fn serve<S>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>)
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let caps = ConnectionCaps::new("public HTTP", PUBLIC_LIMITS).with_hint(PROXY_HINT);
    serve_with(listener, None, caps, service, shutdown).await;
}

/// [`serve`], behind `front`'s TLS when there is one: the public HTTPS listener (TURN over TLS
/// on the same port, see [`https`]) or the admin panel's ([`https::HttpsFront::http_only`]).
/// Every connection holds a permit of `caps` until it ends; one refused is closed at once.
pub async fn serve_with<S>(
    listener: TcpListener,
    front: Option<https::HttpsFront>,
    caps: ConnectionCaps,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // Refused: closed at once (dropped), so the accept loop never waits for a slot and the
        // backlog never fills with one client's connections.
        let Ok(permit) = caps.try_acquire(peer.ip()) else {
            continue;
        };
        let service = service.clone();
        let mut stop = stop_rx.clone();
        let front = front.clone();
        connections.spawn(async move {
            let _permit = permit;
            let stream: Box<dyn https::Io> = match front {
                None => Box::new(stream),
                Some(front) => {
                    let opened = tokio::select! {
                        opened = front.open(stream, peer) => opened,
                        _ = stop.wait_for(|stop| *stop) => None,
                    };
                    match opened {
                        Some(stream) => stream,
                        None => return,
                    }
                }
            };
            let hyper_service =
                hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    service.clone().oneshot(request.map(Body::new))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder
                .serve_connection(TokioIo::new(stream), hyper_service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_connection_end(result),
                _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    log_connection_end(connection.await);
                }
            }
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "closing connections still busy after the grace period"
        );
        connections.abort_all();
    }
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // Resets, timeouts and garbage from clients are normal on a public port.
        tracing::debug!(%error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests;
