use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::turn::testing::loopback_turn;

#[tokio::test]
async fn rewound_streams_read_the_first_bytes_again() {
    let (mut client, server) = tokio::io::duplex(64);
    client.write_all(b"lo world").await.unwrap();
    drop(client);
    let mut rewound = Rewound::new(b"hel".to_vec(), server);
    let mut all = String::new();
    rewound.read_to_string(&mut all).await.unwrap();
    assert_eq!(all, "hello world");
}

/// What [`sort`] makes of a client that sends `chunks` (one write each) and then closes.
async fn sorted(chunks: &[&[u8]]) -> Option<(Opening, Vec<u8>)> {
    let (mut client, server) = tokio::io::duplex(1024);
    for chunk in chunks {
        client.write_all(chunk).await.unwrap();
        tokio::task::yield_now().await;
    }
    drop(client);
    let (kind, mut stream) = sort(server).await?;
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    Some((kind, all))
}

#[tokio::test]
async fn connections_are_sorted_by_their_first_bytes() {
    let binding = crate::net::stun::binding_request(&[7; 12]);
    let check = async |chunks: &[&[u8]], expected: Option<Opening>| {
        let got = sorted(chunks).await;
        assert_eq!(
            got.as_ref().map(|(kind, _)| *kind),
            expected,
            "{chunks:02x?}"
        );
        // Nothing read is lost.
        if let Some((_, bytes)) = got {
            assert_eq!(bytes, chunks.concat());
        }
    };
    check(&[&binding], Some(Opening::Turn)).await;
    // Short reads: the header in pieces.
    check(
        &[&binding[..1], &binding[1..5], &binding[5..]],
        Some(Opening::Turn),
    )
    .await;
    check(&[b"GET /healthz HTTP/1.1\r\n\r\n"], Some(Opening::Other)).await;
    check(&[b"G", b"ET / HTTP/1.1\r\n\r\n"], Some(Opening::Other)).await;
    check(&[&[0x40, 0x00, 0x00, 0x00]], Some(Opening::Other)).await;
    check(
        &[&[0x00, 0x01, 0x00, 0x00, 0xde, 0xad]],
        Some(Opening::Other),
    )
    .await;
    // A STUN-looking start that ends early, or nothing at all: closed.
    check(&[&binding[..6]], None).await;
    check(&[], None).await;
}

#[tokio::test]
async fn one_tls_port_serves_http_and_turn() {
    let turn = loopback_turn(Vec::new(), None).await;
    let front = HttpsFront::new(&turn.certificates, turn.tls_streams.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app: Router = Router::new().route("/healthz", get(|| async { "ok" }));
    let service = tower::service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(tower::ServiceExt::oneshot(app, request).await.unwrap()) }
    });
    let (_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::http::serve_with(
        listener,
        Some(front),
        crate::net::caps::ConnectionCaps::new("test HTTPS", crate::http::PUBLIC_LIMITS),
        service,
        async {
            let _ = stop_rx.await;
        },
    ));
    let connect = async || {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        turn.trusting
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap()
    };

    let mut web = connect().await;
    web.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    web.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    let mut stun = connect().await;
    let id = [9; 12];
    stun.write_all(&crate::net::stun::binding_request(&id))
        .await
        .unwrap();
    let mut header = [0u8; 20];
    stun.read_exact(&mut header).await.unwrap();
    assert_eq!(header[..2], [0x01, 0x01], "a Binding success response");
    assert_eq!(header[8..], id);

    // Garbage after the handshake is the web server's to refuse.
    let mut garbage = connect().await;
    garbage.write_all(b"\xff\xfe\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = garbage.read_to_end(&mut answer).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_tls_alpn_01_validation_is_closed_after_the_handshake() {
    let turn = loopback_turn(Vec::new(), None).await;
    let front = HttpsFront::new(&turn.certificates, turn.tls_streams.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Whatever reaches the web application is counted.
    let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = reached.clone();
    let service = tower::service_fn(move |_request| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, Infallible>(axum::response::IntoResponse::into_response("web")) }
    });
    let (_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::http::serve_with(
        listener,
        Some(front),
        crate::net::caps::ConnectionCaps::new("test HTTPS", crate::http::PUBLIC_LIMITS),
        service,
        async {
            let _ = stop_rx.await;
        },
    ));
    turn.certificates
        .alpn_challenges()
        .publish("localhost", &[3; 32])
        .unwrap();

    // The CA's side: only acme-tls/1 offered; the challenge certificate's own checks are the
    // CA's business, so any certificate is accepted here.
    let connector =
        crate::tls::testing::dangerous_client_accepting_any(&[crate::tls::ACME_TLS_ALPN]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(crate::tls::ACME_TLS_ALPN)
    );
    // A request is never answered: the server closes the connection.
    let _ = tls
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
}
