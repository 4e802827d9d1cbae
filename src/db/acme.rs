//! ACME: the account per directory (its certificates live in `certificates`).

use sqlx::SqlitePool;

/// The stored account credentials (instant-acme's JSON) for `directory`, if any.
pub async fn account(pool: &SqlitePool, directory: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT credentials FROM acme_accounts WHERE directory = ?")
        .bind(directory)
        .fetch_optional(pool)
        .await
}

pub async fn store_account(
    pool: &SqlitePool,
    directory: &str,
    credentials: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO acme_accounts (directory, credentials, created_at) VALUES (?, ?, ?) \
         ON CONFLICT (directory) DO UPDATE SET credentials = excluded.credentials, \
         created_at = excluded.created_at",
    )
    .bind(directory)
    .bind(credentials)
    .bind(now)
    .execute(pool)
    .await
    .map(drop)
}
