"""Chaos (issue 14): a call keeps going for the others while one caller's network is bad, a
crowd leaves at once, a caller's process freezes and another caller's signalling connection
is cut with its media alive. rtcbox must not crash, and Carol (on this machine, on a clean
path) must keep hearing Alice throughout.

Bob is a caller in a network namespace of his own that reaches rtcbox only through a router
stand-in; his path loses 5% of the datagrams both ways, delays them by up to 40 ms and reorders
some (the impairment is done by the forward: this kernel has no netem). Loopback and the test's
own veth only."""

import asyncio
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import lk_helpers as lk
from conftest import wait_until
from lk_helpers import API_KEY, API_SECRET, sfu_env
from netns_helpers import TcpForward, UdpForward, caller_namespace  # noqa: F401 (a fixture)
from test_public_ip import StunStandIn
from test_resume import Listener

PUBLIC = "10.77.0.1"
# Carol may miss at most this much audio at once while the others misbehave.
LONGEST_GAP = 1.0


def test_the_call_goes_on_through_loss_a_crowd_leaving_a_frozen_client_and_a_cut_socket(
        start_rtcbox, caller_namespace):
    stun = StunStandIn(PUBLIC)
    forwards = []
    bob = None
    try:
        box = start_rtcbox(dict(sfu_env(), RTCBOX_NODE_IP="",
                                RTCBOX_STUN_SERVERS=f"127.0.0.1:{stun.port}"))
        wait_until(lambda: f"public IP detected ip={PUBLIC}" in box.log_text(), 20, "detection")
        http_port = int(box.url.rsplit(":", 1)[1])
        forwards.append(TcpForward((PUBLIC, http_port), ("127.0.0.1", http_port)))
        lossy = UdpForward((PUBLIC, box.udp_port), ("127.0.0.1", box.udp_port),
                           loss=0.05, jitter=0.04, reorder=0.1)
        forwards.append(lossy)
        # Dave's signalling goes through a forward the test cuts (his media does not).
        dave_signalling = TcpForward(("127.0.0.1", 0), ("127.0.0.1", http_port))
        forwards.append(dave_signalling)
        dave_port = dave_signalling.server.getsockname()[1]

        async def scenario():
            nonlocal bob
            lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
            room = lk.unique("chaos")
            await lk.create_room(lkapi, room)
            token = lambda who: lk.join_token(API_KEY, API_SECRET, who, room)  # noqa: E731
            alice = await lk.join(box.ws_url, token("alice"), "alice")
            carol = await lk.join(box.ws_url, token("carol"), "carol")
            dave = await lk.join(f"ws://127.0.0.1:{dave_port}", token("dave"), "dave")
            crowd = []
            listener = None
            try:
                await lk.publish_media(alice, video=False)
                track = await lk.wait_subscribed(carol, "alice", lk.rtc.TrackKind.KIND_AUDIO)
                listener = Listener(track)
                await listener.heard_more(0, "at the start")
                listener.longest_gap = 0.0

                # Bob on the lossy path hears Alice (NACK and the jitter buffer cope).
                bob = subprocess.Popen(
                    ["ip", "netns", "exec", caller_namespace, sys.executable,
                     str(Path(__file__).with_name("netns_listener.py")),
                     f"ws://{PUBLIC}:{http_port}", token("bob")],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                lines: list[dict] = []
                threading.Thread(target=lambda: [lines.append(json.loads(l)) for l in bob.stdout],
                                 daemon=True).start()

                async def bob_heard(more_than: int, what: str) -> int:
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + lk.WAIT
                    while not (lines and lines[-1]["audible"] > more_than + 50):
                        assert bob.poll() is None, "bob's client exited"
                        assert loop.time() < deadline, f"bob hears no tone {what}: {lines[-1:]}"
                        await asyncio.sleep(0.2)
                    return lines[-1]["audible"]

                heard = await bob_heard(0, "through 5% loss, jitter and reordering")
                assert lossy.dropped > 0, "the lossy path lost nothing"

                # A crowd joins and half the room leaves at once.
                crowd = [await lk.join(box.ws_url, token(f"crowd{i}"), f"crowd{i}") for i in range(4)]
                await asyncio.gather(*(peer.room.disconnect() for peer in crowd))
                crowd = []

                # Bob's process freezes for 5 s, then goes on.
                bob.send_signal(signal.SIGSTOP)
                await asyncio.sleep(5)
                bob.send_signal(signal.SIGCONT)
                heard = await bob_heard(heard, "after being frozen for 5 s")

                # Dave's signalling connection is cut, his media path is not: he resumes.
                mark = dave.log.mark()
                assert dave_signalling.cut() >= 1, "dave's signalling did not go through the forward"
                await dave.log.wait_for("reconnected", what="after the cut", after=mark)

                await listener.heard_more(listener.audible, "at the end")
                assert listener.longest_gap < LONGEST_GAP, \
                    f"carol's audio stopped for {listener.longest_gap:.2f} s while others misbehaved"
                assert box.process.poll() is None, "rtcbox crashed"
            finally:
                if listener is not None:
                    await listener.close()
                await lk.leave_all(alice, carol, dave, *crowd)
                await lkapi.aclose()

        lk.run(scenario(), box)
        assert box.process.poll() is None
        assert "panicked" not in box.log_text()
    finally:
        if bob is not None:
            bob.send_signal(signal.SIGCONT)
            bob.kill()
            bob.wait(10)
        for forward in forwards:
            forward.close()
        stun.close()
