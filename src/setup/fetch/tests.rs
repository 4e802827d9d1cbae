use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::setup::fetch::testcert::CA_PEM;

#[test]
fn urls() {
    let check = |url: &str, ws: bool, expected: Result<(bool, &str, u16, &str, &str), &str>| {
        let parsed = Target::parse(url, ws);
        match expected {
            Ok((tls, host, port, authority, path)) => {
                let target = parsed.unwrap_or_else(|e| panic!("{url}: {e}"));
                assert_eq!(
                    (
                        target.tls,
                        target.host.as_str(),
                        target.port,
                        target.authority.as_str(),
                        target.path_and_query.as_str()
                    ),
                    (tls, host, port, authority, path),
                    "{url}"
                );
            }
            Err(reason) => {
                let error = parsed.expect_err(url).to_string();
                assert!(error.contains(reason), "{url}: {error}");
            }
        }
    };
    check(
        "https://example.org",
        false,
        Ok((true, "example.org", 443, "example.org", "/")),
    );
    check(
        "http://example.org:8080/a/b?c=d",
        false,
        Ok((false, "example.org", 8080, "example.org:8080", "/a/b?c=d")),
    );
    check(
        "HTTPS://[2001:db8::1]/x",
        false,
        Ok((true, "2001:db8::1", 443, "[2001:db8::1]", "/x")),
    );
    check(
        "http://[::1]:8880/healthz",
        false,
        Ok((false, "::1", 8880, "[::1]:8880", "/healthz")),
    );
    check(
        "wss://rtc.example.org/livekit/sfu/rtc?access_token=x",
        true,
        Ok((
            true,
            "rtc.example.org",
            443,
            "rtc.example.org",
            "/livekit/sfu/rtc?access_token=x",
        )),
    );
    check(
        "ws://127.0.0.1:7880/rtc",
        true,
        Ok((false, "127.0.0.1", 7880, "127.0.0.1:7880", "/rtc")),
    );
    check("ftp://example.org/", false, Err("https:// or http://"));
    check("wss://example.org/", false, Err("https:// or http://"));
    check("https://example.org/", true, Err("wss:// or ws://"));
    check("example.org", false, Err("https:// or http://"));
    check("https://user:pw@example.org/", false, Err("user names"));
    check("https://exa mple.org/", false, Err("cannot be parsed"));
    check("", false, Err("not a usable URL"));
}

#[test]
fn messages_hide_queries() {
    let error = Target::parse("gopher://h/rtc?access_token=secret", true).unwrap_err();
    assert!(!error.to_string().contains("secret"), "{error}");
    let target = Target::parse("wss://h/rtc?access_token=secret", true).unwrap();
    assert_eq!(target.shown(), "wss://h/rtc");
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

fn client() -> HttpClient {
    HttpClient::new(None).unwrap()
}

#[tokio::test]
async fn get_status_headers_body_and_no_redirects() {
    let router = Router::new()
        .route(
            "/json",
            get(|| async {
                (
                    [("content-type", "application/json"), ("x-test", "1")],
                    r#"{"a":1}"#,
                )
            }),
        )
        .route("/moved", get(|| async { Redirect::permanent("/json") }))
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                headers
                    .get("x-ask")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            }),
        )
        .route(
            "/big",
            get(|| async { vec![b'x'; MAX_BODY_BYTES + 1].into_response() }),
        );
    let addr = serve(router).await;
    let http = client();

    let fetched = http.get(&format!("http://{addr}/json"), &[]).await.unwrap();
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.header("x-test"), Some("1"));
    assert_eq!(fetched.json_object().unwrap()["a"], 1);

    let moved = http
        .get(&format!("http://{addr}/moved"), &[])
        .await
        .unwrap();
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), Some("/json"));

    let echo = http
        .get(&format!("http://{addr}/echo"), &[("x-ask", "hello")])
        .await
        .unwrap();
    assert_eq!(&echo.body[..], b"hello");

    let missing = http.get(&format!("http://{addr}/nope"), &[]).await.unwrap();
    assert_eq!(missing.status, 404);

    let big = http.get(&format!("http://{addr}/big"), &[]).await;
    assert!(matches!(big, Err(FetchError::TooLarge { .. })), "{big:?}");

    let preflight = http
        .request(Method::OPTIONS, &format!("http://{addr}/json"), &[])
        .await
        .unwrap();
    assert_eq!(preflight.status, 405);
}

#[tokio::test]
async fn connection_failures_are_named() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let http = client();
    let error = http
        .get(&format!("http://{closed}/"), &[])
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Refused { .. }), "{error}");
    assert!(error.to_string().contains("refused"), "{error}");

    let error = http
        .get("http://no-such-host.invalid/", &[])
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Dns { .. }), "{error}");

    // HTTPS to a plain HTTP port.
    let addr = serve(Router::new().route("/", get(|| async { "plain" }))).await;
    let error = http
        .get(&format!("https://localhost:{}/", addr.port()), &[])
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Tls { .. }), "{error}");
}

#[tokio::test]
async fn slow_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let started = std::time::Instant::now();
    let error = client()
        .get(&format!("http://{addr}/slow?token=secret"), &[])
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Timeout { .. }), "{error}");
    assert!(!error.to_string().contains("secret"));
    assert!(started.elapsed() < FETCH_TIMEOUT + Duration::from_secs(1));
}

/// A one-shot HTTPS server presenting the test certificate for `localhost`.
async fn tls_server() -> SocketAddr {
    let acceptor = crate::setup::fetch::testcert::localhost_acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn certificates_are_verified_and_problems_explained() {
    let addr = tls_server().await;
    let url = format!("https://localhost:{}/", addr.port());

    let error = client().get(&url, &[]).await.unwrap_err();
    assert!(matches!(error, FetchError::Certificate { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("the certificate for localhost is not trusted")
            && message.contains("unknown authority"),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, CA_PEM).unwrap();
    let trusting = HttpClient::new(Some(&ca)).unwrap();
    let fetched = trusting.get(&url, &[]).await.unwrap();
    assert_eq!((fetched.status, &fetched.body[..]), (200, &b"ok"[..]));

    // Right CA, wrong name: the certificate is for localhost only.
    let error = trusting
        .get(&format!("https://127.0.0.1:{}/", addr.port()), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::Certificate { .. })
            && error
                .to_string()
                .ends_with("it is valid only for localhost"),
        "{error}"
    );
}

#[tokio::test]
async fn websocket_upgrade_is_probed() {
    let router = Router::new()
        .route(
            "/rtc",
            get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(|_socket| async {}) }),
        )
        .route("/plain", get(|| async { "no upgrade here" }));
    let addr = serve(router).await;
    let http = client();
    assert_eq!(
        http.websocket_probe(&format!("ws://{addr}/rtc?access_token=x"))
            .await
            .unwrap(),
        101
    );
    let refused = http
        .websocket_handshake(&format!("ws://{addr}/plain"))
        .await
        .unwrap();
    assert_eq!(refused.status, 200);
    assert_eq!(refused.body_excerpt(), "no upgrade here");
    assert!(matches!(
        http.websocket_probe(&format!("http://{addr}/rtc")).await,
        Err(FetchError::BadUrl { .. })
    ));
}
