"""Unpublish without leaving, as Element Call does when a screen share or camera stops.

LiveKit clients unpublish by removing the sender and renegotiating (no signalling message
names the track): rtcbox must see the m-line stop, drop the track from the publisher's
snapshot and end every subscription to it, while the publisher stays in the call. Publishing
again afterwards (on the reused transceiver) must work like the first time.
"""

from livekit import rtc

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET, sfu_env


def test_a_track_is_unpublished_and_published_again_without_leaving(start_rtcbox):
    box = start_rtcbox(sfu_env())
    lk.run(unpublish_scenario(box), box)


async def unpublish_scenario(box):
    room = lk.unique("unpublish")
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    alice = bob = None
    try:
        await lk.create_room(lkapi, room)
        alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice")
        bob = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "bob", room), "bob")
        published = await lk.publish_media(alice)
        await lk.assert_media_flows(bob, "alice")

        video_sid = published.video.sid
        mark = bob.log.mark()
        await alice.room.local_participant.unpublish_track(video_sid)
        publication, participant = await bob.log.wait_for(
            "track_unpublished", lambda pub, p: p.identity == "alice", "for alice's camera", after=mark)
        assert participant.identity == "alice" and publication.sid == video_sid
        assert "participant_disconnected" not in bob.log.names()[mark:], "alice left instead"
        remote = bob.room.remote_participants["alice"]
        assert set(remote.track_publications) == {published.audio.sid}, \
            f"bob still lists {set(remote.track_publications)}"
        # Alice is still in the call and still heard.
        assert await lk.participant_identities(lkapi, room) == {"alice", "bob"}
        audio = await lk.wait_subscribed(bob, "alice", rtc.TrackKind.KIND_AUDIO)
        lk.assert_is_tone(await lk.receive_tone(audio))
        assert "track unpublished" in box.log_text()

        # A new camera track: announced, subscribed and seen like the first one.
        mark = bob.log.mark()
        again = await lk.publish_media(alice, audio=False)
        assert again.video.sid != video_sid
        await bob.log.wait_for(
            "track_subscribed", lambda track, pub, p: p.identity == "alice" and pub.sid == again.video.sid,
            "for alice's new camera", after=mark)
        lk.assert_is_colour(await lk.receive_colour(_track(bob, again.video.sid)))
    finally:
        await lk.leave_all(alice, bob)
        await lkapi.aclose()


def _track(peer: lk.Peer, sid: str) -> rtc.Track:
    publication = peer.room.remote_participants["alice"].track_publications[sid]
    assert publication.track is not None, "the publication has no track"
    return publication.track
