"""ACME (HTTP-01 and TLS-ALPN-01) against Debian's pebble, Let's Encrypt's test CA, everything on
loopback.

pebble listens on 127.0.0.1 with the suite's test certificate (rtcbox trusts it through
RTCBOX_ACME_CA_FILE) and resolves every name through pebble-challtestsrv, which answers A queries
with 127.0.0.1 and AAAA with nothing; so pebble validates ``http://rtc.test:<httpPort>/.well-known/
acme-challenge/…`` on 127.0.0.1, where ``httpPort`` is rtcbox's public HTTP port (the real CA's
port 80), and TLS-ALPN-01 at ``rtc.test:<tlsPort>``, rtcbox's HTTPS port (the real CA's 443).
rtcbox is always pointed at pebble (RTCBOX_ACME_DIRECTORY): a test never reaches Let's Encrypt.
Debian's pebble (2.4) has no ARI (no ``renewalInfo`` in its directory), so these runs take the
"a third of the lifetime" path; the ARI decisions are unit-tested in ``acme::plan``.

- Issuance: rtcbox obtains a certificate for rtc.test; it is stored, and TURN over TLS serves it
  without a restart: a TLS client trusting only pebble's root (from pebble's management
  endpoint /roots/0) verifies it for ``rtc.test``. The dashboard says where it came from.
- Failure: pebble validates on a closed port; rtcbox explains the failed challenge in plain words
  (log and dashboard), keeps its self-signed certificate and schedules a retry.
- TLS-ALPN-01: with pebble's HTTP-01 port closed, rtcbox obtains the certificate by answering
  ``acme-tls/1`` on its HTTPS port; a client verifying against pebble's root gets it there and on
  TURN over TLS, the web application still answers on the HTTPS port, and once no challenge
  waits an ``acme-tls/1`` handshake is refused.
- "Renew now": the admin panel's button makes rtcbox order again at once; an HTTPS keep-alive
  connection opened before keeps working with its certificate, new connections get the new one.
"""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect as ws_connect

import lk_helpers as lk

from conftest import free_port, free_udp_tcp_port, stop_processes, wait_until
from lk_helpers import API_KEY, API_SECRET, sfu_env
from test_admin_synapse import Panel
from test_turn import join_response

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"
DOMAIN = "rtc.test"


@pytest.fixture(scope="module", autouse=True)
def pebble_tools():
    """pebble and its DNS come from Debian's pebble package."""
    missing = [p for p in (PEBBLE, CHALLTESTSRV) if not os.access(p, os.X_OK)]
    if missing:
        message = f"pebble is missing ({', '.join(missing)}): apt-get install pebble"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def distinct_ports(count: int, taken: set) -> list[int]:
    """``count`` free TCP ports on 127.0.0.1, none in ``taken`` and no two alike."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


class Pebble:
    def __init__(self, directory: str, management: str, processes: list):
        self.directory = directory
        self.management = management
        self.processes = processes

    def root_pem(self, ca_file: str) -> str:
        """The root pebble signs with (a new one per pebble start)."""
        response = requests.get(f"{self.management}/roots/0", verify=ca_file, timeout=10)
        response.raise_for_status()
        return response.text


@pytest.fixture
def start_pebble(tmp_path, pki):
    started = []

    def start(http_port: int, tls_port: int | None = None,
              dns_server: str | None = None) -> Pebble:
        """pebble validating HTTP-01 on ``http_port`` and TLS-ALPN-01 on ``tls_port``; it
        resolves names through ``dns_server`` (host:port), by default a pebble-challtestsrv
        answering 127.0.0.1."""
        # Every port is chosen before any process starts: a port picked while an earlier
        # process has not bound its own yet could be picked twice.
        taken = {http_port, tls_port}
        if dns_server is None:
            dns_port = free_udp_tcp_port()
            while dns_port in taken:
                dns_port = free_udp_tcp_port()
            taken.add(dns_port)
        listen, management, cts_management, spare_tls = distinct_ports(4, taken)
        if dns_server is None:
            cts = subprocess.Popen(
                [CHALLTESTSRV, "-dns01", f"127.0.0.1:{dns_port}", "-defaultIPv4", "127.0.0.1",
                 "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "",
                 "-management", f"127.0.0.1:{cts_management}"],
                stdout=open(tmp_path / "challtestsrv.log", "wb"), stderr=subprocess.STDOUT)
            started.append(cts)
            dns_server = f"127.0.0.1:{dns_port}"
        config = tmp_path / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{listen}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": pki["cert"], "privateKey": pki["key"],
            # Where pebble validates HTTP-01 (port 80 for a real CA) and TLS-ALPN-01 (443).
            "httpPort": http_port, "tlsPort": tls_port or spare_tls,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="0")
        log = tmp_path / "pebble.log"
        process = subprocess.Popen(
            [PEBBLE, "-config", str(config), "-dnsserver", dns_server],
            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        started.append(process)
        directory = f"https://127.0.0.1:{listen}/dir"
        try:
            wait_until(lambda: process.poll() is None
                       and requests.get(directory, verify=pki["ca"], timeout=2).ok, 20, "pebble")
        except TimeoutError:
            raise RuntimeError(f"pebble did not start:\n{log.read_text(errors='replace')[-3000:]}")
        return Pebble(directory, f"https://127.0.0.1:{management}", started)

    yield start
    stop_processes(started)


def acme_env(pebble: Pebble, pki: dict, http_port: int) -> dict:
    return {**sfu_env(), "RTCBOX_HTTP_BIND": f"127.0.0.1:{http_port}", "RTCBOX_TLS_MODE": "acme",
            "RTCBOX_ACME_DOMAINS": DOMAIN, "RTCBOX_ACME_EMAIL": "admin@rtc.test",
            "RTCBOX_ACME_DIRECTORY": pebble.directory, "RTCBOX_ACME_CA_FILE": pki["ca"]}


def tls_alpn_env(pebble: Pebble, pki: dict, https_port: int) -> dict:
    return dict(acme_env(pebble, pki, free_port()), RTCBOX_ACME_CHALLENGE="tls-alpn-01",
                RTCBOX_HTTPS_BIND=f"127.0.0.1:{https_port}")


def stored_certificate(box) -> tuple[str, str]:
    with sqlite3.connect(box.data_dir / "rtcbox.db") as db:
        return db.execute("SELECT source, cert_pem FROM certificates WHERE id = 'default'").fetchone()


def dashboard_text(box) -> str:
    panel = Panel(box)
    panel.set_up()
    return dashboard_text_of(panel)


def dashboard_text_of(panel: Panel) -> str:
    page = panel.get("/").text
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def assert_turn_tls_answers(box):
    """TURN over TLS completes a handshake with some certificate (the self-signed one after a
    failed order)."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", box.turn_tls_port), timeout=10) as tcp:
        with insecure.wrap_socket(tcp, server_hostname=DOMAIN) as tls:
            assert tls.getpeercert(binary_form=True)


def offered_turn_urls(box) -> set[str]:
    """The TURN URLs rtcbox hands a participant in its JoinResponse."""
    async def scenario():
        room = lk.unique("acme")
        lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
        try:
            await lk.create_room(lkapi, room)
        finally:
            await lkapi.aclose()
        query = urllib.parse.urlencode({
            "access_token": lk.join_token(API_KEY, API_SECRET, "erin", room),
            "sdk": "python", "protocol": "16", "auto_subscribe": "1"})
        async with ws_connect(f"{box.ws_url}/rtc?{query}", open_timeout=lk.WAIT) as ws:
            join = await join_response(ws)
        return {url for server in join.ice_servers for url in server.urls}

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def test_http01_certificate_is_issued_stored_and_served_by_turn_tls(start_pebble, start_rtcbox,
                                                                     pki, tmp_path):
    http_port = free_port()
    pebble = start_pebble(http_port)
    box = start_rtcbox(acme_env(pebble, pki, http_port))

    wait_until(lambda: stored_certificate(box)[0] == "acme", 60,
               f"an ACME certificate (log:\n{box.log_text()[-3000:]})")
    assert "ACME: installed a new certificate" in box.log_text()

    # TURN over TLS serves it now, without a restart, and it chains to pebble's root.
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem(pki["ca"]))
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", box.turn_tls_port), timeout=10) as tcp:
        with context.wrap_socket(tcp, server_hostname=DOMAIN) as tls:
            served = tls.getpeercert()
    names = [value for kind, value in served["subjectAltName"] if kind == "DNS"]
    assert names == [DOMAIN], served
    # The suite's own CA (pebble's HTTPS) does not vouch for it: the chain is pebble's.
    strict = ssl.create_default_context(cafile=pki["ca"])
    with socket.create_connection(("127.0.0.1", box.turn_tls_port), timeout=10) as tcp:
        with pytest.raises(ssl.SSLCertVerificationError):
            strict.wrap_socket(tcp, server_hostname=DOMAIN)

    # The account was stored once; the key never reaches the log.
    with sqlite3.connect(box.data_dir / "rtcbox.db") as db:
        (accounts,) = db.execute("SELECT COUNT(*) FROM acme_accounts").fetchone()
        (key_pem,) = db.execute("SELECT key_pem FROM certificates").fetchone()
    assert accounts == 1
    key_body = "".join(key_pem.strip().splitlines()[1:-1])
    assert key_body[:40] not in box.log_text()

    text = dashboard_text(box)
    assert "from the ACME CA" in text and "certificate valid" in text, text[-3000:]
    assert "ACME last error" not in text
    # A certificate browsers accept: TURN over TLS is now handed to participants.
    assert "offered: browsers trust this certificate" in text
    # On the TURN-TLS port, and on the public URL's port (wss://rtc.test, so 443 on the
    # router), which leads to the HTTPS listener that carries TURN over TLS as well.
    urls = offered_turn_urls(box)
    assert {f"turns:{DOMAIN}:{box.turn_tls_port}?transport=tcp",
            f"turns:{DOMAIN}:443?transport=tcp"} <= urls, urls


def test_unreachable_challenge_port_is_explained_and_the_old_certificate_kept(start_pebble,
                                                                             start_rtcbox, pki):
    http_port = free_port()
    closed = free_port()  # nothing listens here: pebble's validation is refused
    pebble = start_pebble(closed)
    box = start_rtcbox(acme_env(pebble, pki, http_port))

    advice = (f"the CA could not reach http://{DOMAIN}/.well-known/acme-challenge/…: forward port "
              f"80 to rtcbox's HTTP port {http_port}")
    wait_until(lambda: advice in box.log_text(), 60,
               f"the explained failure (log:\n{box.log_text()[-3000:]})")
    assert "retrying in 60 s" in box.log_text()
    source, _ = stored_certificate(box)
    assert source == "self-signed"
    # TURN over TLS still answers with the self-signed certificate.
    assert_turn_tls_answers(box)

    text = dashboard_text(box)
    assert "self-signed" in text and "failed, retry scheduled" in text, text[-3000:]
    assert advice in text
    # Browsers would reject the self-signed certificate: no turns: for participants.
    urls = offered_turn_urls(box)
    assert urls and not any(url.startswith("turns:") for url in urls), urls


def test_an_unreachable_ca_is_explained_and_the_old_certificate_kept(start_rtcbox, pki):
    """The CA is down (nothing listens at the directory's port): the dashboard and the log say
    rtcbox cannot reach it, the self-signed certificate stays served, a retry is scheduled."""
    http_port = free_port()
    directory = f"https://127.0.0.1:{free_port()}/dir"
    env = acme_env(Pebble(directory, "", []), pki, http_port)
    box = start_rtcbox(env)

    advice = f"rtcbox cannot reach the ACME server {directory}"
    wait_until(lambda: advice in box.log_text(), 60,
               f"the explained failure (log:\n{box.log_text()[-3000:]})")
    assert "the current certificate stays; retrying in 60 s" in box.log_text()
    assert stored_certificate(box)[0] == "self-signed"
    assert_turn_tls_answers(box)
    text = dashboard_text(box)
    assert advice in text and "failed, retry scheduled" in text, text[-3000:]
    assert "next attempt" in text


def test_a_restart_serves_the_stored_certificate_and_reuses_the_account(start_pebble, start_rtcbox,
                                                                       pki, tmp_path):
    http_port = free_port()
    pebble = start_pebble(http_port)
    env = acme_env(pebble, pki, http_port)
    box = start_rtcbox(env)
    wait_until(lambda: stored_certificate(box)[0] == "acme", 60,
               f"an ACME certificate (log:\n{box.log_text()[-3000:]})")
    _, issued = stored_certificate(box)
    box.process.terminate()
    box.process.wait(15)

    again = start_rtcbox(env)  # same name: the same data directory
    assert again.data_dir == box.data_dir
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem(pki["ca"]))
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", again.turn_tls_port), timeout=10) as tcp:
        with context.wrap_socket(tcp, server_hostname=DOMAIN) as tls:
            served = ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
    assert served.strip() in issued
    # Not due for renewal (pebble's certificates last years): no new order, no new account.
    wait_until(lambda: "ACME: certificates come from the CA" in again.log_text(), 30, "ACME task")
    assert stored_certificate(again)[1] == issued
    with sqlite3.connect(again.data_dir / "rtcbox.db") as db:
        assert db.execute("SELECT COUNT(*) FROM acme_accounts").fetchone() == (1,)
    assert "created an ACME account" not in again.log_text()
    assert "installed a new certificate" not in again.log_text()


def leaf_der(chain_pem: str) -> bytes:
    first = chain_pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first.strip() + "\n")


def served_der(port: int, context: ssl.SSLContext) -> bytes:
    """The certificate a new TLS connection to ``port`` gets for ``rtc.test``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as tcp:
        with context.wrap_socket(tcp, server_hostname=DOMAIN) as tls:
            return tls.getpeercert(binary_form=True)


def pebble_context(pebble: Pebble, pki: dict, tmp_path: Path) -> ssl.SSLContext:
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem(pki["ca"]))
    return ssl.create_default_context(cafile=str(root))


def https_connection(port: int, context: ssl.SSLContext) -> http.client.HTTPConnection:
    """A keep-alive HTTPS connection to rtcbox's HTTPS port, for ``rtc.test`` (SNI and Host)."""
    tcp = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection = http.client.HTTPConnection(DOMAIN, port, timeout=10)
    connection.sock = context.wrap_socket(tcp, server_hostname=DOMAIN)
    return connection


def healthz(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert not response.will_close, "the connection stays open"
    return response.status


def test_tls_alpn01_certificate_is_served_on_https_and_turn_tls(start_pebble, start_rtcbox, pki,
                                                                tmp_path):
    https_port = free_port()
    closed = free_port()  # pebble's HTTP-01 port: nothing answers there
    pebble = start_pebble(closed, tls_port=https_port)
    box = start_rtcbox(tls_alpn_env(pebble, pki, https_port))

    wait_until(lambda: stored_certificate(box)[0] == "acme", 60,
               f"an ACME certificate (log:\n{box.log_text()[-3000:]})")
    assert 'challenge="tls-alpn-01"' in box.log_text()
    _, issued = stored_certificate(box)

    # The HTTPS port and TURN over TLS serve it, and it chains to pebble's root.
    context = pebble_context(pebble, pki, tmp_path)
    wait_until(lambda: served_der(https_port, context) == leaf_der(issued), 10, "the new certificate")
    assert served_der(box.turn_tls_port, context) == leaf_der(issued)
    with socket.create_connection(("127.0.0.1", https_port), timeout=10) as tcp:
        with context.wrap_socket(tcp, server_hostname=DOMAIN) as tls:
            names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
    assert names == [DOMAIN]
    # The web application answers on the same port.
    connection = https_connection(https_port, context)
    assert healthz(connection) == 200
    connection.close()

    # No challenge waits now: a CA-style acme-tls/1 handshake is refused.
    validator = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    validator.check_hostname = False
    validator.verify_mode = ssl.CERT_NONE
    validator.set_alpn_protocols(["acme-tls/1"])
    with socket.create_connection(("127.0.0.1", https_port), timeout=10) as tcp:
        with pytest.raises(ssl.SSLError):
            validator.wrap_socket(tcp, server_hostname=DOMAIN)

    text = dashboard_text(box)
    assert "from the ACME CA" in text and "certificate valid" in text, text[-3000:]


def test_renew_now_replaces_the_certificate_and_open_connections_keep_theirs(start_pebble,
                                                                             start_rtcbox, pki,
                                                                             tmp_path):
    https_port = free_port()
    pebble = start_pebble(free_port(), tls_port=https_port)
    box = start_rtcbox(tls_alpn_env(pebble, pki, https_port))
    wait_until(lambda: stored_certificate(box)[0] == "acme", 60,
               f"an ACME certificate (log:\n{box.log_text()[-3000:]})")
    _, first = stored_certificate(box)
    context = pebble_context(pebble, pki, tmp_path)
    wait_until(lambda: served_der(https_port, context) == leaf_der(first), 10, "the first certificate")

    # A keep-alive connection opened with the first certificate.
    before = https_connection(https_port, context)
    assert healthz(before) == 200
    assert before.sock.getpeercert(binary_form=True) == leaf_der(first)

    panel = Panel(box)
    panel.set_up()
    assert 'action="/certificate/renew"' in panel.get("/").text
    pressed = panel.post("/certificate/renew", {})
    assert pressed.status_code == 303 and pressed.headers["location"] == "/", pressed.text

    wait_until(lambda: stored_certificate(box)[1] != first, 60,
               f"a renewed certificate (log:\n{box.log_text()[-3000:]})")
    _, second = stored_certificate(box)
    assert leaf_der(second) != leaf_der(first)
    assert "a renewal was asked for in the admin panel" in box.log_text()
    # New connections get the new certificate (installed right after it is stored) ...
    wait_until(lambda: served_der(https_port, context) == leaf_der(second), 10,
               "the renewed certificate on new connections")
    assert served_der(box.turn_tls_port, context) == leaf_der(second)
    # ... and the connection from before still answers, with its certificate.
    assert healthz(before) == 200
    assert before.sock.getpeercert(binary_form=True) == leaf_der(first)
    before.close()

    text = dashboard_text_of(panel)
    assert "certificate valid" in text and "ACME last error" not in text, text[-3000:]
