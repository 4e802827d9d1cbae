//! Cloudflare's API against a loopback stand-in. This is the one DNS-01 provider tested without
//! its real peer (the suite never reaches the internet): the stand-in records every request and
//! answers as Cloudflare's v4 API documents it, and the tests assert the exact requests: the
//! bearer token, the zone lookup by name, the record body, the deletion by id.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

const TOKEN: &str = "cf-test-token-0123456789";

/// One request as the stand-in saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    authorization: String,
    body: String,
}

/// Serves `answer(method, path) -> (status, json)` on loopback; returns its base URL and the
/// requests seen.
async fn stand_in(answer: fn(&str, &str) -> (u16, Value)) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/client/v4", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            let (head, body) = loop {
                let n = stream.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length || n == 0 {
                        break (head.to_owned(), body.to_owned());
                    }
                }
            };
            let mut lines = head.lines();
            let mut first = lines.next().unwrap().split(' ');
            let method = first.next().unwrap().to_owned();
            let path = first.next().unwrap().to_owned();
            let authorization = lines
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_default();
            let (status, json) = answer(&method, &path);
            log.lock().unwrap().push(Seen {
                method,
                path,
                authorization,
                body,
            });
            let body = json.to_string();
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (base, seen)
}

fn api(base: &str, zone: Option<&str>) -> Cloudflare {
    Cloudflare::new(
        HttpClient::new(None).unwrap(),
        base,
        Secret::new(TOKEN),
        zone.map(str::to_owned),
    )
}

fn record() -> TxtRecord {
    TxtRecord::for_identifier("rtc.example.org", "dGhlLXZhbHVl".into())
}

fn cloudflare_answers(method: &str, path: &str) -> (u16, Value) {
    let ok = |result: Value| {
        (
            200,
            json!({"success": true, "errors": [], "result": result}),
        )
    };
    match (method, path) {
        ("GET", "/client/v4/zones?name=rtc.example.org") => ok(json!([])),
        ("GET", "/client/v4/zones?name=example.org") => ok(json!([{
            "id": "zone-1", "name": "example.org",
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
        }])),
        ("POST", "/client/v4/zones/zone-1/dns_records") => ok(json!({"id": "record-9"})),
        ("DELETE", "/client/v4/zones/zone-1/dns_records/record-9") => ok(json!({"id": "record-9"})),
        _ => (
            404,
            json!({"success": false, "errors": [{"code": 7003, "message": "No route"}]}),
        ),
    }
}

#[tokio::test]
async fn the_record_is_created_in_the_closest_zone_and_deleted_by_id() {
    let (base, seen) = stand_in(cloudflare_answers).await;
    let cloudflare = api(&base, None);
    let created = cloudflare.add(&record()).await.unwrap();
    assert_eq!(
        created,
        Created {
            zone_id: "zone-1".into(),
            zone: "example.org".into(),
            record_id: "record-9".into(),
            name_servers: vec![
                "ada.ns.cloudflare.com".into(),
                "bob.ns.cloudflare.com".into()
            ],
        }
    );
    cloudflare.delete(&created).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let requests: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            ("GET", "/client/v4/zones?name=rtc.example.org"),
            ("GET", "/client/v4/zones?name=example.org"),
            ("POST", "/client/v4/zones/zone-1/dns_records"),
            ("DELETE", "/client/v4/zones/zone-1/dns_records/record-9"),
        ]
    );
    for request in &seen {
        assert_eq!(
            request.authorization,
            format!("Bearer {TOKEN}"),
            "{request:?}"
        );
    }
    let body: Value = serde_json::from_str(&seen[2].body).unwrap();
    assert_eq!(
        body,
        json!({
            "type": "TXT",
            "name": "_acme-challenge.rtc.example.org",
            "content": "\"dGhlLXZhbHVl\"",
            "ttl": 60,
        })
    );
    assert!(seen[3].body.is_empty() && seen[0].body.is_empty());
}

#[tokio::test]
async fn a_configured_zone_is_looked_up_alone() {
    let (base, seen) = stand_in(cloudflare_answers).await;
    let created = api(&base, Some("example.org"))
        .add(&record())
        .await
        .unwrap();
    assert_eq!(created.zone_id, "zone-1");
    let first = seen.lock().unwrap()[0].path.clone();
    assert_eq!(first, "/client/v4/zones?name=example.org");
}

#[tokio::test]
async fn refusals_name_the_permission_and_never_the_token() {
    fn forbidden(_: &str, _: &str) -> (u16, Value) {
        (
            403,
            json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}]}),
        )
    }
    let (base, _) = stand_in(forbidden).await;
    let error = api(&base, None).add(&record()).await.unwrap_err();
    assert!(
        error.contains("Cloudflare refused the token (HTTP 403: Authentication error (10000))")
            && error.contains("Zone → DNS → Edit on zone rtc.example.org"),
        "{error}"
    );
    assert!(!error.contains(TOKEN) && !format!("{:?}", api(&base, None)).contains(TOKEN));

    fn no_zone(_: &str, _: &str) -> (u16, Value) {
        (200, json!({"success": true, "errors": [], "result": []}))
    }
    let (base, _) = stand_in(no_zone).await;
    let error = api(&base, None).add(&record()).await.unwrap_err();
    assert!(
        error.contains("no zone rtc.example.org or example.org that this token can see"),
        "{error}"
    );

    fn record_refused(method: &str, path: &str) -> (u16, Value) {
        if method == "POST" {
            (
                400,
                json!({"success": false, "errors": [{"code": 81057, "message": "Record already exists."}]}),
            )
        } else {
            cloudflare_answers(method, path)
        }
    }
    let (base, _) = stand_in(record_refused).await;
    let error = api(&base, None).add(&record()).await.unwrap_err();
    assert!(
        error.contains("Cloudflare refused POST /zones/zone-1/dns_records (HTTP 400: Record already exists. (81057))"),
        "{error}"
    );
}
