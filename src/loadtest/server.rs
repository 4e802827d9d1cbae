//! The server under test: `rtcbox serve` as a child process on loopback only, with a data
//! directory of its own, so its CPU time and memory are read from /proc apart from the load
//! generator's.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Linux's USER_HZ, the unit of utime/stime in /proc/<pid>/stat (100 on every Linux ABI).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

pub struct Server {
    child: Child,
    pub signal: SocketAddr,
    pub admin: SocketAddr,
    pub api_key: String,
    pub api_secret: String,
    pub turn_port: u16,
    /// coturn's REST secret (`RTCBOX_TURN_SHARED_SECRET`), for the TURN comparison.
    pub turn_secret: String,
    dir: PathBuf,
}

fn free_tcp() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port free for both UDP and TCP (TURN listens on both).
pub fn free_udp_tcp() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on 127.0.0.1")
}

/// 256 consecutive ports above 20000 for relays, starting at a random one.
pub fn relay_range() -> anyhow::Result<(u16, u16)> {
    let mut raw = [0u8; 2];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let first = 20_000 + u16::from_be_bytes(raw) % 40_000;
    Ok((first, first + 255))
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

impl Server {
    /// Starts `bin serve` and waits until /healthz answers.
    pub async fn start(bin: &Path) -> anyhow::Result<Server> {
        let dir = std::env::temp_dir().join(format!("rtcbox-loadtest-{}", random_hex(6)?));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let http = free_tcp()?;
        let admin = free_tcp()?;
        let udp = free_udp()?;
        let (relay, relay_last) = relay_range()?;
        let turn_port = free_udp_tcp()?;
        let turn_secret = random_hex(16)?;
        let api_key = format!("APIloadtest{}", random_hex(4)?);
        let api_secret = random_hex(32)?;
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let env: Vec<(&str, String)> = vec![
            ("RTCBOX_DATA_DIR", dir.join("data").display().to_string()),
            ("RTCBOX_HTTP_BIND", format!("127.0.0.1:{http}")),
            ("RTCBOX_ADMIN_BIND", format!("127.0.0.1:{admin}")),
            ("RTCBOX_HTTPS_BIND", format!("127.0.0.1:{}", free_tcp()?)),
            ("RTCBOX_PUBLIC_URL", format!("ws://127.0.0.1:{http}")),
            ("RTCBOX_RTC_UDP_PORT", udp.to_string()),
            ("RTCBOX_RTC_TCP_PORT", free_tcp()?.to_string()),
            ("RTCBOX_NODE_IP", "127.0.0.1".into()),
            // Its own media port answers STUN: nothing leaves loopback.
            ("RTCBOX_STUN_SERVERS", format!("127.0.0.1:{udp}")),
            ("RTCBOX_TURN_PORT", turn_port.to_string()),
            ("RTCBOX_TURN_SHARED_SECRET", turn_secret.clone()),
            // Only for the TURN comparison's echo peer: every listener is on loopback anyway.
            ("RTCBOX_TURN_ALLOW_PEERS", "127.0.0.1/32".into()),
            ("RTCBOX_TURN_TLS_PORT", free_tcp()?.to_string()),
            ("RTCBOX_TURN_RELAY_PORTS", format!("{relay}-{relay_last}")),
            ("RTCBOX_API_KEY", api_key.clone()),
            ("RTCBOX_API_SECRET", api_secret.clone()),
            ("RTCBOX_AUTO_CREATE_ROOMS", "true".into()),
            ("RTCBOX_LOG", "warn".into()),
        ];
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let mut server = Server {
            child,
            signal: SocketAddr::from(([127, 0, 0, 1], http)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            api_key,
            api_secret,
            turn_port,
            turn_secret,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "rtcbox serve exited ({status}) before answering:\n{}",
                    server.log_tail()
                );
            }
            if let Ok(response) = get(server.signal, "/healthz").await
                && response.starts_with("HTTP/1.1 200")
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "rtcbox serve did not answer /healthz in 30 s:\n{}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// User + system CPU seconds of every thread so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(self.pid())
    }

    /// Resident memory now, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid())
    }

    /// The SFU's packet counters from its /metrics (loopback needs no token).
    pub async fn sfu_packets(&self) -> anyhow::Result<SfuPackets> {
        let text = get(self.admin, "/metrics").await?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .map(|v| v as u64)
                .with_context(|| format!("{name} missing from /metrics"))
        };
        Ok(SfuPackets {
            received: value("rtcbox_sfu_packets_received_total")?,
            forwarded: value("rtcbox_sfu_packets_forwarded_total")?,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SfuPackets {
    pub received: u64,
    pub forwarded: u64,
}

/// utime + stime of a process (all its threads, live and exited), from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("a /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("a short stat line")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_SECOND)
}

/// VmRSS of a process in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("VmRSS missing from /proc status")?;
    Ok(kb * 1024)
}

/// One HTTP/1.1 GET on loopback; the whole response as text.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .context("no answer in 5 s")??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}
