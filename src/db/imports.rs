//! The `imports` table: what `rtcbox import` stored, for the admin panel.

use sqlx::SqlitePool;

use super::settings;

/// One import as the panel shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRecord {
    /// Unix seconds.
    pub imported_at: i64,
    /// What was read, e.g. `livekit.yaml (/etc/livekit/livekit.yaml)`.
    pub sources: String,
    /// The settings it stored, by environment name.
    pub settings: Vec<String>,
}

/// Stores the imported settings and the record of the import in one transaction: all or nothing.
pub async fn store(
    pool: &SqlitePool,
    values: &[(&str, Option<String>)],
    record: &ImportRecord,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    settings::write(&mut tx, values, record.imported_at).await?;
    sqlx::query("INSERT INTO imports (imported_at, sources, settings) VALUES (?1, ?2, ?3)")
        .bind(record.imported_at)
        .bind(&record.sources)
        .bind(record.settings.join(","))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The most recent import, if any.
pub async fn last(pool: &SqlitePool) -> sqlx::Result<Option<ImportRecord>> {
    let row: Option<(i64, String, String)> = sqlx::query_as(
        "SELECT imported_at, sources, settings FROM imports ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(imported_at, sources, settings)| ImportRecord {
        imported_at,
        sources,
        settings: settings
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_import_stores_its_settings_and_its_record_together() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = super::super::open(tmp.path()).await.unwrap();
        assert_eq!(last(&pool).await.unwrap(), None);
        let record = ImportRecord {
            imported_at: 1_700_000_000,
            sources: "livekit.yaml (/x/livekit.yaml)".into(),
            settings: vec!["RTCBOX_RTC_UDP_PORT".into(), "RTCBOX_NODE_IP".into()],
        };
        store(
            &pool,
            &[
                ("rtc_udp_port", Some("50000".into())),
                ("node_ip", Some("203.0.113.7".into())),
            ],
            &record,
        )
        .await
        .unwrap();
        assert_eq!(last(&pool).await.unwrap(), Some(record));
        let stored = settings::all(&pool).await.unwrap();
        assert_eq!(stored["rtc_udp_port"], "50000");
        assert_eq!(stored["node_ip"], "203.0.113.7");
    }
}
