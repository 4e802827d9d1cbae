"""Backup and restore of a real rtcbox: set up through the admin panel, backed up with
`rtcbox backup` and with the panel's download, the data directory wiped, restored with
`rtcbox restore` (and, on another instance, through the panel's upload form), started again.

What must survive: the LiveKit key pair (a token signed before the backup still works), the
stored settings, the admin login with the same password, the served certificate. A cut-off or
foreign file is refused with nothing changed.
"""

import json
import os
import shutil
import ssl
import subprocess

import requests
from livekit import api

from conftest import RTCBOX_BIN, free_port, wait_until
from test_admin_synapse import PASSWORD, Panel

FULL_ACCESS = "backup.example.org"


def env_with_https() -> tuple[dict, int]:
    port = free_port()
    return {"RTCBOX_HTTPS_BIND": f"127.0.0.1:{port}"}, port


def served_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port))


def cli(box_dir, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTCBOX_", "LIVEKIT_"))}
    return subprocess.run([RTCBOX_BIN, "--data-dir", str(box_dir), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def admin_token(key: str, secret: str) -> str:
    """A Twirp token (room list) signed with the pair, before the backup."""
    return (api.AccessToken(key, secret).with_identity("backup-test")
            .with_grants(api.VideoGrants(room_list=True, room_create=True)).to_jwt())


def list_rooms(box, token: str) -> int:
    return requests.post(f"{box.url}/twirp/livekit.RoomService/ListRooms", json={},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def login(box, password: str) -> Panel:
    panel = Panel(box)
    page = panel.get("/login")
    assert page.status_code == 200, page.text
    response = panel.post("/login", {"password": password})
    assert response.status_code == 303, response.text
    assert panel.get("/").status_code == 200
    return panel


def test_backup_wipe_restore_keeps_keys_settings_login_and_certificate(start_rtcbox, tmp_path):
    env, https_port = env_with_https()
    box = start_rtcbox(env, name="original")
    panel = Panel(box)
    panel.set_up()
    changed = panel.post("/settings", {"key": "full_access_homeservers", "value": FULL_ACCESS})
    assert changed.status_code in (200, 303), changed.text
    key, secret = box.key_pair()
    token = admin_token(key, secret)
    assert list_rooms(box, token) == 200
    certificate = served_certificate(https_port)

    # Both ways while it runs: the command line and the panel's download.
    by_cli = tmp_path / "cli-backup.json"
    done = cli(box.data_dir, "backup", "--out", str(by_cli))
    assert done.returncode == 0, done.stderr
    assert oct(by_cli.stat().st_mode & 0o777) == "0o600"
    download = panel.get("/backup/download")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    by_panel = tmp_path / "panel-backup.json"
    by_panel.write_bytes(download.content)
    for written in (by_cli, by_panel):
        parsed = json.loads(written.read_text())
        assert parsed["format"] == "rtcbox-backup" and parsed["version"] == 1
    assert json.loads(by_cli.read_text())["contents"] == json.loads(by_panel.read_text())["contents"]

    # Not under the running server.
    refused = cli(box.data_dir, "restore", str(by_cli))
    assert refused.returncode != 0 and "stop it first" in refused.stderr, refused.stderr
    box.process.terminate()
    box.process.wait(15)

    # Wipe, try bad files (nothing is created), restore, start again.
    shutil.rmtree(box.data_dir)
    cut = tmp_path / "cut.json"
    cut.write_bytes(by_cli.read_bytes()[:1000])
    bad = cli(box.data_dir, "restore", str(cut))
    assert bad.returncode != 0 and "cut off" in bad.stderr, bad.stderr
    foreign = cli(box.data_dir, "restore", "/etc/hostname")
    assert foreign.returncode != 0 and "not an rtcbox backup" in foreign.stderr, foreign.stderr
    assert not box.data_dir.exists()
    restored = cli(box.data_dir, "restore", str(by_cli))
    assert restored.returncode == 0, restored.stderr
    assert secret not in restored.stderr + restored.stdout

    env, https_port = env_with_https()
    again = start_rtcbox(env, name="original")
    assert again.key_pair() == (key, secret)
    assert list_rooms(again, token) == 200, "a token signed before the backup is refused"
    assert again.stored()["full_access_homeservers"] == FULL_ACCESS
    assert served_certificate(https_port) == certificate
    login(again, PASSWORD)
    assert "setup token" not in again.log_text()

    # The panel's file, uploaded to another instance's panel, which restarts itself with it
    # (in the same process).
    env, https_port = env_with_https()
    other = start_rtcbox(env, name="other")
    other_panel = Panel(other)
    other_panel.set_up("another password, not the backup's")
    other_panel.get("/backup")
    upload = other_panel.http.post(
        other.admin_url + "/backup/restore", timeout=30, allow_redirects=False,
        data={"csrf": other_panel.csrf},
        files={"backup": ("panel-backup.json", by_panel.read_bytes(), "application/json")})
    assert upload.status_code == 200, upload.text
    assert "rtcbox is restarting with it now" in upload.text, upload.text
    pid = other.process.pid
    def restarted() -> bool:
        if other.log_text().count("listening on http://") < 2:
            return False
        try:
            return list_rooms(other, token) == 200
        except requests.RequestException:
            return False

    wait_until(restarted, 30, "the restarted instance")
    assert other.process.poll() is None and other.process.pid == pid
    assert other.key_pair() == (key, secret)
    assert list_rooms(other, token) == 200
    assert served_certificate(https_port) == certificate
    login(other, PASSWORD)
