"""Browser end-to-end: two livekit-client pages (the SDK Element Call uses) in headless Debian
Chromium hold a call through rtcbox; each decodes the other's camera and receives its microphone.

The pages are driven by tests/browser/run.mjs (playwright-core), served from their own loopback
HTTP server, so they are cross-origin to rtcbox as Element Call is. The Room options are Element
Call's (adaptive stream, dynacast, VP8 simulcast h180/h360/h720, Opus with DTX, no RED).
Needs: node, `npm ci` in tests/browser (tests/run.sh does it) and Debian's chromium (.ci/run
installs it). Outside CI a missing prerequisite skips the test; in CI it fails it.
"""

import asyncio
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

import lk_helpers as lk
from conftest import BROWSER_DIR, CHROMIUM, require_browser_tooling, run_node_runner

RUNNER_DEADLINE_S = 90

# Identities and room as lk-jwt-service mints them for Element Call: Matrix user ID plus device.
ROOM = "!browsercall:localhost"
PEERS = ["@alice:localhost:ALICEDEVICE", "@bob:localhost:BOBDEVICE"]


async def create_room(url: str, key: str, secret: str, name: str):
    from livekit import api

    async with api.LiveKitAPI(url, key, secret) as lk:
        return await asyncio.wait_for(lk.room.create_room(api.CreateRoomRequest(name=name)), 30)


def token(key: str, secret: str, identity: str, room: str) -> str:
    from livekit import api

    return (api.AccessToken(key, secret)
            .with_identity(identity)
            .with_name(identity.split(":")[0].lstrip("@"))
            .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True,
                                         can_subscribe=True, can_publish_data=True))
            .to_jwt())


def explain(report: dict, stderr: str, box, report_file: Path) -> str:
    """What to read when the call failed: verdict, each page's errors, events and network."""
    lines = [f"full report: {report_file}",
             "runner errors: " + json.dumps(report.get("errors"), indent=1),
             "hints: " + json.dumps(report.get("hints"), indent=1), "runner steps:", stderr]
    for peer in report.get("peers", []):
        lines.append(f"--- {peer.get('identity')}: connected={peer.get('connected')} "
                     f"published={peer.get('published')} remote={peer.get('remoteIdentities')}")
        lines.append("errors: " + json.dumps(peer.get("errors"), indent=1))
        lines.append("from peers: " + json.dumps(peer.get("fromPeers"), indent=1))
        lines.append("network: " + json.dumps(peer.get("network"), indent=1))
        lines.append("events (last 80): " + json.dumps((peer.get("events") or [])[-80:], indent=1))
        lines.append("console errors/warnings: " + json.dumps(peer.get("consoleErrors"), indent=1))
        lines.append("last stats: " + json.dumps(peer.get("lastStats"), indent=1))
    lines.append("--- rtcbox log (tail):\n" + box.log_text()[-6000:])
    return "\n".join(lines)


def test_browser_environment(tmp_path):
    """No server: the page loads livekit-client, the fake camera and microphone give live tracks,
    and a call between two RTCPeerConnections in one page decodes video and receives audio. When
    this fails, the call test below says nothing about rtcbox."""
    require_browser_tooling(("livekit-client", "playwright-core"))
    env = dict(os.environ, RTCBOX_CHROMIUM=CHROMIUM)
    done = subprocess.run(["node", "run.mjs", "--selftest"], cwd=BROWSER_DIR, env=env,
                          capture_output=True, text=True, timeout=RUNNER_DEADLINE_S + 30)
    (tmp_path / "selftest-report.json").write_text(done.stdout)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"runner exited {done.returncode} without a report:\n{done.stdout[-4000:]}\n"
                    f"{done.stderr[-4000:]}")
    assert report["versions"].get("livekitClient"), report
    assert report["ok"], json.dumps({k: report.get(k) for k in (
        "errors", "localTracks", "loopbackGrowth", "peers")}, indent=1)[:20000]


@pytest.mark.parametrize("single_pc", [True, False], ids=["v1-default", "v0-dual-pc"])
def test_two_browsers_call_through_rtcbox(start_rtcbox, tmp_path, single_pc):
    """livekit-client's default (one peer connection through /rtc/v1, as Element Call joins)
    and its dual-PC mode (/rtc, `singlePeerConnection: false`)."""
    require_browser_tooling(("livekit-client", "playwright-core"))
    key, secret = "APIbrowsertest", secrets.token_urlsafe(32)
    box = start_rtcbox({"RTCBOX_API_KEY": key, "RTCBOX_API_SECRET": secret,
                        "RTCBOX_FULL_ACCESS_HOMESERVERS": "*"})
    try:
        asyncio.run(create_room(box.url, key, secret, ROOM))
    except Exception as e:  # noqa: BLE001 - report what the Twirp call got, with the server's log
        pytest.fail(f"Twirp CreateRoom failed: {e!r}\nrtcbox log:\n{box.log_text()[-4000:]}")

    config = {
        "wsUrl": box.ws_url,
        "peers": [{"identity": p, "token": token(key, secret, p, ROOM)} for p in PEERS],
        "profile": "element-call",
        "roomOptions": {} if single_pc else {"singlePeerConnection": False},
        "observeMs": 6000,
        "minFrames": 10,
        "minAudioPackets": 10,
        "deadlineMs": RUNNER_DEADLINE_S * 1000,
    }
    report, stderr, _ = run_node_runner("run.mjs", config, tmp_path, "browser",
                                        RUNNER_DEADLINE_S)
    why = explain(report, stderr, box, tmp_path / "browser-report.json")

    peers = {p["identity"]: p for p in report["peers"]}
    assert sorted(peers) == sorted(PEERS), why
    # Each page joined on the path it was meant to, with no fallback from /rtc/v1 to /rtc.
    path = "v1" if single_pc else "v0"
    assert lk.signaling_of(box) == {p: path for p in PEERS}, why
    for me in PEERS:
        (other,) = [p for p in PEERS if p != me]
        peer = peers[me]
        assert peer["connected"], f"{me} did not connect\n{why}"
        assert peer["published"], f"{me} could not publish camera and microphone\n{why}"
        assert other in peer["remoteIdentities"], f"{me} does not see {other}\n{why}"
        received = (peer.get("fromPeers") or {}).get(other, {})
        frames = received.get("videoFramesDecoded", [0, 0])
        assert frames[1] - frames[0] >= 10, f"{me} decoded too few frames of {other}: {frames}\n{why}"
        packets = received.get("audioPacketsReceived", [0, 0])
        assert packets[1] - packets[0] >= 10, f"{me} got too few audio packets of {other}: {packets}\n{why}"
    # Adaptive stream and dynacast, as Element Call runs them: the pages' tiles are small
    # (a <video> without CSS is 300x150), so each subscriber asks for a small layer; rtcbox
    # forwards that one and asks each publisher to stop its unwatched 720p layer, which
    # livekit-client does (the encoding goes inactive).
    for identity, peer in peers.items():
        last = peer.get("lastStats") or {}
        layers = {s.get("rid"): s for s in last.get("outbound", []) if s.get("kind") == "video"}
        assert set(layers) == {"q", "h", "f"}, f"{identity} publishes {sorted(map(str, layers))}\n{why}"
        assert layers["q"].get("active") is True, f"{identity}'s low layer was paused\n{why}"
        assert layers["f"].get("active") is False, \
            f"{identity}'s unwatched 720p layer is still encoded (dynacast)\n{why}"
        widths = [s.get("frameWidth") for s in last.get("inbound", []) if s.get("kind") == "video"]
        assert widths and all(w and w < 1280 for w in widths), \
            f"{identity} receives the 720p layer for a small tile: {widths}\n{why}"
    assert report["ok"], why


def test_browser_subscriber_gets_the_simulcast_layer_it_asks_for(start_rtcbox, tmp_path):
    """A livekit-client subscriber with adaptive stream off asks for the high layer of the other
    page's camera (which also waits out the publishing browser's bandwidth ramp-up: it encodes
    720p only once its estimate allows), then the low one, then high again: the frames its
    browser decodes have the width the publishing browser encodes that layer at (both read from
    the browsers' own stats). The time each switch took is printed, not asserted."""
    require_browser_tooling(("livekit-client", "playwright-core"))
    key, secret = "APIbrowsertest", secrets.token_urlsafe(32)
    box = start_rtcbox({"RTCBOX_API_KEY": key, "RTCBOX_API_SECRET": secret,
                        "RTCBOX_FULL_ACCESS_HOMESERVERS": "*"})
    asyncio.run(create_room(box.url, key, secret, ROOM))
    subscriber, publisher = PEERS
    deadline_s = RUNNER_DEADLINE_S + 150
    config = {
        "wsUrl": box.ws_url,
        "peers": [{"identity": p, "token": token(key, secret, p, ROOM)} for p in PEERS],
        "profile": "element-call",
        "roomOptions": {"adaptiveStream": False},
        "observeMs": 1000,
        "minFrames": 1,
        "minAudioPackets": 1,
        "qualitySwitch": {"subscriber": subscriber, "publisher": publisher,
                          "steps": ["high", "low", "high"], "timeoutMs": 45000},
        "deadlineMs": deadline_s * 1000,
    }
    report, stderr, _ = run_node_runner("run.mjs", config, tmp_path, "simulcast", deadline_s)
    why = explain(report, stderr, box, tmp_path / "simulcast-report.json")
    steps = report.get("qualitySwitches") or []
    assert [s["quality"] for s in steps] == ["high", "low", "high"], why
    for step in steps:
        print(f"{step['quality']}: reached={step['reached']} after {step.get('ms')} ms: "
              f"{step.get('last')}")
    for step in steps:
        assert step["tracks"] == 1, f"no camera of {publisher} to ask for\n{why}"
        assert step["reached"], (f"{subscriber} asked for {step['quality']} and did not get the "
                                 f"{step['rid']} layer's width: {step['samples'][-5:]}\n{why}")
    low, high = steps[1]["last"], steps[2]["last"]
    assert low["width"] == low["layers"]["q"]["width"], why
    assert high["width"] == high["layers"]["f"]["width"] > low["width"], why
    assert report["ok"], why
