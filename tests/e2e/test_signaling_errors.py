"""The signalling endpoints' answers to bad and unusual input, as the LiveKit SDKs rely on them:
HTTP errors before the WebSocket upgrade (401 / 404 with LiveKit's texts), /rtc/v1's join request
and its validate endpoint, and a server that drops a client sending garbage or oversize
frames instead of hanging on it. Raw HTTP (requests) and a raw WebSocket client (websockets)."""

import asyncio
import datetime
import urllib.parse

import pytest
import requests
import websockets
from livekit import api
from livekit.protocol import rtc as signal
from websockets.asyncio.client import connect as ws_connect

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET, sfu_env

ROOM_MISSING = "requested room does not exist"
# What the Python SDK puts in the /rtc query (docs: livekit-protocol.md §1.6), minus the token.
V0_QUERY = {"sdk": "python", "version": "1.2.1", "protocol": "16", "client_protocol": "2",
            "auto_subscribe": "1", "adaptive_stream": "0"}
CLOSE_WAIT = 10.0


@pytest.fixture
def box(start_rtcbox):
    return start_rtcbox(sfu_env())


@pytest.fixture
def room(box):
    name = lk.unique("py-signal")

    async def create():
        lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
        try:
            await lk.create_room(lkapi, name)
        finally:
            await lkapi.aclose()

    lk.run(create(), box, timeout=60)
    return name


def token(room: str, identity: str = "probe", **kwargs) -> str:
    return lk.join_token(API_KEY, API_SECRET, identity, room, **kwargs)


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def rtc_url(box, path: str = "/rtc", **extra) -> str:
    return f"{box.ws_url}{path}?{urllib.parse.urlencode({**V0_QUERY, **extra})}"


async def upgrade_refused(url: str, headers: dict | None = None) -> tuple[int, str, dict]:
    """Attempts a WebSocket upgrade that must be refused; returns (status, body, headers)."""
    try:
        async with ws_connect(url, additional_headers=headers or {}, open_timeout=CLOSE_WAIT):
            pass
    except websockets.exceptions.InvalidStatus as e:
        response = e.response
        return response.status_code, (response.body or b"").decode(errors="replace"), response.headers
    except TimeoutError:
        raise AssertionError(f"no answer to the WebSocket upgrade to {url} in {CLOSE_WAIT:.0f} s") from None
    raise AssertionError(f"the WebSocket upgrade to {url} was accepted")


def test_rtc_refuses_missing_expired_and_forged_tokens(box, room):
    """No token, an expired token, a token signed with another secret, or a token without
    roomJoin: HTTP 401 before any upgrade, on /rtc and on /rtc/validate."""
    expired = token(room, ttl=datetime.timedelta(minutes=-10))
    forged = lk.join_token(API_KEY, "not-the-secret-0123456789abcdef0123456789", "probe", room)
    no_join = api.AccessToken(API_KEY, API_SECRET).with_identity("probe").with_grants(
        api.VideoGrants(room=room, room_admin=True)).to_jwt()

    async def scenario():
        status, body, _ = await upgrade_refused(rtc_url(box))
        assert status == 401, (status, body)
        for bad in (expired, forged, no_join):
            status, body, _ = await upgrade_refused(rtc_url(box), bearer(bad))
            assert status == 401, (status, body)
            status, body, _ = await upgrade_refused(rtc_url(box, access_token=bad))
            assert status == 401, (status, body)
        status, body, _ = await upgrade_refused(rtc_url(box), {"Authorization": "Basic Zm9vOmJhcg=="})
        assert status == 401, (status, body)

    lk.run(scenario(), box, timeout=60)
    for headers, params in [({}, {}), (bearer(expired), {}), ({}, {"access_token": forged}),
                            (bearer(no_join), {})]:
        response = requests.get(f"{box.url}/rtc/validate", headers=headers,
                                params={**V0_QUERY, **params}, timeout=10)
        assert response.status_code == 401, response.text


def test_rtc_answers_404_for_a_room_that_does_not_exist(box, room):
    """With room auto-creation off, a valid token for a room nobody created is refused with 404
    and LiveKit's exact text (JS SDKs match on it) on both /rtc and /rtc/validate, with the
    token in the Authorization header (Python, Rust) or in access_token (JS)."""
    missing = token("no-such-room-" + room)

    async def scenario():
        for url, headers in [(rtc_url(box), bearer(missing)),
                             (rtc_url(box, access_token=missing), {})]:
            status, body, _ = await upgrade_refused(url, headers)
            assert status == 404 and ROOM_MISSING in body, (status, body)

    lk.run(scenario(), box, timeout=60)
    for headers, params in [(bearer(missing), {}), ({}, {"access_token": missing})]:
        response = requests.get(f"{box.url}/rtc/validate", headers=headers,
                                params={**V0_QUERY, **params}, timeout=10)
        assert response.status_code == 404, response.text
        assert ROOM_MISSING in response.text
        assert response.headers.get("access-control-allow-origin") == "*"
    # The same token for the existing room validates.
    response = requests.get(f"{box.url}/rtc/validate", headers=bearer(token(room)),
                            params=V0_QUERY, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers.get("access-control-allow-origin") == "*"


def join_request(compress: bool = True, padded: bool = True, **fields) -> str:
    """A v1 `join_request` parameter as the SDKs build it: base64url of a WrappedJoinRequest
    whose JoinRequest is gzipped (livekit-client, usually) or not."""
    import base64
    import gzip
    inner = signal.JoinRequest(**fields).SerializeToString()
    wrapped = signal.WrappedJoinRequest(
        compression=signal.WrappedJoinRequest.GZIP if compress else signal.WrappedJoinRequest.NONE,
        join_request=gzip.compress(inner) if compress else inner)
    encoded = base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()
    return encoded if padded else encoded.rstrip("=")


def test_rtc_v1_joins_and_validates_like_livekit(box, room):
    """/rtc/v1 takes the join request from the query (gzipped or not, base64url padded or not)
    and answers with a JoinResponse for one peer connection; /rtc/v1/validate says "success"
    for what /rtc/v1 would admit and refuses the rest with LiveKit's statuses, every answer with
    Access-Control-Allow-Origin: * (livekit-client reads them cross-origin)."""
    good = token(room)
    origin = {"Origin": "https://call.example.org"}
    settings = signal.ConnectionSettings(auto_subscribe=True)

    async def scenario():
        for compress, padded in [(True, True), (False, False)]:
            query = urllib.parse.urlencode(
                {"join_request": join_request(compress, padded, connection_settings=settings)})
            async with ws_connect(f"{box.ws_url}/rtc/v1?{query}", additional_headers=bearer(good),
                                  open_timeout=CLOSE_WAIT) as ws:
                first = signal.SignalResponse.FromString(await asyncio.wait_for(ws.recv(), CLOSE_WAIT))
                assert first.WhichOneof("message") == "join", first
                assert not first.join.subscriber_primary, "v1: the client's connection leads"
                assert first.join.room.name == room
        # A join request that is not one is refused before the upgrade.
        status, body, _ = await upgrade_refused(f"{box.ws_url}/rtc/v1?join_request=CAES", bearer(good))
        assert (status, body) == (400, "join_request is not a WrappedJoinRequest")

    lk.run(scenario(), box, timeout=60)
    valid = join_request(connection_settings=settings)
    cases = [
        # (headers, query, status, body)
        ({**bearer(good), **origin}, {"join_request": valid}, 200, "success"),
        (origin, {"access_token": good, "join_request": valid}, 200, "success"),
        (origin, {"access_token": good}, 400, "join_request is required"),
        (origin, {"access_token": good, "join_request": "CAES"}, 400,
         "join_request is not a WrappedJoinRequest"),
        (origin, {"access_token": good, "join_request": "!!"}, 400, "join_request is not base64url"),
        (origin, {"access_token": "garbage", "join_request": valid}, 401, "invalid authorization token"),
        (origin, {"access_token": token(lk.unique("nowhere")), "join_request": valid}, 404, ROOM_MISSING),
    ]
    for headers, params, status, body in cases:
        response = requests.get(f"{box.url}/rtc/v1/validate", headers=headers, params=params, timeout=10)
        assert (response.status_code, response.text) == (status, body), params
        assert response.headers.get("access-control-allow-origin") == "*", dict(response.headers)


async def joined_socket(box, room: str, identity: str):
    """A raw v0 signalling connection that got its JoinResponse; returns the open socket."""
    ws = await ws_connect(rtc_url(box), additional_headers=bearer(token(room, identity)),
                          open_timeout=CLOSE_WAIT, max_size=None)
    first = await asyncio.wait_for(ws.recv(), CLOSE_WAIT)
    assert isinstance(first, bytes), f"the first signalling message is not binary: {first!r}"
    response = signal.SignalResponse.FromString(first)
    assert response.WhichOneof("message") == "join", f"first message is not a join: {response}"
    assert response.join.participant.identity == identity
    assert response.join.room.name == room
    return ws


async def ends_soon(ws) -> str:
    """Reads until the server ends the session: a close, or a `leave` it sends before closing.
    Fails if the connection is still open and silent about it after CLOSE_WAIT seconds."""
    async def read():
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    which = signal.SignalResponse.FromString(message).WhichOneof("message")
                    if which == "leave":
                        return "leave"
        except websockets.exceptions.ConnectionClosed as e:
            return f"closed ({e.rcvd.code if e.rcvd else 'no close frame'})"

    try:
        return await asyncio.wait_for(read(), CLOSE_WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"the server kept the session open {CLOSE_WAIT:.0f} s after bad input") from None
    finally:
        await ws.close()


def test_signalling_socket_is_dropped_on_garbage_and_oversize_frames(box, room):
    """After a good join, a frame that is not a SignalRequest, or a 2 MiB frame, ends the
    session promptly (close or leave) instead of being ignored or hanging the server; the
    server keeps serving other clients afterwards."""
    async def scenario():
        ws = await joined_socket(box, room, "garbage")
        await ws.send(b"\x0a\x7fnot a protobuf message")  # field 1, length 127, 21 bytes follow
        await ws.send(b"\xff" * 16)  # an overlong varint tag
        print("garbage:", await ends_soon(ws))

        ws = await joined_socket(box, room, "oversize")
        try:
            await ws.send(b"\x0a" + b"\x80\x80\x80\x01" + b"x" * (2 * 1024 * 1024))
        except websockets.exceptions.ConnectionClosed:
            pass  # closed while we were still sending: that is the expected outcome too
        print("oversize:", await ends_soon(ws))

        # Still alive and serving joins.
        ws = await joined_socket(box, room, "after")
        await ws.close()

    lk.run(scenario(), box, timeout=90)
    assert box.process.poll() is None, "rtcbox exited"
