use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::sfu::SfuSockets;

#[test]
fn the_phone_page_is_at_the_sfus_public_origin() {
    for (public_url, page) in [
        (
            "wss://rtc.example.org/livekit/sfu",
            "https://rtc.example.org/livekit/sfu/test-call",
        ),
        ("wss://sfu.example.org", "https://sfu.example.org/test-call"),
        (
            "wss://sfu.example.org/",
            "https://sfu.example.org/test-call",
        ),
        ("ws://127.0.0.1:8880", "http://127.0.0.1:8880/test-call"),
    ] {
        assert_eq!(phone_page(public_url), page, "{public_url}");
    }
}

#[test]
fn the_admin_page_may_connect_to_the_sfu_and_nowhere_else() {
    for (public_url, sources) in [
        (
            "wss://rtc.example.org/livekit/sfu",
            "wss://rtc.example.org https://rtc.example.org",
        ),
        (
            "ws://127.0.0.1:8880",
            "ws://127.0.0.1:8880 http://127.0.0.1:8880",
        ),
        (
            "wss://[2001:db8::1]:8443",
            "wss://[2001:db8::1]:8443 https://[2001:db8::1]:8443",
        ),
        // Nothing that could widen or break the policy.
        ("wss://a.example; script-src *", ""),
        ("wss://*", ""),
        ("https://rtc.example.org", ""),
        ("rtc.example.org", ""),
    ] {
        assert_eq!(connect_sources(public_url), sources, "{public_url}");
    }
}

#[test]
fn the_qr_code_is_an_svg() {
    let svg = qr_svg("https://rtc.example.org/livekit/sfu/test-call#eyJhbGciOiJIUzI1NiJ9.e30.x");
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    assert!(svg.contains("#000000") && svg.contains("#ffffff"));
}

#[tokio::test]
async fn a_test_call_is_a_room_of_its_own_with_short_lived_tokens() {
    str0m::crypto::from_feature_flags().install_process_default();
    let sockets = SfuSockets::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), None, 0, 0)
        .await
        .unwrap();
    let sfu = SfuHandle::spawn(sockets, false, None);
    let key = ApiKey::parse("APItestcall").unwrap();
    let secret = Secret::new("test-call-secret-test-call-secret-0");
    let now = u64::try_from(crate::db::unix_now()).unwrap();
    let public_url = "wss://rtc.example.org/livekit/sfu";

    assert!(matches!(
        start(None, &key, &secret, public_url, now).await,
        Err(StartError::NoSfu)
    ));
    let call = start(Some(&sfu), &key, &secret, public_url, now)
        .await
        .unwrap();
    let again = start(Some(&sfu), &key, &secret, public_url, now)
        .await
        .unwrap();
    assert_ne!(call.room, again.room);
    assert!(call.room.starts_with(ROOM_PREFIX), "{}", call.room);
    assert_eq!(call.url, public_url);
    assert_eq!(call.expires_in_secs, 600);

    // The room exists, for a handful of participants.
    let name = call.room.clone();
    let rooms = sfu
        .call(move |core, _| core.list_rooms(&[name]))
        .await
        .unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].max_participants, MAX_PARTICIPANTS);

    // Each token joins that room only, for ten minutes, with its own rights.
    let claims = |jwt: &str| {
        let claims = token::verify(jwt, &key, &secret).unwrap();
        assert_eq!(claims.exp, now + 600);
        let video = claims.video.clone().unwrap();
        assert!(video.room_join);
        assert_eq!(video.room, call.room);
        assert!(!video.room_create && !video.room_admin && !video.room_list);
        (claims.sub, video)
    };
    let (who, sender) = claims(&call.sender);
    assert_eq!(who, "test-pattern");
    assert_eq!(
        (sender.can_publish, sender.can_subscribe, sender.hidden),
        (Some(true), Some(false), false)
    );
    let (who, viewer) = claims(&call.viewer);
    assert_eq!(who, "admin-viewer");
    assert_eq!(
        (viewer.can_publish, viewer.can_subscribe, viewer.hidden),
        (Some(false), Some(true), true)
    );
    let (page, phone_token) = call.phone_link.split_once('#').unwrap();
    assert_eq!(page, "https://rtc.example.org/livekit/sfu/test-call");
    let (who, phone) = claims(phone_token);
    assert_eq!(who, "phone");
    assert_eq!(
        (phone.can_publish, phone.can_subscribe),
        (Some(true), Some(true))
    );
    assert!(call.phone_qr.contains("<svg"));
}

#[test]
fn no_matrixrtc_room_is_named_like_a_test_room() {
    // The authorization service names rooms with unpadded standard base64, which has no '-'.
    for (room, slot) in [("!a:example.org", "m.call#ROOM"), ("!zz:x", ""), ("", "")] {
        let alias = crate::auth::derive::room_alias(room, slot);
        assert!(
            !alias.contains('-') && !alias.starts_with(ROOM_PREFIX),
            "{alias}"
        );
    }
    assert!(ROOM_PREFIX.contains('-'));
}
