//! Deterministic tests of the core: a virtual clock, no sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_response::Message as Out;

use super::*;
use crate::rooms::RoomOptions;

fn sfu(auto_create_rooms: bool) -> (Sfu, Instant) {
    str0m::crypto::from_feature_flags().install_process_default();
    let now = Instant::now();
    let config = SfuConfig {
        udp_candidates: vec!["127.0.0.1:40000".parse().unwrap()],
        tcp_candidates: vec!["127.0.0.1:40001".parse().unwrap()],
        auto_create_rooms,
        node_id: "ND_test".into(),
    };
    (Sfu::new(config, now, 1_700_000_000_000), now)
}

fn request(conn: ConnId, room: &str, identity: &str) -> JoinRequest {
    JoinRequest::for_test(conn, room, identity, 2)
}

fn signals(sfu: &mut Sfu) -> Vec<(ConnId, Out)> {
    let mut out = Vec::new();
    while let Some(o) = sfu.poll_output() {
        if let Output::Signal(conn, m) = o {
            out.push((conn, *m));
        }
    }
    out
}

#[test]
fn joining_a_missing_room_is_refused_unless_auto_create_is_on() {
    let (mut sfu, now) = sfu(false);
    assert_eq!(
        sfu.join(now, request(1, "r", "alice")),
        Err(JoinError::RoomNotFound)
    );
    assert!(!sfu.can_join("r", now));

    let (mut sfu, now) = sfu_auto();
    assert!(sfu.can_join("r", now));
    sfu.join(now, request(1, "r", "alice")).unwrap();
    assert!(sfu.room_exists("r", now));
}

fn sfu_auto() -> (Sfu, Instant) {
    sfu(true)
}

#[test]
fn join_sends_the_join_response_first_then_a_subscriber_offer_with_data_channels() {
    let (mut sfu, now) = sfu(false);
    sfu.create_room(now, "r", RoomOptions::MATRIX_RTC, None)
        .unwrap();
    sfu.join(now, request(1, "r", "alice")).unwrap();
    let out = signals(&mut sfu);
    let Out::Join(join) = &out[0].1 else {
        panic!("first message is not the join response: {:?}", out[0]);
    };
    let me = join.participant.as_ref().unwrap();
    assert!(me.sid.starts_with("PA_"));
    assert_eq!(me.identity, "alice");
    assert!(me.permission.as_ref().unwrap().can_publish);
    assert!(join.subscriber_primary);
    assert!(join.ping_interval > 0 && join.ping_timeout > 0);
    assert_eq!(join.server_info.as_ref().unwrap().version, SERVER_VERSION);
    assert!(join.room.as_ref().unwrap().sid.starts_with("RM_"));
    let Some((_, Out::Offer(offer))) = out.iter().find(|(_, m)| matches!(m, Out::Offer(_))) else {
        panic!("no subscriber offer: {out:?}");
    };
    assert_eq!(offer.id, 1);
    assert!(offer.sdp.contains("m=application"), "{}", offer.sdp);
    assert!(
        offer.sdp.contains("127.0.0.1 40000 typ host"),
        "{}",
        offer.sdp
    );
    assert!(offer.sdp.contains("tcptype passive"), "{}", offer.sdp);
}

#[test]
fn others_are_announced_and_a_second_join_with_the_same_identity_replaces_the_first() {
    let (mut sfu, now) = sfu(false);
    sfu.create_room(now, "r", RoomOptions::MATRIX_RTC, None)
        .unwrap();
    sfu.join(now, request(1, "r", "alice")).unwrap();
    sfu.join(now, request(2, "r", "bob")).unwrap();
    let out = signals(&mut sfu);
    let announced = out.iter().any(|(conn, m)| {
        *conn == 1
            && matches!(m, Out::Update(u) if u.participants.iter().any(|p| p.identity == "bob"))
    });
    assert!(announced, "alice was not told about bob: {out:?}");
    let Some((_, Out::Join(join))) = out
        .iter()
        .find(|(c, m)| *c == 2 && matches!(m, Out::Join(_)))
    else {
        panic!("bob got no join response");
    };
    assert_eq!(join.other_participants.len(), 1);

    sfu.join(now, request(3, "r", "alice")).unwrap();
    let out = signals(&mut sfu);
    assert!(out.iter().any(|(c, m)| *c == 1
        && matches!(m, Out::Leave(l) if l.reason == proto::DisconnectReason::DuplicateIdentity as i32)));
    let gone = out.iter().any(|(c, m)| {
        *c == 2
            && matches!(m, Out::Update(u) if u.participants.iter().any(|p|
                p.identity == "alice" && p.state == proto::participant_info::State::Disconnected as i32))
    });
    assert!(gone, "bob was not told the old alice left: {out:?}");
    assert_eq!(sfu.participants_of("r").unwrap().len(), 2);
}

#[test]
fn add_track_is_answered_with_the_track_at_once() {
    let (mut sfu, now) = sfu(false);
    sfu.create_room(now, "r", RoomOptions::MATRIX_RTC, None)
        .unwrap();
    sfu.join(now, request(1, "r", "alice")).unwrap();
    signals(&mut sfu);
    sfu.handle_signal(
        now,
        1,
        proto::signal_request::Message::AddTrack(proto::AddTrackRequest {
            cid: "mic-1".into(),
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        }),
    );
    let out = signals(&mut sfu);
    let Some((_, Out::TrackPublished(published))) = out.first() else {
        panic!("no track_published: {out:?}");
    };
    assert_eq!(published.cid, "mic-1");
    let track = published.track.as_ref().unwrap();
    assert!(track.sid.starts_with("TR_AM"), "{}", track.sid);
    assert_eq!(track.mime_type, "audio/opus");
}

#[test]
fn leave_removes_the_participant_and_departure_timeout_closes_the_room() {
    let (mut sfu, now) = sfu(false);
    sfu.create_room(now, "r", RoomOptions::MATRIX_RTC, None)
        .unwrap();
    sfu.join(now, request(1, "r", "alice")).unwrap();
    sfu.leave(now, 1, proto::DisconnectReason::ClientInitiated);
    assert_eq!(sfu.participant_count(), 0);
    assert!(sfu.room_exists("r", now + Duration::from_secs(19)));
    let later = now + Duration::from_secs(21);
    sfu.handle_timeout(later);
    assert!(!sfu.room_exists("r", later));
    assert!(sfu.list_rooms(&[]).is_empty());
}

#[test]
fn garbage_datagrams_and_signals_change_nothing() {
    let (mut sfu, now) = sfu(false);
    sfu.create_room(now, "r", RoomOptions::MATRIX_RTC, None)
        .unwrap();
    sfu.join(now, request(1, "r", "alice")).unwrap();
    signals(&mut sfu);
    let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let to: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut seed = 7u32;
    for len in [0usize, 1, 4, 12, 20, 100, 1200] {
        for first in [0u8, 1, 0x16, 0x80, 0x90, 0xff] {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if let Some(b) = bytes.first_mut() {
                *b = first;
            }
            sfu.handle_receive(now, Protocol::Udp, from, to, &bytes);
        }
    }
    for sdp in ["", "v=0", "garbage\r\nm=audio"] {
        sfu.handle_signal(
            now,
            1,
            proto::signal_request::Message::Trickle(proto::TrickleRequest {
                candidate_init: sdp.into(),
                target: 1,
                ..Default::default()
            }),
        );
        sfu.handle_signal(
            now,
            1,
            proto::signal_request::Message::Answer(proto::SessionDescription {
                sdp: sdp.into(),
                id: 99,
                ..Default::default()
            }),
        );
    }
    assert_eq!(
        sfu.participant_count(),
        1,
        "stale answers and bad candidates are ignored"
    );
    sfu.handle_signal(
        now,
        1,
        proto::signal_request::Message::Offer(proto::SessionDescription {
            sdp: "not sdp".into(),
            id: 1,
            ..Default::default()
        }),
    );
    assert_eq!(
        sfu.participant_count(),
        0,
        "an unparsable offer ends that participant only"
    );
    assert!(sfu.room_exists("r", now));
}

#[test]
fn messages_follow_the_signaling_connection_not_the_participant_key() {
    // Connection ids far from the keys the core allocates (1, 2, ...), so a mix-up shows.
    let (mut sfu, now) = sfu(false);
    sfu.create_room(now, "r", RoomOptions::MATRIX_RTC, None)
        .unwrap();
    sfu.join(now, request(700, "r", "alice")).unwrap();
    sfu.join(now, request(900, "r", "bob")).unwrap();
    let out = signals(&mut sfu);
    assert!(matches!(out.first(), Some((700, Out::Join(_)))), "{out:?}");
    assert!(
        out.iter()
            .any(|(c, m)| *c == 900 && matches!(m, Out::Join(_)))
    );
    assert!(out.iter().all(|(c, _)| *c == 700 || *c == 900), "{out:?}");

    // Signals from a connection no session is attached to change nothing.
    sfu.handle_signal(
        now,
        1,
        proto::signal_request::Message::Leave(proto::LeaveRequest::default()),
    );
    sfu.leave(now, 2, proto::DisconnectReason::ClientInitiated);
    assert_eq!(sfu.participant_count(), 2);
    assert!(signals(&mut sfu).is_empty());

    sfu.leave(now, 900, proto::DisconnectReason::ClientInitiated);
    assert_eq!(sfu.participant_count(), 1);
    let out = signals(&mut sfu);
    let told = out.iter().any(|(c, m)| {
        *c == 700
            && matches!(m, Out::Update(u) if u.participants.iter().any(|p|
                p.identity == "bob" && p.state == proto::participant_info::State::Disconnected as i32))
    });
    assert!(told, "alice was not told bob left: {out:?}");
    assert_eq!(
        sfu.participant("r", "alice").map(|p| p.identity),
        Some("alice".into())
    );
}
