"""Active speakers and connection quality.

Active speakers: rtcbox tells the room who speaks, from the audio level the publisher's
packets carry (the `ssrc-audio-level` header extension libwebrtc sends), which is what lights
the speaking indicator in Element Call. The Python SDK's `active_speakers_changed` event is
driven only by the server's `SpeakersChanged` messages for remote participants.

Connection quality: rtcbox judges each participant's link from its loss and round-trip time
and tells the room (`ConnectionQualityUpdate`); on loopback every link is excellent. (Worse
links are the harness's test: src/sfu/harness.rs, a lossy uplink.)"""

from livekit import rtc

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET, sfu_env


def test_the_room_is_told_who_speaks_and_who_stopped(start_rtcbox):
    box = start_rtcbox(sfu_env())
    lk.run(speakers_scenario(box), box)


def names(speakers) -> set[str]:
    return {p.identity for p in speakers}


async def speakers_scenario(box):
    room = lk.unique("speakers")
    lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
    alice = bob = None
    try:
        await lk.create_room(lkapi, room)
        alice = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "alice", room), "alice")
        bob = await lk.join(box.ws_url, lk.join_token(API_KEY, API_SECRET, "bob", room), "bob")
        published = await lk.publish_media(alice, video=False)
        await lk.wait_subscribed(bob, "alice", rtc.TrackKind.KIND_AUDIO)

        speakers, = await bob.log.wait_for(
            "active_speakers_changed", lambda s: names(s) == {"alice"}, "naming alice")
        assert "bob" not in names(speakers), "silent bob counted as a speaker"

        participant, quality = await bob.log.wait_for(
            "connection_quality_changed", lambda p, q: p.identity == "alice", "for alice")
        assert quality == rtc.ConnectionQuality.QUALITY_EXCELLENT, quality
        await alice.log.wait_for(
            "connection_quality_changed", lambda p, q: p.identity == "alice", "for alice herself")

        # Muted, alice's tone stops reaching anyone: she is no longer a speaker.
        mark = bob.log.mark()
        published.audio_track.mute()
        await bob.log.wait_for(
            "active_speakers_changed", lambda s: "alice" not in names(s), "without alice",
            after=mark)
    finally:
        await lk.leave_all(alice, bob)
        await lkapi.aclose()
