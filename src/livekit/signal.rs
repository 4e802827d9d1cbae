//! LiveKit signaling over WebSocket: `/rtc` (v0, two peer connections, parameters in the query)
//! and `/rtc/v1` (one peer connection; a protobuf `JoinRequest` in the query, gzipped or not,
//! carrying the client's first offer), each with its `/validate`.
//!
//! Everything that can be refused is refused *before* the upgrade, with LiveKit's statuses and
//! bodies (clients classify errors by them): 401 for a missing or bad token, 400 for a token
//! without identity or room, 404 `requested room does not exist`. After the upgrade, one binary
//! protobuf `SignalRequest` per frame comes in and one `SignalResponse` per frame goes out; a
//! frame that does not decode ends the session with a `leave`. The session sends a WebSocket
//! ping frame every 10 s and closes when the client has sent nothing, not even a pong, for 20 s
//! ([`super::keepalive`] decides).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::any;
use livekit_protocol as proto;
use prost::Message as _;
use proto::{signal_request, signal_response};
use tokio::sync::mpsc;

use super::keepalive::{self, Due, Keepalive};
use super::token::{self, Claims};
use crate::config::ApiKey;
use crate::secret::Secret;
use crate::sfu::{IceServers, JoinError, JoinRequest, ResumeRequest, SfuHandle};
use crate::turn::TurnHandle;

/// Largest signaling message accepted (SDP offers with many m-lines are tens of KiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Messages queued towards one client.
const SEND_QUEUE: usize = 256;
/// A frame that cannot be written in this time means the client is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// LiveKit refreshes tokens this often so reconnects after the original expiry still work.
const TOKEN_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
const MIN_REFRESHED_TTL: Duration = Duration::from_secs(10 * 60);
/// The least a participant's TURN credentials last ([`turn_credentials_expiry`]).
const TURN_CREDENTIALS_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

pub struct SignalState {
    pub sfu: SfuHandle,
    pub key: ApiKey,
    pub secret: Secret,
    /// The embedded TURN server, whose per-participant credentials go into the JoinResponse.
    pub turn: Option<TurnHandle>,
}

/// The signaling routes, relative to the SFU's URL (served at `/` and under `/livekit/sfu`).
pub fn router(state: Arc<SignalState>) -> Router {
    Router::new()
        .route("/rtc", any(rtc))
        .route("/rtc/validate", any(validate))
        .route("/rtc/v1", any(rtc_v1))
        .route("/rtc/v1/validate", any(validate_v1))
        .with_state(state)
}

/// A refusal before upgrade: plain text, CORS open (the browser must be able to read it).
fn plain(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The largest join request accepted once decompressed (LiveKit's limit: the default maximum
/// header size). Offers are tens of KiB.
const MAX_JOIN_REQUEST_BYTES: u64 = 1 << 20;

/// How a client asked to join: from v0's query parameters or v1's `JoinRequest`.
struct Hello {
    /// Resume the session `sid` (v0 `reconnect=1&sid=`, v1 `reconnect`/`participant_sid`).
    reconnect: bool,
    sid: String,
    auto_subscribe: bool,
    client_protocol: i32,
    /// v1: one peer connection, and the first offer and tracks its join request carried.
    single_pc: bool,
    publisher_offer: Option<proto::SessionDescription>,
    add_tracks: Vec<proto::AddTrackRequest>,
}

impl Hello {
    /// v0: booleans are `1`/`true`; `auto_subscribe` is on unless said otherwise.
    fn from_query(params: &HashMap<String, String>) -> Self {
        Hello {
            reconnect: flag(params, "reconnect").unwrap_or(false),
            sid: params.get("sid").cloned().unwrap_or_default(),
            auto_subscribe: flag(params, "auto_subscribe").unwrap_or(true),
            client_protocol: params
                .get("client_protocol")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            single_pc: false,
            publisher_offer: None,
            add_tracks: Vec::new(),
        }
    }

    /// v1: `join_request` is base64url (padded or not) of a `WrappedJoinRequest`, its
    /// `JoinRequest` gzipped or plain; `auto_subscribe` is off unless its settings say so.
    /// The error is the 400's text.
    fn from_join_request(params: &HashMap<String, String>) -> Result<Self, String> {
        let Some(encoded) = params.get("join_request").filter(|v| !v.is_empty()) else {
            return Err("join_request is required".into());
        };
        let request = decode_join_request(encoded)?;
        let settings = request.connection_settings.unwrap_or_default();
        Ok(Hello {
            reconnect: request.reconnect,
            sid: request.participant_sid,
            auto_subscribe: settings.auto_subscribe,
            client_protocol: request.client_info.map_or(0, |c| c.client_protocol),
            single_pc: true,
            publisher_offer: request.publisher_offer,
            add_tracks: request.add_track_requests,
        })
    }
}

/// The `JoinRequest` in a v1 `join_request` parameter, or what is wrong with it.
pub fn decode_join_request(encoded: &str) -> Result<proto::JoinRequest, String> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use std::io::Read as _;
    const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = URL_SAFE_ANY_PADDING
        .decode(encoded.trim())
        .map_err(|_| "join_request is not base64url".to_owned())?;
    let wrapped = proto::WrappedJoinRequest::decode(bytes.as_slice())
        .map_err(|_| "join_request is not a WrappedJoinRequest".to_owned())?;
    use proto::wrapped_join_request::Compression;
    let inner = match Compression::try_from(wrapped.compression) {
        Ok(Compression::None) => wrapped.join_request,
        Ok(Compression::Gzip) => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(wrapped.join_request.as_slice())
                .take(MAX_JOIN_REQUEST_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|_| "join_request is not valid gzip".to_owned())?;
            if out.len() as u64 > MAX_JOIN_REQUEST_BYTES {
                return Err("join_request is too large".into());
            }
            out
        }
        Err(_) => return Err("join_request has an unknown compression".into()),
    };
    proto::JoinRequest::decode(inner.as_slice())
        .map_err(|_| "join_request is not a JoinRequest".to_owned())
}

async fn validate(
    State(state): State<Arc<SignalState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    match admit(&state, &params, &headers).await {
        Ok(_) => plain(StatusCode::OK, "success"),
        Err(refusal) => refusal,
    }
}

/// `/rtc/v1/validate`: what `/rtc/v1` would refuse, refused the same way (livekit-client asks
/// after a failed upgrade to learn why).
async fn validate_v1(
    State(state): State<Arc<SignalState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    if let Err(refusal) = admit(&state, &params, &headers).await {
        return refusal;
    }
    match Hello::from_join_request(&params) {
        Ok(_) => plain(StatusCode::OK, "success"),
        Err(why) => plain(StatusCode::BAD_REQUEST, &why),
    }
}

async fn rtc(
    State(state): State<Arc<SignalState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response<Body> {
    let hello = Hello::from_query(&params);
    upgrade_after_admission(state, params, headers, upgrade, Ok(hello)).await
}

async fn rtc_v1(
    State(state): State<Arc<SignalState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response<Body> {
    let hello = Hello::from_join_request(&params);
    upgrade_after_admission(state, params, headers, upgrade, hello).await
}

/// Refuses before the upgrade what LiveKit refuses (a plain request, then the token, grant,
/// identity and room, then a bad join request), else upgrades into a session.
async fn upgrade_after_admission(
    state: Arc<SignalState>,
    params: HashMap<String, String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    hello: Result<Hello, String>,
) -> Response<Body> {
    let Ok(upgrade) = upgrade else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: signaling needs a WebSocket upgrade",
        );
    };
    let admitted = match admit(&state, &params, &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(why) => return plain(StatusCode::BAD_REQUEST, &why),
    };
    let upgrade = upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES);
    upgrade.on_upgrade(move |socket| session(state, admitted, hello, socket))
}

struct Admitted {
    claims: Claims,
    room: String,
}

/// LiveKit's validation order: token present, token valid, join grant, identity, room.
async fn admit(
    state: &SignalState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Admitted, Response<Body>> {
    let token = match headers.get(header::AUTHORIZATION) {
        Some(value) => match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) => token.trim().to_owned(),
            None => {
                return Err(plain(
                    StatusCode::UNAUTHORIZED,
                    "invalid authorization header. Must start with Bearer",
                ));
            }
        },
        None => match params.get("access_token") {
            Some(token) if !token.is_empty() => token.clone(),
            _ => return Err(plain(StatusCode::UNAUTHORIZED, "no authorization token")),
        },
    };
    let claims = match token::verify(&token, &state.key, &state.secret) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(%error, "signaling token refused");
            return Err(plain(
                StatusCode::UNAUTHORIZED,
                "invalid authorization token",
            ));
        }
    };
    let Some(video) = claims.video.as_ref().filter(|v| v.room_join) else {
        return Err(plain(StatusCode::UNAUTHORIZED, "permissions denied"));
    };
    if claims.sub.is_empty() {
        return Err(plain(StatusCode::BAD_REQUEST, "identity cannot be empty"));
    }
    if video.room.is_empty() {
        return Err(plain(StatusCode::BAD_REQUEST, "no room name"));
    }
    let room = video.room.clone();
    let name = room.clone();
    let joinable = state
        .sfu
        .call(move |sfu, now| sfu.can_join(&name, now))
        .await;
    match joinable {
        Ok(true) => Ok(Admitted { claims, room }),
        Ok(false) => Err(plain(
            StatusCode::NOT_FOUND,
            "requested room does not exist",
        )),
        Err(_) => Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the SFU is shutting down",
        )),
    }
}

fn flag(params: &HashMap<String, String>, name: &str) -> Option<bool> {
    params
        .get(name)
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The session a resume asked for is gone: LiveKit's answer, after which both SDKs join
/// again from scratch.
async fn refuse_resume(socket: &mut WebSocket) {
    let leave = signal_response::Message::Leave(proto::LeaveRequest {
        reason: proto::DisconnectReason::StateMismatch as i32,
        action: proto::leave_request::Action::Reconnect as i32,
        can_reconnect: true,
        ..Default::default()
    });
    let _ = send(socket, leave).await;
    let _ = socket.send(normal_close()).await;
}

async fn send(socket: &mut WebSocket, message: signal_response::Message) -> Result<(), ()> {
    let bytes = proto::SignalResponse {
        message: Some(message),
    }
    .encode_to_vec();
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Binary(bytes.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// One participant's signaling session, from upgrade to close: a join, or (`reconnect=1`) a
/// resume of the session the client had on a connection that was lost.
async fn session(state: Arc<SignalState>, admitted: Admitted, hello: Hello, mut socket: WebSocket) {
    let conn = state.sfu.next_conn();
    let claims = admitted.claims;
    let grant = claims.video.clone().unwrap_or_default();
    let (tx, mut rx) = mpsc::channel(SEND_QUEUE);
    // Minted by the core once it knows the session's sid, which the credentials name.
    let ice_servers = state
        .turn
        .clone()
        .map(|turn| {
            let identity = claims.sub.clone();
            let expires = turn_credentials_expiry(claims.exp, unix_now());
            IceServers::new(move |sid| turn.ice_servers(sid, &identity, expires))
        })
        .unwrap_or_default();
    if hello.reconnect {
        let request = ResumeRequest {
            conn,
            room: admitted.room,
            identity: claims.sub.clone(),
            sid: hello.sid,
            ice_servers,
        };
        match state.sfu.resume(request, tx).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(identity = claims.sub, %error, "resume refused; the client joins again");
                return refuse_resume(&mut socket).await;
            }
            Err(_) => return,
        }
    } else {
        let request = JoinRequest {
            ice_servers,
            single_pc: hello.single_pc,
            publisher_offer: hello.publisher_offer,
            add_tracks: hello.add_tracks,
            conn,
            room: admitted.room,
            identity: claims.sub.clone(),
            name: claims.name.clone().unwrap_or_default(),
            metadata: claims.metadata.clone().unwrap_or_default(),
            grant: grant.clone(),
            auto_subscribe: hello.auto_subscribe,
            client_protocol: hello.client_protocol,
        };
        match state.sfu.join(request, tx).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let reason = match error {
                    JoinError::RoomNotFound => proto::DisconnectReason::RoomClosed,
                    _ => proto::DisconnectReason::JoinFailure,
                };
                let _ = send(&mut socket, leave(reason)).await;
                let _ = socket.send(normal_close()).await;
                return;
            }
            Err(_) => return,
        }
    }

    let mut keepalive = Keepalive::new(std::time::Instant::now());
    // The JoinResponse (or ReconnectResponse) must be the first message; the first refreshed
    // token follows it, then one every interval.
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + TOKEN_REFRESH_INTERVAL,
        TOKEN_REFRESH_INTERVAL,
    );
    let mut refreshed_once = false;
    let reason = loop {
        tokio::select! {
            biased;
            outgoing = rx.recv() => match outgoing {
                Some(message) => {
                    if send(&mut socket, message).await.is_err() {
                        break proto::DisconnectReason::SignalClose;
                    }
                    if !refreshed_once {
                        refreshed_once = true;
                        if let Some(token) = refreshed_token(&state, &claims) {
                            let _ = send(&mut socket, signal_response::Message::RefreshToken(token)).await;
                        }
                    }
                }
                // The SFU closed the session (leave sent, or the participant was removed).
                None => {
                    let _ = socket.send(normal_close()).await;
                    break proto::DisconnectReason::ClientInitiated;
                }
            },
            _ = refresh.tick() => {
                if let Some(token) = refreshed_token(&state, &claims) {
                    let _ = send(&mut socket, signal_response::Message::RefreshToken(token)).await;
                }
            }
            incoming = socket.recv() => {
                let frame = match incoming {
                    None | Some(Err(_)) => break proto::DisconnectReason::SignalClose,
                    Some(Ok(frame)) => frame,
                };
                // Any frame proves the client alive: pongs (the Go SDK sends nothing else),
                // pings, LiveKit pings and every other message.
                keepalive.heard(std::time::Instant::now());
                let bytes = match frame {
                    Message::Binary(bytes) => bytes,
                    Message::Close(_) => break proto::DisconnectReason::ClientInitiated,
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Text(_) => {
                        // JSON signaling is optional in LiveKit and no supported SDK uses it.
                        let _ = send(&mut socket, leave(proto::DisconnectReason::StateMismatch)).await;
                        break proto::DisconnectReason::StateMismatch;
                    }
                };
                let Some(message) = decode_request(&bytes) else {
                    tracing::debug!(identity = claims.sub, "undecodable signaling frame; ending the session");
                    let _ = send(&mut socket, leave(proto::DisconnectReason::StateMismatch)).await;
                    break proto::DisconnectReason::StateMismatch;
                };
                match message {
                    // Answered here: liveness must not wait behind media work.
                    signal_request::Message::PingReq(ping) => {
                        let pong = signal_response::Message::PongResp(proto::Pong {
                            last_ping_timestamp: ping.timestamp,
                            timestamp: unix_ms(),
                        });
                        if send(&mut socket, pong).await.is_err() {
                            break proto::DisconnectReason::SignalClose;
                        }
                    }
                    signal_request::Message::Ping(_) => {
                        if send(&mut socket, signal_response::Message::Pong(unix_ms())).await.is_err() {
                            break proto::DisconnectReason::SignalClose;
                        }
                    }
                    message => state.sfu.signal(conn, message).await,
                }
            }
            _ = tokio::time::sleep_until(keepalive.next_due().into()) => {
                let now = std::time::Instant::now();
                match keepalive.poll(now) {
                    Some(Due::Dead) => {
                        tracing::info!(
                            identity = claims.sub,
                            silent_secs = keepalive.silent_for(now).as_secs(),
                            "signaling timed out: nothing received from the client, not even a \
                             pong to the WebSocket pings, for {} s",
                            keepalive::SILENCE_LIMIT.as_secs(),
                        );
                        break proto::DisconnectReason::ConnectionTimeout;
                    }
                    Some(Due::Ping) => {
                        let ping = socket.send(Message::Ping(Default::default()));
                        if !matches!(tokio::time::timeout(SEND_TIMEOUT, ping).await, Ok(Ok(()))) {
                            break proto::DisconnectReason::SignalClose;
                        }
                    }
                    None => {}
                }
            }
        }
    };
    state.sfu.disconnected(conn, reason).await;
    let _ = socket.send(normal_close()).await;
}

/// The close frame every session ends with: 1000 (normal closure). A close without a code
/// reaches browsers as 1005, which livekit-client reports as an unexpected close.
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

/// One binary frame from the client as a signaling request; `None` for anything that is not a
/// `SignalRequest` with a message (the session then ends with a `leave`).
pub fn decode_request(bytes: &[u8]) -> Option<signal_request::Message> {
    proto::SignalRequest::decode(bytes)
        .ok()
        .and_then(|r| r.message)
}

fn leave(reason: proto::DisconnectReason) -> signal_response::Message {
    signal_response::Message::Leave(proto::LeaveRequest {
        reason: reason as i32,
        action: proto::leave_request::Action::Disconnect as i32,
        ..Default::default()
    })
}

/// A token with the same grants, valid for the rest of the original lifetime but at least
/// ten minutes, signed with our key (what LiveKit sends as `refresh_token`).
fn refreshed_token(state: &SignalState, claims: &Claims) -> Option<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let remaining = Duration::from_secs(claims.exp.saturating_sub(now));
    let ttl = remaining.max(MIN_REFRESHED_TTL);
    let refreshed = Claims {
        iss: state.key.as_str().to_owned(),
        iat: Some(now),
        nbf: Some(now),
        exp: now + ttl.as_secs(),
        ..claims.clone()
    };
    token::sign(&refreshed, &state.secret).ok()
}

/// When a participant's TURN credentials expire: a TURN allocation refreshes with the
/// credentials it was made with, so they must outlive the call, not just the token that
/// admitted it (Element Call's tokens last an hour; LiveKit keeps a session alive with
/// `refresh_token`). They can only relay to this SFU, and a resume hands out fresh ones.
fn turn_credentials_expiry(token_exp: u64, now: u64) -> u64 {
    token_exp.max(now + TURN_CREDENTIALS_LIFETIME.as_secs())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::io::Write as _;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("in memory");
        encoder.finish().expect("in memory")
    }

    fn wrapped(compression: i32, join_request: Vec<u8>) -> Vec<u8> {
        proto::WrappedJoinRequest {
            compression,
            join_request,
        }
        .encode_to_vec()
    }

    #[test]
    fn a_join_request_decodes_gzipped_or_plain_padded_or_not() {
        let request = proto::JoinRequest {
            participant_sid: "PA_x".into(),
            reconnect: true,
            publisher_offer: Some(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: "v=0\r\n".repeat(100),
                id: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let inner = request.encode_to_vec();
        for bytes in [wrapped(1, gzip(&inner)), wrapped(0, inner.clone())] {
            let padded = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
            let unpadded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(decode_join_request(&padded), Ok(request.clone()));
            assert_eq!(decode_join_request(&unpadded), Ok(request.clone()));
        }
    }

    #[test]
    fn a_join_request_that_inflates_past_the_limit_is_refused() {
        let bomb = gzip(&vec![0; 2 << 20]);
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(wrapped(1, bomb));
        assert_eq!(
            decode_join_request(&encoded),
            Err("join_request is too large".into())
        );
    }
}
