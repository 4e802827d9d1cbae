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
import subprocess
from pathlib import Path

import yaml

from conftest import wait_until
from container_helpers import (IMAGE, PASSWORD, UID, Container, cargo_version, last_setup_token,
                               missing, podman, settings_env, static_binary, stored_key_pair)
from test_admin_synapse import Panel, describe

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
