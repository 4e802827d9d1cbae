"""The Synology DSM 7 package (.spk) as a file: what Package Center needs to accept it, checked
member by member, and that spk/build-spk.sh builds it reproducibly and refuses bad input.
How the artefacts are found: spk_helpers.py."""

import gzip
import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from spk_helpers import (BUILD_SPK, REPO, SCRIPTS, build_spk, find_artefacts, parse_sc,
                         png_size, read_info, sc_ports, unpack_spk)

REQUIRED_INFO = ["package", "version", "os_min_ver", "description", "arch", "maintainer"]
OUTER_REQUIRED = ["INFO", "package.tgz", "PACKAGE_ICON.PNG", "PACKAGE_ICON_256.PNG",
                  "conf/privilege", "conf/resource", "conf/systemd/pkguser-rtcbox.service",
                  "WIZARD_UIFILES/install_uifile", "WIZARD_UIFILES/install_uifile.sh",
                  "WIZARD_UIFILES/uninstall_uifile"] + [f"scripts/{s}" for s in SCRIPTS]
MENU_ICON_SIZES = [16, 24, 32, 48, 64, 72, 256]


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    return find_artefacts(tmp_path_factory.mktemp("spk-build"))


@pytest.fixture(scope="module")
def unpacked(artefacts, tmp_path_factory) -> Path:
    outer = unpack_spk(artefacts.spk, tmp_path_factory.mktemp("spk-outer"))
    payload = outer / "payload"
    payload.mkdir()
    with tarfile.open(outer / "package.tgz", "r:gz") as tgz:
        tgz.extractall(payload, filter="tar")
    return outer


@pytest.fixture(scope="module")
def info(unpacked) -> dict:
    return read_info((unpacked / "INFO").read_bytes().decode("utf-8"))


def raw_headers(path: Path) -> list[tuple[str, bytes]]:
    """(name, 512-byte header) of every member, pax and GNU extension headers included."""
    data = path.read_bytes()
    headers, offset = [], 0
    while offset + 512 <= len(data):
        block = data[offset:offset + 512]
        if block == b"\0" * 512:
            break
        name = block[:100].rstrip(b"\0").decode()
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        headers.append((name, block))
        offset += 512 + (size + 511) // 512 * 512
    return headers


def check_tar(path: Path, what: str) -> list[str]:
    """ustar, regular files and directories only, root-owned, one mtime, sorted; the names."""
    headers = raw_headers(path)
    assert headers, f"{what}: empty archive"
    mtimes = set()
    for name, block in headers:
        assert block[257:265] == b"ustar\x0000", f"{what}: {name} is not a POSIX ustar header"
        assert block[156:157] in (b"0", b"5"), \
            f"{what}: {name} has type {block[156:157]!r} (pax/GNU extension or link)"
        assert int(block[108:116].rstrip(b"\0 ") or b"0", 8) == 0, f"{what}: {name} uid"
        assert int(block[116:124].rstrip(b"\0 ") or b"0", 8) == 0, f"{what}: {name} gid"
        mtimes.add(int(block[136:148].rstrip(b"\0 "), 8))
    assert len(mtimes) == 1, f"{what}: members have different mtimes {mtimes}"
    names = [name.rstrip("/") for name, _ in headers]
    assert names == sorted(names), f"{what}: members are not sorted: {names}"
    assert not any(n.startswith(("/", "./")) or "/._" in n or n.startswith("._") for n in names)
    return names


def test_outer_archive_is_an_uncompressed_ustar_with_every_member(artefacts):
    data = artefacts.spk.read_bytes()
    assert data[:2] != b"\x1f\x8b", "the .spk is gzip-compressed; DSM rejects that"
    assert artefacts.spk.name.endswith("-x86_64.spk") and artefacts.spk.name.startswith("rtcbox-")
    names = check_tar(artefacts.spk, ".spk")
    for member in OUTER_REQUIRED:
        assert member in names, f"{member} missing from the .spk: {names}"
    assert not (REPO / "LICENSE").exists() or "LICENSE" in names
    # The published checksum file matches.
    sha = (artefacts.spk.parent / (artefacts.spk.name + ".sha256")).read_text().split()
    assert sha == [hashlib.sha256(data).hexdigest(), artefacts.spk.name]


def test_info(unpacked, info, artefacts):
    raw = (unpacked / "INFO").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "INFO has a BOM"
    assert b"\r" not in raw and raw.endswith(b"\n"), "INFO needs LF line endings"
    assert not any(line.startswith(b"#") for line in raw.split(b"\n")), "no comments in INFO"
    for key in REQUIRED_INFO:
        assert info.get(key), f"INFO lacks {key}"
    assert info["package"] == "rtcbox"
    assert re.fullmatch(r"\d+(\.\d+)*-\d+", info["version"]), info["version"]
    assert all(int(part) < 2**31 for part in re.split(r"[.-]", info["version"]))
    assert info["version"] in artefacts.spk.name
    assert info["arch"] == "x86_64"
    assert info["os_min_ver"] == "7.0-40761"  # systemd-user-unit exists from this build on
    assert (info["adminprotocol"], info["adminport"]) == ("http", "8089")
    assert "adminurl" in info
    assert info["dsmuidir"] == "ui" and (unpacked / "payload/ui/config").is_file()
    assert info["ctl_stop"] == "yes" and info["checkport"] == "yes"
    assert info["silent_upgrade"] == "yes"
    for key in ("displayname", "maintainer_url", "support_url"):
        assert info[key], key
    assert info["checksum"] == hashlib.md5((unpacked / "package.tgz").read_bytes()).hexdigest()
    payload_bytes = sum(p.stat().st_size for p in (unpacked / "payload").rglob("*") if p.is_file())
    assert int(info["extractsize"]) == (payload_bytes + 1023) // 1024


def test_payload_archive(unpacked):
    tgz = (unpacked / "package.tgz").read_bytes()
    assert tgz[:2] == b"\x1f\x8b", "package.tgz is not gzip"
    assert not tgz[3] & 0x08 and tgz[4:8] == b"\0\0\0\0", "package.tgz was not made with gzip -n"
    inner = unpacked / "package.tar"
    inner.write_bytes(gzip.decompress(tgz))
    names = check_tar(inner, "package.tgz")
    for member in ["bin/rtcbox", "bin/rtcbox-service", "conf/rtcbox.sc", "ui/config"]:
        assert member in names, f"{member} missing from package.tgz"
    for name in ["bin/rtcbox", "bin/rtcbox-service"]:
        assert (unpacked / "payload" / name).stat().st_mode & 0o777 == 0o755, name


def test_scripts_are_posix_sh_with_lf_and_0755(unpacked):
    scripts = [unpacked / "scripts" / s for s in SCRIPTS]
    scripts += [unpacked / "WIZARD_UIFILES/install_uifile.sh",
                unpacked / "payload/bin/rtcbox-service"]
    for script in scripts:
        raw = script.read_bytes()
        assert raw.startswith(b"#!/bin/sh\n"), f"{script.name}: not #!/bin/sh"
        assert b"\r" not in raw, f"{script.name} has CRLF line endings"
        assert script.stat().st_mode & 0o777 == 0o755, f"{script.name} is not 0755"
        checked = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script.name}: {checked.stderr}"
        if Path("/bin/dash").exists():  # a strict POSIX shell catches bashisms sh -n would not
            checked = subprocess.run(["/bin/dash", "-n", str(script)], capture_output=True, text=True)
            assert checked.returncode == 0, f"{script.name} (dash): {checked.stderr}"
    for other in ["conf/privilege", "conf/resource", "WIZARD_UIFILES/install_uifile", "INFO"]:
        assert (unpacked / other).stat().st_mode & 0o777 == 0o644, other


def test_icons_have_the_sizes_dsm_wants(unpacked):
    assert png_size((unpacked / "PACKAGE_ICON.PNG").read_bytes()) == (64, 64)
    assert png_size((unpacked / "PACKAGE_ICON_256.PNG").read_bytes()) == (256, 256)
    for size in MENU_ICON_SIZES:
        icon = unpacked / f"payload/ui/images/icon_{size}.png"
        assert png_size(icon.read_bytes()) == (size, size), icon.name


def rtcbox_defaults() -> set[tuple[str, str]]:
    """Every port rtcbox listens on by default, from src/config/mod.rs."""
    source = (REPO / "src/config/mod.rs").read_text()

    def const(name: str) -> str:
        found = re.search(rf"pub const {name}: [^=]+= (.+);", source)
        assert found, f"{name} not in src/config/mod.rs"
        return found.group(1)

    port_of_bind = lambda name: const(name).strip('"').rsplit(":", 1)[1]  # noqa: E731
    relay = re.findall(r"\d+", const("DEFAULT_TURN_RELAY_PORTS"))
    turn = const("DEFAULT_TURN_PORT")
    return {(port_of_bind("DEFAULT_HTTP_BIND"), "tcp"), (port_of_bind("DEFAULT_ADMIN_BIND"), "tcp"),
            (port_of_bind("DEFAULT_HTTPS_BIND"), "tcp"),
            (const("DEFAULT_RTC_UDP_PORT"), "udp"), (const("DEFAULT_RTC_TCP_PORT"), "tcp"),
            (turn, "udp"), (turn, "tcp"), (const("DEFAULT_TURN_TLS_PORT"), "tcp"),
            (f"{relay[0]}:{relay[1]}", "udp")}


def test_privilege_resource_and_port_file(unpacked):
    privilege = json.loads((unpacked / "conf/privilege").read_text())
    assert privilege["defaults"]["run-as"] == "package"
    assert privilege.get("username", "rtcbox") == "rtcbox"
    resource = json.loads((unpacked / "conf/resource").read_text())
    assert "systemd-user-unit" in resource
    sc_path = unpacked / "payload" / resource["port-config"]["protocol-file"]
    assert sc_path.is_file(), f"port-config names {sc_path}, which is not in package.tgz"
    sections = parse_sc(sc_path.read_text())
    for name, section in sections.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name), name
        assert section["title"] and section["desc"], name
    assert sc_ports(sections) == rtcbox_defaults()
    # The admin panel is registered for the firewall but never offered for router forwarding.
    for section in sections.values():
        admin = section["dst.ports"] == "8089/tcp"
        assert section["port_forward"] == ("no" if admin else "yes"), section


def test_systemd_user_unit(unpacked):
    unit = (unpacked / "conf/systemd/pkguser-rtcbox.service").read_text()
    assert "\nRestart=on-failure\n" in unit
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1).split()
    assert exec_start[0] == "/var/packages/rtcbox/target/bin/rtcbox-service"
    assert exec_start[1:] == ["serve", "--data-dir", "/var/packages/rtcbox/var"]
    assert "EnvironmentFile=-/var/packages/rtcbox/var/rtcbox.env" in unit


def test_main_menu_entry_and_wizards(unpacked, info):
    config = json.loads((unpacked / "payload/ui/config").read_text())
    entry = config[".url"][info["dsmappname"]]
    assert (entry["type"], entry["protocol"], entry["port"]) == ("url", "http", "8089")
    assert entry.get("allUsers", False) is False, "only administrators may see the entry"
    for size in MENU_ICON_SIZES:
        assert (unpacked / "payload/ui" / entry["icon"].format(size)).is_file()

    install = json.loads((unpacked / "WIZARD_UIFILES/install_uifile").read_text())
    field = install[0]["items"][0]["subitems"][0]
    assert field["key"] == "pkgwizard_setup_token" and field["validator"]["allowBlank"] is True
    expr = field["validator"]["regex"]["expr"].strip("/")
    assert re.fullmatch(expr, "A" * 16) and not re.fullmatch(expr, "A" * 15)
    assert not re.fullmatch(expr, "abcdefgh-ijklmnop")

    uninstall = json.loads((unpacked / "WIZARD_UIFILES/uninstall_uifile").read_text())
    choices = {s["key"]: s["defaultValue"] for s in uninstall[0]["items"][0]["subitems"]}
    assert choices == {"pkgwizard_keep_data": True, "pkgwizard_erase_data": False}


def test_install_wizard_generator_prefills_a_random_token(unpacked, tmp_path):
    tokens = []
    for n in range(2):
        out = tmp_path / f"wizard-{n}.json"
        done = subprocess.run([str(unpacked / "WIZARD_UIFILES/install_uifile.sh")],
                              env={"PATH": "/usr/bin:/bin", "SYNOPKG_TEMP_LOGFILE": str(out)},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        field = json.loads(out.read_text())[0]["items"][0]["subitems"][0]
        assert field["key"] == "pkgwizard_setup_token"
        expr = field["validator"]["regex"]["expr"].strip("/")
        assert re.fullmatch(expr, field["defaultValue"]), field
        tokens.append(field["defaultValue"])
    assert tokens[0] != tokens[1]


def test_packaged_binary_reports_the_info_version(unpacked, info):
    done = subprocess.run([str(unpacked / "payload/bin/rtcbox"), "--version"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[0] == "rtcbox"
    assert words[1] == info["version"].rsplit("-", 1)[0], (done.stdout, info["version"])


def test_build_is_reproducible(artefacts, info, tmp_path):
    epoch = str(tarfile.open(artefacts.spk, "r:").getmembers()[0].mtime)
    build = info["version"].rsplit("-", 1)[1]
    env = {"SOURCE_DATE_EPOCH": epoch}
    first = build_spk(artefacts.binary, tmp_path / "a", int(build), env)
    second = build_spk(artefacts.binary, tmp_path / "b", int(build), env)
    assert first.read_bytes() == second.read_bytes(), "two builds differ"
    assert first.read_bytes() == artefacts.spk.read_bytes(), \
        "rebuilding from the same binary, sources and SOURCE_DATE_EPOCH gives other bytes"


@pytest.mark.parametrize("args, expected", [
    (["--arch", "armv8"], "not armv8"),
    (["--arch", "x86_64", "--version", "0.2.0-rc1"], "not numeric"),
    (["--arch", "x86_64", "--build", "7a"], "not a number"),
    (["--arch", "i386"], "must be x86_64 or armv8"),
])
def test_build_refuses_bad_input(artefacts, tmp_path, args, expected):
    done = subprocess.run([str(BUILD_SPK), "--binary", str(artefacts.binary), "--out",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and expected in done.stderr, (done.returncode, done.stderr)
    assert not list(tmp_path.glob("*.spk"))


def test_build_refuses_a_file_that_is_not_an_elf_binary(tmp_path):
    fake = tmp_path / "rtcbox"
    fake.write_text("#!/bin/sh\necho rtcbox 1.0.0\n")
    fake.chmod(0o755)
    done = subprocess.run([str(BUILD_SPK), "--binary", str(fake), "--arch", "x86_64", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "not an ELF executable" in done.stderr, done.stderr
