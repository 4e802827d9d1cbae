"""The admin panel in a real browser: headless Debian Chromium (tests/browser/wizard.mjs, driven
by playwright-core) walks the first run the way an admin does, from the setup URL in the log to
the verification page, pointing the wizard at the session's real Synapse, and takes a screenshot
of every page (docs/images/admin-*.png come from this test).

Screenshots go to the test's temporary directory; set RTCBOX_SCREENSHOT_DIR (e.g. docs/images)
to keep them, and RTCBOX_TOUR_DIR to keep the extra look at every page on a phone and a desktop
in dark mode. Needs node, `npm ci` in tests/browser and Debian's chromium, like
test_sfu_browser.py: outside CI a missing prerequisite skips the test, in CI it fails it.
"""

import os
import urllib.parse
from pathlib import Path

from conftest import free_port, require_browser_tooling, run_node_runner
from test_admin_synapse import relay_range

RUNNER_DEADLINE_S = 150
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Every page the walk photographs, numbered as wizard.mjs numbers them (admin-NN-NAME.png, NN
# counting from 01; docs/admin-panel.md refers to some of them by name).
SHOTS = ["setup", "dashboard", "wizard-homeserver", "wizard-endpoints", "wizard-tls",
         "wizard-network", "wizard-turn", "wizard-review", "outputs", "verify",
         "wizard-homeserver-error", "wizard-network-phone", "menu-phone",
         "wizard-network-lan-doubt", "verify-test-call", "test-call-phone", "verify-test-call-dark",
         "logs"]


def test_browser_walks_the_wizard(start_rtcbox, synapse, tmp_path):
    require_browser_tooling(("playwright-core",))
    # The test call joins through the public URL: this instance's own, on loopback.
    box = start_rtcbox({}, name="browser-wizard", public_url="self")
    # The log's setup URL is the panel's own address (RTCBOX_ADMIN_BIND is loopback here) with
    # the token in it, and the same URL waits in the data directory for those without the log.
    assert box.setup_url() == f"{box.admin_url}/setup?token={box.setup_token()}", box.log_text()
    assert box.setup_url() in (box.data_dir / "setup-url.txt").read_text()
    out_dir = Path(os.environ.get("RTCBOX_SCREENSHOT_DIR") or tmp_path / "screenshots").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("admin-*.png"):
        old.unlink()
    relay_min, relay_max = relay_range([box.udp_port, 3478])
    config = {
        "adminUrl": box.admin_url,
        "setupToken": box.setup_token(),
        "setupUrl": box.setup_url(),
        "password": "correct horse battery staple",
        "serverName": synapse.server_name,
        "clientUrl": synapse.client_url,
        "rtcUrl": box.url,
        "network": {"lan_ip": "127.0.0.1", "http": urllib.parse.urlsplit(box.url).port,
                    "https": free_port(), "admin": urllib.parse.urlsplit(box.admin_url).port,
                    "rtc_udp": box.udp_port, "rtc_tcp": box.tcp_port, "turn": 3478, "turns": 5349,
                    "relay_min": relay_min, "relay_max": relay_max},
        "expectPublicIp": "127.0.0.1",
        "accessToken": synapse.register("browser-admin")["access_token"],
        "outDir": str(out_dir),
        "prefix": "admin",
        "deadlineMs": RUNNER_DEADLINE_S * 1000,
    }
    if os.environ.get("RTCBOX_TOUR_DIR"):
        config["tourDir"] = str(Path(os.environ["RTCBOX_TOUR_DIR"]).resolve())
    report, stderr, status = run_node_runner("wizard.mjs", config, tmp_path, "wizard",
                                             RUNNER_DEADLINE_S)
    why = (f"report: {tmp_path / 'wizard-report.json'}\nerrors: {report.get('errors')}\n"
           f"failed at: {report.get('failedAt')}\n{report.get('failedPage', '')[:2000]}\n"
           f"steps:\n{stderr[-3000:]}\n--- rtcbox log (tail):\n{box.log_text()[-3000:]}")
    assert status == 0 and report["ok"], why
    # Each page was looked at on a desktop and a phone, and nothing broke the layout (the runner
    # fails on any problem; this keeps the test honest about having looked).
    assert len(report["layout"]) >= len(SHOTS) + 2 * 10, report["layout"]
    assert not any(report["layout"].values()), report["layout"]

    expected = [out_dir / f"admin-{i:02d}-{name}.png" for i, name in enumerate(SHOTS, start=1)]
    assert sorted(Path(p) for p in report["screenshots"]) == expected, report["screenshots"]
    for png in expected:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC), f"{png} is not a PNG"
        assert len(data) > 10_000, f"{png} is only {len(data)} bytes: a blank page?"

    # Keyboard: skip link first; on the setup page the token field follows it directly.
    assert report["keyboard"]["setupTabsToToken"] == 1, report["keyboard"]
    # A phone-width wizard step fits without sideways scrolling.
    phone = report["phone"]
    assert phone["scrollWidth"] <= phone["innerWidth"], phone
    # The panel's own scripts and styles load under its content security policy.
    assert not report["console"], report["console"]
    assert "homeserver-yaml" in report["outputs"], report["outputs"]
    assert report["checks"], report
    # The test call: media came back through the SFU to the admin's page and reached a phone
    # page, each with the path it took and a round-trip time (loopback: UDP to the SFU's port).
    call = report["testCall"]
    for side in ("admin", "phone", "phoneOnAdminPage"):
        assert call[side]["state"] == "media received", call
        assert call[side]["path"].startswith("UDP"), call
        assert call[side]["rtt"].endswith(" ms"), call
    # Again with only the TURN relay allowed: the media went through rtcbox's TURN server.
    assert call["relayOnly"]["state"] == "media received", call
    assert call["relayOnly"]["path"].startswith("TURN relay"), call
