"""rtcbox's Twirp RoomService against the official Python server SDK (`livekit-api`), with live
SDK participants in the room so every call's effect is observed from the clients' side too."""

import asyncio
import datetime

import pytest
import requests
from livekit import api, rtc

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET, sfu_env

TWIRP = "/twirp/livekit.RoomService"


def admin_token(room: str = "", **grants) -> str:
    """A server-API token as livekit-api mints it per call (no identity needed)."""
    return api.AccessToken(API_KEY, API_SECRET).with_grants(
        api.VideoGrants(room=room, **grants)).to_jwt()


def expect_twirp_error(error: api.TwirpError, codes: set[str], statuses: set[int]) -> None:
    assert error.code in codes and error.status in statuses, \
        f"expected a Twirp error {codes} / HTTP {statuses}, got {error}"


def test_room_service_manages_a_live_room(start_rtcbox):
    """CreateRoom is idempotent; ListRooms filters by name; ListParticipants and GetParticipant
    reflect who is in the room (absent → Twirp not_found); MutePublishedTrack mutes the track at
    the publisher and at the subscriber; RemoveParticipant disconnects that participant
    (PARTICIPANT_REMOVED); DeleteRoom disconnects the rest (ROOM_DELETED) and the room is gone."""
    box = start_rtcbox(sfu_env())
    lk.run(room_service_scenario(box), box)


async def room_service_scenario(box):
    room = lk.unique("py-twirp")
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    alice = bob = None
    try:
        first = await lk.create_room(lkapi, room)
        again = await lk.create_room(lkapi, room)
        assert (again.sid, again.creation_time) == (first.sid, first.creation_time), \
            "CreateRoom on an existing room must return that room, not a new one"
        assert first.creation_time > 0
        other = await lk.create_room(lkapi, lk.unique("py-twirp-other"))
        assert other.sid != first.sid
        assert await lk.room_names(lkapi, [room]) == [room]
        assert set(await lk.room_names(lkapi)) >= {room, other.name}
        assert await lk.room_names(lkapi, ["no-such-room-" + room]) == []

        alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice")
        bob = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "bob", room), "bob")
        published = await lk.publish_media(alice, video=False)
        await lk.wait_subscribed(bob, "alice", rtc.TrackKind.KIND_AUDIO)

        assert await lk.participant_identities(lkapi, room) == {"alice", "bob"}
        info = await lkapi.room.get_participant(api.RoomParticipantIdentity(room=room, identity="alice"))
        assert info.identity == "alice"
        assert info.sid == alice.room.local_participant.sid
        assert published.audio.sid in [t.sid for t in info.tracks], \
            f"GetParticipant does not list alice's published track: {info.tracks}"
        for absent in (api.RoomParticipantIdentity(room=room, identity="nobody"),
                       api.RoomParticipantIdentity(room="no-such-room-" + room, identity="alice")):
            with pytest.raises(api.TwirpError) as caught:
                await lkapi.room.get_participant(absent)
            expect_twirp_error(caught.value, {api.TwirpErrorCode.NOT_FOUND}, {404})

        # Server-initiated mute: the publisher's SDK mutes its own track, the subscriber sees it.
        alice_mark, bob_mark = alice.log.mark(), bob.log.mark()
        response = await lkapi.room.mute_published_track(api.MuteRoomTrackRequest(
            room=room, identity="alice", track_sid=published.audio.sid, muted=True))
        assert response.track.sid == published.audio.sid and response.track.muted
        await alice.log.wait_for(
            "track_muted", lambda p, pub: p.identity == "alice" and pub.sid == published.audio.sid,
            "for its own audio (server-initiated mute)", after=alice_mark)
        await bob.log.wait_for(
            "track_muted", lambda p, pub: p.identity == "alice" and pub.sid == published.audio.sid,
            "for alice's audio", after=bob_mark)

        await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="bob"))
        reason, = await bob.log.wait_for("disconnected", what="after RemoveParticipant")
        assert reason == rtc.DisconnectReason.PARTICIPANT_REMOVED, rtc.DisconnectReason.Name(reason)
        await alice.log.wait_for("participant_disconnected", lk.is_from("bob"), "for removed bob")
        assert await lk.participant_identities(lkapi, room) == {"alice"}

        await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
        reason, = await alice.log.wait_for("disconnected", what="after DeleteRoom")
        assert reason == rtc.DisconnectReason.ROOM_DELETED, rtc.DisconnectReason.Name(reason)
        assert await lk.room_names(lkapi, [room]) == []
        assert room not in await lk.room_names(lkapi)
        # With auto-creation off, the deleted room cannot be joined again.
        token = lk.join_token(API_KEY, API_SECRET, "carol", room)
        validate = await asyncio.to_thread(
            requests.get, f"{box.url}/rtc/validate", headers={"Authorization": f"Bearer {token}"},
            timeout=10)
        assert validate.status_code == 404 and "requested room does not exist" in validate.text
    finally:
        await lk.leave_all(alice, bob)
        await lkapi.aclose()


def test_room_service_rejects_missing_grants_and_bad_credentials(start_rtcbox):
    """Per-room methods need roomAdmin for that room, CreateRoom needs roomCreate, ListRooms
    roomList, and a token signed with another secret is refused; the SDK gets Twirp errors."""
    box = start_rtcbox(sfu_env())
    lk.run(credentials_scenario(box), box)


async def credentials_scenario(box):
    room = lk.unique("py-twirp-auth")
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    denied = {api.TwirpErrorCode.PERMISSION_DENIED, api.TwirpErrorCode.UNAUTHENTICATED}
    clients = []
    try:
        await lk.create_room(lkapi, room)

        def with_token(token: str) -> api.LiveKitAPI:
            client = api.LiveKitAPI(box.url, token=token)
            clients.append(client)
            return client

        # A participant's join token is not an admin token (LiveKit answers 401 unauthenticated
        # here; 403 permission_denied is accepted as well).
        joiner = with_token(lk.join_token(API_KEY, API_SECRET, "mallory", room))
        other_room_admin = with_token(admin_token(room="other-room", room_admin=True))
        for client in (joiner, other_room_admin):
            with pytest.raises(api.TwirpError) as caught:
                await client.room.list_participants(api.ListParticipantsRequest(room=room))
            expect_twirp_error(caught.value, denied, {401, 403})
            with pytest.raises(api.TwirpError) as caught:
                await client.room.remove_participant(
                    api.RoomParticipantIdentity(room=room, identity="alice"))
            expect_twirp_error(caught.value, denied, {401, 403})
        with pytest.raises(api.TwirpError) as caught:
            await joiner.room.create_room(api.CreateRoomRequest(name=lk.unique("py-nope")))
        expect_twirp_error(caught.value, denied, {401, 403})
        with pytest.raises(api.TwirpError) as caught:
            await joiner.room.list_rooms(api.ListRoomsRequest())
        expect_twirp_error(caught.value, denied, {401, 403})
        with pytest.raises(api.TwirpError) as caught:
            await joiner.room.delete_room(api.DeleteRoomRequest(room=room))
        expect_twirp_error(caught.value, denied, {401, 403})

        forged = lk.server_api(box.url, API_KEY, "another-secret-0123456789abcdef0123456789")
        clients.append(forged)
        with pytest.raises(api.TwirpError) as caught:
            await forged.room.list_rooms(api.ListRoomsRequest())
        expect_twirp_error(caught.value, {api.TwirpErrorCode.UNAUTHENTICATED}, {401})
        unknown_key = lk.server_api(box.url, "unknown-key", API_SECRET)
        clients.append(unknown_key)
        with pytest.raises(api.TwirpError) as caught:
            await unknown_key.room.list_rooms(api.ListRoomsRequest())
        expect_twirp_error(caught.value, {api.TwirpErrorCode.UNAUTHENTICATED}, {401})
        expired = with_token(api.AccessToken(API_KEY, API_SECRET)
                             .with_grants(api.VideoGrants(room_list=True))
                             .with_ttl(datetime.timedelta(minutes=-10)).to_jwt())
        with pytest.raises(api.TwirpError) as caught:
            await expired.room.list_rooms(api.ListRoomsRequest())
        expect_twirp_error(caught.value, {api.TwirpErrorCode.UNAUTHENTICATED}, {401})

        # Nothing of the above changed anything.
        assert await lk.room_names(lkapi, [room]) == [room]
    finally:
        for client in clients:
            await client.aclose()
        await lkapi.aclose()


def twirp_error_body(response: requests.Response) -> dict:
    assert response.headers.get("content-type", "").split(";")[0].strip() == "application/json", \
        f"Twirp errors are JSON, got {response.headers.get('content-type')!r}: {response.text[:200]}"
    body = response.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("msg"), str), body
    return body


def test_twirp_answers_bad_requests_with_twirp_errors(start_rtcbox):
    """Garbage protobuf or JSON bodies, unknown methods and non-POST requests get Twirp JSON
    errors ({"code", "msg"}) with a 4xx status, never a 5xx or a hang."""
    box = start_rtcbox(sfu_env())
    auth = {"Authorization": f"Bearer {admin_token(room_create=True, room_list=True)}"}

    def post(method: str, body: bytes, content_type: str) -> requests.Response:
        return requests.post(f"{box.url}{TWIRP}/{method}", data=body, timeout=10,
                             headers={**auth, "Content-Type": content_type})

    # Wrongly typed known fields are malformed; unknown fields are ignored, as protojson does
    # (so `{"name": 12}` is only malformed for CreateRoom, whose field it is).
    cases = [(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "application/protobuf"),
             (b"\x0a\x7fshort", "application/protobuf"),
             (b"{not json", "application/json")]
    for method, extra in (("CreateRoom", (b'{"name": 12, "max_participants": "many"}', "application/json")),
                          ("ListRooms", (b'{"names": "not-a-list"}', "application/json"))):
        for body, content_type in cases + [extra]:
            response = post(method, body, content_type)
            assert 400 <= response.status_code < 500, \
                f"{method} with {body!r} ({content_type}): HTTP {response.status_code} {response.text[:200]}"
            twirp_error_body(response)

    # A well-formed JSON request works (the Node server SDK speaks JSON, with a charset).
    room = lk.unique("py-twirp-json")
    response = post("CreateRoom", f'{{"name": "{room}"}}'.encode(), "application/json;charset=UTF-8")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == room

    response = post("NoSuchMethod", b"", "application/protobuf")
    assert response.status_code == 404, response.text
    assert twirp_error_body(response)["code"] == "bad_route"
    response = requests.post(f"{box.url}/twirp/livekit.NoSuchService/ListRooms", data=b"",
                             headers={**auth, "Content-Type": "application/protobuf"}, timeout=10)
    assert response.status_code == 404, response.text
    assert twirp_error_body(response)["code"] == "bad_route"

    response = requests.get(f"{box.url}{TWIRP}/ListRooms", headers=auth, timeout=10)
    assert 400 <= response.status_code < 500, response.text
    twirp_error_body(response)

    # No credentials at all.
    response = requests.post(f"{box.url}{TWIRP}/ListRooms", data=b"", timeout=10,
                             headers={"Content-Type": "application/protobuf"})
    assert response.status_code in (401, 403), response.text
    assert twirp_error_body(response)["code"] in ("unauthenticated", "permission_denied")
    assert "Traceback" not in box.log_text() and "panicked" not in box.log_text()
