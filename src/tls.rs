//! The certificates rtcbox serves itself: TURN over TLS (5349) and the public HTTPS listener
//! (which also carries TURN over TLS). Listeners hold a [`TlsCertificates`] handle whose
//! certificate is swapped while they run ([`TlsCertificates::install`]), so a new certificate
//! never needs a restart: handshakes after the swap get the new one, connections already open
//! keep theirs.
//!
//! Where the certificate comes from (`RTCBOX_TLS_MODE`):
//! - a self-signed one (rcgen) for the public host, generated once, stored in SQLite and reused;
//!   made anew when the public names change or it is near its end ([`TlsCertificates::load_or_create`]);
//! - `files`: a PEM chain and key ([`CertFiles`]), read at start and re-read by [`watch_files`]
//!   when either file changes; a bad new pair is logged and the old certificate kept;
//! - ACME installs what it obtains through the same [`TlsCertificates::install`].
//!
//! ALPN: the HTTPS listener offers [`HTTPS_ALPN`] and accepts clients that offer none (TURN
//! clients). A client that offers only `acme-tls/1` is an ACME CA validating TLS-ALPN-01
//! (RFC 8737): the HTTPS listener's resolver answers it with the challenge certificate published
//! for the SNI name in [`AlpnChallenges`] while an order waits, and refuses the handshake when
//! none is; the HTTPS front closes such a connection right after the handshake. TURN over TLS
//! (5349) never answers challenges.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sqlx::SqlitePool;

use crate::db::certificates::DEFAULT_ID;
use crate::db::unix_now;

/// A self-signed certificate lives this long.
const SELF_SIGNED_DAYS: i64 = 365;
/// It is made anew when fewer days than this are left.
const RENEW_DAYS_BEFORE: i64 = 30;
/// TLS-ALPN-01's protocol (RFC 8737): a CA validating a challenge offers it alone.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Application protocols the HTTPS listener offers, preferred first: HTTP, TURN's own
/// (`stun.turn`, RFC 7443), and TLS-ALPN-01's. Clients that offer none (most TURN clients) are
/// accepted too.
pub const HTTPS_ALPN: &[&[u8]] = &[b"http/1.1", b"stun.turn", ACME_TLS_ALPN];
/// How often `files` mode looks at the certificate files.
pub const FILES_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// What is being served now, for the admin panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    pub source: String,
    pub names: Vec<String>,
    pub not_after: i64,
    /// Whether browsers accept it: it came from the ACME CA rtcbox is configured with, or its
    /// chain verifies against the system's roots for its own first name (files mode). Decides
    /// whether `turns:` URLs are offered.
    pub publicly_trusted: bool,
}

/// The live certificate; cloning shares it (and the TLS-ALPN-01 challenges).
#[derive(Clone, Debug)]
pub struct TlsCertificates {
    current: Arc<Resolver>,
    challenges: AlpnChallenges,
}

/// The served certificate, for TURN over TLS (5349).
#[derive(Debug)]
struct Resolver {
    key: RwLock<(Arc<CertifiedKey>, CertificateInfo)>,
}

impl Resolver {
    fn served(&self) -> Arc<CertifiedKey> {
        match self.key.read() {
            Ok(guard) => guard.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served())
    }
}

/// The HTTPS listener's resolver: the served certificate, except for TLS-ALPN-01 validations.
#[derive(Debug)]
struct HttpsResolver {
    served: Arc<Resolver>,
    challenges: AlpnChallenges,
}

impl ResolvesServerCert for HttpsResolver {
    /// A client offering `acme-tls/1` alone gets the challenge certificate for its SNI name, or
    /// no handshake when no challenge waits for that name; `acme-tls/1` among other protocols is
    /// refused too (RFC 8737 §3: the CA offers it alone). Everyone else gets the served one.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered: Vec<&[u8]> = hello.alpn().map(Iterator::collect).unwrap_or_default();
        if !offered.contains(&ACME_TLS_ALPN) {
            return Some(self.served.served());
        }
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let answer = match (offered.len(), &name) {
            (1, Some(name)) => self.challenges.certificate(name),
            _ => None,
        };
        if answer.is_none() {
            tracing::debug!(
                sni = name.as_deref().unwrap_or("(none)"),
                "refused an acme-tls/1 handshake: no TLS-ALPN-01 challenge waits for this name"
            );
        }
        answer
    }
}

/// TLS-ALPN-01 challenge certificates by name (RFC 8737), published while an order waits for
/// the CA: the ACME task writes, the HTTPS listener's resolver reads. Cloning shares them.
#[derive(Clone, Default)]
pub struct AlpnChallenges {
    by_name: Arc<RwLock<HashMap<String, Arc<CertifiedKey>>>>,
}

/// The certificates carry key authorization digests: only their number is shown.
impl std::fmt::Debug for AlpnChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = match self.by_name.read() {
            Ok(guard) => guard.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        };
        f.debug_struct("AlpnChallenges")
            .field("pending", &pending)
            .finish()
    }
}

impl AlpnChallenges {
    /// Answers `acme-tls/1` handshakes for `name` with a new self-signed certificate for it that
    /// carries `digest` (the SHA-256 of the key authorization) in the critical acmeIdentifier
    /// extension, until [`AlpnChallenges::withdraw`].
    pub fn publish(&self, name: &str, digest: &[u8; 32]) -> anyhow::Result<()> {
        let certificate = Arc::new(challenge_certificate(name, digest)?);
        let mut guard = match self.by_name.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.insert(name.to_ascii_lowercase(), certificate);
        Ok(())
    }

    pub fn withdraw(&self, name: &str) {
        let mut guard = match self.by_name.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.remove(&name.to_ascii_lowercase());
    }

    fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        match self.by_name.read() {
            Ok(guard) => guard.get(name).cloned(),
            Err(poisoned) => poisoned.into_inner().get(name).cloned(),
        }
    }
}

impl TlsCertificates {
    /// The stored certificate for `names`, or a new self-signed one (stored before use).
    pub async fn load_or_create(pool: &SqlitePool, names: &[String]) -> anyhow::Result<Self> {
        let names = normalise(names);
        let stored: Option<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT source, names, cert_pem, key_pem, not_after FROM certificates WHERE id = ?",
        )
        .bind(DEFAULT_ID)
        .fetch_optional(pool)
        .await
        .context("reading the stored certificate")?;
        let now = unix_now();
        if let Some((source, stored_names, cert_pem, key_pem, not_after)) = stored {
            // An ACME certificate stays until ACME replaces it (or it expires); a self-signed one
            // follows the names and is made anew before its end.
            let fresh = if source == "acme" {
                not_after > now
            } else {
                not_after - now > RENEW_DAYS_BEFORE * 86_400
            };
            let fits = source == "acme" || stored_names == names.join(",");
            if fresh && fits {
                match certified_key(&cert_pem, &key_pem) {
                    Ok(key) => {
                        let info = CertificateInfo {
                            publicly_trusted: source == "acme",
                            source,
                            names: split_names(&stored_names),
                            not_after,
                        };
                        return Ok(Self::serving(key, info));
                    }
                    Err(e) => {
                        tracing::warn!(
                            "the stored certificate is unusable ({e:#}); making a new one"
                        )
                    }
                }
            }
        }
        let (cert_pem, key_pem, not_after) = self_signed(&names, now)?;
        crate::db::certificates::store(
            pool,
            "self-signed",
            &names,
            &cert_pem,
            &key_pem,
            not_after,
            now,
        )
        .await
        .context("storing the self-signed certificate")?;
        tracing::info!(names = ?names, "made a self-signed TLS certificate (until ACME provides one)");
        let key = certified_key(&cert_pem, &key_pem)?;
        Ok(Self::serving(
            key,
            CertificateInfo {
                source: "self-signed".into(),
                names,
                not_after,
                publicly_trusted: false,
            },
        ))
    }

    /// Serves a PEM chain (leaf first) and its key; fails when they do not parse or the key is not
    /// the leaf's.
    pub fn from_pem(chain_pem: &str, key_pem: &str, source: &str) -> anyhow::Result<Self> {
        let (key, info) = checked_pair(chain_pem, key_pem, source)?;
        Ok(Self::serving(key, info))
    }

    /// Checks a PEM chain and key as [`Self::from_pem`] does, then serves them to every handshake
    /// from now on (connections already open keep their certificate). On error nothing changes.
    pub fn install(
        &self,
        chain_pem: &str,
        key_pem: &str,
        source: &str,
    ) -> anyhow::Result<CertificateInfo> {
        let (key, info) = checked_pair(chain_pem, key_pem, source)?;
        let mut guard = match self.current.key.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = (Arc::new(key), info.clone());
        Ok(info)
    }

    fn serving(key: CertifiedKey, info: CertificateInfo) -> Self {
        TlsCertificates {
            current: Arc::new(Resolver {
                key: RwLock::new((Arc::new(key), info)),
            }),
            challenges: AlpnChallenges::default(),
        }
    }

    /// Where TLS-ALPN-01 challenge certificates are published for the HTTPS listener.
    pub fn alpn_challenges(&self) -> AlpnChallenges {
        self.challenges.clone()
    }

    /// What is served now.
    pub fn info(&self) -> CertificateInfo {
        match self.current.key.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// A rustls server configuration that always serves the current certificate (TURN over
    /// TLS: no ALPN, no challenges).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::new(config_with(self.current.clone()))
    }
}

/// The HTTPS listener's configuration: the current certificate, [`HTTPS_ALPN`], and the
/// TLS-ALPN-01 challenge certificates for clients that offer `acme-tls/1`.
pub fn https_server_config(certificates: &TlsCertificates) -> Arc<rustls::ServerConfig> {
    let mut config = config_with(Arc::new(HttpsResolver {
        served: certificates.current.clone(),
        challenges: certificates.challenges.clone(),
    }));
    config.alpn_protocols = HTTPS_ALPN.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn config_with(resolver: Arc<dyn ResolvesServerCert>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver)
}

/// `files` mode's certificate chain and key files, and what they looked like when last read.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    seen: Option<FileStamps>,
}

/// Modification time and size of both files.
type FileStamps = [(Option<SystemTime>, u64); 2];

impl CertFiles {
    pub fn new(cert: &Path, key: &Path) -> Self {
        CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            seen: None,
        }
    }

    /// The source recorded in [`CertificateInfo`].
    pub fn source(&self) -> String {
        format!("file {}", self.cert.display())
    }

    /// Reads both files and remembers their stamps; the error names the file and what is wrong.
    pub fn load(&mut self) -> anyhow::Result<TlsCertificates> {
        let (chain, key) = self.read()?;
        TlsCertificates::from_pem(&chain, &key, &self.source()).with_context(|| self.describe())
    }

    /// When either file changed since it was last read, installs the new pair into
    /// `certificates`. `Ok(None)`: unchanged. On error the old certificate stays, and the same
    /// files are not tried again until they change again.
    pub fn reload_if_changed(
        &mut self,
        certificates: &TlsCertificates,
    ) -> anyhow::Result<Option<CertificateInfo>> {
        if self.stamps() == self.seen {
            return Ok(None);
        }
        let (chain, key) = self.read()?;
        certificates
            .install(&chain, &key, &self.source())
            .with_context(|| self.describe())
            .map(Some)
    }

    fn read(&mut self) -> anyhow::Result<(String, String)> {
        // Stamps first: a file replaced while it is read is read again at the next poll.
        self.seen = self.stamps();
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the {what} file {}", path.display()))
        };
        Ok((
            read(&self.cert, "certificate")?,
            read(&self.key, "private key")?,
        ))
    }

    fn stamps(&self) -> Option<FileStamps> {
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        Some([stamp(&self.cert)?, stamp(&self.key)?])
    }

    fn describe(&self) -> String {
        format!(
            "the certificate {} and key {}",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// `files` mode's reload loop (spawned by `app`): looks at the files every `interval` and
/// installs a changed pair; a bad pair is logged and the served certificate kept.
pub async fn watch_files(mut files: CertFiles, certificates: TlsCertificates, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match files.reload_if_changed(&certificates) {
            Ok(None) => {}
            Ok(Some(info)) => {
                tracing::info!(names = ?info.names, not_after = info.not_after, "TLS certificate reloaded from its files")
            }
            Err(error) => tracing::error!(
                "the changed TLS certificate files are not usable, still serving the previous certificate: {error:#}"
            ),
        }
    }
}

/// Parses a chain and key, checks that the key belongs to the leaf, and reads the leaf's names
/// and end date.
fn checked_pair(
    chain_pem: &str,
    key_pem: &str,
    source: &str,
) -> anyhow::Result<(CertifiedKey, CertificateInfo)> {
    let key = certified_key(chain_pem, key_pem)?;
    key.keys_match()
        .map_err(|e| anyhow::anyhow!("the private key does not belong to the certificate ({e})"))?;
    let leaf = leaf_facts(chain_pem)?;
    let publicly_trusted = source == "acme"
        || (source != "self-signed" && verifies_publicly(&key, &leaf.names).is_ok());
    let info = CertificateInfo {
        source: source.to_owned(),
        names: leaf.names,
        not_after: leaf.not_after,
        publicly_trusted,
    };
    Ok((key, info))
}

/// Checks `key`'s chain as a browser would: against the system's roots (see
/// [`crate::matrix::system_roots`]), for the first of `names`, now. The error says why not.
pub fn verifies_publicly(key: &CertifiedKey, names: &[String]) -> Result<(), String> {
    let name = names.first().ok_or("the certificate names no host")?;
    verify_chain(&key.cert, name, crate::matrix::system_roots())
}

/// Verifies `chain` (leaf first) for `name` against `roots`, as a TLS client does.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    name: &str,
    roots: rustls::RootCertStore,
) -> Result<(), String> {
    let (leaf, intermediates) = chain.split_first().ok_or("the chain is empty")?;
    use rustls::client::danger::ServerCertVerifier as _;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|_| format!("'{name}' is not a host name"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("no roots to verify against ({e})"))?;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &server_name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Sorted, deduplicated, lower-case names; never empty.
fn normalise(names: &[String]) -> Vec<String> {
    let mut names: Vec<String> = names
        .iter()
        .map(|n| {
            n.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        names.push("localhost".into());
    }
    names.sort();
    names.dedup();
    names
}

fn split_names(joined: &str) -> Vec<String> {
    joined.split(',').map(str::to_owned).collect()
}

/// A new self-signed certificate for `names` (host names or IP addresses): (cert PEM, key PEM,
/// not_after).
fn self_signed(names: &[String], now: i64) -> anyhow::Result<(String, String, i64)> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).context("certificate parameters")?;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                name.clone()
                    .try_into()
                    .with_context(|| format!("'{name}' cannot be a certificate name"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "rtcbox (self-signed)");
    let not_after = now + SELF_SIGNED_DAYS * 86_400;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 86_400)
        .context("certificate start date")?;
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(not_after).context("certificate end date")?;
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// RFC 8737 §3's challenge certificate: self-signed, for `name` alone, with the key
/// authorization's SHA-256 `digest` in the critical acmeIdentifier extension; a fresh key.
fn challenge_certificate(name: &str, digest: &[u8; 32]) -> anyhow::Result<CertifiedKey> {
    let dns_name = rcgen::SanType::DnsName(
        name.to_ascii_lowercase()
            .try_into()
            .with_context(|| format!("'{name}' cannot be a certificate name"))?,
    );
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).context("certificate parameters")?;
    params.subject_alt_names.push(dns_name);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the challenge certificate")?;
    certified_key(&cert.pem(), &key.serialize_pem())
}

/// What a certificate chain's leaf says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafFacts {
    /// DNS names and IP addresses of the subject alternative names.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// The names and validity of the first certificate in `chain_pem`.
pub fn leaf_facts(chain_pem: &str) -> anyhow::Result<LeafFacts> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .context("the certificate chain is empty")?
        .context("reading the certificate chain")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("the certificate cannot be parsed: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.push(dns.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(LeafFacts {
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn certified_key(cert_pem: &str, key_pem: &str) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("reading the certificate chain")?;
    anyhow::ensure!(!chain.is_empty(), "the certificate chain is empty");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("reading the key")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("unsupported key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Test helpers for TLS clients of rtcbox's listeners.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;

    /// A TLS client offering `alpn` that accepts any certificate (what a CA does before it
    /// checks a challenge certificate itself).
    pub fn dangerous_client_accepting_any(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    #[derive(Debug)]
    struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &rustls::pki_types::ServerName<'_>,
            _ocsp_response: &[u8],
            _now: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        // Signatures are not checked either: webpki refuses to parse a certificate with an
        // unknown critical extension, which the acmeIdentifier is to it.
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(dir.path()).await.unwrap();
        (dir, pool)
    }

    #[tokio::test]
    async fn self_signed_is_made_once_and_reused_until_the_names_change() {
        let (_dir, pool) = pool().await;
        let names = vec!["rtc.example.org".to_owned(), "192.0.2.7".to_owned()];
        let first = TlsCertificates::load_or_create(&pool, &names)
            .await
            .unwrap();
        let info = first.info();
        assert_eq!(info.source, "self-signed");
        assert_eq!(info.names, ["192.0.2.7", "rtc.example.org"]);
        assert!(info.not_after > unix_now() + 300 * 86_400);
        let stored = || async {
            sqlx::query_scalar::<_, String>("SELECT cert_pem FROM certificates")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        let pem = stored().await;
        // Same names in another order: the same certificate.
        let again = vec!["192.0.2.7".to_owned(), "RTC.example.org".to_owned()];
        TlsCertificates::load_or_create(&pool, &again)
            .await
            .unwrap();
        assert_eq!(stored().await, pem);
        // New names: a new certificate.
        let other = vec!["other.example.org".to_owned()];
        let third = TlsCertificates::load_or_create(&pool, &other)
            .await
            .unwrap();
        assert_ne!(stored().await, pem);
        assert_eq!(third.info().names, ["other.example.org"]);
    }

    /// A self-signed pair for `name`: (chain PEM, key PEM).
    #[test]
    fn a_chain_is_verified_like_a_browser_would() {
        // A CA and a leaf it signed for rtc.example.org.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["rtc.example.org".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let roots = |trusted: &[&rcgen::Certificate]| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in trusted {
                roots.add(cert.der().clone()).unwrap();
            }
            roots
        };
        let chain = [leaf.der().clone()];
        assert_eq!(
            verify_chain(&chain, "rtc.example.org", roots(&[&ca])),
            Ok(())
        );
        let wrong_name = verify_chain(&chain, "other.example.org", roots(&[&ca])).unwrap_err();
        assert!(wrong_name.contains("not valid for"), "{wrong_name}");
        // Trusting something else than its issuer.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        other.distinguished_name = rcgen::DistinguishedName::new();
        other
            .distinguished_name
            .push(rcgen::DnType::CommonName, "another CA");
        let other = other.self_signed(&other_key).unwrap();
        let unknown = verify_chain(&chain, "rtc.example.org", roots(&[&other])).unwrap_err();
        assert!(unknown.contains("UnknownIssuer"), "{unknown}");
        assert!(verify_chain(&[], "rtc.example.org", roots(&[&ca])).is_err());
        // Self-signed and files certificates the system does not trust are not offered as
        // trusted; ACME's are (the CA issued them).
        let (cert, key) = pair("rtc.example.org");
        for (source, trusted) in [
            ("self-signed", false),
            ("/x/cert.pem", false),
            ("acme", true),
        ] {
            let served = TlsCertificates::from_pem(&cert, &key, source).unwrap();
            assert_eq!(served.info().publicly_trusted, trusted, "{source}");
        }
    }

    fn pair(name: &str) -> (String, String) {
        let (cert, key, _) = self_signed(&[name.to_owned()], unix_now()).unwrap();
        (cert, key)
    }

    /// A TLS client that trusts the self-signed certificates `chains` and accepts any name.
    fn client(chains: &[&str]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for chain in chains {
            for cert in CertificateDer::pem_slice_iter(chain.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// An echo server on loopback serving `certs`.
    async fn echo_server(certs: &TlsCertificates) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(https_server_config(certs));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (mut r, mut w) = tokio::io::split(tls);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    type Client = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    async fn connect(
        connector: &tokio_rustls::TlsConnector,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        connector
            .connect(name.to_owned().try_into().unwrap(), tcp)
            .await
            .unwrap()
    }

    fn served_leaf(tls: &Client) -> Vec<u8> {
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    async fn echoes(tls: &mut Client) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tls.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    fn leaf_der(chain: &str) -> Vec<u8> {
        CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn install_swaps_for_new_connections_and_keeps_open_ones() {
        let (old_chain, old_key) = pair("old.example.org");
        let (new_chain, new_key) = pair("new.example.org");
        let certs = TlsCertificates::from_pem(&old_chain, &old_key, "test").unwrap();
        assert_eq!(certs.info().names, ["old.example.org"]);
        let addr = echo_server(&certs).await;
        let trusting = client(&[&old_chain, &new_chain]);

        let mut before = connect(&trusting, addr, "old.example.org").await;
        assert_eq!(served_leaf(&before), leaf_der(&old_chain));
        echoes(&mut before).await;

        // A bad pair changes nothing.
        assert!(certs.install(&new_chain, &old_key, "test").is_err());
        assert!(certs.install("garbage", &new_key, "test").is_err());
        assert_eq!(certs.info().names, ["old.example.org"]);

        let info = certs.install(&new_chain, &new_key, "acme").unwrap();
        assert_eq!(info.names, ["new.example.org"]);
        assert_eq!(info.source, "acme");
        assert!(info.not_after > unix_now());
        assert_eq!(certs.info(), info);

        let mut after = connect(&trusting, addr, "new.example.org").await;
        assert_eq!(served_leaf(&after), leaf_der(&new_chain));
        echoes(&mut after).await;
        // The connection from before the swap still works, with its certificate.
        echoes(&mut before).await;
        assert_eq!(served_leaf(&before), leaf_der(&old_chain));
    }

    #[test]
    fn a_key_that_is_not_the_leafs_is_refused_by_name() {
        let (chain, _) = pair("a.example.org");
        let (_, other_key) = pair("b.example.org");
        let error = TlsCertificates::from_pem(&chain, &other_key, "test").unwrap_err();
        assert!(
            format!("{error:#}").contains("does not belong"),
            "{error:#}"
        );
        let error = TlsCertificates::from_pem("", &other_key, "test").unwrap_err();
        assert!(format!("{error:#}").contains("empty"), "{error:#}");
    }

    #[test]
    fn files_are_loaded_and_reloaded_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let write = |(chain, key): &(String, String)| {
            std::fs::write(&cert_path, chain).unwrap();
            std::fs::write(&key_path, key).unwrap();
        };
        // Missing files: the error names the file.
        let mut files = CertFiles::new(&cert_path, &key_path);
        let error = files.load().unwrap_err();
        assert!(format!("{error:#}").contains("cert.pem"), "{error:#}");

        let first = pair("one.example.org");
        write(&first);
        let mut files = CertFiles::new(&cert_path, &key_path);
        let certs = files.load().unwrap();
        assert_eq!(certs.info().names, ["one.example.org"]);
        assert!(certs.info().source.contains("cert.pem"));
        assert!(files.reload_if_changed(&certs).unwrap().is_none());

        // A bad new pair (the key of another certificate): refused, the old one served.
        let second = pair("two.example.org");
        std::fs::write(&cert_path, &second.0).unwrap();
        let error = files.reload_if_changed(&certs).unwrap_err();
        assert!(
            format!("{error:#}").contains("does not belong"),
            "{error:#}"
        );
        assert_eq!(certs.info().names, ["one.example.org"]);
        // Not retried until the files change again.
        assert!(files.reload_if_changed(&certs).unwrap().is_none());

        std::fs::write(&key_path, &second.1).unwrap();
        let info = files.reload_if_changed(&certs).unwrap().unwrap();
        assert_eq!(info.names, ["two.example.org"]);
        assert_eq!(certs.info().names, ["two.example.org"]);
    }

    #[tokio::test]
    async fn install_swaps_the_served_certificate() {
        let (_dir, pool) = pool().await;
        let certs = TlsCertificates::load_or_create(&pool, &["localhost".to_owned()])
            .await
            .unwrap();
        let now = unix_now();
        let (chain, key, not_after) = self_signed(&["rtc.example.org".to_owned()], now).unwrap();
        let facts = leaf_facts(&chain).unwrap();
        assert_eq!(facts.names, ["rtc.example.org"]);
        assert_eq!(facts.not_after, not_after);
        assert_eq!(facts.not_before, now - 86_400);
        let info = certs.install(&chain, &key, "acme").unwrap();
        assert_eq!(certs.info(), info);
        assert_eq!(info.source, "acme");
        assert_eq!(info.names, ["rtc.example.org"]);
        // A key that does not parse leaves the served certificate alone.
        assert!(certs.install(&chain, "garbage", "acme").is_err());
        assert_eq!(certs.info(), info);
    }

    /// The handshake's certificate and negotiated protocol, or the handshake's error.
    async fn handshake(
        connector: &tokio_rustls::TlsConnector,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), std::io::Error> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(name.to_owned().try_into().unwrap(), tcp)
            .await?;
        let leaf = served_leaf(&tls);
        let protocol = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        Ok((leaf, protocol))
    }

    /// The DNS names and the acmeIdentifier extension (critical?, its value) of a certificate.
    fn challenge_facts(der: &[u8]) -> (Vec<String>, Option<(bool, Vec<u8>)>) {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let names = leaf_facts(&pem_of(der)).unwrap().names;
        // id-pe-acmeIdentifier, RFC 8737 §6.1: 1.3.6.1.5.5.7.1.31
        let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
        let extension = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .map(|e| (e.critical, e.value.to_vec()));
        (names, extension)
    }

    fn pem_of(der: &[u8]) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    #[tokio::test]
    async fn acme_tls_handshakes_get_the_challenge_certificate_only_while_it_waits() {
        let (chain, key) = pair("rtc.example.org");
        let certs = TlsCertificates::from_pem(&chain, &key, "test").unwrap();
        let addr = echo_server(&certs).await;
        let acme = testing::dangerous_client_accepting_any(&[ACME_TLS_ALPN]);

        // Nothing published: the handshake is refused, whatever the name.
        assert!(handshake(&acme, addr, "rtc.example.org").await.is_err());

        let digest = [0x5a; 32];
        let challenges = certs.alpn_challenges();
        challenges.publish("RTC.example.org", &digest).unwrap();
        assert_eq!(format!("{challenges:?}"), "AlpnChallenges { pending: 1 }");
        let (leaf, protocol) = handshake(&acme, addr, "rtc.example.org").await.unwrap();
        assert_eq!(protocol.as_deref(), Some(ACME_TLS_ALPN));
        assert_ne!(leaf, leaf_der(&chain));
        let (names, extension) = challenge_facts(&leaf);
        assert_eq!(names, ["rtc.example.org"]);
        // Critical, an OCTET STRING (0x04, length 32) holding the digest.
        let mut expected = vec![0x04, 0x20];
        expected.extend_from_slice(&digest);
        assert_eq!(extension, Some((true, expected)));

        // Another name, or acme-tls/1 among other protocols: refused.
        assert!(handshake(&acme, addr, "other.example.org").await.is_err());
        let mixed = testing::dangerous_client_accepting_any(&[b"http/1.1", ACME_TLS_ALPN]);
        assert!(handshake(&mixed, addr, "rtc.example.org").await.is_err());
        // Everyone else still gets the served certificate meanwhile.
        let web = testing::dangerous_client_accepting_any(&[b"http/1.1"]);
        let (leaf, protocol) = handshake(&web, addr, "rtc.example.org").await.unwrap();
        assert_eq!(leaf, leaf_der(&chain));
        assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]));
        let (leaf, _) = handshake(
            &testing::dangerous_client_accepting_any(&[]),
            addr,
            "rtc.example.org",
        )
        .await
        .unwrap();
        assert_eq!(leaf, leaf_der(&chain));

        // Withdrawn: refused again.
        challenges.withdraw("rtc.example.org");
        assert!(handshake(&acme, addr, "rtc.example.org").await.is_err());
    }

    #[tokio::test]
    async fn turn_over_tls_never_answers_challenges() {
        let (chain, key) = pair("rtc.example.org");
        let certs = TlsCertificates::from_pem(&chain, &key, "test").unwrap();
        certs
            .alpn_challenges()
            .publish("rtc.example.org", &[1; 32])
            .unwrap();
        // A listener with the plain configuration (TURN over TLS on 5349).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _tls = acceptor.accept(tcp).await;
        });
        let (leaf, protocol) = handshake(
            &testing::dangerous_client_accepting_any(&[ACME_TLS_ALPN]),
            addr,
            "rtc.example.org",
        )
        .await
        .unwrap();
        assert_eq!(leaf, leaf_der(&chain));
        assert_eq!(protocol, None);
    }

    #[tokio::test]
    async fn a_tls_client_gets_the_certificate() {
        let (_dir, pool) = pool().await;
        let certs = TlsCertificates::load_or_create(&pool, &["localhost".to_owned()])
            .await
            .unwrap();
        let pem: String = sqlx::query_scalar("SELECT cert_pem FROM certificates")
            .fetch_one(&pool)
            .await
            .unwrap();
        let addr = echo_server(&certs).await;
        let mut tls = connect(&client(&[&pem]), addr, "localhost").await;
        echoes(&mut tls).await;
    }
}
