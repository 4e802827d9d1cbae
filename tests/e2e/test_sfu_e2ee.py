"""End-to-end encryption through rtcbox: the SFU forwards frames it cannot read.

LiveKit's E2EE encrypts each media frame in the client (AES-GCM, a key the server never sees) and
marks the published track `encryption: GCM`. The SFU must forward those frames untouched and carry
the track's encryption type to everyone, or receivers either fail to decrypt or refuse the track.

The official Python SDK (its Rust core and libwebrtc's frame cryptor) is the peer here: two
participants share a key and must hear the tone and see the colour; a third, with another key,
is sent the same packets (its WebRTC stats count them) but hears no tone, sees no colour and
decodes no frame. Together: what flows through rtcbox is encrypted, and it arrives intact.

Then livekit-client, Element Call's SDK, in headless Chromium: two pages with E2EE on (its
frame-cryptor worker, one shared key) decode each other's camera and receive each other's
microphone, and each sees the other's tracks marked encrypted.
"""

import asyncio
import secrets

import numpy as np
from livekit import api, rtc

import lk_helpers as lk
from conftest import require_browser_tooling, run_node_runner
from lk_helpers import API_KEY, API_SECRET, sfu_env
from test_sfu_browser import PEERS, RUNNER_DEADLINE_S, create_room, explain, token

KEY = b"rtcbox e2e: the key alice and bob share"
OTHER_KEY = b"rtcbox e2e: a key nobody else has"


def encrypted(key: bytes) -> rtc.RoomOptions:
    return rtc.RoomOptions(
        auto_subscribe=True,
        encryption=rtc.E2EEOptions(key_provider_options=rtc.KeyProviderOptions(shared_key=key)),
    )


async def collect(stream, seconds: float, convert) -> list:
    """`convert(frame)` of every frame `stream` yields for `seconds` (possibly none): no wait
    for a first one."""
    items: list = []

    async def read() -> None:
        async for event in stream:
            items.append(convert(event.frame))

    try:
        await asyncio.wait_for(read(), seconds)
    except asyncio.TimeoutError:
        pass
    finally:
        await stream.aclose()
    return items


async def listen(track: rtc.Track, seconds: float) -> np.ndarray:
    """Whatever audio the track yields for `seconds` (possibly nothing): no wait for sound."""
    stream = rtc.AudioStream(track, sample_rate=lk.SAMPLE_RATE, num_channels=1)
    chunks = await collect(stream, seconds,
                           lambda frame: np.frombuffer(bytes(frame.data), dtype=np.int16))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


async def watch(track: rtc.Track, seconds: float) -> list[tuple[int, int, int]]:
    """The centre pixels of every frame the track yields for `seconds` (possibly none)."""
    stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA)
    return await collect(stream, seconds, lk.centre_pixel)


async def received(track: rtc.Track) -> tuple[int, int]:
    """(RTP packets received, frames decoded) of the track's inbound streams, from WebRTC's stats."""
    packets = frames = 0
    for stats in await track.get_stats():
        if stats.WhichOneof("stats") == "inbound_rtp":
            packets += stats.inbound_rtp.received.packets_received
            frames += stats.inbound_rtp.inbound.frames_decoded
    return packets, frames


def is_tone(samples: np.ndarray) -> bool:
    if lk.rms(samples) <= lk.SILENCE_RMS * 3:
        return False
    dominant, share = lk.tone_analysis(samples)
    return abs(dominant - lk.TONE_HZ) <= 10 and share >= 0.5


def test_encrypted_media_reaches_key_holders_only(start_rtcbox):
    box = start_rtcbox(sfu_env())
    lk.run(e2ee_scenario(box), box)


async def e2ee_scenario(box):
    room = lk.unique("py-e2ee")
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    alice = bob = carol = None
    try:
        await lk.create_room(lkapi, room)
        token = lambda who: lk.join_token(API_KEY, API_SECRET, who, room)  # noqa: E731
        alice = await lk.join(box.ws_url, token("alice"), "alice", encrypted(KEY))
        bob = await lk.join(box.ws_url, token("bob"), "bob", encrypted(KEY))
        carol = await lk.join(box.ws_url, token("carol"), "carol", encrypted(OTHER_KEY))
        # The SDK's default path: one peer connection each (/rtc/v1).
        assert lk.signaling_of(box) == {"alice": "v1", "bob": "v1", "carol": "v1"}

        published = await lk.publish_media(alice)

        # The server carries the publisher's encryption type to the subscribers...
        for peer in (bob, carol):
            await peer.log.wait_for("track_published", lk.is_from("alice"), "for alice's tracks")
            alice_seen = peer.room.remote_participants["alice"]
            await lk.wait_subscribed(peer, "alice", rtc.TrackKind.KIND_AUDIO)
            await lk.wait_subscribed(peer, "alice", rtc.TrackKind.KIND_VIDEO)
            types = {sid: pub.encryption_type for sid, pub in alice_seen.track_publications.items()}
            assert types == {published.audio.sid: rtc.EncryptionType.GCM,
                             published.video.sid: rtc.EncryptionType.GCM}, \
                f"{peer.label} sees alice's tracks as {types}"

        # ... and in ListParticipants.
        participants = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        tracks = next(p.tracks for p in participants.participants if p.identity == "alice")
        assert {t.sid: t.encryption for t in tracks} == {
            published.audio.sid: api.Encryption.GCM, published.video.sid: api.Encryption.GCM,
        }, f"rtcbox lost the tracks' encryption type: {tracks}"

        # Bob holds the key: the tone and the colour, decrypted.
        await lk.assert_media_flows(bob, "alice")

        # Carol gets the same stream with another key: no tone, not the colour.
        audio = await lk.wait_subscribed(carol, "alice", rtc.TrackKind.KIND_AUDIO)
        video = await lk.wait_subscribed(carol, "alice", rtc.TrackKind.KIND_VIDEO)
        before = await asyncio.gather(received(audio), received(video))
        samples, pixels = await asyncio.gather(listen(audio, 3.0), watch(video, 3.0))
        after = await asyncio.gather(received(audio), received(video))
        # The packets did reach her (so what follows is about keys, not delivery)...
        for kind, (b, a) in zip(("audio", "video"), zip(before, after)):
            assert a[0] - b[0] >= 20, f"carol received {a[0] - b[0]} {kind} packets in 3 s"
        # ... and they were of no use to her.
        assert not is_tone(samples), "carol heard alice's tone without alice's key"
        assert not any(lk.colour_close(p) for p in pixels), \
            f"carol saw alice's colour without alice's key: {pixels[:5]}"
        assert after[1][1] == before[1][1], \
            f"carol decoded {after[1][1] - before[1][1]} video frames without alice's key"
    finally:
        await lk.leave_all(alice, bob, carol)
        await lkapi.aclose()


def test_livekit_client_pages_decrypt_each_other(start_rtcbox, tmp_path):
    require_browser_tooling(("livekit-client", "playwright-core"))
    key, secret = "APIbrowsere2ee", secrets.token_urlsafe(32)
    box = start_rtcbox({"RTCBOX_API_KEY": key, "RTCBOX_API_SECRET": secret})
    room = "!e2ee:localhost"
    asyncio.run(create_room(box.url, key, secret, room))
    shared = secrets.token_urlsafe(24)
    config = {
        "wsUrl": box.ws_url,
        "peers": [{"identity": p, "token": token(key, secret, p, room), "e2eeKey": shared}
                  for p in PEERS],
        "profile": "element-call",
        "observeMs": 6000,
        "minFrames": 10,
        "minAudioPackets": 10,
        "deadlineMs": RUNNER_DEADLINE_S * 1000,
    }
    report, stderr, _ = run_node_runner("run.mjs", config, tmp_path, "browser-e2ee",
                                        RUNNER_DEADLINE_S)
    why = explain(report, stderr, box, tmp_path / "browser-e2ee-report.json")
    # The runner's verdict: every page connected, published, and decoded the other's camera
    # frames and received its microphone (with E2EE on, a frame it cannot decrypt is dropped
    # before the decoder, so decoded frames mean decrypted frames).
    assert report["ok"], why
    for peer in report["peers"]:
        seen = peer.get("stateBeforeLeave") or {}
        assert seen.get("e2eeEnabled") is True, f"{peer['identity']} has E2EE off\n{why}"
        tracks = [t for r in seen.get("remote", []) for t in r["tracks"]]
        assert {t["kind"] for t in tracks} == {"audio", "video"}, f"{peer['identity']}: {tracks}\n{why}"
        assert all(t["encrypted"] for t in tracks), \
            f"{peer['identity']} sees unencrypted remote tracks: {tracks}\n{why}"
