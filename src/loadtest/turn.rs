//! TURN side by side: coturn's own load client (`turnutils_uclient`, REST credentials, one
//! allocation per client, ChannelData to coturn's echo peer `turnutils_peer`) run once against
//! rtcbox's TURN server and once against coturn's `turnserver` with the same flags. For each:
//! relayed packets per server CPU-second and resident memory per allocation, both from /proc.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::server::{self, Server};

/// Bytes per uclient message (the shared test-peers notes' reference command).
const MESSAGE_BYTES: &str = "170";
/// rtcbox's `max_allocations_per_username`.
const CLIENTS_PER_USER: u32 = 10;

fn tool(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .with_context(|| {
            format!("{name} not found: the TURN comparison needs coturn's tools (apt-get install coturn)")
        })
}

/// Kills and reaps a child on every way out.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one server did under the uclient run.
struct Measured {
    sent: u64,
    received: u64,
    cpu_seconds: f64,
    rss_before: u64,
    rss_peak: u64,
}

impl Measured {
    fn json(&self, clients: u32) -> serde_json::Value {
        // Every echoed message crosses the server twice: to the peer and back.
        let relayed = self.sent + self.received;
        json!({
            "messages_sent": self.sent,
            "messages_returned": self.received,
            "relayed_packets": relayed,
            "cpu_seconds": self.cpu_seconds,
            "relayed_per_cpu_second": relayed as f64 / self.cpu_seconds.max(0.01),
            "rss_before_bytes": self.rss_before,
            "rss_peak_bytes": self.rss_peak,
            "rss_per_allocation_bytes": self.rss_peak.saturating_sub(self.rss_before) / u64::from(clients.max(1)),
        })
    }
}

/// Runs uclient against `port` while sampling `pid`.
async fn measure(
    pid: u32,
    port: u16,
    peer_port: u16,
    secret: &str,
    clients: u32,
    messages: u32,
) -> anyhow::Result<Measured> {
    let rss_before = server::rss_bytes(pid)?;
    let cpu_before = server::process_cpu_seconds(pid)?;
    // rtcbox allows 10 allocations per user name, so one uclient per 10 clients, each with a
    // user name and a loopback address of its own, all at once.
    let mut runs = Vec::new();
    let mut left = clients;
    while left > 0 {
        let n = left.min(CLIENTS_PER_USER);
        left -= n;
        let out =
            std::env::temp_dir().join(format!("rtcbox-loadtest-uclient-{pid}-{}.out", runs.len()));
        let child = Command::new(tool("turnutils_uclient")?)
            .args([
                "-c",
                "-e",
                "127.0.0.1",
                "-r",
                &peer_port.to_string(),
                "-X",
                "-g",
            ])
            .args(["-n", &messages.to_string(), "-m", &n.to_string()])
            .args([
                "-l",
                MESSAGE_BYTES,
                "-u",
                &format!("loadtest{}", runs.len()),
                "-W",
                secret,
            ])
            // A local address each: parallel uclients pick the same local ports otherwise,
            // and a reused 5-tuple is an allocation mismatch (437).
            .args(["-L", &format!("127.0.0.{}", runs.len() + 2)])
            .args(["-p", &port.to_string(), "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnutils_uclient")?;
        runs.push((Reaped(child), out));
    }
    let mut rss_peak = rss_before;
    let started = Instant::now();
    loop {
        let mut running = false;
        for (child, _) in &mut runs {
            running |= child.0.try_wait()?.is_none();
        }
        if !running {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("turnutils_uclient still runs after 300 s");
        }
        rss_peak = rss_peak.max(server::rss_bytes(pid)?);
        eprint!(
            "\rturn: uclient runs {:.0} s   ",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_seconds = server::process_cpu_seconds(pid)? - cpu_before;
    // Every output file is read and removed before any is judged, so none is left behind.
    let outputs: Vec<String> = runs
        .into_iter()
        .map(|(_, out)| {
            let output = std::fs::read_to_string(&out).unwrap_or_default();
            let _ = std::fs::remove_file(&out);
            output
        })
        .collect();
    let (mut sent, mut received) = (0, 0);
    for output in outputs {
        let (s, r) = totals(&output).with_context(|| {
            let tail = output.len().saturating_sub(1500);
            format!(
                "no totals in uclient's output:\n{}",
                output.get(tail..).unwrap_or_default()
            )
        })?;
        sent += s;
        received += r;
    }
    Ok(Measured {
        sent,
        received,
        cpu_seconds,
        rss_before,
        rss_peak,
    })
}

/// The last `tot_send_msgs=…, tot_recv_msgs=…` of uclient's summary.
fn totals(output: &str) -> Option<(u64, u64)> {
    output.lines().rev().find_map(|line| {
        let rest = line.split("tot_send_msgs=").nth(1)?;
        let (sent, rest) = rest.split_once(',')?;
        let received = rest.split("tot_recv_msgs=").nth(1)?;
        let received: String = received.chars().take_while(char::is_ascii_digit).collect();
        Some((sent.trim().parse().ok()?, received.parse().ok()?))
    })
}

/// coturn on free loopback ports with the same secret, as the e2e TURN test starts it.
fn start_coturn(secret: &str, dir: &std::path::Path) -> anyhow::Result<(Reaped, u16)> {
    let port = server::free_udp_tcp()?;
    let (relay_min, relay_max) = server::relay_range()?;
    let child = Command::new(tool("turnserver")?)
        .args(["-n", "--no-cli", "--simple-log", "--no-tls", "--no-dtls"])
        .arg(format!(
            "--log-file={}",
            dir.join("turnserver.log").display()
        ))
        .arg(format!(
            "--pidfile={}",
            dir.join("turnserver.pid").display()
        ))
        .arg(format!("--userdb={}", dir.join("turndb").display()))
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
        ])
        .args([
            "--realm=rtcbox.test",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
        ])
        .arg(format!("--listening-port={port}"))
        .arg(format!("--min-port={relay_min}"))
        .arg(format!("--max-port={relay_max}"))
        .arg("--allow-loopback-peers")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting turnserver")?;
    Ok((Reaped(child), port))
}

pub async fn compare(
    rtcbox: &Server,
    clients: u32,
    messages: u32,
) -> anyhow::Result<serde_json::Value> {
    let peer_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _peer = Reaped(
        Command::new(tool("turnutils_peer")?)
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnutils_peer")?,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("turn: {clients} allocations × {messages} messages through rtcbox");
    let ours = measure(
        rtcbox.pid(),
        rtcbox.turn_port,
        peer_port,
        &rtcbox.turn_secret,
        clients,
        messages,
    )
    .await?;
    eprintln!();
    let dir = std::env::temp_dir().join(format!("rtcbox-loadtest-coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (coturn, port) = start_coturn(&rtcbox.turn_secret, &dir)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eprintln!("turn: the same through coturn");
    let theirs = measure(
        coturn.0.id(),
        port,
        peer_port,
        &rtcbox.turn_secret,
        clients,
        messages,
    )
    .await;
    eprintln!();
    drop(coturn);
    let _ = std::fs::remove_dir_all(&dir);
    let theirs = theirs?;
    let per_cpu = |m: &Measured| (m.sent + m.received) as f64 / m.cpu_seconds.max(0.01);
    let per_allocation =
        |m: &Measured| m.rss_peak.saturating_sub(m.rss_before) as f64 / f64::from(clients.max(1));
    Ok(json!({
        "clients": clients,
        "messages_per_client": messages,
        "message_bytes": 170,
        "rtcbox": ours.json(clients),
        "coturn": theirs.json(clients),
        "ratio_relayed_per_cpu_second": per_cpu(&ours) / per_cpu(&theirs),
        "ratio_rss_per_allocation": per_allocation(&ours) / per_allocation(&theirs).max(1.0),
    }))
}
