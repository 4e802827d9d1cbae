"""Fixtures for end-to-end tests: a real Synapse and real rtcbox processes, all on loopback.

Synapse runs with server name ``localhost:<port>``: its federation listener (TLS, certificate from
a test CA made here with openssl) is on that port, so federation discovery reaches it without
DNS. rtcbox trusts the test CA through RTCBOX_MATRIX_CA_FILE.
"""

import hashlib
import hmac
import json
import shutil
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

RTCBOX_BIN = os.environ.get("RTCBOX_BIN", "")

# The exit status of the finished session, kept for pytest_unconfigure below.
_session_status: int | None = None


def pytest_sessionfinish(session, exitstatus):
    global _session_status
    _session_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Ends the process with the session's status once every result and the summary are out,
    without finalizing the interpreter. The LiveKit Python SDK (livekit-ffi) tears its Rust
    runtime down from an atexit handler, and once in CI a worker thread of that runtime panicked
    there ("panic in a function that cannot unwind") and aborted the process after all 125 tests
    had passed. That is the test peer's shutdown, not anything rtcbox does (every server the
    tests started is gone by then), so it must not decide the suite's status. Only after a
    finished session, and only when the SDK was loaded: a crash while tests run still fails."""
    if _session_status is None or "livekit.rtc" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_session_status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port() -> int:
    """A port that is free on 127.0.0.1 for both TCP and UDP right now (TURN listens on both)."""
    for _ in range(100):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP on 127.0.0.1")


# TURN relay ranges handed to rtcbox instances: small, distinct per instance, below the kernel's
# ephemeral range (where free_port() and clients' sockets come from), and spread by process id
# so parallel pytest runs rarely meet. The server retries another port when one is taken anyway.
RELAY_RANGE_SIZE = 10
_RELAY_FIRST, _RELAY_LAST = 20000, 32000
_relay_next = [_RELAY_FIRST + (os.getpid() * RELAY_RANGE_SIZE) % (_RELAY_LAST - _RELAY_FIRST)]


def free_relay_range(size: int = RELAY_RANGE_SIZE) -> tuple[int, int]:
    """``size`` consecutive UDP ports, all free right now, not handed out before by this process."""
    for _ in range((_RELAY_LAST - _RELAY_FIRST) // size):
        first = _relay_next[0]
        _relay_next[0] = first + size if first + 2 * size <= _RELAY_LAST else _RELAY_FIRST
        try:
            for port in range(first, first + size):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first, first + size - 1
    raise RuntimeError("no free TURN relay range")


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout} s (last error: {last})")


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict:
    """A test CA and a server certificate for localhost and 127.0.0.1."""
    d = tmp_path_factory.mktemp("pki")

    def run(*args):
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=rtcbox test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "ext.cnf")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


@dataclass
class Synapse:
    server_name: str
    client_url: str
    federation_port: int
    shared_secret: str
    log: Path
    # The homeserver.yaml it runs with, and its process.
    config: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def register(self, localpart: str, password: str = "correct horse battery") -> dict:
        """Registers a user with the shared-secret admin API; returns the login response."""
        url = f"{self.client_url}/_synapse/admin/v1/register"
        nonce = requests.get(url, timeout=10).json()["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"notadmin"]))
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": False,
                "mac": mac.hexdigest()}
        response = requests.post(url, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def openid_token(self, user: dict) -> dict:
        """What Element Call gets from /openid/request_token, verbatim."""
        response = requests.post(
            f"{self.client_url}/_matrix/client/v3/user/{user['user_id']}/openid/request_token",
            headers={"Authorization": f"Bearer {user['access_token']}"}, json={}, timeout=10)
        response.raise_for_status()
        return response.json()


def merge_config(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base`` the way a snippet is merged into homeserver.yaml: maps are
    merged key by key (recursively), anything else in ``overlay`` replaces what ``base`` had."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def start_synapse(d: Path, pki: dict, extra_config: dict | None = None,
                  client_over_tls: bool = False) -> Synapse:
    """Generates a Synapse config in ``d`` (test listeners, TLS from the test CA, high rate
    limits), merges ``extra_config`` into it, starts Synapse and waits for its client API.
    With ``client_over_tls`` the TLS listener (the server name's port) also serves the client API
    and ``/.well-known/matrix/client`` pointing at itself, as a public homeserver does.
    Stop it with ``stop_synapse``."""
    client_port, fed_port = free_port(), free_port()
    server_name = f"localhost:{fed_port}"
    config = d / "homeserver.yaml"
    subprocess.run(
        [sys.executable, "-m", "synapse.app.homeserver", "--server-name", server_name,
         "--config-path", str(config), "--data-directory", str(d), "--generate-config",
         "--report-stats=no"],
        cwd=d, check=True, capture_output=True)
    hs = yaml.safe_load(config.read_text())
    hs["listeners"] = [
        {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
         "resources": [{"names": ["client"], "compress": False}]},
        {"port": fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
         "resources": [{"names": ["federation", "openid"], "compress": False}]},
    ]
    if client_over_tls:
        hs["listeners"][1]["resources"][0]["names"].append("client")
        hs["public_baseurl"] = f"https://{server_name}/"
        hs["serve_client_wellknown"] = True
    hs["tls_certificate_path"] = pki["cert"]
    hs["tls_private_key_path"] = pki["key"]
    hs["trusted_key_servers"] = []
    hs["suppress_key_server_warning"] = True
    hs["report_stats"] = False
    hs["enable_registration"] = False
    for limit in ("rc_registration", "rc_login", "rc_message"):
        hs[limit] = {"per_second": 1000, "burst_count": 1000}
    hs["rc_login"] = {"address": {"per_second": 1000, "burst_count": 1000},
                      "account": {"per_second": 1000, "burst_count": 1000},
                      "failed_attempts": {"per_second": 1000, "burst_count": 1000}}
    if extra_config:
        hs = merge_config(hs, extra_config)
    config.write_text(yaml.safe_dump(hs))
    log = d / "synapse.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config)],
            cwd=d, stdout=out, stderr=subprocess.STDOUT)
    client_url = f"http://127.0.0.1:{client_port}"
    try:
        wait_until(lambda: process.poll() is None
                   and requests.get(f"{client_url}/_matrix/client/versions", timeout=2).ok,
                   90, "Synapse")
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"Synapse did not start:\n{log.read_text()[-4000:]}")
    return Synapse(server_name, client_url, fed_port, hs["registration_shared_secret"], log,
                   config=config, process=process)


def stop_synapse(synapse: Synapse):
    synapse.process.terminate()
    try:
        synapse.process.wait(20)
    except subprocess.TimeoutExpired:
        synapse.process.kill()


@pytest.fixture(scope="session")
def synapse(tmp_path_factory, pki) -> Synapse:
    hs = start_synapse(tmp_path_factory.mktemp("synapse"), pki)
    yield hs
    stop_synapse(hs)


@dataclass
class Rtcbox:
    url: str
    data_dir: Path
    public_url: str
    log: Path
    process: subprocess.Popen = field(repr=False)
    # The signaling URL a LiveKit SDK connects to directly (no proxy): ws://127.0.0.1:<port>.
    ws_url: str = ""
    udp_port: int = 0
    tcp_port: int = 0
    # The admin panel: http://127.0.0.1:<port>.
    admin_url: str = ""
    # TURN: UDP and TCP on turn_port, TLS on turn_tls_port (0: that listener is off), relaying
    # from the ports relay_ports[0]..=relay_ports[1]. What the environment said, not what bound.
    turn_port: int = 0
    turn_tls_port: int = 0
    relay_ports: tuple[int, int] = (0, 0)

    def setup_token(self) -> str:
        """The one-time setup token rtcbox printed to its log at start."""
        import re
        found = re.findall(r"setup token ([A-Za-z0-9]{16,})", self.log_text())
        assert found, f"no setup token in the log:\n{self.log_text()[-2000:]}"
        return found[-1]

    def setup_url(self) -> str:
        """The setup URL (with the token) rtcbox printed to its log at start."""
        import re
        found = re.findall(r"open (https?://\S+/setup\?token=[A-Za-z0-9]{16,}) ", self.log_text())
        assert found, f"no setup URL in the log:\n{self.log_text()[-2000:]}"
        return found[-1]

    def key_pair(self) -> tuple[str, str]:
        """The API key and secret rtcbox signs and verifies LiveKit tokens with."""
        stored = self.stored()
        return stored["api_key"], stored["api_secret"]

    def stored(self) -> dict:
        with sqlite3.connect(self.data_dir / "rtcbox.db") as db:
            return dict(db.execute("SELECT key, value FROM settings"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def post(self, path: str, body) -> requests.Response:
        data = body if isinstance(body, (str, bytes)) else None
        return requests.post(f"{self.url}{path}", data=data,
                             json=None if data is not None else body, timeout=15)


def launch_rtcbox(directory: Path, pki: dict, started: list, env: dict, name: str = "rtcbox",
                  public_url: str | None = None) -> Rtcbox:
    """Starts rtcbox with its data and log under ``directory``; appends the process to
    ``started``. See ``start_rtcbox`` for ``public_url``."""
    assert RTCBOX_BIN and Path(RTCBOX_BIN).is_file(), "set RTCBOX_BIN to the built rtcbox binary"
    # A test that must know the HTTP port before rtcbox starts (an ACME CA validating on it)
    # passes RTCBOX_HTTP_BIND itself.
    port = int(env["RTCBOX_HTTP_BIND"].rsplit(":", 1)[1]) if "RTCBOX_HTTP_BIND" in env else free_port()
    udp_port, tcp_port = free_udp_port(), free_port()
    admin_port = free_port()
    if public_url is not None:
        own = f"ws://127.0.0.1:{port}"
        env = dict(env, RTCBOX_PUBLIC_URL=own if public_url == "self" else public_url)
    data_dir = directory / name
    public_url = env.get("LIVEKIT_URL") or env.get("RTCBOX_PUBLIC_URL") or "wss://rtc.test/livekit/sfu"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RTCBOX_", "LIVEKIT_"))}
    base.update({"RTCBOX_DATA_DIR": str(data_dir), "RTCBOX_HTTP_BIND": f"127.0.0.1:{port}",
                 "RTCBOX_MATRIX_CA_FILE": pki["ca"], "RTCBOX_PUBLIC_URL": public_url,
                 "RTCBOX_RTC_UDP_PORT": str(udp_port), "RTCBOX_RTC_TCP_PORT": str(tcp_port),
                 "RTCBOX_NODE_IP": "127.0.0.1", "RTCBOX_LOG": "info",
                 "RTCBOX_ADMIN_BIND": f"127.0.0.1:{admin_port}",
                 # No internet here: rtcbox's own media port answers STUN binding requests.
                 "RTCBOX_STUN_SERVERS": f"127.0.0.1:{udp_port}"})
    # Every instance gets its own TURN ports (never 3478/5349: a system coturn may hold them).
    relay_min, relay_max = free_relay_range()
    base.update({"RTCBOX_TURN_PORT": str(free_udp_tcp_port()),
                 "RTCBOX_TURN_TLS_PORT": str(free_port()),
                 "RTCBOX_HTTPS_BIND": f"127.0.0.1:{free_port()}",
                 "RTCBOX_TURN_RELAY_PORTS": f"{relay_min}-{relay_max}"})
    base.update(env)
    log = directory / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([RTCBOX_BIN, "serve"], env=base, stdout=out,
                                   stderr=subprocess.STDOUT)
    started.append(process)
    box = Rtcbox(f"http://127.0.0.1:{port}", data_dir, public_url, log, process,
                 ws_url=f"ws://127.0.0.1:{port}", udp_port=udp_port, tcp_port=tcp_port,
                 admin_url=f"http://127.0.0.1:{admin_port}",
                 turn_port=int(base["RTCBOX_TURN_PORT"]),
                 turn_tls_port=int(base["RTCBOX_TURN_TLS_PORT"]),
                 relay_ports=parse_port_range(base["RTCBOX_TURN_RELAY_PORTS"]))
    try:
        wait_until(lambda: process.poll() is None
                   and requests.get(f"{box.url}/healthz", timeout=2).status_code == 200,
                   30, "rtcbox")
    except TimeoutError:
        raise RuntimeError(f"rtcbox did not start:\n{box.log_text()[-4000:]}")
    return box


def parse_port_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def stop_processes(started: list):
    for process in started:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def start_rtcbox(tmp_path, pki):
    """Starts rtcbox with the given environment; every process is stopped after the test.

    ``public_url="self"`` sets RTCBOX_PUBLIC_URL to this instance's own ws:// URL, so the
    ``url`` that /sfu/get hands out points a LiveKit SDK straight at it; any other string is
    used as RTCBOX_PUBLIC_URL verbatim."""
    started = []

    def start(env: dict, name: str = "rtcbox", public_url: str | None = None) -> Rtcbox:
        return launch_rtcbox(tmp_path, pki, started, env, name, public_url)

    yield start
    stop_processes(started)


@pytest.fixture(scope="module")
def start_module_rtcbox(tmp_path_factory, pki):
    """``start_rtcbox`` for module-scoped fixtures: the processes live until the module ends."""
    directory = tmp_path_factory.mktemp("rtcbox")
    started = []

    def start(env: dict, name: str = "rtcbox", public_url: str | None = None) -> Rtcbox:
        return launch_rtcbox(directory, pki, started, env, name, public_url)

    yield start
    stop_processes(started)


# The node runners in tests/browser drive Debian's Chromium with playwright-core.
BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = os.environ.get("RTCBOX_CHROMIUM", "/usr/bin/chromium")


def require_browser_tooling(packages: tuple[str, ...]):
    """Fails under CI (skips elsewhere) when node, the npm packages or Chromium are missing."""
    problems = []
    if not shutil.which("node"):
        problems.append("node is not installed")
    for package in packages:
        if not (BROWSER_DIR / "node_modules" / package / "package.json").is_file():
            problems.append(f"{package} is missing: run `npm ci` in tests/browser (tests/run.sh does)")
    if not Path(CHROMIUM).is_file():
        problems.append(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    if problems:
        message = "browser test prerequisites: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def run_node_runner(script: str, config: dict, tmp_path: Path, name: str,
                    deadline_s: int) -> tuple[dict, str, int]:
    """Runs tests/browser/<script> with `config`; returns its JSON report, its stderr (progress
    lines) and its exit status. The report is also kept as <tmp_path>/<name>-report.json."""
    config_file = tmp_path / f"{name}-config.json"
    config_file.write_text(json.dumps(config))
    env = dict(os.environ, RTCBOX_CHROMIUM=CHROMIUM)
    try:
        done = subprocess.run(["node", script, str(config_file)], cwd=BROWSER_DIR, env=env,
                              capture_output=True, text=True, timeout=deadline_s + 30)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{name} runner hung past its own deadline; stderr:\n{e.stderr}")
    (tmp_path / f"{name}-report.json").write_text(done.stdout)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"{name} runner exited {done.returncode} without a report:\n"
                    f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
    return report, done.stderr, done.returncode
