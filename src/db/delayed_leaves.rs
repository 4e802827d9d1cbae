//! Delegated delayed leave events (`auth::delayed_leave`): one row per LiveKit room and
//! participant identity, written when a delegation is accepted, deleted when it ends.

use sqlx::SqlitePool;

use crate::secret::Secret;

/// One stored delegation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLeave {
    pub room: String,
    pub identity: String,
    pub delay_id: Secret,
    pub delay_timeout_ms: i64,
    pub client_api_url: String,
    pub server_name: String,
    pub created_at: i64,
}

/// Stores `leave`, replacing the delegation for the same room and identity.
pub async fn store(pool: &SqlitePool, leave: &StoredLeave) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO delayed_leaves (room, identity, delay_id, delay_timeout_ms, client_api_url, \
         server_name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (room, identity) DO UPDATE SET delay_id = excluded.delay_id, \
         delay_timeout_ms = excluded.delay_timeout_ms, client_api_url = excluded.client_api_url, \
         server_name = excluded.server_name, created_at = excluded.created_at",
    )
    .bind(&leave.room)
    .bind(&leave.identity)
    .bind(leave.delay_id.expose())
    .bind(leave.delay_timeout_ms)
    .bind(&leave.client_api_url)
    .bind(&leave.server_name)
    .bind(leave.created_at)
    .execute(pool)
    .await
    .map(drop)
}

/// Deletes the delegation of `room`/`identity` if it still is the one for `delay_id` (a newer
/// delegation that replaced it stays).
pub async fn delete(
    pool: &SqlitePool,
    room: &str,
    identity: &str,
    delay_id: &Secret,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM delayed_leaves WHERE room = ? AND identity = ? AND delay_id = ?")
        .bind(room)
        .bind(identity)
        .bind(delay_id.expose())
        .execute(pool)
        .await
        .map(drop)
}

/// Every stored delegation, oldest first.
pub async fn all(pool: &SqlitePool) -> sqlx::Result<Vec<StoredLeave>> {
    let rows: Vec<(String, String, String, i64, String, String, i64)> = sqlx::query_as(
        "SELECT room, identity, delay_id, delay_timeout_ms, client_api_url, server_name, \
         created_at FROM delayed_leaves ORDER BY created_at, room, identity",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                room,
                identity,
                delay_id,
                delay_timeout_ms,
                client_api_url,
                server_name,
                created_at,
            )| {
                StoredLeave {
                    room,
                    identity,
                    delay_id: Secret::new(delay_id),
                    delay_timeout_ms,
                    client_api_url,
                    server_name,
                    created_at,
                }
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leave(identity: &str, delay_id: &str, created_at: i64) -> StoredLeave {
        StoredLeave {
            room: "room-alias".into(),
            identity: identity.into(),
            delay_id: Secret::new(delay_id),
            delay_timeout_ms: 10_000,
            client_api_url: "https://matrix.example.org/prefix".into(),
            server_name: "example.org".into(),
            created_at,
        }
    }

    #[tokio::test]
    async fn delegations_round_trip_replace_and_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = crate::db::open(tmp.path()).await.unwrap();
        assert_eq!(all(&pool).await.unwrap(), vec![]);

        let (alice, bob) = (leave("alice", "syd_a", 2), leave("bob", "syd_b", 1));
        store(&pool, &alice).await.unwrap();
        store(&pool, &bob).await.unwrap();
        assert_eq!(all(&pool).await.unwrap(), vec![bob.clone(), alice.clone()]);

        // A new delegation for the same participant replaces the old one.
        let alice2 = leave("alice", "syd_a2", 3);
        store(&pool, &alice2).await.unwrap();
        assert_eq!(all(&pool).await.unwrap(), vec![bob.clone(), alice2.clone()]);

        // Ending the replaced delegation leaves the new one alone.
        delete(&pool, "room-alias", "alice", &alice.delay_id)
            .await
            .unwrap();
        assert_eq!(all(&pool).await.unwrap(), vec![bob.clone(), alice2.clone()]);
        delete(&pool, "room-alias", "alice", &alice2.delay_id)
            .await
            .unwrap();
        assert_eq!(all(&pool).await.unwrap(), vec![bob.clone()]);

        // Still there after reopening (what a restart reads).
        pool.close().await;
        let pool = crate::db::open(tmp.path()).await.unwrap();
        assert_eq!(all(&pool).await.unwrap(), vec![bob]);
    }
}
