//! The wizard's small HTTP(S) client: it looks at the deployment from outside, as a Matrix client
//! or a browser would.
//!
//! One request per connection, HTTP/1.1. TLS is always verified, against the same trust store as
//! the federation client (system roots plus `RTCBOX_MATRIX_CA_FILE`); there is no switch to turn
//! that off. Each exchange has [`FETCH_TIMEOUT`] in all and reads at most [`MAX_BODY_BYTES`];
//! redirects are reported (a 3xx status with its `Location`), never followed. Any address may be
//! reached, loopback and LAN included: the URLs come from the admin's own settings, and this
//! client serves the authenticated admin panel only, never a request from the internet.
//!
//! Error messages never contain a URL's query (where access tokens travel).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, Uri, header};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Either, Empty, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName as TlsServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The whole exchange: resolving, connecting, TLS, request, response and body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// One TCP connect attempt (a name may resolve to several addresses).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A response: status, headers and the (capped) body.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    /// The first value of header `name`, if it is present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name` (a proxy may add a second copy of a header).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body as a JSON object, or why it is not one.
    pub fn json_object(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Err("the body is JSON but not an object".into()),
            Err(e) => Err(format!("the body is not valid JSON ({e})")),
        }
    }

    /// The start of the body as text, for messages.
    pub fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(120) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_owned(),
        }
    }
}

/// Why there is no response. Each message says what failed in words an admin can act on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    #[error("'{url}' is not a usable URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the request cannot be built: {0}")]
    BadRequest(String),
    #[error("the name {host} cannot be resolved: {reason}")]
    Dns { host: String, reason: String },
    #[error(
        "{addr} refused the connection: nothing listens on port {} there, or a firewall rejects it",
        addr.port()
    )]
    Refused { addr: SocketAddr },
    #[error(
        "connecting to {addr} timed out: a firewall drops the packets, the port is not forwarded, or the address is wrong"
    )]
    ConnectTimeout { addr: SocketAddr },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("the certificate for {host} is not trusted: {reason}")]
    Certificate { host: String, reason: String },
    #[error("the TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("the HTTP exchange with {host} failed: {reason}")]
    Http { host: String, reason: String },
    #[error("no complete answer from {url} within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("the answer from {url} is larger than {} KiB", MAX_BODY_BYTES / 1024)]
    TooLarge { url: String },
}

/// HTTP(S) GETs and WebSocket upgrade probes. Cheap to share; `Send + Sync`.
#[derive(Clone)]
pub struct HttpClient {
    tls: tokio_rustls::TlsConnector,
}

impl HttpClient {
    /// A client trusting the system's roots plus those in `extra_ca_file` (PEM).
    pub fn new(extra_ca_file: Option<&Path>) -> anyhow::Result<Self> {
        Ok(Self::with_tls_config(crate::matrix::tls_client_config(
            extra_ca_file,
        )?))
    }

    /// A client using `config` (from [`crate::matrix::tls_client_config`]).
    pub fn with_tls_config(config: Arc<rustls::ClientConfig>) -> Self {
        HttpClient {
            tls: tokio_rustls::TlsConnector::from(config),
        }
    }

    /// The TLS connector with this client's trust store, for other TLS probes of the deployment
    /// (TURN over TLS).
    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        self.tls.clone()
    }

    /// GET `url` (`http://` or `https://`) with extra `headers`.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Fetched, FetchError> {
        self.request(Method::GET, url, headers).await
    }

    /// Any bodiless request, e.g. an OPTIONS preflight.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Fetched, FetchError> {
        let target = Target::parse(url, false)?;
        let shown = target.shown();
        tokio::time::timeout(
            FETCH_TIMEOUT,
            self.exchange(&target, method, headers, false),
        )
        .await
        .map_err(|_| FetchError::Timeout { url: shown })?
    }

    /// A request with a body (`Content-Type` among `headers`), e.g. ACME's signed POSTs.
    pub async fn request_with_body(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Fetched, FetchError> {
        let target = Target::parse(url, false)?;
        let shown = target.shown();
        tokio::time::timeout(
            FETCH_TIMEOUT,
            self.exchange_with_body(&target, method, headers, false, Some(body)),
        )
        .await
        .map_err(|_| FetchError::Timeout { url: shown })?
    }

    /// Sends a WebSocket upgrade request to `url` (`ws://` or `wss://`) and returns the status:
    /// 101 means every proxy on the way passed the upgrade. The connection is dropped at once.
    pub async fn websocket_probe(&self, url: &str) -> Result<u16, FetchError> {
        self.websocket_handshake(url).await.map(|f| f.status)
    }

    /// As [`HttpClient::websocket_probe`], with the headers and, when the upgrade was refused,
    /// the body (which often says who refused it).
    pub async fn websocket_handshake(&self, url: &str) -> Result<Fetched, FetchError> {
        let target = Target::parse(url, true)?;
        let shown = target.shown();
        let mut key = [0u8; 16];
        getrandom::fill(&mut key)
            .map_err(|e| FetchError::BadRequest(format!("no random WebSocket key: {e}")))?;
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let headers = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", key.as_str()),
        ];
        tokio::time::timeout(
            FETCH_TIMEOUT,
            self.exchange(&target, Method::GET, &headers, true),
        )
        .await
        .map_err(|_| FetchError::Timeout { url: shown })?
    }

    async fn exchange(
        &self,
        target: &Target,
        method: Method,
        headers: &[(&str, &str)],
        upgrade: bool,
    ) -> Result<Fetched, FetchError> {
        self.exchange_with_body(target, method, headers, upgrade, None)
            .await
    }

    async fn exchange_with_body(
        &self,
        target: &Target,
        method: Method,
        headers: &[(&str, &str)],
        upgrade: bool,
        body: Option<Bytes>,
    ) -> Result<Fetched, FetchError> {
        let mut request = Request::builder()
            .method(method)
            .uri(&target.path_and_query)
            .header(header::HOST, &target.authority)
            .header(
                header::USER_AGENT,
                concat!("rtcbox-setup-check/", env!("CARGO_PKG_VERSION")),
            );
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
        {
            request = request.header(header::ACCEPT, "*/*");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(bytes) => Either::Left(Full::new(bytes)),
            None => Either::Right(Empty::<Bytes>::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| FetchError::BadRequest(e.to_string()))?;

        let tcp = connect(target).await?;
        if !target.tls {
            return send(tcp, request, target, upgrade).await;
        }
        let tls_name =
            TlsServerName::try_from(target.host.clone()).map_err(|e| FetchError::BadUrl {
                url: target.shown(),
                reason: format!("not a valid TLS server name: {e}"),
            })?;
        let tls = self
            .tls
            .connect(tls_name, tcp)
            .await
            .map_err(|e| tls_error(&target.host, e))?;
        send(tls, request, target, upgrade).await
    }
}

/// A request's body: a bodiless GET, or bytes (ACME's POSTs).
type RequestBody = Either<Full<Bytes>, Empty<Bytes>>;

/// A parsed URL: where to connect and what to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    scheme: String,
    /// DNS name or IP literal, IPv6 without brackets.
    host: String,
    port: u16,
    /// As written in the URL, for the Host header.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str, websocket: bool) -> Result<Target, FetchError> {
        let bad = |reason: &str| FetchError::BadUrl {
            url: without_query(url),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("it cannot be parsed"))?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        let tls = match (scheme.as_str(), websocket) {
            ("https", false) | ("wss", true) => true,
            ("http", false) | ("ws", true) => false,
            (_, false) => return Err(bad("it must start with https:// or http://")),
            (_, true) => return Err(bad("it must start with wss:// or ws://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("it has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user names and passwords in URLs are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("it has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_owned();
        Ok(Target {
            tls,
            scheme,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }

    /// The URL without its query, for messages.
    fn shown(&self) -> String {
        let path = self
            .path_and_query
            .split('?')
            .next()
            .unwrap_or(&self.path_and_query);
        format!("{}://{}{}", self.scheme, self.authority, path)
    }
}

fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).trim().to_owned()
}

async fn connect(target: &Target) -> Result<TcpStream, FetchError> {
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => crate::net::dns::lookup(&target.host, target.port)
            .await
            .map_err(|reason| FetchError::Dns {
                host: target.host.clone(),
                reason,
            })?,
    };
    let mut last = None;
    for addr in addrs {
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                FetchError::Refused { addr }
            }
            Ok(Err(e)) => FetchError::Connect {
                addr,
                reason: crate::net::explain::io_error(&e),
            },
            Err(_) => FetchError::ConnectTimeout { addr },
        };
        last = Some(error);
    }
    Err(last.unwrap_or_else(|| FetchError::Dns {
        host: target.host.clone(),
        reason: "it has no address".into(),
    }))
}

/// One request on a fresh connection; the body is read unless the upgrade succeeded.
async fn send<S>(
    io: S,
    request: Request<RequestBody>,
    target: &Target,
    upgrade: bool,
) -> Result<Fetched, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |e: hyper::Error| FetchError::Http {
        host: target.host.clone(),
        reason: e.to_string(),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_error)?;
    let driver = tokio::spawn(async move {
        // Errors surface through `send_request`; the driver only has to run.
        let _ = connection.with_upgrades().await;
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status().as_u16();
        if upgrade && status == 101 {
            let (parts, _) = response.into_parts();
            return Ok(Fetched {
                status,
                headers: parts.headers,
                body: Bytes::new(),
            });
        }
        read_body(response, target).await
    }
    .await;
    driver.abort();
    result
}

async fn read_body(
    response: hyper::Response<Incoming>,
    target: &Target,
) -> Result<Fetched, FetchError> {
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                FetchError::TooLarge {
                    url: target.shown(),
                }
            } else {
                FetchError::Http {
                    host: target.host.clone(),
                    reason: format!("reading the body: {e}"),
                }
            }
        })?
        .to_bytes();
    Ok(Fetched {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Certificate problems get their own message: they are the ones an admin fixes.
pub(crate) fn tls_error(host: &str, error: std::io::Error) -> FetchError {
    let host = host.to_owned();
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(problem)) => FetchError::Certificate {
            reason: describe_certificate_problem(problem),
            host,
        },
        Some(rustls::Error::InvalidMessage(_)) => FetchError::Tls {
            host,
            reason: "the answer is not TLS: this port probably serves plain HTTP".into(),
        },
        Some(other) => FetchError::Tls {
            host,
            reason: other.to_string(),
        },
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => FetchError::Tls {
            host,
            reason: "the server closed the connection during the handshake".into(),
        },
        None => FetchError::Tls {
            host,
            reason: error.to_string(),
        },
    }
}

fn describe_certificate_problem(problem: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match problem {
        E::UnknownIssuer => "it is issued by an unknown authority (self-signed, or a private CA): \
            use a certificate from a public CA such as Let's Encrypt, or add your CA to \
            RTCBOX_MATRIX_CA_FILE"
            .into(),
        E::NotValidForName => "it is not valid for this name".into(),
        E::NotValidForNameContext { presented, .. } => {
            let names: Vec<&str> = presented.iter().map(|n| bare_name(n)).collect();
            format!("it is valid only for {}", names.join(", "))
        }
        E::Expired | E::ExpiredContext { .. } => "it has expired: renew it".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => {
            "it is not valid yet (is this machine's clock right?)".into()
        }
        E::Revoked => "it has been revoked".into(),
        other => rustls::Error::InvalidCertificate(other.clone()).to_string(),
    }
}

/// rustls reports presented names as `DnsName("x")` / `IpAddress(…)`; the admin wants `x`.
fn bare_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((_, rest)) => rest.trim_end_matches(')').trim_matches('"'),
        None => presented,
    }
}

#[cfg(test)]
pub(crate) mod testcert;
#[cfg(test)]
mod tests;
