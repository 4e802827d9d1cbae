//! The floor: what forwarding one packet costs at the least on this machine. For a packet of a
//! given size: SRTP unprotect (AEAD-AES-128-GCM, str0m's own cipher from its crypto provider),
//! SRTP protect and one `send_to` on loopback, on one core, with no SFU logic at all. Measured
//! as thread CPU time from /proc/thread-self/schedstat, so whatever else runs on the machine
//! does not count.
//!
//! A fan-out forwards one received packet to many subscribers, so the floor splits in two:
//! unprotect once per received packet, protect + send once per forwarded one. [`FloorCost::pps`]
//! combines them for a scenario's measured fan-out.
//!
//! The send is what an SFU's is: one `send_to` per packet from one unconnected socket, to
//! [`RECEIVERS`] destinations in turn (a fan-out sends each packet to another subscriber). The
//! same from a socket connected to one receiver costs less (about half in one session's
//! measurements, docs/benchmarks.md), but no SFU can send its fan-out that way: it is
//! reported beside the floor (`protect_send_connected_ns`) and not used. Batched sends
//! (`sendmmsg`) are not in it: tried in the product, they saved nothing measurable.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde::Serialize;

const RTP_HEADER: usize = 12;
const TAG: usize = 16;
/// How many receivers the floor's sends go to in turn.
pub const RECEIVERS: usize = 4;

/// Nanoseconds of CPU time per packet for one packet size.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FloorCost {
    pub payload_bytes: usize,
    /// How many destinations the sends went to in turn.
    pub receivers: usize,
    pub unprotect_ns: f64,
    pub protect_send_ns: f64,
    /// Protect + `send` from a socket connected to one receiver: not in the floor (no SFU can
    /// send its fan-out that way), reported to show what the kind of send costs.
    pub protect_send_connected_ns: f64,
}

impl FloorCost {
    /// Forwarded packets per CPU-second when each received packet goes out `fanout` times.
    pub fn pps(&self, fanout: f64) -> f64 {
        let per_forwarded = self.unprotect_ns / fanout.max(1.0) + self.protect_send_ns;
        1e9 / per_forwarded
    }
}

fn thread_cpu_ns() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("a schedstat line")
}

/// Measures the floor for `payload_bytes`, spending about `budget` of CPU on each half.
pub fn measure(payload_bytes: usize, budget: Duration) -> anyhow::Result<FloorCost> {
    let provider = str0m::crypto::from_feature_flags();
    let gcm = provider.srtp_provider.aead_aes_128_gcm();
    let key = [7u8; 16];
    let mut encrypt = gcm.create_cipher(key, true);
    let mut decrypt = gcm.create_cipher(key, false);
    let header: Vec<u8> = {
        let mut h = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        h.truncate(RTP_HEADER);
        h
    };
    let plain = vec![0x5au8; payload_bytes];
    let iv = [3u8; 12];
    // One sealed packet to open again and again (the raw cipher has no replay check).
    let mut sealed = vec![0u8; payload_bytes + TAG];
    encrypt
        .encrypt(&iv, &header, &plain, &mut sealed)
        .map_err(|e| anyhow!("AES-GCM seal: {e:?}"))?;
    let mut opened = vec![0u8; payload_bytes + TAG];
    let mut out = header.clone();
    out.resize(RTP_HEADER + payload_bytes + TAG, 0);
    let sinks = (0..RECEIVERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let destinations = sinks
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;

    let unprotect_ns = per_packet(budget, || {
        decrypt
            .decrypt(&iv, &[&header], &sealed, &mut opened)
            .map_err(|e| anyhow!("AES-GCM open: {e:?}"))?;
        Ok(())
    })?;
    // Each receiver drains on a thread of its own: their CPU is not the sender's.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut drainers = Vec::with_capacity(RECEIVERS);
    for sink in sinks {
        sink.set_read_timeout(Some(Duration::from_millis(50)))?;
        let done = done.clone();
        drainers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sink.recv(&mut buf);
            }
        }));
    }
    // Seals the opened payload into `out` behind its header, as a forwarder protects a packet.
    let mut protect = |out: &mut [u8]| {
        let (head, body) = out.split_at_mut(RTP_HEADER);
        encrypt
            .encrypt(&iv, head, &opened[..payload_bytes], body)
            .map_err(|e| anyhow!("AES-GCM seal: {e:?}"))
    };
    let mut next = 0;
    let protect_send_ns = per_packet(budget, || {
        protect(&mut out)?;
        socket.send_to(&out, destinations[next])?;
        next = (next + 1) % destinations.len();
        Ok(())
    });
    // For reference only: the same from a socket connected to one receiver.
    let connected = UdpSocket::bind("127.0.0.1:0")
        .and_then(|c| c.connect(destinations[0]).map(|()| c))
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            per_packet(budget, || {
                protect(&mut out)?;
                c.send(&out)?;
                Ok(())
            })
        });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for drainer in drainers {
        let _ = drainer.join();
    }
    Ok(FloorCost {
        payload_bytes,
        receivers: RECEIVERS,
        unprotect_ns,
        protect_send_ns: protect_send_ns?,
        protect_send_connected_ns: connected?,
    })
}

/// CPU nanoseconds per call of `step`, over batches until `budget` of CPU is spent.
fn per_packet(
    budget: Duration,
    mut step: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let start = thread_cpu_ns()?;
    let wall = Instant::now();
    let mut count = 0u64;
    loop {
        for _ in 0..256 {
            step()?;
        }
        count += 256;
        let spent = thread_cpu_ns()? - start;
        if spent >= budget.as_nanos() as u64 || wall.elapsed() > budget * 20 {
            return Ok(spent as f64 / count as f64);
        }
    }
}
