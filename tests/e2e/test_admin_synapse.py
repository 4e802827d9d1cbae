"""The admin panel and its setup wizard against a real Synapse: what the wizard generates is
loaded by the programs it is meant for, and the verification page tells the truth.

- The wizard is walked over HTTP, as a browser would post its forms (CSRF token, cookies).
- The homeserver.yaml snippet is merged into a second, freshly generated Synapse config; that
  Synapse must start, have delayed events (MSC4140), state_after in /sync (MSC4222) and the
  rtc/transports endpoint (MSC4143) listing rtcbox, and hand out TURN credentials.
- /verify is run against the unconfigured Synapse (its checks must fail and say why) and then
  against the configured one (they must pass); what cannot work on loopback (the well-known file
  on https://localhost) must fail rather than pass.
- The generated nginx configurations pass `nginx -t`, and the one-host proxy config actually
  proxies rtcbox's HTTP endpoints and the SFU's WebSocket; the YAML and JSON files parse.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

import container_helpers
import lk_helpers as lk
from conftest import Rtcbox, Synapse, free_port, start_synapse, stop_synapse, wait_until

PASSWORD = "correct horse battery staple"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# Every file the wizard generates, by the id in /outputs/<id>.
OUTPUT_IDS = ["homeserver-yaml", "well-known-client", "well-known-serving", "proxy-synology-dsm",
              "proxy-nginx", "proxy-caddy", "proxy-traefik", "proxy-apache", "port-forwards",
              "dsm-firewall", "compose-yaml"]
STEPS = ["homeserver", "endpoints", "tls", "network", "turn", "review"]
# Checks run live over the network; none should take long on loopback, but bound them generously.
VERIFY_TIMEOUT = 120


# ---------------------------------------------------------------------------------------------
# A client for the admin panel: a cookie jar plus the session's CSRF token.

class Panel:
    def __init__(self, box: Rtcbox):
        self.box = box
        self.url = box.admin_url
        self.http = requests.Session()
        self.csrf = ""

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        response = self.http.get(self.url + path, **kwargs)
        token = csrf_token(response.text)
        if token:
            self.csrf = token
        return response

    def post(self, path: str, data: dict, csrf: bool = True, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        if csrf:
            data = {"csrf": self.csrf, **data}
        # Encoded here so an empty form is still a form, as a browser sends it.
        headers = {"Content-Type": "application/x-www-form-urlencoded", **kwargs.pop("headers", {})}
        return self.http.post(self.url + path, data=urllib.parse.urlencode(data),
                              headers=headers, **kwargs)

    def set_up(self, password: str = PASSWORD):
        """First run: the setup token from the log unlocks choosing the password."""
        first = self.get("/")
        assert first.status_code == 303 and first.headers["location"] == "/setup", first.text
        page = self.get("/setup")
        assert page.status_code == 200 and self.csrf, page.text
        assert "rtcbox_csrf" in self.http.cookies
        response = self.post("/setup", {"token": self.box.setup_token(), "password": password,
                                        "confirm": password})
        assert response.status_code == 303, describe(response)
        # A new admin continues into the setup wizard.
        assert response.headers["location"] == "/wizard"
        cookie = response.headers.get("set-cookie", "")
        assert "rtcbox_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # The session has its own CSRF token: read it from a page of the session.
        assert self.get("/").status_code == 200

    def output(self, output_id: str) -> requests.Response:
        response = self.get(f"/outputs/{output_id}")
        assert response.status_code == 200, f"/outputs/{output_id}: {describe(response)}"
        return response

    def verify(self, access_token: str | None = None) -> list[Check]:
        response = self.post("/verify", {"access_token": access_token or ""},
                             timeout=VERIFY_TIMEOUT)
        assert response.status_code == 200, describe(response)
        checks = parse_checks(response.text)
        assert checks, f"/verify rendered no checks:\n{page_text(response.text)[:3000]}"
        return checks


def csrf_token(page: str) -> str | None:
    found = re.search(r'<input type="hidden" name="csrf" value="([A-Za-z0-9]{32})">', page)
    return found.group(1) if found else None


def page_text(page: str) -> str:
    """A page's visible text, roughly: tags dropped, entities decoded, whitespace collapsed."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page))).strip()


def alerts(page: str) -> list[str]:
    return [page_text(a) for a in re.findall(r'role="alert">(.*?)</p>', page, flags=re.S)]


def describe(response: requests.Response) -> str:
    return (f"HTTP {response.status_code} {response.headers.get('location', '')}\n"
            f"alerts: {alerts(response.text)}\n{page_text(response.text)[:1500]}")


def input_value(page: str, name: str) -> str | None:
    found = re.search(rf'<input [^>]*name="{name}"[^>]*value="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


def pre_blocks(page: str) -> dict[str, str]:
    """The generated files on /outputs: id -> text."""
    return {m.group(1): html.unescape(m.group(2)) for m in re.finditer(
        r'<pre id="code-([a-z0-9-]+)"[^>]*>\s*<code>(.*?)</code>\s*</pre>', page, flags=re.S)}


@dataclass
class Check:
    status: str  # pass, fail, warn, unavailable
    title: str
    detail: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.title} {self.detail} {self.fix}".lower()

    def __str__(self) -> str:
        fix = f" [fix: {self.fix}]" if self.fix else ""
        return f"{self.status.upper():11} {self.title}: {self.detail}{fix}"


def parse_checks(page: str) -> list[Check]:
    checks = []
    for status, body in re.findall(r'<li class="check (\w+)"[^>]*>(.*?)</li>', page, flags=re.S):
        title = re.search(r"<h2>(.*?)</h2>", body, flags=re.S)
        title = re.sub(r'<span class="badge[^"]*">.*?</span>', "", title.group(1) if title else "",
                       flags=re.S)
        fix = re.search(r'<p class="fix">(.*?)</p>', body, flags=re.S)
        details = [p for p in re.findall(r"<p>(.*?)</p>", body, flags=re.S)]
        checks.append(Check(status, page_text(title), page_text(" ".join(details)),
                            page_text(fix.group(1)) if fix else ""))
    return checks


def find_check(checks: list[Check], *alternatives: tuple[str, ...]) -> Check:
    """The one check whose title contains every word of one of the alternatives (lower case)."""
    for words in alternatives:
        found = [c for c in checks if all(w in c.title.lower() for w in words)]
        if len(found) == 1:
            return found[0]
    raise AssertionError(f"no single check titled like {alternatives}; the page showed:\n"
                         + "\n".join(map(str, checks)))


def show(checks: list[Check]) -> str:
    return "\n".join(map(str, checks))


# ---------------------------------------------------------------------------------------------
# The wizard, step by step.

def relay_range(avoid: list[int]) -> tuple[int, int]:
    """A TURN relay range of 41 ports that contains none of ``avoid``."""
    for first in range(49160, 65000, 100):
        if not any(first <= port <= first + 40 for port in avoid):
            return first, first + 40
    raise AssertionError("no free relay range")


def network_fields(box: Rtcbox) -> dict:
    """rtcbox's real listeners, so the checks talk to them."""
    http_port = int(urllib.parse.urlsplit(box.url).port)
    admin_port = int(urllib.parse.urlsplit(box.admin_url).port)
    relay_min, relay_max = relay_range([box.udp_port, box.turn_port])
    # Loopback as the LAN address (everything runs on this one machine) must be confirmed.
    return {"lan_ip": "127.0.0.1", "lan_ip_anyway": "yes", "public_ip": "127.0.0.1",
            "http": http_port,
            "https": free_port(), "admin": admin_port, "rtc_udp": box.udp_port,
            "rtc_tcp": box.tcp_port, "turn": box.turn_port, "turns": box.turn_tls_port,
            "relay_min": relay_min, "relay_max": relay_max}


def submit(panel: Panel, step: str, fields: dict, expect_next: str | None = None) -> requests.Response:
    response = panel.post(f"/wizard/{step}", {**fields, "action": "save"}, timeout=60)
    following = expect_next or STEPS[STEPS.index(step) + 1]
    assert response.status_code == 303, f"step {step} was not accepted: {describe(response)}"
    assert response.headers["location"] == f"/wizard/{following}", describe(response)
    return response


def homeserver_fields(hs: Synapse) -> dict:
    # The client URL is given (nothing serves https://localhost/.well-known); the Synapse version
    # is left empty so the wizard detects it through federation discovery.
    return {"server_name": hs.server_name, "client_base_url": hs.client_url, "synapse_version": ""}


def walk_wizard(panel: Panel, hs: Synapse, rtc_url: str, proxy: str = "nginx",
                legacy_turn: str = "off") -> dict:
    """Every step with valid answers, then Apply; returns the review page and the network step
    after "Detect public IP" for the tests to look at."""
    seen = {}
    start = panel.get("/wizard")
    assert start.status_code == 303 and start.headers["location"] == "/wizard/homeserver"
    assert panel.get("/wizard/homeserver").status_code == 200
    submit(panel, "homeserver", homeserver_fields(hs))
    assert panel.get("/wizard/endpoints").status_code == 200
    submit(panel, "endpoints", {"mode": "one", "rtc_url": rtc_url, "jwt_url": "", "sfu_url": ""})
    assert panel.get("/wizard/tls").status_code == 200
    submit(panel, "tls", {"mode": "reverse-proxy", "proxy": proxy, "challenge": "dns-01",
                          "email": ""})
    network = network_fields(panel.box)
    page = panel.get("/wizard/network")
    assert page.status_code == 200
    # "Detect public IP" asks the STUN server (rtcbox's own media port here) and re-renders the
    # form saying what it saw, saving nothing; an empty field stays empty (follow the address).
    detected = panel.post("/wizard/network", {**network, "public_ip": "", "action": "detect"},
                          timeout=60)
    assert detected.status_code == 200, describe(detected)
    seen["detected"] = detected
    submit(panel, "network", network)
    assert panel.get("/wizard/turn").status_code == 200
    submit(panel, "turn", {"legacy_turn": legacy_turn})
    review = panel.get("/wizard/review")
    assert review.status_code == 200, describe(review)
    seen["review"] = review
    applied = panel.post("/wizard/review", {"action": "apply"})
    assert applied.status_code == 303, describe(applied)
    assert applied.headers["location"] == "/outputs?applied=1"
    return seen


@dataclass
class Deployment:
    box: Rtcbox
    panel: Panel
    synapse: Synapse
    seen: dict

    @property
    def livekit_service_url(self) -> str:
        return f"{self.box.url}/livekit/jwt"


@pytest.fixture(scope="module")
def deployment(start_module_rtcbox, synapse) -> Deployment:
    """One rtcbox whose wizard was walked to the end for the session's (unconfigured) Synapse,
    with rtcbox's own loopback listeners as the public endpoints and legacy TURN on."""
    box = start_module_rtcbox({}, name="panel")
    panel = Panel(box)
    panel.set_up()
    seen = walk_wizard(panel, synapse, rtc_url=box.url, legacy_turn="on")
    return Deployment(box, panel, synapse, seen)


@pytest.fixture(scope="module")
def snippet(deployment) -> str:
    return deployment.panel.output("homeserver-yaml").text


@pytest.fixture(scope="module")
def configured_synapse(tmp_path_factory, pki, snippet) -> Synapse:
    """A second Synapse whose homeserver.yaml has the generated snippet merged in."""
    hs = start_synapse(tmp_path_factory.mktemp("configured-synapse"), pki,
                       extra_config=yaml.safe_load(snippet))
    yield hs
    stop_synapse(hs)


# ---------------------------------------------------------------------------------------------
# a. Setup, the whole wizard, the generated files.

def test_wizard_from_setup_token_to_generated_files(deployment, synapse):
    panel, box = deployment.panel, deployment.box

    review = page_text(deployment.seen["review"].text)
    assert synapse.server_name in review
    assert deployment.livekit_service_url in review, review[:3000]
    # The wizard saved every answer: /wizard resumes at Review.
    resume = panel.get("/wizard")
    assert resume.headers["location"] == "/wizard/review"

    # Apply wrote the settings the environment does not pin.
    stored = box.stored()
    assert stored.get("full_access_homeservers") == synapse.server_name, stored.keys()
    assert len(stored.get("turn_shared_secret", "")) >= 32
    assert "setup wizard applied" in box.log_text()

    outputs = panel.get("/outputs?applied=1")
    assert outputs.status_code == 200
    blocks = pre_blocks(outputs.text)
    missing = [i for i in OUTPUT_IDS if i not in blocks]
    assert not missing, f"/outputs lacks {missing}; it has {sorted(blocks)}"
    assert all(text.strip() for text in blocks.values()), "an empty generated file"

    download = panel.output("homeserver-yaml")
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.text == blocks["homeserver-yaml"]
    assert "max_event_delay_duration" in download.text
    # The only secret a generated file carries is the TURN secret, in the Synapse snippet.
    api_secret = stored["api_secret"]
    assert all(api_secret not in text for text in blocks.values()), "the API secret leaked"
    assert stored["turn_shared_secret"] in download.text

    # Network step: "Detect public IP" names what the STUN server (rtcbox's media port) saw and
    # leaves the empty field empty: rtcbox follows the public IP by itself.
    detected = deployment.seen["detected"]
    flash = " ".join(re.findall(r'role="status">(.*?)</p>', detected.text, flags=re.S))
    assert "The internet sees this machine as 127.0.0.1." in html.unescape(flash), describe(detected)
    assert input_value(detected.text, "public_ip") == ""

    # The Synapse version was detected (federation /version, verified TLS with the test CA),
    # and is shown on the review page and the dashboard.
    assert re.search(r"Synapse version\s+1\.163\.\d", review), \
        "the review page does not show the detected Synapse version 1.163.x:\n" + review[:3000]
    dashboard = page_text(panel.get("/").text)
    assert re.search(r"Synapse version\s+1\.163\.\d", dashboard), dashboard[:3000]


# ---------------------------------------------------------------------------------------------
# b. The snippet, merged into a real Synapse config, starts that Synapse and advertises rtcbox.

def state_key_in_sync(hs: Synapse, user: dict) -> str:
    """Which key a room's state comes under in /sync when the client asks for MSC4222's
    state_after: ``org.matrix.msc4222.state_after`` where Synapse has msc4222_enabled."""
    auth = {"Authorization": f"Bearer {user['access_token']}"}
    room = requests.post(f"{hs.client_url}/_matrix/client/v3/createRoom", json={}, headers=auth,
                         timeout=30)
    assert room.status_code == 200, room.text
    sync = requests.get(f"{hs.client_url}/_matrix/client/v3/sync", headers=auth, timeout=30,
                        params={"timeout": "0", "org.matrix.msc4222.use_state_after": "true"})
    assert sync.status_code == 200, sync.text
    joined = sync.json()["rooms"]["join"][room.json()["room_id"]]
    keys = [k for k in joined if k in ("state", "org.matrix.msc4222.state_after")]
    assert len(keys) == 1, sorted(joined)
    return keys[0]


def test_generated_snippet_configures_a_real_synapse(deployment, snippet, configured_synapse):
    hs = configured_synapse
    versions = requests.get(f"{hs.client_url}/_matrix/client/versions", timeout=10).json()
    features = versions.get("unstable_features", {})
    # max_event_delay_duration turns MSC4140 on, msc4143_enabled the rtc/transports endpoint.
    for feature in ("org.matrix.msc4140", "org.matrix.msc4143"):
        assert features.get(feature) is True, f"{feature} is not on: {features}"

    user = hs.register("caller")
    auth = {"Authorization": f"Bearer {user['access_token']}"}
    # Synapse does not list MSC4222 in unstable_features; it is on when /sync honours
    # use_state_after. The unconfigured Synapse answers the same request the old way.
    assert state_key_in_sync(hs, user) == "org.matrix.msc4222.state_after"
    assert state_key_in_sync(deployment.synapse, deployment.synapse.register("plain")) == "state"
    response = requests.get(
        f"{hs.client_url}/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
        headers=auth, timeout=10)
    assert response.status_code == 200, response.text
    transports = response.json().get("rtc_transports")
    assert {"type": "livekit", "livekit_service_url": deployment.livekit_service_url} in transports, \
        transports

    # Legacy TURN is on in this wizard: Synapse hands out credentials for rtcbox's TURN URIs.
    turn = requests.get(f"{hs.client_url}/_matrix/client/v3/voip/turnServer", headers=auth,
                        timeout=10)
    assert turn.status_code == 200, turn.text
    assert turn.json().get("username") and turn.json().get("password"), turn.json()
    assert any(uri.startswith("turn:") for uri in turn.json().get("uris", [])), turn.json()

    log = hs.log.read_text(errors="replace")
    homeserver_log = hs.config.parent / "homeserver.log"
    if homeserver_log.exists():
        log += homeserver_log.read_text(errors="replace")
    for bad in ("ConfigError", "Error in configuration", "Traceback"):
        assert bad not in log, f"Synapse logged {bad!r}:\n{log[-4000:]}"

    # Generated for the version the wizard found.
    assert re.search(r"Generated for Synapse 1\.163\.\d+", snippet), snippet[:800]


# ---------------------------------------------------------------------------------------------
# c. Verification: fails with reasons against the unconfigured Synapse, passes against the
#    configured one, and does not pretend about what cannot work on loopback.

def test_verification_tells_the_truth(deployment, synapse, configured_synapse):
    panel = deployment.panel

    # The session's Synapse runs without the MSC settings.
    checks = panel.verify(synapse.register("verifier")["access_token"])
    features = find_check(checks, ("feature",), ("synapse",), ("msc",))
    assert features.status == "fail", show(checks)
    assert "max_event_delay_duration" in features.text and "msc4222" in features.text, str(features)
    transports = find_check(checks, ("transports",), ("rtc", "synapse"))
    assert transports.status == "fail", show(checks)
    assert "404" in transports.text or "msc4143" in transports.text, str(transports)
    # Every failed check says what to change.
    assert all(c.fix for c in checks if c.status == "fail"), show(checks)

    # Point the wizard at the configured Synapse: only the homeserver step changes. (The other
    # tests of this module expect the session's Synapse, so it is put back afterwards.)
    submit(panel, "homeserver", homeserver_fields(configured_synapse))
    try:
        assert panel.get("/wizard").headers["location"] == "/wizard/review"
        checks = panel.verify(configured_synapse.register("verifier")["access_token"])
    finally:
        submit(panel, "homeserver", homeserver_fields(synapse))
    expect_pass = {
        "Synapse features": (("feature",), ("synapse",), ("msc",)),
        "rtc/transports": (("transports",), ("rtc", "synapse")),
        "authorization service /healthz": (("authori",), ("jwt",), ("healthz",)),
        "SFU WebSocket": (("websocket",), ("sfu",)),
        "public IP": (("public", "ip"),),
        # "TURN over UDP" and "TURN over TCP" are checks too.
        "media UDP": (("media", "udp"),),
        "media ICE-TCP": (("media", "tcp"),),
    }
    failed = []
    for name, alternatives in expect_pass.items():
        check = find_check(checks, *alternatives)
        if check.status != "pass":
            failed.append(f"{name}: {check}")
    assert not failed, "checks that should pass did not:\n" + "\n".join(failed) + \
        "\n--- every check:\n" + show(checks)

    # Nothing serves https://localhost/.well-known/matrix/client (port 443): the check must fail
    # and say where it looked, not pass.
    well_known = find_check(checks, ("well-known",), ("well", "known"))
    assert well_known.status == "fail", show(checks)
    assert "https://localhost" in well_known.text, str(well_known)
    assert any(w in well_known.text for w in ("cannot", "refused", "unreachable", "not reach")), \
        str(well_known)
    assert all(c.fix for c in checks if c.status == "fail"), show(checks)


# ---------------------------------------------------------------------------------------------
# d. nginx: the generated proxy config and the well-known location pass `nginx -t`, and the
#    proxy config actually carries rtcbox's endpoints and the SFU's WebSocket.

def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def localize_nginx(conf: str, pki: dict) -> tuple[str, dict[int, int]]:
    """The generated config with test certificates and loopback ports: every `listen PORT` and
    `listen [::]:PORT` becomes a free port on 127.0.0.1 / ::1 (dropped without IPv6). Nothing
    else changes. Returns the config and the port map (generated port -> test port)."""
    replaced = re.subn(r"/etc/letsencrypt/live/[^/\s;]+/fullchain\.pem", pki["cert"], conf)
    conf, certs = replaced
    conf, keys = re.subn(r"/etc/letsencrypt/live/[^/\s;]+/privkey\.pem", pki["key"], conf)
    assert certs and certs == keys, "expected certbot certificate paths in the nginx config"
    ports: dict[int, int] = {}
    v6 = ipv6_loopback()

    def listen(m: re.Match) -> str:
        indent, v6_listen, port, rest = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        test_port = ports.setdefault(port, free_port())
        if v6_listen:
            return f"{indent}listen [::1]:{test_port}{rest}" if v6 else f"{indent}# (no IPv6 here)"
        return f"{indent}listen 127.0.0.1:{test_port}{rest}"

    conf = re.sub(r"(?m)^(\s*)listen\s+(\[::\]:)?(\d+)([^;]*;)", listen, conf)
    return conf, ports


def nginx_conf(d: Path, include: str) -> Path:
    (d / "logs").mkdir(exist_ok=True)
    (d / "rtcbox.conf").write_text(include)
    conf = d / "nginx.conf"
    conf.write_text(f"pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n"
                    f"http {{\n    access_log off;\n    include {d}/rtcbox.conf;\n}}\n")
    return conf


def nginx_test(d: Path, include: str) -> Path:
    conf = nginx_conf(d, include)
    done = subprocess.run([NGINX, "-t", "-p", f"{d}/", "-c", str(conf), "-e", f"{d}/error.log"],
                          capture_output=True, text=True, timeout=30)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"nginx -t failed:\n{out}\n--- config:\n{include}"
    assert "syntax is ok" in out and "test is successful" in out, out
    return conf


def nginx_location(serving: str) -> str:
    """The `location = /.well-known/matrix/client { ... }` block from the serving instructions."""
    found = re.search(r"(?ms)^location = /\.well-known/matrix/client \{\n.*?^\}\n", serving)
    assert found, f"no nginx location block in well-known-serving:\n{serving[:3000]}"
    return found.group(0)


@pytest.fixture
def https_deployment(start_rtcbox, synapse) -> Deployment:
    """A wizard walked with a real-looking public hostname behind nginx (HTTPS on 443)."""
    box = start_rtcbox({"RTCBOX_API_KEY": lk.API_KEY, "RTCBOX_API_SECRET": lk.API_SECRET},
                       name="behind-nginx")
    panel = Panel(box)
    panel.set_up()
    seen = walk_wizard(panel, synapse, rtc_url="https://matrixrtc.example.test")
    return Deployment(box, panel, synapse, seen)


def test_nginx_configs_pass_nginx_t_and_proxy_rtcbox(https_deployment, pki, tmp_path):
    panel, box = https_deployment.panel, https_deployment.box
    conf, ports = localize_nginx(panel.output("proxy-nginx").text, pki)
    assert 443 in ports, f"no listener on 443 in the nginx config:\n{conf}"
    one_host = tmp_path / "nginx-one-host"
    one_host.mkdir()
    config = nginx_test(one_host, conf)

    # The well-known location block, inside a server of its own.
    serving = panel.output("well-known-serving").text
    well_known_port = free_port()
    location = nginx_location(serving)
    indented = "".join(f"    {line}\n" for line in location.splitlines())
    well_known = tmp_path / "nginx-well-known"
    well_known.mkdir()
    nginx_test(well_known, f"server {{\n    listen 127.0.0.1:{well_known_port};\n{indented}}}\n")

    # Run both for real: the proxy forwards rtcbox's endpoints and the SFU's WebSocket, and the
    # location answers with exactly the generated document and CORS.
    processes = []
    try:
        for d, c in ((one_host, config), (well_known, well_known / "nginx.conf")):
            processes.append(subprocess.Popen(
                [NGINX, "-p", f"{d}/", "-c", str(c), "-e", f"{d}/error.log", "-g", "daemon off;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        https = f"https://127.0.0.1:{ports[443]}"
        wait_until(lambda: requests.get(f"{https}/healthz", verify=pki["ca"], timeout=2).ok, 20,
                   f"nginx on {https} (error log: {one_host / 'error.log'})")
        for path in ("/livekit/jwt/healthz", "/healthz"):
            response = requests.get(https + path, verify=pki["ca"], timeout=10)
            assert response.status_code == 200, (path, response.status_code, response.text)
        if 80 in ports:
            redirect = requests.get(f"http://127.0.0.1:{ports[80]}/x",
                                    headers={"Host": "matrixrtc.example.test"},
                                    allow_redirects=False, timeout=10)
            assert redirect.status_code == 301
            assert redirect.headers["location"] == "https://matrixrtc.example.test/x"
        join = asyncio.run(join_through(f"wss://127.0.0.1:{ports[443]}/livekit/sfu", box, pki))
        assert join == "join", join

        got = requests.get(f"http://127.0.0.1:{well_known_port}/.well-known/matrix/client",
                           timeout=10)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/json")
        assert got.headers["access-control-allow-origin"] == "*"
        assert got.json() == json.loads(panel.output("well-known-client").text)
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    # Two hostnames: one server block each, still valid.
    submit(panel, "endpoints", {"mode": "two", "rtc_url": "",
                                "jwt_url": "https://matrix-jwt.example.test",
                                "sfu_url": "https://matrix-sfu.example.test"})
    two = panel.output("proxy-nginx").text
    assert "matrix-jwt.example.test" in two and "matrix-sfu.example.test" in two
    two_hosts = tmp_path / "nginx-two-hosts"
    two_hosts.mkdir()
    nginx_test(two_hosts, localize_nginx(two, pki)[0])


async def join_through(sfu_url: str, box: Rtcbox, pki: dict) -> str:
    """Joins a room over the SFU's signaling WebSocket at ``sfu_url``; returns the kind of the
    first signaling message (``join`` when the upgrade went through)."""
    from livekit.protocol import rtc as signal
    from websockets.asyncio.client import connect

    room = lk.unique("through-nginx")
    lkapi = lk.server_api(box.url, lk.API_KEY, lk.API_SECRET)
    try:
        await lk.create_room(lkapi, room)
    finally:
        await lkapi.aclose()
    token = lk.join_token(lk.API_KEY, lk.API_SECRET, "nginx-probe", room)
    query = urllib.parse.urlencode({"sdk": "python", "protocol": "16", "auto_subscribe": "1"})
    context = ssl.create_default_context(cafile=pki["ca"])
    async with connect(f"{sfu_url}/rtc?{query}", ssl=context, open_timeout=15,
                       additional_headers={"Authorization": f"Bearer {token}"},
                       max_size=None) as ws:
        first = await asyncio.wait_for(ws.recv(), 15)
        return signal.SignalResponse.FromString(first).WhichOneof("message")


# ---------------------------------------------------------------------------------------------
# e. The YAML and JSON files parse, and say what they should.

def test_generated_yaml_and_json_parse(deployment):
    panel = deployment.panel
    homeserver = yaml.safe_load(panel.output("homeserver-yaml").text)
    assert homeserver["matrix_rtc"]["transports"][0] == {
        "type": "livekit", "livekit_service_url": deployment.livekit_service_url}
    assert homeserver["experimental_features"]["msc4222_enabled"] is True
    assert "max_event_delay_duration" in homeserver

    traefik = yaml.safe_load(panel.output("proxy-traefik").text)
    assert traefik["http"]["routers"] and traefik["http"]["services"], traefik

    well_known = json.loads(panel.output("well-known-client").text)
    assert well_known["m.homeserver"]["base_url"] == deployment.synapse.client_url
    foci = well_known["org.matrix.msc4143.rtc_foci"]
    assert foci[0] == {"type": "livekit", "livekit_service_url": deployment.livekit_service_url}


def test_generated_compose_runs_the_image_on_this_data(deployment, tmp_path):
    """The wizard's compose.yaml names the image the release build makes, mounts the data folder
    rtcbox runs with, pins nothing; and that image, started as the file says on (a copy of)
    that folder, keeps the admin password and the key pair the generated snippets rely on."""
    box = deployment.box
    compose = yaml.safe_load(deployment.panel.output("compose-yaml").text)
    service = compose["services"]["rtcbox"]
    assert service["image"] == container_helpers.IMAGE
    assert service["network_mode"] == "host"
    assert "environment" not in service and "ports" not in service, service
    host_dir, _, inside = service["volumes"][0].rpartition(":")
    assert inside == "/data" and Path(host_dir) == box.data_dir.resolve(), service["volumes"]
    owner = box.data_dir.stat()
    assert service.get("user") == f"{owner.st_uid}:{owner.st_gid}", service

    if not shutil.which("podman"):
        container_helpers.missing("podman is not installed")
    if container_helpers.podman("image", "exists", service["image"], check=False).returncode:
        container_helpers.missing(f"no image {service['image']}: run packaging/build-release.sh --image")
    # A consistent copy of the running database (SQLite's backup API), since the rtcbox that
    # made the file still runs here; its listeners move to free ports for the same reason.
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(box.data_dir / "rtcbox.db") as source, \
            sqlite3.connect(data / "rtcbox.db") as copy:
        source.backup(copy)
    uid, gid = (int(n) for n in service["user"].split(":"))
    for path in (data, data / "rtcbox.db"):
        os.chown(path, uid, gid)
    container = container_helpers.Container(data, container_helpers.settings_env(),
                                            user=service["user"])
    try:
        container.start()
        wait_until(container.healthy, 60, f"the composed container healthy\n{container.logs()[-3000:]}")
        panel = Panel(container)
        assert panel.get("/").headers["location"] == "/login"
        panel.get("/login")
        assert panel.post("/login", {"password": PASSWORD}).status_code == 303
        assert container_helpers.stored_key_pair(data) == box.key_pair()
        assert "setup token" not in container.logs()
    finally:
        container.remove()


# ---------------------------------------------------------------------------------------------
# f. Bad input is refused with a reason and changes nothing; forms need the CSRF token.

def test_bad_input_and_missing_csrf_are_refused(start_rtcbox):
    box = start_rtcbox({}, name="bad-input")
    panel = Panel(box)

    # Nothing without a session.
    assert panel.get("/wizard").headers["location"] == "/setup"
    panel.set_up()
    # A wrong setup token no longer matters: the password is set; /setup sends to login.
    assert panel.get("/setup").headers["location"] == "/login"

    rejected = panel.post("/wizard/homeserver", {"server_name": "not a server name!",
                                                 "client_base_url": "", "synapse_version": "",
                                                 "action": "save"})
    assert rejected.status_code == 400, describe(rejected)
    messages = " ".join(alerts(rejected.text))
    assert "not a valid Matrix server name" in messages, messages
    # Re-rendered as typed.
    assert input_value(rejected.text, "server_name") == "not a server name!"
    url_instead = panel.post("/wizard/homeserver", {"server_name": "https://example.org",
                                                    "action": "save"})
    assert url_instead.status_code == 400
    assert "looks like a URL" in " ".join(alerts(url_instead.text))
    assert panel.get("/wizard").headers["location"] == "/wizard/homeserver"

    # Without the CSRF token, or with another one: 403, nothing changes.
    for data in ({"server_name": "example.org"}, {"server_name": "example.org", "csrf": "x" * 32}):
        refused = panel.post("/wizard/homeserver", data, csrf=False)
        assert refused.status_code == 403, describe(refused)
    assert panel.post("/logout", {}, csrf=False).status_code == 403
    # A form posted from another site is refused even with the right token.
    foreign = panel.post("/wizard/homeserver", {"server_name": "example.org"},
                         headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert panel.get("/wizard").headers["location"] == "/wizard/homeserver"

    # Nothing is generated before the wizard is finished.
    outputs = panel.get("/outputs")
    assert outputs.status_code == 200 and not pre_blocks(outputs.text)
    assert panel.get("/outputs/homeserver-yaml").status_code == 409
