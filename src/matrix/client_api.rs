//! A homeserver's client-server API, as far as the delayed-leave delegation needs it: where it
//! is (`/.well-known/matrix/client`, as lk-jwt-service resolves it) and MSC4140's
//! unauthenticated `restart` / `send` of a delayed event.
//!
//! The delay id authorises those actions on its own, so it is a [`Secret`]: it goes into the
//! request path only, and no error or log line built here contains a path.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Uri};
use serde::Deserialize;

use super::{
    AddressPolicy, Endpoint, FederationClient, Host, ServerName, USERINFO_TIMEOUT, UserInfoError,
    percent_encode,
};
use crate::secret::Secret;

/// The base URL of a homeserver's client-server API, e.g. `https://matrix.example.org` or
/// `https://example.org/matrix` (a path prefix is kept; a trailing slash is not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientApiUrl {
    tls: bool,
    endpoint: Endpoint,
    prefix: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{url}' is not a usable client API URL: {reason}")]
pub struct InvalidClientApiUrl {
    url: String,
    reason: &'static str,
}

impl ClientApiUrl {
    /// Parses `http(s)://host[:port][/prefix]`; no query, fragment or user info.
    pub fn parse(raw: &str) -> Result<Self, InvalidClientApiUrl> {
        let invalid = |reason| InvalidClientApiUrl {
            url: raw.chars().take(300).collect(),
            reason,
        };
        let uri: Uri = raw.trim().parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("it must start with https:// or http://")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not allowed"));
        }
        if uri.query().is_some() || raw.contains('#') {
            return Err(invalid("a query or fragment is not allowed"));
        }
        let name = ServerName::parse(authority.as_str()).map_err(|_| invalid("invalid host"))?;
        let port = name.port().unwrap_or(if tls { 443 } else { 80 });
        let endpoint = Endpoint {
            host: name.host().clone(),
            port,
            tls_name: name.tls_name(),
            host_header: name.as_str().to_owned(),
        };
        Ok(ClientApiUrl {
            tls,
            endpoint,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The URL as it is stored and parsed again (`scheme://authority[/prefix]`).
    pub fn as_string(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.endpoint.host_header, self.prefix)
    }

    fn is_ip_literal(&self) -> bool {
        matches!(self.endpoint.host, Host::Ip(_))
    }
}

/// What rtcbox asks a homeserver to do with a delayed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayedEventAction {
    /// Start the event's delay again.
    Restart,
    /// Send the event now.
    Send,
}

impl DelayedEventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DelayedEventAction::Restart => "restart",
            DelayedEventAction::Send => "send",
        }
    }
}

/// How a homeserver answered a delayed-event action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayedEventAnswer {
    /// 2xx: done.
    Done,
    /// 404: no such delayed event (already sent, cancelled, or it never existed).
    NotFound,
    /// 429, with the wait the homeserver asked for, if any.
    RateLimited(Option<Duration>),
    /// Another status: worth another try later.
    Failed(u16),
}

impl FederationClient {
    /// Where `server_name`'s client-server API is: `m.homeserver.base_url` of
    /// `https://<server_name>/.well-known/matrix/client`, or `https://<server_name>` when the
    /// homeserver publishes none (404). Addresses are checked against `policy` as for the
    /// OpenID check. Bounded by [`USERINFO_TIMEOUT`].
    pub async fn client_api(
        &self,
        server_name: &str,
        policy: AddressPolicy,
    ) -> Result<ClientApiUrl, UserInfoError> {
        let name = ServerName::parse(server_name)?;
        if policy == AddressPolicy::PublicOnly && matches!(name.host(), Host::Ip(_)) {
            return Err(UserInfoError::IpLiteral(name.to_string()));
        }
        let endpoint = Endpoint {
            host: name.host().clone(),
            port: name.port().unwrap_or(443),
            tls_name: name.tls_name(),
            host_header: name.as_str().to_owned(),
        };
        let reply = tokio::time::timeout(
            USERINFO_TIMEOUT,
            self.exchange(
                &endpoint,
                true,
                Method::GET,
                "/.well-known/matrix/client",
                None,
                policy,
            ),
        )
        .await
        .map_err(|_| UserInfoError::Timeout)??;
        match reply.status {
            200 => parse_client_well_known(&reply.body),
            404 => ClientApiUrl::parse(&format!("https://{}", name.as_str()))
                .map_err(|e| UserInfoError::BadResponse(e.to_string())),
            status => Err(UserInfoError::Status(status)),
        }
    }

    /// `POST {api}/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delay_id}/{action}`
    /// with `{}` and no authentication (Synapse ≥ 1.143). Bounded by [`USERINFO_TIMEOUT`]. Errors
    /// never contain the path (the delay id is a secret).
    pub async fn delayed_event(
        &self,
        api: &ClientApiUrl,
        delay_id: &Secret,
        action: DelayedEventAction,
        policy: AddressPolicy,
    ) -> Result<DelayedEventAnswer, UserInfoError> {
        if policy == AddressPolicy::PublicOnly && api.is_ip_literal() {
            return Err(UserInfoError::IpLiteral(api.endpoint.host.to_string()));
        }
        let path = format!(
            "{}/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{}/{}",
            api.prefix,
            percent_encode(delay_id.expose()),
            action.as_str()
        );
        let reply = tokio::time::timeout(
            USERINFO_TIMEOUT,
            self.exchange(
                &api.endpoint,
                api.tls,
                Method::POST,
                &path,
                Some(Bytes::from_static(b"{}")),
                policy,
            ),
        )
        .await
        .map_err(|_| UserInfoError::Timeout)??;
        Ok(classify(reply.status, reply.retry_after, &reply.body))
    }
}

/// A delayed-event answer by status; a 429's wait from `Retry-After` or `retry_after_ms`.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> DelayedEventAnswer {
    match status {
        200..=299 => DelayedEventAnswer::Done,
        404 => DelayedEventAnswer::NotFound,
        429 => {
            #[derive(Deserialize)]
            struct Limited {
                retry_after_ms: Option<u64>,
            }
            let from_body = serde_json::from_slice::<Limited>(body)
                .ok()
                .and_then(|l| l.retry_after_ms)
                .map(Duration::from_millis);
            DelayedEventAnswer::RateLimited(retry_after.or(from_body))
        }
        other => DelayedEventAnswer::Failed(other),
    }
}

/// `{"m.homeserver": {"base_url": "https://…"}}` → the client API URL.
pub fn parse_client_well_known(body: &[u8]) -> Result<ClientApiUrl, UserInfoError> {
    #[derive(Deserialize)]
    struct WellKnown {
        #[serde(rename = "m.homeserver")]
        homeserver: Homeserver,
    }
    #[derive(Deserialize)]
    struct Homeserver {
        base_url: String,
    }
    let parsed: WellKnown = serde_json::from_slice(body).map_err(|e| {
        UserInfoError::BadResponse(format!(
            "/.well-known/matrix/client has no m.homeserver.base_url: {e}"
        ))
    })?;
    ClientApiUrl::parse(&parsed.homeserver.base_url)
        .map_err(|e| UserInfoError::BadResponse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_api_urls() {
        let check = |raw: &str| ClientApiUrl::parse(raw).map(|u| u.as_string());
        assert_eq!(
            check("https://matrix.example.org").as_deref(),
            Ok("https://matrix.example.org")
        );
        assert_eq!(
            check("https://matrix.example.org/").as_deref(),
            Ok("https://matrix.example.org")
        );
        assert_eq!(
            check("https://example.org:8448/matrix/").as_deref(),
            Ok("https://example.org:8448/matrix")
        );
        assert_eq!(
            check("http://[::1]:8008").as_deref(),
            Ok("http://[::1]:8008")
        );
        let url = ClientApiUrl::parse("https://example.org:8448/m").unwrap();
        assert_eq!(url.endpoint.port, 8448);
        assert_eq!(url.endpoint.tls_name, "example.org");
        assert_eq!(ClientApiUrl::parse(&url.as_string()), Ok(url));
        for bad in [
            "",
            "matrix.example.org",
            "ftp://example.org",
            "https://user@example.org",
            "https://example.org/?a=b",
            "https://example.org/#x",
            "https://exa mple.org",
        ] {
            assert!(ClientApiUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_well_known() {
        let check = |body: &str| parse_client_well_known(body.as_bytes()).map(|u| u.as_string());
        assert_eq!(
            check(r#"{"m.homeserver":{"base_url":"https://matrix.example.org/"},"x":1}"#).unwrap(),
            "https://matrix.example.org"
        );
        for bad in [
            "{}",
            r#"{"m.homeserver":{}}"#,
            r#"{"m.homeserver":{"base_url":"matrix.example.org"}}"#,
            "<html>",
        ] {
            assert!(
                matches!(check(bad), Err(UserInfoError::BadResponse(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn answers() {
        let check = |status, header: Option<u64>, body: &str| {
            classify(status, header.map(Duration::from_secs), body.as_bytes())
        };
        assert_eq!(check(200, None, "{}"), DelayedEventAnswer::Done);
        assert_eq!(check(404, None, "{}"), DelayedEventAnswer::NotFound);
        assert_eq!(
            check(429, Some(3), r#"{"retry_after_ms":100}"#),
            DelayedEventAnswer::RateLimited(Some(Duration::from_secs(3)))
        );
        assert_eq!(
            check(
                429,
                None,
                r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#
            ),
            DelayedEventAnswer::RateLimited(Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            check(429, None, "garbage"),
            DelayedEventAnswer::RateLimited(None)
        );
        assert_eq!(check(502, None, ""), DelayedEventAnswer::Failed(502));
        assert_eq!(check(400, None, ""), DelayedEventAnswer::Failed(400));
    }
}
