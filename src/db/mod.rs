//! The SQLite database in the data directory: the only module with SQL.
//!
//! `open` creates the data directory (mode 0700: the database holds secrets) and the database,
//! and applies the forward-only migrations in migrations/ (embedded at build time).

pub mod acme;
pub mod admin;
pub mod backup;
pub mod certificates;
pub mod delayed_leaves;
pub mod imports;
pub mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

/// Seconds since the Unix epoch, as every table stores time (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The database file inside the data directory.
pub const DB_FILE: &str = "rtcbox.db";

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens (creating if needed) the database in `data_dir` and migrates it to the current schema.
pub async fn open(data_dir: &Path) -> anyhow::Result<SqlitePool> {
    create_private_dir(data_dir)?;
    // Several rtcbox processes may open the same database at once (a container's health check
    // or `admin reset-password` while `serve` starts). Creating the file, switching it to WAL and
    // SQLite's migrator do not wait for each other, so two first starts could both try to create
    // the tables ("table settings already exists"); a file lock serialises opening.
    let lock = open_lock(data_dir).await?;
    let path = db_path(data_dir);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    restrict_permissions(&path)?;
    let migrated = sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .with_context(|| format!("cannot migrate the database {}", path.display()));
    drop(lock);
    migrated?;
    Ok(pool)
}

/// The lock file held while opening and migrating; released when the returned file is dropped.
const OPEN_LOCK_FILE: &str = "rtcbox.db.open-lock";

async fn open_lock(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(OPEN_LOCK_FILE);
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    anyhow::anyhow!(not_writable(&dir))
                }
                _ => anyhow::Error::new(error).context(format!("cannot open {}", path.display())),
            })?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    })
    .await
    .context("the database lock task failed")?
}

/// Held by `rtcbox serve` for as long as it runs, so `rtcbox restore` can tell that a server
/// uses the data directory (the operating system releases it when the process ends, however).
const SERVE_LOCK_FILE: &str = "rtcbox.serve-lock";

/// Takes the serve lock of `data_dir` without waiting; `None` when another process holds it.
/// The lock lasts as long as the returned file is open.
pub fn try_serve_lock(data_dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    create_private_dir(data_dir)?;
    let path = data_dir.join(SERVE_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(anyhow::Error::new(error).context(format!("cannot lock {}", path.display())))
        }
    }
}

/// The data directory exists but this process may not write there: the usual first-run mistake
/// with a container's bind mount or a package's folder.
fn not_writable(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let owner = std::fs::metadata(dir)
        .map(|m| format!(" (owned by uid {}, mode {:o})", m.uid(), m.mode() & 0o7777))
        .unwrap_or_default();
    format!(
        "the data directory {}{owner} is not writable by this process. Give it to the user rtcbox \
         runs as: the container image runs as uid 65532 (`chown -R 65532:65532` the folder mounted \
         at /data, or run the container as the folder's owner with `user:`/`--user`)",
        dir.display()
    )
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

fn restrict_permissions(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict the permissions of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_opens_do_not_race_the_migrations() {
        for _ in 0..10 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let dir = dir.clone();
                    tokio::spawn(async move { open(&dir).await.map(|_| ()) })
                })
                .collect();
            for open in opens {
                open.await.unwrap().unwrap();
            }
        }
    }

    #[test]
    fn the_serve_lock_is_held_once() {
        let tmp = tempfile::tempdir().unwrap();
        let held = try_serve_lock(tmp.path()).unwrap().expect("free at first");
        assert!(try_serve_lock(tmp.path()).unwrap().is_none());
        drop(held);
        assert!(try_serve_lock(tmp.path()).unwrap().is_some());
    }

    #[tokio::test]
    async fn open_creates_a_private_directory_and_migrates_twice_safely() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/data");
        let pool = open(&dir).await.unwrap();
        settings::set(&pool, "k", "v").await.unwrap();
        pool.close().await;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(db_path(&dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        let pool = open(&dir).await.unwrap();
        assert_eq!(
            settings::all(&pool)
                .await
                .unwrap()
                .get("k")
                .map(String::as_str),
            Some("v")
        );
    }
}
