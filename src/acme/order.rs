//! One ACME order: account (stored once per directory), authorizations answered by a
//! [`Responder`] until the CA has decided, a CSR for a fresh key, the chain. Also the CA's
//! renewal window for a certificate ([`renewal_window`], ARI).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Full};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeType, Identifier, KeyAuthorization, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use sqlx::SqlitePool;

use super::Challenges;
use super::dns01::{Dns01, PublishedTxt, TxtRecord};
use super::plan::{AcmeError, Window};
use crate::db;
use crate::setup::fetch::{FetchError, HttpClient};
use crate::tls::AlpnChallenges;

/// How long the CA may take to validate the challenges, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);

/// What an order needs.
#[derive(Clone)]
pub struct OrderSetup {
    pub directory: String,
    pub email: Option<String>,
    pub domains: Vec<String>,
    pub responder: Responder,
    /// Trusts the system roots plus `RTCBOX_ACME_CA_FILE`.
    pub http: HttpClient,
}

/// An issued certificate: the chain (leaf first) and its fresh key (PKCS#8 PEM, a secret).
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"***")
            .finish()
    }
}

/// Runs one order for `setup.domains` to the end. `replacing`: the stored certificate's chain
/// when the order renews it; the CA is told (RFC 9773 §5), and a CA that does not take it as a
/// replacement (no ARI, a certificate it does not know) is asked again without.
pub async fn obtain(
    pool: &SqlitePool,
    setup: &OrderSetup,
    replacing: Option<&str>,
) -> Result<Issued, AcmeError> {
    let account = account(pool, setup).await?;
    let identifiers: Vec<Identifier> = setup
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let plain = NewOrder::new(&identifiers);
    let replaces = replacing.and_then(certificate_id);
    let mut order = match replaces {
        Some(id) => match account
            .new_order(&NewOrder::new(&identifiers).replaces(id))
            .await
        {
            Ok(order) => order,
            Err(error) if !is_rate_limit(&error) => {
                tracing::info!(
                    "ACME: the CA does not take the order as a replacement of the current \
                     certificate ({}); ordering without",
                    refused(error)
                );
                account.new_order(&plain).await.map_err(refused)?
            }
            Err(error) => return Err(refused(error)),
        },
        None => account.new_order(&plain).await.map_err(refused)?,
    };

    // Publish every answer before telling the CA, and withdraw them whatever happens.
    let mut published = Vec::new();
    let validated = validate(&mut order, &setup.responder, &mut published).await;
    for answer in published {
        setup.responder.withdraw(answer).await;
    }
    validated?;

    let key = rcgen::KeyPair::generate()
        .map_err(|e| AcmeError::Other(format!("generating the certificate key: {e}")))?;
    let csr = rcgen::CertificateParams::new(setup.domains.clone())
        .and_then(|mut params| {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.serialize_request(&key)
        })
        .map_err(|e| AcmeError::Other(format!("making the certificate request: {e}")))?;
    order.finalize_csr(csr.der()).await.map_err(refused)?;
    let retries = patience();
    let chain_pem = order.poll_certificate(&retries).await.map_err(refused)?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// Answers every pending authorization with `responder`, tells the CA, waits for its verdict.
/// Everything published is pushed to `published`, also on failure, so the caller withdraws it.
async fn validate(
    order: &mut instant_acme::Order,
    responder: &Responder,
    published: &mut Vec<Published>,
) -> Result<(), AcmeError> {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(refused)?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Other(format!(
                    "the CA's authorization for {} is {other:?}",
                    authorization.identifier()
                )));
            }
        }
        let name = authorization.identifier().to_string();
        let mut challenge = authorization
            .challenge(responder.challenge_type())
            .ok_or_else(|| AcmeError::Refused {
                kind: "unsupportedChallenge".into(),
                detail: format!(
                    "the CA offers no {} challenge for {name}",
                    responder.label()
                ),
            })?;
        let answer = responder
            .publish(&name, &challenge.token, &challenge.key_authorization())
            .await?;
        published.push(answer);
        challenge.set_ready().await.map_err(refused)?;
    }

    let retries = patience();
    // A failed challenge makes the order invalid; its problem is also the order's error.
    let failed = match order.poll_ready(&retries).await {
        Ok(OrderStatus::Ready) => None,
        Ok(_) => Some(None),
        Err(instant_acme::Error::Api(problem)) => Some(Some(problem)),
        Err(other) => return Err(refused(other)),
    };
    match failed {
        None => Ok(()),
        Some(order_problem) => Err(match challenge_failure(order, responder.label()).await {
            AcmeError::Other(reason) => match order_problem {
                Some(problem) => refused(instant_acme::Error::Api(problem)),
                None => AcmeError::Other(reason),
            },
            found => found,
        }),
    }
}

/// The CA's suggested renewal window for the leaf of `chain_pem` (ARI, RFC 9773) and its hint
/// when to ask again. `Ok(None)`: the CA offers no ARI, there is no account with it yet, or the
/// certificate cannot be identified to it (no authority key identifier).
pub async fn renewal_window(
    pool: &SqlitePool,
    setup: &OrderSetup,
    chain_pem: &str,
) -> Result<Option<(Window, Duration)>, AcmeError> {
    let Some(id) = certificate_id(chain_pem) else {
        return Ok(None);
    };
    let Some(account) = stored_account(pool, setup).await? else {
        return Ok(None);
    };
    match account.renewal_info(&id).await {
        Ok((info, retry_after)) => Ok(Some((
            Window {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
            },
            retry_after,
        ))),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(error) => Err(refused(error)),
    }
}

/// The certificate's name for the CA (authority key identifier and serial), for ARI.
fn certificate_id(chain_pem: &str) -> Option<CertificateIdentifier<'static>> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    CertificateIdentifier::try_from(&leaf).ok()
}

fn is_rate_limit(error: &instant_acme::Error) -> bool {
    matches!(error, instant_acme::Error::Api(problem) if problem_kind(problem) == "rateLimited")
}

/// The stored account for this directory, or a new one (stored before use).
async fn account(pool: &SqlitePool, setup: &OrderSetup) -> Result<Account, AcmeError> {
    if let Some(account) = stored_account(pool, setup).await? {
        return Ok(account);
    }
    let storage = |e: sqlx::Error| AcmeError::Other(format!("the ACME account store: {e}"));
    let builder = || Account::builder_with_http(Box::new(AcmeHttp(setup.http.clone())));
    let contact = setup.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            setup.directory.clone(),
            None,
        )
        .await
        .map_err(|e| unreachable(setup, e))?;
    let json = serde_json::to_string(&credentials)
        .map_err(|e| AcmeError::Other(format!("serialising the ACME account: {e}")))?;
    db::acme::store_account(pool, &setup.directory, &json, db::unix_now())
        .await
        .map_err(storage)?;
    tracing::info!(directory = %setup.directory, account = account.id(), "created an ACME account");
    Ok(account)
}

/// The stored account for this directory (its directory fetched), if there is a readable one.
async fn stored_account(
    pool: &SqlitePool,
    setup: &OrderSetup,
) -> Result<Option<Account>, AcmeError> {
    let json = db::acme::account(pool, &setup.directory)
        .await
        .map_err(|e| AcmeError::Other(format!("the ACME account store: {e}")))?;
    let Some(json) = json else {
        return Ok(None);
    };
    match serde_json::from_str::<AccountCredentials>(&json) {
        Ok(credentials) => Account::builder_with_http(Box::new(AcmeHttp(setup.http.clone())))
            .from_credentials(credentials)
            .await
            .map(Some)
            .map_err(|e| unreachable(setup, e)),
        Err(e) => {
            tracing::warn!(
                "the stored ACME account is unreadable ({e}); the next order creates a new one"
            );
            Ok(None)
        }
    }
}

/// An error reaching the directory: the CA's own answer, or the network's.
fn unreachable(setup: &OrderSetup, error: instant_acme::Error) -> AcmeError {
    match error {
        instant_acme::Error::Api(problem) => refused(instant_acme::Error::Api(problem)),
        other => AcmeError::Unreachable {
            directory: setup.directory.clone(),
            reason: other.to_string(),
        },
    }
}

/// After the order went invalid: the first failed challenge, as the CA described it.
async fn challenge_failure(order: &mut instant_acme::Order, label: &'static str) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let Ok(mut authorization) = authorization else {
            continue;
        };
        if authorization.refresh().await.is_err() {
            continue;
        }
        let name = authorization.identifier().to_string();
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                return AcmeError::Challenge {
                    name,
                    challenge: label,
                    kind: problem_kind(problem),
                    detail: problem.detail.clone().unwrap_or_default(),
                };
            }
        }
    }
    AcmeError::Other("the CA declared the order invalid without saying why".into())
}

/// How the order is polled while the CA validates, then issues.
fn patience() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .backoff(1.5)
        .timeout(VALIDATION_TIMEOUT)
}

/// An error answered by the CA, or a transport problem during the order.
fn refused(error: instant_acme::Error) -> AcmeError {
    match error {
        instant_acme::Error::Api(problem) => AcmeError::Refused {
            kind: problem_kind(&problem),
            detail: problem.detail.unwrap_or_default(),
        },
        instant_acme::Error::Timeout(_) => AcmeError::Other(format!(
            "the CA did not finish within {} s; retrying later",
            VALIDATION_TIMEOUT.as_secs()
        )),
        other => AcmeError::Other(format!("talking to the ACME server: {other}")),
    }
}

fn problem_kind(problem: &instant_acme::Problem) -> String {
    let kind = problem.r#type.as_deref().unwrap_or("unknown");
    kind.strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or(kind)
        .to_owned()
}

/// How the CA's challenges are answered: what the CA looks for is published before the CA is
/// told to look, and withdrawn when it has decided.
#[derive(Clone, Debug)]
pub enum Responder {
    /// HTTP-01: the public HTTP listener answers `/.well-known/acme-challenge/{token}`.
    Http01(Challenges),
    /// TLS-ALPN-01: the HTTPS listener answers `acme-tls/1` handshakes for the name with a
    /// challenge certificate.
    TlsAlpn01(AlpnChallenges),
    /// DNS-01: a TXT record `_acme-challenge.<name>`, visible before the CA is told.
    Dns01(Dns01),
}

/// One published answer, to withdraw.
#[derive(Debug)]
pub enum Published {
    Http01 { token: String },
    TlsAlpn01 { name: String },
    Dns01(PublishedTxt),
}

impl Responder {
    fn challenge_type(&self) -> ChallengeType {
        match self {
            Responder::Http01(_) => ChallengeType::Http01,
            Responder::TlsAlpn01(_) => ChallengeType::TlsAlpn01,
            Responder::Dns01(_) => ChallengeType::Dns01,
        }
    }

    /// The challenge's name in the CA's words (`http-01`, …).
    pub fn label(&self) -> &'static str {
        match self {
            Responder::Http01(_) => "http-01",
            Responder::TlsAlpn01(_) => "tls-alpn-01",
            Responder::Dns01(_) => "dns-01",
        }
    }

    /// Makes the answer for `name` visible to the CA.
    async fn publish(
        &self,
        name: &str,
        token: &str,
        key_authorization: &KeyAuthorization,
    ) -> Result<Published, AcmeError> {
        match self {
            Responder::Http01(challenges) => {
                challenges.insert(token.to_owned(), key_authorization.as_str().to_owned());
                Ok(Published::Http01 {
                    token: token.to_owned(),
                })
            }
            Responder::TlsAlpn01(challenges) => {
                let digest: [u8; 32] =
                    key_authorization
                        .digest()
                        .as_ref()
                        .try_into()
                        .map_err(|_| {
                            AcmeError::Other("the key authorization digest is not SHA-256".into())
                        })?;
                challenges.publish(name, &digest).map_err(|e| {
                    AcmeError::Other(format!(
                        "making the TLS-ALPN-01 certificate for {name}: {e:#}"
                    ))
                })?;
                Ok(Published::TlsAlpn01 {
                    name: name.to_owned(),
                })
            }
            Responder::Dns01(dns) => {
                let record = TxtRecord::for_identifier(name, key_authorization.dns_value());
                dns.publish(record).await.map(Published::Dns01)
            }
        }
    }

    /// Takes a published answer back; failures are logged, not returned (the certificate
    /// matters more than the leftover).
    async fn withdraw(&self, published: Published) {
        match (self, published) {
            (Responder::Http01(challenges), Published::Http01 { token }) => {
                challenges.remove(&token)
            }
            (Responder::TlsAlpn01(challenges), Published::TlsAlpn01 { name }) => {
                challenges.withdraw(&name)
            }
            (Responder::Dns01(dns), Published::Dns01(record)) => dns.withdraw(record).await,
            (responder, published) => tracing::error!(
                "ACME: {published:?} cannot be withdrawn by the {} responder",
                responder.label()
            ),
        }
    }
}

/// instant-acme's requests through the crate's one HTTPS client (rustls with ring, the same
/// trust store and resolver as every outgoing connection): no second TLS stack.
struct AcmeHttp(HttpClient);

impl instant_acme::HttpClient for AcmeHttp {
    fn request(
        &self,
        request: axum::http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect();
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let url = parts.uri.to_string();
            let fetched = client
                .request_with_body(parts.method, &url, &headers, body)
                .await
                .map_err(|e: FetchError| instant_acme::Error::Other(Box::new(e)))?;
            let mut response = axum::http::Response::new(Full::new(fetched.body));
            *response.status_mut() = axum::http::StatusCode::from_u16(fetched.status)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            *response.headers_mut() = fetched.headers;
            Ok(BytesResponse::from(response))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::Path;
    use axum::routing::get;
    use base64::Engine as _;

    use super::*;

    /// A CA's directory (with `renewalInfo` when `ari`) and its ARI endpoint on loopback, and
    /// the certificate ids the endpoint was asked about.
    async fn ca(ari: bool) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mut directory = serde_json::json!({
            "newNonce": format!("{base}/nonce"),
            "newAccount": format!("{base}/account"),
            "newOrder": format!("{base}/order"),
        });
        if ari {
            directory["renewalInfo"] = format!("{base}/ari").into();
        }
        let seen = asked.clone();
        let app = Router::new()
            .route("/dir", get(move || async move { axum::Json(directory) }))
            .route(
                "/ari/{id}",
                get(move |Path(id): Path<String>| async move {
                    seen.lock().unwrap().push(id);
                    (
                        [("retry-after", "21600")],
                        axum::Json(serde_json::json!({"suggestedWindow": {
                            "start": "2027-01-01T00:00:00Z",
                            "end": "2027-01-03T00:00:00Z",
                        }})),
                    )
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("{base}/dir"), asked)
    }

    /// A leaf issued by a test CA, with the authority key identifier ARI names it by.
    fn issued_chain() -> String {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec!["rtc.example.org".to_owned()]).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().unwrap();
        leaf.signed_by(&key, &issuer).unwrap().pem()
    }

    async fn setup_with_account(directory: &str) -> (tempfile::TempDir, SqlitePool, OrderSetup) {
        let dir = tempfile::tempdir().unwrap();
        let pool = db::open(dir.path()).await.unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let credentials = serde_json::json!({
            "id": "http://ca.test/account/1",
            "key_pkcs8": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.serialize_der()),
            "directory": directory,
        });
        db::acme::store_account(&pool, directory, &credentials.to_string(), 0)
            .await
            .unwrap();
        let setup = OrderSetup {
            directory: directory.to_owned(),
            email: None,
            domains: vec!["rtc.example.org".to_owned()],
            responder: Responder::Http01(Challenges::default()),
            http: HttpClient::new(None).unwrap(),
        };
        (dir, pool, setup)
    }

    #[tokio::test]
    async fn the_cas_renewal_window_is_asked_for_the_certificate_by_its_identifier() {
        let (directory, asked) = ca(true).await;
        let (_dir, pool, setup) = setup_with_account(&directory).await;
        let chain = issued_chain();
        let (window, retry_after) = renewal_window(&pool, &setup, &chain)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            window,
            Window {
                start: 1_798_761_600,
                end: 1_798_934_400
            }
        );
        // The hint, give or take the second that passed.
        assert!(
            (21_590..=21_600).contains(&retry_after.as_secs()),
            "{retry_after:?}"
        );
        let expected = certificate_id(&chain).unwrap().to_string();
        assert_eq!(*asked.lock().unwrap(), [expected]);
    }

    #[tokio::test]
    async fn without_ari_or_an_account_or_an_identifier_there_is_no_window() {
        let (directory, asked) = ca(false).await;
        let (_dir, pool, setup) = setup_with_account(&directory).await;
        let chain = issued_chain();
        assert_eq!(renewal_window(&pool, &setup, &chain).await.unwrap(), None);

        // No account for this directory: the CA is not even asked (nor an account made).
        let (directory, asked_too) = ca(true).await;
        let (_dir, pool, mut setup) = setup_with_account("http://127.0.0.1:9/dir").await;
        setup.directory = directory;
        assert_eq!(renewal_window(&pool, &setup, &chain).await.unwrap(), None);
        // A self-signed certificate has no authority key identifier.
        let (directory, _) = ca(true).await;
        let (_dir, pool, setup) = setup_with_account(&directory).await;
        let self_signed = rcgen::generate_simple_self_signed(vec!["rtc.example.org".to_owned()])
            .unwrap()
            .cert
            .pem();
        assert_eq!(
            renewal_window(&pool, &setup, &self_signed).await.unwrap(),
            None
        );
        assert!(asked.lock().unwrap().is_empty() && asked_too.lock().unwrap().is_empty());
    }
}
