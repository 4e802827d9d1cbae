"""The public IP followed live (issue 15): without RTCBOX_NODE_IP, rtcbox asks its STUN server
for the address the internet sees, and when the answer changes it advertises the new address
with no restart: new joins get it, connected clients are sent it (trickle, subscriber ICE
restart) and keep their call, and TURN relays are advertised on it.

The "internet" here is a STUN stand-in on loopback whose answer the test changes (127.0.0.2,
then 127.0.0.3). The first test's clients are on this machine, so they also have rtcbox's own host candidate
(127.0.0.1): it shows what is advertised and that nothing restarts. The third puts the caller in
a network namespace of its own that reaches rtcbox only through a router stand-in at the public
address, and kills the old address: the call recovers through the new one without a rejoin (it
fails, with a rejoin, when the SFU does not tell connected clients of the new address). The SFU
harness shows the same deterministically."""

import asyncio
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from livekit import api, rtc
from livekit.protocol import rtc as signal
from websockets.asyncio.client import connect as ws_connect

import lk_helpers as lk
from conftest import wait_until
from lk_helpers import API_KEY, API_SECRET, sfu_env
from netns_helpers import TcpForward, UdpForward, caller_namespace  # noqa: F401 (a fixture)
from test_turn import SECRET, uclient

MAGIC = 0x2112A442
FIRST, SECOND = "127.0.0.2", "127.0.0.3"


class StunStandIn:
    """Answers STUN Binding requests on 127.0.0.1 with ``self.answer`` as the mapped address
    (the caller's port): what a STUN server on the internet says of a NAT's public side."""

    def __init__(self, answer: str):
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.asked = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, (_, port) = self.sock.recvfrom(2048)
            except OSError:
                return
            if len(data) < 20 or struct.unpack("!HHI", data[:8])[0] != 0x0001:
                continue
            self.asked += 1
            transaction = data[8:20]
            ip = struct.unpack("!I", socket.inet_aton(self.answer))[0] ^ MAGIC
            value = struct.pack("!BBHI", 0, 1, port ^ (MAGIC >> 16), ip)
            attribute = struct.pack("!HH", 0x0020, len(value)) + value
            header = struct.pack("!HHI", 0x0101, len(attribute), MAGIC) + transaction
            self.sock.sendto(header + attribute, ("127.0.0.1", port))

    def close(self):
        self.sock.close()


def candidates(sdp: str, port: int) -> set[str]:
    """The addresses of the UDP host candidates on ``port`` in a description."""
    return {m.group(1) for m in re.finditer(rf"a=candidate:\S+ 1 udp \d+ (\S+) {port} typ host", sdp)}


async def raw_join(box, room: str, identity: str):
    token = lk.join_token(API_KEY, API_SECRET, identity, room)
    url = f"{box.ws_url}/rtc?protocol=16&auto_subscribe=1&access_token={token}"
    ws = await ws_connect(url, open_timeout=10, max_size=None)
    return ws


async def next_of(ws, kind: str, timeout: float = 15.0):
    """The next signalling message of kind ``kind`` (offer, trickle, ...)."""
    async def read():
        while True:
            message = signal.SignalResponse.FromString(await ws.recv())
            if message.WhichOneof("message") == kind:
                return getattr(message, kind)
    return await asyncio.wait_for(read(), timeout)


def test_a_changed_public_ip_is_advertised_live_and_the_call_goes_on(start_rtcbox):
    stun = StunStandIn(FIRST)
    box = start_rtcbox(dict(sfu_env(), RTCBOX_NODE_IP="", RTCBOX_PUBLIC_IP_INTERVAL="1",
                            RTCBOX_STUN_SERVERS=f"127.0.0.1:{stun.port}",
                            RTCBOX_TURN_SHARED_SECRET=SECRET))
    try:
        wait_until(lambda: f"public IP detected ip={FIRST}" in box.log_text(), 20,
                   "the first detection")
        relays = uclient(box.turn_port, box.udp_port, messages=1, clients=1).relays
        assert relays and all(r.startswith(f"{FIRST}:") for r in relays), relays

        async def scenario():
            lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
            room = lk.unique("ip")
            await lk.create_room(lkapi, room)
            alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice")
            bob = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "bob", room), "bob")
            probe = None
            try:
                await lk.publish_media(alice, video=False)
                track = await lk.wait_subscribed(bob, "alice", rtc.TrackKind.KIND_AUDIO)
                lk.assert_is_tone(await lk.receive_tone(track))
                sids = {p.identity: p.sid for p in (await lkapi.room.list_participants(
                    api.ListParticipantsRequest(room=room))).participants}

                # A raw client sees what is advertised: the host address and the public one.
                probe = await raw_join(box, room, "probe")
                offer = await next_of(probe, "offer")
                assert candidates(offer.sdp, box.udp_port) == {"127.0.0.1", FIRST}, offer.sdp

                stun.answer = SECOND
                await asyncio.to_thread(wait_until,
                                        lambda: f"to={SECOND}" in box.log_text(), 20, "the change")
                # The connected client is told the new address (its subscriber connection also
                # restarts ICE once it answers: the harness shows that part).
                trickle = await next_of(probe, "trickle")
                assert f" {SECOND} {box.udp_port} typ host" in trickle.candidateInit, trickle
                assert trickle.target == signal.SignalTarget.SUBSCRIBER

                # A new join is offered the new address only.
                late = await raw_join(box, room, "late")
                try:
                    late_offer = await next_of(late, "offer")
                    assert candidates(late_offer.sdp, box.udp_port) == {"127.0.0.1", SECOND}, \
                        late_offer.sdp
                finally:
                    await late.close()

                # Alice and Bob never noticed: same sessions, the tone still arrives.
                lk.assert_is_tone(await lk.receive_tone(track))
                now = {p.identity: p.sid for p in (await lkapi.room.list_participants(
                    api.ListParticipantsRequest(room=room))).participants}
                assert now["alice"] == sids["alice"] and now["bob"] == sids["bob"], (sids, now)
                assert bob.room.isconnected() and alice.room.isconnected()
            finally:
                if probe is not None:
                    await probe.close()
                await lk.leave_all(alice, bob)
                await lkapi.aclose()

        lk.run(scenario(), box)
        # TURN relays are advertised on the new address, with no restart.
        relays = uclient(box.turn_port, box.udp_port, messages=1, clients=1).relays
        assert relays and all(r.startswith(f"{SECOND}:") for r in relays), relays
        assert box.process.poll() is None, "rtcbox is still the same process"
        assert box.log_text().count("listening on http://") == 1
    finally:
        stun.close()


def test_a_dns_name_can_stand_for_the_public_ip(start_rtcbox):
    """RTCBOX_PUBLIC_IP_DNS (a dynamic DNS name): resolved instead of asking the STUN servers.
    `localhost` (from /etc/hosts) keeps the test on loopback."""
    stun = StunStandIn(FIRST)
    try:
        box = start_rtcbox(dict(sfu_env(), RTCBOX_NODE_IP="", RTCBOX_PUBLIC_IP_DNS="localhost",
                                RTCBOX_STUN_SERVERS=f"127.0.0.1:{stun.port}"))
        wait_until(lambda: "public IP detected ip=127.0.0.1" in box.log_text(), 20,
                   "the name resolved")
        assert stun.asked == 0, "the STUN server was asked although a DNS name is set"
    finally:
        stun.close()


def test_a_call_recovers_media_when_the_public_ip_changes(start_rtcbox, caller_namespace):
    """Alice (on this machine) talks to Bob, a caller in another network namespace who reaches
    rtcbox only through the router stand-in at the public address. The address changes (the
    STUN answer moves to 10.77.1.1, the forward on 10.77.0.1 dies): Bob hears Alice again
    without rejoining (same participant sid) and nobody restarted anything."""
    old, new = "10.77.0.1", "10.77.1.1"
    stun = StunStandIn(old)
    forwards = []
    bob = None
    try:
        box = start_rtcbox(dict(sfu_env(), RTCBOX_NODE_IP="", RTCBOX_PUBLIC_IP_INTERVAL="1",
                                RTCBOX_STUN_SERVERS=f"127.0.0.1:{stun.port}"))
        wait_until(lambda: f"public IP detected ip={old}" in box.log_text(), 20, "the detection")
        http_port = int(box.url.rsplit(":", 1)[1])
        signalling = TcpForward((old, http_port), ("127.0.0.1", http_port))
        forwards.append(signalling)
        old_media = UdpForward((old, box.udp_port), ("127.0.0.1", box.udp_port))
        forwards.append(old_media)
        forwards.append(UdpForward((new, box.udp_port), ("127.0.0.1", box.udp_port)))

        async def scenario():
            nonlocal bob
            lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
            room = lk.unique("move")
            await lk.create_room(lkapi, room)
            alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice")
            try:
                await lk.publish_media(alice, video=False)
                bob = subprocess.Popen(
                    ["ip", "netns", "exec", caller_namespace, sys.executable,
                     str(Path(__file__).with_name("netns_listener.py")),
                     f"ws://{old}:{http_port}", lk.join_token(API_KEY, API_SECRET, "bob", room)],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                lines: list[dict] = []

                def read_lines():
                    for line in bob.stdout:
                        lines.append(json.loads(line))

                threading.Thread(target=read_lines, daemon=True).start()

                async def heard(more_than: int, what: str, seconds: float) -> dict:
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + seconds
                    while not (lines and lines[-1]["audible"] > more_than + 50):
                        assert bob.poll() is None, "bob's client exited"
                        assert loop.time() < deadline, f"bob hears no tone {what}: {lines[-1:]}"
                        await asyncio.sleep(0.2)
                    return lines[-1]

                before = await heard(0, "through the first public address", lk.WAIT)
                # The line's address changes: the forward on the old one dies, the STUN server
                # reports the new one.
                old_media.close()
                stun.answer = new
                await asyncio.to_thread(wait_until, lambda: f"to={new}" in box.log_text(), 20,
                                        "the change noticed")
                mark = lines[-1]["audible"]
                after = await heard(mark, "after the address changed", 30)
                assert after["sid"] == before["sid"], "bob rejoined instead of recovering"
                assert after["connected"] and "disconnected" not in after["events"], after
            finally:
                await lk.leave_all(alice)
                await lkapi.aclose()

        lk.run(scenario(), box)
        assert box.process.poll() is None
        assert box.log_text().count("listening on http://") == 1, "rtcbox restarted"
    finally:
        if bob is not None:
            bob.kill()
            bob.wait(10)
        for forward in forwards:
            forward.close()
        stun.close()
