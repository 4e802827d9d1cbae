"""Resume: a participant whose signalling socket is cut keeps its session.

Bob's SDK reaches rtcbox's signalling port through a TCP relay in this test (media goes
straight to rtcbox's media port, as the join response says); the test cuts every connection
through the relay at once, as a NAT rebinding or a proxy restart would. The unmodified Python
SDK notices, resumes (`reconnect=1&sid=…`), gets a ReconnectResponse and ICE restarts, and
keeps its participant sid. Alice, in the same room, sees no disconnect; Bob keeps hearing
Alice's tone before, through and after the resume. The gap in Bob's audio is measured and
printed (never asserted: tests do not time things).
"""

import asyncio
import os
import urllib.parse

from livekit import rtc

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET, sfu_env


class CuttableRelay:
    """A loopback TCP relay to `target` whose connections can all be cut at once."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.accepted = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> int:
        """Aborts every open connection in both directions (no close frame, no FIN wait)."""
        writers, self.writers = self.writers, []
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def close(self):
        self.cut()
        if self.server is not None:
            self.server.close()


class Listener:
    """Counts audible 10 ms frames of a track and records the longest gap between them."""

    def __init__(self, track: rtc.Track):
        self.stream = rtc.AudioStream(track, sample_rate=lk.SAMPLE_RATE, num_channels=1)
        self.audible = 0
        self.last: float | None = None
        self.longest_gap = 0.0
        self.task = asyncio.create_task(self._read())

    async def _read(self):
        import numpy as np
        loop = asyncio.get_running_loop()
        async for event in self.stream:
            samples = np.frombuffer(bytes(event.frame.data), dtype=np.int16)
            if lk.rms(samples) <= lk.SILENCE_RMS:
                continue
            now = loop.time()
            if self.last is not None:
                self.longest_gap = max(self.longest_gap, now - self.last)
            self.last = now
            self.audible += 1

    async def heard_more(self, than: int, what: str):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lk.WAIT
        while self.audible < than + 50:  # half a second of tone
            assert loop.time() < deadline, f"bob hears no tone {what}: {self.audible} audible frames"
            await asyncio.sleep(0.05)

    async def close(self):
        self.task.cancel()
        await self.stream.aclose()


def test_a_cut_signalling_socket_is_resumed_without_anyone_noticing(start_rtcbox):
    box = start_rtcbox(sfu_env())
    lk.run(resume_scenario(box), box)


async def resume_scenario(box):
    room = lk.unique("resume")
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    url = urllib.parse.urlsplit(box.ws_url)
    relay = CuttableRelay(url.hostname, url.port)
    relay_port = await relay.start()
    alice = bob = listener = None
    try:
        await lk.create_room(lkapi, room)
        alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice")
        await lk.publish_media(alice, video=False)
        bob = await lk.join(f"ws://127.0.0.1:{relay_port}", lk.join_token(API_KEY, API_SECRET, "bob", room),
                            "bob")
        bob_sid = bob.room.local_participant.sid
        track = await lk.wait_subscribed(bob, "alice", rtc.TrackKind.KIND_AUDIO)
        listener = Listener(track)
        await listener.heard_more(0, "before the cut")

        mark_bob, mark_alice = bob.log.mark(), alice.log.mark()
        heard_before = listener.audible
        assert relay.cut() >= 1, "bob's signalling did not go through the relay"
        await bob.log.wait_for("reconnecting", what="after the cut", after=mark_bob)
        await bob.log.wait_for("reconnected", what="after the cut", after=mark_bob)
        assert relay.accepted >= 2, "the SDK did not open a new signalling connection"
        await listener.heard_more(heard_before, "after the resume")

        # A resume, not a join: the session and its sid are the same, the log says so.
        assert bob.room.local_participant.sid == bob_sid, "bob joined again instead of resuming"
        log = box.log_text()
        assert "participant resumed its session" in log, "rtcbox did not log a resume"
        left = [line for line in log.splitlines() if "participant left" in line and "bob" in line]
        assert not left, f"bob left and came back: {left}"
        # Alice noticed nothing; the server never lost bob.
        assert "participant_disconnected" not in alice.log.names()[mark_alice:], \
            f"alice saw bob go: {alice.log.names()[mark_alice:]}"
        assert "participant_connected" not in alice.log.names()[mark_alice:]
        assert await lk.participant_identities(lkapi, room) == {"alice", "bob"}
        print(f"resume: bob's longest gap between audible audio frames: "
              f"{listener.longest_gap * 1000:.0f} ms")

        # The resumed session still works both ways: bob's reliable data reaches alice.
        await bob.room.local_participant.publish_data(b"after resume", reliable=True)
        packet, = await alice.log.wait_for(
            "data_received", lambda p: p.data == b"after resume", "from bob after the resume")
        assert packet.participant is not None and packet.participant.identity == "bob"
    finally:
        if listener is not None:
            await listener.close()
        await lk.leave_all(alice, bob)
        await relay.close()
        await lkapi.aclose()


def test_livekit_client_in_chromium_resumes_after_its_signalling_socket_is_cut(start_rtcbox, tmp_path):
    """The same with the SDK Element Call uses: two livekit-client pages in headless Chromium
    (Element Call's room options) reach rtcbox's signalling through the relay; two seconds
    after both subscribed, the relay cuts both sockets. Both resume (rtcbox logs two resumes
    and no leave until the pages hang up), and each keeps decoding the other's camera and
    receiving its microphone through the cut."""
    import json
    import secrets
    import subprocess
    import threading
    import time

    from conftest import BROWSER_DIR, CHROMIUM, require_browser_tooling
    from test_sfu_browser import PEERS, ROOM, RUNNER_DEADLINE_S, create_room, explain, token

    require_browser_tooling(("livekit-client", "playwright-core"))
    key, secret = "APIbrowserresume", secrets.token_urlsafe(32)
    box = start_rtcbox({"RTCBOX_API_KEY": key, "RTCBOX_API_SECRET": secret,
                        "RTCBOX_FULL_ACCESS_HOMESERVERS": "*"})
    asyncio.run(create_room(box.url, key, secret, ROOM))
    url = urllib.parse.urlsplit(box.ws_url)
    loop = asyncio.new_event_loop()
    relay = CuttableRelay(url.hostname, url.port)
    relay_port = loop.run_until_complete(relay.start())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    config = {
        "wsUrl": f"ws://127.0.0.1:{relay_port}",
        "peers": [{"identity": p, "token": token(key, secret, p, ROOM)} for p in PEERS],
        "profile": "element-call", "observeMs": 12000, "minFrames": 10, "minAudioPackets": 10,
        "deadlineMs": RUNNER_DEADLINE_S * 1000,
    }
    config_file = tmp_path / "resume-config.json"
    config_file.write_text(json.dumps(config))
    runner = subprocess.Popen(["node", "run.mjs", str(config_file)], cwd=BROWSER_DIR,
                              env=dict(os.environ, RTCBOX_CHROMIUM=CHROMIUM),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = []
    cut = 0
    try:
        for line in runner.stderr:
            progress.append(line)
            if "subscribe (" in line and '"allSubscribed":true' in line:
                time.sleep(2)  # into the media-observing window
                cut = asyncio.run_coroutine_threadsafe(_cut(relay), loop).result(10)
                break
        stdout, rest = runner.communicate(timeout=RUNNER_DEADLINE_S + 30)
    finally:
        if runner.poll() is None:
            runner.kill()
        loop.call_soon_threadsafe(loop.stop)
    progress.append(rest)
    (tmp_path / "resume-report.json").write_text(stdout)
    report = json.loads(stdout)
    why = explain(report, "".join(progress), box, tmp_path / "resume-report.json")
    # Both signalling sockets, and whatever HTTP connections the pages keep open besides.
    assert cut >= 2, f"the relay carried {cut} connections, not both pages' sockets\n{why}"
    log = box.log_text()
    resumed = [line for line in log.splitlines() if "participant resumed its session" in line]
    assert len(resumed) == 2, f"resumes logged: {resumed}\n{why}"
    before_hangup = log.split("participant resumed its session")[-1].split("CLIENT_INITIATED")[0]
    assert "participant left" not in log.split("participant resumed its session")[0], \
        f"a participant left before resuming\n{why}"
    assert "participant joined" not in before_hangup, f"a page joined again\n{why}"
    # Media through the cut: report["ok"] requires each page to keep decoding the other's
    # camera and receiving its microphone over the 12 s window the cut falls into.
    assert report["ok"], why


async def _cut(relay: CuttableRelay) -> int:
    return relay.cut()
