"""Finding or building the Synology package for test_spk.py and test_spk_lifecycle.py, and a
simulated DSM that runs the package's real scripts.

Artefacts come from the environment:
- RTCBOX_DIST: a release directory holding rtcbox-*-x86_64.spk and
  x86_64-unknown-linux-gnu/rtcbox (what packaging/build-release.sh writes);
- otherwise RTCBOX_STATIC_BIN: a static x86_64 rtcbox; the tests build the .spk from it with
  spk/build-spk.sh.
Neither set: the tests skip, except under CI=true, where they fail.
"""

import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SPK = REPO / "spk" / "build-spk.sh"
STAND_INS = Path(__file__).resolve().parent / "dsm"
PKG = "rtcbox"
SCRIPTS = ["preinst", "postinst", "preuninst", "postuninst", "preupgrade", "postupgrade",
           "start-stop-status"]


def missing(message: str):
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Artefacts:
    spk: Path
    binary: Path


def find_artefacts(build_dir: Path) -> Artefacts:
    dist = os.environ.get("RTCBOX_DIST")
    if dist:
        spks = sorted(Path(dist).glob("rtcbox-*-x86_64.spk"))
        binary = Path(dist) / "x86_64-unknown-linux-gnu" / "rtcbox"
        if len(spks) != 1:
            missing(f"RTCBOX_DIST={dist} should hold exactly one rtcbox-*-x86_64.spk, found "
                    f"{[p.name for p in spks]}")
        if not binary.is_file():
            missing(f"RTCBOX_DIST={dist} has no x86_64-unknown-linux-gnu/rtcbox")
        return Artefacts(spks[0], binary)
    static = os.environ.get("RTCBOX_STATIC_BIN")
    if not static:
        missing("set RTCBOX_DIST (release directory from packaging/build-release.sh) or "
                "RTCBOX_STATIC_BIN (a static x86_64 rtcbox) to test the Synology package")
    if not Path(static).is_file():
        missing(f"RTCBOX_STATIC_BIN={static} does not exist")
    return Artefacts(build_spk(Path(static), build_dir), Path(static))


def build_spk(binary: Path, out: Path, build: int = 1, env: dict | None = None) -> Path:
    done = subprocess.run([str(BUILD_SPK), "--binary", str(binary), "--arch", "x86_64",
                           "--out", str(out), "--build", str(build)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))
    assert done.returncode == 0, f"build-spk.sh failed:\n{done.stdout}\n{done.stderr}"
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_file(), done.stdout
    return path


def read_info(text: str) -> dict:
    info = {}
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        assert sep and value.startswith('"') and value.endswith('"') and len(value) >= 2, \
            f"INFO line is not key=\"value\": {line!r}"
        info[key] = value[1:-1]
    return info


def unpack_spk(spk: Path, dest: Path) -> Path:
    """Unpacks the outer archive into dest (as DSM does into its temp dir); returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(spk, "r:") as outer:
        outer.extractall(dest, filter="tar")
    return dest


class FakeDsm:
    """/var/packages/rtcbox/{target,var,home,tmp,scripts,conf} under a temp root, and the
    package operations as Package Center runs them: the real scripts, in DSM's order, with the
    SYNOPKG_* variables DSM sets, and synosystemctl replaced by tests/e2e/dsm/synosystemctl."""

    def __init__(self, root: Path):
        self.root = root / "packages"
        self.pkg = self.root / PKG
        self.target, self.var = self.pkg / "target", self.pkg / "var"
        self.home, self.tmp = self.pkg / "home", self.pkg / "tmp"
        self.service_d = root / "service.d"
        self.work = root / "work"
        for d in (self.var, self.home, self.tmp, self.service_d, self.work):
            d.mkdir(parents=True, exist_ok=True)
        self.installed: Path | None = None  # the unpacked .spk now installed
        self.version = ""
        self.messages: list[str] = []  # what the scripts wrote to SYNOPKG_TEMP_LOGFILE
        self.outputs: list[str] = []   # their stdout and stderr
        self._n = 0

    # -- one script ----------------------------------------------------------------------

    def run(self, scripts: Path, name: str, status: str, args: tuple = (), wizard: dict | None = None,
            version: str | None = None, old_version: str = "", check: bool = True
            ) -> subprocess.CompletedProcess:
        self._n += 1
        logfile = self.work / f"{self._n:03d}-{name}.log"
        logfile.write_text("")
        env = {
            "PATH": f"{STAND_INS}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home), "LANG": "C.UTF-8", "FAKE_DSM_ROOT": str(self.root),
            "SYNOPKG_PKGNAME": PKG, "SYNOPKG_PKGVER": version or self.version,
            "SYNOPKG_PKGDEST": str(self.target), "SYNOPKG_PKGVAR": str(self.var),
            "SYNOPKG_PKGHOME": str(self.home), "SYNOPKG_PKGTMP": str(self.tmp),
            "SYNOPKG_PKG_STATUS": status, "SYNOPKG_TEMP_LOGFILE": str(logfile),
            "SYNOPKG_PKGINST_TEMP_DIR": str(self.work / "inst"), "SYNOPKG_PKGPORT": "8089",
            "SYNOPKG_DSM_VERSION_MAJOR": "7", "SYNOPKG_DSM_VERSION_MINOR": "2",
            "SYNOPKG_DSM_ARCH": "x86_64",
        }
        if old_version:
            env["SYNOPKG_OLD_PKGVER"] = old_version
        env.update(wizard or {})
        done = subprocess.run([str(scripts / name), *args], env=env, capture_output=True,
                              text=True, timeout=60)
        self.messages.append(logfile.read_text())
        self.outputs.append(done.stdout + done.stderr)
        if check:
            assert done.returncode == 0, (f"{name} {' '.join(args)} ({status}) exited "
                                          f"{done.returncode}:\n{done.stdout}{done.stderr}"
                                          f"\nlog: {logfile.read_text()}")
        return done

    def control(self, verb: str, status: str = "", check: bool = True):
        """scripts/start-stop-status as installed (DSM runs it from /var/packages/rtcbox)."""
        return self.run(self.pkg / "scripts", "start-stop-status", status, (verb,), check=check)

    def status(self) -> int:
        return self.control("status", check=False).returncode

    def start(self, status: str = "START"):
        self.control("prestart", status)
        self.control("start", status)

    def stop(self, status: str = "STOP"):
        self.control("prestop", status)
        self.control("stop", status)

    # -- what Package Center does around the scripts -------------------------------------

    def _unpack(self, spk: Path) -> Path:
        self._n += 1
        return unpack_spk(spk, self.work / f"spk-{self._n:03d}")

    def _put_files(self, new: Path):
        """Payload to target, scripts/conf/INFO to /var/packages/rtcbox, then the resource
        workers' acquire steps (systemd-user-unit, port-config)."""
        if self.target.exists():
            shutil.rmtree(self.target)
        self.target.mkdir()
        with tarfile.open(new / "package.tgz", "r:gz") as payload:
            payload.extractall(self.target, filter="tar")
        for d in ("scripts", "conf", "WIZARD_UIFILES"):
            shutil.rmtree(self.pkg / d, ignore_errors=True)
            shutil.copytree(new / d, self.pkg / d)
        shutil.copy(new / "INFO", self.pkg / "INFO")
        units = self.home / ".config" / "systemd" / "user"
        units.mkdir(parents=True, exist_ok=True)
        for unit in (new / "conf" / "systemd").glob("pkguser-*.service"):
            shutil.copy(unit, units / unit.name)
        sc = self.target / read_resource(new)["port-config"]["protocol-file"]
        shutil.copy(sc, self.service_d / f"{PKG}.sc")

    def _remove_files(self):
        """Uninstall: the workers' release steps, then target and the package's files."""
        for unit in (self.home / ".config" / "systemd" / "user").glob("pkguser-*.service"):
            unit.unlink()
        (self.service_d / f"{PKG}.sc").unlink(missing_ok=True)
        shutil.rmtree(self.target, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()

    def install(self, spk: Path, wizard: dict | None = None) -> None:
        new = self._unpack(spk)
        version = read_info((new / "INFO").read_text())["version"]
        self.run(new / "scripts", "preinst", "INSTALL", wizard=wizard, version=version)
        self.version = version
        self._put_files(new)
        self.run(self.pkg / "scripts", "postinst", "INSTALL", wizard=wizard)
        self.installed = new

    def upgrade(self, spk: Path, old_wizard: dict | None = None) -> None:
        """Old package stopped; new preupgrade; old preuninst and postuninst; new preinst,
        postinst, postupgrade (DSM 7's order, status UPGRADE throughout)."""
        new = self._unpack(spk)
        old_version = self.version
        version = read_info((new / "INFO").read_text())["version"]
        self.stop("UPGRADE")
        kw = dict(version=version, old_version=old_version)
        self.run(new / "scripts", "preupgrade", "UPGRADE", **kw)
        old_scripts = self.work / f"old-scripts-{self._n}"
        shutil.copytree(self.pkg / "scripts", old_scripts)
        self.run(old_scripts, "preuninst", "UPGRADE", wizard=old_wizard, **kw)
        self._remove_files()
        self.run(old_scripts, "postuninst", "UPGRADE", wizard=old_wizard, **kw)
        self.run(new / "scripts", "preinst", "UPGRADE", **kw)
        self.version = version
        self._put_files(new)
        self.run(self.pkg / "scripts", "postinst", "UPGRADE", **kw)
        self.run(self.pkg / "scripts", "postupgrade", "UPGRADE", **kw)
        self.installed = new

    def uninstall(self, wizard: dict) -> None:
        self.stop("UNINSTALL")
        scripts = self.work / f"uninstall-scripts-{self._n}"
        shutil.copytree(self.pkg / "scripts", scripts)
        self.run(scripts, "preuninst", "UNINSTALL", wizard=wizard)
        self._remove_files()
        for d in ("scripts", "conf", "WIZARD_UIFILES"):
            shutil.rmtree(self.pkg / d, ignore_errors=True)
        (self.pkg / "INFO").unlink(missing_ok=True)
        self.run(scripts, "postuninst", "UNINSTALL", wizard=wizard)
        self.installed = None
        self.version = ""


def read_resource(unpacked: Path) -> dict:
    import json
    return json.loads((unpacked / "conf" / "resource").read_text())


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR", "PNG without IHDR first"
    stream = io.BytesIO(data[16:24])
    return int.from_bytes(stream.read(4), "big"), int.from_bytes(stream.read(4), "big")


def parse_sc(text: str) -> dict:
    """A DSM .sc port file: {section: {key: value}}."""
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"bad .sc line {raw!r}"
        assert value.startswith('"') and value.endswith('"'), f"unquoted .sc value {raw!r}"
        current[key] = value[1:-1]
    return sections


def sc_ports(sections: dict) -> set[tuple[str, str]]:
    """{(port or "first:last", proto)} from every dst.ports."""
    found = set()
    for section in sections.values():
        for item in section["dst.ports"].split(","):
            ports, _, proto = item.partition("/")
            assert proto in ("tcp", "udp"), section
            found.add((ports, proto))
    return found
