//! The `settings` table: key → text value.

use std::collections::BTreeMap;

use sqlx::{SqliteConnection, SqlitePool};

use super::unix_now;
use crate::config::SettingKey;
use crate::secret::random_alphanumeric;

/// Every stored setting.
pub async fn all(pool: &SqlitePool) -> sqlx::Result<BTreeMap<String, String>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM settings")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Writes one setting, replacing any earlier value.
pub async fn set(pool: &SqlitePool, key: &str, value: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(value)
    .bind(unix_now())
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets a stored setting, so the default applies again.
pub async fn delete(pool: &SqlitePool, key: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM settings WHERE key = ?1")
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// Writes several settings (a `None` value deletes the key) in one transaction: all or nothing.
pub async fn set_many(pool: &SqlitePool, values: &[(&str, Option<String>)]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    write(&mut tx, values, unix_now()).await?;
    tx.commit().await
}

/// Writes several settings inside the caller's transaction.
pub(super) async fn write(
    tx: &mut SqliteConnection,
    values: &[(&str, Option<String>)],
    now: i64,
) -> sqlx::Result<()> {
    for (key, value) in values {
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(key)
                .bind(value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM settings WHERE key = ?1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Replaces the stored LiveKit key pair with a new random one (key rotation).
pub async fn rotate_key_pair(pool: &SqlitePool) -> sqlx::Result<String> {
    let key = format!("API{}", random_alphanumeric(12));
    set_many(
        pool,
        &[
            (SettingKey::ApiKey.db_key(), Some(key.clone())),
            (
                SettingKey::ApiSecret.db_key(),
                Some(random_alphanumeric(48)),
            ),
        ],
    )
    .await?;
    Ok(key)
}

/// First start: generates and stores the LiveKit API key and secret if they are not stored yet.
/// Returns true when it generated them. Both are written in one transaction, so a crash never
/// leaves a key without its secret; an existing pair is never replaced.
pub async fn ensure_key_pair(pool: &SqlitePool) -> sqlx::Result<bool> {
    let key = format!("API{}", random_alphanumeric(12));
    let secret = random_alphanumeric(48);
    let now = unix_now();
    let mut tx = pool.begin().await?;
    let mut generated = false;
    for (name, value) in [
        (SettingKey::ApiKey.db_key(), key),
        (SettingKey::ApiSecret.db_key(), secret),
    ] {
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)",
        )
        .bind(name)
        .bind(value)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        generated |= inserted > 0;
    }
    tx.commit().await?;
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_pair_is_generated_once() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = super::super::open(tmp.path()).await.unwrap();
        assert!(ensure_key_pair(&pool).await.unwrap());
        let first = all(&pool).await.unwrap();
        assert!(first["api_key"].starts_with("API"));
        assert!(first["api_secret"].len() >= crate::config::MIN_SECRET_LEN);
        assert!(!ensure_key_pair(&pool).await.unwrap());
        assert_eq!(all(&pool).await.unwrap(), first);
    }

    #[tokio::test]
    async fn set_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = super::super::open(tmp.path()).await.unwrap();
        set(&pool, "public_url", "wss://a").await.unwrap();
        set(&pool, "public_url", "wss://b").await.unwrap();
        assert_eq!(all(&pool).await.unwrap()["public_url"], "wss://b");
    }
}
