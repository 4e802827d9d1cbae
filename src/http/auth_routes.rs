//! HTTP face of the authorization service, as lk-jwt-service presents it: `POST /sfu/get`,
//! `POST /get_token`, `POST /delegate_delayed_leave` (CORS `*`, `OPTIONS` → 200, other methods
//! → 405, every answer JSON) and `GET|HEAD /healthz`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use axum::routing::any;
use http_body_util::{BodyExt as _, Limited};
use serde_json::json;

use super::forwarded::Client;
use super::{MAX_BODY_BYTES, PublicState};
use crate::auth::{AuthError, TokenResponse};

pub fn routes() -> Router<Arc<PublicState>> {
    Router::new()
        .route("/sfu/get", any(sfu_get))
        .route("/get_token", any(get_token))
        .route("/delegate_delayed_leave", any(delegate_delayed_leave))
        .route("/healthz", any(healthz))
}

#[derive(Clone, Copy)]
enum Endpoint {
    SfuGet,
    GetToken,
    DelegateDelayedLeave,
}

async fn sfu_get(
    state: State<Arc<PublicState>>,
    client: Client,
    method: Method,
    body: Body,
) -> Response<Body> {
    token_endpoint(Endpoint::SfuGet, state, client, method, body).await
}

async fn get_token(
    state: State<Arc<PublicState>>,
    client: Client,
    method: Method,
    body: Body,
) -> Response<Body> {
    token_endpoint(Endpoint::GetToken, state, client, method, body).await
}

async fn delegate_delayed_leave(
    state: State<Arc<PublicState>>,
    client: Client,
    method: Method,
    body: Body,
) -> Response<Body> {
    token_endpoint(Endpoint::DelegateDelayedLeave, state, client, method, body).await
}

async fn token_endpoint(
    endpoint: Endpoint,
    State(state): State<Arc<PublicState>>,
    Client { ip, .. }: Client,
    method: Method,
    body: Body,
) -> Response<Body> {
    match method {
        Method::OPTIONS => return cors_json(StatusCode::OK, None),
        Method::POST => {}
        _ => return cors_json(StatusCode::METHOD_NOT_ALLOWED, None),
    }
    let limited = state
        .limiter
        .lock()
        .expect("rate limiter lock")
        .check(ip, Instant::now());
    if let Err(wait) = limited {
        crate::metrics::TOKEN_RATE_LIMITED.inc();
        let retry_ms = wait.as_millis().max(1) as u64;
        let mut response = cors_json(
            StatusCode::TOO_MANY_REQUESTS,
            Some(
                json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": retry_ms}),
            ),
        );
        let seconds = HeaderValue::from(retry_ms.div_ceil(1000));
        response.headers_mut().insert(header::RETRY_AFTER, seconds);
        return response;
    }
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                cors_json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Some(
                        json!({"errcode": "M_TOO_LARGE", "error": "The request body is too large"}),
                    ),
                )
            } else {
                error_response(&AuthError::NOT_JSON)
            };
        }
    };
    let result = match endpoint {
        Endpoint::SfuGet => state.auth.sfu_get(&bytes).await.map(token_body),
        Endpoint::GetToken => state.auth.get_token(&bytes).await.map(token_body),
        Endpoint::DelegateDelayedLeave => state
            .auth
            .delegate_delayed_leave(&bytes)
            .await
            .map(|()| json!({})),
    };
    match result {
        Ok(body) => cors_json(StatusCode::OK, Some(body)),
        Err(error) => error_response(&error),
    }
}

fn token_body(TokenResponse { url, jwt }: TokenResponse) -> serde_json::Value {
    json!({"url": url, "jwt": jwt})
}

async fn healthz(method: Method) -> Response<Body> {
    let status = match method {
        Method::GET | Method::HEAD => StatusCode::OK,
        _ => StatusCode::METHOD_NOT_ALLOWED,
    };
    Response::builder()
        .status(status)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(Body::empty())
        .expect("static response")
}

fn error_response(error: &AuthError) -> Response<Body> {
    cors_json(
        error.status,
        Some(json!({"errcode": error.errcode, "error": error.error})),
    )
}

/// lk-jwt-service's headers on every answer of the token endpoints, errors and preflights included.
fn cors_json(status: StatusCode, body: Option<serde_json::Value>) -> Response<Body> {
    let body = match body {
        Some(value) => Body::from(value.to_string()),
        None => Body::empty(),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "POST")
        .header(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization",
        )
        .body(body)
        .expect("static response")
}
