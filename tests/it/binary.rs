//! The binary as an operator runs it: first start, restart, health check, refusals.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rtcbox::config::ApiKey;
use rtcbox::livekit::token;
use rtcbox::secret::Secret;

fn rtcbox(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rtcbox"));
    // Only what the test sets: no RTCBOX_* or LIVEKIT_* from the developer's shell.
    // Media on ports the system picks, so parallel tests do not fight over 8882/8881.
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RTCBOX_RTC_UDP_PORT", "0")
        .env("RTCBOX_RTC_TCP_PORT", "0")
        .env("RTCBOX_ADMIN_BIND", "127.0.0.1:0")
        // Never the default 8443: parallel tests and the developer's own rtcbox would collide.
        .env("RTCBOX_HTTPS_BIND", "127.0.0.1:0")
        // The public IP is followed by default: it may ask only loopback (a closed port, so
        // the check fails at once and the media stays on the host's own address), never the
        // default STUN servers on the internet.
        .env("RTCBOX_STUN_SERVERS", "127.0.0.1:9");
    command.arg("--data-dir").arg(data_dir);
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    bind: String,
    log: std::path::PathBuf,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &["--full-access-homeservers", "example.org"])
    }

    /// `rtcbox serve` on a free loopback port with extra arguments, once it is healthy.
    fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let bind = format!("127.0.0.1:{}", free_port());
        // Beside the data directory, so a failed start can say why.
        let log = data_dir.with_extension("serve.log");
        let child = rtcbox(data_dir)
            .args(["serve", "--http-bind", &bind])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            bind,
            log: log.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.healthy(data_dir) {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "rtcbox serve exited early:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "rtcbox serve did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn healthy(&self, data_dir: &Path) -> bool {
        rtcbox(data_dir)
            .args(["healthcheck", "--http-bind", &self.bind])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// SIGTERM, as systemd, Docker and DSM stop services; returns whether it exited cleanly.
    fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "rtcbox did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stored_pair(data_dir: &Path) -> (String, String) {
    let stored = stored_settings(data_dir);
    (stored["api_key"].clone(), stored["api_secret"].clone())
}

/// Every setting stored in the data directory's database.
fn stored_settings(data_dir: &Path) -> std::collections::BTreeMap<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = rtcbox::db::open(data_dir).await.unwrap();
        let stored = rtcbox::db::settings::all(&pool).await.unwrap();
        pool.close().await;
        stored
    })
}

fn minted_token(data_dir: &Path) -> String {
    let out = rtcbox(data_dir)
        .args([
            "token",
            "--room",
            "lobby",
            "--identity",
            "bot",
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The setup token and the admin panel's address from a server's log.
fn setup_token_and_admin(server: &Server) -> (String, String) {
    let log = std::fs::read_to_string(&server.log).unwrap();
    let after = |marker: &str| -> Option<String> {
        let start = log.rfind(marker)? + marker.len();
        Some(
            log[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == ':')
                .collect(),
        )
    };
    let token = after("setup token ").unwrap_or_else(|| panic!("no setup token in:\n{log}"));
    let admin =
        after("admin panel on http://").unwrap_or_else(|| panic!("no admin address in:\n{log}"));
    (token, admin)
}

/// The status of `GET path` on `addr`, over a plain TCP connection.
fn http_status(addr: &str, path: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

fn stored_setup_hash(data_dir: &Path) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = rtcbox::db::open(data_dir).await.unwrap();
        let account = rtcbox::db::admin::account(&pool).await.unwrap();
        pool.close().await;
        match account {
            rtcbox::db::admin::AccountState::AwaitingSetup { token_hash, .. } => token_hash,
            rtcbox::db::admin::AccountState::Ready { .. } => None,
        }
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn restart_keeps_the_key_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");

    let server = Server::start(&data_dir);
    let (key, secret) = stored_pair(&data_dir);
    assert!(key.starts_with("API"));
    assert!(secret.len() >= 32);
    let bind = server.bind.clone();
    assert!(
        server.terminate(),
        "SIGTERM must stop rtcbox with exit code 0"
    );

    // Stopped: the health check fails.
    let out = rtcbox(&data_dir)
        .args(["healthcheck", "--http-bind", &bind])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unhealthy"));

    let server = Server::start(&data_dir);
    assert_eq!(
        stored_pair(&data_dir),
        (key.clone(), secret.clone()),
        "the key pair must survive a restart"
    );

    // `rtcbox token` mints with the stored pair.
    let claims = token::verify(
        &minted_token(&data_dir),
        &ApiKey::parse(&key).unwrap(),
        &Secret::new(&secret),
    )
    .unwrap();
    assert_eq!(claims.sub, "bot");
    assert_eq!(claims.exp - claims.nbf.unwrap(), 600);
    let video = claims.video.unwrap();
    assert_eq!((video.room.as_str(), video.room_join), ("lobby", true));
    drop(server);

    // The admin panel's log is kept in the data directory: both runs are in it (so the panel
    // shows the last run's lines after a restart), private, and without the API secret.
    let log_file = data_dir.join("rtcbox.log");
    let kept = std::fs::read_to_string(&log_file).unwrap();
    assert_eq!(kept.matches("listening on http://").count(), 2, "{kept}");
    assert!(!kept.contains(&secret));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&log_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn token_works_without_a_running_server_and_generates_the_pair_once() {
    let tmp = tempfile::tempdir().unwrap();
    let first = minted_token(tmp.path());
    let (key, secret) = stored_pair(tmp.path());
    let second = minted_token(tmp.path());
    for jwt in [first, second] {
        token::verify(&jwt, &ApiKey::parse(&key).unwrap(), &Secret::new(&secret)).unwrap();
    }
}

#[test]
fn environment_key_pair_overrides_the_stored_one() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "e".repeat(40);
    let out = rtcbox(tmp.path())
        .env("LIVEKIT_KEY", "envkey")
        .env("LIVEKIT_SECRET", &secret)
        .args(["token", "--room", "r", "--identity", "i"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let jwt = String::from_utf8(out.stdout).unwrap();
    token::verify(
        jwt.trim(),
        &ApiKey::parse("envkey").unwrap(),
        &Secret::new(&secret),
    )
    .unwrap();
}

#[test]
fn a_short_secret_is_refused_clearly_and_not_echoed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = rtcbox(tmp.path())
        .env("RTCBOX_API_SECRET", "shortsecret")
        .args([
            "serve",
            "--full-access-homeservers",
            "example.org",
            "--http-bind",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("RTCBOX_API_SECRET") && text.contains("at least 32 bytes"),
        "{text}"
    );
    assert!(
        !text.contains("shortsecret"),
        "the secret must not be printed: {text}"
    );
}

#[test]
fn serve_without_the_full_access_list_starts_and_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &[]);
    let text = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        text.contains("RTCBOX_FULL_ACCESS_HOMESERVERS is not set") && text.contains("setup wizard"),
        "{text}"
    );
    // The advice is the wizard, never a variable to set: a setting from the environment would
    // be locked in the panel.
    assert!(!text.contains("set it to"), "{text}");
    // The setup URL carries the token and is also in a file only the owner can read; the file
    // goes once the password is set (http::admin tests).
    let (token, admin) = setup_token_and_admin(&server);
    assert!(
        text.contains(&format!(
            "open http://{admin}/setup?token={token} in a browser"
        )),
        "{text}"
    );
    let file = tmp.path().join("data").join("setup-url.txt");
    let content = std::fs::read_to_string(&file).unwrap();
    assert!(
        content.contains(&format!("http://{admin}/setup?token={token}")),
        "{content}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    assert!(server.terminate());
}

#[test]
fn a_busy_media_port_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let bind = format!("127.0.0.1:{}", free_port());
    let out = rtcbox(tmp.path())
        .env("RTCBOX_RTC_UDP_PORT", &port)
        .args([
            "serve",
            "--full-access-homeservers",
            "example.org",
            "--http-bind",
            &bind,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!("cannot bind the media UDP port 127.0.0.1:{port}"))
            && message.contains("RTCBOX_RTC_UDP_PORT"),
        "{message}"
    );
    // What to check, not the raw OS error.
    assert!(
        message.contains("already in use by another program") && !message.contains("os error"),
        "{message}"
    );
}

#[test]
fn a_busy_port_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let out = rtcbox(tmp.path())
        .args([
            "serve",
            "--full-access-homeservers",
            "example.org",
            "--http-bind",
            &bind,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "cannot listen on {bind}: the port is already in use"
        )) && !message.contains("os error"),
        "{message}"
    );
}

#[test]
fn first_start_prints_a_setup_token_and_reset_password_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    // Without a database there is nothing to reset, and it says where it looked.
    let out = rtcbox(&data_dir)
        .args(["admin", "reset-password"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no rtcbox database"),
        "{}",
        stderr(&out)
    );

    let server = Server::start(&data_dir);
    let (first, admin) = setup_token_and_admin(&server);
    assert_eq!(first.len(), 32);
    assert_eq!(
        stored_setup_hash(&data_dir),
        Some(rtcbox::db::admin::hash_token(&first))
    );
    assert_eq!(http_status(&admin, "/setup"), 200);
    assert_eq!(http_status(&admin, "/"), 303);
    // The public listener does not serve the panel.
    assert_eq!(http_status(&server.bind, "/setup"), 404);

    let out = rtcbox(&data_dir)
        .args(["admin", "reset-password"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    let second = printed
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 32 && l.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| panic!("no token in:\n{printed}"))
        .to_owned();
    assert_ne!(first, second);
    assert_eq!(
        stored_setup_hash(&data_dir),
        Some(rtcbox::db::admin::hash_token(&second))
    );
    assert!(server.terminate());

    // A restart while no password is set prints a fresh token.
    let server = Server::start(&data_dir);
    let (third, _) = setup_token_and_admin(&server);
    assert_ne!(third, second);
    assert_eq!(
        stored_setup_hash(&data_dir),
        Some(rtcbox::db::admin::hash_token(&third))
    );
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_rtcbox"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        said.trim(),
        format!(
            "rtcbox {} (git {})",
            env!("CARGO_PKG_VERSION"),
            rtcbox::GIT_COMMIT
        )
    );
    // Built from a checkout, the commit is HEAD's short hash (build.rs), not "unknown".
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    if head.status.success() && std::env::var("RTCBOX_GIT_COMMIT").is_err() {
        assert_eq!(
            rtcbox::GIT_COMMIT,
            String::from_utf8_lossy(&head.stdout).trim()
        );
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read as _, Write as _};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let mut stream = std::net::TcpStream::connect(&server.bind).unwrap();
    stream
        .write_all(b"POST /sfu/get HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Far beyond the header read timeout, so this only fails if the server never hangs up.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = Vec::new();
    let result = stream.read_to_end(&mut buf);
    assert!(
        result.is_ok(),
        "the server must close the connection, not leave it hanging: {result:?}"
    );
    assert!(server.healthy(tmp.path()), "and keep serving others");
}

const SAMPLE_SECRET: &str = "Xq3v9Zr8TmW2kYp6LbN4sHd7JfQ1aEc5RgU0oViM";
const SAMPLE_TURN_SECRET: &str = "9d2b7c4e1f8a6b3d5c0e7f2a9b4d6c8e1f3a5b7c";

fn sample(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/import")
        .join(name)
}

fn import(data_dir: &Path, args: &[&str]) -> Output {
    let sources = [
        "--livekit-yaml",
        sample("livekit.yaml").to_str().unwrap(),
        "--env-file",
        sample("lk-jwt.env").to_str().unwrap(),
        "--coturn-conf",
        sample("turnserver.conf").to_str().unwrap(),
    ]
    .map(str::to_owned);
    rtcbox(data_dir)
        .env_remove("RTCBOX_RTC_UDP_PORT")
        .env_remove("RTCBOX_RTC_TCP_PORT")
        .env_remove("RTCBOX_ADMIN_BIND")
        .arg("import")
        .args(sources)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn import_stores_the_old_deployment_and_the_old_key_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");

    // A dry run shows the plan and creates nothing.
    let out = import(&data_dir, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("Dry run: nothing was stored"), "{stdout}");
    assert!(!data_dir.exists(), "a dry run created the data directory");

    let out = import(&data_dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("Stored 13 settings"), "{stdout}");
    for secret in [SAMPLE_SECRET, SAMPLE_TURN_SECRET] {
        assert!(!stdout.contains(secret) && !stderr(&out).contains(secret));
    }
    let stored = stored_settings(&data_dir);
    for (key, value) in [
        ("api_key", "lkprod"),
        ("api_secret", SAMPLE_SECRET),
        ("public_url", "wss://matrix-rtc.example.org/livekit/sfu"),
        ("full_access_homeservers", "example.org"),
        ("http_bind", ":8080"),
        ("rtc_udp_port", "50000"),
        ("rtc_tcp_port", "7881"),
        ("node_ip", "203.0.113.7"),
        ("turn_shared_secret", SAMPLE_TURN_SECRET),
        ("turn_port", "3478"),
        ("turn_tls_port", "5349"),
        ("turn_relay_ports", "49160-49200"),
    ] {
        assert_eq!(stored.get(key).map(String::as_str), Some(value), "{key}");
    }
    // Tokens rtcbox mints verify with the old deployment's pair.
    let claims = token::verify(
        &minted_token(&data_dir),
        &ApiKey::parse("lkprod").unwrap(),
        &Secret::new(SAMPLE_SECRET),
    )
    .unwrap();
    assert_eq!(claims.sub, "bot");

    // Again: nothing changes.
    let out = import(&data_dir, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Nothing to store"));
}

#[test]
fn import_does_not_replace_a_key_pair_unasked_and_bad_files_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let first = minted_token(&data_dir);
    let before = stored_settings(&data_dir);

    // Not a terminal, no --yes: the plan, a hint, exit 2, nothing stored.
    let out = import(&data_dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!(
        "This replaces the stored API key pair (key '{}')",
        before["api_key"]
    )));
    assert!(stderr(&out).contains("Run again with --yes"));
    assert_eq!(stored_settings(&data_dir), before);
    assert!(!first.is_empty());

    // A file that cannot be used: exit 1, why, nothing stored.
    let bad = tmp.path().join("livekit.yaml");
    std::fs::write(&bad, "keys:\n  devkey: secret\n").unwrap();
    let out = rtcbox(&data_dir)
        .args(["import", "--yes", "--livekit-yaml"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "the import stored nothing: livekit.yaml line 2, keys.devkey: the secret is 6 bytes long"
        ),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("secret\n")
            && !String::from_utf8_lossy(&out.stdout).contains("devkey: secret")
    );
    std::fs::write(&bad, "rtc: [unclosed").unwrap();
    let out = rtcbox(&data_dir)
        .args(["import", "--yes", "--livekit-yaml"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("livekit.yaml: not valid YAML"),
        "{}",
        stderr(&out)
    );
    let out = rtcbox(&data_dir)
        .args(["import", "--env-file", "/nonexistent/jwt.env"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--env-file /nonexistent/jwt.env: cannot read the file"),
        "{}",
        stderr(&out)
    );
    // No source at all is a usage error.
    let out = rtcbox(&data_dir).arg("import").output().unwrap();
    assert!(!out.status.success());
    assert_eq!(stored_settings(&data_dir), before);

    // With --yes the pair is replaced.
    let out = import(&data_dir, &["--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stored_pair(&data_dir),
        ("lkprod".to_owned(), SAMPLE_SECRET.to_owned())
    );
}

#[test]
fn an_https_port_that_cannot_be_bound_is_reported_and_the_rest_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let server = Server::start_with(
        &data_dir,
        &[
            "--full-access-homeservers",
            "example.org",
            "--https-bind",
            &bind,
        ],
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("HTTPS listener not running"), "{log}");
    assert!(log.contains(&bind), "{log}");
    assert!(server.terminate());
}

#[test]
fn files_mode_without_usable_files_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("missing-cert.pem");
    let out = rtcbox(&tmp.path().join("data"))
        .env("RTCBOX_TLS_MODE", "files")
        .env("RTCBOX_TLS_CERT_FILE", &cert)
        .env("RTCBOX_TLS_KEY_FILE", tmp.path().join("missing-key.pem"))
        .args(["serve", "--http-bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("RTCBOX_TLS_MODE is files"), "{err}");
    assert!(err.contains("missing-cert.pem"), "{err}");
}

#[test]
fn backup_and_restore_on_the_command_line_and_not_under_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let file = tmp.path().join("backup.json");
    let server = Server::start(&data_dir);
    let pair = stored_pair(&data_dir);

    // A backup works while the server runs; the file is private.
    let out = rtcbox(&data_dir)
        .args(["backup", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("keep it where only you can read it"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // To standard output when it is a file or a pipe.
    let piped = rtcbox(&data_dir).arg("backup").output().unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(String::from_utf8_lossy(&piped.stdout).contains("\"format\": \"rtcbox-backup\""));

    // Not under the running server.
    let out = rtcbox(&data_dir)
        .arg("restore")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stop it first"), "{}", stderr(&out));
    assert!(server.terminate());

    // Into an empty data directory: the same key pair.
    let other = tmp.path().join("other");
    let out = rtcbox(&other).arg("restore").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stored_pair(&other), pair);

    // A cut-off file is refused and leaves no trace, not even a data directory.
    let cut = tmp.path().join("cut.json");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let fresh = tmp.path().join("fresh");
    let out = rtcbox(&fresh).arg("restore").arg(&cut).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cut off"), "{}", stderr(&out));
    assert!(stderr(&out).contains("Nothing was changed"));
    assert!(!fresh.exists());
    // The secret is never printed.
    assert!(!stderr(&out).contains(&pair.1));
}
