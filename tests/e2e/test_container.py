"""The release artefacts as a container user meets them: the image built by
``packaging/build-release.sh --image`` run by a real container engine (podman), and the same
static binary in an empty root (no /etc, no libc, no /proc) as an unprivileged user with only
/data writable.

Each starts with a fresh /data, turns healthy through ``rtcbox healthcheck`` (the image's
HEALTHCHECK), serves the admin panel, takes an admin password through the setup token it logged,
and after being removed and created again over the same /data still has that password and the
same LiveKit key pair. A /data the unprivileged user cannot write gives a clear error.

Environment: ``RTCBOX_DIST`` is build-release.sh's output directory (the static binary is
``$RTCBOX_DIST/x86_64-unknown-linux-gnu/rtcbox``); ``RTCBOX_IMAGE`` names the image (default
``ghcr.io/rtcbox/rtcbox:<Cargo.toml version>``). Under ``CI=true`` a missing artefact or engine
fails the test instead of skipping it. Everything listens on 127.0.0.1 (host networking).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import free_port, free_udp_port, free_udp_tcp_port, wait_until
from test_admin_synapse import Panel, describe

ROOT = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI") == "true"
UID = 65532
PASSWORD = "a container password"


def cargo_version() -> str:
    found = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    assert found, "no version in Cargo.toml"
    return found.group(1)


def missing(what: str):
    if CI:
        pytest.fail(f"{what} (CI must build and run the release artefacts)")
    pytest.skip(what)


def static_binary() -> Path:
    dist = os.environ.get("RTCBOX_DIST")
    if not dist:
        missing("RTCBOX_DIST is not set: run packaging/build-release.sh and point RTCBOX_DIST at its output")
    binary = Path(dist) / "x86_64-unknown-linux-gnu" / "rtcbox"
    if not binary.is_file():
        missing(f"no static binary at {binary}")
    return binary


IMAGE = os.environ.get("RTCBOX_IMAGE", f"ghcr.io/rtcbox/rtcbox:{cargo_version()}")
# This sandbox's podman: runc (crun refuses its hybrid cgroups), no systemd for health-check
# timers (the test runs the check itself), and rlimits no higher than the host's hard limits.
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def settings_env() -> dict:
    """Free loopback ports for one rtcbox; STUN and public-IP detection stay on loopback."""
    udp = free_udp_port()
    return {
        "RTCBOX_HTTP_BIND": f"127.0.0.1:{free_port()}",
        "RTCBOX_ADMIN_BIND": f"127.0.0.1:{free_port()}",
        "RTCBOX_RTC_UDP_PORT": str(udp),
        "RTCBOX_RTC_TCP_PORT": str(free_port()),
        "RTCBOX_TURN_PORT": str(free_udp_tcp_port()),
        "RTCBOX_TURN_TLS_PORT": str(free_port()),
        "RTCBOX_NODE_IP": "127.0.0.1",
        "RTCBOX_STUN_SERVERS": f"127.0.0.1:{udp}",
    }


class Container:
    """rtcbox from the image, /data bind-mounted from the host, host networking."""

    name = "rtcbox-e2e"

    def __init__(self, data: Path, env: dict):
        self.data, self.env = data, env
        self.admin_url = f"http://{env['RTCBOX_ADMIN_BIND']}"

    def start(self):
        podman("rm", "--force", "--time", "0", self.name, check=False)
        args = ["run", "--detach", "--name", self.name, "--network", "host",
                "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                "--volume", f"{self.data}:/data"]
        for key, value in self.env.items():
            args += ["--env", f"{key}={value}"]
        podman(*args, IMAGE)

    def healthy(self) -> bool:
        if podman("healthcheck", "run", self.name, check=False).returncode != 0:
            return False
        state = podman("inspect", self.name, "--format", "{{.State.Health.Status}}").stdout
        return state.strip() == "healthy"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self):
        podman("stop", "--time", "10", self.name, check=False)
        podman("rm", "--force", self.name, check=False)

    def run_once(self, *args: str) -> subprocess.CompletedProcess:
        """A one-off `rtcbox ARGS` in a new container over the same /data and settings."""
        env = [arg for key, value in self.env.items() for arg in ("--env", f"{key}={value}")]
        return podman("run", "--rm", "--network", "host", "--ulimit", "nofile=4096:4096",
                      "--ulimit", "nproc=4096:4096", "--volume", f"{self.data}:/data", *env,
                      IMAGE, *args, check=False, timeout=60)

    def setup_token(self) -> str:
        return last_setup_token(self.logs())


# coreutils' chroot; /usr/sbin is not on every PATH.
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


class EmptyRoot:
    """The static binary alone in an otherwise empty directory, chrooted as uid 65532."""

    def __init__(self, root: Path, env: dict, binary: Path):
        self.root, self.env = root, env
        self.data = root / "data"
        self.admin_url = f"http://{env['RTCBOX_ADMIN_BIND']}"
        shutil.copy(binary, root / "rtcbox")
        self.log = root.parent / "empty-root.log"
        self.process: subprocess.Popen | None = None

    def command(self, *args: str) -> list[str]:
        return [CHROOT, f"--userspec={UID}:{UID}", str(self.root), "/rtcbox", *args]

    def environment(self) -> dict:
        # Nothing from the test's environment leaks in but what a container engine would set.
        return {"RTCBOX_DATA_DIR": "/data", "RTCBOX_LOG": "info", **self.env}

    def start(self):
        self.out = open(self.log, "a")
        self.process = subprocess.Popen(self.command("serve"), env=self.environment(),
                                        stdout=self.out, stderr=subprocess.STDOUT)

    def healthy(self) -> bool:
        assert self.process and self.process.poll() is None, self.logs()[-3000:]
        return subprocess.run(self.command("healthcheck"), env=self.environment(),
                              capture_output=True, timeout=30).returncode == 0

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def remove(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.out.close()

    def run_once(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env=self.environment(), capture_output=True,
                              text=True, timeout=60)

    def setup_token(self) -> str:
        return last_setup_token(self.logs())


def last_setup_token(log: str) -> str:
    found = re.findall(r"setup token ([A-Za-z0-9]{16,})", log)
    assert found, f"no setup token in the log:\n{log[-3000:]}"
    return found[-1]


def stored_key_pair(data: Path) -> tuple[str, str]:
    with sqlite3.connect(data / "rtcbox.db") as db:
        stored = dict(db.execute("SELECT key, value FROM settings"))
    return stored["api_key"], stored["api_secret"]


def log_in(box, password: str) -> Panel:
    panel = Panel(box)
    assert panel.get("/").headers["location"] == "/login"
    assert panel.get("/login").status_code == 200 and panel.csrf
    response = panel.post("/login", {"password": password})
    assert response.status_code == 303, describe(response)
    assert panel.get("/").status_code == 200
    return panel


def exercise(box, data: Path):
    """Start, healthy, panel, setup, re-create, the same data."""
    box.start()
    wait_until(box.healthy, 60, f"rtcbox healthy\n{box.logs()[-3000:]}")
    # Its own files, owned by the unprivileged user, in /data and nowhere else.
    assert (data / "rtcbox.db").is_file()
    assert (data / "rtcbox.db").stat().st_uid == UID
    assert "version=\"" + cargo_version() in box.logs()

    panel = Panel(box)
    panel.set_up(PASSWORD)
    assert "Dashboard" in panel.get("/").text
    keys = stored_key_pair(data)

    box.remove()
    box.start()
    wait_until(box.healthy, 60, f"rtcbox healthy again\n{box.logs()[-3000:]}")
    log_in(box, PASSWORD)
    assert stored_key_pair(data) == keys, "the key pair changed across a re-create"

    # A token minted from the kept key pair by a one-off run over the same /data.
    token = box.run_once("token", "--room", "r", "--identity", "alice")
    assert token.returncode == 0, token.stderr
    assert token.stdout.count(".") == 2, token.stdout
    box.remove()


def refuse_unwritable(box, data: Path):
    """A new, root-owned /data: a plain sentence naming the folder and the fix, and a non-zero
    exit (before any listener opens)."""
    shutil.rmtree(data)
    data.mkdir(mode=0o755)
    assert data.stat().st_uid == 0
    result = box.run_once("serve")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "/data" in said and "not writable" in said and "65532" in said, said


def test_image_is_healthy_serves_the_panel_and_keeps_data(tmp_path):
    if not shutil.which("podman"):
        missing("podman is not installed")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        missing(f"no image {IMAGE}: run packaging/build-release.sh --image")
    config = yaml.safe_load(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/rtcbox"] and config["Cmd"] == ["serve"]
    assert "RTCBOX_DATA_DIR=/data" in config["Env"]
    assert "/data" in config["Volumes"]
    assert {"8880/tcp", "8089/tcp", "8882/udp", "8881/tcp", "3478/udp", "3478/tcp",
            "5349/tcp"} <= set(config["ExposedPorts"])
    assert config["Labels"]["org.opencontainers.image.version"] == cargo_version()
    health = yaml.safe_load(podman("image", "inspect", IMAGE, "--format",
                                   "{{json .HealthCheck}}").stdout)
    assert health["Test"] == ["CMD", "/rtcbox", "healthcheck"], health

    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    box = Container(data, settings_env())
    try:
        exercise(box, data)
        refuse_unwritable(box, data)
    finally:
        box.remove()


def test_static_binary_in_an_empty_root(tmp_path):
    binary = static_binary()
    root = tmp_path / "root"
    root.mkdir()
    data = root / "data"
    data.mkdir(mode=0o700)
    os.chown(data, UID, UID)
    box = EmptyRoot(root, settings_env(), binary)
    # Nothing else in the root: no /etc (no resolv.conf, no CA bundle), no libc, no /proc.
    assert sorted(p.name for p in root.iterdir()) == ["data", "rtcbox"]
    try:
        exercise(box, data)
        # It resolves names without the C library and says so plainly when it cannot.
        probe = box.run_once("healthcheck", "--url", "http://rtcbox-test.invalid:1/healthz")
        assert probe.returncode == 1
        assert "no DNS configuration" in probe.stderr, probe.stderr
        refuse_unwritable(box, data)
    finally:
        box.remove()


def test_release_artefacts_are_static_and_say_their_version():
    binary = static_binary()
    header = subprocess.run(["readelf", "-lW", str(binary)], capture_output=True, text=True,
                            check=True).stdout
    assert "Requesting program interpreter" not in header, "the release binary is dynamic"
    said = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert re.fullmatch(rf"rtcbox {re.escape(cargo_version())} \(git [0-9a-f]{{12}}\)", said), said
