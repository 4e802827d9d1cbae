//! The RoomService router through `oneshot` against an in-memory SFU: every method in both
//! formats, authentication and grants, Twirp errors, limits, and seeded mutation fuzzing.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Request;
use prost::Message as _;
use tower::ServiceExt as _;

use super::*;

// ---- the fake SFU ----------------------------------------------------------------------------

/// Rooms in memory. Room "full" answers `resource_exhausted`, room "down" `unavailable` with an
/// internal-looking cause that must not reach the caller.
#[derive(Default)]
struct FakeSfu {
    rooms: Mutex<BTreeMap<String, FakeRoom>>,
    next_sid: Mutex<u64>,
}

struct FakeRoom {
    room: proto::Room,
    participants: BTreeMap<String, proto::ParticipantInfo>,
}

const INTERNAL_CAUSE: &str = "worker 3 channel closed at src/sfu/driver.rs:42";

impl FakeSfu {
    fn sid(&self, prefix: &str) -> String {
        let mut next = self.next_sid.lock().unwrap();
        *next += 1;
        format!("{prefix}_{next}")
    }

    /// Puts `identity` into `room` (created if needed) with one audio track `track_sid`.
    fn seed(&self, room: &str, identity: &str, track_sid: &str) {
        let room_sid = self.sid("RM");
        let participant_sid = self.sid("PA");
        let mut rooms = self.rooms.lock().unwrap();
        let entry = rooms.entry(room.to_owned()).or_insert_with(|| FakeRoom {
            room: proto::Room {
                sid: room_sid,
                name: room.to_owned(),
                creation_time: 1_700_000_000,
                ..Default::default()
            },
            participants: BTreeMap::new(),
        });
        entry.participants.insert(
            identity.to_owned(),
            proto::ParticipantInfo {
                sid: participant_sid,
                identity: identity.to_owned(),
                tracks: vec![proto::TrackInfo {
                    sid: track_sid.to_owned(),
                    name: "microphone".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
    }

    fn check_room(room: &str) -> Result<(), RoomApiError> {
        match room {
            "full" => Err(RoomApiError::ResourceExhausted("too many rooms".into())),
            "down" => Err(RoomApiError::Unavailable(INTERNAL_CAUSE.into())),
            _ => Ok(()),
        }
    }

    fn with_room<T>(
        &self,
        room: &str,
        f: impl FnOnce(&mut FakeRoom) -> Result<T, RoomApiError>,
    ) -> Result<T, RoomApiError> {
        Self::check_room(room)?;
        let mut rooms = self.rooms.lock().unwrap();
        let room = rooms
            .get_mut(room)
            .ok_or_else(|| RoomApiError::NotFound("room not found".into()))?;
        f(room)
    }
}

fn participant<'a>(
    room: &'a mut FakeRoom,
    identity: &str,
) -> Result<&'a mut proto::ParticipantInfo, RoomApiError> {
    room.participants
        .get_mut(identity)
        .ok_or_else(|| RoomApiError::NotFound("participant not found".into()))
}

impl RoomApi for FakeSfu {
    fn create_room(&self, req: proto::CreateRoomRequest) -> ApiFuture<'_, proto::Room> {
        let result = Self::check_room(&req.name).map(|()| {
            let sid = self.sid("RM");
            let mut rooms = self.rooms.lock().unwrap();
            let entry = rooms.entry(req.name.clone()).or_insert_with(|| FakeRoom {
                room: proto::Room {
                    sid,
                    name: req.name.clone(),
                    empty_timeout: req.empty_timeout,
                    departure_timeout: req.departure_timeout,
                    max_participants: req.max_participants,
                    metadata: req.metadata.clone(),
                    creation_time: 1_700_000_000,
                    ..Default::default()
                },
                participants: BTreeMap::new(),
            });
            entry.room.clone()
        });
        Box::pin(async move { result })
    }

    fn list_rooms(&self, req: proto::ListRoomsRequest) -> ApiFuture<'_, proto::ListRoomsResponse> {
        let rooms = self.rooms.lock().unwrap();
        let rooms = rooms
            .values()
            .filter(|r| req.names.is_empty() || req.names.contains(&r.room.name))
            .map(|r| r.room.clone())
            .collect();
        Box::pin(async move { Ok(proto::ListRoomsResponse { rooms }) })
    }

    fn delete_room(
        &self,
        req: proto::DeleteRoomRequest,
    ) -> ApiFuture<'_, proto::DeleteRoomResponse> {
        let result = Self::check_room(&req.room).and_then(|()| {
            match self.rooms.lock().unwrap().remove(&req.room) {
                Some(_) => Ok(proto::DeleteRoomResponse {}),
                None => Err(RoomApiError::NotFound("room not found".into())),
            }
        });
        Box::pin(async move { result })
    }

    fn list_participants(
        &self,
        req: proto::ListParticipantsRequest,
    ) -> ApiFuture<'_, proto::ListParticipantsResponse> {
        let result = self.with_room(&req.room, |room| {
            Ok(proto::ListParticipantsResponse {
                participants: room.participants.values().cloned().collect(),
            })
        });
        Box::pin(async move { result })
    }

    fn get_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::ParticipantInfo> {
        let result = self.with_room(&req.room, |room| {
            participant(room, &req.identity).map(|p| p.clone())
        });
        Box::pin(async move { result })
    }

    fn remove_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::RemoveParticipantResponse> {
        let result = self.with_room(&req.room, |room| {
            room.participants
                .remove(&req.identity)
                .map(|_| proto::RemoveParticipantResponse {})
                .ok_or_else(|| RoomApiError::NotFound("participant not found".into()))
        });
        Box::pin(async move { result })
    }

    fn mute_published_track(
        &self,
        req: proto::MuteRoomTrackRequest,
    ) -> ApiFuture<'_, proto::MuteRoomTrackResponse> {
        let result = self.with_room(&req.room, |room| {
            let track = participant(room, &req.identity)?
                .tracks
                .iter_mut()
                .find(|t| t.sid == req.track_sid)
                .ok_or_else(|| RoomApiError::NotFound("track not found".into()))?;
            track.muted = req.muted;
            Ok(proto::MuteRoomTrackResponse {
                track: Some(track.clone()),
            })
        });
        Box::pin(async move { result })
    }
}

// ---- helpers ---------------------------------------------------------------------------------

fn key() -> ApiKey {
    ApiKey::parse("APItwirp").unwrap()
}

fn secret() -> Secret {
    Secret::new("t".repeat(40))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn app(sfu: &Arc<FakeSfu>) -> Router {
    router(sfu.clone(), key(), secret())
}

fn token_with(video: VideoGrant) -> String {
    token::mint(
        &key(),
        &secret(),
        "server-sdk",
        video,
        Duration::from_secs(600),
        now(),
    )
    .unwrap()
}

fn create() -> String {
    token_with(VideoGrant {
        room_create: true,
        ..Default::default()
    })
}

fn list() -> String {
    token_with(VideoGrant {
        room_list: true,
        ..Default::default()
    })
}

fn admin(room: &str) -> String {
    token_with(VideoGrant {
        room_admin: true,
        room: room.into(),
        ..Default::default()
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
    /// What the Node SDK sends.
    JsonCharset,
}

const FORMATS: [Format; 3] = [Format::Protobuf, Format::Json, Format::JsonCharset];

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/protobuf",
            Format::Json => "application/json",
            Format::JsonCharset => "application/json;charset=UTF-8",
        }
    }

    /// The Content-Type of a success answer.
    fn answer_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/protobuf",
            Format::Json | Format::JsonCharset => "application/json",
        }
    }

    fn encode<T: prost::Message + Serialize>(self, message: &T) -> Vec<u8> {
        match self {
            Format::Protobuf => message.encode_to_vec(),
            Format::Json | Format::JsonCharset => serde_json::to_vec(message).unwrap(),
        }
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    format: Format,
}

impl Answer {
    /// The decoded success body; panics with the Twirp error otherwise.
    fn ok<T: prost::Message + Default + DeserializeOwned>(&self) -> T {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.content_type, self.format.answer_type());
        match self.format {
            Format::Protobuf => T::decode(self.body.as_slice()).unwrap(),
            Format::Json | Format::JsonCharset => serde_json::from_slice(&self.body).unwrap(),
        }
    }

    /// The Twirp code of an error answer, after checking its shape, status and content type.
    fn code(&self) -> String {
        assert_eq!(self.content_type, "application/json", "exactly, no charset");
        let (code, _) = twirp_error(self.status, &self.body).unwrap_or_else(|| {
            panic!(
                "not a Twirp error: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        });
        code
    }

    fn msg(&self) -> String {
        twirp_error(self.status, &self.body).unwrap().1
    }
}

/// `Some((code, msg))` if `body` is a Twirp error whose code matches `status`.
fn twirp_error(status: u16, body: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    if object.len() != 2 {
        return None;
    }
    let code = object.get("code")?.as_str()?;
    let msg = object.get("msg")?.as_str()?;
    let expected = match code {
        "bad_route" | "not_found" => 404,
        "malformed" | "invalid_argument" => 400,
        "unauthenticated" => 401,
        "permission_denied" => 403,
        "resource_exhausted" => 429,
        "internal" => 500,
        "unimplemented" => 501,
        "unavailable" => 503,
        _ => return None,
    };
    (expected == status && !msg.is_empty()).then(|| (code.to_owned(), msg.to_owned()))
}

async fn send(app: &Router, request: Request<Body>, format: Format) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body: body.to_vec(),
        format,
    }
}

fn request(method: &str, content_type: &str, token: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri(format!("/twirp/livekit.RoomService/{method}"))
        .header(header::CONTENT_TYPE, content_type);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body)).unwrap()
}

/// POSTs `message` to `method` in `format` with `token`.
async fn call<T: prost::Message + Serialize>(
    app: &Router,
    method: &str,
    format: Format,
    token: &str,
    message: &T,
) -> Answer {
    let request = request(
        method,
        format.content_type(),
        Some(token),
        format.encode(message),
    );
    send(app, request, format).await
}

/// POSTs raw bytes.
async fn call_raw(
    app: &Router,
    method: &str,
    content_type: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    send(
        app,
        request(method, content_type, token, body),
        Format::Json,
    )
    .await
}

fn identity(room: &str, identity: &str) -> proto::RoomParticipantIdentity {
    proto::RoomParticipantIdentity {
        room: room.into(),
        identity: identity.into(),
        ..Default::default()
    }
}

// ---- every method, every format --------------------------------------------------------------

#[tokio::test]
async fn every_method_in_every_format() {
    for format in FORMATS {
        let sfu = Arc::new(FakeSfu::default());
        let app = app(&sfu);
        let create_req = proto::CreateRoomRequest {
            name: "r1".into(),
            empty_timeout: 300,
            departure_timeout: 20,
            ..Default::default()
        };

        let room: proto::Room = call(&app, "CreateRoom", format, &create(), &create_req)
            .await
            .ok();
        assert_eq!(room.name, "r1", "{format:?}");
        assert_eq!((room.empty_timeout, room.departure_timeout), (300, 20));
        assert_eq!(room.creation_time, 1_700_000_000);
        // The fake is idempotent; the layer hands back what it returns.
        let again: proto::Room = call(&app, "CreateRoom", format, &create(), &create_req)
            .await
            .ok();
        assert_eq!(again, room);

        let listed: proto::ListRoomsResponse = call(
            &app,
            "ListRooms",
            format,
            &list(),
            &proto::ListRoomsRequest::default(),
        )
        .await
        .ok();
        assert_eq!(listed.rooms, vec![room.clone()]);
        let filtered: proto::ListRoomsResponse = call(
            &app,
            "ListRooms",
            format,
            &list(),
            &proto::ListRoomsRequest {
                names: vec!["other".into()],
            },
        )
        .await
        .ok();
        assert!(filtered.rooms.is_empty());

        sfu.seed("r1", "@alice:example.org:DEV", "TR_mic");
        let participants: proto::ListParticipantsResponse = call(
            &app,
            "ListParticipants",
            format,
            &admin("r1"),
            &proto::ListParticipantsRequest { room: "r1".into() },
        )
        .await
        .ok();
        assert_eq!(participants.participants.len(), 1);
        assert_eq!(
            participants.participants[0].identity,
            "@alice:example.org:DEV"
        );

        let alice = identity("r1", "@alice:example.org:DEV");
        let info: proto::ParticipantInfo =
            call(&app, "GetParticipant", format, &admin("r1"), &alice)
                .await
                .ok();
        assert_eq!(info, participants.participants[0]);

        let muted: proto::MuteRoomTrackResponse = call(
            &app,
            "MutePublishedTrack",
            format,
            &admin("r1"),
            &proto::MuteRoomTrackRequest {
                room: "r1".into(),
                identity: alice.identity.clone(),
                track_sid: "TR_mic".into(),
                muted: true,
            },
        )
        .await
        .ok();
        let track = muted.track.unwrap();
        assert_eq!((track.sid.as_str(), track.muted), ("TR_mic", true));

        let _: proto::RemoveParticipantResponse =
            call(&app, "RemoveParticipant", format, &admin("r1"), &alice)
                .await
                .ok();
        let gone = call(&app, "GetParticipant", format, &admin("r1"), &alice).await;
        assert_eq!((gone.status, gone.code()), (404, "not_found".into()));

        let _: proto::DeleteRoomResponse = call(
            &app,
            "DeleteRoom",
            format,
            &create(),
            &proto::DeleteRoomRequest { room: "r1".into() },
        )
        .await
        .ok();
        assert!(sfu.rooms.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn json_accepts_both_name_forms_and_ignores_unknown_fields() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    let body = br#"{"name":"r","empty_timeout":300,"departureTimeout":20,"maxParticipants":0,"futureField":{"x":1}}"#;
    let answer = call_raw(
        &app,
        "CreateRoom",
        "application/json;charset=UTF-8",
        Some(&create()),
        body.to_vec(),
    )
    .await;
    let room: proto::Room = answer.ok();
    assert_eq!((room.empty_timeout, room.departure_timeout), (300, 20));
    // pbjson's mapping: camelCase names, 64-bit integers as strings.
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["emptyTimeout"], 300);
    assert_eq!(json["creationTime"], "1700000000");

    sfu.seed("r", "bob", "TR_1");
    let answer = call_raw(
        &app,
        "GetParticipant",
        "APPLICATION/JSON ; charset=utf-8",
        Some(&admin("r")),
        br#"{"room":"r","identity":"bob","revoke_token_ts":"0"}"#.to_vec(),
    )
    .await;
    assert_eq!(answer.ok::<proto::ParticipantInfo>().identity, "bob");
}

// ---- authentication and grants ---------------------------------------------------------------

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    let body = Format::Json.encode(&proto::ListRoomsRequest::default());
    let expired = token::mint(
        &key(),
        &secret(),
        "sdk",
        VideoGrant {
            room_list: true,
            ..Default::default()
        },
        Duration::from_secs(10),
        now() - 1000,
    )
    .unwrap();
    let foreign_secret = token::mint(
        &key(),
        &Secret::new("u".repeat(40)),
        "sdk",
        VideoGrant {
            room_list: true,
            ..Default::default()
        },
        Duration::from_secs(600),
        now(),
    )
    .unwrap();
    let foreign_key = token::mint(
        &ApiKey::parse("APIother").unwrap(),
        &secret(),
        "sdk",
        VideoGrant {
            room_list: true,
            ..Default::default()
        },
        Duration::from_secs(600),
        now(),
    )
    .unwrap();
    let good = list();
    let authorizations: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Basic {good}")),
        Some(good.clone()),
        Some("Bearer not.a.jwt".into()),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {foreign_secret}")),
        Some(format!("Bearer {foreign_key}")),
    ];
    for authorization in authorizations {
        let mut builder = Request::builder()
            .method("POST")
            .uri("/twirp/livekit.RoomService/ListRooms")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = &authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let request = builder.body(Body::from(body.clone())).unwrap();
        let answer = send(&app, request, Format::Json).await;
        assert_eq!(
            (answer.status, answer.code()),
            (401, "unauthenticated".into()),
            "{authorization:?}"
        );
    }
    // The scheme is case-insensitive.
    let request = Request::builder()
        .method("POST")
        .uri("/twirp/livekit.RoomService/ListRooms")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("bearer {good}"))
        .body(Body::from(body))
        .unwrap();
    let _: proto::ListRoomsResponse = send(&app, request, Format::Json).await.ok();
}

#[tokio::test]
async fn missing_grants_are_permission_denied() {
    let sfu = Arc::new(FakeSfu::default());
    sfu.seed("r1", "alice", "TR_1");
    let app = app(&sfu);
    let no_video = token::sign(
        &Claims {
            iss: key().as_str().to_owned(),
            sub: "sdk".into(),
            iat: None,
            nbf: None,
            exp: now() + 600,
            name: None,
            metadata: None,
            video: None,
        },
        &secret(),
    )
    .unwrap();
    let join_r1 = token_with(VideoGrant {
        room_join: true,
        room: "r1".into(),
        ..Default::default()
    });
    let admin_no_room = token_with(VideoGrant {
        room_admin: true,
        ..Default::default()
    });
    let all_but_create = token_with(VideoGrant {
        room_list: true,
        room_admin: true,
        room: "r1".into(),
        ..Default::default()
    });
    let all_but_list = token_with(VideoGrant {
        room_create: true,
        room_admin: true,
        room: "r1".into(),
        ..Default::default()
    });

    let create_req = Format::Protobuf.encode(&proto::CreateRoomRequest {
        name: "r1".into(),
        ..Default::default()
    });
    let delete_req = Format::Protobuf.encode(&proto::DeleteRoomRequest { room: "r1".into() });
    let list_req = Format::Protobuf.encode(&proto::ListRoomsRequest::default());
    let participants_req =
        Format::Protobuf.encode(&proto::ListParticipantsRequest { room: "r1".into() });
    let alice = Format::Protobuf.encode(&identity("r1", "alice"));
    let mute_req = Format::Protobuf.encode(&proto::MuteRoomTrackRequest {
        room: "r1".into(),
        identity: "alice".into(),
        track_sid: "TR_1".into(),
        muted: true,
    });
    let cases: Vec<(&str, &Vec<u8>, String)> = vec![
        ("CreateRoom", &create_req, all_but_create.clone()),
        ("CreateRoom", &create_req, no_video.clone()),
        ("DeleteRoom", &delete_req, all_but_create.clone()),
        ("ListRooms", &list_req, all_but_list.clone()),
        ("ListRooms", &list_req, no_video.clone()),
        ("ListParticipants", &participants_req, join_r1.clone()),
        ("ListParticipants", &participants_req, admin("r2")),
        ("ListParticipants", &participants_req, admin_no_room.clone()),
        ("ListParticipants", &participants_req, create()),
        ("GetParticipant", &alice, admin("r2")),
        ("GetParticipant", &alice, admin("R1")),
        ("GetParticipant", &alice, join_r1.clone()),
        ("GetParticipant", &alice, no_video.clone()),
        ("RemoveParticipant", &alice, admin("r2")),
        ("RemoveParticipant", &alice, list()),
        ("MutePublishedTrack", &mute_req, admin("r2")),
        ("MutePublishedTrack", &mute_req, join_r1.clone()),
    ];
    for (method, body, token) in cases {
        let answer = call_raw(
            &app,
            method,
            "application/protobuf",
            Some(&token),
            body.clone(),
        )
        .await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, "permission_denied".into()),
            "{method}"
        );
    }
    // Nothing changed.
    let rooms = sfu.rooms.lock().unwrap();
    assert!(!rooms["r1"].participants["alice"].tracks[0].muted);
}

// ---- SFU errors ------------------------------------------------------------------------------

#[tokio::test]
async fn sfu_errors_become_twirp_errors() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    for format in FORMATS {
        // Errors are JSON whatever the request format.
        let absent = call(
            &app,
            "GetParticipant",
            format,
            &admin("nowhere"),
            &identity("nowhere", "x"),
        )
        .await;
        assert_eq!((absent.status, absent.code()), (404, "not_found".into()));
        assert_eq!(absent.msg(), "room not found");

        let full = call(
            &app,
            "CreateRoom",
            format,
            &create(),
            &proto::CreateRoomRequest {
                name: "full".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            (full.status, full.code()),
            (429, "resource_exhausted".into())
        );
        assert_eq!(full.msg(), "too many rooms");

        let down = call(
            &app,
            "ListParticipants",
            format,
            &admin("down"),
            &proto::ListParticipantsRequest {
                room: "down".into(),
            },
        )
        .await;
        assert_eq!((down.status, down.code()), (503, "unavailable".into()));
        let body = String::from_utf8(down.body.clone()).unwrap();
        assert!(!body.contains("worker") && !body.contains(".rs"), "{body}");
    }
}

// ---- validation, bodies, routes --------------------------------------------------------------

#[tokio::test]
async fn names_are_validated() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    let longest = "n".repeat(MAX_NAME_BYTES);
    let too_long = "n".repeat(MAX_NAME_BYTES + 1);
    // 255 bytes of 'é' halves plus one: multi-byte names count bytes, not characters.
    let too_long_utf8 = "é".repeat(MAX_NAME_BYTES / 2) + "n";
    for (name, status) in [
        ("", 400),
        (too_long.as_str(), 400),
        (too_long_utf8.as_str(), 400),
        (longest.as_str(), 200),
    ] {
        let answer = call(
            &app,
            "CreateRoom",
            Format::Protobuf,
            &create(),
            &proto::CreateRoomRequest {
                name: name.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(answer.status, status, "{} bytes", name.len());
        if status == 400 {
            assert_eq!(answer.code(), "invalid_argument");
        }
    }
    let long_filter = call(
        &app,
        "ListRooms",
        Format::Json,
        &list(),
        &proto::ListRoomsRequest {
            names: vec![too_long.clone()],
        },
    )
    .await;
    assert_eq!(long_filter.code(), "invalid_argument");
    let empty_identity = call(
        &app,
        "GetParticipant",
        Format::Json,
        &admin("r"),
        &identity("r", ""),
    )
    .await;
    assert_eq!(empty_identity.code(), "invalid_argument");
    let long_identity = call(
        &app,
        "RemoveParticipant",
        Format::Json,
        &admin("r"),
        &identity("r", &too_long),
    )
    .await;
    assert_eq!(long_identity.code(), "invalid_argument");
    let no_track = call(
        &app,
        "MutePublishedTrack",
        Format::Json,
        &admin("r"),
        &proto::MuteRoomTrackRequest {
            room: "r".into(),
            identity: "a".into(),
            track_sid: String::new(),
            muted: true,
        },
    )
    .await;
    assert_eq!(no_track.code(), "invalid_argument");
}

#[tokio::test]
async fn garbage_bodies_are_malformed() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    let protobuf: [&[u8]; 4] = [
        b"\xff\xff\xff",
        b"\x0a\x05ab",       // length past the end
        b"\x0a\x02\xff\xfe", // a string field that is not UTF-8
        b"\x08",             // truncated varint
    ];
    for body in protobuf {
        let answer = call_raw(
            &app,
            "CreateRoom",
            "application/protobuf",
            Some(&create()),
            body.to_vec(),
        )
        .await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "malformed".into()),
            "{body:?}"
        );
    }
    let json: [&[u8]; 9] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"\"name\"",
        br#"{"name":5}"#,
        br#"{"emptyTimeout":-1}"#,
        br#"{"name":"a"} trailing"#,
        b"\xff{}",
    ];
    for body in json {
        let answer = call_raw(
            &app,
            "CreateRoom",
            "application/json",
            Some(&create()),
            body.to_vec(),
        )
        .await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "malformed".into()),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn bodies_are_capped() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    // A valid CreateRoom of exactly MAX_BODY_BYTES passes; one byte more is refused.
    let sized = |len: usize| {
        let mut req = proto::CreateRoomRequest {
            name: "big".into(),
            ..Default::default()
        };
        let overhead = req.encoded_len() + 1 + 3; // metadata tag + 3-byte length
        req.metadata = "m".repeat(len - overhead);
        let bytes = req.encode_to_vec();
        assert_eq!(bytes.len(), len);
        bytes
    };
    let fits = call_raw(
        &app,
        "CreateRoom",
        "application/protobuf",
        Some(&create()),
        sized(MAX_BODY_BYTES),
    )
    .await;
    assert_eq!(fits.status, 200);
    let over = call_raw(
        &app,
        "CreateRoom",
        "application/protobuf",
        Some(&create()),
        sized(MAX_BODY_BYTES + 1),
    )
    .await;
    assert_eq!((over.status, over.code()), (400, "malformed".into()));
    // A streamed body of unknown length is cut off the same way.
    let streamed = Request::builder()
        .method("POST")
        .uri("/twirp/livekit.RoomService/ListRooms")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", list()))
        .body(Body::new(Spaces(100)))
        .unwrap();
    let answer = send(&app, streamed, Format::Json).await;
    assert_eq!((answer.status, answer.code()), (400, "malformed".into()));
}

/// A body of this many 1 KiB chunks of spaces, with no size hint.
struct Spaces(usize);

impl hyper::body::Body for Spaces {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        let chunk = axum::body::Bytes::from(vec![b' '; 1024]);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }
}

#[tokio::test]
async fn routes_methods_and_content_types() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    let body = || Format::Json.encode(&proto::ListRoomsRequest::default());

    for method in ["CreateRoomX", "createRoom", "Nope", ""] {
        let answer = call_raw(&app, method, "application/json", Some(&list()), body()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, "bad_route".into()),
            "{method:?}"
        );
    }
    for method in UNSERVED {
        let answer = call_raw(&app, method, "application/json", Some(&list()), body()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (501, "unimplemented".into()),
            "{method}"
        );
    }
    for path in [
        "/twirp/livekit.Egress/StartRoomCompositeEgress",
        "/twirp/livekit.RoomService/ListRooms/extra",
        "/twirp/livekit.RoomService/%FF",
        "/twirp/x",
    ] {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", list()))
            .body(Body::from(body()))
            .unwrap();
        let answer = send(&app, request, Format::Json).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, "bad_route".into()),
            "{path}"
        );
    }
    for method in ["GET", "PUT", "DELETE", "OPTIONS", "HEAD"] {
        let request = Request::builder()
            .method(method)
            .uri("/twirp/livekit.RoomService/ListRooms")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", list()))
            .body(Body::from(body()))
            .unwrap();
        let answer = send(&app, request, Format::Json).await;
        assert_eq!(answer.status, 404, "{method}");
        assert_eq!(answer.content_type, "application/json");
        if method != "HEAD" {
            assert_eq!(answer.code(), "bad_route");
        }
    }
    for content_type in [
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/protobufx",
        "application/jsonp",
        "application/grpc",
        "multipart/form-data; boundary=x",
    ] {
        let answer = call_raw(&app, "ListRooms", content_type, Some(&list()), body()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, "bad_route".into()),
            "{content_type:?}"
        );
    }
    // No Content-Type header at all.
    let request = Request::builder()
        .method("POST")
        .uri("/twirp/livekit.RoomService/ListRooms")
        .header(header::AUTHORIZATION, format!("Bearer {}", list()))
        .body(Body::from(body()))
        .unwrap();
    assert_eq!(send(&app, request, Format::Json).await.code(), "bad_route");
}

// ---- logs ------------------------------------------------------------------------------------

/// Captured log output of the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_are_never_logged_and_refusals_are_not_errors() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    let good = admin("r");
    let wrong = token::mint(
        &key(),
        &Secret::new("w".repeat(40)),
        "x",
        VideoGrant::default(),
        Duration::from_secs(600),
        now(),
    )
    .unwrap();
    let body = Format::Json.encode(&identity("r", "nobody"));
    for token in [&good, &wrong, &format!("{good}x")] {
        let answer = call_raw(
            &app,
            "GetParticipant",
            "application/json",
            Some(token),
            body.clone(),
        )
        .await;
        assert!(answer.status >= 400);
    }
    let down = call(
        &app,
        "CreateRoom",
        Format::Json,
        &create(),
        &proto::CreateRoomRequest {
            name: "down".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(down.status, 503);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("RoomService"), "logs were captured: {text}");
    for token in [&good, &wrong] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "a token reached the log:\n{text}"
        );
    }
    assert!(!text.contains("ERROR"), "{text}");
    // The 503's cause is logged once, for the operator.
    assert_eq!(text.matches(INTERNAL_CAUSE).count(), 1, "{text}");
}

// ---- fuzzing ---------------------------------------------------------------------------------

const FUZZ_ROUNDS: usize = 5_000;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to JSON and protobuf framing.
const DICTIONARY: &[u8] = b"{}[]\":,.0123456789-_ \n\tnulltruefalse\x00\x08\x0a\x12\x1a\x80\xff";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let byte = if rng.below(2) == 0 {
                    DICTIONARY[rng.below(DICTIONARY.len())]
                } else {
                    rng.next() as u8
                };
                data.insert(rng.below(len + 1), byte);
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(8) + 1).min(len);
                data.drain(start..end);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(16) + 1).min(len);
                let chunk = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, chunk);
            }
            4 => data.truncate(rng.below(len + 1)),
            _ => {
                let i = rng.below(len + 1);
                data.insert(i, DICTIONARY[rng.below(DICTIONARY.len())]);
            }
        }
    }
    data
}

/// Valid request bodies of every served method, in one format.
fn seeds(format: Format) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "CreateRoom",
            format.encode(&proto::CreateRoomRequest {
                name: "r1".into(),
                empty_timeout: 300,
                departure_timeout: 20,
                metadata: "{\"k\":\"v\"}".into(),
                tags: [("a".to_owned(), "b".to_owned())].into(),
                ..Default::default()
            }),
        ),
        (
            "ListRooms",
            format.encode(&proto::ListRoomsRequest {
                names: vec!["r1".into(), "r2".into()],
            }),
        ),
        (
            "DeleteRoom",
            format.encode(&proto::DeleteRoomRequest { room: "r2".into() }),
        ),
        (
            "ListParticipants",
            format.encode(&proto::ListParticipantsRequest { room: "r1".into() }),
        ),
        ("GetParticipant", format.encode(&identity("r1", "alice"))),
        ("RemoveParticipant", format.encode(&identity("r1", "bob"))),
        (
            "MutePublishedTrack",
            format.encode(&proto::MuteRoomTrackRequest {
                room: "r1".into(),
                identity: "alice".into(),
                track_sid: "TR_1".into(),
                muted: true,
            }),
        ),
    ]
}

/// Decodes a success body as its method's answer type.
fn decodes(method: &str, format: Format, body: &[u8]) -> bool {
    fn check<T: prost::Message + Default + DeserializeOwned>(format: Format, body: &[u8]) -> bool {
        match format {
            Format::Protobuf => T::decode(body).is_ok(),
            Format::Json | Format::JsonCharset => serde_json::from_slice::<T>(body).is_ok(),
        }
    }
    match method {
        "CreateRoom" => check::<proto::Room>(format, body),
        "ListRooms" => check::<proto::ListRoomsResponse>(format, body),
        "DeleteRoom" => check::<proto::DeleteRoomResponse>(format, body),
        "ListParticipants" => check::<proto::ListParticipantsResponse>(format, body),
        "GetParticipant" => check::<proto::ParticipantInfo>(format, body),
        "RemoveParticipant" => check::<proto::RemoveParticipantResponse>(format, body),
        "MutePublishedTrack" => check::<proto::MuteRoomTrackResponse>(format, body),
        _ => false,
    }
}

#[tokio::test]
async fn mutated_requests_always_get_a_well_formed_twirp_answer() {
    let sfu = Arc::new(FakeSfu::default());
    let app = app(&sfu);
    // Every grant, for room r1: most mutations that still decode reach the fake.
    let token = token_with(VideoGrant {
        room_create: true,
        room_list: true,
        room_admin: true,
        room: "r1".into(),
        ..Default::default()
    });
    let mut rng = Rng(0x5EED_7A1B_0000_0001);
    let mut successes = 0;
    for round in 0..FUZZ_ROUNDS {
        if round % 500 == 0 {
            sfu.seed("r1", "alice", "TR_1");
            sfu.seed("r1", "bob", "TR_2");
        }
        let format = FORMATS[rng.below(FORMATS.len())];
        let seeds = seeds(format);
        let (method, seed) = &seeds[rng.below(seeds.len())];
        let body = if rng.below(8) == 0 {
            seed.clone()
        } else {
            mutate(&mut rng, seed)
        };
        let content_type = if rng.below(16) == 0 {
            String::from_utf8_lossy(&mutate(&mut rng, format.content_type().as_bytes()))
                .into_owned()
        } else {
            format.content_type().to_owned()
        };
        let Ok(content_type) = HeaderValue::from_str(&content_type) else {
            continue;
        };
        let request = Request::builder()
            .method("POST")
            .uri(format!("/twirp/livekit.RoomService/{method}"))
            .header(header::CONTENT_TYPE, content_type)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(body.clone()))
            .unwrap();
        let answer = send(&app, request, format).await;
        let context = || format!("round {round}: {method} {format:?} {body:?}");
        if answer.status == 200 {
            successes += 1;
            assert_eq!(answer.content_type, format.answer_type(), "{}", context());
            assert!(decodes(method, format, &answer.body), "{}", context());
        } else {
            assert_eq!(answer.content_type, "application/json", "{}", context());
            assert!(
                twirp_error(answer.status, &answer.body).is_some(),
                "{}: {} {:?}",
                context(),
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    // The loop exercised the success path too, not only refusals.
    assert!(successes > FUZZ_ROUNDS / 10, "{successes} successes");
}
