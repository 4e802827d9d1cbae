"""rtcbox's own HTTPS listener, on loopback, in ``files`` mode with a certificate from a test CA.

- The HTTPS port serves what the HTTP listener serves (``/healthz``, the auth service), verified
  against the test CA.
- Signaling over ``wss://`` on the HTTPS port: a raw LiveKit session gets its JoinResponse.
- TURN over TLS on the same port: coturn's ``turnutils_uclient -S`` relays through it to
  coturn's echo peer with the REST credentials Synapse would hand out, and every message comes
  back.
- The certificate files are replaced by a second certificate: a new TLS connection gets it
  (within one poll of the files, bounded wait), while a TURN connection opened before (with an
  allocation) keeps working.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect as ws_connect

import lk_helpers as lk
from conftest import free_port, wait_until
from lk_helpers import API_KEY, API_SECRET, sfu_env
from test_turn import (SECRET, assert_everything_echoed, binding_request, coturn_tools,  # noqa: F401
                       echo_peer, is_binding_success, join_response, relay_env, uclient)

# rtcbox looks at the files every 30 s; one poll plus slack.
RELOAD_TIMEOUT = 75


def make_certificate(directory: Path, pki: dict, name: str) -> tuple[Path, Path]:
    """A second server certificate for localhost and 127.0.0.1 from the pki fixture's CA."""
    def run(*args):
        subprocess.run(args, cwd=directory, check=True, capture_output=True)

    ca_key = Path(pki["ca"]).with_name("ca.key")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}")
    (directory / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", pki["ca"], "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", "ext.cnf")
    return directory / f"{name}.pem", directory / f"{name}.key"


def install_files(cert: Path, key: Path, to: dict):
    """Replaces the served files the way an export script would: write aside, then rename."""
    for source, target in ((cert, to["cert"]), (key, to["key"])):
        aside = Path(f"{target}.new")
        shutil.copy(source, aside)
        os.replace(aside, target)


def fingerprint_of_pem(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


def tls_connect(port: int, ca: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


def served_fingerprint(tls: ssl.SSLSocket) -> str:
    return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def binding_over(tls: ssl.SSLSocket) -> bool:
    request, transaction = binding_request()
    tls.sendall(request)
    answer = b""
    while len(answer) < 20 or len(answer) < 20 + int.from_bytes(answer[2:4], "big"):
        chunk = tls.recv(2048)
        if not chunk:
            break
        answer += chunk
    return is_binding_success(answer, transaction)


def read_stun(tls: ssl.SSLSocket) -> bytes:
    answer = b""
    while len(answer) < 20 or len(answer) < 20 + int.from_bytes(answer[2:4], "big"):
        chunk = tls.recv(2048)
        if not chunk:
            break
        answer += chunk
    return answer


def stun_attributes(message: bytes) -> dict[int, bytes]:
    attributes, at = {}, 20
    while at + 4 <= len(message):
        kind, length = struct.unpack("!HH", message[at:at + 4])
        attributes.setdefault(kind, message[at + 4:at + 4 + length])
        at += 4 + length + (-length % 4)
    return attributes


def allocate_over(tls: ssl.SSLSocket) -> bool:
    """A TURN allocation over ``tls`` with REST credentials from the shared secret, as a TURN
    client makes it: Allocate, the 401 challenge (realm, nonce), Allocate with
    MESSAGE-INTEGRITY. True when the second answer is an Allocate success."""
    username = f"{int(time.time()) + 3600}:e2e-https"
    password = base64.b64encode(hmac.new(SECRET.encode(), username.encode(),
                                         hashlib.sha1).digest()).decode()

    def attribute(kind: int, value: bytes) -> bytes:
        return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)

    def allocate(extra: bytes, key: bytes | None) -> bytes:
        transaction = os.urandom(12)
        body = attribute(0x0019, bytes([17, 0, 0, 0])) + extra  # REQUESTED-TRANSPORT: UDP
        if key is not None:
            header = struct.pack("!HHI", 0x0003, len(body) + 24, 0x2112A442) + transaction
            body += attribute(0x0008, hmac.new(key, header + body, hashlib.sha1).digest())
        tls.sendall(struct.pack("!HHI", 0x0003, len(body), 0x2112A442) + transaction + body)
        return read_stun(tls)

    challenge = stun_attributes(allocate(b"", None))
    realm, nonce = challenge[0x0014], challenge[0x0015]
    key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
    extra = attribute(0x0006, username.encode()) + attribute(0x0014, realm) \
        + attribute(0x0015, nonce)
    return allocate(extra, key)[:2] == b"\x01\x03"


@pytest.fixture(scope="module")
def served_files(tmp_path_factory, pki) -> dict:
    d = tmp_path_factory.mktemp("served-cert")
    files = {"cert": d / "cert.pem", "key": d / "key.pem"}
    install_files(Path(pki["cert"]), Path(pki["key"]), files)
    return files


@pytest.fixture(scope="module")
def https_box(start_module_rtcbox, served_files):
    port = free_port()
    box = start_module_rtcbox(dict(sfu_env(), **relay_env(), RTCBOX_TURN_SHARED_SECRET=SECRET,
                                   RTCBOX_TURN_ALLOW_PEERS="127.0.0.1/32",
                                   RTCBOX_HTTPS_BIND=f"127.0.0.1:{port}",
                                   RTCBOX_TLS_MODE="files",
                                   RTCBOX_TLS_CERT_FILE=str(served_files["cert"]),
                                   RTCBOX_TLS_KEY_FILE=str(served_files["key"])),
                              name="https")
    box.https_port = port
    return box


def test_https_serves_what_http_serves(https_box, pki):
    url = f"https://127.0.0.1:{https_box.https_port}"
    wait_until(lambda: requests.get(f"{url}/healthz", verify=pki["ca"], timeout=5).ok, 15,
               f"rtcbox's HTTPS listener ({https_box.log})")
    assert requests.get(f"{url}/healthz", verify=pki["ca"], timeout=5).status_code == 200
    # The auth service answers the same request the same way on both listeners.
    for path in ("/sfu/get", "/livekit/jwt/sfu/get", "/get_token"):
        over_http = requests.post(f"{https_box.url}{path}", json={}, timeout=10)
        over_https = requests.post(f"{url}{path}", json={}, verify=pki["ca"], timeout=10)
        assert over_http.status_code == 400, over_http.text
        assert (over_https.status_code, over_https.text) == (over_http.status_code, over_http.text)
        assert over_https.headers.get("access-control-allow-origin") == "*"


def test_signaling_over_wss(https_box, pki):
    async def scenario():
        room = lk.unique("wss")
        lkapi = lk.server_api(https_box.url, API_KEY, API_SECRET)
        try:
            await lk.create_room(lkapi, room)
        finally:
            await lkapi.aclose()
        query = urllib.parse.urlencode({
            "access_token": lk.join_token(API_KEY, API_SECRET, "dave", room),
            "sdk": "python", "protocol": "16", "auto_subscribe": "1"})
        context = ssl.create_default_context(cafile=pki["ca"])
        url = f"wss://127.0.0.1:{https_box.https_port}/rtc?{query}"
        async with ws_connect(url, ssl=context, open_timeout=lk.WAIT, max_size=None) as ws:
            return await join_response(ws)

    join = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert join.participant.identity == "dave"
    assert join.room.name.startswith("wss-")


@pytest.mark.parametrize("mode", ["channel", "indication"])
def test_turn_over_tls_on_the_https_port(https_box, echo_peer, mode):
    run = uclient(https_box.https_port, echo_peer, transport="tls", mode=mode)
    assert_everything_echoed(run, https_box.log)


def test_a_replaced_certificate_is_served_to_new_connections(https_box, served_files, pki,
                                                             tmp_path):
    port = https_box.https_port
    first = fingerprint_of_pem(Path(pki["cert"]))
    # Opened before the swap: a TURN client with an allocation, which may stay connected for an
    # hour (one without an allocation is closed after a few seconds).
    before = tls_connect(port, pki["ca"])
    assert served_fingerprint(before) == first
    assert allocate_over(before)
    assert binding_over(before)

    cert, key = make_certificate(tmp_path, pki, "second")
    second = fingerprint_of_pem(cert)
    assert second != first
    install_files(cert, key, served_files)

    def new_connection_gets_the_second():
        with tls_connect(port, pki["ca"]) as tls:
            return served_fingerprint(tls) == second

    started = time.monotonic()
    wait_until(new_connection_gets_the_second, RELOAD_TIMEOUT,
               f"the replaced certificate ({https_box.log})")
    assert time.monotonic() - started < RELOAD_TIMEOUT
    # The connection from before still works, with the certificate it started with.
    assert binding_over(before)
    assert served_fingerprint(before) == first
    before.close()
    # HTTP on a new connection, verified against the CA, with the new certificate.
    url = f"https://127.0.0.1:{port}/healthz"
    assert requests.get(url, verify=pki["ca"], timeout=5).status_code == 200
    assert "reloaded" in https_box.log.read_text(errors="replace")


def test_the_admin_panel_over_tls(start_rtcbox, served_files, pki):
    """RTCBOX_ADMIN_TLS: the panel is served with rtcbox's certificate (here the files one),
    verified against the test CA; plain HTTP gets no page there; the session cookie is Secure."""
    from test_admin_synapse import Panel

    box = start_rtcbox(dict(sfu_env(), RTCBOX_TLS_MODE="files", RTCBOX_ADMIN_TLS="true",
                            RTCBOX_TLS_CERT_FILE=str(served_files["cert"]),
                            RTCBOX_TLS_KEY_FILE=str(served_files["key"])))
    port = box.admin_url.rsplit(":", 1)[1]
    box.admin_url = f"https://127.0.0.1:{port}"
    assert f"admin panel on https://127.0.0.1:{port}" in box.log_text()
    assert f"open https://127.0.0.1:{port}/setup" in box.log_text()

    # Plain HTTP on the panel's port is not the panel (the TLS handshake fails).
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/setup", timeout=5)

    panel = Panel(box)
    panel.http.verify = pki["ca"]
    panel.http.trust_env = False  # REQUESTS_CA_BUNDLE would beat the session's verify
    panel.set_up()
    login = panel.post("/logout", {})
    assert login.status_code in (303, 200), login.text
    page = panel.get("/login")
    assert page.status_code == 200
    response = panel.post("/login", {"password": "correct horse battery staple"})
    cookie = response.headers.get("set-cookie", "")
    assert "rtcbox_session=" in cookie and "; Secure" in cookie, (response.status_code, cookie)
