"""No single unauthenticated client can lock others out of a stream listener (issue 14).

Each test reproduces a flood against the real binary on loopback from one address, 127.0.0.2
(Linux answers the whole of 127/8 without setup), and then shows that a legitimate client on
127.0.0.1 is still served while the attacker's connections are open. Nothing here measures
speed: the tests assert service, and waits are generous bounds on liveness.
"""

from __future__ import annotations

import resource
import socket
import time

import pytest

from conftest import wait_until
from test_turn import (SECRET, assert_everything_echoed, binding_request, echo_peer,  # noqa: F401
                       coturn_tools, relay_env, turn_ports, uclient, wait_turn_ready)

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
        s = socket.socket()
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
