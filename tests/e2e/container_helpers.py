"""Shared by the tests that run the release artefacts: the image's name, podman as this machine
runs it, free loopback settings for one rtcbox, and "missing" (skip locally, fail under CI)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import free_port, free_udp_port, free_udp_tcp_port

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
        "RTCBOX_HTTPS_BIND": f"127.0.0.1:{free_port()}",
        "RTCBOX_NODE_IP": "127.0.0.1",
        "RTCBOX_STUN_SERVERS": f"127.0.0.1:{udp}",
    }


class Container:
    """rtcbox from the image, /data bind-mounted from the host, host networking."""

    name = "rtcbox-e2e"

    def __init__(self, data: Path, env: dict, user: str | None = None):
        self.data, self.env, self.user = data, env, user
        self.admin_url = f"http://{env['RTCBOX_ADMIN_BIND']}"

    def start(self):
        podman("rm", "--force", "--time", "0", self.name, check=False)
        args = ["run", "--detach", "--name", self.name, "--network", "host",
                "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                "--volume", f"{self.data}:/data"]
        if self.user:
            args += ["--user", self.user]
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


def last_setup_token(log: str) -> str:
    found = re.findall(r"setup token ([A-Za-z0-9]{16,})", log)
    assert found, f"no setup token in the log:\n{log[-3000:]}"
    return found[-1]


def stored_key_pair(data: Path) -> tuple[str, str]:
    with sqlite3.connect(data / "rtcbox.db") as db:
        stored = dict(db.execute("SELECT key, value FROM settings"))
    return stored["api_key"], stored["api_secret"]
