//! The public router through `oneshot`: paths, methods, CORS, limits, garbage.

use std::future::Future;
use std::pin::Pin;

use axum::http::header;
use http_body_util::BodyExt as _;

use super::*;
use crate::auth::delayed_leave::{DelegateLeave, Delegation, DelegationError};
use crate::auth::{AuthConfig, OpenIdVerifier};
use crate::config::{ApiKey, FullAccess, PublicUrl};
use crate::matrix::{AddressPolicy, UserInfoError};
use crate::rooms::RoomRegistry;
use crate::secret::Secret;

/// Confirms exactly one token, "good", as @alice:home.example.
struct OneUser;

impl OpenIdVerifier for OneUser {
    fn verify<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a Secret,
        _: AddressPolicy,
    ) -> Pin<Box<dyn Future<Output = Result<String, UserInfoError>> + Send + 'a>> {
        let answer = if access_token.expose() == "good" {
            crate::matrix::parse_userinfo(br#"{"sub":"@alice:home.example"}"#, server_name)
        } else {
            Err(UserInfoError::Status(401))
        };
        Box::pin(async move { answer })
    }
}

/// Takes every delegation.
struct AcceptAll;

impl DelegateLeave for AcceptAll {
    fn delegate(
        &self,
        _: Delegation,
    ) -> Pin<Box<dyn Future<Output = Result<(), DelegationError>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
}

fn app() -> PublicService {
    public_service(Arc::new(PublicState::new(Arc::new(auth_service()))))
}

fn auth_service() -> AuthService {
    AuthService::new(
        AuthConfig {
            public_url: PublicUrl::parse("wss://rtc.home.example").unwrap(),
            api_key: ApiKey::parse("APItest").unwrap(),
            api_secret: Secret::new("x".repeat(32)),
            full_access: FullAccess::parse("home.example").unwrap(),
            dangerous_allow_private_homeservers: false,
        },
        Arc::new(OneUser),
        Arc::new(Mutex::new(RoomRegistry::new())),
        Arc::new(AcceptAll),
    )
}

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

async fn call_on(app: &PublicService, method: &str, path: &str, body: impl Into<Body>) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(body.into())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn call(method: &str, path: &str, body: impl Into<Body>) -> Answer {
    call_on(&app(), method, path, body).await
}

fn good_body() -> String {
    serde_json::json!({
        "room": "!r:home.example", "device_id": "D",
        "openid_token": {"access_token": "good", "matrix_server_name": "home.example"},
    })
    .to_string()
}

#[tokio::test]
async fn token_endpoints_answer_at_root_and_under_the_prefix() {
    for path in [
        "/sfu/get",
        "/livekit/jwt/sfu/get",
        "//sfu/get",
        "/livekit/jwt//sfu/get",
        "/sfu/get/",
    ] {
        let answer = call("POST", path, good_body()).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.json()["url"], "wss://rtc.home.example");
        assert_eq!(answer.header("content-type"), "application/json");
        assert_eq!(answer.header("access-control-allow-origin"), "*");
    }
    for path in [
        "/get_token",
        "/livekit/jwt/get_token",
        "/delegate_delayed_leave",
        "/livekit/jwt/delegate_delayed_leave",
    ] {
        let answer = call("POST", path, "{}").await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.json()["errcode"], "M_BAD_JSON");
        assert_eq!(answer.header("access-control-allow-origin"), "*");
    }
}

#[tokio::test]
async fn delegate_delayed_leave_answers_an_empty_object() {
    let body = serde_json::json!({
        "room_id": "!r:home.example", "slot_id": "m.call#ROOM",
        "openid_token": {"access_token": "good", "matrix_server_name": "home.example"},
        "member": {"id": "m1", "claimed_user_id": "@alice:home.example", "claimed_device_id": "D"},
        "delay_id": "syd_x", "delay_timeout": 10000,
    })
    .to_string();
    for path in [
        "/delegate_delayed_leave",
        "/livekit/jwt/delegate_delayed_leave",
    ] {
        let answer = call("POST", path, body.clone()).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "{}"), "{path}");
        assert_eq!(answer.header("content-type"), "application/json");
        assert_eq!(answer.header("access-control-allow-origin"), "*");
    }
}

#[tokio::test]
async fn preflight_and_wrong_methods() {
    for path in [
        "/sfu/get",
        "/get_token",
        "/livekit/jwt/get_token",
        "/delegate_delayed_leave",
        "/livekit/jwt/delegate_delayed_leave",
    ] {
        let answer = call("OPTIONS", path, Body::empty()).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.body, "");
        assert_eq!(answer.header("access-control-allow-origin"), "*");
        assert_eq!(answer.header("access-control-allow-methods"), "POST");
        assert!(
            answer
                .header("access-control-allow-headers")
                .contains("Content-Type")
        );
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            let answer = call(method, path, Body::empty()).await;
            assert_eq!(answer.status, 405, "{method} {path}");
            assert_eq!(answer.header("access-control-allow-origin"), "*");
        }
    }
}

#[tokio::test]
async fn healthz() {
    for path in ["/healthz", "/livekit/jwt/healthz"] {
        assert_eq!(call("GET", path, Body::empty()).await.status, 200);
        let head = call("HEAD", path, Body::empty()).await;
        assert_eq!((head.status, head.body.as_str()), (200, ""));
        assert_eq!(call("POST", path, Body::empty()).await.status, 405);
    }
    assert_eq!(
        call("GET", "/nothing-here", Body::empty()).await.status,
        404
    );
}

#[tokio::test]
async fn errors_are_json_with_cors() {
    let check = |answer: Answer, status: u16, errcode: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.json()["errcode"], errcode);
        assert_eq!(answer.header("access-control-allow-origin"), "*");
    };
    check(
        call("POST", "/sfu/get", "{not json").await,
        400,
        "M_NOT_JSON",
    );
    check(
        call("POST", "/sfu/get", vec![0xff, 0xfe, 0x00]).await,
        400,
        "M_NOT_JSON",
    );
    let forged = good_body().replace("\"good\"", "\"forged\"");
    check(
        call("POST", "/sfu/get", forged).await,
        401,
        "M_UNAUTHORIZED",
    );
    check(
        call("POST", "/get_token", vec![b'{'; MAX_BODY_BYTES + 1]).await,
        413,
        "M_TOO_LARGE",
    );
}

#[tokio::test]
async fn clients_are_rate_limited_with_a_retry_hint() {
    let app = app();
    let mut limited = None;
    for _ in 0..100 {
        let answer = call_on(&app, "POST", "/get_token", "{}").await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 400);
    }
    let answer = limited.expect("the limiter must engage within 100 requests");
    assert_eq!(answer.json()["errcode"], "M_LIMIT_EXCEEDED");
    assert!(answer.json()["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(answer.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(answer.header("access-control-allow-origin"), "*");
    // Health checks are never limited.
    assert_eq!(
        call_on(&app, "GET", "/healthz", Body::empty()).await.status,
        200
    );
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let trusted = TrustedProxies::new(vec![crate::net::Cidr::parse("127.0.0.1").unwrap()]);
    let app = public_service(Arc::new(
        PublicState::new(Arc::new(auth_service())).with_trusted_proxies(trusted),
    ));
    // Requests until the first 429, each with its own X-Forwarded-For unless `fixed`.
    let limited_after = |peer: &'static str, fixed: Option<&'static str>| {
        let app = app.clone();
        async move {
            for i in 0..100u32 {
                let forwarded = fixed.map_or_else(|| format!("203.0.113.{i}"), str::to_owned);
                let mut request = Request::post("/get_token")
                    .header("x-forwarded-for", forwarded)
                    .body(Body::from("{}"))
                    .unwrap();
                request
                    .extensions_mut()
                    .insert(ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
                let status = app.clone().oneshot(request).await.unwrap().status();
                if status == StatusCode::TOO_MANY_REQUESTS {
                    return Some(i);
                }
            }
            None
        }
    };
    // An untrusted peer inventing a client per request is still one client.
    assert!(limited_after("127.0.0.2:5000", None).await.is_some());
    assert!(limited_after("192.168.1.2:5000", None).await.is_some());
    // The trusted proxy's clients are told apart, and each is limited.
    assert_eq!(limited_after("127.0.0.1:5000", None).await, None);
    assert!(
        limited_after("127.0.0.1:5000", Some("198.51.100.7"))
            .await
            .is_some()
    );
}

#[test]
fn path_normalisation() {
    let check = |from: &str, to: &str| {
        let request = normalize_path(Request::builder().uri(from).body(Body::empty()).unwrap());
        assert_eq!(request.uri().to_string(), to, "{from}");
    };
    check("/get_token", "/get_token");
    check("//get_token", "/get_token");
    check("/livekit/jwt//sfu/get/", "/livekit/jwt/sfu/get");
    check("/a//b?x=1//", "/a/b?x=1//");
    check("/", "/");
    check("//", "/");
}

#[tokio::test]
async fn acme_http01_tokens_are_answered_while_published() {
    let challenges = crate::acme::Challenges::default();
    let app = public_service(Arc::new(
        PublicState::new(Arc::new(auth_service())).with_acme(challenges.clone()),
    ));
    let path = "/.well-known/acme-challenge/tok-1";
    assert_eq!(call_on(&app, "GET", path, "").await.status, 404);
    challenges.insert("tok-1".into(), "tok-1.thumbprint".into());
    let answer = call_on(&app, "GET", path, "").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "tok-1.thumbprint")
    );
    assert_eq!(
        call_on(&app, "GET", "/.well-known/acme-challenge/other", "")
            .await
            .status,
        404
    );
    challenges.remove("tok-1");
    assert_eq!(call_on(&app, "GET", path, "").await.status, 404);
}

#[tokio::test]
async fn the_test_call_page_is_served_with_the_sfu_routes() {
    // Without an SFU there is no test call page.
    assert_eq!(call("GET", "/test-call", Body::empty()).await.status, 404);
    let app = public_service(Arc::new(
        PublicState::new(Arc::new(auth_service())).with_rtc(axum::Router::new()),
    ));
    for prefix in ["", "/livekit/sfu"] {
        let page = call_on(&app, "GET", &format!("{prefix}/test-call"), Body::empty()).await;
        assert_eq!(page.status, 200, "{prefix}");
        assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
        assert!(page.body.contains("Join the test call"), "{}", page.body);
        let policy = page.header("content-security-policy");
        assert!(policy.contains("connect-src 'self';"), "{policy}");
        assert_eq!(page.header("referrer-policy"), "no-referrer");
        for (file, kind) in [
            ("test-call.js", "text/javascript; charset=utf-8"),
            ("livekit-client.umd.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("icon.svg", "image/svg+xml"),
        ] {
            let served = call_on(
                &app,
                "GET",
                &format!("{prefix}/test-call/{file}"),
                Body::empty(),
            )
            .await;
            assert_eq!(served.status, 200, "{prefix}/test-call/{file}");
            assert_eq!(served.header("content-type"), kind);
        }
        // Only those: not the admin panel's other files.
        for other in [
            "app.js",
            "vendor%2Flivekit-client.umd.js",
            "..%2Fapp.js",
            "test-call.html",
        ] {
            let refused = call_on(
                &app,
                "GET",
                &format!("{prefix}/test-call/{other}"),
                Body::empty(),
            )
            .await;
            assert_eq!(refused.status, 404, "{prefix}/test-call/{other}");
        }
    }
    assert!(
        call_on(
            &app,
            "GET",
            "/test-call/livekit-client.umd.js",
            Body::empty()
        )
        .await
        .body
        .contains("LivekitClient")
    );
}
