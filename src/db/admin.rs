//! The admin account, its sessions and the setup wizard's stored steps.
//!
//! Only hashes of the setup token and of session ids are stored (SHA-256: both are 190-bit
//! random values, so a fast hash is enough); the password is stored as an argon2id PHC string
//! computed by the caller.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};
use sqlx::SqlitePool;

/// What the admin account looks like right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountState {
    /// A password is set: the panel asks for it.
    Ready { password_hash: String },
    /// No password yet; a setup token (hashed) unlocks the "choose a password" page until `expires`.
    AwaitingSetup {
        token_hash: Option<String>,
        expires: i64,
    },
}

/// Hex SHA-256, used for the setup token and session ids.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn account(pool: &SqlitePool) -> sqlx::Result<AccountState> {
    let row: Option<(Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT password_hash, setup_token_hash, setup_token_expires FROM admin_account WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((Some(password_hash), _, _)) => AccountState::Ready { password_hash },
        Some((None, token_hash, expires)) => AccountState::AwaitingSetup {
            token_hash,
            expires: expires.unwrap_or(0),
        },
        None => AccountState::AwaitingSetup {
            token_hash: None,
            expires: 0,
        },
    })
}

/// Stores a new setup token (its hash) valid until `expires`, replacing any earlier token.
/// Does nothing and returns false when a password is already set.
pub async fn store_setup_token(
    pool: &SqlitePool,
    token: &str,
    expires: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "INSERT INTO admin_account (id, password_hash, setup_token_hash, setup_token_expires, updated_at)
         VALUES (1, NULL, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET setup_token_hash = excluded.setup_token_hash,
             setup_token_expires = excluded.setup_token_expires, updated_at = excluded.updated_at
         WHERE admin_account.password_hash IS NULL",
    )
    .bind(hash_token(token))
    .bind(expires)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Sets the first password, consuming the setup token, but only if `token_hash` is still the
/// stored, unexpired token (so two browsers racing cannot both set one). Returns whether it did.
pub async fn set_first_password(
    pool: &SqlitePool,
    token_hash: &str,
    password_hash: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE admin_account SET password_hash = ?1, setup_token_hash = NULL,
             setup_token_expires = NULL, updated_at = ?3
         WHERE id = 1 AND password_hash IS NULL AND setup_token_hash = ?2 AND setup_token_expires > ?3",
    )
    .bind(password_hash)
    .bind(token_hash)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Replaces the password of an existing account (the settings page), ending every other session.
pub async fn change_password(
    pool: &SqlitePool,
    password_hash: &str,
    keep_session: &str,
    now: i64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE admin_account SET password_hash = ?1, updated_at = ?2 WHERE id = 1")
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM admin_sessions WHERE id_hash != ?1")
        .bind(hash_token(keep_session))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// `rtcbox admin reset-password`: forgets the password, ends every session and stores a new
/// setup token, in one transaction.
pub async fn reset_password(
    pool: &SqlitePool,
    token: &str,
    expires: i64,
    now: i64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO admin_account (id, password_hash, setup_token_hash, setup_token_expires, updated_at)
         VALUES (1, NULL, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET password_hash = NULL,
             setup_token_hash = excluded.setup_token_hash,
             setup_token_expires = excluded.setup_token_expires, updated_at = excluded.updated_at",
    )
    .bind(hash_token(token))
    .bind(expires)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM admin_sessions")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A logged-in session: its CSRF token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub csrf: String,
    pub expires_at: i64,
}

pub async fn create_session(
    pool: &SqlitePool,
    id: &str,
    csrf: &str,
    now: i64,
    expires_at: i64,
) -> sqlx::Result<()> {
    // Expired sessions are swept whenever a new one starts.
    sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= ?1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO admin_sessions (id_hash, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(hash_token(id))
    .bind(csrf)
    .bind(now)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The session for a cookie value, if it exists and has not expired.
pub async fn session(pool: &SqlitePool, id: &str, now: i64) -> sqlx::Result<Option<SessionRow>> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT csrf, expires_at FROM admin_sessions WHERE id_hash = ?1 AND expires_at > ?2",
    )
    .bind(hash_token(id))
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(csrf, expires_at)| SessionRow { csrf, expires_at }))
}

pub async fn delete_session(pool: &SqlitePool, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM admin_sessions WHERE id_hash = ?1")
        .bind(hash_token(id))
        .execute(pool)
        .await?;
    Ok(())
}

/// One stored wizard step: the form as entered (JSON) and whether it validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStep {
    pub data: String,
    pub complete: bool,
}

pub async fn wizard_steps(pool: &SqlitePool) -> sqlx::Result<BTreeMap<String, StoredStep>> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT step, data, complete FROM wizard_steps")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(step, data, complete)| {
            (
                step,
                StoredStep {
                    data,
                    complete: complete != 0,
                },
            )
        })
        .collect())
}

pub async fn save_wizard_step(
    pool: &SqlitePool,
    step: &str,
    data: &str,
    complete: bool,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO wizard_steps (step, data, complete, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (step) DO UPDATE SET data = excluded.data, complete = excluded.complete,
             updated_at = excluded.updated_at",
    )
    .bind(step)
    .bind(data)
    .bind(i64::from(complete))
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (tempfile::TempDir, SqlitePool) {
        let tmp = tempfile::tempdir().unwrap();
        let pool = super::super::open(tmp.path()).await.unwrap();
        (tmp, pool)
    }

    #[tokio::test]
    async fn setup_token_sets_the_first_password_once() {
        let (_tmp, pool) = pool().await;
        assert_eq!(
            account(&pool).await.unwrap(),
            AccountState::AwaitingSetup {
                token_hash: None,
                expires: 0
            }
        );
        assert!(store_setup_token(&pool, "tok", 1000, 10).await.unwrap());
        let hash = hash_token("tok");
        // Expired: refused.
        assert!(
            !set_first_password(&pool, &hash, "$argon2id$x", 1000)
                .await
                .unwrap()
        );
        // A wrong token: refused.
        assert!(
            !set_first_password(&pool, &hash_token("other"), "$argon2id$x", 20)
                .await
                .unwrap()
        );
        assert!(
            set_first_password(&pool, &hash, "$argon2id$x", 20)
                .await
                .unwrap()
        );
        // The token is consumed.
        assert!(
            !set_first_password(&pool, &hash, "$argon2id$y", 21)
                .await
                .unwrap()
        );
        assert_eq!(
            account(&pool).await.unwrap(),
            AccountState::Ready {
                password_hash: "$argon2id$x".into()
            }
        );
        // With a password set, a new setup token is not stored.
        assert!(!store_setup_token(&pool, "tok2", 5000, 30).await.unwrap());
    }

    #[tokio::test]
    async fn reset_forgets_the_password_and_every_session() {
        let (_tmp, pool) = pool().await;
        store_setup_token(&pool, "tok", 1000, 10).await.unwrap();
        set_first_password(&pool, &hash_token("tok"), "$argon2id$x", 20)
            .await
            .unwrap();
        create_session(&pool, "sess", "csrf", 20, 500)
            .await
            .unwrap();
        assert!(session(&pool, "sess", 30).await.unwrap().is_some());
        reset_password(&pool, "new", 2000, 40).await.unwrap();
        assert!(session(&pool, "sess", 41).await.unwrap().is_none());
        assert!(matches!(
            account(&pool).await.unwrap(),
            AccountState::AwaitingSetup { token_hash: Some(h), expires: 2000 } if h == hash_token("new")
        ));
    }

    #[tokio::test]
    async fn sessions_expire_and_are_stored_hashed() {
        let (_tmp, pool) = pool().await;
        create_session(&pool, "sess", "csrf", 10, 100)
            .await
            .unwrap();
        assert_eq!(
            session(&pool, "sess", 50).await.unwrap(),
            Some(SessionRow {
                csrf: "csrf".into(),
                expires_at: 100
            })
        );
        assert!(session(&pool, "sess", 100).await.unwrap().is_none());
        let stored: Vec<(String,)> = sqlx::query_as("SELECT id_hash FROM admin_sessions")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(stored, vec![(hash_token("sess"),)]);
        delete_session(&pool, "sess").await.unwrap();
        assert!(session(&pool, "sess", 50).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn wizard_steps_round_trip() {
        let (_tmp, pool) = pool().await;
        save_wizard_step(&pool, "homeserver", "{\"a\":1}", false, 1)
            .await
            .unwrap();
        save_wizard_step(&pool, "homeserver", "{\"a\":2}", true, 2)
            .await
            .unwrap();
        let steps = wizard_steps(&pool).await.unwrap();
        assert_eq!(
            steps["homeserver"],
            StoredStep {
                data: "{\"a\":2}".into(),
                complete: true
            }
        );
    }
}
