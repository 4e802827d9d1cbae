//! DNS-01 through Cloudflare's API (v4) with an API token that may edit the zone's DNS
//! (permission Zone → DNS → Edit). The zone is found by name (`GET /zones?name=…`, the record's
//! parent names from the closest up, or `RTCBOX_ACME_DNS_ZONE`), the TXT record is created with
//! `POST /zones/{zone}/dns_records` and deleted by its id. Requests go through `setup::fetch`
//! (the crate's one HTTP client); the token travels only in the `Authorization` header and is
//! never logged. `RTCBOX_ACME_CLOUDFLARE_API` replaces the base URL, for tests.

use axum::body::Bytes;
use axum::http::Method;
use serde_json::{Value, json};

use super::TxtRecord;
use crate::config::DnsServer;
use crate::secret::Secret;
use crate::setup::fetch::HttpClient;

/// The API, the token and the optional zone name.
#[derive(Clone)]
pub struct Cloudflare {
    http: HttpClient,
    api: String,
    token: Secret,
    zone: Option<String>,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("api", &self.api)
            .field("token", &self.token)
            .field("zone", &self.zone)
            .finish()
    }
}

/// A record Cloudflare created: where it is, for deleting it and for asking the zone's name
/// servers whether they serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub zone_id: String,
    pub zone: String,
    pub record_id: String,
    pub name_servers: Vec<String>,
}

impl Cloudflare {
    /// `api` is the base URL without a final `/` (`https://api.cloudflare.com/client/v4`).
    pub fn new(http: HttpClient, api: &str, token: Secret, zone: Option<String>) -> Cloudflare {
        Cloudflare {
            http,
            api: api.trim_end_matches('/').to_owned(),
            token,
            zone,
        }
    }

    /// Creates the TXT record in its zone.
    pub async fn add(&self, record: &TxtRecord) -> Result<Created, String> {
        let (zone_id, zone, name_servers) = self.find_zone(&record.name).await?;
        let body = json!({
            "type": "TXT",
            "name": record.name,
            // Cloudflare wants TXT content as quoted character strings.
            "content": format!("\"{}\"", record.value),
            "ttl": super::TXT_TTL,
        });
        let result = self
            .call(
                Method::POST,
                &format!("/zones/{zone_id}/dns_records"),
                Some(body),
                &zone,
            )
            .await?;
        let record_id = result
            .get("id")
            .and_then(Value::as_str)
            .ok_or("Cloudflare's answer to creating the record has no id")?
            .to_owned();
        Ok(Created {
            zone_id,
            zone,
            record_id,
            name_servers,
        })
    }

    /// Deletes a record created by [`Cloudflare::add`].
    pub async fn delete(&self, created: &Created) -> Result<(), String> {
        self.call(
            Method::DELETE,
            &format!(
                "/zones/{}/dns_records/{}",
                created.zone_id, created.record_id
            ),
            None,
            &created.zone,
        )
        .await
        .map(drop)
    }

    /// The zone's id, name and name servers: `RTCBOX_ACME_DNS_ZONE`, else the closest parent
    /// of `name` that the token can see.
    async fn find_zone(&self, name: &str) -> Result<(String, String, Vec<String>), String> {
        let candidates: Vec<String> = match &self.zone {
            Some(zone) => vec![zone.clone()],
            None => {
                let labels: Vec<&str> = name.split('.').skip(1).collect();
                (0..labels.len().saturating_sub(1))
                    .map(|i| labels[i..].join("."))
                    .collect()
            }
        };
        for candidate in &candidates {
            let found = self
                .call(
                    Method::GET,
                    &format!("/zones?name={candidate}"),
                    None,
                    candidate,
                )
                .await?;
            if let Some(zone) = found.as_array().and_then(|zones| zones.first()) {
                let id = zone
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or("Cloudflare's zone has no id")?;
                let name_servers = zone
                    .get("name_servers")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                return Ok((id.to_owned(), candidate.clone(), name_servers));
            }
        }
        Err(format!(
            "Cloudflare has no zone {} that this token can see; give the token access to the \
             zone (Zone → DNS → Edit) or set RTCBOX_ACME_DNS_ZONE",
            candidates.join(" or ")
        ))
    }

    /// One API call; the `result` of a successful answer, or Cloudflare's errors in words.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        zone: &str,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.api);
        let verb = method.to_string();
        let authorization = format!("Bearer {}", self.token.expose());
        let mut headers = vec![
            ("authorization", authorization.as_str()),
            ("accept", "application/json"),
        ];
        let fetched = match body {
            Some(body) => {
                headers.push(("content-type", "application/json"));
                let bytes = Bytes::from(body.to_string());
                self.http
                    .request_with_body(method, &url, &headers, bytes)
                    .await
            }
            None => self.http.request(method, &url, &headers).await,
        }
        .map_err(|e| format!("the Cloudflare API cannot be reached: {e}"))?;
        let answer = fetched.json_object().unwrap_or_default();
        let errors: Vec<String> = answer
            .get("errors")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|e| {
                        let code = e.get("code").and_then(Value::as_i64).unwrap_or_default();
                        let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                        format!("{message} ({code})")
                    })
                    .collect()
            })
            .unwrap_or_default();
        let said = if errors.is_empty() {
            fetched.body_excerpt()
        } else {
            errors.join("; ")
        };
        if matches!(fetched.status, 401 | 403) {
            return Err(format!(
                "Cloudflare refused the token (HTTP {}: {said}): RTCBOX_ACME_CLOUDFLARE_TOKEN \
                 needs the permission Zone → DNS → Edit on zone {zone}",
                fetched.status
            ));
        }
        let success = answer.get("success").and_then(Value::as_bool) == Some(true);
        if !(200..300).contains(&fetched.status) || !success {
            return Err(format!(
                "Cloudflare refused {verb} {path} (HTTP {}: {said})",
                fetched.status
            ));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }
}

impl Created {
    /// Whether every name server of the zone answers the record (Cloudflare's own servers,
    /// where the CA looks); without a list, this system's resolver.
    pub async fn serves(&self, record: &TxtRecord) -> Result<bool, String> {
        if self.name_servers.is_empty() {
            return super::resolver_serves(record).await;
        }
        for name_server in &self.name_servers {
            let server = DnsServer {
                host: name_server.clone(),
                port: 53,
            };
            if !super::rfc2136::query_txt(&server, record).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
