"""Delegated delayed leave events (MSC4140) with a real Synapse: a user schedules its call-member
"leave" as a delayed state event, hands the delay id to rtcbox (`/delegate_delayed_leave`, as
current lk-jwt-service defines it), and joins the SFU with the LiveKit Python SDK. rtcbox keeps
the event from firing while the participant is in the room and sends it when it leaves, also
across a restart of rtcbox."""

import asyncio
import sqlite3
import time
import urllib.parse

import pytest
import requests

import lk_helpers as lk
from conftest import start_synapse, stop_synapse, wait_until

DEVICE = "DEVICEID"
SLOT = "m.call#ROOM"
MEMBER_TYPE = "org.matrix.msc3401.call.member"
JOINED = {"application": "m.call", "call_id": "", "device_id": DEVICE, "scope": "m.room"}


@pytest.fixture(scope="module")
def synapse(tmp_path_factory, pki):
    """A Synapse with delayed events (MSC4140) whose client API is on its TLS port, found by
    rtcbox through /.well-known/matrix/client, as on a public homeserver."""
    hs = start_synapse(tmp_path_factory.mktemp("synapse-delayed"), pki, {
        "max_event_delay_duration": "24h",
        "experimental_features": {"msc4140_enabled": True},
        "rc_delayed_event_mgmt": {"per_second": 1000, "burst_count": 1000},
    }, client_over_tls=True)
    yield hs
    stop_synapse(hs)


class Call:
    """A user in a Matrix room with a delayed leave event scheduled, as Element Call sets up."""

    def __init__(self, synapse, delay_ms: int):
        self.synapse = synapse
        self.user = synapse.register(lk.unique("leave"))
        self.member_id = lk.unique("member")
        self.state_key = f"_{self.user['user_id']}_{DEVICE}_m.call"
        self.room_id = self.client("POST", "/createRoom", {})["room_id"]
        delayed = self.client("PUT", self.state_path(), {},
                              params={"org.matrix.msc4140.delay": str(delay_ms)})
        self.delay_id = delayed["delay_id"]
        self.client("PUT", self.state_path(), JOINED)

    def client(self, method: str, path: str, body=None, params=None) -> dict:
        response = requests.request(
            method, f"{self.synapse.client_url}/_matrix/client/v3{path}", json=body,
            params=params, headers={"Authorization": f"Bearer {self.user['access_token']}"},
            timeout=10)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def state_path(self) -> str:
        room = urllib.parse.quote(self.room_id, safe="")
        key = urllib.parse.quote(self.state_key, safe="")
        return f"/rooms/{room}/state/{MEMBER_TYPE}/{key}"

    def membership(self) -> dict:
        return self.client("GET", self.state_path())

    def body(self, **extra) -> dict:
        """The /get_token (MSC4195) body with a fresh OpenID token."""
        return {"room_id": self.room_id, "slot_id": SLOT,
                "openid_token": self.synapse.openid_token(self.user),
                "member": {"id": self.member_id, "claimed_user_id": self.user["user_id"],
                           "claimed_device_id": DEVICE}, **extra}

    def delegation(self, delay_ms: int) -> dict:
        return self.body(delay_id=self.delay_id, delay_timeout=delay_ms,
                         delay_cs_api_url="https://ignored.invalid")


def full_access(synapse) -> dict:
    return {"RTCBOX_FULL_ACCESS_HOMESERVERS": synapse.server_name}


def join(box, call: Call) -> dict:
    response = box.post("/get_token", call.body())
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_leave(call: Call, timeout: float):
    wait_until(lambda: call.membership() == {}, timeout, "the delayed leave event")


def test_leaving_the_sfu_sends_the_delayed_leave(synapse, start_rtcbox):
    delay_ms = 3000
    box = start_rtcbox(full_access(synapse), public_url="self")
    call = Call(synapse, delay_ms)

    response = box.post("/livekit/jwt/delegate_delayed_leave", call.delegation(delay_ms))
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert response.headers["access-control-allow-origin"] == "*"
    token = join(box, call)

    async def scenario():
        peer = await lk.join(token["url"], token["jwt"], "leaver")
        try:
            # Three times the delay: without rtcbox's restarts Synapse would have sent it.
            deadline = time.monotonic() + 3 * delay_ms / 1000
            while time.monotonic() < deadline:
                assert call.membership() == JOINED, "the leave was sent while in the call"
                await asyncio.sleep(0.25)
            await asyncio.wait_for(peer.room.disconnect(), lk.WAIT)
        finally:
            await lk.leave_all(peer)

    lk.run(scenario(), box)
    wait_for_leave(call, 15)
    wait_until(lambda: "delayed leave event sent" in box.log_text(), 10, "rtcbox's log line")
    assert call.delay_id not in box.log_text(), "the delay id is a secret"
    wait_until(lambda: box_rows(box) == 0, 10, "the delegation to be forgotten")


def test_a_delegation_survives_a_restart_and_sends_the_leave(synapse, start_rtcbox):
    """rtcbox stops while the participant is in the call (a shutdown sends nothing); the
    participant does not come back; the restarted rtcbox (whose SFU starts empty) sends the leave
    long before Synapse's own timer would."""
    delay_ms = 120_000
    box = start_rtcbox(full_access(synapse), public_url="self")
    call = Call(synapse, delay_ms)
    token = join(box, call)

    async def scenario():
        peer = await lk.join(token["url"], token["jwt"], "stays")
        try:
            # Element Call's second token request, once it knows the delay id.
            response = box.post("/get_token", call.body(delay_id=call.delay_id,
                                                        delay_timeout=delay_ms))
            assert response.status_code == 200, response.text
            assert box_rows(box) == 1
            box.process.terminate()
            box.process.wait(15)
        finally:
            await lk.leave_all(peer)

    lk.run(scenario(), box)
    assert call.membership() == JOINED, "stopping rtcbox must not send the leave"
    assert "delayed leave event sent" not in box.log_text()

    again = start_rtcbox(full_access(synapse), public_url="self")
    assert again.data_dir == box.data_dir
    # Far less than the 120 s delay: only rtcbox can have sent it.
    wait_for_leave(call, 40)
    wait_until(lambda: "delayed leave event sent" in again.log_text(), 10, "rtcbox's log line")
    wait_until(lambda: box_rows(again) == 0, 10, "the delegation to be forgotten")


def test_refusals_and_cors(synapse, start_rtcbox):
    # Synapse is a restricted homeserver here; on loopback, only reachable with the override.
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": "elsewhere.example",
                        "RTCBOX_DANGEROUS_ALLOW_PRIVATE_HOMESERVERS": "true"})
    call = Call(synapse, 10_000)
    for path in ("/delegate_delayed_leave", "/livekit/jwt/delegate_delayed_leave"):
        preflight = requests.options(f"{box.url}{path}", timeout=10, headers={
            "Origin": "https://call.example", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert preflight.headers["access-control-allow-methods"] == "POST"
        assert requests.get(f"{box.url}{path}", timeout=10).status_code == 405

    def refused(body, status: int, errcode: str, text: str = ""):
        response = box.post("/delegate_delayed_leave", body)
        assert response.status_code == status, response.text
        assert response.json()["errcode"] == errcode
        assert text in response.json()["error"]
        assert response.headers["access-control-allow-origin"] == "*"

    refused("{not json", 400, "M_NOT_JSON", "Error reading request")
    refused({"room_id": call.room_id}, 400, "M_BAD_JSON", "`room_id` or `slot_id`")
    refused(call.body(), 400, "M_BAD_JSON", "`delay_id` or `delay_timeout`")
    refused(call.body(delay_id=call.delay_id), 400, "M_BAD_JSON", "`delay_id` or `delay_timeout`")
    forged = call.delegation(10_000)
    forged["openid_token"]["access_token"] = "forged"
    refused(forged, 401, "M_UNAUTHORIZED")
    # A real user of a homeserver without full access here.
    refused(call.delegation(10_000), 403, "M_FORBIDDEN",
            "only supported for full access users")
    assert box_rows(box) == 0


def box_rows(box) -> int:
    with sqlite3.connect(box.data_dir / "rtcbox.db") as db:
        return db.execute("SELECT count(*) FROM delayed_leaves").fetchone()[0]
