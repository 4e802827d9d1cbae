"""The Synology package's real scripts in a simulated DSM (spk_helpers.FakeDsm): install with
the wizard's setup token, start, first-run setup through the admin panel, stop, upgrade,
uninstall keeping the data, reinstall, uninstall erasing it. rtcbox runs for real, from the
package's payload, under the stand-in synosystemctl (tests/e2e/dsm/synosystemctl), on
loopback ports written to var/rtcbox.env, the file the package's systemd unit reads."""

import re
import sqlite3
import subprocess
import urllib.parse

import pytest
import requests

from conftest import free_port, free_relay_range, free_udp_port, free_udp_tcp_port, wait_until
from spk_helpers import FakeDsm, build_spk, find_artefacts

TOKEN = "SpkWizardToken0123456789"
PASSWORD = "package lifecycle password"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """The package under test and a second build of it (build number + 1) to upgrade to."""
    artefacts = find_artefacts(tmp_path_factory.mktemp("spk-build"))
    build = int(re.search(r"-(\d+)-x86_64\.spk$", artefacts.spk.name).group(1))
    newer = build_spk(artefacts.binary, tmp_path_factory.mktemp("spk-newer"), build + 1)
    return artefacts.spk, newer


@pytest.fixture
def dsm(tmp_path):
    fake = FakeDsm(tmp_path)
    yield fake
    if (fake.pkg / "scripts" / "start-stop-status").exists():
        fake.control("stop", check=False)


class Ports:
    def __init__(self):
        self.http, self.admin = free_port(), free_port()
        self.udp, self.tcp = free_udp_port(), free_port()
        self.turn, self.turn_tls = free_udp_tcp_port(), free_port()
        self.https = free_port()
        self.relay = free_relay_range()

    def env_lines(self) -> str:
        return "\n".join([
            "# test_spk_lifecycle.py: loopback ports",
            f"RTCBOX_HTTP_BIND=127.0.0.1:{self.http}",
            f"RTCBOX_ADMIN_BIND=127.0.0.1:{self.admin}",
            f"RTCBOX_RTC_UDP_PORT={self.udp}", f"RTCBOX_RTC_TCP_PORT={self.tcp}",
            "RTCBOX_NODE_IP=127.0.0.1", f"RTCBOX_STUN_SERVERS=127.0.0.1:{self.udp}",
            f"RTCBOX_TURN_PORT={self.turn}", f"RTCBOX_TURN_TLS_PORT={self.turn_tls}",
            f"RTCBOX_HTTPS_BIND=127.0.0.1:{self.https}",
            f"RTCBOX_TURN_RELAY_PORTS={self.relay[0]}-{self.relay[1]}",
            "RTCBOX_PUBLIC_URL=wss://rtc.test/livekit/sfu", "RTCBOX_LOG=info", ""])


def use_ports(dsm: FakeDsm, ports: Ports):
    env_file = dsm.var / "rtcbox.env"
    assert env_file.is_file(), "postinst writes var/rtcbox.env"
    kept = [line for line in env_file.read_text().splitlines()
            if line.startswith("#") or not line.strip()]
    env_file.write_text("\n".join(kept) + "\n" + ports.env_lines())


def wait_healthy(dsm: FakeDsm, ports: Ports):
    def healthy():
        return requests.get(f"http://127.0.0.1:{ports.http}/healthz", timeout=2).status_code == 200
    try:
        wait_until(healthy, 30, "rtcbox under the package's unit")
    except TimeoutError:
        pytest.fail(f"rtcbox did not answer /healthz:\n{journal(dsm)[-4000:]}")


def wait_stopped(ports: Ports):
    def refused():
        try:
            requests.get(f"http://127.0.0.1:{ports.http}/healthz", timeout=2)
        except requests.ConnectionError:
            return True
        return False
    wait_until(refused, 30, "rtcbox stopped")


def journal(dsm: FakeDsm) -> str:
    path = dsm.home / ".synosystemctl" / "pkguser-rtcbox.journal"
    return path.read_text(errors="replace") if path.exists() else "(no journal)"


def stored_settings(dsm: FakeDsm) -> dict:
    with sqlite3.connect(f"file:{dsm.var / 'rtcbox.db'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT key, value FROM settings"))


class Panel:
    """The admin panel as a browser uses it: cookies, and the double-submit CSRF token."""

    def __init__(self, ports: Ports):
        self.url = f"http://127.0.0.1:{ports.admin}"
        self.http = requests.Session()

    def form(self, path: str) -> str:
        page = self.http.get(self.url + path, timeout=15, allow_redirects=False)
        assert page.status_code == 200, (path, page.status_code, page.headers)
        found = re.search(r'name="csrf" value="([A-Za-z0-9]{32})"', page.text)
        assert found, f"no CSRF token on {path}"
        return found.group(1)

    def post(self, path: str, fields: dict) -> requests.Response:
        return self.http.post(self.url + path, data=urllib.parse.urlencode(fields),
                              headers={"Content-Type": "application/x-www-form-urlencoded"},
                              timeout=30, allow_redirects=False)

    def set_up(self, token: str, password: str) -> requests.Response:
        csrf = self.form("/setup")
        return self.post("/setup", {"csrf": csrf, "token": token, "password": password,
                                    "confirm": password})

    def log_in(self, password: str) -> requests.Response:
        csrf = self.form("/login")
        return self.post("/login", {"csrf": csrf, "password": password})

    def entry(self) -> str:
        return self.http.get(self.url + "/", timeout=15, allow_redirects=False).headers.get("location", "")


def test_install_setup_upgrade_uninstall_reinstall_erase(dsm, packages):
    first, newer = packages
    ports = Ports()

    # Install with the wizard's setup token: stored for the first start only, private, and
    # never echoed by the scripts.
    dsm.install(first, wizard={"pkgwizard_setup_token": TOKEN})
    token_file = dsm.var / "setup-token"
    assert token_file.read_text().strip() == TOKEN
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert not any(TOKEN in text for text in dsm.messages + dsm.outputs), "a script showed the token"
    assert (dsm.pkg / "home/.config/systemd/user/pkguser-rtcbox.service").is_file()
    assert dsm.status() == 3, "installed but not started: status must be 3"
    log_path = dsm.control("log").stdout.strip()
    assert log_path == str(dsm.var / "logs" / "rtcbox.log")

    # Start: rtcbox runs from target with its data in var.
    use_ports(dsm, ports)
    dsm.start("INSTALL")
    wait_healthy(dsm, ports)
    assert dsm.status() == 0
    assert (dsm.var / "rtcbox.db").is_file(), "rtcbox's database is not in SYNOPKG_PKGVAR"
    assert not list(dsm.target.rglob("rtcbox.db")), "data written into target (lost on upgrade)"
    assert not token_file.exists(), "the wizard's token must be consumed by the first start"
    wait_until(lambda: f"setup token {TOKEN}" in open(log_path).read(), 10,
               "the wizard's token in rtcbox's log file")
    assert f"setup token {TOKEN}" in journal(dsm), "the log also goes to the journal"

    # The wizard's token opens the admin panel; a wrong one does not.
    panel = Panel(ports)
    assert panel.entry() == "/setup"
    wrong = panel.set_up("WrongToken0123456789", PASSWORD)
    assert not (wrong.status_code == 303 and wrong.headers.get("location") == "/wizard"), wrong.text
    done = panel.set_up(TOKEN, PASSWORD)
    assert done.status_code == 303 and done.headers["location"] == "/wizard", done.text
    assert "rtcbox_session=" in done.headers.get("set-cookie", "")
    assert panel.entry() == "", "logged in: the dashboard, no redirect"
    before = stored_settings(dsm)
    assert before.get("api_key") and before.get("api_secret")

    # Stop: status 3, nothing listens, the log file kept rtcbox's last line.
    dsm.stop()
    assert dsm.status() == 3
    wait_stopped(ports)
    assert "stopped" in open(log_path).read().splitlines()[-1]

    # Upgrade to the next build (the old postuninst even sees "erase": it must not erase on
    # an upgrade), then start: settings, key pair and admin password survive.
    dsm.upgrade(newer, old_wizard={"pkgwizard_erase_data": "true"})
    assert dsm.version.endswith(re.search(r"-(\d+)-x86_64", newer.name).group(1))
    assert (dsm.var / "rtcbox.db").is_file()
    assert not token_file.exists(), "the setup token came back after an upgrade"
    dsm.start("UPGRADE")
    wait_healthy(dsm, ports)
    assert dsm.status() == 0
    assert stored_settings(dsm) == before
    panel = Panel(ports)
    assert panel.entry() == "/login", "the admin password was lost"
    assert panel.log_in("not the password").status_code != 303
    logged_in = panel.log_in(PASSWORD)
    assert logged_in.status_code == 303 and logged_in.headers["location"] == "/", logged_in.text

    # Uninstall with the wizard's default (keep): the package is gone, the data is not.
    dsm.uninstall({"pkgwizard_keep_data": "true", "pkgwizard_erase_data": "false"})
    wait_stopped(ports)
    assert not dsm.target.exists()
    assert (dsm.var / "rtcbox.db").is_file() and (dsm.var / "rtcbox.env").is_file()

    # Reinstall without a token: the kept data is used (same keys, same password).
    dsm.install(first, wizard={"pkgwizard_setup_token": ""})
    assert not token_file.exists()
    dsm.start("INSTALL")
    wait_healthy(dsm, ports)
    assert stored_settings(dsm)["api_key"] == before["api_key"]
    panel = Panel(ports)
    assert panel.log_in(PASSWORD).status_code == 303

    # Uninstall choosing "erase": nothing of rtcbox's data is left.
    dsm.uninstall({"pkgwizard_keep_data": "false", "pkgwizard_erase_data": "true"})
    wait_stopped(ports)
    assert dsm.var.is_dir() and list(dsm.var.iterdir()) == []


def test_a_bad_wizard_token_aborts_the_install(dsm, packages):
    first, _ = packages
    for bad in ("short123", "has-a-dash-0123456789"):
        unpacked = dsm._unpack(first)
        done = dsm.run(unpacked / "scripts", "preinst", "INSTALL",
                       wizard={"pkgwizard_setup_token": bad}, check=False)
        assert done.returncode != 0, bad
        assert "setup token" in dsm.messages[-1] and bad not in dsm.messages[-1]
    assert not dsm.target.exists() and not (dsm.var / "setup-token").exists()


def test_control_script_contract_without_a_running_unit(dsm, packages):
    first, _ = packages
    dsm.install(first)
    for verb in ("prestart", "prestop", "stop", "unknown-verb"):
        assert dsm.control(verb, check=False).returncode == 0, verb
    assert dsm.status() == 3


def test_service_wrapper_bounds_the_log_file_and_passes_everything_on(dsm, packages, tmp_path):
    """bin/rtcbox-service with a stand-in rtcbox that prints a lot: the journal gets every
    line, the file in var/logs stays under the limit with one older file kept."""
    first, _ = packages
    dsm.install(first, wizard={"pkgwizard_setup_token": TOKEN})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "rtcbox-service"
    wrapper.write_bytes((dsm.target / "bin" / "rtcbox-service").read_bytes())
    wrapper.chmod(0o755)
    fake = bindir / "rtcbox"
    fake.write_text('#!/bin/sh\necho "args: $*"\necho "token: ${RTCBOX_SETUP_TOKEN:-none}"\n'
                    'i=0\nwhile [ $i -lt 2000 ]; do echo "line $i of the log"; i=$((i+1)); done\n')
    fake.chmod(0o755)
    limit = 4096
    done = subprocess.run([str(wrapper), "serve", "--data-dir", str(dsm.var)],
                          env={"PATH": "/usr/bin:/bin", "RTCBOX_LOG_MAX_BYTES": str(limit)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # The writer may still be flushing after rtcbox exits; it ends at EOF.
    logs = dsm.var / "logs"
    wait_until(lambda: "line 1999 of the log" in (logs / "rtcbox.log").read_text(), 10, "log")
    journal_lines = done.stdout.splitlines()
    assert journal_lines[0] == f"args: serve --data-dir {dsm.var}"
    assert journal_lines[1] == f"token: {TOKEN}"
    assert not (dsm.var / "setup-token").exists()
    assert (logs / "rtcbox.log").stat().st_size <= limit + 100
    assert (logs / "rtcbox.log.1").is_file() and (logs / "rtcbox.log.1").stat().st_size <= limit + 100
    assert not (logs / "rtcbox.log.2").exists()
