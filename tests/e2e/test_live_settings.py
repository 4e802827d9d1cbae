"""Settings that apply without a restart (issue 15), changed in the admin panel of the real
binary: the public IP check interval (the monitor asks again at once and from then on at the
new pace) and the trusted proxies (the next request's X-Forwarded-Proto is believed). A
setting that cannot apply live still waits for a restart, and says so. The process never
restarts. (The STUN servers are pinned here, so that nothing but the loopback stand-in is ever
asked; the unit tests of `live` cover changing them.)"""

from conftest import wait_until
from lk_helpers import sfu_env
from test_admin_synapse import PASSWORD, Panel, describe
from test_public_ip import StunStandIn
from test_trusted_proxies import login

PROXY = "127.0.0.2"


def test_the_check_interval_and_trusted_proxies_apply_without_a_restart(start_rtcbox):
    stun = StunStandIn("127.0.0.5")
    try:
        # The default interval (a minute): a changed answer is not seen within this test...
        box = start_rtcbox(dict(sfu_env(), RTCBOX_NODE_IP="",
                                RTCBOX_STUN_SERVERS=f"127.0.0.1:{stun.port}"))
        panel = Panel(box)
        panel.set_up()
        wait_until(lambda: "public IP detected ip=127.0.0.5" in box.log_text(), 20,
                   "the first detection")
        stun.answer = "127.0.0.6"
        # ...until the interval is changed in the panel: applied at once (a check now), then
        # every second.
        saved = panel.post("/settings", {"key": "public_ip_interval", "value": "1"})
        assert saved.status_code == 200 and "It is in effect now" in saved.text, describe(saved)
        wait_until(lambda: "to=127.0.0.6" in box.log_text(), 10, "a check right after the change")
        stun.answer = "127.0.0.7"
        wait_until(lambda: "to=127.0.0.7" in box.log_text(), 10, "a check at the new interval")
        dashboard = panel.get("/")
        assert "127.0.0.7, automatic" in dashboard.text, describe(dashboard)
        assert "wait for a restart" not in dashboard.text, "a live setting waits for a restart"

        # A proxy's X-Forwarded-Proto: not believed, then believed, in the same process.
        _, headers, _ = login(box, PROXY, PASSWORD, {"X-Forwarded-Proto": "https"})
        assert "Secure" not in headers.get("Set-Cookie", ""), headers
        saved = panel.post("/settings", {"key": "trusted_proxies", "value": PROXY})
        assert saved.status_code == 200 and "It is in effect now" in saved.text, describe(saved)
        status, headers, _ = login(box, PROXY, PASSWORD, {"X-Forwarded-Proto": "https"})
        assert status == 303 and "; Secure" in headers.get("Set-Cookie", ""), (status, headers)

        # Not every setting is live: room creation on join waits, and the panel says so with "Restart now".
        saved = panel.post("/settings", {"key": "auto_create_rooms", "value": "true"})
        assert saved.status_code == 200 and "takes effect when rtcbox restarts" in saved.text
        dashboard = panel.get("/")
        assert "wait for a restart" in dashboard.text and "RTCBOX_AUTO_CREATE_ROOMS" in dashboard.text
        assert "RTCBOX_TRUSTED_PROXIES</code>" not in dashboard.text
        assert "RTCBOX_PUBLIC_IP_INTERVAL</code>" not in dashboard.text

        assert box.log_text().count("listening on http://") == 1, "rtcbox restarted"
        assert box.process.poll() is None
    finally:
        stun.close()
