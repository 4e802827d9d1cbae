//! `rtcbox loadtest` as CI runs it: every scenario briefly at a tiny size against the real
//! binary. Counts and fields only, never a time or a throughput (those live in
//! docs/benchmarks.md).

use std::process::Command;

use serde_json::Value;

/// Loopback loses nothing by itself, but this machine's cores are shared with parallel tests:
/// a load-test process not scheduled for a while can overflow a socket buffer. 1% of frames
/// allows that and still fails a forwarding path that drops a layer or a track's packets.
const LOSS_TOLERANCE: f64 = 0.01;

/// (publisher, "audio" | "video") pairs a participant must receive in each scenario of the
/// run below (2 publishers / participants, 2 subscribers), worked out from the scenario's
/// definition rather than read from the report.
fn expected(scenario: &str, participant: u64) -> Vec<(u64, &'static str)> {
    match (scenario, participant) {
        ("audio", 2 | 3) => vec![(0, "audio"), (1, "audio")],
        ("meeting", 0) => vec![(1, "audio"), (1, "video")],
        ("meeting", 1) => vec![(0, "audio"), (0, "video")],
        ("livestream", 1 | 2) => vec![(0, "audio"), (0, "video")],
        _ => Vec::new(),
    }
}

fn number(value: &Value, what: &str) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

#[test]
fn every_scenario_delivers_every_stream_to_every_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let run = Command::new(env!("CARGO_BIN_EXE_rtcbox"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", dir.path())
        .args(["loadtest", "audio", "meeting", "livestream"])
        .args([
            "--publishers",
            "2",
            "--subscribers",
            "2",
            "--duration",
            "1s",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "loadtest failed: {stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(number(&report["server"]["idle_rss_bytes"], "idle RSS") > 0.0);
    // The floor sends as an SFU does, to several destinations from one socket.
    for cost in report["floor"].as_array().unwrap() {
        assert!(
            number(&cost["receivers"], "floor receivers") >= 2.0,
            "{cost}"
        );
        assert!(number(&cost["protect_send_ns"], "floor protect + send") > 0.0);
    }
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audio", "meeting", "livestream"]);
    for s in scenarios {
        let name = s["scenario"].as_str().unwrap();
        assert_eq!(s["errors"], Value::Array(Vec::new()), "{name}");
        let detail = s["participant_detail"].as_array().unwrap();
        let mut frames = 0.0;
        let mut lost = 0.0;
        for p in detail {
            let me = p["participant"].as_u64().unwrap();
            assert!(p["join_ms"].is_number(), "{name}: {me} never joined");
            let received = p["received"].as_array().unwrap();
            for (publisher, kind) in expected(name, me) {
                let got: Vec<&Value> = received
                    .iter()
                    .filter(|r| {
                        r["publisher"].as_u64() == Some(publisher)
                            && r["stream"].as_str().unwrap().starts_with(kind)
                    })
                    .collect();
                assert!(
                    got.iter().any(|r| r["frames"].as_u64() > Some(0)),
                    "{name}: participant {me} got no {kind} from {publisher}: {received:?}"
                );
                for r in got {
                    assert!(r["packets"].as_u64() >= r["frames"].as_u64(), "{r}");
                }
            }
            // Nobody receives what it should not: its own media, or from a non-publisher.
            for r in received {
                let publisher = r["publisher"].as_u64().unwrap();
                let kind = if r["stream"].as_str().unwrap() == "audio" {
                    "audio"
                } else {
                    "video"
                };
                assert!(
                    expected(name, me).contains(&(publisher, kind)),
                    "{name}: participant {me} received {r}"
                );
                frames += number(&r["frames"], "frames");
                lost += number(&r["lost_frames"], "lost frames");
            }
        }
        assert!(frames > 0.0, "{name}: nothing received");
        assert!(
            lost / (frames + lost) <= LOSS_TOLERANCE,
            "{name}: lost {lost} of {} frames",
            frames + lost
        );
        assert!(number(&s["latency_ms"]["audio"]["p50"], "audio p50") >= 0.0);
        assert!(number(&s["latency_ms"]["audio"]["p99"], "audio p99") >= 0.0);
        if name != "audio" {
            assert!(number(&s["latency_ms"]["video"]["p50"], "video p50") >= 0.0);
        }
        assert!(number(&s["server"]["packets_forwarded"], "forwarded") > 0.0);
        assert!(number(&s["server"]["forwarded_per_cpu_second"], "per CPU-s") > 0.0);
        assert!(number(&s["floor"]["forwarded_per_cpu_second"], "floor") > 0.0);
        assert!(
            s["floor"]["ratio"].is_number(),
            "{name}: no ratio to the floor"
        );
        assert!(number(&s["server"]["rss_bytes"], "RSS") > 0.0);
        // The person watching gets the scenario's verdict on stderr, healthy here.
        let participants = s["participants"].as_u64().unwrap();
        let line = stderr
            .lines()
            .map(|l| l.rsplit('\r').next().unwrap_or(l))
            .find(|l| l.starts_with(&format!("{name}: {participants} participants,")))
            .unwrap_or_else(|| panic!("{name}: no summary line on stderr: {stderr}"));
        assert!(line.contains("% of the floor"), "{line}");
        assert!(!line.contains("UNHEALTHY"), "{line}");
    }
}

/// coturn's tools, or why this test cannot run: a failure under CI, a skip elsewhere.
fn coturn_tools_present() -> bool {
    let found = ["turnutils_uclient", "turnutils_peer", "turnserver"]
        .iter()
        .all(|tool| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|dir| dir.join(tool).is_file())
        });
    assert!(
        found || std::env::var_os("CI").is_none(),
        "coturn's tools are missing: apt-get install coturn (.ci/run does)"
    );
    found
}

#[test]
fn the_turn_comparison_relays_every_message_through_both_servers() {
    if !coturn_tools_present() {
        eprintln!("skipped: coturn's tools are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let run = Command::new(env!("CARGO_BIN_EXE_rtcbox"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", dir.path())
        .args([
            "loadtest",
            "audio",
            "--publishers",
            "1",
            "--subscribers",
            "1",
        ])
        .args(["--duration", "1s", "--turn", "--turn-clients", "3"])
        .args(["--turn-messages", "20"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "loadtest failed: {stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let turn = &report["turn"];
    for server in ["rtcbox", "coturn"] {
        let s = &turn[server];
        // uclient's 3 clients × 20 messages, each echoed back by the peer through the relay.
        assert_eq!(s["messages_sent"], 60, "{server}: {s}");
        assert_eq!(s["messages_returned"], 60, "{server}: {s}");
        assert_eq!(s["relayed_packets"], 120, "{server}: {s}");
        assert!(number(&s["relayed_per_cpu_second"], "per CPU-s") > 0.0);
        assert!(s["rss_per_allocation_bytes"].is_u64(), "{server}: {s}");
    }
    assert!(turn["ratio_relayed_per_cpu_second"].is_number(), "{turn}");
    assert!(turn["ratio_rss_per_allocation"].is_number(), "{turn}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("turn: rtcbox ") && l.ends_with("x coturn per CPU-second")),
        "no TURN summary line on stderr: {stderr}"
    );
}
