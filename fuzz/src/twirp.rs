//! See `fuzz_targets/twirp.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use livekit_protocol as proto;
use rtcbox::config::ApiKey;
use rtcbox::livekit::token::{self, VideoGrant};
use rtcbox::livekit::twirp::{ApiFuture, MAX_NAME_BYTES, RoomApi, router};
use rtcbox::secret::Secret;
use tower::ServiceExt as _;

const METHODS: &[&str] = &[
    "CreateRoom",
    "ListRooms",
    "DeleteRoom",
    "ListParticipants",
    "GetParticipant",
    "RemoveParticipant",
    "MutePublishedTrack",
    "UpdateParticipant",
    "NoSuchMethod",
];
/// The one room the caller's token administers.
const ROOM: &str = "r";

/// Records what the Twirp layer let through; answers with empty messages.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(&'static str, String, String)>>,
}

impl Recorder {
    fn record<T: Default + Send + 'static>(
        &self,
        what: &'static str,
        room: &str,
        identity: &str,
    ) -> ApiFuture<'_, T> {
        self.calls
            .lock()
            .unwrap()
            .push((what, room.to_owned(), identity.to_owned()));
        Box::pin(async { Ok(T::default()) })
    }
}

impl RoomApi for Recorder {
    fn create_room(&self, req: proto::CreateRoomRequest) -> ApiFuture<'_, proto::Room> {
        self.record("create", &req.name, "")
    }
    fn list_rooms(&self, _: proto::ListRoomsRequest) -> ApiFuture<'_, proto::ListRoomsResponse> {
        self.record("list", "", "")
    }
    fn delete_room(
        &self,
        req: proto::DeleteRoomRequest,
    ) -> ApiFuture<'_, proto::DeleteRoomResponse> {
        self.record("delete", &req.room, "")
    }
    fn list_participants(
        &self,
        req: proto::ListParticipantsRequest,
    ) -> ApiFuture<'_, proto::ListParticipantsResponse> {
        self.record("participants", &req.room, "")
    }
    fn get_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::ParticipantInfo> {
        self.record("participant", &req.room, &req.identity)
    }
    fn remove_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::RemoveParticipantResponse> {
        self.record("remove", &req.room, &req.identity)
    }
    fn mute_published_track(
        &self,
        req: proto::MuteRoomTrackRequest,
    ) -> ApiFuture<'_, proto::MuteRoomTrackResponse> {
        self.record("mute", &req.room, &req.identity)
    }
}

/// `data[0]`: the method, the codec and whether the token is sent; the rest is the body.
/// Refusals are Twirp errors (a 4xx, or 501 for a method not served, with a JSON `code` and
/// `msg`), never another 5xx; the SFU is
/// called only with names that are valid and, for room-admin calls, with the token's room;
/// a token without `roomList` never lists.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(selector & 0x0F) % METHODS.len()];
    let json = selector & 0x10 != 0;
    let authorized = selector & 0x20 == 0;
    let key = ApiKey::parse("APIfuzz").unwrap();
    let secret = Secret::new("fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let grant = VideoGrant {
        room_create: true,
        room_admin: true,
        room: ROOM.into(),
        ..Default::default()
    };
    let jwt = token::mint(&key, &secret, "admin", grant, Duration::from_secs(600), now).unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = router(recorder.clone(), key, secret);
    let mut request = Request::post(format!("/twirp/livekit.RoomService/{method}")).header(
        "content-type",
        if json {
            "application/json"
        } else {
            "application/protobuf"
        },
    );
    if authorized {
        request = request.header("authorization", format!("Bearer {jwt}"));
    }
    let request = request.body(Body::from(body.to_vec())).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (status, answer) = runtime.block_on(async {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    // Twirp's `unimplemented` is a 501, for the RoomService methods rtcbox does not serve.
    let unserved = method == "UpdateParticipant";
    if status == StatusCode::NOT_IMPLEMENTED {
        assert!(unserved, "501 for {method}");
    } else if status != StatusCode::OK {
        assert!(status.is_client_error(), "{status} for {method}");
    }
    if status != StatusCode::OK {
        let error: serde_json::Value =
            serde_json::from_slice(&answer).expect("a Twirp error is JSON");
        assert!(
            error["code"].is_string() && error["msg"].is_string(),
            "{error}"
        );
    }
    let calls = recorder.calls.lock().unwrap();
    assert_eq!(
        calls.is_empty(),
        status != StatusCode::OK,
        "{status} {calls:?}"
    );
    for (what, room, identity) in calls.iter() {
        assert!(authorized, "{what} without a token");
        assert_ne!(*what, "list", "listed without roomList");
        // Creating and deleting rooms need roomCreate (LiveKit's rule), which covers any room;
        // everything else needs roomAdmin of that very room.
        if !matches!(*what, "create" | "delete") {
            assert_eq!(room, ROOM, "{what} on another room");
        }
        assert!(!room.is_empty() && room.len() <= MAX_NAME_BYTES);
        assert!(identity.len() <= MAX_NAME_BYTES);
        if matches!(*what, "participant" | "remove" | "mute") {
            assert!(!identity.is_empty());
        }
    }
}
