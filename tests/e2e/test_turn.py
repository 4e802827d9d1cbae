"""rtcbox's embedded TURN server against real TURN clients, on loopback.

- coturn's own test client (``turnutils_uclient``) relays through rtcbox to coturn's echo peer
  (``turnutils_peer``) over UDP, TCP and TLS, with ChannelData and with Send/Data indications,
  authenticated with coturn's REST scheme (the shared secret Synapse uses). The very same command
  is first run against coturn itself: that anchors what "works" means (on loopback coturn returns
  every message) and proves the client invocation and the output parsing.
- Without an allow-list entry the same relay is refused: the allocation succeeds, then the
  permission (CreatePermission or ChannelBind) gets 403, and nothing comes back.
- A real Synapse configured with the homeserver.yaml snippet rtcbox's setup wizard generates
  hands out credentials (``/voip/turnServer``) that work against rtcbox over every URI it lists;
  a wrong password is refused.
- The official LiveKit Python SDK with relay-only ICE and the ICE servers from rtcbox's
  JoinResponse exchanges media (both ways) with a direct participant; its statistics show a
  relay candidate on the selected pair. A participant's TURN credentials relay to the SFU only.

Every rtcbox here gets its own TURN ports from the conftest (never 3478: a system coturn may hold
it), and the relay policy's loopback refusal is lifted with RTCBOX_TURN_ALLOW_PEERS only where a
test says so.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from livekit import rtc
from livekit.protocol import rtc as signal
from websockets.asyncio.client import connect as ws_connect

import lk_helpers as lk
from conftest import (free_port, free_relay_range, free_udp_port, free_udp_tcp_port, start_synapse,
                      stop_synapse, wait_until)
from lk_helpers import API_KEY, API_SECRET, sfu_env

SECRET = "rtcbox-e2e-turn-rest-secret-0123456789abcdef"
UCLIENT = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"
PEER = shutil.which("turnutils_peer") or "/usr/bin/turnutils_peer"
TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"

# One uclient run: -m CLIENTS clients, each with one allocation (-c: no RTCP companion), each
# sending MESSAGES messages of 170 bytes every 20 ms, so CLIENTS * MESSAGES in all (measured
# against coturn).
#
# -c because without it every client is an RTP/RTCP pair: the RTP allocation asks for EVEN-PORT
# with the R bit (reserve the next port) and the RTCP one redeems the RESERVATION-TOKEN. rtcbox
# answers the R bit with 508 (RFC 8656 §7.2 allows that; WebRTC never asks for it), and uclient
# gives up. With -c uclient still sends EVEN-PORT without the R bit on a random half of its
# allocations, and REQUESTED-ADDRESS-FAMILY always (-X only says IPv4 explicitly); -g adds
# DONT-FRAGMENT. Otherwise this is the reference command of the shared test-peers notes.
MESSAGES = 50
CLIENTS = 3
EXPECTED_MESSAGES = MESSAGES * CLIENTS
UCLIENT_TIMEOUT = 90

# How uclient reaches the server per transport (-S without -t would be DTLS, which is not TURN-TLS).
TRANSPORT_FLAGS = {"udp": [], "tcp": ["-t"], "tls": ["-t", "-S"]}
# ChannelBind + ChannelData (uclient's default) or CreatePermission + Send/Data indications (-s).
MODE_FLAGS = {"channel": [], "indication": ["-s"]}


@pytest.fixture(scope="module", autouse=True)
def coturn_tools():
    """The TURN test's client, echo peer and baseline server come from Debian's coturn package."""
    missing = [p for p in (UCLIENT, PEER, TURNSERVER) if not Path(p).is_file()]
    if missing:
        message = f"coturn's tools are missing ({', '.join(missing)}): apt-get install coturn (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# ---------------------------------------------------------------------------------------------
# STUN Binding: is a TURN listener up (on UDP, TCP or TLS)?

def binding_request() -> tuple[bytes, bytes]:
    transaction = os.urandom(12)
    return struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction, transaction


def is_binding_success(answer: bytes, transaction: bytes) -> bool:
    return len(answer) >= 20 and answer[:2] == b"\x01\x01" and answer[8:20] == transaction


def stun_binding(port: int, transport: str, timeout: float = 2.0) -> bool:
    """One STUN Binding request to 127.0.0.1:port; True when a Binding success answers it."""
    request, transaction = binding_request()
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(request, ("127.0.0.1", port))
            return is_binding_success(s.recvfrom(2048)[0], transaction)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if transport == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # rtcbox's self-signed certificate, as uclient -S
        raw = context.wrap_socket(raw, server_hostname="localhost")
    with raw as s:
        s.settimeout(timeout)
        s.sendall(request)
        answer = b""
        while len(answer) < 20 or len(answer) < 20 + struct.unpack("!H", answer[2:4])[0]:
            chunk = s.recv(2048)
            if not chunk:
                break
            answer += chunk
        return is_binding_success(answer, transaction)


def wait_turn_ready(name: str, ports: dict[str, int], log: Path | None = None, timeout: float = 20):
    """Waits until every listener in ``ports`` (transport -> port) answers STUN Binding."""
    for transport, port in ports.items():
        try:
            wait_until(lambda: stun_binding(port, transport), timeout,
                       f"{name}'s TURN listener ({transport} on 127.0.0.1:{port})")
        except TimeoutError as e:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"{e}: it does not answer STUN Binding requests. "
                                 f"Log tail ({log}):\n{tail}") from None


# ---------------------------------------------------------------------------------------------
# turnutils_uclient and its output.

@dataclass
class Uclient:
    command: list[str] = field(repr=False)
    returncode: int
    output: str = field(repr=False)
    sent: int | None
    received: int | None
    # "Received relay addr: IP:PORT" lines (-v): one per successful allocation.
    relays: list[str] = field(default_factory=list)
    # TURN errors and fatal ends it printed: "channel bind: error 403 (Forbidden IP)",
    # "ERROR: Cannot complete Allocation", ... (not its TLS retries: -S tries TLS versions at
    # random and a refused version is retried with another, printing "error:0A000438:...").
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = self.output.splitlines()
        shown = "\n".join(lines[:25] + (["..."] if len(lines) > 45 else []) + lines[-20:]) \
            if len(lines) > 45 else self.output
        return (f"$ {' '.join(self.command)}\nexit {self.returncode}; sent {self.sent}, "
                f"received {self.received}; relays {self.relays}; errors {self.errors}\n{shown}")


def parse_uclient(command: list[str], returncode: int, output: str) -> Uclient:
    # The final summary has no msz=; progress lines ("start_mclient: msz=2, tot_send_msgs=...")
    # come before it.
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
    sent, received = (int(totals[-1][0]), int(totals[-1][1])) if totals else (None, None)
    relays = re.findall(r"Received relay addr: (\S+)", output)
    errors = [line.split(": : ", 1)[-1].strip() for line in output.splitlines()
              if re.search(r"\berror \d{3}\b|\bERROR:", line)]
    return Uclient(command, returncode, output, sent, received, relays, errors)


def uclient(port: int, peer_port: int, transport: str = "udp", mode: str = "channel",
            user: str = "e2e-user", secret: str | None = SECRET, password: str | None = None,
            messages: int = MESSAGES, clients: int = CLIENTS) -> Uclient:
    """Runs turnutils_uclient against 127.0.0.1:port relaying to the echo peer on 127.0.0.1:
    peer_port. REST credentials (-W secret, uclient makes the time-limited user name and the
    password) unless ``password`` is given: then ``user``/``password`` are long-term credentials."""
    auth = ["-u", user] + (["-w", password] if password is not None else ["-W", secret])
    command = [UCLIENT, "-v", "-c", "-e", "127.0.0.1", "-r", str(peer_port), "-X", "-g",
               "-n", str(messages), "-m", str(clients), "-l", "170",
               *TRANSPORT_FLAGS[transport], *MODE_FLAGS[mode], *auth, "-p", str(port), "127.0.0.1"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=UCLIENT_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise AssertionError(f"turnutils_uclient did not finish in {UCLIENT_TIMEOUT} s:\n"
                             f"$ {' '.join(command)}\n{out[-4000:]}") from None
    return parse_uclient(command, done.returncode, done.stdout + done.stderr)


def log_tail(log: Path, chars: int = 4000) -> str:
    return f"--- tail of {log} ---\n{log.read_text(errors='replace')[-chars:]}"


def assert_everything_echoed(run: Uclient, server_log: Path):
    """Every allocation succeeded and every message came back (what coturn does on loopback)."""
    context = f"{run.describe()}\n{log_tail(server_log)}"
    failed = run.returncode != 0 or bool(run.errors)
    assert not failed, f"uclient failed:\n{context}"
    assert run.relays, f"uclient reported no relayed address:\n{context}"
    assert run.sent == EXPECTED_MESSAGES, f"uclient did not send all messages:\n{context}"
    lost = run.sent - (run.received or 0)
    assert lost == 0, f"{lost} of {run.sent} messages did not come back:\n{context}"


def assert_relay_refused(run: Uclient, server_log: Path, mode: str):
    """The allocation succeeded (the server is up and the credentials are good), then the
    permission for the peer was refused with 403 and nothing was relayed."""
    context = f"{run.describe()}\n{log_tail(server_log)}"
    assert run.relays, f"no allocation succeeded, so this proves no refusal:\n{context}"
    request = "channel bind" if mode == "channel" else "create permission"
    refused = [e for e in run.errors if request in e.lower() and "403" in e]
    assert refused, f"uclient did not report a 403 for its {request} request:\n{context}"
    assert run.returncode != 0, f"uclient exited 0 although refused:\n{context}"
    assert not run.received, f"messages came back through a refused relay:\n{context}"


def assert_allocation_refused(run: Uclient, server_log: Path):
    context = f"{run.describe()}\n{log_tail(server_log)}"
    assert not run.relays, f"an allocation succeeded with wrong credentials:\n{context}"
    assert any("cannot complete allocation" in e.lower() for e in run.errors), context
    assert run.returncode != 0 and not run.received, context


# ---------------------------------------------------------------------------------------------
# Processes: the echo peer, coturn, rtcbox with TURN.

def echoes(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(b"rtcbox-e2e-probe", ("127.0.0.1", port))
        return s.recvfrom(2048)[0] == b"rtcbox-e2e-probe"


@pytest.fixture(scope="module")
def echo_peer(tmp_path_factory) -> int:
    """coturn's UDP echo peer on 127.0.0.1; its port."""
    port = free_udp_port()
    log = tmp_path_factory.mktemp("echo-peer") / "peer.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([PEER, "-L", "127.0.0.1", "-p", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: process.poll() is None and echoes(port), 15, "turnutils_peer")
    except TimeoutError as e:
        process.kill()
        raise AssertionError(f"{e}\n{log_tail(log)}") from None
    yield port
    process.terminate()
    process.wait(10)


@dataclass
class Coturn:
    ports: dict[str, int]
    log: Path


@pytest.fixture(scope="module")
def start_coturn(tmp_path_factory, pki):
    """Starts coturn (no config file) with the REST secret on free loopback ports."""
    processes = []

    def start(name: str, allow_loopback: bool) -> Coturn:
        d = tmp_path_factory.mktemp(name)
        port, tls_port = free_udp_tcp_port(), free_port()
        relay_min, relay_max = free_relay_range(40)
        log = d / "turnserver.log"
        # Everything on the command line (-n: no config file), state in the test's directory.
        # TLS versions stay coturn's defaults: uclient -S picks SSLv23, TLSv1, TLSv1.1 or TLSv1.2
        # at random per connection and retries another when one is refused, but coturn does not
        # refuse a disabled version, it stalls the handshake until its 60 s timeout.
        command = [TURNSERVER, "-n", "--no-cli", "--simple-log", f"--log-file={log}",
                   f"--pidfile={d / 'turnserver.pid'}", f"--userdb={d / 'turndb'}",
                   "--use-auth-secret", f"--static-auth-secret={SECRET}", "--realm=rtcbox.test",
                   "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
                   f"--listening-port={port}", f"--tls-listening-port={tls_port}",
                   f"--min-port={relay_min}", f"--max-port={relay_max}",
                   f"--cert={pki['cert']}", f"--pkey={pki['key']}", "--no-dtls"]
        if allow_loopback:
            command.append("--allow-loopback-peers")
        with open(d / "turnserver.out", "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        server = Coturn({"udp": port, "tcp": port, "tls": tls_port}, log)
        wait_turn_ready(name, server.ports, log)
        return server

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def coturn(start_coturn) -> Coturn:
    return start_coturn("coturn", allow_loopback=True)


@pytest.fixture(scope="module")
def strict_coturn(start_coturn) -> Coturn:
    return start_coturn("coturn-strict", allow_loopback=False)


def turn_ports(box) -> dict[str, int]:
    return {"udp": box.turn_port, "tcp": box.turn_port, "tls": box.turn_tls_port}


def relay_env(size: int = 40) -> dict:
    """A relay range with room for every allocation the uclient runs against one rtcbox make:
    uclient leaves its UDP allocations to expire (coturn runs out of a 4-port range after two
    single-allocation runs just as rtcbox does), and EVEN-PORT takes only even ports."""
    first, last = free_relay_range(size)
    return {"RTCBOX_TURN_RELAY_PORTS": f"{first}-{last}"}


@pytest.fixture(scope="module")
def turn_box(start_module_rtcbox):
    """rtcbox with the REST secret and loopback allowed as a relay peer (an SFU too, so the
    participant-credential test can join it)."""
    box = start_module_rtcbox(dict(sfu_env(), **relay_env(), RTCBOX_TURN_SHARED_SECRET=SECRET,
                                   RTCBOX_TURN_ALLOW_PEERS="127.0.0.1/32"), name="turn",
                              public_url="self")
    wait_turn_ready("rtcbox", turn_ports(box), box.log)
    return box


@pytest.fixture(scope="module")
def strict_box(start_module_rtcbox):
    """rtcbox with the REST secret and the relay policy's defaults (loopback refused)."""
    box = start_module_rtcbox(dict(relay_env(), RTCBOX_TURN_SHARED_SECRET=SECRET),
                              name="turn-strict")
    wait_turn_ready("rtcbox", turn_ports(box), box.log)
    return box


# ---------------------------------------------------------------------------------------------
# a. REST credentials, every transport, both data paths: coturn first, then rtcbox.

PATHS = [(t, m) for t in TRANSPORT_FLAGS for m in MODE_FLAGS]
PATH_IDS = [f"{t}-{m}" for t, m in PATHS]


@pytest.mark.parametrize("transport,mode", PATHS, ids=PATH_IDS)
def test_coturn_baseline_echoes_every_message(coturn, echo_peer, transport, mode):
    """The anchor: coturn with the same secret and the same uclient command returns every
    message on loopback. If this fails, the tools or the machine are at fault, not rtcbox."""
    run = uclient(coturn.ports[transport], echo_peer, transport, mode)
    assert_everything_echoed(run, coturn.log)


@pytest.mark.parametrize("transport,mode", PATHS, ids=PATH_IDS)
def test_rtcbox_relays_with_rest_credentials(turn_box, echo_peer, transport, mode):
    """rtcbox as coturn's drop-in: REST credentials from the shared secret, the echo peer
    allow-listed; every message sent through the relay comes back, as with coturn."""
    run = uclient(turn_ports(turn_box)[transport], echo_peer, transport, mode)
    assert_everything_echoed(run, turn_box.log)


# ---------------------------------------------------------------------------------------------
# b. The relay policy: loopback peers are refused unless allow-listed.

@pytest.mark.parametrize("mode", MODE_FLAGS)
def test_coturn_baseline_refuses_loopback_peer(strict_coturn, echo_peer, mode):
    """What a refusal looks like to uclient: allocation fine, then 403 for the permission."""
    run = uclient(strict_coturn.ports["udp"], echo_peer, "udp", mode)
    assert_relay_refused(run, strict_coturn.log, mode)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("mode", MODE_FLAGS)
def test_rtcbox_refuses_loopback_peer_unless_allowed(strict_box, echo_peer, transport, mode):
    run = uclient(strict_box.turn_port, echo_peer, transport, mode)
    assert_relay_refused(run, strict_box.log, mode)


# ---------------------------------------------------------------------------------------------
# c. Synapse's turn_shared_secret: credentials from /voip/turnServer work against rtcbox.

def uri_transport(uri: str) -> tuple[str, str, int]:
    """('udp'|'tcp'|'tls', host, port) of a turn:/turns: URI."""
    scheme, _, rest = uri.partition(":")
    hostport, _, query = rest.partition("?")
    host, _, port = hostport.rpartition(":")
    transport = urllib.parse.parse_qs(query).get("transport", ["udp"])[0]
    if scheme == "turns":
        return "tls", host, int(port)
    return transport, host, int(port)


def expected_uris(box, tls: bool) -> set[str]:
    """The TURN URIs rtcbox hands out; ``turns:`` only while its certificate is one browsers
    trust (a self-signed one would make them fail the TLS handshake)."""
    uris = {f"turn:127.0.0.1:{box.turn_port}?transport=udp",
            f"turn:127.0.0.1:{box.turn_port}?transport=tcp"}
    if tls:
        uris.add(f"turns:127.0.0.1:{box.turn_tls_port}?transport=tcp")
    return uris


def trusted_certificate_env(pki: dict) -> dict:
    """rtcbox serving the suite's server certificate (files mode) with the suite's CA as this
    system's roots (SSL_CERT_FILE, which rustls-native-certs reads): a certificate "browsers
    trust", so ``turns:`` is offered."""
    return {"RTCBOX_TLS_MODE": "files", "RTCBOX_TLS_CERT_FILE": pki["cert"],
            "RTCBOX_TLS_KEY_FILE": pki["key"], "SSL_CERT_FILE": pki["ca"]}


def test_synapse_turn_credentials_from_the_wizard_snippet_work(start_rtcbox, synapse, tmp_path,
                                                              pki, echo_peer):
    """The wizard (legacy 1:1 calls on) generates turn_uris/turn_shared_secret; a Synapse with
    that snippet merged in hands a registered user credentials that relay through rtcbox over
    every URI it lists, ``turns:`` included because rtcbox serves a certificate this system
    trusts. The wizard's secret takes effect when rtcbox restarts (as the admin panel says of
    every setting it saves)."""
    from test_admin_synapse import Panel, walk_wizard

    allow = {"RTCBOX_TURN_ALLOW_PEERS": "127.0.0.1/32", **relay_env(),
             **trusted_certificate_env(pki)}
    box = start_rtcbox(allow, name="wizard")
    panel = Panel(box)
    panel.set_up()
    walk_wizard(panel, synapse, rtc_url=box.url, legacy_turn="on")
    snippet = panel.output("homeserver-yaml").text
    stored_secret = box.stored().get("turn_shared_secret", "")
    assert len(stored_secret) >= 32, "the wizard stored no TURN shared secret"
    config = yaml.safe_load(snippet)
    assert config.get("turn_shared_secret") == stored_secret, snippet
    assert set(config.get("turn_uris", [])) == expected_uris(box, tls=True), \
        f"the snippet's turn_uris do not name rtcbox's TURN listeners:\n{snippet}"

    # Restart on the same data directory and TURN ports: now TURN uses the stored secret.
    box.process.terminate()
    box.process.wait(15)
    box = start_rtcbox(dict(allow, RTCBOX_TURN_PORT=str(box.turn_port),
                            RTCBOX_TURN_TLS_PORT=str(box.turn_tls_port)), name="wizard")

    (tmp_path / "synapse-turn").mkdir()
    hs = start_synapse(tmp_path / "synapse-turn", pki, extra_config=config)
    try:
        user = hs.register("legacy-caller")
        response = requests.get(f"{hs.client_url}/_matrix/client/v3/voip/turnServer",
                                headers={"Authorization": f"Bearer {user['access_token']}"},
                                timeout=10)
        assert response.status_code == 200, response.text
        turn = response.json()
    finally:
        stop_synapse(hs)
    assert set(turn.get("uris", [])) == expected_uris(box, tls=True), turn
    assert turn.get("ttl") == 3600, turn  # turn_user_lifetime: 1h
    username, password = turn.get("username", ""), turn.get("password", "")
    assert username.endswith(f":{user['user_id']}") and password, turn

    wait_turn_ready("rtcbox", turn_ports(box), box.log)
    for uri in sorted(turn["uris"]):
        transport, host, port = uri_transport(uri)
        run = uclient(port, echo_peer, transport, "channel", user=username, secret=None,
                      password=password)
        try:
            assert_everything_echoed(run, box.log)
        except AssertionError as e:
            raise AssertionError(f"over {uri}: {e}") from None

    wrong_password = ("A" if password[0] != "A" else "B") + password[1:]
    wrong = uclient(box.turn_port, echo_peer, "udp", "channel", user=username, secret=None,
                    password=wrong_password)
    assert_allocation_refused(wrong, box.log)


# ---------------------------------------------------------------------------------------------
# d. A LiveKit participant behind "relay only", with the ICE servers rtcbox's JoinResponse gives.

def selected_local_candidates(stats: list) -> list:
    """The local candidate (IceCandidateStats) of every transport's selected candidate pair."""
    by_id = {}
    for s in stats:
        kind = s.WhichOneof("stats")
        if kind:
            by_id[getattr(s, kind).rtc.id] = s
    found = []
    for s in stats:
        if s.WhichOneof("stats") != "transport":
            continue
        pair_id = s.transport.transport.selected_candidate_pair_id
        if not pair_id or pair_id not in by_id:
            continue
        pair = by_id[pair_id].candidate_pair.candidate_pair
        local = by_id.get(pair.local_candidate_id)
        if local is not None:
            found.append(local.local_candidate.candidate)
    return found


async def wait_selected_candidates(peer: lk.Peer, timeout: float = lk.WAIT) -> list:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await peer.room.get_rtc_stats()
        found = selected_local_candidates(list(stats.publisher_stats)) + \
            selected_local_candidates(list(stats.subscriber_stats))
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"{peer.label}: no transport with a selected candidate pair "
                                 f"in its RTC stats after {timeout:.0f} s")
        await asyncio.sleep(0.2)


def describe_candidate(c) -> str:
    kind = rtc.stats.IceCandidateType.Name(c.candidate_type)
    relay = rtc.stats.IceServerTransportProtocol.Name(c.relay_protocol) if kind == "RELAY" else "-"
    return f"{kind} {c.protocol} {c.address}:{c.port} (relay protocol {relay}, url {c.url!r})"


def test_relay_only_participant_exchanges_media_through_rtcbox_turn(start_rtcbox):
    """No RTCBOX_TURN_ALLOW_PEERS: relaying to the SFU's own media address is always allowed.
    Alice may only use relay candidates and is given no ICE servers of her own (the SDK then
    uses the JoinResponse's); Bob connects directly. Audio and video go from Alice to Bob and
    audio from Bob to Alice; Alice's selected candidate pair is local relay (via rtcbox's TURN
    port), Bob's is not."""
    box = start_rtcbox(sfu_env(), public_url="self")
    wait_turn_ready("rtcbox", turn_ports(box), box.log)
    lk.run(relay_scenario(box), box)


async def relay_scenario(box):
    room = lk.unique("py-relay")
    relay_only = rtc.RoomOptions(rtc_config=rtc.RtcConfiguration(
        ice_transport_type=rtc.IceTransportType.TRANSPORT_RELAY, ice_servers=[]))
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    alice = bob = None
    try:
        await lk.create_room(lkapi, room)
        try:
            alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room),
                                  "alice (relay only)", relay_only)
        except AssertionError as e:
            raise AssertionError(
                f"{e}. Relay only, she can reach the SFU only through the TURN servers in "
                "rtcbox's JoinResponse.ice_servers (see test_participant_credentials_relay_to_"
                "the_sfu_only for what they are); without them she never connects.") from None
        bob = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "bob", room), "bob")

        await lk.publish_media(alice)
        await lk.publish_media(bob, video=False)
        await lk.assert_media_flows(bob, "alice")
        track = await lk.wait_subscribed(alice, "bob", rtc.TrackKind.KIND_AUDIO)
        lk.assert_is_tone(await lk.receive_tone(track))

        ports = {box.turn_port, box.turn_tls_port}
        for candidate in await wait_selected_candidates(alice):
            assert candidate.candidate_type == rtc.stats.IceCandidateType.RELAY, \
                f"alice (relay only) uses a non-relay candidate: {describe_candidate(candidate)}"
            assert any(f"127.0.0.1:{p}?" in candidate.url for p in ports), \
                f"alice's relay candidate is not from rtcbox's TURN ports {ports}: " \
                f"{describe_candidate(candidate)}"
            print(f"alice's selected local candidate: {describe_candidate(candidate)}")
        for candidate in await wait_selected_candidates(bob):
            assert candidate.candidate_type != rtc.stats.IceCandidateType.RELAY, \
                f"bob (direct) ended up relayed: {describe_candidate(candidate)}"
    finally:
        await lk.leave_all(alice, bob)
        await lkapi.aclose()


async def join_response(ws) -> "signal.JoinResponse":
    first = await asyncio.wait_for(ws.recv(), lk.WAIT)
    response = signal.SignalResponse.FromString(first)
    assert response.WhichOneof("message") == "join", f"first signalling message: {response}"
    return response.join


def test_participant_credentials_relay_to_the_sfu_only(turn_box, echo_peer):
    """The JoinResponse's ice_servers name rtcbox's TURN listeners, and their credentials are
    good for an allocation but not for relaying anywhere but the SFU: the echo peer is refused
    although RTCBOX_TURN_ALLOW_PEERS lets REST credentials reach it (tests above)."""

    async def scenario() -> Uclient:
        room = lk.unique("py-turn-creds")
        lkapi = lk.server_api(turn_box.url, API_KEY, API_SECRET)
        try:
            await lk.create_room(lkapi, room)
        finally:
            await lkapi.aclose()
        query = urllib.parse.urlencode({
            "access_token": lk.join_token(API_KEY, API_SECRET, "carol", room),
            "sdk": "python", "protocol": "16", "auto_subscribe": "1"})
        # A raw signalling session (the SDK does not show its JoinResponse), kept open while
        # uclient uses its credentials.
        async with ws_connect(f"{turn_box.ws_url}/rtc?{query}", open_timeout=lk.WAIT,
                              max_size=None) as ws:
            join = await join_response(ws)
            servers = list(join.ice_servers)
            urls = {u for server in servers for u in server.urls}
            # turn_box serves its self-signed certificate: no turns: for participants.
            assert urls == expected_uris(turn_box, tls=False), \
                f"JoinResponse.ice_servers: {servers}"
            udp = f"turn:127.0.0.1:{turn_box.turn_port}?transport=udp"
            server = next(s for s in servers if udp in s.urls)
            assert server.username and server.credential, servers
            return await asyncio.to_thread(
                uclient, turn_box.turn_port, echo_peer, "udp", "channel",
                user=server.username, secret=None, password=server.credential)

    run = lk.run(scenario(), turn_box, timeout=120)
    assert_relay_refused(run, turn_box.log, "channel")
