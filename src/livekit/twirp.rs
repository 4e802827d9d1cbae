//! LiveKit's Twirp `RoomService`: `POST /twirp/livekit.RoomService/{Method}`, as the server SDKs
//! and lk-jwt-service call it.
//!
//! The layer is thin: route, check the content type, authenticate the bearer token, read at most
//! [`MAX_BODY_BYTES`], decode, authorize against the decoded room, validate names, call the
//! [`RoomApi`] (the SFU, or a fake in tests) and encode the answer in the request's format.
//!
//! Wire rules (Twirp v8 as `livekit/protocol` generates it):
//! - Bodies are `application/protobuf` or `application/json`; parameters such as the Node SDK's
//!   `;charset=UTF-8` are ignored. A success answers in the request's format. JSON is
//!   livekit-protocol's pbjson mapping: camelCase out, camelCase or snake_case in, unknown fields
//!   ignored.
//! - Every error is a Twirp error: `{"code":"…","msg":"…"}` with `Content-Type:
//!   application/json` exactly (the Node SDK parses nothing else) and the status of Twirp's table.
//!   Clients act on the code: lk-jwt-service reads `not_found` from GetParticipant as "absent".
//!
//! Decisions where Twirp or LiveKit leave room:
//! - Anything that is not a POST to a known method is `bad_route` (404), as twirp-go answers;
//!   so is a missing or unsupported content type. RoomService methods rtcbox does not serve
//!   (UpdateParticipant, SendData, …) are `unimplemented` (501).
//! - A body over [`MAX_BODY_BYTES`] is `malformed` (400): retrying cannot help, so not
//!   `resource_exhausted`, whose 429 invites a retry.
//! - A missing, malformed, wrongly signed or expired token is `unauthenticated` (401); a valid
//!   token without the grant, or for another room, is `permission_denied` (403). Authentication
//!   happens before the body is read; authorization after decoding, since it needs the room.
//! - Room names and identities must be non-empty and at most [`MAX_NAME_BYTES`] bytes
//!   (`invalid_argument`); ListRooms' optional name filter obeys the same length cap.
//!
//! Logging: 4xx answers are logged at debug level only; the token is never logged.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use axum::routing::any;
use http_body_util::{BodyExt as _, Limited};
use livekit_protocol as proto;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::token::{self, Claims, VideoGrant};
use crate::config::ApiKey;
use crate::secret::Secret;

/// Largest request body accepted. LiveKit's requests are tiny; CreateRoom with generous
/// metadata stays far below.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest room name or participant identity accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The future every [`RoomApi`] method returns.
pub type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RoomApiError>> + Send + 'a>>;

/// What the Twirp layer needs from the SFU. Implemented by the SFU handle; tests use a fake.
///
/// Requests arrive authorized and with valid room names and identities (non-empty, at most
/// [`MAX_NAME_BYTES`]); CreateRoom must be idempotent (return the existing room).
pub trait RoomApi: Send + Sync + 'static {
    fn create_room(&self, req: proto::CreateRoomRequest) -> ApiFuture<'_, proto::Room>;
    fn list_rooms(&self, req: proto::ListRoomsRequest) -> ApiFuture<'_, proto::ListRoomsResponse>;
    fn delete_room(
        &self,
        req: proto::DeleteRoomRequest,
    ) -> ApiFuture<'_, proto::DeleteRoomResponse>;
    fn list_participants(
        &self,
        req: proto::ListParticipantsRequest,
    ) -> ApiFuture<'_, proto::ListParticipantsResponse>;
    fn get_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::ParticipantInfo>;
    fn remove_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::RemoveParticipantResponse>;
    fn mute_published_track(
        &self,
        req: proto::MuteRoomTrackRequest,
    ) -> ApiFuture<'_, proto::MuteRoomTrackResponse>;
}

/// Why the SFU refused a request. The message of `NotFound`, `InvalidArgument` and
/// `ResourceExhausted` is sent to the caller as the Twirp `msg`, so write it for them ("room
/// not found") and put nothing internal in it. `Unavailable`'s message is logged and the caller
/// gets a generic one.
#[derive(Debug, thiserror::Error)]
pub enum RoomApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The RoomService routes, relative to the router's root (merge or nest it where the SFU lives).
/// Paths under `/twirp/` that name no RoomService method answer `bad_route`.
pub fn router(api: Arc<dyn RoomApi>, key: ApiKey, secret: Secret) -> Router {
    let state = Arc::new(TwirpState { api, key, secret });
    Router::new()
        .route("/twirp/livekit.RoomService/{method}", any(room_service))
        .route("/twirp/{*rest}", any(unknown_route))
        .with_state(state)
}

struct TwirpState {
    api: Arc<dyn RoomApi>,
    key: ApiKey,
    secret: Secret,
}

async fn room_service(
    State(state): State<Arc<TwirpState>>,
    method: Result<Path<String>, PathRejection>,
    http_method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let route = match method {
        Ok(Path(name)) => Route::parse(&name),
        Err(_) => Route::Unknown,
    };
    match serve(&state, route, &http_method, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(route),
    }
}

async fn unknown_route() -> Response<Body> {
    TwirpError::new(Code::BadRoute, "no such Twirp service or method").into_response(Route::Unknown)
}

/// One request, from route to encoded answer; every refusal is a [`TwirpError`].
async fn serve(
    state: &TwirpState,
    route: Route,
    http_method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, TwirpError> {
    if http_method != Method::POST {
        return Err(TwirpError::new(
            Code::BadRoute,
            "unsupported method (only POST is allowed)",
        ));
    }
    let rpc = match route {
        Route::Served(rpc) => rpc,
        Route::Unserved(name) => {
            return Err(TwirpError::new(
                Code::Unimplemented,
                format!("{name} is not implemented"),
            ));
        }
        Route::Unknown => {
            return Err(TwirpError::new(
                Code::BadRoute,
                "no such RoomService method",
            ));
        }
    };
    let codec = Codec::from_headers(headers)?;
    let claims = authenticate(headers, &state.key, &state.secret)?;
    let bytes = read_body(body).await?;
    let api = state.api.as_ref();
    match rpc {
        Rpc::CreateRoom => {
            let req: proto::CreateRoomRequest = codec.decode(&bytes)?;
            authorize(&claims, Permission::Create)?;
            validate_name("name", &req.name)?;
            codec.encode(&api.create_room(req).await?)
        }
        Rpc::ListRooms => {
            let req: proto::ListRoomsRequest = codec.decode(&bytes)?;
            authorize(&claims, Permission::List)?;
            for name in &req.names {
                validate_length("names", name)?;
            }
            codec.encode(&api.list_rooms(req).await?)
        }
        Rpc::DeleteRoom => {
            let req: proto::DeleteRoomRequest = codec.decode(&bytes)?;
            authorize(&claims, Permission::Create)?;
            validate_name("room", &req.room)?;
            codec.encode(&api.delete_room(req).await?)
        }
        Rpc::ListParticipants => {
            let req: proto::ListParticipantsRequest = codec.decode(&bytes)?;
            authorize(&claims, Permission::AdminOf(&req.room))?;
            validate_name("room", &req.room)?;
            codec.encode(&api.list_participants(req).await?)
        }
        Rpc::GetParticipant => {
            let req: proto::RoomParticipantIdentity = codec.decode(&bytes)?;
            authorize(&claims, Permission::AdminOf(&req.room))?;
            validate_participant(&req.room, &req.identity)?;
            codec.encode(&api.get_participant(req).await?)
        }
        Rpc::RemoveParticipant => {
            let req: proto::RoomParticipantIdentity = codec.decode(&bytes)?;
            authorize(&claims, Permission::AdminOf(&req.room))?;
            validate_participant(&req.room, &req.identity)?;
            codec.encode(&api.remove_participant(req).await?)
        }
        Rpc::MutePublishedTrack => {
            let req: proto::MuteRoomTrackRequest = codec.decode(&bytes)?;
            authorize(&claims, Permission::AdminOf(&req.room))?;
            validate_participant(&req.room, &req.identity)?;
            if req.track_sid.is_empty() {
                return Err(TwirpError::new(
                    Code::InvalidArgument,
                    "track_sid is required",
                ));
            }
            codec.encode(&api.mute_published_track(req).await?)
        }
    }
}

/// What the `{method}` segment names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Served(Rpc),
    /// A RoomService method rtcbox does not serve: `unimplemented`.
    Unserved(&'static str),
    /// Not a RoomService method: `bad_route`.
    Unknown,
}

impl Route {
    fn parse(name: &str) -> Route {
        if let Some(&rpc) = Rpc::ALL.iter().find(|rpc| rpc.name() == name) {
            return Route::Served(rpc);
        }
        match UNSERVED.iter().find(|&&unserved| unserved == name) {
            Some(&unserved) => Route::Unserved(unserved),
            None => Route::Unknown,
        }
    }

    fn name(self) -> Option<&'static str> {
        match self {
            Route::Served(rpc) => Some(rpc.name()),
            Route::Unserved(name) => Some(name),
            Route::Unknown => None,
        }
    }
}

/// The RoomService methods rtcbox serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    CreateRoom,
    ListRooms,
    DeleteRoom,
    ListParticipants,
    GetParticipant,
    RemoveParticipant,
    MutePublishedTrack,
}

impl Rpc {
    const ALL: [Rpc; 7] = [
        Rpc::CreateRoom,
        Rpc::ListRooms,
        Rpc::DeleteRoom,
        Rpc::ListParticipants,
        Rpc::GetParticipant,
        Rpc::RemoveParticipant,
        Rpc::MutePublishedTrack,
    ];

    fn name(self) -> &'static str {
        match self {
            Rpc::CreateRoom => "CreateRoom",
            Rpc::ListRooms => "ListRooms",
            Rpc::DeleteRoom => "DeleteRoom",
            Rpc::ListParticipants => "ListParticipants",
            Rpc::GetParticipant => "GetParticipant",
            Rpc::RemoveParticipant => "RemoveParticipant",
            Rpc::MutePublishedTrack => "MutePublishedTrack",
        }
    }
}

/// The other RoomService methods of livekit_room.proto.
const UNSERVED: &[&str] = &[
    "UpdateParticipant",
    "UpdateSubscriptions",
    "SendData",
    "UpdateRoomMetadata",
    "ForwardParticipant",
    "MoveParticipant",
    "PerformRpc",
];

/// The body format of a request, and so of its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Protobuf,
    Json,
}

impl Codec {
    /// Matches the media type case-insensitively and ignores parameters, as twirp-go does.
    fn from_headers(headers: &HeaderMap) -> Result<Codec, TwirpError> {
        let unsupported = || {
            TwirpError::new(
                Code::BadRoute,
                "Content-Type must be application/protobuf or application/json",
            )
        };
        let value = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unsupported)?;
        let media_type = value.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/protobuf") {
            Ok(Codec::Protobuf)
        } else if media_type.eq_ignore_ascii_case("application/json") {
            Ok(Codec::Json)
        } else {
            Err(unsupported())
        }
    }

    fn decode<T>(self, bytes: &[u8]) -> Result<T, TwirpError>
    where
        T: prost::Message + Default + DeserializeOwned,
    {
        let decoded = match self {
            Codec::Protobuf => T::decode(bytes).ok(),
            Codec::Json => serde_json::from_slice(bytes).ok(),
        };
        decoded.ok_or_else(|| {
            let format = match self {
                Codec::Protobuf => "protobuf",
                Codec::Json => "JSON",
            };
            TwirpError::new(
                Code::Malformed,
                format!("the request body is not a valid {format} message"),
            )
        })
    }

    fn encode<T>(self, message: &T) -> Result<Response<Body>, TwirpError>
    where
        T: prost::Message + Serialize,
    {
        let (content_type, body) = match self {
            Codec::Protobuf => ("application/protobuf", message.encode_to_vec()),
            Codec::Json => (
                "application/json",
                serde_json::to_vec(message).map_err(|error| {
                    tracing::error!(%error, "cannot encode a RoomService answer as JSON");
                    TwirpError::new(Code::Internal, "internal error")
                })?,
            ),
        };
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("static response"))
    }
}

/// The claims of the `Authorization: Bearer <JWT>` token, verified against our key pair.
fn authenticate(headers: &HeaderMap, key: &ApiKey, secret: &Secret) -> Result<Claims, TwirpError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| TwirpError::new(Code::Unauthenticated, "missing access token"))?;
    let jwt = bearer_token(value).ok_or_else(|| {
        TwirpError::new(
            Code::Unauthenticated,
            "the Authorization header must be \"Bearer <token>\"",
        )
    })?;
    token::verify(jwt, key, secret).map_err(|error| {
        // The reason (expired, bad signature, …) without the token.
        tracing::debug!(%error, "RoomService token refused");
        TwirpError::new(Code::Unauthenticated, "invalid access token")
    })
}

/// The token of a `Bearer` authorization; the scheme is case-insensitive (RFC 9110).
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The grant a method needs, as livekit-server's `Ensure*Permission`.
enum Permission<'a> {
    /// `roomCreate`.
    Create,
    /// `roomList`.
    List,
    /// `roomAdmin` for exactly this room.
    AdminOf(&'a str),
}

fn authorize(claims: &Claims, permission: Permission<'_>) -> Result<(), TwirpError> {
    let no_grants = VideoGrant::default();
    let grant = claims.video.as_ref().unwrap_or(&no_grants);
    let allowed = match permission {
        Permission::Create => grant.room_create,
        Permission::List => grant.room_list,
        // A roomAdmin token without a room administers nothing.
        Permission::AdminOf(room) => {
            grant.room_admin && !grant.room.is_empty() && grant.room == room
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(TwirpError::new(
            Code::PermissionDenied,
            "the access token does not grant this",
        ))
    }
}

fn validate_participant(room: &str, identity: &str) -> Result<(), TwirpError> {
    validate_name("room", room)?;
    validate_name("identity", identity)
}

fn validate_name(field: &str, value: &str) -> Result<(), TwirpError> {
    if value.is_empty() {
        return Err(TwirpError::new(
            Code::InvalidArgument,
            format!("{field} is required"),
        ));
    }
    validate_length(field, value)
}

fn validate_length(field: &str, value: &str) -> Result<(), TwirpError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(TwirpError::new(
            Code::InvalidArgument,
            format!("{field} is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(())
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, TwirpError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(TwirpError::new(
            Code::Malformed,
            format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
        )),
        Err(error) => {
            tracing::debug!(%error, "cannot read a RoomService request body");
            Err(TwirpError::new(
                Code::Malformed,
                "cannot read the request body",
            ))
        }
    }
}

/// Twirp error codes rtcbox answers with, and their statuses from Twirp's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code {
    BadRoute,
    Malformed,
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    ResourceExhausted,
    Internal,
    Unimplemented,
    Unavailable,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::BadRoute => "bad_route",
            Code::Malformed => "malformed",
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Internal => "internal",
            Code::Unimplemented => "unimplemented",
            Code::Unavailable => "unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BadRoute | Code::NotFound => StatusCode::NOT_FOUND,
            Code::Malformed | Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A refusal, with a message fit for the caller.
#[derive(Debug)]
struct TwirpError {
    code: Code,
    msg: Cow<'static, str>,
}

impl TwirpError {
    fn new(code: Code, msg: impl Into<Cow<'static, str>>) -> Self {
        TwirpError {
            code,
            msg: msg.into(),
        }
    }

    /// The Twirp error body. Server errors were logged where their cause was known.
    fn into_response(self, route: Route) -> Response<Body> {
        tracing::debug!(
            method = route.name().unwrap_or("?"),
            code = self.code.as_str(),
            msg = %self.msg,
            "RoomService refusal"
        );
        let body = serde_json::json!({"code": self.code.as_str(), "msg": self.msg});
        Response::builder()
            .status(self.code.status())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("static response")
    }
}

impl From<RoomApiError> for TwirpError {
    fn from(error: RoomApiError) -> Self {
        match error {
            RoomApiError::NotFound(msg) => TwirpError::new(Code::NotFound, msg),
            RoomApiError::InvalidArgument(msg) => TwirpError::new(Code::InvalidArgument, msg),
            RoomApiError::ResourceExhausted(msg) => TwirpError::new(Code::ResourceExhausted, msg),
            RoomApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "RoomService request failed: SFU unavailable");
                TwirpError::new(Code::Unavailable, "the SFU is unavailable; try again later")
            }
        }
    }
}

#[cfg(test)]
mod tests;
