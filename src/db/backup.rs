//! What a backup holds, read from the database in one transaction and written back in one
//! (`backup` owns the file format and the checks before anything is written).
//!
//! Included: every stored setting (the LiveKit key pair, the TURN secret and the rest), the
//! admin password hash, the wizard's answers, the certificates with their keys, the ACME
//! accounts and the import history. Left out: sessions (a restore logs every browser out),
//! the setup token (a restored database without a password gets a new one at start) and
//! pending delayed leaves (they belong to calls running on the machine that has them).
//!
//! The field names are the backup format's (version 1): renaming one needs a new version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The settings table: key → value.
    pub settings: BTreeMap<String, String>,
    /// The admin password (argon2id PHC string); none before the first password was chosen.
    pub admin_password_hash: Option<String>,
    /// The wizard's answers by step id.
    pub wizard_steps: BTreeMap<String, WizardStep>,
    pub certificates: Vec<Certificate>,
    pub acme_accounts: Vec<AcmeAccount>,
    /// Oldest first.
    pub imports: Vec<Import>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WizardStep {
    /// The form as entered (JSON).
    pub data: String,
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub id: String,
    /// `self-signed` or `acme`.
    pub source: String,
    pub names: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: i64,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeAccount {
    pub directory: String,
    /// instant-acme's account credentials (JSON with the account key).
    pub credentials: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Import {
    pub imported_at: i64,
    pub sources: String,
    pub settings: String,
}

/// Everything a backup holds, as one consistent read.
pub async fn snapshot(pool: &SqlitePool) -> sqlx::Result<Snapshot> {
    let mut tx = pool.begin().await?;
    let settings: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM settings")
        .fetch_all(&mut *tx)
        .await?;
    let admin_password_hash: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM admin_account WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    let steps: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT step, data, complete FROM wizard_steps")
            .fetch_all(&mut *tx)
            .await?;
    let certificates: Vec<(String, String, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, source, names, cert_pem, key_pem, not_after, created_at FROM certificates \
         ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let acme_accounts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT directory, credentials, created_at FROM acme_accounts ORDER BY directory",
    )
    .fetch_all(&mut *tx)
    .await?;
    let imports: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT imported_at, sources, settings FROM imports ORDER BY id")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Snapshot {
        settings: settings.into_iter().collect(),
        admin_password_hash,
        wizard_steps: steps
            .into_iter()
            .map(|(step, data, complete)| {
                let complete = complete != 0;
                (step, WizardStep { data, complete })
            })
            .collect(),
        certificates: certificates
            .into_iter()
            .map(
                |(id, source, names, cert_pem, key_pem, not_after, created_at)| Certificate {
                    id,
                    source,
                    names,
                    cert_pem,
                    key_pem,
                    not_after,
                    created_at,
                },
            )
            .collect(),
        acme_accounts: acme_accounts
            .into_iter()
            .map(|(directory, credentials, created_at)| AcmeAccount {
                directory,
                credentials,
                created_at,
            })
            .collect(),
        imports: imports
            .into_iter()
            .map(|(imported_at, sources, settings)| Import {
                imported_at,
                sources,
                settings,
            })
            .collect(),
    })
}

/// Replaces everything a backup holds with `snapshot`, in one transaction (all or nothing), and
/// ends every admin session. Pending delayed leaves stay.
pub async fn replace(pool: &SqlitePool, snapshot: &Snapshot, now: i64) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for table in [
        "settings",
        "admin_sessions",
        "wizard_steps",
        "certificates",
        "acme_accounts",
        "imports",
    ] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    for (key, value) in &snapshot.settings {
        sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)")
            .bind(key)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    // Without a password the next start prints a new setup token.
    sqlx::query(
        "INSERT INTO admin_account (id, password_hash, setup_token_hash, setup_token_expires, updated_at)
         VALUES (1, ?1, NULL, NULL, ?2)
         ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash,
             setup_token_hash = NULL, setup_token_expires = NULL, updated_at = excluded.updated_at",
    )
    .bind(&snapshot.admin_password_hash)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for (step, stored) in &snapshot.wizard_steps {
        sqlx::query(
            "INSERT INTO wizard_steps (step, data, complete, updated_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(step)
        .bind(&stored.data)
        .bind(i64::from(stored.complete))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for c in &snapshot.certificates {
        sqlx::query(
            "INSERT INTO certificates (id, source, names, cert_pem, key_pem, not_after, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(&c.source)
        .bind(&c.names)
        .bind(&c.cert_pem)
        .bind(&c.key_pem)
        .bind(c.not_after)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;
    }
    for a in &snapshot.acme_accounts {
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, created_at) VALUES (?, ?, ?)",
        )
        .bind(&a.directory)
        .bind(&a.credentials)
        .bind(a.created_at)
        .execute(&mut *tx)
        .await?;
    }
    for i in &snapshot.imports {
        sqlx::query("INSERT INTO imports (imported_at, sources, settings) VALUES (?1, ?2, ?3)")
            .bind(i.imported_at)
            .bind(&i.sources)
            .bind(&i.settings)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
