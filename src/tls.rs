//! The certificates rtcbox serves itself: TURN over TLS now, direct HTTPS later. Until ACME
//! obtains a real certificate, a self-signed one (rcgen) for the public host is generated once,
//! stored in SQLite and reused; it is made anew when the public names change or it is near its
//! end. Listeners hold a [`TlsCertificates`] handle whose certificate can be swapped while they
//! run (ACME renewal), so a new certificate never needs a restart.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

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

/// What is being served now, for the admin panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    pub source: String,
    pub names: Vec<String>,
    pub not_after: i64,
}

/// The live certificate; cloning shares it.
#[derive(Clone, Debug)]
pub struct TlsCertificates {
    current: Arc<Resolver>,
}

#[derive(Debug)]
struct Resolver {
    key: RwLock<(Arc<CertifiedKey>, CertificateInfo)>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.key.read() {
            Ok(guard) => Some(guard.0.clone()),
            Err(poisoned) => Some(poisoned.into_inner().0.clone()),
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
            },
        ))
    }

    fn serving(key: CertifiedKey, info: CertificateInfo) -> Self {
        TlsCertificates {
            current: Arc::new(Resolver {
                key: RwLock::new((Arc::new(key), info)),
            }),
        }
    }

    /// What is served now.
    pub fn info(&self) -> CertificateInfo {
        match self.current.key.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Serves `chain_pem` (leaf first) with `key_pem` from now on: new handshakes get it, open
    /// connections keep theirs. Nothing is stored; the caller stores first. Returns what is
    /// served now.
    pub fn install(
        &self,
        chain_pem: &str,
        key_pem: &str,
        source: &str,
    ) -> anyhow::Result<CertificateInfo> {
        let key = certified_key(chain_pem, key_pem)?;
        key.keys_match()
            .map_err(|e| anyhow::anyhow!("the key does not belong to the certificate: {e}"))?;
        let leaf = leaf_facts(chain_pem)?;
        let info = CertificateInfo {
            source: source.to_owned(),
            names: leaf.names,
            not_after: leaf.not_after,
        };
        let mut guard = match self.current.key.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = (Arc::new(key), info.clone());
        Ok(info)
    }

    /// A rustls server configuration that always serves the current certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.current.clone());
        Arc::new(config)
    }
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
        let mut tls = connect(addr, &pem, "localhost").await.unwrap();
        assert_eq!(echo(&mut tls, b"ok").await, *b"ok");
    }

    #[tokio::test]
    async fn an_installed_certificate_reaches_new_connections_while_open_ones_go_on() {
        let (_dir, pool) = pool().await;
        let certs = TlsCertificates::load_or_create(&pool, &["rtc.example.org".to_owned()])
            .await
            .unwrap();
        let old: String = sqlx::query_scalar("SELECT cert_pem FROM certificates")
            .fetch_one(&pool)
            .await
            .unwrap();
        let addr = echo_server(&certs).await;
        let mut before = connect(addr, &old, "rtc.example.org").await.unwrap();

        let (new, key, _) = self_signed(&["rtc.example.org".to_owned()], unix_now()).unwrap();
        certs.install(&new, &key, "acme").unwrap();

        assert_eq!(echo(&mut before, b"still").await, *b"still");
        let mut after = connect(addr, &new, "rtc.example.org").await.unwrap();
        assert_eq!(echo(&mut after, b"new!").await, *b"new!");
        assert!(connect(addr, &old, "rtc.example.org").await.is_err());
    }

    /// A TLS echo server serving `certs`, one task per connection.
    async fn echo_server(certs: &TlsCertificates) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (mut read, mut write) = tokio::io::split(tls);
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// A TLS client trusting only the certificates in `trusted_pem`.
    async fn connect(
        addr: std::net::SocketAddr,
        trusted_pem: &str,
        name: &'static str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(trusted_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        connector.connect(name.try_into().unwrap(), tcp).await
    }

    async fn echo<const N: usize>(
        tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        message: &[u8; N],
    ) -> [u8; N] {
        tokio::io::AsyncWriteExt::write_all(tls, message)
            .await
            .unwrap();
        let mut buf = [0u8; N];
        tokio::io::AsyncReadExt::read_exact(tls, &mut buf)
            .await
            .unwrap();
        buf
    }
}
