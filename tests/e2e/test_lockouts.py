"""No single unauthenticated client can lock others out of a stream listener (issue 14).

Each test reproduces a flood against the real binary on loopback from one address, 127.0.0.2
(Linux answers the whole of 127/8 without setup), and then shows that a legitimate client on
127.0.0.1 is still served while the attacker's connections are open. Nothing here measures
speed: the tests assert service, and waits are generous bounds on liveness.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import os
import re
import resource
import socket
import struct
import urllib.parse

import pytest
from livekit.protocol import rtc as signal
from websockets.asyncio.client import connect as ws_connect

import lk_helpers as lk
from conftest import wait_until
from lk_helpers import API_KEY, API_SECRET, sfu_env
from test_https import stun_attributes
from test_turn import (SECRET, assert_everything_echoed, binding_request, echo_peer,  # noqa: F401
                       coturn_tools, join_response, log_tail, relay_env, turn_ports, uclient,
                       wait_turn_ready)

ATTACKER = "127.0.0.2"
# The flood of the issue: as many connections as TURN's shared cap.
TURN_FLOOD = 1024


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors():
    """The attacker's sockets live in this process: raise its soft limit if it is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_from(source: str, port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections from ``source`` to 127.0.0.1:port; those the kernel refuses
    (a full backlog) are left out."""
    sockets = []
    for _ in range(count):
        try:
            s = socket.socket()
        except OSError as e:  # out of file descriptors: the caller's count check says so
            print(f"stopped opening connections after {len(sockets)}: {e}")
            break
        s.bind((source, 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        sockets.append(s)
    return sockets


def is_closed_by_server(s: socket.socket) -> bool:
    """Whether the server has closed ``s`` (EOF or reset); reads and drops what it sent."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.settimeout(5)


def close_all(sockets: list[socket.socket]):
    for s in sockets:
        s.close()


# ---------------------------------------------------------------------------------------------
# Defect 1: TURN over TCP and TLS.

@pytest.fixture
def turn_server(start_rtcbox):
    box = start_rtcbox(dict(relay_env(), RTCBOX_TURN_SHARED_SECRET=SECRET,
                            RTCBOX_TURN_ALLOW_PEERS="127.0.0.1/32"), name="turn-flood")
    wait_turn_ready("rtcbox", turn_ports(box), box.log)
    return box


def test_a_turn_stream_flood_from_one_address_locks_nobody_out(turn_server, echo_peer):
    """1024 TCP connections from one address, each sending an unauthenticated Binding request
    (which used to keep a connection for an hour, and 1024 filled TURN's TCP and TLS for
    everyone). Now that address gets its per-address share, the rest is refused at once, the
    connections that got in are closed for want of an allocation although they keep sending
    Binding requests, and a legitimate client relays over TCP and TLS meanwhile."""
    box = turn_server
    port = box.turn_port
    attackers = open_from(ATTACKER, port, TURN_FLOOD)
    assert len(attackers) > 900, f"only {len(attackers)} connections could be opened"
    for s in attackers:
        try:
            s.sendall(binding_request()[0])
        except OSError:
            pass  # refused already

    # The legitimate client, with the flood's connections open (from the attacker's side).
    for transport in ("tcp", "tls"):
        run = uclient(turn_ports(box)[transport], echo_peer, transport)
        assert_everything_echoed(run, box.log)

    # Most of the flood was turned away at once; what got in does not outlive the
    # pre-authentication time however many Binding requests it sends.
    def survivors() -> list[socket.socket]:
        alive = [s for s in attackers if not is_closed_by_server(s)]
        for s in alive:
            try:
                s.sendall(binding_request()[0])
            except OSError:
                pass
        return alive

    alive = survivors()
    assert len(alive) <= 64, f"{len(alive)} of the flood's connections are still served"
    wait_until(lambda: not survivors(), 60, "the server closing unauthenticated TURN streams")
    close_all(attackers)

    # The overload was logged, rate-limited: a few lines for over 900 refusals.
    refusals = [line for line in box.log_text().splitlines()
                if "connection refused" in line and "TURN over TCP/TLS" in line]
    assert 1 <= len(refusals) <= 10, refusals

    # And the address itself is served again once its connections are gone.
    run = uclient(port, echo_peer, "tcp")
    assert_everything_echoed(run, box.log)


# ---------------------------------------------------------------------------------------------
# Defect 2: ICE-TCP.

def stun_attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def ice_check(server_ufrag: str, client_ufrag: str, server_pwd: str) -> tuple[bytes, bytes]:
    """An ICE connectivity check as a controlling agent sends it (RFC 8445 §7.1.1): Binding
    request with USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY with the
    server's password and FINGERPRINT. Returns (message, transaction id)."""
    transaction = os.urandom(12)
    attributes = (stun_attribute(0x0006, f"{server_ufrag}:{client_ufrag}".encode())
                  + stun_attribute(0x0024, struct.pack("!I", 1853824767))
                  + stun_attribute(0x802A, os.urandom(8))
                  + stun_attribute(0x0025, b""))

    def header(length: int) -> bytes:
        return struct.pack("!HHI", 0x0001, length, 0x2112A442) + transaction

    integrity = hmac.new(server_pwd.encode(), header(len(attributes) + 24) + attributes,
                         hashlib.sha1).digest()
    attributes += stun_attribute(0x0008, integrity)
    crc = binascii.crc32(header(len(attributes) + 8) + attributes) ^ 0x5354554E
    attributes += stun_attribute(0x8028, struct.pack("!I", crc))
    return header(len(attributes)) + attributes, transaction


def rfc4571(frame: bytes) -> bytes:
    return struct.pack("!H", len(frame)) + frame


def read_frame(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    head = b""
    while len(head) < 2:
        chunk = s.recv(2 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    (length,) = struct.unpack("!H", head)
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return body


def data_channel_answer(offer: str, ufrag: str, pwd: str) -> str:
    """An answer to the subscriber's first offer (one data-channel m-line), as a browser would
    give it; the DTLS fingerprint is never used (no DTLS happens in this test)."""
    mid = re.search(r"^a=mid:(\S+)", offer, re.M).group(1)
    fingerprint = ":".join(f"{b:02X}" for b in os.urandom(32))
    return "\r\n".join([
        "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", f"a=group:BUNDLE {mid}",
        "a=msid-semantic: WMS", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0", f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {fingerprint}", "a=setup:active", f"a=mid:{mid}",
        "a=sctp-port:5000", "a=max-message-size:262144", ""])


def test_an_ice_tcp_flood_from_one_address_locks_nobody_out(start_rtcbox):
    """1024 ICE-TCP connections from one address sending an empty RFC 4571 frame now and then
    (each used to restart a 60 s idle timer, keeping the media TCP port full for good). Now that
    address gets its per-address share, and those connections are closed for want of an ICE
    check however many frames they send; meanwhile a participant's ICE-TCP connection from
    another address, whose check names its session's ufrag, is answered and kept."""
    box = start_rtcbox(sfu_env())

    async def scenario():
        room = lk.unique("ice-tcp-flood")
        lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
        try:
            await lk.create_room(lkapi, room)
        finally:
            await lkapi.aclose()
        query = urllib.parse.urlencode({
            "access_token": lk.join_token(API_KEY, API_SECRET, "erin", room),
            "sdk": "python", "protocol": "16", "auto_subscribe": "1"})
        async with ws_connect(f"{box.ws_url}/rtc?{query}", open_timeout=lk.WAIT,
                              max_size=None) as ws:
            await join_response(ws)
            while True:
                response = signal.SignalResponse.FromString(
                    await asyncio.wait_for(ws.recv(), lk.WAIT))
                if response.WhichOneof("message") == "offer":
                    offer = response.offer.sdp
                    break
            server_ufrag = re.search(r"^a=ice-ufrag:(\S+)", offer, re.M).group(1)
            server_pwd = re.search(r"^a=ice-pwd:(\S+)", offer, re.M).group(1)
            assert f"tcp 1526725887 127.0.0.1 {box.tcp_port} typ host tcptype passive" in offer \
                or f" {box.tcp_port} typ host tcptype passive" in offer, offer

            attackers = await asyncio.to_thread(open_from, ATTACKER, box.tcp_port, TURN_FLOOD)
            assert len(attackers) > 900, f"only {len(attackers)} connections could be opened"

            def keep_alive() -> list[socket.socket]:
                alive = [s for s in attackers if not is_closed_by_server(s)]
                for s in alive:
                    try:
                        s.sendall(b"\0\0")  # an empty RFC 4571 frame
                    except OSError:
                        pass
                return alive

            await asyncio.to_thread(keep_alive)

            # The participant's ICE-TCP connection, while the flood is open.
            ufrag, pwd = "clnt", "client-password-0123456789"
            answer = data_channel_answer(offer, ufrag, pwd)
            await ws.send(signal.SignalRequest(answer=signal.SessionDescription(
                type="answer", sdp=answer)).SerializeToString())
            participant = socket.create_connection(("127.0.0.1", box.tcp_port), timeout=5)
            check, transaction = ice_check(server_ufrag, ufrag, server_pwd)
            participant.sendall(rfc4571(check))

            def answered() -> bool:
                while True:
                    frame = read_frame(participant, 5)
                    if frame[:2] == b"\x01\x01" and frame[8:20] == transaction:
                        return True

            assert await asyncio.to_thread(answered), "the ICE check was not answered"

            alive = await asyncio.to_thread(keep_alive)
            assert len(alive) <= 64, f"{len(alive)} of the flood's connections are still open"
            await asyncio.to_thread(wait_until, lambda: not keep_alive(), 60,
                                    "the server closing ICE-TCP connections without a check")
            close_all(attackers)

            # The participant's connection outlived the flood's and is still answered.
            check, transaction = ice_check(server_ufrag, ufrag, server_pwd)
            participant.sendall(rfc4571(check))
            assert await asyncio.to_thread(answered), "the ICE check was not answered later"
            participant.close()

    lk.run(scenario(), box, timeout=180)
    refusals = [line for line in box.log_text().splitlines()
                if "connection refused" in line and "ICE-TCP" in line]
    assert 1 <= len(refusals) <= 10, refusals


# ---------------------------------------------------------------------------------------------
# Defect 4: connection floods on the HTTP listeners.

HTTP_FLOOD = 800


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_an_http_connection_flood_from_one_address_locks_nobody_out(start_rtcbox):
    """800 idle connections from one address on each HTTP listener (public HTTP, public HTTPS,
    admin panel). The address gets its per-address share (256 on the public listeners, 64 on
    the panel), the rest is closed at once, and /healthz and the login page are served to
    another address meanwhile; the idle connections end at the header read deadline."""
    import requests

    box = start_rtcbox(sfu_env())
    https_port = int(box.log_text().split("listening on https://127.0.0.1:")[1].split()[0])
    listeners = {
        "public HTTP": (int(box.url.rsplit(":", 1)[1]), 256),
        "public HTTPS": (https_port, 256),
        "admin panel": (int(box.admin_url.rsplit(":", 1)[1]), 64),
    }
    floods = {name: open_from(ATTACKER, port, HTTP_FLOOD)
              for name, (port, _) in listeners.items()}
    for name, sockets in floods.items():
        assert len(sockets) > HTTP_FLOOD * 0.9, f"{name}: only {len(sockets)} connections opened"

    # Others are served while the flood's connections are open.
    assert requests.get(f"{box.url}/healthz", timeout=30).status_code == 200
    assert requests.get(f"https://127.0.0.1:{https_port}/healthz", timeout=30,
                        verify=False).status_code == 200
    login = requests.get(f"{box.admin_url}/setup", timeout=30)
    assert login.status_code == 200 and "setup token" in login.text.lower(), login.status_code

    for name, (_, cap) in listeners.items():
        alive = [s for s in floods[name] if not is_closed_by_server(s)]
        assert len(alive) <= cap, f"{name}: {len(alive)} of the flood's connections are open"
        wait_until(lambda: all(is_closed_by_server(s) for s in alive), 60,
                   f"{name} closing idle connections at the header read deadline")
        close_all(floods[name])
    for name in listeners:
        assert any("connection refused" in line and name in line
                   for line in box.log_text().splitlines()), f"{name}: no refusal logged"
    # The address itself is served again.
    assert requests.get(f"{box.url}/healthz", timeout=30).status_code == 200


# ---------------------------------------------------------------------------------------------
# Defect 3, in part: the per-identity allocation quota binds across fresh credentials.

def rest_credentials(user: str, expires: int) -> tuple[str, str]:
    """coturn's REST credentials for ``user`` expiring at ``expires``, as Synapse mints them."""
    import base64
    username = f"{expires}:{user}"
    password = base64.b64encode(hmac.new(SECRET.encode(), username.encode(),
                                         hashlib.sha1).digest()).decode()
    return username, password


def test_one_identity_with_fresh_credentials_cannot_take_the_relay_range(start_rtcbox,
                                                                         echo_peer):
    """One user allocating with two sets of credentials (two expiries, as two tokens give):
    the quota of 24 allocations is the user's, not the username's, so the second set gets
    486 for every allocation (it got another 24 before), and someone else's relay works. (The
    range has room for both sets: uclient asks for even ports at random, so a range the
    attacker fills exactly would make the honest client's luck part of the test.)"""
    import time as clock

    box = start_rtcbox(dict(relay_env(60), RTCBOX_TURN_SHARED_SECRET=SECRET,
                            RTCBOX_TURN_ALLOW_PEERS="127.0.0.1/32"), name="turn-quota")
    wait_turn_ready("rtcbox", turn_ports(box), box.log)
    now = int(clock.time())
    taken = []
    for expires in (now + 3600, now + 7200):
        user, password = rest_credentials("@mallory:example.org", expires)
        run = uclient(box.turn_port, echo_peer, "udp", user=user, secret=None,
                      password=password, messages=5, clients=30)
        taken.append(len(run.relays))
    assert taken[0] <= 24 and taken[1] == 0, \
        f"relays held with each set of credentials: {taken}\n{run.describe()}"

    run = uclient(box.turn_port, echo_peer, "udp", user="@alice:example.org")
    assert_everything_echoed(run, box.log)


# Defect 3, the rest: participant relays stay out of the forwarded range and end with their
# session.

def relay_ports(run) -> list[int]:
    return [int(relay.rsplit(":", 1)[1]) for relay in run.relays]


def turn_allocate(port: int, username: str, password: str,
                  realm_nonce: list) -> tuple[socket.socket, str | int]:
    """One UDP Allocate from a fresh socket with long-term credentials, as RFC 8656 clients
    make it: with the REALM and NONCE of an earlier 401 (kept in ``realm_nonce``), else
    unauthenticated first (the server answers only so many of those per second and address).
    Returns the socket (its allocation is its 5-tuple's) and the relayed "ip:port", or the
    error code.
    coturn's uclient cannot be used here: with participant credentials it is refused a channel
    bind even when its peer is the SFU's media port (it binds channels to more than the peer
    it is given), and it quits at the first refusal, two allocations in."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)

    def exchange(auth: tuple[str, str] | None) -> tuple[int, dict[int, bytes]]:
        transaction = os.urandom(12)
        attributes = stun_attribute(0x0019, bytes([17, 0, 0, 0]))
        if auth:
            realm, nonce = auth
            attributes += (stun_attribute(0x0006, username.encode())
                           + stun_attribute(0x0014, realm.encode())
                           + stun_attribute(0x0015, nonce.encode()))

        def header(length: int) -> bytes:
            return struct.pack("!HHI", 0x0003, length, 0x2112A442) + transaction

        if auth:
            key = hashlib.md5(f"{username}:{auth[0]}:{password}".encode()).digest()
            integrity = hmac.new(key, header(len(attributes) + 24) + attributes,
                                 hashlib.sha1).digest()
            attributes += stun_attribute(0x0008, integrity)
        crc = binascii.crc32(header(len(attributes) + 8) + attributes) ^ 0x5354554E
        attributes += stun_attribute(0x8028, struct.pack("!I", crc))
        s.sendto(header(len(attributes)) + attributes, ("127.0.0.1", port))
        while True:
            answer = s.recv(4096)
            if answer[8:20] == transaction:
                return struct.unpack("!H", answer[:2])[0], stun_attributes(answer)

    def error_code(attributes: dict[int, bytes]) -> int:
        code = attributes[0x0009]
        return code[2] * 100 + code[3]

    if not realm_nonce:
        kind, attributes = exchange(None)
        assert kind == 0x0113 and error_code(attributes) == 401, (hex(kind), attributes)
        realm_nonce[:] = [attributes[0x0014].decode(), attributes[0x0015].decode()]
    kind, attributes = exchange(tuple(realm_nonce))
    if kind != 0x0103:
        return s, error_code(attributes)
    relayed = attributes[0x0016]
    relay_port = struct.unpack("!H", relayed[2:4])[0] ^ 0x2112
    relay_ip = socket.inet_ntoa(bytes(a ^ b for a, b in zip(relayed[4:8], b"\x21\x12\xa4\x42")))
    return s, f"{relay_ip}:{relay_port}"


def test_participant_relays_end_with_their_session_and_leave_the_range_alone(start_rtcbox,
                                                                             echo_peer):
    """A participant (a raw signaling session, its credentials from the JoinResponse) fills
    its identity's quota of 24 allocations: every relay port is outside the forwarded range
    (10 ports), which legacy REST credentials (coturn's uclient) still get whole. The same
    identity joins again (the old session is replaced): the old session's 24 allocations end
    at once, so the new session's credentials get relays (before, the zombies kept the quota
    full and it got 486), and the old credentials get 403. When that session leaves, its
    allocations end too and the next session of the identity gets all 24 again; another
    participant is served throughout."""
    env = dict(sfu_env(), **relay_env(10), RTCBOX_TURN_SHARED_SECRET=SECRET,
               RTCBOX_TURN_ALLOW_PEERS="127.0.0.1/32")
    box = start_rtcbox(env, name="turn-sessions", public_url="self")
    wait_turn_ready("rtcbox", turn_ports(box), box.log)
    first, last = (int(p) for p in env["RTCBOX_TURN_RELAY_PORTS"].split("-"))
    udp_url = f"turn:127.0.0.1:{box.turn_port}?transport=udp"
    sockets = []
    realm_nonce = []

    def allocate(server, count: int) -> list[str | int]:
        """``count`` allocations with ``server``'s credentials: relays, or error codes."""
        results = []
        for _ in range(count):
            s, result = turn_allocate(box.turn_port, server.username, server.credential,
                                      realm_nonce)
            sockets.append(s)
            results.append(result)
        return results

    def outside_range(results) -> bool:
        return all(not first <= int(r.rsplit(":", 1)[1]) <= last for r in results)

    async def session(room: str, identity: str):
        query = urllib.parse.urlencode({
            "access_token": lk.join_token(API_KEY, API_SECRET, identity, room),
            "sdk": "python", "protocol": "16", "auto_subscribe": "1"})
        ws = await ws_connect(f"{box.ws_url}/rtc?{query}", open_timeout=lk.WAIT, max_size=None)
        join = await join_response(ws)
        server = next(s for s in join.ice_servers if udp_url in s.urls)
        assert join.participant.sid in server.username, \
            f"credentials not of session {join.participant.sid}: {server.username}"
        return ws, server

    async def eventually_relays(server, count: int, what: str):
        """``count`` relays for ``server``'s credentials, the first within a few tries (the
        TURN task hears of an ended session a moment after the SFU answered)."""
        for _ in range(10):
            results = await asyncio.to_thread(allocate, server, 1)
            if isinstance(results[0], str):
                break
            await asyncio.sleep(0.3)
        results += await asyncio.to_thread(allocate, server, count - 1)
        assert all(isinstance(r, str) for r in results), \
            f"{what}: {results}\n{log_tail(box.log)}"
        assert outside_range(results), f"{what}: relays in the range {first}-{last}: {results}"

    async def scenario():
        room = lk.unique("turn-sessions")
        lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
        try:
            await lk.create_room(lkapi, room)
        finally:
            await lkapi.aclose()
        old_ws, old = await session(room, "mallory")
        results = await asyncio.to_thread(allocate, old, 24)
        assert all(isinstance(r, str) for r in results), f"the quota's worth: {results}"
        assert outside_range(results), \
            f"participant relays took ports of the range {first}-{last}: {results}"
        assert await asyncio.to_thread(allocate, old, 1) == [486], "the identity's quota is full"
        rest = await asyncio.to_thread(uclient, box.turn_port, echo_peer, "udp",
                                       user="@alice:example.org", messages=5, clients=2)
        assert rest.returncode == 0 and not rest.errors and rest.relays, rest.describe()
        assert rest.sent and rest.received == rest.sent, f"messages lost:\n{rest.describe()}"
        assert all(first <= port <= last for port in relay_ports(rest)), rest.describe()

        # The same identity joins again: the old session is replaced, its allocations end.
        new_ws, new = await session(room, "mallory")
        await eventually_relays(new, 4, "the new session of the identity")
        assert await asyncio.to_thread(allocate, old, 1) == [403], \
            "the replaced session's credentials allocate"
        _, bob = await session(room, "bob")
        await eventually_relays(bob, 4, "another participant")

        # The new session leaves: its allocations end, the next session gets all 24.
        await new_ws.close()
        await old_ws.close()
        _, again = await session(room, "mallory")
        await eventually_relays(again, 24, "the identity's next session after a leave")
        for s in sockets:
            s.close()

    lk.run(scenario(), box, timeout=240)
