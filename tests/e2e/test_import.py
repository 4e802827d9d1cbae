"""`rtcbox import` takes over a LiveKit + lk-jwt-service + coturn deployment: the sample files in
tests/data/import (ports moved to free loopback ones) are imported into a fresh data directory,
then `rtcbox serve` runs on nothing but that data directory. A token minted with the old key by
the official livekit-api package is accepted, the room service takes the old key, tokens rtcbox
mints verify with the old secret, and the listeners, TURN secret, public URL and full-access
homeservers are what the files said; the admin panel shows the import. A dry run and a bad file
store nothing."""

import asyncio
import os
import socket
import sqlite3
import subprocess
from pathlib import Path

import jwt
import requests
import yaml
from livekit import api

from conftest import (RTCBOX_BIN, Rtcbox, free_port, free_relay_range, free_udp_port,
                      free_udp_tcp_port, wait_until)
from test_admin_synapse import Panel, page_text

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "import"
OLD_KEY = "lkprod"
OLD_SECRET = "Xq3v9Zr8TmW2kYp6LbN4sHd7JfQ1aEc5RgU0oViM"
TURN_SECRET = "9d2b7c4e1f8a6b3d5c0e7f2a9b4d6c8e1f3a5b7c"
PUBLIC_URL = "wss://matrix-rtc.example.org/livekit/sfu"


def clean_env(**extra) -> dict:
    """The test's environment without any RTCBOX_* or LIVEKIT_* the developer may have set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTCBOX_", "LIVEKIT_"))}
    env.update(extra)
    return env


def rtcbox(data_dir: Path, *args: str, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([RTCBOX_BIN, *args], env=clean_env(RTCBOX_DATA_DIR=str(data_dir),
                                                             **extra_env),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def write_deployment(d: Path) -> dict:
    """The sample files with free loopback ports instead of LiveKit's and coturn's."""
    ports = {"http": free_port(), "udp": free_udp_port(), "tcp": free_port(),
             "turn": free_udp_tcp_port(), "turns": free_port(), "relay": free_relay_range()}
    livekit = yaml.safe_load((SAMPLES / "livekit.yaml").read_text())
    livekit["rtc"].update(tcp_port=ports["tcp"], port_range_start=ports["udp"],
                          port_range_end=ports["udp"] + 10)
    (d / "livekit.yaml").write_text(yaml.safe_dump(livekit))
    env = (SAMPLES / "lk-jwt.env").read_text().replace(
        "LIVEKIT_JWT_BIND=:8080", f"LIVEKIT_JWT_BIND=127.0.0.1:{ports['http']}")
    (d / "lk-jwt.env").write_text(env)
    coturn = (SAMPLES / "turnserver.conf").read_text()
    for old, new in [("listening-port=3478", f"listening-port={ports['turn']}"),
                     ("tls-listening-port=5349", f"tls-listening-port={ports['turns']}"),
                     ("min-port=49160", f"min-port={ports['relay'][0]}"),
                     ("max-port=49200", f"max-port={ports['relay'][1]}")]:
        assert old in coturn
        coturn = coturn.replace(old, new)
    (d / "turnserver.conf").write_text(coturn)
    return ports


def import_args(d: Path) -> list[str]:
    return ["import", "--livekit-yaml", str(d / "livekit.yaml"), "--env-file",
            str(d / "lk-jwt.env"), "--coturn-conf", str(d / "turnserver.conf")]


def stored(data_dir: Path) -> dict:
    with sqlite3.connect(data_dir / "rtcbox.db") as db:
        return dict(db.execute("SELECT key, value FROM settings"))


def old_token(room: str, identity: str, secret: str = OLD_SECRET) -> str:
    """What the old lk-jwt-service handed Element Call: signed with the old pair."""
    return (api.AccessToken(OLD_KEY, secret).with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


def test_import_then_serve_keeps_the_old_deployment_working(tmp_path):
    ports = write_deployment(tmp_path)
    data_dir = tmp_path / "data"
    minted_before = old_token("!room:example.org", "@alice:example.org:DEVICE")

    # A dry run shows the plan and stores nothing.
    dry = rtcbox(data_dir, *import_args(tmp_path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Dry run: nothing was stored" in dry.stdout
    assert not data_dir.exists()

    done = rtcbox(data_dir, *import_args(tmp_path), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Stored 13 settings" in done.stdout, done.stdout
    for secret in (OLD_SECRET, TURN_SECRET):
        assert secret not in done.stdout + done.stderr
    assert "(secret, 40 bytes)" in done.stdout

    admin_port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        # Only the data directory, the admin port, a STUN server (no internet here) and no HTTPS
        # listener (never 8443 in tests): every other setting comes from the import.
        process = subprocess.Popen(
            [RTCBOX_BIN, "serve"], stdout=out, stderr=subprocess.STDOUT,
            env=clean_env(RTCBOX_DATA_DIR=str(data_dir), RTCBOX_ADMIN_BIND=f"127.0.0.1:{admin_port}",
                          RTCBOX_HTTPS_BIND="0",
                          RTCBOX_STUN_SERVERS=f"127.0.0.1:{ports['udp']}", RTCBOX_LOG="info"))
    url = f"http://127.0.0.1:{ports['http']}"
    box = Rtcbox(url, data_dir, PUBLIC_URL, log, process, ws_url=f"ws://127.0.0.1:{ports['http']}",
                 admin_url=f"http://127.0.0.1:{admin_port}")
    try:
        wait_until(lambda: process.poll() is None
                   and requests.get(f"{url}/healthz", timeout=2).status_code == 200,
                   30, f"rtcbox serve on the imported listener\n{log.read_text()[-3000:]}")

        # The room service takes the old key (lk-jwt-service's job for full-access users).
        async def create_room():
            async with api.LiveKitAPI(url, OLD_KEY, OLD_SECRET) as lkapi:
                return await lkapi.room.create_room(api.CreateRoomRequest(name="!room:example.org"))
        assert asyncio.run(create_room()).name == "!room:example.org"

        # A join token minted with the old key before the migration is accepted...
        validate = requests.get(f"{url}/rtc/validate", params={"access_token": minted_before},
                                timeout=10)
        assert validate.status_code == 200, validate.text
        # ...and one signed with another secret is not.
        forged = old_token("!room:example.org", "@mallory:example.org:X", "x" * 40)
        assert requests.get(f"{url}/rtc/validate", params={"access_token": forged},
                            timeout=10).status_code == 401

        # Tokens rtcbox mints verify with the old secret (official verifier and PyJWT).
        minted = rtcbox(data_dir, "token", "--room", "r", "--identity", "bob").stdout.strip()
        claims = api.TokenVerifier(OLD_KEY, OLD_SECRET).verify(minted)
        assert claims.identity == "bob" and claims.video.room == "r"
        assert jwt.decode(minted, OLD_SECRET, algorithms=["HS256"], issuer=OLD_KEY)["sub"] == "bob"

        # The listeners are where the files put them.
        for port in (ports["tcp"], ports["turn"], ports["turns"]):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            busy.bind(("127.0.0.1", ports["udp"]))
            raise AssertionError(f"nothing listens on the imported media port {ports['udp']}")
        except OSError:
            pass
        finally:
            busy.close()

        # What Synapse, the clients and the router rely on is stored as the files said.
        settings = stored(data_dir)
        assert settings["turn_shared_secret"] == TURN_SECRET
        assert settings["public_url"] == PUBLIC_URL
        assert settings["full_access_homeservers"] == "example.org"
        assert settings["node_ip"] == "203.0.113.7"
        assert settings["turn_relay_ports"] == f"{ports['relay'][0]}-{ports['relay'][1]}"

        # The admin panel shows the import and the running values.
        panel = Panel(box)
        panel.set_up()
        dashboard = page_text(panel.get("/").text)
        assert "Imported from livekit.yaml" in dashboard, dashboard
        assert "13 settings" in dashboard and "RTCBOX_TURN_SHARED_SECRET" in dashboard
        assert PUBLIC_URL in dashboard and "203.0.113.7" in dashboard
        settings_page = page_text(panel.get("/settings").text)
        for expected in (f"127.0.0.1:{ports['http']}", str(ports["udp"]), str(ports["tcp"]),
                         "example.org", "Imported from"):
            assert expected in settings_page, expected
        assert TURN_SECRET not in settings_page and OLD_SECRET not in settings_page
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_bad_file_stores_nothing_and_says_why(tmp_path):
    data_dir = tmp_path / "data"
    assert rtcbox(data_dir, "token", "--room", "r", "--identity", "i").returncode == 0
    before = stored(data_dir)
    (tmp_path / "livekit.yaml").write_text("rtc:\n  udp_port: 7882\nkeys:\n  devkey: secret\n")
    bad = rtcbox(data_dir, "import", "--yes", "--livekit-yaml", str(tmp_path / "livekit.yaml"))
    assert bad.returncode == 1
    assert ("the import stored nothing: livekit.yaml line 4, keys.devkey: the secret is 6 bytes "
            "long" in bad.stderr), bad.stderr
    assert stored(data_dir) == before

    # An existing key pair is not replaced without --yes when nobody can be asked.
    write_deployment(tmp_path)
    unasked = rtcbox(data_dir, *import_args(tmp_path))
    assert unasked.returncode == 2
    assert "Run again with --yes" in unasked.stderr
    assert stored(data_dir) == before
