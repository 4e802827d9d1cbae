//! The Matrix federation client: server discovery and the OpenID `userinfo` check.
//!
//! Every outgoing connection goes through [`FederationClient::https_get`], which enforces the
//! limits in one place: TLS always verified (system roots plus `RTCBOX_MATRIX_CA_FILE`), resolved
//! addresses checked against the [`AddressPolicy`], connect timeout, response size cap.

mod client_api;
mod discovery;
mod server_name;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::{Method, Request, header};
use http_body_util::{BodyExt as _, Either, Empty, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName as TlsServerName};
use serde::Deserialize;
use tokio::net::TcpStream;

pub use client_api::{
    ClientApiUrl, DelayedEventAction, DelayedEventAnswer, classify, parse_client_well_known,
};
pub use discovery::{DEFAULT_FEDERATION_PORT, Endpoint, Lookup, SrvRecord, discover};
pub use server_name::{Host, InvalidServerName, ServerName};

use crate::secret::Secret;

/// The whole OpenID check, discovery included, must finish within this.
pub const USERINFO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read from a homeserver.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// One TCP connect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The `.well-known/matrix/server` step, so a slow web server cannot eat the whole budget.
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(2);
const WELL_KNOWN_TTL: Duration = Duration::from_secs(3600);
const WELL_KNOWN_NEGATIVE_TTL: Duration = Duration::from_secs(300);
const WELL_KNOWN_CACHE_MAX: usize = 10_000;

/// Which addresses a lookup may connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Only globally routable addresses, and no IP-literal server names: the default for any
    /// homeserver named by a request from the internet.
    PublicOnly,
    /// Also loopback, LAN and other private ranges: for configured full-access homeservers (a NAS
    /// reaching its own Synapse on the LAN) or when the operator set the dangerous override.
    AllowPrivate,
}

/// Why an OpenID token could not be confirmed. Logged; never shown to the client in detail.
#[derive(Debug, thiserror::Error)]
pub enum UserInfoError {
    #[error(transparent)]
    InvalidServerName(#[from] InvalidServerName),
    #[error("server name '{0}' is an IP address; only full-access homeservers may be named by IP")]
    IpLiteral(String),
    #[error("'{host}' resolves to {ip}, a non-public address; only full-access homeservers may")]
    PrivateAddress { host: String, ip: IpAddr },
    #[error("could not reach the homeserver at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the homeserver answered HTTP {0}")]
    Status(u16),
    #[error("the homeserver's userinfo answer is invalid: {0}")]
    BadResponse(String),
    #[error("the token belongs to '{sub}', not to a user of '{expected}'")]
    ServerMismatch { sub: String, expected: String },
    #[error("no answer within {} s", USERINFO_TIMEOUT.as_secs())]
    Timeout,
    #[error("the homeserver's version answer is invalid: {0}")]
    BadVersion(String),
}

/// What a homeserver says it runs (`/_matrix/federation/v1/version`), e.g. Synapse 1.163.2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSoftware {
    pub name: String,
    pub version: String,
}

/// Talks to other Matrix servers over federation. Cheap to share (`Arc`); one per process.
pub struct FederationClient {
    tls: tokio_rustls::TlsConnector,
    dns: hickory_resolver::TokioResolver,
    /// False when the system has no resolv.conf: only /etc/hosts names resolve, no SRV.
    dns_configured: bool,
    well_known_cache: Mutex<HashMap<String, (Instant, Option<ServerName>)>>,
}

impl FederationClient {
    /// A client trusting the system's root certificates plus those in `extra_ca_file` (PEM).
    pub fn new(extra_ca_file: Option<&Path>) -> anyhow::Result<Self> {
        Ok(Self::with_tls_config(tls_client_config(extra_ca_file)?))
    }

    /// A client using `config` (from [`tls_client_config`]) for every connection.
    pub fn with_tls_config(config: Arc<rustls::ClientConfig>) -> Self {
        let (dns, dns_configured) = crate::net::dns::system_resolver();
        if !dns_configured {
            tracing::warn!(
                "no DNS configuration (/etc/resolv.conf); SRV discovery of homeservers is off"
            );
        }

        FederationClient {
            tls: tokio_rustls::TlsConnector::from(config),
            dns,
            dns_configured,
            well_known_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Confirms an OpenID access token with the homeserver of `server_name` and returns the
    /// user ID it belongs to, which is guaranteed to be on `server_name`.
    pub async fn userinfo(
        &self,
        server_name: &str,
        access_token: &Secret,
        policy: AddressPolicy,
    ) -> Result<String, UserInfoError> {
        let name = ServerName::parse(server_name)?;
        tokio::time::timeout(
            USERINFO_TIMEOUT,
            self.userinfo_inner(&name, access_token, policy),
        )
        .await
        .map_err(|_| UserInfoError::Timeout)?
    }

    async fn userinfo_inner(
        &self,
        name: &ServerName,
        access_token: &Secret,
        policy: AddressPolicy,
    ) -> Result<String, UserInfoError> {
        if policy == AddressPolicy::PublicOnly && matches!(name.host(), Host::Ip(_)) {
            return Err(UserInfoError::IpLiteral(name.to_string()));
        }
        let path = format!(
            "/_matrix/federation/v1/openid/userinfo?access_token={}",
            percent_encode(access_token.expose())
        );
        let body = self.federation_get(name, &path, policy).await?;
        parse_userinfo(&body, name.as_str())
    }

    /// Asks `server_name`'s homeserver what it runs (`GET /_matrix/federation/v1/version`),
    /// found through federation discovery. Private addresses are allowed: the setup wizard asks
    /// about the admin's own homeserver, which is often on the LAN. Bounded by
    /// [`USERINFO_TIMEOUT`].
    pub async fn server_version(&self, server_name: &str) -> Result<ServerSoftware, UserInfoError> {
        let name = ServerName::parse(server_name)?;
        tokio::time::timeout(USERINFO_TIMEOUT, self.server_version_inner(&name))
            .await
            .map_err(|_| UserInfoError::Timeout)?
    }

    async fn server_version_inner(
        &self,
        name: &ServerName,
    ) -> Result<ServerSoftware, UserInfoError> {
        let body = self
            .federation_get(
                name,
                "/_matrix/federation/v1/version",
                AddressPolicy::AllowPrivate,
            )
            .await?;
        parse_server_version(&body)
    }

    /// GET `path` from the homeserver of `name`, found by federation discovery: the body of the
    /// first endpoint that answers 200. Another status ends the search (the server answered);
    /// a connection failure tries the next endpoint, a refused private address does not.
    async fn federation_get(
        &self,
        name: &ServerName,
        path: &str,
        policy: AddressPolicy,
    ) -> Result<Bytes, UserInfoError> {
        let endpoints = discover(
            name,
            &LiveLookup {
                client: self,
                policy,
            },
        )
        .await;
        let mut last_error = None;
        for endpoint in &endpoints {
            match self.https_get(endpoint, path, policy).await {
                Ok((200, body)) => return Ok(body),
                Ok((status, _)) => return Err(UserInfoError::Status(status)),
                // A refused private address is a policy decision: do not try further endpoints.
                Err(error @ UserInfoError::PrivateAddress { .. }) => return Err(error),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("discover returns at least one endpoint"))
    }

    /// GET `path` over HTTPS from `endpoint`: verified TLS, addresses checked against `policy`,
    /// body capped at [`MAX_RESPONSE_BYTES`]. Returns the status and body.
    async fn https_get(
        &self,
        endpoint: &Endpoint,
        path: &str,
        policy: AddressPolicy,
    ) -> Result<(u16, Bytes), UserInfoError> {
        self.exchange(endpoint, true, Method::GET, path, None, policy)
            .await
            .map(|reply| (reply.status, reply.body))
    }

    /// One request to `endpoint` (over verified TLS when `tls`), its addresses checked against
    /// `policy`; a `body` is sent as JSON. The one place every outgoing request to a homeserver
    /// passes. The body of the answer is capped at [`MAX_RESPONSE_BYTES`].
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        tls: bool,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        policy: AddressPolicy,
    ) -> Result<Reply, UserInfoError> {
        let shown = format!("{}:{}", endpoint.host, endpoint.port);
        let unreachable = |reason: String| UserInfoError::Unreachable {
            endpoint: shown.clone(),
            reason,
        };

        let addrs = self
            .resolve(&endpoint.host, endpoint.port)
            .await
            .map_err(unreachable)?;
        let refused = addrs.iter().find(|a| !crate::net::is_public(a.ip()));
        if let (AddressPolicy::PublicOnly, Some(bad)) = (policy, refused) {
            return Err(UserInfoError::PrivateAddress {
                host: endpoint.host.to_string(),
                ip: bad.ip(),
            });
        }
        let tcp = connect_any(&addrs).await.map_err(unreachable)?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &endpoint.host_header)
            .header(
                header::USER_AGENT,
                concat!("rtcbox/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json");
        let body = match body {
            Some(bytes) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Either::Left(Full::new(bytes))
            }
            None => Either::Right(Empty::<Bytes>::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| unreachable(format!("request: {e}")))?;
        if !tls {
            return send(TokioIo::new(tcp), request, &unreachable).await;
        }
        let tls_name = TlsServerName::try_from(endpoint.tls_name.clone())
            .map_err(|e| unreachable(format!("invalid TLS name: {e}")))?;
        let stream = self
            .tls
            .connect(tls_name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        send(TokioIo::new(stream), request, &unreachable).await
    }

    async fn fetch_well_known(&self, host: &str, policy: AddressPolicy) -> Option<ServerName> {
        let now = Instant::now();
        let cached = self
            .well_known_cache
            .lock()
            .expect("cache lock")
            .get(host)
            .cloned();
        if let Some((_, delegated)) = cached.filter(|(expires, _)| *expires > now) {
            return delegated;
        }
        let endpoint = Endpoint {
            host: Host::Dns(host.to_owned()),
            port: 443,
            tls_name: host.to_owned(),
            host_header: host.to_owned(),
        };
        let fetched = tokio::time::timeout(
            WELL_KNOWN_TIMEOUT,
            self.https_get(&endpoint, "/.well-known/matrix/server", policy),
        )
        .await;
        let delegated = match fetched {
            Ok(Ok((200, body))) => parse_well_known(&body),
            Ok(Ok((status, _))) => {
                tracing::debug!(host, status, "no .well-known/matrix/server");
                None
            }
            Ok(Err(error)) => {
                tracing::debug!(host, %error, "no .well-known/matrix/server");
                None
            }
            Err(_) => None,
        };
        let ttl = if delegated.is_some() {
            WELL_KNOWN_TTL
        } else {
            WELL_KNOWN_NEGATIVE_TTL
        };
        let mut cache = self.well_known_cache.lock().expect("cache lock");
        if cache.len() >= WELL_KNOWN_CACHE_MAX {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= WELL_KNOWN_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(host.to_owned(), (now + ttl, delegated.clone()));
        delegated
    }

    async fn srv_records(&self, name: &str) -> Vec<SrvRecord> {
        if !self.dns_configured {
            return Vec::new();
        }
        match self.dns.srv_lookup(name).await {
            Ok(lookup) => lookup
                .iter()
                .map(|srv| SrvRecord {
                    priority: srv.priority(),
                    weight: srv.weight(),
                    target: srv.target().to_utf8(),
                    port: srv.port(),
                })
                .collect(),
            Err(error) => {
                tracing::debug!(name, %error, "no SRV records");
                Vec::new()
            }
        }
    }

    async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, String> {
        match host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Dns(name) => {
                crate::net::dns::lookup_with(&self.dns, self.dns_configured, name, port)
                    .await
                    .map_err(|e| format!("cannot resolve {name}: {e}"))
            }
        }
    }
}

/// The TLS client configuration every outgoing HTTPS connection uses: the system's root
/// certificates (or, where the system has none, the Mozilla roots built into the binary) plus those in `extra_ca_file` (PEM, `RTCBOX_MATRIX_CA_FILE`), HTTP/1.1 by ALPN.
/// Verification cannot be turned off.
pub fn tls_client_config(
    extra_ca_file: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    tls_client_config_with(extra_ca_file, "RTCBOX_MATRIX_CA_FILE")
}

/// The roots browsers and rtcbox's clients trust: the system's root certificates, or, where
/// the system has none (a scratch image, an empty root), the Mozilla roots compiled into the
/// binary, so public certificates still verify.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::debug!("no system root certificates; using the built-in Mozilla roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// As [`tls_client_config`], with the extra roots from the file of `setting` (named in errors),
/// e.g. `RTCBOX_ACME_CA_FILE`.
pub fn tls_client_config_with(
    extra_ca_file: Option<&Path>,
    setting: &str,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = system_roots();
    if let Some(path) = extra_ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read {setting} '{}'", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{setting} '{}' is not valid PEM", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{setting} '{}' holds no certificate", path.display());
        }
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!(
                    "{setting} '{}' holds an unusable certificate",
                    path.display()
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Discovery's questions answered over the network, under the same address policy.
struct LiveLookup<'a> {
    client: &'a FederationClient,
    policy: AddressPolicy,
}

impl Lookup for LiveLookup<'_> {
    async fn well_known(&self, host: &str) -> Option<ServerName> {
        self.client.fetch_well_known(host, self.policy).await
    }
    async fn srv(&self, name: &str) -> Vec<SrvRecord> {
        self.client.srv_records(name).await
    }
}

/// `{"sub": "@user:server"}` → the user ID, which must be on `expected_server`.
pub fn parse_userinfo(body: &[u8], expected_server: &str) -> Result<String, UserInfoError> {
    #[derive(Deserialize)]
    struct UserInfo {
        sub: String,
    }
    let info: UserInfo = serde_json::from_slice(body)
        .map_err(|e| UserInfoError::BadResponse(format!("not {{\"sub\": …}}: {e}")))?;
    let server = info
        .sub
        .strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .filter(|(localpart, server)| !localpart.is_empty() && !server.is_empty())
        .map(|(_, server)| server)
        .ok_or_else(|| UserInfoError::BadResponse(format!("'{}' is not a user ID", info.sub)))?;
    if server != expected_server {
        return Err(UserInfoError::ServerMismatch {
            sub: info.sub,
            expected: expected_server.to_owned(),
        });
    }
    Ok(info.sub)
}

/// `{"server": {"name": "Synapse", "version": "1.163.2"}}` → the software and its version.
pub fn parse_server_version(body: &[u8]) -> Result<ServerSoftware, UserInfoError> {
    #[derive(Deserialize)]
    struct Version {
        server: Server,
    }
    #[derive(Deserialize)]
    struct Server {
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: String,
    }
    let parsed: Version = serde_json::from_slice(body).map_err(|e| {
        UserInfoError::BadVersion(format!(
            "not {{\"server\": {{\"name\", \"version\"}}}}: {e}"
        ))
    })?;
    if parsed.server.name.is_empty() && parsed.server.version.is_empty() {
        return Err(UserInfoError::BadVersion("no name and no version".into()));
    }
    Ok(ServerSoftware {
        name: parsed.server.name,
        version: parsed.server.version,
    })
}

/// `{"m.server": "host[:port]"}` → the delegated server name.
pub fn parse_well_known(body: &[u8]) -> Option<ServerName> {
    #[derive(Deserialize)]
    struct WellKnown {
        #[serde(rename = "m.server")]
        server: String,
    }
    let parsed: WellKnown = serde_json::from_slice(body).ok()?;
    ServerName::parse(&parsed.server).ok()
}

/// Sends `request` on a fresh HTTP/1.1 connection over `io`; the status and capped body.
async fn send<I>(
    io: I,
    request: Request<RequestBody>,
    unreachable: &impl Fn(String) -> UserInfoError,
) -> Result<Reply, UserInfoError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| unreachable(format!("HTTP: {e}")))?;
    let driver = tokio::spawn(async move {
        // Errors surface through `send_request`; the driver only needs to run.
        let _ = connection.await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("HTTP: {e}")))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| UserInfoError::BadResponse(format!("body: {e}")))?
            .to_bytes();
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

/// A homeserver's answer: status, `Retry-After` in seconds if it sent one, the capped body.
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    body: Bytes,
}

type RequestBody = Either<Full<Bytes>, Empty<Bytes>>;

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: connect timed out"),
        }
    }
    Err(last)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_answers() {
        let ok = |body: &str, server: &str| parse_userinfo(body.as_bytes(), server);
        assert_eq!(
            ok(r#"{"sub":"@alice:example.org"}"#, "example.org").unwrap(),
            "@alice:example.org"
        );
        assert_eq!(
            ok(r#"{"sub":"@a:localhost:8448","x":1}"#, "localhost:8448").unwrap(),
            "@a:localhost:8448"
        );
        assert!(matches!(
            ok(r#"{"sub":"@alice:evil.example"}"#, "example.org"),
            Err(UserInfoError::ServerMismatch { .. })
        ));
        assert!(matches!(
            ok(r#"{"sub":"@alice:example.org:443"}"#, "example.org"),
            Err(UserInfoError::ServerMismatch { .. })
        ));
        for bad in [
            r#"{"sub":"alice"}"#,
            r#"{"sub":"@:example.org"}"#,
            r#"{"sub":"@alice:"}"#,
            "{}",
            "[]",
            "",
            "\u{0}",
        ] {
            assert!(
                matches!(ok(bad, "example.org"), Err(UserInfoError::BadResponse(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn well_known_answers() {
        let check = |body: &str| parse_well_known(body.as_bytes()).map(|n| n.to_string());
        assert_eq!(
            check(r#"{"m.server":"matrix.example.org:443"}"#).as_deref(),
            Some("matrix.example.org:443")
        );
        assert_eq!(check(r#"{"m.server":"https://matrix.example.org"}"#), None);
        assert_eq!(check(r#"{"m.homeserver":{}}"#), None);
        assert_eq!(check("<html>"), None);
    }

    #[test]
    fn version_answers() {
        let check = |body: &str| parse_server_version(body.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(
            check(r#"{"server":{"name":"Synapse","version":"1.163.2"}}"#),
            Ok(ServerSoftware {
                name: "Synapse".into(),
                version: "1.163.2".into()
            })
        );
        assert_eq!(
            check(r#"{"server":{"name":"conduwuit"}}"#).map(|s| s.name),
            Ok("conduwuit".into())
        );
        for bad in [r#"{"server":{}}"#, "{}", "<html>", r#"{"server":"x"}"#] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_percent_encoded() {
        assert_eq!(percent_encode("abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[tokio::test]
    async fn private_addresses_are_refused_before_connecting() {
        let client = FederationClient::new(None).unwrap();
        let token = Secret::new("token");
        let err = client
            .userinfo("127.0.0.1:1", &token, AddressPolicy::PublicOnly)
            .await
            .unwrap_err();
        assert!(matches!(err, UserInfoError::IpLiteral(_)), "{err}");
        let err = client
            .userinfo("localhost:1", &token, AddressPolicy::PublicOnly)
            .await
            .unwrap_err();
        assert!(matches!(err, UserInfoError::PrivateAddress { .. }), "{err}");
        let err = client
            .userinfo("not a name", &token, AddressPolicy::PublicOnly)
            .await
            .unwrap_err();
        assert!(matches!(err, UserInfoError::InvalidServerName(_)), "{err}");
    }

    #[tokio::test]
    async fn allowed_private_address_is_tried() {
        // Nothing listens on port 1: with private addresses allowed we get as far as connecting.
        let client = FederationClient::new(None).unwrap();
        let err = client
            .userinfo(
                "127.0.0.1:1",
                &Secret::new("token"),
                AddressPolicy::AllowPrivate,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, UserInfoError::Unreachable { .. }), "{err}");
    }
}
