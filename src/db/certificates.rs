//! The certificates rtcbox serves (`tls` reads them, ACME and the self-signed maker write them).
//! One row per purpose; `default` is the public host's.

use sqlx::SqlitePool;

/// The row of the certificate for the public host.
pub const DEFAULT_ID: &str = "default";

/// A certificate issued by the ACME CA, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCertificate {
    pub names: Vec<String>,
    pub chain_pem: String,
    pub not_after: i64,
}

/// The ACME certificate of the public host, if the stored one came from ACME.
pub async fn acme(pool: &SqlitePool) -> sqlx::Result<Option<StoredCertificate>> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT names, cert_pem, not_after FROM certificates WHERE id = ? AND source = 'acme'",
    )
    .bind(DEFAULT_ID)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(names, chain_pem, not_after)| StoredCertificate {
        names: names.split(',').map(str::to_owned).collect(),
        chain_pem,
        not_after,
    }))
}

/// The key of the public host's ACME certificate (a secret: never log it).
pub async fn acme_key(pool: &SqlitePool) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT key_pem FROM certificates WHERE id = ? AND source = 'acme'")
        .bind(DEFAULT_ID)
        .fetch_optional(pool)
        .await
}

/// Replaces the public host's certificate; `source` is `self-signed` or `acme`.
pub async fn store(
    pool: &SqlitePool,
    source: &str,
    names: &[String],
    chain_pem: &str,
    key_pem: &str,
    not_after: i64,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO certificates (id, source, names, cert_pem, key_pem, not_after, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET source = excluded.source, names = excluded.names, \
         cert_pem = excluded.cert_pem, key_pem = excluded.key_pem, \
         not_after = excluded.not_after, created_at = excluded.created_at",
    )
    .bind(DEFAULT_ID)
    .bind(source)
    .bind(names.join(","))
    .bind(chain_pem)
    .bind(key_pem)
    .bind(not_after)
    .bind(now)
    .execute(pool)
    .await
    .map(drop)
}
