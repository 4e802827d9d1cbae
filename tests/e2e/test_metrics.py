"""`/metrics` on the admin listener, read the way Prometheus reads it: with a bearer token, parsed
by the Prometheus project's own text parser (`prometheus_client`), during a real call between two
unmodified LiveKit Python SDK participants.

The counters must move with the call: participants and tracks while it runs, packets and bytes
forwarded growing, a forwarded bitrate, and everyone gone after the leave.
"""

import asyncio

import requests
from livekit import rtc
from prometheus_client.parser import text_string_to_metric_families

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET, sfu_env

TOKEN = "metrics-e2e-token-0123456789abcdef"


def scrape(box, token: str | None = TOKEN) -> dict:
    """Every sample as {(name, sorted labels): value}, through prometheus_client's parser."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(f"{box.admin_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def until(box, what: str, check, timeout: float = lk.WAIT) -> dict:
    """Scrapes until `check(samples)` holds; returns those samples."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, box)
        if check(samples):
            return samples
        if loop.time() > deadline:
            raise AssertionError(f"/metrics never showed {what}")
        await asyncio.sleep(0.3)


def test_metrics_need_the_token_and_follow_a_real_call(start_rtcbox):
    box = start_rtcbox(dict(sfu_env(), RTCBOX_METRICS_TOKEN=TOKEN))
    refused = requests.get(f"{box.admin_url}/metrics", timeout=10)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    wrong = requests.get(f"{box.admin_url}/metrics",
                         headers={"Authorization": "Bearer not-the-token-0123456789"}, timeout=10)
    assert wrong.status_code == 401

    before = scrape(box)
    build = [labels for (name, labels) in before if name == "rtcbox_build_info"]
    assert len(build) == 1 and dict(build[0])["version"], build
    assert value(before, "rtcbox_sfu_participants") == 0
    assert ("rtcbox_turn_allocations", ()) in before
    assert ("rtcbox_public_ip_changes_total", ()) in before
    lk.run(call(box, before), box)
    assert TOKEN not in box.log_text()


async def call(box, before: dict):
    room = lk.unique("metrics")
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    alice = bob = None
    try:
        await lk.create_room(lkapi, room)
        options = rtc.RoomOptions(auto_subscribe=True)
        alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice", options)
        bob = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "bob", room), "bob", options)
        await lk.publish_media(alice)
        await lk.assert_media_flows(bob, "alice")

        forwarded = "rtcbox_sfu_packets_forwarded_total"
        during = await until(
            box, "two participants, two tracks and forwarded media",
            lambda s: value(s, "rtcbox_sfu_participants") == 2
            and value(s, "rtcbox_sfu_tracks") == 2
            and value(s, "rtcbox_sfu_rooms") == 1
            and value(s, "rtcbox_sfu_bitrate_bits_per_second", direction="forwarded") > 0)
        assert value(during, forwarded) > value(before, forwarded)
        assert value(during, "rtcbox_sfu_forwarded_bytes_total") > value(before, "rtcbox_sfu_forwarded_bytes_total")
        assert value(during, "rtcbox_sfu_packets_received_total") >= value(during, forwarded)
        # The call goes on: the totals keep growing.
        later = await until(box, "more packets forwarded",
                            lambda s: value(s, forwarded) > value(during, forwarded))
        assert value(later, "rtcbox_sfu_received_bytes_total") > value(during, "rtcbox_sfu_received_bytes_total")
        # Loopback loses nothing, so the loss counters are only there (the SFU harness makes
        # them move); the bitrate gauges have both directions.
        for direction in ("from_subscribers", "to_publishers"):
            assert ("rtcbox_sfu_nacks_total", (("direction", direction),)) in later
        assert value(later, "rtcbox_sfu_bitrate_bits_per_second", direction="received") > 0

        await lk.leave_all(alice, bob)
        alice = bob = None
        await until(box, "everyone gone", lambda s: value(s, "rtcbox_sfu_participants") == 0
                    and value(s, "rtcbox_sfu_tracks") == 0)
    finally:
        await lk.leave_all(alice, bob)
        await lkapi.aclose()
