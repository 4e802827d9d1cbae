//! `rtcbox loadtest`: many LiveKit-protocol clients in one process against a real `rtcbox serve`
//! started as a child process on loopback, in scenarios shaped like LiveKit's published load
//! tests (audio N publishers × M subscribers, meeting N×N, livestream 1×N). Each report gives
//! what the subscribers received (counts, loss, reordering, forwarding latency, join times),
//! the server's own CPU seconds and memory from /proc, its forwarded packets per CPU-second
//! and the ratio to the floor measured in the same run ([`floor`]).
//!
//! Progress and a summary line per scenario go to stderr, the JSON result to stdout or `--out`.
//! The exit status is 1 when a client failed, a subscriber missed a stream it should have
//! received, or the TURN comparison failed.

pub mod client;
pub mod floor;
pub mod server;
pub mod turn;

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::cli::LoadtestArgs;
use crate::config::ApiKey;
use crate::livekit::token::{self, VideoGrant};
use crate::secret::Secret;
use client::{ClientReport, Phase, Role, Shared};
use server::Server;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// N audio publishers, M listeners.
    Audio,
    /// N participants, each publishing audio and 3-layer video and receiving everyone else.
    Meeting,
    /// One publisher of audio and 3-layer video, M viewers.
    Livestream,
}

/// Payload bytes of the packets the floor is measured for: an Opus frame, a full video packet.
const FLOOR_AUDIO_BYTES: usize = 100;
const FLOOR_VIDEO_BYTES: usize = 1_100;
/// Time after everyone joined before measuring: keyframes and layer choice settle.
const SETTLE: Duration = Duration::from_secs(1);
const JOIN_LIMIT: Duration = Duration::from_secs(60);

pub async fn run(args: &LoadtestArgs) -> anyhow::Result<ExitCode> {
    str0m::crypto::from_feature_flags().install_process_default();
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    eprintln!("loadtest: measuring the floor (SRTP + send on loopback, one core)");
    let budget = Duration::from_millis(300);
    let (floor_audio, floor_video) = tokio::task::spawn_blocking(move || {
        anyhow::Ok((
            floor::measure(FLOOR_AUDIO_BYTES, budget)?,
            floor::measure(FLOOR_VIDEO_BYTES, budget)?,
        ))
    })
    .await??;
    eprintln!("loadtest: starting {} serve", bin.display());
    let server = Server::start(&bin).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = server.rss_bytes()?;
    let mut healthy = true;
    // TURN first, while the server is idle: memory the SFU scenarios freed stays in the
    // process and would hide what allocations cost. A failure is reported, not fatal.
    let turn = if args.turn {
        match turn::compare(&server, args.turn_clients, args.turn_messages).await {
            Ok(result) => {
                eprintln!("{}", turn_line(&result));
                Some(result)
            }
            Err(error) => {
                healthy = false;
                eprintln!("loadtest: the TURN comparison failed: {error:#}");
                Some(json!({ "error": format!("{error:#}") }))
            }
        }
    } else {
        None
    };
    let mut results = Vec::new();
    for (n, scenario) in args.scenarios.iter().enumerate() {
        let result = run_scenario(
            &server,
            *scenario,
            args,
            &format!("{}-{n}", scenario_name(*scenario)),
            (&floor_audio, &floor_video),
        )
        .await
        .with_context(|| format!("scenario {}", scenario_name(*scenario)))?;
        healthy &= result["healthy"].as_bool().unwrap_or(false);
        eprintln!("{}", scenario_line(&result));
        results.push(result);
        // Let the room close and memory settle between scenarios.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let report = json!({
        "machine": machine(),
        "server": {
            "binary": bin.display().to_string(),
            "idle_rss_bytes": idle_rss,
        },
        "floor": [floor_audio, floor_video],
        "scenarios": results,
        "turn": turn,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match &args.out {
        Some(path) => std::fs::write(path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn scenario_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Audio => "audio",
        Scenario::Meeting => "meeting",
        Scenario::Livestream => "livestream",
    }
}

/// Who joins in a scenario.
fn roles(scenario: Scenario, publishers: u32, subscribers: u32) -> Vec<Role> {
    let role = |index, audio, video, subscribe| Role {
        index,
        publish_audio: audio,
        publish_video: video,
        subscribe,
    };
    match scenario {
        Scenario::Audio => (0..publishers)
            .map(|i| role(i, true, false, false))
            .chain((publishers..publishers + subscribers).map(|i| role(i, false, false, true)))
            .collect(),
        Scenario::Meeting => (0..publishers).map(|i| role(i, true, true, true)).collect(),
        Scenario::Livestream => std::iter::once(role(0, true, true, false))
            .chain((1..=subscribers).map(|i| role(i, false, false, true)))
            .collect(),
    }
}

/// The (publisher, kind) pairs a subscriber should receive: kind 0 audio, 1 video (any layer).
fn expected(roles: &[Role], me: &Role) -> BTreeSet<(u32, u8)> {
    let mut set = BTreeSet::new();
    if !me.subscribe {
        return set;
    }
    for other in roles.iter().filter(|r| r.index != me.index) {
        if other.publish_audio {
            set.insert((other.index, 0));
        }
        if other.publish_video {
            set.insert((other.index, 1));
        }
    }
    set
}

async fn run_scenario(
    server: &Server,
    scenario: Scenario,
    args: &LoadtestArgs,
    room: &str,
    (floor_audio, floor_video): (&floor::FloorCost, &floor::FloorCost),
) -> anyhow::Result<serde_json::Value> {
    let name = scenario_name(scenario);
    let roles = roles(scenario, args.publishers, args.subscribers);
    let participants = roles.len() as u32;
    let key = ApiKey::parse(&server.api_key).map_err(anyhow::Error::msg)?;
    let secret = Secret::new(server.api_secret.clone());
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let (phase_tx, phase_rx) = watch::channel(Phase::Warmup);
    let joined = Arc::new(AtomicU32::new(0));
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        phase: phase_rx,
        joined: joined.clone(),
    });
    let rss_before = server.rss_bytes()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for role in &roles {
        let grant = VideoGrant {
            room_join: true,
            room: room.into(),
            ..Default::default()
        };
        let identity = format!("{name}-{}", role.index);
        let token = token::mint(
            &key,
            &secret,
            &identity,
            grant,
            Duration::from_secs(3600),
            now_unix,
        )?;
        tasks.push(tokio::spawn(client::run(
            server.signal,
            token,
            role.clone(),
            shared.clone(),
        )));
    }
    // Everyone joins at once; wait until every peer connection is up.
    let mut all_joined_after = None;
    while start.elapsed() < JOIN_LIMIT {
        let n = joined.load(Ordering::Relaxed);
        eprint!("\r{name}: {n}/{participants} joined   ");
        if n >= participants {
            all_joined_after = Some(start.elapsed());
            break;
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let cpu_before = server.cpu_seconds()?;
    let packets_before = server.sfu_packets().await?;
    let measure_start = Instant::now();
    phase_tx.send_replace(Phase::Measure);
    let mut rss_peak = server.rss_bytes()?;
    while measure_start.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(server.rss_bytes()?);
        let cpu = server.cpu_seconds()? - cpu_before;
        eprint!(
            "\r{name}: measuring {:.0}/{:.0} s, server CPU {:.0}%   ",
            measure_start.elapsed().as_secs_f64(),
            args.duration.as_secs_f64(),
            100.0 * cpu / measure_start.elapsed().as_secs_f64()
        );
    }
    let window = measure_start.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu_before;
    let packets_after = server.sfu_packets().await?;
    phase_tx.send_replace(Phase::Stop);
    eprintln!();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.context("a client task")?);
    }
    Ok(summarize(Summary {
        scenario,
        roles: &roles,
        reports: &reports,
        window,
        all_joined_after,
        server_cpu: cpu,
        received: packets_after.received - packets_before.received,
        forwarded: packets_after.forwarded - packets_before.forwarded,
        rss_before,
        rss_peak,
        floor_audio,
        floor_video,
    }))
}

struct Summary<'a> {
    scenario: Scenario,
    roles: &'a [Role],
    reports: &'a [ClientReport],
    window: f64,
    all_joined_after: Option<Duration>,
    server_cpu: f64,
    received: u64,
    forwarded: u64,
    rss_before: u64,
    rss_peak: u64,
    floor_audio: &'a floor::FloorCost,
    floor_video: &'a floor::FloorCost,
}

fn summarize(s: Summary<'_>) -> serde_json::Value {
    let participants = s.roles.len() as u64;
    let publishers = s
        .roles
        .iter()
        .filter(|r| r.publish_audio || r.publish_video)
        .count();
    let subscribers = s.roles.iter().filter(|r| r.subscribe).count();
    let mut missing = Vec::new();
    let mut expected_total = 0;
    let (mut frames, mut packets, mut lost, mut reordered) = (0u64, 0u64, 0u64, 0u64);
    let (mut audio_packets, mut video_packets) = (0u64, 0u64);
    let mut audio_latency = Vec::new();
    let mut video_latency = Vec::new();
    let mut joins = Vec::new();
    let mut errors = Vec::new();
    let mut keyframe_requests = 0;
    let mut detail = Vec::new();
    for (role, report) in s.roles.iter().zip(s.reports) {
        detail.push(json!({
            "participant": role.index,
            "publishes_audio": role.publish_audio,
            "publishes_video": role.publish_video,
            "subscribes": role.subscribe,
            "join_ms": report.join.map(|d| d.as_secs_f64() * 1000.0),
            "frames_sent": report.frames_sent,
            "received": report.streams.iter().map(|((publisher, stream), stats)| json!({
                "publisher": publisher,
                "stream": stream_name(*stream),
                "frames": stats.frames,
                "packets": stats.packets,
                "lost_frames": stats.lost(),
                "reordered_frames": stats.reordered,
            })).collect::<Vec<_>>(),
        }));
        let want = expected(s.roles, role);
        expected_total += want.len();
        for (publisher, kind) in &want {
            let got = report
                .streams
                .keys()
                .any(|(p, stream)| p == publisher && (*stream == 0) == (*kind == 0));
            if !got {
                missing.push(format!("{} from {}", role.index, publisher));
            }
        }
        for ((_, stream), stats) in &report.streams {
            frames += stats.frames;
            packets += stats.packets;
            lost += stats.lost();
            reordered += stats.reordered;
            if *stream == 0 {
                audio_packets += stats.packets;
            } else {
                video_packets += stats.packets;
            }
        }
        audio_latency.extend_from_slice(&report.audio_latency_us);
        video_latency.extend_from_slice(&report.video_latency_us);
        if let Some(join) = report.join {
            joins.push(join.as_micros() as u32);
        }
        if let Some(error) = &report.error {
            errors.push(format!("participant {}: {error}", role.index));
        }
        keyframe_requests += report.keyframe_requests;
    }
    let fanout = s.forwarded as f64 / (s.received as f64).max(1.0);
    let audio_share = audio_packets as f64 / ((audio_packets + video_packets) as f64).max(1.0);
    let floor_ns = |f: &floor::FloorCost| 1e9 / f.pps(fanout);
    let floor_pps = 1e9
        / (audio_share * floor_ns(s.floor_audio) + (1.0 - audio_share) * floor_ns(s.floor_video));
    let forwarded_per_cpu = s.forwarded as f64 / s.server_cpu.max(0.01);
    let healthy = errors.is_empty() && missing.is_empty() && s.all_joined_after.is_some();
    json!({
        "scenario": s.scenario,
        "healthy": healthy,
        "participants": participants,
        "publishers": publishers,
        "subscribers": subscribers,
        "window_seconds": s.window,
        "joins": {
            "completed": joins.len(),
            "all_joined_seconds": s.all_joined_after.map(|d| d.as_secs_f64()),
            "per_second": s.all_joined_after.map(|d| participants as f64 / d.as_secs_f64()),
            "join_ms": percentiles(&mut joins),
        },
        "streams": {
            "expected": expected_total,
            "missing": missing,
        },
        "received": {
            "frames": frames,
            "packets": packets,
            "audio_packets": audio_packets,
            "video_packets": video_packets,
            "lost_frames": lost,
            "reordered_frames": reordered,
            "loss_ratio": lost as f64 / ((frames + lost) as f64).max(1.0),
            "keyframe_requests_answered": keyframe_requests,
        },
        "latency_ms": {
            "audio": percentiles(&mut audio_latency),
            "video": percentiles(&mut video_latency),
        },
        "server": {
            "cpu_seconds": s.server_cpu,
            "cpu_percent_of_one_core": 100.0 * s.server_cpu / s.window,
            "packets_received": s.received,
            "packets_forwarded": s.forwarded,
            "fanout": fanout,
            "forwarded_per_cpu_second": forwarded_per_cpu,
            "rss_bytes": s.rss_peak,
            "rss_per_participant_bytes": s.rss_peak.saturating_sub(s.rss_before) / participants.max(1),
        },
        "floor": {
            "audio_share": audio_share,
            "forwarded_per_cpu_second": floor_pps,
            "ratio": forwarded_per_cpu / floor_pps,
        },
        "errors": errors,
        "participant_detail": detail,
    })
}

/// A number of a JSON result, NaN (printed as such) where the result has none.
fn number(value: &serde_json::Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// One line for a person watching the run: the scenario's verdict and headline numbers, read
/// back from its JSON result so the line can never say something the report does not.
fn scenario_line(result: &serde_json::Value) -> String {
    let received = &result["received"];
    let latency = |kind: &str| {
        let l = &result["latency_ms"][kind];
        if l.is_null() {
            String::new()
        } else {
            format!(
                ", {kind} p50/p99 {:.1}/{:.1} ms",
                number(&l["p50"]),
                number(&l["p99"])
            )
        }
    };
    let mut line = format!(
        "{}: {} participants, {} frames received, {} lost; {:.0} forwarded/CPU-s = {:.1}% of the floor{}{}; peak RSS {:.1} MiB",
        result["scenario"].as_str().unwrap_or("?"),
        result["participants"],
        received["frames"],
        received["lost_frames"],
        number(&result["server"]["forwarded_per_cpu_second"]),
        100.0 * number(&result["floor"]["ratio"]),
        latency("audio"),
        latency("video"),
        number(&result["server"]["rss_bytes"]) / 1_048_576.0,
    );
    if !result["healthy"].as_bool().unwrap_or(false) {
        let missing = result["streams"]["missing"].as_array().map_or(0, Vec::len);
        let errors = result["errors"].as_array().map_or(0, Vec::len);
        line.push_str(&format!(
            " -- UNHEALTHY: joined {}, missing streams {missing}, client errors {errors} (details in the JSON)",
            result["joins"]["completed"]
        ));
    }
    line
}

/// The TURN comparison's line, read back from its JSON result like [`scenario_line`].
fn turn_line(result: &serde_json::Value) -> String {
    let side = |name: &str| {
        let s = &result[name];
        format!(
            "{name} {:.0} relayed/CPU-s, {:.1} KB/allocation",
            number(&s["relayed_per_cpu_second"]),
            number(&s["rss_per_allocation_bytes"]) / 1000.0
        )
    };
    format!(
        "turn: {}; {}; {:.2}x coturn per CPU-second",
        side("rtcbox"),
        side("coturn"),
        number(&result["ratio_relayed_per_cpu_second"])
    )
}

/// How the report names a stream of a [`client::Tag`].
fn stream_name(stream: u8) -> &'static str {
    match stream {
        0 => "audio",
        1 => "video-q",
        2 => "video-h",
        3 => "video-f",
        _ => "unknown",
    }
}

/// p50/p95/p99/max in milliseconds of microsecond samples; null without samples.
fn percentiles(samples: &mut [u32]) -> serde_json::Value {
    if samples.is_empty() {
        return serde_json::Value::Null;
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        f64::from(samples[i]) / 1000.0
    };
    json!({"count": samples.len(), "p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)})
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, m)| m.trim().to_owned())
    });
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "rtcbox": crate::VERSION_LINE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(healthy: bool) -> serde_json::Value {
        json!({
            "scenario": "meeting",
            "healthy": healthy,
            "participants": 4,
            "joins": { "completed": 4 },
            "streams": { "expected": 12, "missing": if healthy { json!([]) } else { json!(["2 from 0"]) } },
            "received": { "frames": 1200, "lost_frames": 3 },
            "latency_ms": { "audio": { "p50": 0.42, "p99": 1.96 }, "video": null },
            "server": { "forwarded_per_cpu_second": 123456.7, "rss_bytes": 31_457_280u64 },
            "floor": { "ratio": 0.3312 },
            "errors": [],
        })
    }

    #[test]
    fn the_scenario_line_reads_its_numbers_from_the_result() {
        assert_eq!(
            scenario_line(&result(true)),
            "meeting: 4 participants, 1200 frames received, 3 lost; 123457 forwarded/CPU-s = \
             33.1% of the floor, audio p50/p99 0.4/2.0 ms; peak RSS 30.0 MiB"
        );
    }

    #[test]
    fn an_unhealthy_scenario_says_so_on_its_line() {
        let line = scenario_line(&result(false));
        assert!(
            line.ends_with(
                " -- UNHEALTHY: joined 4, missing streams 1, client errors 0 (details in the JSON)"
            ),
            "{line}"
        );
    }

    #[test]
    fn the_turn_line_gives_both_servers_and_the_ratio() {
        let turn = json!({
            "rtcbox": { "relayed_per_cpu_second": 250000.0, "rss_per_allocation_bytes": 12000 },
            "coturn": { "relayed_per_cpu_second": 200000.0, "rss_per_allocation_bytes": 63000 },
            "ratio_relayed_per_cpu_second": 1.25,
        });
        assert_eq!(
            turn_line(&turn),
            "turn: rtcbox 250000 relayed/CPU-s, 12.0 KB/allocation; coturn 200000 relayed/CPU-s, \
             63.0 KB/allocation; 1.25x coturn per CPU-second"
        );
    }
}
