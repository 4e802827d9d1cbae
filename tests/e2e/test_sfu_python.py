"""rtcbox as the SFU for unmodified official LiveKit Python SDKs (`livekit` + `livekit-api`).

Two participants join a room created through the server SDK, one publishes a 440 Hz tone, a
solid-colour picture and data; the other must hear that pitch, see that colour, get the data
from the right identity, and see mute, unmute and leave. Everything runs on loopback with the
media ports the fixture picked.
"""

import asyncio

import pytest
from livekit import rtc

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET, sfu_env


@pytest.mark.parametrize("single_peer_connection", [None, False], ids=["sdk-default", "dual-pc"])
def test_two_python_participants_exchange_media_data_and_state(start_rtcbox, single_peer_connection):
    """The full call path with the SDK's default connection mode (one peer connection through
    /rtc/v1) and with dual PeerConnections forced (/rtc): room creation over Twirp, join, remote
    participant discovery, audio and video forwarding with content checks, reliable data both
    ways, mute/unmute propagation, leave propagation, and ListParticipants along the way."""
    box = start_rtcbox(sfu_env())
    lk.run(call_scenario(box, single_peer_connection), box)


async def call_scenario(box, single_peer_connection):
    room = lk.unique("py-call")
    options = rtc.RoomOptions(auto_subscribe=True, single_peer_connection=single_peer_connection)
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    alice = bob = None
    try:
        created = await lk.create_room(lkapi, room)
        assert room in await lk.room_names(lkapi), "ListRooms does not show the room just created"
        assert await lk.room_names(lkapi, [room]) == [room]

        alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice", options)
        bob = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "bob", room), "bob", options)
        assert alice.room.name == room and bob.room.name == room
        # The SDK default joins through /rtc/v1 with no fallback; forced dual-PC through /rtc.
        path = "v0" if single_peer_connection is False else "v1"
        assert lk.signaling_of(box) == {"alice": path, "bob": path}
        # `Room.sid` is an async property: it resolves once the server has sent the room sid.
        sid = await asyncio.wait_for(bob.room.sid, lk.WAIT)
        assert sid == created.sid, "the joined room is not the room CreateRoom made"

        # Bob learns about Alice from the join response; Alice learns about Bob from an update.
        assert "alice" in bob.room.remote_participants, \
            f"bob does not see alice: {list(bob.room.remote_participants)}"
        await alice.log.wait_for("participant_connected", lk.is_from("bob"), "for bob")
        assert set(alice.room.remote_participants) == {"bob"}
        assert await lk.participant_identities(lkapi, room) == {"alice", "bob"}

        published = await lk.publish_media(alice)
        await bob.log.wait_for("track_published", lk.is_from("alice"), "for alice's tracks")
        await lk.assert_media_flows(bob, "alice")

        # Reliable data, once each way: alice to everyone, bob to alice only.
        await alice.room.local_participant.publish_data(b"hello from alice", reliable=True,
                                                        topic="rtcbox-e2e")
        packet, = await bob.log.wait_for(
            "data_received", lambda p: p.data == b"hello from alice", "with alice's payload")
        assert packet.participant is not None and packet.participant.identity == "alice"
        assert packet.topic == "rtcbox-e2e"
        assert packet.kind == rtc.DataPacketKind.KIND_RELIABLE
        await bob.room.local_participant.publish_data(b"hi alice", reliable=True,
                                                      destination_identities=["alice"])
        packet, = await alice.log.wait_for(
            "data_received", lambda p: p.data == b"hi alice", "with bob's payload")
        assert packet.participant is not None and packet.participant.identity == "bob"

        # Mute and unmute travel to the other participant.
        audio_sid = published.audio.sid
        mark = bob.log.mark()
        published.audio_track.mute()
        _, publication = await bob.log.wait_for(
            "track_muted", lambda p, pub: p.identity == "alice" and pub.sid == audio_sid,
            "for alice's audio", after=mark)
        assert publication.muted
        published.audio_track.unmute()
        _, publication = await bob.log.wait_for(
            "track_unmuted", lambda p, pub: p.identity == "alice" and pub.sid == audio_sid,
            "for alice's audio", after=mark)
        assert not publication.muted

        # Leaving is seen by the other participant and by the server API.
        await alice.room.disconnect()
        await bob.log.wait_for("participant_disconnected", lk.is_from("alice"), "for alice")
        assert "alice" not in bob.room.remote_participants
        assert await lk.participant_identities(lkapi, room) == {"bob"}
        assert bob.room.isconnected(), "bob was disconnected when alice left"
    finally:
        await lk.leave_all(alice, bob)
        await lkapi.aclose()
