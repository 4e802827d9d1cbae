//! One ACME order: account (stored once per directory), authorizations answered by a
//! [`Responder`] until the CA has decided, a CSR for a fresh key, the chain.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Full};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, KeyAuthorization, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use sqlx::SqlitePool;

use super::Challenges;
use super::dns01::{Dns01, PublishedTxt, TxtRecord};
use super::plan::AcmeError;
use crate::db;
use crate::setup::fetch::{FetchError, HttpClient};

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

/// Runs one order for `setup.domains` to the end.
pub async fn obtain(pool: &SqlitePool, setup: &OrderSetup) -> Result<Issued, AcmeError> {
    let account = account(pool, setup).await?;
    let identifiers: Vec<Identifier> = setup
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(refused)?;

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

/// The stored account for this directory, or a new one (stored before use).
async fn account(pool: &SqlitePool, setup: &OrderSetup) -> Result<Account, AcmeError> {
    let unreachable = |e: instant_acme::Error| match e {
        instant_acme::Error::Api(problem) => refused(instant_acme::Error::Api(problem)),
        other => AcmeError::Unreachable {
            directory: setup.directory.clone(),
            reason: other.to_string(),
        },
    };
    let storage = |e: sqlx::Error| AcmeError::Other(format!("the ACME account store: {e}"));
    let builder = || Account::builder_with_http(Box::new(AcmeHttp(setup.http.clone())));
    if let Some(json) = db::acme::account(pool, &setup.directory)
        .await
        .map_err(storage)?
    {
        match serde_json::from_str::<AccountCredentials>(&json) {
            Ok(credentials) => {
                return builder()
                    .from_credentials(credentials)
                    .await
                    .map_err(unreachable);
            }
            Err(e) => {
                tracing::warn!("the stored ACME account is unreadable ({e}); creating a new one")
            }
        }
    }
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
        .map_err(unreachable)?;
    let json = serde_json::to_string(&credentials)
        .map_err(|e| AcmeError::Other(format!("serialising the ACME account: {e}")))?;
    db::acme::store_account(pool, &setup.directory, &json, db::unix_now())
        .await
        .map_err(storage)?;
    tracing::info!(directory = %setup.directory, account = account.id(), "created an ACME account");
    Ok(account)
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
    /// DNS-01: a TXT record `_acme-challenge.<name>`, visible before the CA is told.
    Dns01(Dns01),
}

/// One published answer, to withdraw.
#[derive(Debug)]
pub enum Published {
    Http01 { token: String },
    Dns01(PublishedTxt),
}

impl Responder {
    fn challenge_type(&self) -> ChallengeType {
        match self {
            Responder::Http01(_) => ChallengeType::Http01,
            Responder::Dns01(_) => ChallengeType::Dns01,
        }
    }

    /// The challenge's name in the CA's words (`http-01`, …).
    pub fn label(&self) -> &'static str {
        match self {
            Responder::Http01(_) => "http-01",
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
