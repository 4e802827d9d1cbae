"""'Restart now' in the admin panel (issue 15): a setting saved in the panel waits for a restart;
the button restarts rtcbox in the same process (execve: same process id, which is what a
supervisor such as systemd, Docker or DSM watches), and the restarted rtcbox runs with the
setting. The test process is the supervisor stand-in: it started rtcbox and only watches that
its child never exits."""

import re
import time

import requests

from conftest import wait_until
from lk_helpers import sfu_env
from test_admin_synapse import Panel, describe


def test_restart_now_applies_saved_settings_in_the_same_process(start_rtcbox):
    box = start_rtcbox(sfu_env())
    panel = Panel(box)
    panel.set_up()
    pid = box.process.pid

    saved = panel.post("/settings", {"key": "auto_create_rooms", "value": "true"})
    assert saved.status_code == 200 and "Saved RTCBOX_AUTO_CREATE_ROOMS" in saved.text, describe(saved)
    dashboard = panel.get("/")
    assert "wait for a restart" in dashboard.text and "RTCBOX_AUTO_CREATE_ROOMS" in dashboard.text
    assert 'action="/restart"' in dashboard.text, "no Restart now button beside the waiting settings"

    # A forged request (no CSRF token) restarts nothing.
    forged = panel.post("/restart", {}, csrf=False)
    assert forged.status_code in (400, 403), describe(forged)
    time.sleep(1)
    assert box.log_text().count("listening on http://") == 1

    answer = panel.post("/restart", {})
    assert answer.status_code == 200, describe(answer)
    assert "Restarting" in answer.text and answer.headers.get("refresh", "").startswith("4")

    def back() -> bool:
        if box.log_text().count("listening on http://") < 2:
            return False
        try:
            return requests.get(f"{box.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(back, 30, "rtcbox back after Restart now")
    assert box.process.poll() is None, f"rtcbox exited ({box.process.returncode}) instead of restarting"
    assert box.process.pid == pid
    assert "starting again in this process" in box.log_text()

    # Sessions are stored: the admin is still logged in, and nothing waits for a restart.
    dashboard = panel.get("/")
    assert dashboard.status_code == 200, describe(dashboard)
    assert "wait for a restart" not in dashboard.text, \
        re.sub(r"\s+", " ", dashboard.text)[:3000]
