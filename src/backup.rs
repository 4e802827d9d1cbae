//! The backup file (docs/backup.md): one JSON document that says what it is, which version of
//! the format it follows, and a SHA-256 of its contents.
//!
//! ```json
//! {"format": "rtcbox-backup", "version": 1, "created_at": 1764850000,
//!  "rtcbox": "0.1.0 (git …)", "sha256": "…", "contents": { …db::backup::Snapshot… }}
//! ```
//!
//! The checksum covers the contents as this module serialises them (struct fields in order,
//! maps sorted), so it is the same on every machine. [`read`] checks everything before a
//! restore writes anything: size, JSON, the marker, the version, the checksum, then every value
//! the way rtcbox would use it (settings resolved as the next start would, certificates against
//! their keys, the ACME accounts, the password hash, the wizard's steps). Its errors say what
//! is wrong in words and never quote a secret (config errors never carry secret values; serde
//! messages are cut before the value they met).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::SqlitePool;

use crate::config::{self, Layers, SettingKey};
use crate::db::backup::Snapshot;

/// What the `format` field of every backup says.
pub const FORMAT: &str = "rtcbox-backup";
/// The version this rtcbox writes and reads.
pub const VERSION: u64 = 1;
/// Larger files are refused unread (a real backup is tens of kilobytes).
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupFile {
    format: String,
    version: u64,
    /// Unix seconds.
    created_at: i64,
    /// The rtcbox that wrote it (`VERSION_LINE`).
    rtcbox: String,
    sha256: String,
    contents: Snapshot,
}

/// Why a file cannot be restored.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than {} MiB, which no rtcbox backup is", MAX_BYTES / 1024 / 1024)]
    TooLarge,
    #[error("the file ends too early: it was cut off (copy or download it again)")]
    Truncated,
    #[error("this is not an rtcbox backup ({0})")]
    Foreign(&'static str),
    #[error(
        "the backup was written by a newer rtcbox (format version {0}; this rtcbox reads version {VERSION}): upgrade rtcbox first"
    )]
    Newer(u64),
    #[error("the backup's format version is not one rtcbox knows")]
    UnknownVersion,
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error(
        "the backup's checksum does not match its contents: the file was changed or damaged after it was written"
    )]
    Checksum,
    #[error("the backup cannot be used: {0}")]
    Invalid(String),
}

/// The backup file for `snapshot`, written at `now` (unix seconds).
pub fn write(snapshot: Snapshot, now: i64) -> Vec<u8> {
    let file = BackupFile {
        format: FORMAT.to_owned(),
        version: VERSION,
        created_at: now,
        rtcbox: crate::VERSION_LINE.to_owned(),
        sha256: checksum(&snapshot),
        contents: snapshot,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("a snapshot serialises");
    bytes.push(b'\n');
    bytes
}

/// A suggested file name: `rtcbox-backup-2026-12-04-2110.json`.
pub fn file_name(now: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "rtcbox-backup-{:04}-{:02}-{:02}-{:02}{:02}.json",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// What a backup file holds, once every check passed: what a restore may write. `layers` are
/// the command-line flags and environment the restored settings will run with (their stored
/// layer is ignored: the backup's settings take its place).
pub fn read(bytes: &[u8], layers: &Layers<'_>) -> Result<Snapshot, Refused> {
    let file = parse(bytes)?;
    if checksum(&file.contents) != file.sha256.to_ascii_lowercase() {
        return Err(Refused::Checksum);
    }
    validate(&file.contents, layers)?;
    Ok(file.contents)
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("storing the restored data failed: {0}")]
    Storing(#[from] sqlx::Error),
}

/// Checks `bytes` ([`read`], with the settings' other layers: the command-line `flags` and the
/// environment `env` the restored settings will run with) and only then replaces what the
/// database holds with it, in one transaction: a refused or failed restore changes nothing.
/// Returns what was restored.
pub async fn restore(
    pool: &SqlitePool,
    bytes: &[u8],
    flags: &BTreeMap<SettingKey, String>,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    now: i64,
) -> Result<Snapshot, RestoreError> {
    let snapshot = {
        let stored = BTreeMap::new();
        read(
            bytes,
            &Layers {
                flags,
                env,
                stored: &stored,
            },
        )?
    };
    crate::db::backup::replace(pool, &snapshot, now).await?;
    Ok(snapshot)
}

/// What a backup holds, in a few lines for the operator (no secrets).
pub fn summary(snapshot: &Snapshot) -> Vec<String> {
    let mut lines = vec![format!(
        "LiveKit API key {} and its secret; {} settings in all",
        snapshot
            .settings
            .get(SettingKey::ApiKey.db_key())
            .map_or("(none)", String::as_str),
        snapshot.settings.len()
    )];
    lines.push(match snapshot.admin_password_hash {
        Some(_) => "the admin password".to_owned(),
        None => "no admin password (a setup token is printed at the next start)".to_owned(),
    });
    for c in &snapshot.certificates {
        lines.push(format!(
            "certificate '{}' ({}) for {}",
            c.id, c.source, c.names
        ));
    }
    if !snapshot.acme_accounts.is_empty() {
        lines.push(format!("{} ACME account(s)", snapshot.acme_accounts.len()));
    }
    lines.push(format!(
        "setup wizard: {} step(s) answered",
        snapshot.wizard_steps.len()
    ));
    lines
}

/// The file's structure: JSON, the marker, the version, the fields.
fn parse(bytes: &[u8]) -> Result<BackupFile, Refused> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Refused::Empty);
    }
    if bytes.len() > MAX_BYTES {
        return Err(Refused::TooLarge);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            // Cut off in the middle, or a JSON document that is not ours and incomplete: a
            // backup starts with its marker.
            if starts_like_a_backup(bytes) {
                Refused::Truncated
            } else {
                Refused::Foreign("it is not an rtcbox backup file")
            }
        } else if starts_like_a_backup(bytes) {
            Refused::Damaged("it is not valid JSON".into())
        } else {
            Refused::Foreign("it is not a JSON document")
        }
    })?;
    let object = value
        .as_object()
        .ok_or(Refused::Foreign("it is not a JSON object"))?;
    if object.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(Refused::Foreign(
            "it has no \"format\": \"rtcbox-backup\" marker",
        ));
    }
    match object.get("version").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        Some(newer) if newer > VERSION => return Err(Refused::Newer(newer)),
        _ => return Err(Refused::UnknownVersion),
    }
    serde_json::from_value(value).map_err(|e| Refused::Damaged(shape_error(&e)))
}

/// Whether the bytes begin the way [`write`] begins a file, or are a piece of that beginning
/// (for telling a cut-off backup from some other file).
fn starts_like_a_backup(bytes: &[u8]) -> bool {
    let marker = format!("{{\"format\":\"{FORMAT}\"");
    let head: String = String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    head.starts_with(&marker) || marker.starts_with(&head)
}

/// serde's message without the value it met (which could be a secret).
fn shape_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    // "invalid type: string \"…\", expected …" names the value; keep what was expected.
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("a field is not {expected}"),
        None => message.to_owned(),
    }
}

fn checksum(contents: &Snapshot) -> String {
    let bytes = serde_json::to_vec(contents).expect("a snapshot serialises");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every value, the way rtcbox will use it.
fn validate(contents: &Snapshot, layers: &Layers<'_>) -> Result<(), Refused> {
    let invalid = |m: String| Err(Refused::Invalid(m));
    let known: Vec<&str> = SettingKey::ALL.iter().map(|k| k.db_key()).collect();
    if let Some(unknown) = contents
        .settings
        .keys()
        .find(|k| !known.contains(&k.as_str()))
    {
        return invalid(format!(
            "it holds the setting '{unknown}', which this rtcbox does not know (was it written by a newer one?)"
        ));
    }
    for key in [SettingKey::ApiKey, SettingKey::ApiSecret] {
        if !contents.settings.contains_key(key.db_key()) {
            return invalid(format!(
                "it holds no LiveKit key pair ({} is missing)",
                key.env_name()
            ));
        }
    }
    let restored = Layers {
        flags: layers.flags,
        env: layers.env,
        stored: &contents.settings,
    };
    if let Err(error) = config::resolve(&restored) {
        return invalid(format!("its settings would not start rtcbox: {error}"));
    }
    if let Some(hash) = &contents.admin_password_hash
        && argon2::PasswordHash::new(hash).is_err()
    {
        return invalid("its admin password hash is not a password hash".into());
    }
    for (step, stored) in &contents.wizard_steps {
        if crate::setup::wizard::Step::from_id(step).is_none() {
            return invalid(format!("it holds an unknown setup wizard step '{step}'"));
        }
        if serde_json::from_str::<serde_json::Value>(&stored.data).is_err() {
            return invalid(format!(
                "its answers to the setup wizard's '{step}' step are damaged"
            ));
        }
    }
    for c in &contents.certificates {
        if !matches!(c.source.as_str(), "self-signed" | "acme") {
            return invalid(format!(
                "its certificate '{}' comes from an unknown source",
                c.id
            ));
        }
        if let Err(error) =
            crate::tls::TlsCertificates::from_pem(&c.cert_pem, &c.key_pem, &c.source)
        {
            return invalid(format!(
                "its certificate '{}' cannot be served: {error:#}",
                c.id
            ));
        }
    }
    for a in &contents.acme_accounts {
        if serde_json::from_str::<instant_acme::AccountCredentials>(&a.credentials).is_err() {
            return invalid(format!("its ACME account for {} is damaged", a.directory));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
