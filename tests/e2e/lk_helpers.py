"""Shared pieces for the tests that drive rtcbox with the official LiveKit Python SDKs.

- ``livekit`` (``from livekit import rtc``): the real-time client SDK (a wheel carrying LiveKit's
  native Rust/libwebrtc client), used unmodified as a call participant.
- ``livekit-api`` (``from livekit import api``): the official server SDK (tokens and Twirp
  RoomService).

Everything here is loopback only and every wait is bounded: a server that never answers makes a
test fail with a message naming what it was waiting for, never hang.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from livekit import api, rtc

# One bounded wait for anything the server has to make happen (join, subscription, an event).
WAIT = 30.0
# Room.connect retries internally (several attempts of up to 5 s each); bound the whole of it.
CONNECT_WAIT = 60.0

SAMPLE_RATE = 48000
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3  # of int16 full scale: loud enough to survive Opus, no clipping
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms frames, as WebRTC wants them

VIDEO_WIDTH, VIDEO_HEIGHT = 320, 240
VIDEO_FPS = 20
COLOUR = (255, 40, 200)  # a distinctive magenta: nothing a broken pipeline makes by accident
COLOUR_TOLERANCE = 40  # per channel, for the YUV 4:2:0 + VP8 round trip

# Events recorded for every room a test joins (see EventLog).
ROOM_EVENTS = (
    "participant_connected", "participant_disconnected", "track_published", "track_unpublished",
    "track_subscribed", "track_unsubscribed", "track_subscription_failed", "track_muted",
    "track_unmuted", "data_received", "disconnected", "reconnecting", "reconnected",
    "local_track_published", "connection_state_changed", "active_speakers_changed",
    "connection_quality_changed",
)


# The key pair SFU-only tests start rtcbox with (RTCBOX_API_SECRET must be >= 32 characters).
API_KEY = "rtcbox-e2e-key"
API_SECRET = "rtcbox-e2e-secret-0123456789abcdef0123456789"


def sfu_env() -> dict:
    """An SFU-only rtcbox: explicit API key pair, any homeserver allowed, rooms are not created
    on join (RTCBOX_AUTO_CREATE_ROOMS stays at its default, false)."""
    return {"RTCBOX_API_KEY": API_KEY, "RTCBOX_API_SECRET": API_SECRET,
            "RTCBOX_FULL_ACCESS_HOMESERVERS": "*"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- tokens and the server SDK -------------------------------------------------------------------

def join_token(key: str, secret: str, identity: str, room: str,
               ttl: datetime.timedelta = datetime.timedelta(hours=1), **grants: Any) -> str:
    """A standard LiveKit join token, minted with the official server SDK."""
    video = api.VideoGrants(room_join=True, room=room, **grants)
    return (api.AccessToken(key, secret).with_identity(identity).with_name(identity)
            .with_grants(video).with_ttl(ttl).to_jwt())


def server_api(http_url: str, key: str, secret: str) -> api.LiveKitAPI:
    """The official server SDK pointed at rtcbox (Twirp on the signalling port)."""
    return api.LiveKitAPI(http_url, key, secret)


async def create_room(lkapi: api.LiveKitAPI, name: str) -> api.Room:
    try:
        room = await asyncio.wait_for(lkapi.room.create_room(api.CreateRoomRequest(name=name)), WAIT)
    except api.TwirpError as e:
        raise AssertionError(f"Twirp CreateRoom({name!r}) failed: {e}") from None
    assert room.name == name, f"CreateRoom answered a room named {room.name!r}, asked for {name!r}"
    assert room.sid, "CreateRoom answered a room without a sid"
    return room


async def participant_identities(lkapi: api.LiveKitAPI, room: str) -> set[str]:
    response = await asyncio.wait_for(
        lkapi.room.list_participants(api.ListParticipantsRequest(room=room)), WAIT)
    return {p.identity for p in response.participants}


async def room_names(lkapi: api.LiveKitAPI, names: list[str] | None = None) -> list[str]:
    response = await asyncio.wait_for(
        lkapi.room.list_rooms(api.ListRoomsRequest(names=names or [])), WAIT)
    return [r.name for r in response.rooms]


# --- rooms and their events ----------------------------------------------------------------------

class EventLog:
    """Records every event of interest a Room emits, from before connect() on, so a test can
    await "has X happened" without racing the SDK (an event that already fired counts)."""

    def __init__(self, room: rtc.Room, label: str):
        self.label = label
        self.events: list[tuple[str, tuple]] = []
        self._changed = asyncio.Event()
        for name in ROOM_EVENTS:
            room.on(name, lambda *args, _name=name: self._record(_name, args))

    def _record(self, name: str, args: tuple) -> None:
        self.events.append((name, args))
        self._changed.set()

    def mark(self) -> int:
        """A position: wait_for(..., after=mark) only considers events recorded after it."""
        return len(self.events)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    async def wait_for(self, name: str, predicate: Callable[..., bool] = lambda *a: True,
                       what: str = "", after: int = 0, timeout: float = WAIT) -> tuple:
        """Returns the args of the first `name` event (after `after`) that satisfies `predicate`;
        fails the test after `timeout` seconds, listing what did happen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event, args in self.events[after:]:
                if event == name and predicate(*args):
                    return args
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.label}: no '{name}' event {what} within {timeout:.0f} s; "
                    f"events seen: {self.names()[after:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


@dataclass
class Peer:
    label: str
    room: rtc.Room
    log: EventLog
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def identity(self) -> str:
        return self.room.local_participant.identity


async def join(url: str, token: str, label: str,
               options: rtc.RoomOptions | None = None) -> Peer:
    """Connects an unmodified SDK Room; a failure names the peer and the SDK's own error."""
    room = rtc.Room()
    log = EventLog(room, label)
    try:
        await asyncio.wait_for(room.connect(url, token, options or rtc.RoomOptions()), CONNECT_WAIT)
    except rtc.ConnectError as e:
        raise AssertionError(f"{label} could not join via {url}: {e.message}") from None
    except asyncio.TimeoutError:
        raise AssertionError(f"{label} did not finish joining via {url} in {CONNECT_WAIT:.0f} s") from None
    assert room.isconnected(), f"{label}: connect() returned but the room is not connected"
    return Peer(label, room, log)


async def leave_all(*peers: Peer | None) -> None:
    """Best-effort cleanup: stop background tasks and disconnect, never blocking for long."""
    for peer in peers:
        if peer is None:
            continue
        for task in peer.tasks:
            task.cancel()
        for task in peer.tasks:
            try:
                await asyncio.wait_for(task, 5)
            except BaseException:  # noqa: BLE001 - cancelled or failed: either way it is done
                pass
        try:
            await asyncio.wait_for(peer.room.disconnect(), 10)
        except BaseException:  # noqa: BLE001
            pass


def is_from(identity: str) -> Callable[..., bool]:
    """Predicate for events whose participant (or track_subscribed's third arg) is `identity`."""
    def check(*args) -> bool:
        return any(isinstance(a, rtc.Participant) and a.identity == identity for a in args)
    return check


async def wait_subscribed(peer: Peer, publisher: str, kind: int) -> rtc.RemoteTrack:
    """Waits for `peer` to subscribe to `publisher`'s track of `kind`; returns the track."""
    kind_name = rtc.TrackKind.Name(kind)
    track, _publication, _participant = await peer.log.wait_for(
        "track_subscribed",
        lambda track, publication, participant: (participant.identity == publisher
                                                 and track.kind == kind),
        what=f"for {publisher}'s {kind_name} track")
    return track


# --- media: what the publisher sends -------------------------------------------------------------

def tone_chunk(start_sample: int, samples: int = FRAME_SAMPLES, freq: float = TONE_HZ,
               rate: int = SAMPLE_RATE, amplitude: float = TONE_AMPLITUDE) -> np.ndarray:
    """int16 samples of a phase-continuous sine, starting at absolute sample `start_sample`."""
    n = np.arange(start_sample, start_sample + samples, dtype=np.float64)
    return np.round(amplitude * 32767 * np.sin(2 * math.pi * freq * n / rate)).astype(np.int16)


def solid_rgba(colour: tuple[int, int, int] = COLOUR, width: int = VIDEO_WIDTH,
               height: int = VIDEO_HEIGHT) -> bytes:
    return bytes((*colour, 255)) * (width * height)


@dataclass
class Published:
    audio: rtc.LocalTrackPublication | None = None
    video: rtc.LocalTrackPublication | None = None
    audio_track: rtc.LocalAudioTrack | None = None
    video_track: rtc.LocalVideoTrack | None = None


async def publish_media(peer: Peer, audio: bool = True, video: bool = True) -> Published:
    """Publishes a 440 Hz tone (microphone) and/or a solid-colour picture (camera) with the SDK's
    default publish options, and feeds both in real time from background tasks on `peer`."""
    out = Published()
    if audio:
        source = rtc.AudioSource(SAMPLE_RATE, 1)
        out.audio_track = rtc.LocalAudioTrack.create_audio_track("tone", source)
        out.audio = await asyncio.wait_for(peer.room.local_participant.publish_track(
            out.audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)),
            WAIT)
        peer.tasks.append(asyncio.create_task(_feed_tone(source)))
    if video:
        source = rtc.VideoSource(VIDEO_WIDTH, VIDEO_HEIGHT)
        out.video_track = rtc.LocalVideoTrack.create_video_track("colour", source)
        out.video = await asyncio.wait_for(peer.room.local_participant.publish_track(
            out.video_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)),
            WAIT)
        peer.tasks.append(asyncio.create_task(_feed_colour(source)))
    return out


async def _feed_tone(source: rtc.AudioSource) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while True:
        frame = rtc.AudioFrame(tone_chunk(sent).tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
        await source.capture_frame(frame)
        sent += FRAME_SAMPLES
        # Real time: frame n goes out at start + n * 10 ms (late frames go at once).
        delay = start + sent / SAMPLE_RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def _feed_colour(source: rtc.VideoSource) -> None:
    frame = rtc.VideoFrame(VIDEO_WIDTH, VIDEO_HEIGHT, rtc.VideoBufferType.RGBA, solid_rgba())
    while True:
        source.capture_frame(frame)
        await asyncio.sleep(1 / VIDEO_FPS)


# --- media: what the subscriber checks -----------------------------------------------------------

def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


def tone_analysis(samples: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[float, float]:
    """(dominant frequency in Hz, share of the signal's energy within ±10 Hz of it).

    Hann-windowed FFT; the peak is refined by parabolic interpolation of the log magnitude,
    so with one second of audio the estimate is well inside ±1 Hz of the true tone."""
    x = samples.astype(np.float64)
    x -= x.mean()
    power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    power[freqs < 50] = 0  # ignore DC and rumble
    peak = int(np.argmax(power))
    if 0 < peak < power.size - 1:
        a, b, c = np.log(power[peak - 1:peak + 2] + 1e-12)
        offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    else:
        offset = 0.0
    dominant = float(freqs[peak] + offset * (freqs[1] - freqs[0]))
    near = np.abs(freqs - dominant) <= 10
    share = float(power[near].sum() / power.sum()) if power.sum() > 0 else 0.0
    return dominant, share


SILENCE_RMS = 300.0  # int16 units; the tone's own RMS is ~6950


async def receive_tone(track: rtc.Track, seconds: float = 1.0, timeout: float = WAIT) -> np.ndarray:
    """Reads the subscribed audio track as 48 kHz mono; waits for sound (jitter buffers start
    with silence), skips 200 ms more of warm-up, then returns `seconds` of contiguous samples."""
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    wanted = int(seconds * SAMPLE_RATE)
    warmup = int(0.2 * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    state = {"frames": 0, "heard": False, "skipped": 0, "collected": 0}

    async def read() -> np.ndarray:
        async for event in stream:
            samples = np.frombuffer(bytes(event.frame.data), dtype=np.int16)
            state["frames"] += 1
            if not state["heard"]:
                state["heard"] = rms(samples) > SILENCE_RMS
                continue
            if state["skipped"] < warmup:
                state["skipped"] += samples.size
                continue
            chunks.append(samples)
            state["collected"] += samples.size
            if state["collected"] >= wanted:
                return np.concatenate(chunks)[:wanted]
        raise AssertionError(f"the audio stream ended after {state['frames']} frames")

    try:
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(
            f"no {seconds} s of audio within {timeout:.0f} s: {state['frames']} frames arrived, "
            f"{'some' if state['heard'] else 'none'} of them audible, "
            f"{state['collected']} samples collected") from None
    finally:
        await stream.aclose()


def assert_is_tone(samples: np.ndarray) -> None:
    """The received audio is the published 440 Hz tone: audible, that pitch, and mostly it."""
    level = rms(samples)
    assert level > SILENCE_RMS * 3, f"received audio is (nearly) silent: RMS {level:.0f}"
    dominant, share = tone_analysis(samples)
    assert abs(dominant - TONE_HZ) <= 10, f"dominant frequency {dominant:.1f} Hz, sent {TONE_HZ} Hz"
    assert share >= 0.5, f"only {share:.0%} of the received energy is near {dominant:.1f} Hz"


def centre_pixel(frame: rtc.VideoFrame) -> tuple[int, int, int]:
    """The RGB of the centre pixel of an RGBA frame (rows may be padded: stride from size)."""
    data = bytes(frame.data)
    stride = len(data) // frame.height
    offset = (frame.height // 2) * stride + (frame.width // 2) * 4
    r, g, b = data[offset:offset + 3]
    return r, g, b


def colour_close(got: tuple[int, int, int], want: tuple[int, int, int] = COLOUR,
                 tolerance: int = COLOUR_TOLERANCE) -> bool:
    return all(abs(g - w) <= tolerance for g, w in zip(got, want))


async def receive_colour(track: rtc.Track, skip: int = 5, check: int = 5,
                         timeout: float = WAIT) -> list[tuple[int, int, int]]:
    """Reads the subscribed video as RGBA; after `skip` warm-up frames, returns the centre pixels
    of the next `check` frames (the caller asserts on them)."""
    stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA)
    pixels: list[tuple[int, int, int]] = []
    seen = {"frames": 0, "size": None}

    async def read() -> list[tuple[int, int, int]]:
        async for event in stream:
            seen["frames"] += 1
            seen["size"] = (event.frame.width, event.frame.height)
            if seen["frames"] <= skip:
                continue
            pixels.append(centre_pixel(event.frame))
            if len(pixels) >= check:
                return pixels
        raise AssertionError(f"the video stream ended after {seen['frames']} frames")

    try:
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(
            f"not {skip + check} video frames within {timeout:.0f} s: {seen['frames']} arrived "
            f"(last size {seen['size']}), centre pixels {pixels}") from None
    finally:
        await stream.aclose()


def assert_is_colour(pixels: list[tuple[int, int, int]]) -> None:
    bad = [p for p in pixels if not colour_close(p)]
    assert not bad, (f"received video is not the published colour {COLOUR} "
                     f"(±{COLOUR_TOLERANCE}): centre pixels {pixels}")


async def assert_media_flows(subscriber: Peer, publisher_identity: str) -> None:
    """`subscriber` receives `publisher_identity`'s tone and colour, checked concurrently."""
    audio = await wait_subscribed(subscriber, publisher_identity, rtc.TrackKind.KIND_AUDIO)
    video = await wait_subscribed(subscriber, publisher_identity, rtc.TrackKind.KIND_VIDEO)
    samples, pixels = await asyncio.gather(receive_tone(audio), receive_colour(video))
    assert_is_tone(samples)
    assert_is_colour(pixels)


# --- what rtcbox logged ---------------------------------------------------------------------------

def signaling_of(box) -> dict[str, str]:
    """Each identity's signaling path as rtcbox logged its join: "v1" (`/rtc/v1`, one peer
    connection) or "v0" (`/rtc`, two). An SDK that fell back from v1 to v0 shows as "v0"."""
    import re
    joins = re.findall(r'participant joined .*?identity="([^"]*)".*?signaling="(v[01])"',
                       box.log_text())
    return dict(joins)


# --- running a scenario --------------------------------------------------------------------------

def run(scenario, box=None, timeout: float = 240.0):
    """Runs an async scenario with an overall bound; on failure prints the tail of rtcbox's log
    (pytest shows it with the failure)."""
    async def bounded():
        try:
            return await asyncio.wait_for(scenario, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"scenario did not finish within {timeout:.0f} s") from None

    try:
        return asyncio.run(bounded())
    except BaseException:
        if box is not None:
            print(f"--- tail of the rtcbox log ({box.log}) ---\n{box.log_text()[-8000:]}")
        raise
