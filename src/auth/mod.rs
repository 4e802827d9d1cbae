//! The MatrixRTC authorization service, wire-compatible with element-hq's lk-jwt-service: swaps a
//! Matrix OpenID token for a LiveKit access token.
//!
//! [`AuthService::sfu_get`], [`AuthService::get_token`] and
//! [`AuthService::delegate_delayed_leave`] take the raw request body and return the response or
//! an [`AuthError`] carrying lk-jwt-service's status, `errcode` and text, checked in
//! lk-jwt-service's order. HTTP concerns (CORS, methods, limits) live in `http::auth_routes`.
//!
//! `delay_id` + `delay_timeout` (on the token endpoints, mandatory on `/delegate_delayed_leave`)
//! delegate the user's MSC4140 delayed leave event to rtcbox ([`delayed_leave`]): only for
//! full-access users, as lk-jwt-service; the client-sent `delay_cs_api_url` is ignored (the
//! homeserver's client API is resolved from its server name).
//!
//! Deliberate differences from lk-jwt-service, each in the user's favour:
//! - unknown JSON fields are ignored rather than refused (clients add fields before services do);
//! - a user of a homeserver that is not full-access gets a token only for a room that exists,
//!   and otherwise a clear 403 instead of a token the SFU would refuse.

pub mod delayed_leave;
pub mod derive;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use self::delayed_leave::{DelegateLeave, Delegation, DelegationError};
use crate::config::{ApiKey, FullAccess, PublicUrl};
use crate::livekit::token::{self, VideoGrant};
use crate::matrix::{AddressPolicy, FederationClient, UserInfoError};
use crate::rooms::{CreateOutcome, RoomDirectory, RoomOptions};
use crate::secret::Secret;

/// Lifetime of the tokens we hand out, as lk-jwt-service.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Confirms OpenID tokens. The real one is [`FederationClient`]; router tests use a canned one.
pub trait OpenIdVerifier: Send + Sync {
    /// The user ID the token belongs to; guaranteed to be on `server_name`.
    fn verify<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a Secret,
        policy: AddressPolicy,
    ) -> Pin<Box<dyn Future<Output = Result<String, UserInfoError>> + Send + 'a>>;
}

impl OpenIdVerifier for FederationClient {
    fn verify<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a Secret,
        policy: AddressPolicy,
    ) -> Pin<Box<dyn Future<Output = Result<String, UserInfoError>> + Send + 'a>> {
        Box::pin(self.userinfo(server_name, access_token, policy))
    }
}

/// What the authorization service needs to know.
pub struct AuthConfig {
    pub public_url: PublicUrl,
    pub api_key: ApiKey,
    pub api_secret: Secret,
    pub full_access: FullAccess,
    /// `RTCBOX_DANGEROUS_ALLOW_PRIVATE_HOMESERVERS`: every homeserver may be on a private address.
    pub dangerous_allow_private_homeservers: bool,
}

pub struct AuthService {
    config: AuthConfig,
    /// The public URL and the full-access list as they are now: the admin panel changes them
    /// without a restart ([`AuthService::set_live`]); `config` keeps the rest.
    live: std::sync::RwLock<Live>,
    verifier: Arc<dyn OpenIdVerifier>,
    rooms: Arc<dyn RoomDirectory>,
    leaves: Arc<dyn DelegateLeave>,
}

/// What the admin panel can change while rtcbox runs.
#[derive(Clone, Debug)]
struct Live {
    public_url: PublicUrl,
    full_access: FullAccess,
}

/// Which addresses requests to `server_name`'s homeserver may reach: a full-access homeserver is
/// one the operator named, so it may live on the LAN; others only with the dangerous override.
pub fn address_policy(
    full_access: &FullAccess,
    dangerous_allow_private_homeservers: bool,
    server_name: &str,
) -> AddressPolicy {
    if dangerous_allow_private_homeservers || full_access.contains(server_name) {
        AddressPolicy::AllowPrivate
    } else {
        AddressPolicy::PublicOnly
    }
}

/// The successful answer of both endpoints.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub url: String,
    pub jwt: String,
}

/// A refusal as lk-jwt-service words it: `{"errcode": …, "error": …}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: &'static str,
}

impl AuthError {
    const fn new(status: StatusCode, errcode: &'static str, error: &'static str) -> Self {
        AuthError {
            status,
            errcode,
            error,
        }
    }
    pub const NOT_JSON: AuthError = AuthError::new(
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
        "Error reading request",
    );
    pub const UNAUTHORIZED: AuthError = AuthError::new(
        StatusCode::UNAUTHORIZED,
        "M_UNAUTHORIZED",
        "The request could not be authorised.",
    );
    pub const INTERNAL: AuthError = AuthError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        "Internal Server Error",
    );
    const fn bad_json(error: &'static str) -> Self {
        AuthError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", error)
    }
    const MISSING_DELAY: AuthError =
        AuthError::bad_json("The request body is missing `delay_id` or `delay_timeout`");
    const DELEGATION_FULL_ACCESS_ONLY: &'static str =
        "Delegation of delayed events is only supported for full access users";
}

/// `openid_token` as returned by `/_matrix/client/v3/user/{userId}/openid/request_token`.
/// Absent and `null` fields read as empty, like Go's zero values.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OpenIdToken {
    access_token: Option<String>,
    matrix_server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DelayParams {
    delay_id: Option<String>,
    delay_timeout: Option<i64>,
}

/// Body of the legacy `POST /sfu/get`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LegacyRequest {
    room: Option<String>,
    openid_token: Option<OpenIdToken>,
    device_id: Option<String>,
    #[serde(flatten)]
    delay: DelayParams,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Member {
    id: Option<String>,
    claimed_user_id: Option<String>,
    claimed_device_id: Option<String>,
}

/// A `/get_token`-shaped request whose user is confirmed.
struct CheckedTokenRequest {
    alias: String,
    identity: String,
    user_id: String,
    server_name: String,
    full_access: bool,
    delay: Option<(Secret, Duration)>,
}

/// Body of the MSC4195 `POST /get_token` (and of `/delegate_delayed_leave`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenRequest {
    room_id: Option<String>,
    slot_id: Option<String>,
    openid_token: Option<OpenIdToken>,
    member: Option<Member>,
    #[serde(flatten)]
    delay: DelayParams,
}

impl AuthService {
    pub fn new(
        config: AuthConfig,
        verifier: Arc<dyn OpenIdVerifier>,
        rooms: Arc<dyn RoomDirectory>,
        leaves: Arc<dyn DelegateLeave>,
    ) -> Self {
        AuthService {
            live: std::sync::RwLock::new(Live {
                public_url: config.public_url.clone(),
                full_access: config.full_access.clone(),
            }),
            config,
            verifier,
            rooms,
            leaves,
        }
    }

    /// The LiveKit URL handed out from now on.
    pub fn public_url(&self) -> PublicUrl {
        self.live().public_url
    }

    /// A settings change applied without a restart: tokens issued from now on name
    /// `public_url`, and `full_access` decides who may create rooms.
    pub fn set_live(&self, public_url: PublicUrl, full_access: FullAccess) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        *live = Live {
            public_url,
            full_access,
        };
    }

    fn live(&self) -> Live {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_full_access(&self, server_name: &str) -> bool {
        self.live().full_access.contains(server_name)
    }

    /// `POST /sfu/get`: identity `<mxid>:<device_id>`, room from the Matrix room and the call slot.
    pub async fn sfu_get(&self, body: &[u8]) -> Result<TokenResponse, AuthError> {
        let request: LegacyRequest = parse_object(body)?;
        let room = non_empty(&request.room).ok_or(AuthError::bad_json("Missing room parameter"))?;
        let openid = request.openid_token.unwrap_or_default();
        let (access_token, server_name) = match (
            non_empty(&openid.access_token),
            non_empty(&openid.matrix_server_name),
        ) {
            (Some(token), Some(server)) => (token, server),
            _ => return Err(AuthError::bad_json("Missing OpenID token parameters")),
        };
        let delay = check_delay_pair(&request.delay)?;

        let user_id = self.check_openid(server_name, access_token).await?;
        let full_access = self.is_full_access(server_name);
        if delay.is_some() && !full_access {
            return Err(AuthError::bad_json(AuthError::DELEGATION_FULL_ACCESS_ONLY));
        }
        let device_id = request.device_id.as_deref().unwrap_or("");
        let alias = derive::room_alias(room, derive::CALL_SLOT);
        let identity = derive::legacy_identity(&user_id, device_id);
        if let Some((delay_id, delay_timeout)) = delay {
            self.delegate(&alias, &identity, server_name, delay_id, delay_timeout)
                .await?;
        }
        self.grant(&alias, &identity, &user_id, full_access).await
    }

    /// `POST /get_token`: identity hashed from user, claimed device and membership id.
    pub async fn get_token(&self, body: &[u8]) -> Result<TokenResponse, AuthError> {
        let request = self.check_token_request(body, false).await?;
        if request.delay.is_some() && !request.full_access {
            return Err(AuthError::bad_json(AuthError::DELEGATION_FULL_ACCESS_ONLY));
        }
        if let Some((delay_id, delay_timeout)) = request.delay {
            self.delegate(
                &request.alias,
                &request.identity,
                &request.server_name,
                delay_id,
                delay_timeout,
            )
            .await?;
        }
        self.grant(
            &request.alias,
            &request.identity,
            &request.user_id,
            request.full_access,
        )
        .await
    }

    /// `POST /delegate_delayed_leave`: the body of `/get_token` with mandatory delay
    /// parameters; only full-access users (403 otherwise). No token, no room: `{}` on success.
    pub async fn delegate_delayed_leave(&self, body: &[u8]) -> Result<(), AuthError> {
        let request = self.check_token_request(body, true).await?;
        // `check_token_request` refused a request without them already (before the OpenID check).
        let Some((delay_id, delay_timeout)) = request.delay else {
            return Err(AuthError::MISSING_DELAY);
        };
        if !request.full_access {
            tracing::info!(
                user_id = request.user_id,
                "delegation refused: not a full-access user"
            );
            return Err(AuthError::new(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                AuthError::DELEGATION_FULL_ACCESS_ONLY,
            ));
        }
        self.delegate(
            &request.alias,
            &request.identity,
            &request.server_name,
            delay_id,
            delay_timeout,
        )
        .await
    }

    /// The checks `/get_token` and `/delegate_delayed_leave` share, in lk-jwt-service's order;
    /// the delay parameters are optional unless `delay_required`.
    async fn check_token_request(
        &self,
        body: &[u8],
        delay_required: bool,
    ) -> Result<CheckedTokenRequest, AuthError> {
        let request: TokenRequest = parse_object(body)?;
        let (room_id, slot_id) = match (non_empty(&request.room_id), non_empty(&request.slot_id)) {
            (Some(room), Some(slot)) => (room, slot),
            _ => {
                return Err(AuthError::bad_json(
                    "The request body is missing `room_id` or `slot_id`",
                ));
            }
        };
        let member = request.member.unwrap_or_default();
        let (member_id, claimed_user_id, claimed_device_id) = match (
            non_empty(&member.id),
            non_empty(&member.claimed_user_id),
            non_empty(&member.claimed_device_id),
        ) {
            (Some(id), Some(user), Some(device)) => (id, user, device),
            _ => {
                return Err(AuthError::bad_json(
                    "The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`",
                ));
            }
        };
        let openid = request.openid_token.unwrap_or_default();
        let (access_token, server_name) = match (
            non_empty(&openid.access_token),
            non_empty(&openid.matrix_server_name),
        ) {
            (Some(token), Some(server)) => (token, server),
            _ => {
                return Err(AuthError::bad_json(
                    "The request body `openid_token` is missing a `access_token` or `matrix_server_name`",
                ));
            }
        };
        let delay = check_delay_pair(&request.delay)?;
        if delay_required && delay.is_none() {
            return Err(AuthError::MISSING_DELAY);
        }

        let user_id = self.check_openid(server_name, access_token).await?;
        if user_id != claimed_user_id {
            tracing::info!(%user_id, claimed_user_id, "token refused: claimed user is not the token's user");
            return Err(AuthError::UNAUTHORIZED);
        }
        Ok(CheckedTokenRequest {
            alias: derive::room_alias(room_id, slot_id),
            identity: derive::rtc_identity(&user_id, claimed_device_id, member_id),
            full_access: self.is_full_access(server_name),
            server_name: server_name.to_owned(),
            user_id,
            delay,
        })
    }

    /// Hands the delayed leave event of `identity` in `alias` to the delayed-leave task.
    async fn delegate(
        &self,
        alias: &str,
        identity: &str,
        server_name: &str,
        delay_id: Secret,
        delay_timeout: Duration,
    ) -> Result<(), AuthError> {
        let delegation = Delegation {
            room: alias.to_owned(),
            identity: identity.to_owned(),
            delay_id,
            delay_timeout,
            server_name: server_name.to_owned(),
            policy: self.address_policy(server_name),
        };
        self.leaves
            .delegate(delegation)
            .await
            .map_err(|error| match error {
                DelegationError::Unresolvable(reason) => {
                    tracing::info!(
                        server_name,
                        reason,
                        "delegation refused: client API not resolvable"
                    );
                    AuthError::bad_json("Unable to resolve client-server API")
                }
                DelegationError::ShuttingDown => AuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "M_UNKNOWN",
                    "Service is shutting down",
                ),
                DelegationError::Storage(reason) => {
                    tracing::error!(reason, "cannot store a delayed leave delegation");
                    AuthError::INTERNAL
                }
            })
    }

    fn address_policy(&self, server_name: &str) -> AddressPolicy {
        address_policy(
            &self.live().full_access,
            self.config.dangerous_allow_private_homeservers,
            server_name,
        )
    }

    async fn check_openid(
        &self,
        server_name: &str,
        access_token: &str,
    ) -> Result<String, AuthError> {
        let policy = self.address_policy(server_name);
        let token = Secret::new(access_token);
        self.verifier
            .verify(server_name, &token, policy)
            .await
            .map_err(|error| {
                tracing::info!(server_name, %error, "token refused: OpenID token not confirmed");
                AuthError::UNAUTHORIZED
            })
    }

    /// Creates the room for full-access users, checks it exists for the others, and mints the token.
    async fn grant(
        &self,
        alias: &str,
        identity: &str,
        user_id: &str,
        full_access: bool,
    ) -> Result<TokenResponse, AuthError> {
        {
            let rooms = &self.rooms;
            if full_access {
                match rooms.create(alias, RoomOptions::MATRIX_RTC).await {
                    Ok(CreateOutcome::Created) => {
                        tracing::info!(room = alias, user_id, "room created")
                    }
                    Ok(CreateOutcome::Reused) => {
                        tracing::debug!(room = alias, user_id, "room reused")
                    }
                    Err(error) => {
                        tracing::warn!(room = alias, %error, "cannot create room");
                        return Err(AuthError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "M_UNKNOWN",
                            "Unable to create room on SFU",
                        ));
                    }
                }
            } else if !rooms.exists(alias).await {
                tracing::info!(
                    room = alias,
                    user_id,
                    "token refused: room not started by a full-access user"
                );
                return Err(AuthError::new(
                    StatusCode::FORBIDDEN,
                    "M_FORBIDDEN",
                    "This call has not been started on this SFU: only users of its own homeserver can start calls here",
                ));
            }
        }
        let video = VideoGrant {
            room_join: true,
            room: alias.to_owned(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_update_own_metadata: Some(true),
            ..VideoGrant::default()
        };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let jwt = token::mint(
            &self.config.api_key,
            &self.config.api_secret,
            identity,
            video,
            TOKEN_TTL,
            now_unix,
        )
        .map_err(|error| {
            tracing::error!(%error, "cannot sign a LiveKit token");
            AuthError::INTERNAL
        })?;
        tracing::info!(room = alias, user_id, identity, full_access, "token issued");
        Ok(TokenResponse {
            url: self.public_url().as_str().to_owned(),
            jwt,
        })
    }
}

/// The body must be one JSON object (serde would also build a struct from an array).
fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AuthError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value @ serde_json::Value::Object(_)) => {
            serde_json::from_value(value).map_err(|_| AuthError::NOT_JSON)
        }
        _ => Err(AuthError::NOT_JSON),
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// `delay_id` and a positive `delay_timeout` (milliseconds) come together or not at all.
fn check_delay_pair(delay: &DelayParams) -> Result<Option<(Secret, Duration)>, AuthError> {
    let id = delay.delay_id.as_deref().filter(|id| !id.is_empty());
    let timeout = delay.delay_timeout.filter(|t| *t > 0);
    match (id, timeout) {
        (Some(id), Some(ms)) => Ok(Some((Secret::new(id), Duration::from_millis(ms as u64)))),
        (None, None) => Ok(None),
        _ => Err(AuthError::MISSING_DELAY),
    }
}

#[cfg(test)]
mod tests;
