//! The admin panel through its router (`oneshot`): every page and form, with and without a
//! session, with bad CSRF tokens and bad input. Discovery and the live checks are covered by
//! their own modules and by the end-to-end suite against a real Synapse.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;
use crate::config::{self, Layers};
use crate::db;

struct Panel {
    _tmp: tempfile::TempDir,
    state: Arc<AdminState>,
    router: Router,
}

/// A panel on a fresh database; `flags` pin settings as the command line would.
async fn panel_with(flags: &[(SettingKey, &str)]) -> Panel {
    panel_configured(flags, |_| {}).await
}

/// Like [`panel_with`], with the state changed by `configure` before the router is built.
async fn panel_configured(
    flags: &[(SettingKey, &str)],
    configure: impl FnOnce(&mut AdminState),
) -> Panel {
    let tmp = tempfile::tempdir().unwrap();
    let pool = db::open(tmp.path()).await.unwrap();
    db::settings::ensure_key_pair(&pool).await.unwrap();
    let flags: BTreeMap<SettingKey, String> =
        flags.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let stored = db::settings::all(&pool).await.unwrap();
    let settings = config::resolve(&Layers {
        flags: &flags,
        env: &|_| None,
        stored: &stored,
    })
    .unwrap();
    let mut state = AdminState::new(pool, settings, flags);
    state.env = Arc::new(|_| None);
    state.data_dir = Some(tmp.path().to_owned());
    state.lan_addresses = || vec!["192.168.1.20".parse().unwrap(), "fd00::20".parse().unwrap()];
    configure(&mut state);
    let state = Arc::new(state);
    Panel {
        _tmp: tmp,
        router: router(state.clone()),
        state,
    }
}

async fn panel() -> Panel {
    panel_with(&[(SettingKey::FullAccessHomeservers, "example.org")]).await
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `name=value` of a Set-Cookie header for `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value of the first hidden `csrf` input.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("page has a csrf field") + marker.len();
        self.body[start..start + 32].to_owned()
    }
}

async fn reply(response: Response<Body>) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl Panel {
    async fn get(&self, path: &str, cookie: &str) -> Reply {
        let mut request = Request::get(path);
        if !cookie.is_empty() {
            request = request.header(header::COOKIE, cookie);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        reply(response).await
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Reply {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        self.post_raw(path, cookie, body.join("&").into_bytes())
            .await
    }

    async fn post_raw(&self, path: &str, cookie: &str, body: Vec<u8>) -> Reply {
        let mut request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::HOST, "panel.test");
        if !cookie.is_empty() {
            request = request.header(header::COOKIE, cookie);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        reply(response).await
    }

    /// Goes through first-run setup and returns the session cookie and its CSRF token.
    async fn logged_in(&self) -> (String, String) {
        let token = ensure_setup_token(&self.state.pool, None)
            .await
            .unwrap()
            .unwrap();
        self.pre_login_form(
            "/setup",
            &[
                ("token", &token),
                ("password", "correct horse battery"),
                ("confirm", "correct horse battery"),
            ],
        )
        .await
    }

    /// Logs in with the password [`Panel::logged_in`] chose (after something ended the session).
    async fn logged_in_again(&self) -> (String, String) {
        self.pre_login_form("/login", &[("password", "correct horse battery")])
            .await
    }

    /// Sends `/setup` or `/login` with the pre-login CSRF cookie and token; returns the new
    /// session cookie and its CSRF token.
    async fn pre_login_form(&self, path: &str, fields: Fields<'_>) -> (String, String) {
        let page = self.get(path, "").await;
        let pre = page.cookie("rtcbox_csrf").unwrap();
        let pre = pre.split(';').next().unwrap().to_owned();
        let csrf = page.csrf();
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let done = self.post(path, &pre, &form).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let session = done.cookie("rtcbox_session").unwrap();
        let session = session.split(';').next().unwrap().to_owned();
        let dashboard = self.get("/", &session).await;
        assert_eq!(dashboard.status, StatusCode::OK);
        let csrf = dashboard.csrf();
        (session, csrf)
    }

    async fn stored(&self) -> BTreeMap<String, String> {
        db::settings::all(&self.state.pool).await.unwrap()
    }

    async fn wizard(&self) -> BTreeMap<String, db::admin::StoredStep> {
        db::admin::wizard_steps(&self.state.pool).await.unwrap()
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A form's fields as (name, value).
type Field<'a> = (&'a str, &'a str);
type Fields<'a> = &'a [Field<'a>];

const PAGES: [&str; 12] = [
    "/",
    "/wizard",
    "/wizard/homeserver",
    "/wizard/review",
    "/outputs",
    "/outputs/homeserver-yaml",
    "/verify",
    "/logs",
    "/logs/download",
    "/settings",
    "/backup",
    "/backup/download",
];

const FORMS: [&str; 14] = [
    "/public-ip/check",
    "/restart",
    "/wizard/homeserver",
    "/wizard/network",
    "/wizard/review",
    "/verify",
    "/verify/run",
    "/verify/test-call",
    "/settings",
    "/settings/keys",
    "/settings/password",
    "/certificate/renew",
    "/backup/restore",
    "/logout",
];

#[tokio::test]
async fn before_a_password_exists_everything_leads_to_setup() {
    let panel = panel().await;
    for path in PAGES {
        let reply = panel.get(path, "").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(reply.location(), "/setup", "{path}");
    }
    for path in FORMS {
        let reply = panel.post(path, "", &[("csrf", "x")]).await;
        assert_eq!(reply.location(), "/setup", "{path}");
    }
    assert_eq!(panel.get("/login", "").await.location(), "/setup");
    assert!(panel.wizard().await.is_empty());
}

#[tokio::test]
async fn setup_needs_the_token_a_good_password_and_the_csrf_cookie() {
    let panel = panel().await;
    let token = ensure_setup_token(&panel.state.pool, None)
        .await
        .unwrap()
        .unwrap();
    let page = panel.get("/setup", "").await;
    assert_eq!(page.status, StatusCode::OK);
    let cookie = page.cookie("rtcbox_csrf").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pre = cookie.split(';').next().unwrap().to_owned();
    let csrf = page.csrf();
    let good = [
        ("csrf", csrf.as_str()),
        ("token", token.as_str()),
        ("password", "a long enough password"),
        ("confirm", "a long enough password"),
    ];
    let with = |changes: &[(&'static str, &'static str)]| {
        let mut form: Vec<(&str, &str)> = good.to_vec();
        for (k, v) in changes {
            form.retain(|(name, _)| name != k);
            form.push((k, v));
        }
        form
    };
    // No cookie, wrong CSRF: refused before anything is looked at.
    assert_eq!(
        panel.post("/setup", "", &good).await.status,
        StatusCode::FORBIDDEN
    );
    let wrong_csrf = panel
        .post(
            "/setup",
            &pre,
            &with(&[("csrf", "0123456789abcdef0123456789abcdef")]),
        )
        .await;
    assert_eq!(wrong_csrf.status, StatusCode::FORBIDDEN);
    assert!(wrong_csrf.body.contains("nothing was changed"));
    // (A wrong token alone is the `both` case below: the login rate limit allows five tries.)
    let short = panel
        .post(
            "/setup",
            &pre,
            &with(&[("password", "short"), ("confirm", "short")]),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("at least 10 characters"));
    // The right token stays in its field; only the password is questioned.
    assert!(
        short.body.contains(&format!(
            "id=\"f-token\" name=\"token\" type=\"text\" value=\"{token}\""
        )),
        "{}",
        short.body
    );
    assert!(!short.body.contains("not the current setup token"));
    assert!(
        short
            .body
            .contains("Nothing was saved; see the message below.")
    );
    // A wrong token and a short password: both said at once, the token kept as typed.
    let both = panel
        .post(
            "/setup",
            &pre,
            &with(&[("token", "NotTheToken"), ("password", "short")]),
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert!(both.body.contains("not the current setup token"));
    assert!(both.body.contains("at least 10 characters"));
    assert!(both.body.contains("value=\"NotTheToken\""));
    assert!(
        both.body
            .contains("Nothing was saved; see the messages below.")
    );
    // The setup URL from the log fills the token in.
    let linked = panel.get(&format!("/setup?token={token}"), "").await;
    assert!(
        linked.body.contains(&format!(
            "id=\"f-token\" name=\"token\" type=\"text\" value=\"{token}\""
        )),
        "{}",
        linked.body
    );
    let data_dir = panel.state.data_dir.clone().unwrap();
    write_setup_url(&data_dir, "http://192.168.1.20:8089/setup?token=x").unwrap();
    let differ = panel
        .post(
            "/setup",
            &pre,
            &with(&[("confirm", "something else entirely")]),
        )
        .await;
    assert!(differ.body.contains("The two passwords differ"));
    assert!(matches!(
        db::admin::account(&panel.state.pool).await.unwrap(),
        db::admin::AccountState::AwaitingSetup { .. }
    ));

    let done = panel.post("/setup", &pre, &good).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    // On into the wizard; the setup URL's file is gone with the token it held.
    assert_eq!(done.location(), "/wizard");
    assert!(!data_dir.join(SETUP_URL_FILE).exists());
    let session = done.cookie("rtcbox_session").unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(
        !session.contains("Secure"),
        "plain HTTP cannot keep a Secure cookie"
    );
    // The token is used up; setup now leads to login.
    assert_eq!(panel.get("/setup", "").await.location(), "/login");
    assert_eq!(panel.post("/setup", &pre, &good).await.location(), "/login");
}

#[test]
fn the_setup_url_names_an_address_a_browser_on_the_lan_reaches() {
    let lan = Some("192.168.1.20".parse().unwrap());
    let check = |admin: &str, lan: Option<std::net::IpAddr>, expected: &str| {
        assert_eq!(
            setup_url("http", admin.parse().unwrap(), lan, "Tok3n"),
            expected,
            "{admin}"
        );
    };
    check(
        "0.0.0.0:8089",
        lan,
        "http://192.168.1.20:8089/setup?token=Tok3n",
    );
    check(
        "[::]:8089",
        Some("fd00::20".parse().unwrap()),
        "http://[fd00::20]:8089/setup?token=Tok3n",
    );
    check(
        "10.0.0.5:9000",
        lan,
        "http://10.0.0.5:9000/setup?token=Tok3n",
    );
    check(
        "127.0.0.1:8089",
        lan,
        "http://127.0.0.1:8089/setup?token=Tok3n",
    );
    check(
        "0.0.0.0:8089",
        None,
        "http://<this machine's address>:8089/setup?token=Tok3n",
    );
}

#[test]
fn the_setup_url_file_is_private_and_replaced() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SETUP_URL_FILE);
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_setup_url(dir.path(), "http://192.168.1.20:8089/setup?token=New").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.ends_with("\n\nhttp://192.168.1.20:8089/setup?token=New\n"),
        "{text}"
    );
    assert!(!text.contains("old"));
    assert_eq!(path.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    remove_setup_url(dir.path());
    assert!(!path.exists());
    remove_setup_url(dir.path());
}

#[tokio::test]
async fn an_expired_setup_token_is_refused_with_what_to_do() {
    let panel = panel().await;
    db::admin::store_setup_token(&panel.state.pool, "expiredtoken", 10, 1)
        .await
        .unwrap();
    let page = panel.get("/setup", "").await;
    assert!(page.body.contains("expired"));
    let pre = page.cookie("rtcbox_csrf").unwrap();
    let pre = pre.split(';').next().unwrap();
    let reply = panel
        .post(
            "/setup",
            pre,
            &[
                ("csrf", &page.csrf()),
                ("token", "expiredtoken"),
                ("password", "long password here"),
                ("confirm", "long password here"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("reset-password"));
}

#[tokio::test]
async fn login_logout_and_the_rate_limit() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    // Log out: the session ends.
    let out = panel.post("/logout", &session, &[("csrf", &csrf)]).await;
    assert_eq!(out.location(), "/login");
    assert_eq!(panel.get("/", &session).await.location(), "/login");

    let page = panel.get("/login", "").await;
    let pre = page.cookie("rtcbox_csrf").unwrap();
    let pre = pre.split(';').next().unwrap().to_owned();
    let csrf = page.csrf();
    let wrong = panel
        .post(
            "/login",
            &pre,
            &[("csrf", &csrf), ("password", "wrong password")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Wrong password"));
    assert!(wrong.cookie("rtcbox_session").is_none());
    assert_eq!(
        panel
            .post(
                "/login",
                "",
                &[("csrf", &csrf), ("password", "correct horse battery")]
            )
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let good = panel
        .post(
            "/login",
            &pre,
            &[("csrf", &csrf), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(good.status, StatusCode::SEE_OTHER);
    assert!(good.cookie("rtcbox_session").is_some());
    // Five attempts in a burst are allowed (two were used above), then the limit answers.
    let mut limited = None;
    for _ in 0..5 {
        let reply = panel
            .post(
                "/login",
                &pre,
                &[("csrf", &csrf), ("password", "guess guess guess")],
            )
            .await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("the rate limit answers");
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    assert!(limited.body.contains("Too many attempts"));
}

#[tokio::test]
async fn every_page_needs_a_session_and_renders_with_one() {
    let panel = panel().await;
    let (session, _) = panel.logged_in().await;
    for path in PAGES {
        let anonymous = panel.get(path, "").await;
        assert_eq!(anonymous.location(), "/login", "{path}");
        let forged = panel
            .get(
                path,
                "rtcbox_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )
            .await;
        assert_eq!(forged.location(), "/login", "{path}");
        let reply = panel.get(path, &session).await;
        assert!(
            reply.status.is_success()
                || reply.status.is_redirection()
                || reply.status == StatusCode::CONFLICT,
            "{path}: {}",
            reply.status
        );
        assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert!(
            reply.headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{path}");
    }
    for path in FORMS {
        let reply = panel.post(path, "", &[("csrf", "x")]).await;
        assert_eq!(reply.location(), "/login", "{path}");
    }
}

#[tokio::test]
async fn every_form_refuses_a_wrong_csrf_token_and_changes_nothing() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let settings_before = panel.stored().await;
    for path in FORMS {
        for bad in ["", "0123456789abcdef0123456789abcdef"] {
            let reply = panel
                .post(
                    path,
                    &session,
                    &[
                        ("csrf", bad),
                        ("server_name", "example.org"),
                        ("key", "public_url"),
                        ("value", "wss://x.example.org"),
                        ("action", "apply"),
                    ],
                )
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    assert_eq!(panel.stored().await, settings_before);
    assert!(panel.wizard().await.is_empty());
    // Still logged in: the refused logout did nothing.
    assert_eq!(panel.get("/", &session).await.status, StatusCode::OK);
    // The right token works.
    let reply = panel
        .post(
            "/wizard/tls",
            &session,
            &[("csrf", &csrf), ("mode", "self-signed")],
        )
        .await;
    assert_eq!(reply.location(), "/wizard/network");
}

#[tokio::test]
async fn a_cross_site_post_is_refused() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let request = Request::post("/wizard/tls")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "panel.test")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::COOKIE, &session)
        .body(Body::from(format!("csrf={csrf}&mode=self-signed")))
        .unwrap();
    let reply = reply(panel.router.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(panel.wizard().await.is_empty());
}

#[tokio::test]
async fn bad_wizard_input_re_renders_with_messages_and_stores_nothing() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let cases: [(&str, Fields, &str); 6] = [
        (
            "homeserver",
            &[("server_name", "https://example.org")],
            "looks like a URL",
        ),
        (
            "homeserver",
            &[("server_name", "example.org")],
            "could not discover the client URL",
        ),
        (
            "endpoints",
            &[("mode", "one"), ("rtc_url", "http://rtc.example.org")],
            "uses plain http://",
        ),
        (
            "tls",
            &[("mode", "acme"), ("challenge", "dns-01"), ("email", "nope")],
            "e-mail address",
        ),
        (
            "network",
            &[("lan_ip", "nas"), ("http", "80")],
            "is not an IP address",
        ),
        ("turn", &[("legacy_turn", "maybe")], "Choose whether"),
    ];
    for (step, form, message) in cases {
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend_from_slice(form);
        let reply = panel
            .post(&format!("/wizard/{step}"), &session, &fields)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{step}");
        assert!(
            reply.body.contains(message),
            "{step}: {message}\n{}",
            reply.body
        );
        assert!(
            reply.body.contains("aria-invalid=\"true\"") || reply.body.contains("role=\"alert\""),
            "{step}"
        );
        // What was typed is shown again.
        for (name, value) in form
            .iter()
            .filter(|(n, _)| !["mode", "challenge", "legacy_turn"].contains(n))
        {
            assert!(
                reply
                    .body
                    .contains(&format!("value=\"{}\"", askama_escape(value))),
                "{step}: {name}"
            );
        }
    }
    assert!(panel.wizard().await.is_empty());
    assert_eq!(
        panel.get("/wizard/nope", &session).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn network_step_offers_this_machines_addresses_and_questions_others() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let page = panel.get("/wizard/network", &session).await;
    assert!(
        page.body.contains(
            "list=\"f-lan_ip-list\">\n  <datalist id=\"f-lan_ip-list\"><option value=\"192.168.1.20\">\
             </option><option value=\"fd00::20\"></option></datalist>"
        ),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("id=\"f-lan_ip\" name=\"lan_ip\" type=\"text\" value=\"192.168.1.20\"")
    );
    assert!(!page.body.contains("lan_ip_anyway"));

    let network = |lan: &'static str, anyway: bool| {
        let mut form: Vec<Field> = vec![
            ("csrf", csrf.as_str()),
            ("lan_ip", lan),
            ("public_ip", "203.0.113.7"),
            ("http", "8880"),
            ("https", "8443"),
            ("admin", "8089"),
            ("rtc_udp", "8882"),
            ("rtc_tcp", "8881"),
            ("turn", "3478"),
            ("turns", "5349"),
            ("relay_min", "49160"),
            ("relay_max", "49200"),
        ];
        if anyway {
            form.push(("lan_ip_anyway", "yes"));
        }
        form
    };
    let saved_lan_ip = || async {
        panel.wizard().await.get("network").map(|step| {
            serde_json::from_str::<serde_json::Value>(&step.data).unwrap()["lan_ip"].clone()
        })
    };
    let mut saved = None;
    for (lan, doubt) in [
        ("127.0.0.1", "127.0.0.1 is the loopback address"),
        ("::1", "::1 is the loopback address"),
        (
            "192.168.1.99",
            "192.168.1.99 is not an address of this machine",
        ),
    ] {
        // Refused with the doubt, the machine's addresses and a box to insist; nothing saved.
        let reply = panel
            .post("/wizard/network", &session, &network(lan, false))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{lan}");
        assert!(reply.body.contains(doubt), "{lan}: {}", reply.body);
        assert!(
            reply
                .body
                .contains("This machine has 192.168.1.20, fd00::20."),
            "{lan}"
        );
        assert!(
            reply.body.contains("name=\"lan_ip_anyway\" value=\"yes\""),
            "{lan}"
        );
        assert!(reply.body.contains("Nothing was saved."), "{lan}");
        assert_eq!(saved_lan_ip().await, saved, "{lan}");
        // Ticked: saved as typed.
        let reply = panel
            .post("/wizard/network", &session, &network(lan, true))
            .await;
        assert_eq!(reply.location(), "/wizard/turn", "{lan}: {}", reply.body);
        saved = Some(serde_json::json!(lan));
        assert_eq!(saved_lan_ip().await, saved);
    }
    // One of this machine's addresses needs no box.
    let reply = panel
        .post("/wizard/network", &session, &network("fd00::20", false))
        .await;
    assert_eq!(reply.location(), "/wizard/turn", "{}", reply.body);
}

#[tokio::test]
async fn ports_wait_behind_advanced_and_the_relay_range_is_asked_with_legacy_calls() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let network: Vec<(&str, &str)> = vec![
        ("csrf", csrf.as_str()),
        ("lan_ip", "192.168.1.20"),
        ("public_ip", "203.0.113.7"),
        ("http", "8880"),
        ("https", "8443"),
        ("admin", "8089"),
        ("rtc_udp", "8882"),
        ("rtc_tcp", "8881"),
        ("turn", "3478"),
        ("turns", "5349"),
        ("relay_min", "49160"),
        ("relay_max", "49200"),
    ];
    // Before the network step there is nothing to store a relay range with: not asked yet.
    let page = panel.get("/wizard/turn", &session).await;
    assert!(!page.body.contains("id=\"f-relay_min\""));
    assert!(page.body.contains("once the Network step is answered"));
    // The defaults: the ports are folded away, the relay range travels along unseen.
    let page = panel.get("/wizard/network", &session).await;
    assert!(
        page.body
            .contains("<details class=\"advanced\"><summary>Ports"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<input type=\"hidden\" name=\"relay_min\" value=\"49160\">")
    );
    assert!(!page.body.contains("id=\"f-relay_min\""));
    // A port that needs another look opens the group.
    let mut bad = network.clone();
    bad.retain(|(name, _)| *name != "admin");
    bad.push(("admin", "8880"));
    let reply = panel.post("/wizard/network", &session, &bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("<details class=\"advanced\" open>"),
        "{}",
        reply.body
    );
    assert_eq!(
        panel
            .post("/wizard/network", &session, &network)
            .await
            .location(),
        "/wizard/turn"
    );

    // The legacy-calls step asks for the relay range and stores it with the network answers.
    let page = panel.get("/wizard/turn", &session).await;
    assert!(
        page.body
            .contains("id=\"f-relay_min\" name=\"relay_min\" type=\"number\" value=\"49160\"")
    );
    let relay_saved = || async {
        let steps = panel.wizard().await;
        let data: serde_json::Value = serde_json::from_str(&steps["network"].data).unwrap();
        (data["relay_min"].clone(), data["relay_max"].clone())
    };
    // A range over the media port is refused at the range, and nothing is saved.
    let reply = panel
        .post(
            "/wizard/turn",
            &session,
            &[
                ("csrf", &csrf),
                ("legacy_turn", "on"),
                ("relay_min", "8800"),
                ("relay_max", "8900"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("The relay range includes port 8882"),
        "{}",
        reply.body
    );
    assert_eq!(
        relay_saved().await,
        (serde_json::json!("49160"), serde_json::json!("49200"))
    );
    assert!(!panel.wizard().await.contains_key("turn"));
    let reply = panel
        .post(
            "/wizard/turn",
            &session,
            &[
                ("csrf", &csrf),
                ("legacy_turn", "on"),
                ("relay_min", "50000"),
                ("relay_max", "50100"),
            ],
        )
        .await;
    assert_eq!(reply.location(), "/wizard/review", "{}", reply.body);
    assert_eq!(
        relay_saved().await,
        (serde_json::json!("50000"), serde_json::json!("50100"))
    );
    // Back on the network step the new range is carried along.
    let page = panel.get("/wizard/network", &session).await;
    assert!(
        page.body
            .contains("<input type=\"hidden\" name=\"relay_min\" value=\"50000\">")
    );
}

fn askama_escape(value: &str) -> String {
    value
        .replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// The wizard from the first step to Apply, as a browser without JavaScript would go.
#[tokio::test]
async fn a_public_ip_changed_in_settings_is_what_the_wizard_and_the_outputs_say() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    complete_wizard(&panel, &session, &csrf).await;
    let saved = panel
        .post(
            "/settings",
            &session,
            &[
                ("csrf", &csrf),
                ("key", "node_ip"),
                ("value", "203.0.113.99"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let ports = panel.get("/outputs/port-forwards", &session).await;
    assert!(ports.body.contains("203.0.113.99"), "{}", ports.body);
    assert!(!ports.body.contains("203.0.113.7"), "{}", ports.body);
    let network = panel.get("/wizard/network", &session).await;
    assert!(
        network.body.contains("value=\"203.0.113.99\""),
        "{}",
        network.body
    );
    // Cleared in Settings: the wizard follows the public IP too.
    let cleared = panel
        .post(
            "/settings",
            &session,
            &[("csrf", &csrf), ("key", "node_ip"), ("value", "")],
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK);
    let review = panel.get("/wizard/review", &session).await;
    assert!(
        review.body.contains("detected and followed"),
        "{}",
        review.body
    );
}

/// TURN ports and the relay range changed on the Settings page are what the generated files
/// name: Synapse's `turn_uris` (`turns:` only comes with a trusted certificate), the router's
/// port list and the compose file.
#[tokio::test]
async fn turn_ports_changed_in_settings_are_what_the_outputs_say() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    complete_wizard(&panel, &session, &csrf).await;
    for (key, value) in [
        ("turn_port", "3480"),
        ("turn_tls_port", "5351"),
        ("turn_relay_ports", "50000-50100"),
    ] {
        let saved = panel
            .post(
                "/settings",
                &session,
                &[("csrf", &csrf), ("key", key), ("value", value)],
            )
            .await;
        assert_eq!(saved.status, StatusCode::OK, "{key}: {}", saved.body);
    }
    let synapse = panel.get("/outputs/homeserver-yaml", &session).await;
    assert!(
        synapse.body.contains(":3480?transport=udp"),
        "{}",
        synapse.body
    );
    assert!(!synapse.body.contains(":3478?"), "{}", synapse.body);
    let ports = panel.get("/outputs/port-forwards", &session).await;
    for wanted in ["3480", "5351", "50000-50100"] {
        assert!(ports.body.contains(wanted), "{wanted}: {}", ports.body);
    }
    assert!(!ports.body.contains("49160"), "{}", ports.body);
    let compose = panel.get("/outputs/compose-yaml", &session).await;
    assert!(compose.body.contains("50000-50100"), "{}", compose.body);
    let network = panel.get("/wizard/network", &session).await;
    assert!(network.body.contains("value=\"3480\""), "{}", network.body);
}

#[tokio::test]
async fn the_settings_form_saves_everything_or_nothing() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let page = panel.get("/settings", &session).await;
    for group in [
        "Calls",
        "Public IP and media",
        "Listeners and proxies",
        "TURN",
        "Certificate",
    ] {
        assert!(
            page.body.contains(&format!("<legend>{group}</legend>")),
            "{group}"
        );
    }
    // Human names first, the environment name beside; a toggle and a picker.
    assert!(
        page.body
            .contains("Homeservers whose users may start calls")
    );
    assert!(page.body.contains("RTCBOX_FULL_ACCESS_HOMESERVERS"));
    assert!(
        page.body
            .contains("type=\"checkbox\" id=\"f-auto_create_rooms\"")
    );
    assert!(page.body.contains("<select id=\"f-tls_mode\""));
    // The pinned full-access list is locked, with where it comes from.
    assert!(
        page.body
            .contains("set by command-line flag --full-access-homeservers")
    );
    let before = panel.stored().await;
    let refused = panel
        .post(
            "/settings",
            &session,
            &[
                ("csrf", &csrf),
                ("form", "all"),
                ("stun_servers", "127.0.0.1:3478"),
                ("public_ip_interval", "0"),
                ("auto_create_rooms", "yes"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("Nothing was saved"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("RTCBOX_PUBLIC_IP_INTERVAL"),
        "{}",
        refused.body
    );
    // What was typed is shown again.
    assert!(refused.body.contains("value=\"127.0.0.1:3478\""));
    assert_eq!(panel.stored().await, before, "nothing stored");
    let saved = panel
        .post(
            "/settings",
            &session,
            &[
                ("csrf", &csrf),
                ("form", "all"),
                ("stun_servers", "127.0.0.1:3478"),
                ("public_ip_interval", "30"),
                ("auto_create_rooms", "yes"),
                ("tls_mode", "proxy"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(
        saved.body.contains(
            "Saved RTCBOX_PUBLIC_IP_INTERVAL, RTCBOX_AUTO_CREATE_ROOMS, RTCBOX_STUN_SERVERS."
        ),
        "{}",
        saved.body
    );
    let stored = panel.stored().await;
    assert_eq!(stored["stun_servers"], "127.0.0.1:3478");
    assert_eq!(stored["public_ip_interval"], "30");
    assert_eq!(stored["auto_create_rooms"], "true");
    assert!(
        !stored.contains_key("tls_mode"),
        "an unchanged choice is not stored"
    );
}

#[tokio::test]
async fn the_dashboard_health_summary_links_each_problem_to_its_fix() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let fresh = panel.get("/", &session).await;
    assert!(fresh.body.contains("id=\"health-title\""), "{}", fresh.body);
    assert!(
        fresh
            .body
            .contains("<a href=\"/wizard/homeserver\">Continue with &#34;Homeserver&#34;</a>")
            || fresh.body.contains(
                "<a href=\"/wizard/homeserver\">Continue with &quot;Homeserver&quot;</a>"
            ),
        "{}",
        fresh.body
    );
    complete_wizard(&panel, &session, &csrf).await;
    let done = panel.get("/", &session).await;
    assert!(
        done.body
            .contains("<strong>Setup</strong>: <span class=\"break\">complete</span>")
    );
    assert!(
        done.body.contains("<a href=\"/verify\">Run the checks</a>"),
        "{}",
        done.body
    );
    // Applied settings wait for a restart: the summary points at the button.
    assert!(
        done.body
            .contains("<a href=\"#pending-restart\">Restart now</a>"),
        "{}",
        done.body
    );
}

#[tokio::test]
async fn a_pinned_setting_is_shown_locked_in_the_wizard_too() {
    let panel = panel_with(&[
        (SettingKey::FullAccessHomeservers, "example.org"),
        (SettingKey::RtcUdpPort, "9882"),
    ])
    .await;
    let (session, _) = panel.logged_in().await;
    let network = panel.get("/wizard/network", &session).await;
    assert!(
        network.body.contains(
            "Locked: command-line flag --rtc-udp-port sets RTCBOX_RTC_UDP_PORT to 9882; Apply leaves it as it is."
        ),
        "{}",
        network.body
    );
    // An unpinned one says nothing of the kind.
    assert!(!network.body.contains("sets RTCBOX_RTC_TCP_PORT"));
}

#[tokio::test]
async fn restart_now_needs_the_csrf_token_and_a_restarter() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let forged = panel.post("/restart", &session, &[]).await;
    assert!(forged.status.is_client_error(), "{}", forged.status);
    // A panel without a restarter (tests of the panel alone) says so instead of pretending.
    let refused = panel.post("/restart", &session, &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("cannot restart"), "{}", refused.body);
    // Nor does it offer the button.
    let dashboard = panel.get("/", &session).await;
    assert!(!dashboard.body.contains("action=\"/restart\""));
}

#[tokio::test]
async fn an_empty_public_ip_follows_the_detected_one_and_clears_a_fixed_one() {
    use crate::net::public_ip::{Mode, PublicIpHandle};
    let monitor = PublicIpHandle::new(
        Mode::Automatic,
        crate::net::public_ip::Source::Stun(Vec::new()),
        std::time::Duration::from_secs(60),
    );
    monitor.record(Ok("198.51.100.20".parse().unwrap()), unix_now());
    let panel = panel_configured(
        &[(SettingKey::FullAccessHomeservers, "example.org")],
        |state| {
            // Running with a fixed address an earlier wizard stored.
            state.settings.node_ip = Some("203.0.113.7".parse().unwrap());
            state
                .settings
                .origins
                .insert(SettingKey::NodeIp, config::Origin::Stored);
            state.public_ip = Some(monitor.clone());
        },
    )
    .await;
    db::settings::set_many(
        &panel.state.pool,
        &[("node_ip", Some("203.0.113.7".to_owned()))],
    )
    .await
    .unwrap();
    let (session, csrf) = panel.logged_in().await;
    let network = panel.get("/wizard/network", &session).await;
    assert!(
        network.body.contains("Fixed public IP (optional)"),
        "{}",
        network.body
    );
    complete_wizard_with(&panel, &session, &csrf, "").await;
    assert!(
        !panel.stored().await.contains_key("node_ip"),
        "Apply cleared the fixed address"
    );
    // The outputs name the address rtcbox detected, as followed.
    let review = panel.get("/wizard/review", &session).await;
    assert!(
        review.body.contains("198.51.100.20, detected and followed"),
        "{}",
        review.body
    );
    let ports = panel.get("/outputs/port-forwards", &session).await;
    assert!(ports.body.contains("198.51.100.20"), "{}", ports.body);
    assert!(
        ports.body.contains("advertises the new one by itself"),
        "{}",
        ports.body
    );
}

async fn complete_wizard(panel: &Panel, session: &str, csrf: &str) {
    complete_wizard_with(panel, session, csrf, "203.0.113.7").await;
}

/// [`complete_wizard`] with `public_ip` in the network step (empty: follow the public IP).
async fn complete_wizard_with(panel: &Panel, session: &str, csrf: &str, public_ip: &str) {
    let steps: [(&str, Vec<Field>, &str); 5] = [
        (
            "homeserver",
            vec![
                ("server_name", "example.org"),
                ("client_base_url", "https://matrix.example.org/"),
                ("synapse_version", "1.163.2"),
            ],
            "/wizard/endpoints",
        ),
        (
            "endpoints",
            vec![
                ("mode", "one"),
                ("rtc_url", "https://matrixrtc.example.org"),
            ],
            "/wizard/tls",
        ),
        (
            "tls",
            vec![("mode", "reverse-proxy"), ("proxy", "synology-dsm")],
            "/wizard/network",
        ),
        (
            "network",
            vec![
                ("lan_ip", "192.168.1.20"),
                ("public_ip", public_ip),
                ("http", "8880"),
                ("https", "8443"),
                ("admin", "8089"),
                ("rtc_udp", "8882"),
                ("rtc_tcp", "8881"),
                ("turn", "3479"),
                ("turns", "5349"),
                ("relay_min", "49160"),
                ("relay_max", "49300"),
            ],
            "/wizard/turn",
        ),
        ("turn", vec![("legacy_turn", "on")], "/wizard/review"),
    ];
    for (step, form, next) in steps {
        let mut fields = vec![("csrf", csrf)];
        fields.extend(form);
        let reply = panel
            .post(&format!("/wizard/{step}"), session, &fields)
            .await;
        assert_eq!(reply.location(), next, "{step}: {}", reply.body);
    }
    let review = panel.get("/wizard/review", session).await;
    assert_eq!(review.status, StatusCode::OK);
    assert!(
        review
            .body
            .contains("https://matrixrtc.example.org/livekit/jwt"),
        "{}",
        review.body
    );
    assert!(review.body.contains("RTCBOX_PUBLIC_URL"));
    assert!(review.body.contains("(a generated secret)"));
    // The reverse proxy's forwarding headers will be believed from this machine only.
    assert!(
        review.body.contains("127.0.0.1/32,::1/128,192.168.1.20/32"),
        "{}",
        review.body
    );
    let applied = panel
        .post(
            "/wizard/review",
            session,
            &[("csrf", csrf), ("action", "apply")],
        )
        .await;
    assert_eq!(applied.location(), "/outputs?applied=1");
}

#[tokio::test]
async fn the_checks_run_only_when_asked_and_stream_their_results() {
    // Without network clients every run yields one "Live checks" result, so a page showing it
    // has run the checks; nothing here goes out.
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let unfinished = panel
        .post("/verify/run", &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(
        unfinished.status,
        StatusCode::CONFLICT,
        "{}",
        unfinished.body
    );
    complete_wizard(&panel, &session, &csrf).await;

    let opened = panel.get("/verify", &session).await;
    assert_eq!(opened.status, StatusCode::OK);
    assert!(opened.body.contains("Not checked yet."), "{}", opened.body);
    assert!(!opened.body.contains("Live checks"), "{}", opened.body);
    assert!(opened.body.contains("Run the checks"));

    let streamed = panel
        .post(
            "/verify/run",
            &session,
            &[("csrf", &csrf), ("access_token", "syt_never_shown")],
        )
        .await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert_eq!(
        streamed.headers[header::CONTENT_TYPE],
        "text/event-stream; charset=utf-8"
    );
    let events: Vec<&str> = streamed
        .body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(
        events,
        ["event: start", "event: check", "event: done"],
        "{}",
        streamed.body
    );
    // Every line of an event's HTML is a data line; the start lists every check as waiting.
    for event in streamed.body.split("\n\n").filter(|e| !e.is_empty()) {
        assert!(
            event.lines().skip(1).all(|l| l.starts_with("data: ")),
            "{event}"
        );
    }
    let start = streamed.body.split("\n\n").next().unwrap();
    assert_eq!(
        start.matches("class=\"check running\"").count(),
        13,
        "{start}"
    );
    assert!(streamed.body.contains("id=\"check-network\""));
    assert!(!streamed.body.contains("syt_never_shown"));

    // The page shows the last results when opened again, and still runs nothing.
    let reopened = panel.get("/verify", &session).await;
    assert!(reopened.body.contains("Live checks"), "{}", reopened.body);
    assert!(reopened.body.contains("Checked at "), "{}", reopened.body);

    // Without JavaScript: the form's POST renders the page with every result.
    let posted = panel.post("/verify", &session, &[("csrf", &csrf)]).await;
    assert_eq!(posted.status, StatusCode::OK);
    assert!(
        posted
            .body
            .contains("<li class=\"check unavailable\" id=\"check-network\">")
    );
    assert!(posted.body.contains("Run the checks"));
}

#[tokio::test]
async fn a_test_call_is_started_by_the_admin_only_after_setup() {
    str0m::crypto::from_feature_flags().install_process_default();
    let sockets = crate::sfu::SfuSockets::bind("127.0.0.1".parse().unwrap(), None, 0, 0)
        .await
        .unwrap();
    let sfu = crate::sfu::SfuHandle::spawn(sockets, false, None);
    let panel = panel_configured(
        &[(SettingKey::FullAccessHomeservers, "example.org")],
        |state| state.sfu = Some(sfu.clone()),
    )
    .await;
    let (session, csrf) = panel.logged_in().await;
    let rooms = || async {
        sfu.call(|core, _| core.list_rooms(&[]).len())
            .await
            .unwrap()
    };
    // Before the wizard is finished: refused, with what to do, and no room.
    let early = panel
        .post("/verify/test-call", &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    let error: serde_json::Value = serde_json::from_str(&early.body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("finish it first"),
        "{error}"
    );
    assert_eq!(rooms().await, 0);
    complete_wizard(&panel, &session, &csrf).await;
    // The page may connect to the SFU's public URL (and its own origin) only.
    let page = panel.get("/verify", &session).await;
    let public_url = panel.state.settings.public_url.as_str();
    let sources = crate::http::test_call::connect_sources(public_url);
    assert!(!sources.is_empty(), "{public_url}");
    let policy = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        policy.contains(&format!("connect-src 'self' {sources};")),
        "{policy}"
    );
    assert!(page.body.contains("Start a test call"));

    let started = panel
        .post("/verify/test-call", &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_eq!(started.headers[header::CACHE_CONTROL], "no-store");
    let call: serde_json::Value = serde_json::from_str(&started.body).unwrap();
    let room = call["room"].as_str().unwrap();
    assert!(room.starts_with("rtcbox-test-call-"), "{room}");
    assert_eq!(call["url"], public_url);
    for token in ["sender", "viewer"] {
        let claims = crate::livekit::token::verify(
            call[token].as_str().unwrap(),
            &panel.state.settings.api_key,
            &panel.state.settings.api_secret,
        )
        .unwrap();
        assert_eq!(claims.video.unwrap().room, room);
    }
    let link = call["phone_link"].as_str().unwrap();
    assert!(
        link.starts_with(&crate::http::test_call::phone_page(public_url)),
        "{link}"
    );
    assert!(call["phone_qr"].as_str().unwrap().contains("<svg"));
    assert_eq!(rooms().await, 1);
}

#[tokio::test]
async fn without_an_sfu_the_test_call_says_why() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    complete_wizard(&panel, &session, &csrf).await;
    let refused = panel
        .post("/verify/test-call", &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(
        error["error"],
        "No test call: the SFU is not running in this process."
    );
}

#[tokio::test]
async fn the_wizard_is_resumable_and_apply_writes_the_settings() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    assert_eq!(
        panel.get("/wizard", &session).await.location(),
        "/wizard/homeserver"
    );
    // The outputs and checks wait for the wizard.
    assert!(
        panel
            .get("/outputs", &session)
            .await
            .body
            .contains("Still missing")
    );
    assert_eq!(
        panel.get("/outputs/homeserver-yaml", &session).await.status,
        StatusCode::CONFLICT
    );
    // Review before the other steps lists what is missing, and Apply refuses.
    assert!(
        panel
            .get("/wizard/review", &session)
            .await
            .body
            .contains("still need an answer")
    );
    let early = panel
        .post(
            "/wizard/review",
            &session,
            &[("csrf", &csrf), ("action", "apply")],
        )
        .await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST);

    complete_wizard(&panel, &session, &csrf).await;
    assert_eq!(
        panel.get("/wizard", &session).await.location(),
        "/wizard/review"
    );
    let stored = panel.stored().await;
    assert_eq!(
        stored["public_url"],
        "wss://matrixrtc.example.org/livekit/sfu"
    );
    assert_eq!(stored["node_ip"], "203.0.113.7");
    assert!(stored["turn_shared_secret"].len() >= 32);
    // The TURN ports that differ from the running ones; 5349 is already in use.
    assert_eq!(stored["turn_port"], "3479");
    assert_eq!(stored["turn_relay_ports"], "49160-49300");
    assert!(!stored.contains_key("turn_tls_port"));
    // Pinned by the command line in this panel: not written.
    assert!(!stored.contains_key("full_access_homeservers"));
    // Behind a reverse proxy rtcbox's own HTTPS settings stay as they are, and the proxy on
    // this machine (loopback, or the LAN address its config names) is trusted.
    assert!(!stored.contains_key("tls_mode") && !stored.contains_key("https_bind"));
    assert_eq!(
        stored["trusted_proxies"],
        "127.0.0.1/32,::1/128,192.168.1.20/32"
    );
    // The secret is kept when the TURN step is saved again.
    let secret = stored["turn_shared_secret"].clone();
    panel
        .post(
            "/wizard/turn",
            &session,
            &[("csrf", &csrf), ("legacy_turn", "on")],
        )
        .await;
    let turn = &panel.wizard().await["turn"];
    assert!(turn.data.contains(&secret));
    // Back goes back without saving.
    let back = panel
        .post(
            "/wizard/tls",
            &session,
            &[("csrf", &csrf), ("action", "back"), ("mode", "bogus")],
        )
        .await;
    assert_eq!(back.location(), "/wizard/endpoints");
    assert!(panel.wizard().await["tls"].data.contains("synology-dsm"));

    // The dashboard tells that a restart is pending.
    let dashboard = panel.get("/", &session).await;
    assert!(
        dashboard.body.contains("RTCBOX_PUBLIC_URL"),
        "{}",
        dashboard.body
    );
    let outputs = panel.get("/outputs?applied=1", &session).await;
    assert_eq!(outputs.status, StatusCode::OK);
    assert!(outputs.body.contains("Settings saved"));

    // Self-signed: rtcbox's HTTPS listener with its own certificate (8443 already runs).
    panel
        .post(
            "/wizard/tls",
            &session,
            &[("csrf", &csrf), ("mode", "self-signed")],
        )
        .await;
    panel
        .post(
            "/wizard/review",
            &session,
            &[("csrf", &csrf), ("action", "apply")],
        )
        .await;
    let stored = panel.stored().await;
    assert_eq!(stored["tls_mode"], "self-signed");
    assert!(!stored.contains_key("https_bind"));
}

#[tokio::test]
async fn an_unread_well_known_can_be_pasted_and_is_then_kept() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    complete_wizard(&panel, &session, &csrf).await;
    // The wizard could not read the homeserver's document (no network here): the page says so,
    // offers the entry to add by hand, and a box for the current file.
    let page = panel.get("/outputs", &session).await;
    assert!(
        page.body.contains("could not read a current document"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"well-known-rtc-foci\""));
    assert!(page.body.contains("action=\"/outputs/well-known\""));
    let stored_well_known = || async {
        let steps = panel.wizard().await;
        let data: serde_json::Value = serde_json::from_str(&steps["homeserver"].data).unwrap();
        data["discovered"]["well_known"].clone()
    };
    // Not JSON, or JSON but not an object: refused with the reason, the text kept, nothing
    // stored; without the form's token: refused before anything is read.
    for (pasted, why) in [
        ("{\"m.homeserver\": ", "is not valid JSON"),
        ("[1, 2]", "not an object"),
    ] {
        let reply = panel
            .post(
                "/outputs/well-known",
                &session,
                &[("csrf", &csrf), ("current", pasted)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{pasted}");
        assert!(reply.body.contains(why), "{pasted}: {}", reply.body);
        assert!(
            reply.body.contains(&askama_escape(pasted.trim())),
            "{pasted}"
        );
        assert_eq!(stored_well_known().await, serde_json::Value::Null);
    }
    let current = r#"{"m.homeserver": {"base_url": "https://matrix.example.org"},
        "m.identity_server": {"base_url": "https://id.example.org"}}"#;
    assert_eq!(
        panel
            .post(
                "/outputs/well-known",
                &session,
                &[("csrf", "wrong"), ("current", current)]
            )
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let reply = panel
        .post(
            "/outputs/well-known",
            &session,
            &[("csrf", &csrf), ("current", current)],
        )
        .await;
    assert_eq!(
        reply.location(),
        "/outputs?pasted=1#well-known-client",
        "{}",
        reply.body
    );
    assert_eq!(
        stored_well_known().await["m.identity_server"]["base_url"],
        "https://id.example.org"
    );
    // Now the complete document keeps the pasted entries, and says so.
    let page = panel.get("/outputs?pasted=1", &session).await;
    assert!(page.body.contains("Your pasted document is used"));
    assert!(page.body.contains("keeps every entry rtcbox read"));
    assert!(!page.body.contains("id=\"well-known-rtc-foci\""));
    let doc = panel.get("/outputs/well-known-client", &session).await.body;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(
        doc["m.identity_server"]["base_url"],
        "https://id.example.org"
    );
    assert_eq!(
        doc["org.matrix.msc4143.rtc_foci"][0]["livekit_service_url"],
        "https://matrixrtc.example.org/livekit/jwt"
    );
}

#[tokio::test]
async fn outputs_are_shown_and_downloadable() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    complete_wizard(&panel, &session, &csrf).await;
    let page = panel.get("/outputs", &session).await;
    let d = super::wizard::deployment(&panel.state).await.unwrap();
    let all = crate::setup::outputs::all(&d);
    assert!(!all.is_empty());
    for output in &all {
        assert!(
            page.body.contains(&format!("id=\"{}\"", output.id)),
            "{}",
            output.id
        );
        let download = panel
            .get(&format!("/outputs/{}", output.id), &session)
            .await;
        assert_eq!(download.status, StatusCode::OK, "{}", output.id);
        assert_eq!(download.body, output.text, "{}", output.id);
        let disposition = download.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap();
        assert_eq!(
            disposition,
            format!("attachment; filename=\"{}\"", output.filename)
        );
    }
    assert_eq!(
        panel
            .get("/outputs/../../etc/passwd", &session)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        panel.get("/outputs/nope", &session).await.status,
        StatusCode::NOT_FOUND
    );
    // The port table says for each row what the text file says: required, recommended or
    // optional, in a column of its own.
    let forwards = crate::setup::outputs::ports::port_forwards(&d);
    assert!(page.body.contains("<th scope=\"col\">Needed?</th>"));
    for need in ["required", "recommended", "optional"] {
        let cell = format!("<td data-label=\"Needed\"><strong class=\"need\">{need}</strong>");
        assert_eq!(
            page.body.matches(&cell).count(),
            forwards.iter().filter(|f| f.need.label() == need).count(),
            "{need}"
        );
    }
    assert!(forwards.iter().any(|f| f.need.label() == "recommended"));
    // The API secret never appears in the generated configuration.
    let secret = panel.state.settings.api_secret.expose().to_owned();
    assert!(!page.body.contains(&secret));

    // compose.yaml mounts the data directory rtcbox runs with, as its owner, and pins nothing:
    // the panel pins RTCBOX_FULL_ACCESS_HOMESERVERS, which the container would not inherit.
    use std::os::unix::fs::MetadataExt as _;
    let dir = std::fs::canonicalize(panel.state.data_dir.as_deref().unwrap()).unwrap();
    let meta = std::fs::metadata(&dir).unwrap();
    let compose = panel.get("/outputs/compose-yaml", &session).await.body;
    assert!(
        compose.contains(&format!("      - \"{}:/data\"\n", dir.display())),
        "{compose}"
    );
    if (meta.uid(), meta.gid()) != (65532, 65532) {
        assert!(compose.contains(&format!("    user: \"{}:{}\"\n", meta.uid(), meta.gid())));
    }
    assert!(compose.contains("RTCBOX_FULL_ACCESS_HOMESERVERS"));
    assert!(!compose.contains("\n      RTCBOX_"));
}

#[tokio::test]
async fn settings_are_validated_pinned_ones_locked() {
    let panel = panel_with(&[
        (SettingKey::FullAccessHomeservers, "example.org"),
        (SettingKey::NodeIp, "203.0.113.9"),
    ])
    .await;
    let (session, csrf) = panel.logged_in().await;
    let page = panel.get("/settings", &session).await;
    assert!(page.body.contains("RTCBOX_NODE_IP"));
    assert!(page.body.contains("locked"));
    let before = panel.stored().await;

    let bad = panel
        .post(
            "/settings",
            &session,
            &[
                ("csrf", &csrf),
                ("key", "public_url"),
                ("value", "ftp://x.example.org"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("must start with wss://"), "{}", bad.body);
    assert!(bad.body.contains("value=\"ftp://x.example.org\""));
    let pinned = panel
        .post(
            "/settings",
            &session,
            &[
                ("csrf", &csrf),
                ("key", "node_ip"),
                ("value", "203.0.113.1"),
            ],
        )
        .await;
    assert_eq!(pinned.status, StatusCode::FORBIDDEN);
    for key in [
        "api_secret",
        "turn_shared_secret",
        "dangerous_allow_private_homeservers",
        "nope",
    ] {
        let reply = panel
            .post(
                "/settings",
                &session,
                &[("csrf", &csrf), ("key", key), ("value", "x")],
            )
            .await;
        assert!(reply.status.is_client_error(), "{key}");
    }
    assert_eq!(panel.stored().await, before);

    let good = panel
        .post(
            "/settings",
            &session,
            &[
                ("csrf", &csrf),
                ("key", "public_url"),
                ("value", "wss://rtc.example.org/livekit/sfu"),
            ],
        )
        .await;
    assert_eq!(good.status, StatusCode::OK);
    assert!(good.body.contains("Saved RTCBOX_PUBLIC_URL"));
    assert!(good.body.contains("Waiting for a restart"));
    assert_eq!(
        panel.stored().await["public_url"],
        "wss://rtc.example.org/livekit/sfu"
    );
    // Empty goes back to the default.
    panel
        .post(
            "/settings",
            &session,
            &[("csrf", &csrf), ("key", "public_url"), ("value", "")],
        )
        .await;
    assert!(!panel.stored().await.contains_key("public_url"));
}

#[tokio::test]
async fn key_rotation_and_password_change() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let old_key = panel.stored().await["api_key"].clone();
    let old_secret = panel.stored().await["api_secret"].clone();
    let rotated = panel
        .post("/settings/keys", &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let stored = panel.stored().await;
    assert_ne!(stored["api_key"], old_key);
    assert_ne!(stored["api_secret"], old_secret);
    assert!(rotated.body.contains(&stored["api_key"]));
    assert!(
        !rotated.body.contains(&stored["api_secret"]),
        "the secret is never shown"
    );

    let wrong = panel
        .post(
            "/settings/password",
            &session,
            &[
                ("csrf", &csrf),
                ("current", "nope nope nope"),
                ("password", "another good password"),
                ("confirm", "another good password"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.body.contains("not the current password"));
    let changed = panel
        .post(
            "/settings/password",
            &session,
            &[
                ("csrf", &csrf),
                ("current", "correct horse battery"),
                ("password", "another good password"),
                ("confirm", "another good password"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let db::admin::AccountState::Ready { password_hash } =
        db::admin::account(&panel.state.pool).await.unwrap()
    else {
        panic!("a password is set");
    };
    assert!(
        auth::verify_password("another good password".into(), password_hash)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn renew_now_wakes_the_acme_task_only_with_a_session_and_its_csrf_token() {
    let acme = crate::acme::AcmeHandle::default();
    let pair = rcgen::generate_simple_self_signed(vec!["rtc.example.org".to_owned()]).unwrap();
    let certificates = crate::tls::TlsCertificates::from_pem(
        &pair.cert.pem(),
        &pair.signing_key.serialize_pem(),
        "acme",
    )
    .unwrap();
    let panel = panel_configured(&[(SettingKey::FullAccessHomeservers, "example.org")], |s| {
        s.acme = Some(acme.clone());
        s.certificates = Some(certificates);
    })
    .await;
    let (session, csrf) = panel.logged_in().await;
    let dashboard = panel.get("/", &session).await;
    assert!(
        dashboard.body.contains("action=\"/certificate/renew\""),
        "{}",
        dashboard.body
    );

    let forged = panel
        .post("/certificate/renew", &session, &[("csrf", "nope")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!acme.take_renew_request(), "a forged form asks for nothing");
    let anonymous = panel
        .post("/certificate/renew", "", &[("csrf", &csrf)])
        .await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_ne!(anonymous.location(), "/");
    assert!(!acme.take_renew_request());

    let asked = panel
        .post("/certificate/renew", &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER);
    assert_eq!(asked.location(), "/");
    assert!(acme.take_renew_request());
    assert!(!acme.take_renew_request(), "one request, taken once");
}

#[tokio::test]
async fn renew_now_without_acme_says_why_not() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let dashboard = panel.get("/", &session).await;
    assert!(!dashboard.body.contains("/certificate/renew"));
    let reply = panel
        .post("/certificate/renew", &session, &[("csrf", &csrf)])
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply.body.contains("RTCBOX_TLS_MODE is not acme"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn pinned_keys_cannot_be_rotated() {
    let panel = panel_with(&[
        (SettingKey::FullAccessHomeservers, "example.org"),
        (SettingKey::ApiKey, "APIpinned"),
    ])
    .await;
    let (session, csrf) = panel.logged_in().await;
    let before = panel.stored().await;
    assert_eq!(
        panel
            .post("/settings/keys", &session, &[("csrf", &csrf)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(panel.stored().await, before);
}

#[tokio::test]
async fn assets_logs_and_unknown_pages() {
    let panel = panel().await;
    let names = assets::names();
    assert!(names.iter().any(|n| n == "app.css") && names.iter().any(|n| n == "app.js"));
    for name in names {
        let reply = panel.get(&format!("/static/{name}"), "").await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_ne!(
            reply.headers[header::CONTENT_TYPE],
            "application/octet-stream",
            "{name}"
        );
    }
    assert_eq!(
        panel.get("/static/../Cargo.toml", "").await.status,
        StatusCode::NOT_FOUND
    );
    let (session, _) = panel.logged_in().await;
    panel
        .state
        .logs
        .push("INFO rtcbox: a line <b>with markup</b>");
    let logs = panel.get("/logs", &session).await;
    assert!(
        logs.body
            .contains("a line &#60;b&#62;with markup&#60;/b&#62;"),
        "{}",
        logs.body
    );
    let missing = panel.get("/no/such/page", &session).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("There is no such page"));
}

#[tokio::test]
async fn the_log_page_filters_by_level_downloads_and_says_where_the_log_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let panel = panel().await;
    let (session, _) = panel.logged_in().await;
    let logs = &panel.state.logs;
    let no_file = panel.get("/logs", &session).await;
    assert!(!no_file.body.contains("Kept across restarts"));
    logs.persist_in(dir.path()).unwrap();
    let line = |level: &str, what: &str| {
        format!("2026-12-04T20:58:43.993851Z  {level} rtcbox::app: {what}")
    };
    for (level, what) in [
        ("DEBUG", "debug-line"),
        ("INFO", "info-line"),
        ("WARN", "warn-line"),
        ("ERROR", "error-line"),
    ] {
        logs.push(&line(level, what));
    }
    logs.push("    continued-error-line");
    // Each level shows its lines and those above it, a continuation line with its event.
    let all = [
        "debug-line",
        "info-line",
        "warn-line",
        "error-line",
        "continued-error-line",
    ];
    let shown =
        |body: &str| -> Vec<&str> { all.into_iter().filter(|what| body.contains(what)).collect() };
    for (query, expected, selected) in [
        ("", &all[..], "trace"),
        ("?level=warn", &all[2..], "warn"),
        ("?level=ERROR", &all[3..], "error"),
        ("?level=info", &all[1..], "info"),
        // Unknown levels show everything.
        ("?level=%3Cb%3E", &all[..], "trace"),
    ] {
        let page = panel.get(&format!("/logs{query}"), &session).await;
        assert_eq!(page.status, StatusCode::OK, "{query}");
        assert_eq!(shown(&page.body), expected, "{query}");
        assert!(
            page.body
                .contains(&format!("<option value=\"{selected}\" selected>")),
            "{query}: {}",
            page.body
        );
        assert!(
            page.body
                .contains(&format!("href=\"/logs/download?level={selected}\"")),
            "{query}"
        );
    }
    let page = panel.get("/logs", &session).await;
    assert!(
        page.body.contains("Kept across restarts in")
            && page
                .body
                .contains(&dir.path().join("rtcbox.log").display().to_string()),
        "{}",
        page.body
    );

    let download = panel.get("/logs/download?level=warn", &session).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(
        download.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        download.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"rtcbox-log-warn.txt\""
    );
    assert_eq!(
        download.body,
        format!(
            "{}\n{}\n    continued-error-line\n",
            line("WARN", "warn-line"),
            line("ERROR", "error-line")
        )
    );
    // The download reads the file: what was logged before this buffer existed is in it.
    std::fs::write(
        dir.path().join("rtcbox.log.1"),
        format!("{}\n", line("ERROR", "last-week")),
    )
    .unwrap();
    let download = panel.get("/logs/download?level=error", &session).await;
    assert!(
        download.body.starts_with(&line("ERROR", "last-week")),
        "{}",
        download.body
    );
}

#[tokio::test]
async fn garbage_forms_never_cause_a_server_error() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let paths = [
        "/wizard/endpoints",
        "/wizard/tls",
        "/wizard/network",
        "/wizard/turn",
        "/wizard/review",
        "/settings",
        "/settings/password",
        "/login",
        "/setup",
    ];
    let fields = [
        "mode",
        "rtc_url",
        "lan_ip",
        "http",
        "legacy_turn",
        "key",
        "value",
        "current",
        "password",
        "action",
        "proxy",
        "email",
    ];
    for round in 0..300 {
        let path = paths[(next() % paths.len() as u64) as usize];
        let mut body = format!("csrf={csrf}");
        for _ in 0..(next() % 6) {
            let name = fields[(next() % fields.len() as u64) as usize];
            let len = (next() % 40) as usize;
            let value: Vec<u8> = (0..len).map(|_| (next() % 256) as u8).collect();
            body.push('&');
            body.push_str(name);
            body.push('=');
            if round % 3 == 0 {
                // Raw bytes: not valid URL encoding at all.
                body.push_str(&String::from_utf8_lossy(&value));
            } else {
                body.push_str(
                    &value
                        .iter()
                        .map(|b| format!("%{b:02X}"))
                        .collect::<String>(),
                );
            }
        }
        let reply = panel.post_raw(path, &session, body.into_bytes()).await;
        assert!(!reply.status.is_server_error(), "{path}: {}", reply.status);
        assert!(!reply.body.contains("panicked"), "{path}");
    }
    // A body that is not a form at all.
    let request = Request::post("/settings")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::COOKIE, &session)
        .body(Body::from("{}"))
        .unwrap();
    let reply = reply(panel.router.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply.body.contains("could not be read"));
}

#[tokio::test]
async fn a_lan_client_cannot_dodge_the_login_limit_with_forwarded_headers() {
    use axum::extract::ConnectInfo;
    let panel = panel().await;
    panel.logged_in().await;
    let page = panel.get("/login", "").await;
    let pre = page.cookie("rtcbox_csrf").unwrap();
    let pre = pre.split(';').next().unwrap().to_owned();
    let csrf = page.csrf();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let mut request = Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &pre)
            .header("x-forwarded-for", format!("10.9.8.{i}"))
            .body(Body::from(format!("csrf={csrf}&password=guess")))
            .unwrap();
        let peer: std::net::SocketAddr = "192.168.1.50:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        statuses.push(
            panel
                .router
                .clone()
                .oneshot(request)
                .await
                .unwrap()
                .status(),
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

/// A TURN server as the driver would publish it: two listeners (TLS failed), legacy calls on, a
/// LAN block allowed, two allocations.
fn busy_turn() -> crate::turn::TurnHandle {
    use crate::turn::credentials::CredentialKind;
    use crate::turn::policy::Denied;
    use crate::turn::status::{AllocationInfo, ListenerStatus};
    use crate::turn::{Client, Transport, TurnHandle, TurnUrls};
    use std::time::Duration;

    let handle = TurnHandle::new(
        crate::secret::Secret::new("participant-secret-never-shown"),
        TurnUrls {
            host: "rtc.example.org".into(),
            port: Some(3478),
            tls_port: Some(5349),
            https_port: None,
        },
        None,
    );
    handle.publish(|status| {
        status.listeners = vec![
            ListenerStatus {
                transport: Transport::Udp,
                addr: "0.0.0.0:3478".parse().unwrap(),
                https: false,
                error: None,
            },
            ListenerStatus {
                transport: Transport::Tls,
                addr: "0.0.0.0:5349".parse().unwrap(),
                https: false,
                error: Some("Address in use (os error 98)".into()),
            },
            ListenerStatus {
                transport: Transport::Tls,
                addr: "0.0.0.0:8443".parse().unwrap(),
                https: true,
                error: None,
            },
        ];
        status.relay_ip = Some("203.0.113.7".parse().unwrap());
        status.relay_ports = (49160, 49200);
        status.legacy_calls = true;
        status.allow_peers = vec!["192.168.1.0/24".into(), "8.8.8.8".into()];
        status.stats.allocations = 2;
        status.stats.bytes_relayed = 5 * 1024 * 1024 + 300 * 1024;
        status
            .stats
            .denials
            .insert(Denied::Special(crate::net::Special::Loopback), 3);
        status.stats.denials.insert(Denied::ThisHost, 1);
        status.stats.auth_failures = 4;
        status.stats.errors_suppressed = 5;
        status.stats.dropped_over_bandwidth = 6;
        status.stats.quota_refusals = 11;
        status.stats.capacity_refusals = 12;
        status.streams = crate::turn::status::StreamStats {
            open: 7,
            refused_per_address: 8,
            refused_full: 9,
            closed_unauthenticated: 10,
        };
        status.allocations = vec![
            AllocationInfo {
                client: Client::udp("198.51.100.4:51000".parse().unwrap()),
                user: "alice".into(),
                kind: CredentialKind::Participant,
                relay: "203.0.113.7:49161".parse().unwrap(),
                age: Duration::from_secs(75),
                expires_in: Duration::from_secs(525),
                bytes: 2048,
                permissions: 1,
                channels: 1,
            },
            AllocationInfo {
                client: Client {
                    transport: Transport::Tcp,
                    addr: "[2001:db8::4]:40000".parse().unwrap(),
                },
                user: "@bob:example.org".into(),
                kind: CredentialKind::Rest,
                relay: "203.0.113.7:49162".parse().unwrap(),
                age: Duration::from_secs(7300),
                expires_in: Duration::from_secs(42),
                bytes: 0,
                permissions: 2,
                channels: 0,
            },
        ];
    });
    handle
}

#[tokio::test]
async fn the_dashboard_counts_refused_connections() {
    use crate::net::caps::{ConnectionCaps, Limits};
    let caps = ConnectionCaps::new(
        "ICE-TCP",
        Limits {
            total: 3,
            per_address: 1,
        },
    );
    let _held = caps.try_acquire("192.0.2.1".parse().unwrap()).unwrap();
    for _ in 0..2 {
        assert!(caps.try_acquire("192.0.2.1".parse().unwrap()).is_err());
    }
    let shown = caps.clone();
    let panel = panel_configured(&[(SettingKey::FullAccessHomeservers, "example.org")], |s| {
        s.connection_caps = vec![shown]
    })
    .await;
    let (session, _) = panel.logged_in().await;
    let body = panel.get("/", &session).await.body;
    assert!(
        body.contains(
            "<dt>ICE-TCP</dt><dd>1 open; refused since start: 2 (too many from one \
             address), 0 (all 3 taken)</dd>"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn the_dashboard_shows_the_turn_server() {
    // No TURN server in this process.
    let panel = panel().await;
    let (session, _) = panel.logged_in().await;
    let page = panel.get("/", &session).await;
    assert!(
        page.body
            .contains("The TURN server is not running in this process."),
        "{}",
        page.body
    );

    // Running, nothing published yet: empty states.
    let idle = crate::turn::TurnHandle::new(
        crate::secret::Secret::new("s"),
        crate::turn::TurnUrls {
            host: "h".into(),
            port: None,
            tls_port: None,
            https_port: None,
        },
        None,
    );
    let panel = panel_configured(&[(SettingKey::FullAccessHomeservers, "example.org")], |s| {
        s.turn = Some(idle)
    })
    .await;
    let (session, _) = panel.logged_in().await;
    let body = panel.get("/", &session).await.body;
    assert!(body.contains("No TURN listener is running"), "{body}");
    assert!(body.contains("No allocations right now."), "{body}");
    assert!(body.contains("off: only call participants"), "{body}");
    assert!(body.contains("nothing (private, loopback"), "{body}");

    // Busy.
    let panel = panel_configured(&[(SettingKey::FullAccessHomeservers, "example.org")], |s| {
        s.turn = Some(busy_turn())
    })
    .await;
    let (session, _) = panel.logged_in().await;
    let page = panel.get("/", &session).await;
    assert_eq!(page.status, StatusCode::OK);
    let text = page.body.replace("&#39;", "'").replace("&quot;", "\"");
    for needle in [
        "UDP <code>0.0.0.0:3478</code>: running",
        "HTTPS and TURN over TLS <code>0.0.0.0:8443</code>: running",
        "TLS <code>0.0.0.0:5349</code>: <strong>not running</strong>: Address in use (os error 98) (port 5349 is taken: is coturn still running?)",
        "203.0.113.7, UDP ports 49160-49200",
        "on: Synapse's TURN credentials (shared secret) are accepted",
        "192.168.1.0/24, 8.8.8.8",
        "RTCBOX_TURN_ALLOW_PEERS opens 192.168.1.0/24 to TURN",
        "<dt>Relayed</dt><dd>5.3 MiB</dd>",
        "<dt>Peers refused: loopback address</dt><dd>3</dd>",
        "<dt>Peers refused: this host's own address</dt><dd>1</dd>",
        "<dt>Requests with bad or expired credentials</dt><dd>4</dd>",
        "<dt>Error answers held back (rate limit)</dt><dd>5</dd>",
        "<dt>Packets dropped over the bandwidth cap</dt><dd>6</dd>",
        "<dt>TCP/TLS connections open</dt><dd>7</dd>",
        "<dt>TCP/TLS connections refused (too many from one address)</dt><dd>8</dd>",
        "<dt>TCP/TLS connections refused (all taken)</dt><dd>9</dd>",
        "<dt>TCP/TLS connections closed without authenticating</dt><dd>10</dd>",
        "<code class=\"break\">UDP 198.51.100.4:51000</code></td><td data-label=\"User\"><code class=\"break\">alice</code></td><td data-label=\"Kind\">call participant (LiveKit)</td><td data-label=\"Relay\"><code class=\"break\">203.0.113.7:49161</code></td><td data-label=\"Age\">1 min 15 s</td><td data-label=\"Expires in\">8 min 45 s</td><td data-label=\"Relayed\">2.0 KiB</td><td data-label=\"Peers\">1 permission, 1 channel</td>",
        "<code class=\"break\">TCP [2001:db8::4]:40000</code></td><td data-label=\"User\"><code class=\"break\">@bob:example.org</code></td><td data-label=\"Kind\">legacy 1:1 call (Synapse)</td>",
        "2 h 1 min",
        "2 permissions, 0 channels",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    // The oldest allocation first.
    assert!(text.find("@bob:example.org") < text.find(">alice<"));
    assert!(!text.contains("participant-secret-never-shown"));
}

#[tokio::test]
async fn the_last_import_is_shown_on_the_dashboard_and_the_settings_page() {
    let panel = panel().await;
    let (session, _) = panel.logged_in().await;
    for path in ["/", "/settings"] {
        assert!(
            !panel
                .get(path, &session)
                .await
                .body
                .contains("Imported from")
        );
    }
    let record = db::imports::ImportRecord {
        imported_at: 1_796_390_400, // 2026-12-04 13:20 UTC
        sources: "livekit.yaml (/etc/livekit/livekit.yaml), lk-jwt-service env (/etc/lk-jwt.env)"
            .into(),
        settings: vec!["RTCBOX_PUBLIC_URL".into(), "RTCBOX_RTC_UDP_PORT".into()],
    };
    db::imports::store(
        &panel.state.pool,
        &[("rtc_udp_port", Some("50000".into()))],
        &record,
    )
    .await
    .unwrap();
    for path in ["/", "/settings"] {
        let body = panel.get(path, &session).await.body;
        assert!(
            body.contains(
                "Imported from livekit.yaml (/etc/livekit/livekit.yaml), lk-jwt-service env \
                 (/etc/lk-jwt.env) on 2026-12-04 13:20 UTC: 2 settings (<code>RTCBOX_PUBLIC_URL</code>, \
                 <code>RTCBOX_RTC_UDP_PORT</code>)"
            ),
            "{path}: {body}"
        );
    }
}

/// `GET /metrics` from `peer` with extra headers.
async fn scrape(panel: &Panel, peer: &str, headers: &[(&str, &str)]) -> Reply {
    use axum::extract::ConnectInfo;
    let mut request = Request::get("/metrics");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    reply(panel.router.clone().oneshot(request).await.unwrap()).await
}

/// The text format's grammar, line by line: every family has HELP then TYPE, and every sample
/// belongs to the family announced last, with a number for its value.
fn check_exposition(body: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut family = String::new();
    let mut lines = body.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            family = rest.split(' ').next().unwrap().to_owned();
            let kind = lines.next().unwrap();
            assert!(
                kind == format!("# TYPE {family} counter")
                    || kind == format!("# TYPE {family} gauge"),
                "{kind}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            series == family || series.starts_with(&format!("{family}{{")),
            "{line}"
        );
        samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
    }
    samples
}

#[tokio::test]
async fn metrics_without_a_token_answer_loopback_and_admins_only() {
    let panel = panel_configured(&[(SettingKey::FullAccessHomeservers, "example.org")], |s| {
        s.turn = Some(busy_turn())
    })
    .await;
    let lan = scrape(&panel, "192.168.1.50:40000", &[]).await;
    assert_eq!(lan.status, StatusCode::FORBIDDEN);
    assert!(lan.body.contains("RTCBOX_METRICS_TOKEN"), "{}", lan.body);
    // A reverse proxy on this host would make every client loopback: refused.
    let proxied = scrape(
        &panel,
        "127.0.0.1:40000",
        &[("x-forwarded-for", "198.51.100.9")],
    )
    .await;
    assert_eq!(proxied.status, StatusCode::FORBIDDEN);

    let local = scrape(&panel, "127.0.0.1:40000", &[]).await;
    assert_eq!(local.status, StatusCode::OK, "{}", local.body);
    assert_eq!(
        local.headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let samples = check_exposition(&local.body);
    let build = format!(
        "rtcbox_build_info{{version=\"{}\",commit=\"{}\"}}",
        crate::VERSION,
        crate::GIT_COMMIT
    );
    assert_eq!(samples[&build], 1.0);
    // TURN's status, as the dashboard shows it.
    assert_eq!(samples["rtcbox_turn_allocations"], 2.0);
    assert_eq!(samples["rtcbox_turn_auth_failures_total"], 4.0);
    assert_eq!(
        samples["rtcbox_turn_peers_refused_total{reason=\"this host's own address\"}"],
        1.0
    );
    assert_eq!(
        samples["rtcbox_connections_refused_total{listener=\"TURN TCP/TLS\",reason=\"full\"}"],
        9.0
    );
    assert_eq!(
        samples["rtcbox_turn_allocations_refused_total{reason=\"quota\"}"],
        11.0
    );
    assert_eq!(
        samples["rtcbox_turn_allocations_refused_total{reason=\"capacity\"}"],
        12.0
    );
    assert!(samples.contains_key("rtcbox_public_ip_changes_total"));
    assert!(samples.contains_key("rtcbox_rate_limited_total{endpoint=\"admin_login\"}"));

    // An admin's browser gets it from anywhere.
    let (session, _) = panel.logged_in().await;
    let admin = scrape(&panel, "192.168.1.50:40000", &[("cookie", &session)]).await;
    assert_eq!(admin.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_with_a_token_need_it_even_from_loopback() {
    let token = "scrape-token-0123456789abcdef";
    let panel = panel_with(&[
        (SettingKey::FullAccessHomeservers, "example.org"),
        (SettingKey::MetricsToken, token),
    ])
    .await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-token-0123456789abcdef")],
        vec![("authorization", "Bearer scrape-token-0123456789abcde")],
        vec![("authorization", "Basic c2NyYXBlOnRva2Vu")],
    ] {
        let refused = scrape(&panel, "127.0.0.1:40000", &headers).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(
            refused.headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"rtcbox metrics\""
        );
        assert!(!refused.body.contains(token));
    }
    let bearer = format!("Bearer {token}");
    let scraped = scrape(&panel, "192.168.1.50:40000", &[("authorization", &bearer)]).await;
    assert_eq!(scraped.status, StatusCode::OK);
    check_exposition(&scraped.body);
    assert!(!scraped.body.contains(token));
    let (session, _) = panel.logged_in().await;
    let admin = scrape(&panel, "192.168.1.50:40000", &[("cookie", &session)]).await;
    assert_eq!(admin.status, StatusCode::OK);
}

#[test]
fn a_short_metrics_token_is_refused() {
    assert!(config::check_value(SettingKey::MetricsToken, "short").is_err());
    assert!(config::check_value(SettingKey::MetricsToken, "has a space in it, sixteen+").is_err());
    assert!(config::check_value(SettingKey::MetricsToken, "0123456789abcdef").is_ok());
}

#[test]
fn the_dashboard_bitrates_are_the_metrics_counters() {
    let c = crate::sfu::counters::SfuCounters::default();
    c.bitrate_received.set(850_000);
    c.bitrate_forwarded.set(2_400_000);
    c.packets_forwarded.add(1234);
    c.bytes_forwarded.add(3 * 1024 * 1024);
    let facts = pages::media_facts(&c);
    assert_eq!(
        facts[0].1,
        "850 kbit/s received from publishers, 2.4 Mbit/s forwarded to subscribers"
    );
    assert_eq!(facts[1].1, "1234 packets, 3.0 MiB");
}

/// A multipart upload of `backup` with `csrf`, as a browser sends the Backup page's form.
async fn upload_backup(panel: &Panel, session: &str, csrf: &str, backup: &[u8]) -> Reply {
    let boundary = "----rtcboxTestBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"backup\"; filename=\"b.json\"\r\n\
         Content-Type: application/json\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(backup);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let request = Request::post("/backup/restore")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header(header::HOST, "panel.test")
        .header(header::COOKIE, session)
        .body(Body::from(body))
        .unwrap();
    reply(panel.router.clone().oneshot(request).await.unwrap()).await
}

#[tokio::test]
async fn a_backup_downloaded_from_the_panel_restores_through_the_upload_form() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let page = panel.get("/backup", &session).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("The file contains secrets"),
        "{}",
        page.body
    );
    assert!(page.body.contains("enctype=\"multipart/form-data\""));

    let download = panel.get("/backup/download", &session).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.headers[header::CONTENT_TYPE], "application/json");
    let disposition = download.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"rtcbox-backup-"),
        "{disposition}"
    );
    let file = download.body.clone().into_bytes();
    let key_before = panel.stored().await["api_key"].clone();

    // Something changes after the backup; the restore takes it back.
    db::settings::set(
        &panel.state.pool,
        "public_url",
        "wss://changed.example.org/livekit/sfu",
    )
    .await
    .unwrap();
    db::settings::rotate_key_pair(&panel.state.pool)
        .await
        .unwrap();
    let restored = upload_backup(&panel, &session, &csrf, &file).await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.body);
    assert!(restored.body.contains("The backup was restored"));
    assert!(restored.body.contains("Restart rtcbox now"));
    assert!(restored.body.contains(&key_before));
    assert_eq!(panel.stored().await["api_key"], key_before);
    assert!(!panel.stored().await.contains_key("public_url"));
    // Every session ended with it.
    assert_eq!(panel.get("/", &session).await.location(), "/login");
}

#[tokio::test]
async fn a_bad_upload_is_refused_on_the_page_and_changes_nothing() {
    let panel = panel().await;
    let (session, csrf) = panel.logged_in().await;
    let file = panel
        .get("/backup/download", &session)
        .await
        .body
        .into_bytes();
    let before = db::backup::snapshot(&panel.state.pool).await.unwrap();
    let cut = &file[..file.len() / 2];
    let mut tampered = String::from_utf8(file.clone()).unwrap();
    tampered = tampered.replacen("\"api_key\": \"API", "\"api_key\": \"APX", 1);
    for (bad, says) in [
        (cut, "cut off"),
        (&b"hello"[..], "not an rtcbox backup"),
        (tampered.as_bytes(), "checksum"),
        (&b""[..], "empty"),
    ] {
        let reply = upload_backup(&panel, &session, &csrf, bad).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{says}");
        assert!(reply.body.contains(says), "{says}: {}", reply.body);
        assert!(reply.body.contains("Nothing was changed"));
        assert_eq!(
            db::backup::snapshot(&panel.state.pool).await.unwrap(),
            before
        );
    }
    // The wrong CSRF token: refused before the file is looked at.
    let reply = upload_backup(&panel, &session, "0123456789abcdef0123456789abcdef", &file).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Still logged in: nothing was restored.
    assert_eq!(panel.get("/", &session).await.status, StatusCode::OK);
    // Larger than the other forms may be (64 KiB), as a backup with many certificates is: read,
    // and judged by its content.
    let mut large = file.clone();
    large.extend(std::iter::repeat_n(b' ', 200 * 1024));
    let reply = upload_backup(&panel, &session, &csrf, &large).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let (session, csrf) = panel.logged_in_again().await;
    let huge = vec![b'x'; backup::MAX_UPLOAD_BYTES + 1];
    let reply = upload_backup(&panel, &session, &csrf, &huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.body.contains("Nothing was"), "{}", reply.body);
}

#[test]
fn multipart_bodies_are_parsed_and_garbage_is_refused_without_panicking() {
    use super::backup::multipart_fields;
    let ct = "multipart/form-data; boundary=\"XyZ\"";
    let body = b"preamble\r\n--XyZ\r\ncontent-disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\nContent-Type: text/plain\r\n\r\nline\r\n--Xy\r\n--XyZ--\r\n";
    let fields = multipart_fields(ct, body).unwrap();
    assert_eq!(fields["a"], b"1");
    assert_eq!(fields["f"], b"line\r\n--Xy");
    for bad_type in [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "text/plain",
    ] {
        assert!(multipart_fields(bad_type, body).is_none(), "{bad_type}");
    }
    // Every cut of a good body, and seeded random bytes: an answer, never a panic.
    for cut in 0..body.len() {
        let _ = multipart_fields(ct, &body[..cut]);
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut mutated = body.to_vec();
        let at = (seed % mutated.len() as u64) as usize;
        mutated[at] = (seed >> 32) as u8;
        if seed.is_multiple_of(5) {
            mutated.truncate(at);
        }
        let _ = multipart_fields(ct, &mutated);
    }
}
