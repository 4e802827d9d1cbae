//! The backup format: a round trip through a real database, and every kind of bad file refused
//! with nothing changed.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::*;
use crate::db;
use crate::db::backup::{AcmeAccount, Snapshot};

const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2ZkRj0dTz7pUPLAhW8UGnPqB+b9cHt5aTTEhc0u63YQ";

fn no_env(_: &str) -> Option<String> {
    None
}

fn layers<'a>(
    flags: &'a BTreeMap<SettingKey, String>,
    stored: &'a BTreeMap<String, String>,
) -> Layers<'a> {
    Layers {
        flags,
        env: &no_env,
        stored,
    }
}

/// A database with everything a backup holds: key pair and settings, a password, wizard
/// answers, a self-signed certificate, an ACME account and an import.
async fn populated() -> (tempfile::TempDir, sqlx::SqlitePool) {
    let tmp = tempfile::tempdir().unwrap();
    let pool = db::open(tmp.path()).await.unwrap();
    db::settings::ensure_key_pair(&pool).await.unwrap();
    db::settings::set(&pool, "full_access_homeservers", "example.org")
        .await
        .unwrap();
    db::settings::set(
        &pool,
        "turn_shared_secret",
        "turn-secret-0123456789abcdef0123456789",
    )
    .await
    .unwrap();
    db::admin::store_setup_token(&pool, "tok", 10_000, 1)
        .await
        .unwrap();
    assert!(
        db::admin::set_first_password(&pool, &db::admin::hash_token("tok"), PASSWORD_HASH, 2)
            .await
            .unwrap()
    );
    db::admin::save_wizard_step(
        &pool,
        "homeserver",
        r#"{"server_name":"example.org"}"#,
        true,
        3,
    )
    .await
    .unwrap();
    crate::tls::TlsCertificates::load_or_create(&pool, &["rtc.example.org".to_owned()])
        .await
        .unwrap();
    db::acme::store_account(&pool, "https://acme.test/dir", &acme_credentials(), 4)
        .await
        .unwrap();
    db::imports::store(
        &pool,
        &[],
        &db::imports::ImportRecord {
            imported_at: 5,
            sources: "livekit.yaml (/etc/livekit.yaml)".into(),
            settings: vec!["RTCBOX_API_KEY".into()],
        },
    )
    .await
    .unwrap();
    (tmp, pool)
}

/// instant-acme's credentials JSON with a fresh key.
fn acme_credentials() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let der = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.serialize_der());
    format!(
        r#"{{"id":"https://acme.test/acct/1","key_pkcs8":"{der}","directory":"https://acme.test/dir"}}"#
    )
}

async fn backup_of(pool: &sqlx::SqlitePool) -> (Snapshot, Vec<u8>) {
    let snapshot = db::backup::snapshot(pool).await.unwrap();
    let bytes = write(snapshot.clone(), 1_764_850_000);
    (snapshot, bytes)
}

#[tokio::test]
async fn a_backup_restored_into_an_empty_database_is_the_same() {
    let (_tmp, pool) = populated().await;
    let (snapshot, bytes) = backup_of(&pool).await;
    assert_eq!(snapshot.certificates.len(), 1);
    assert_eq!(snapshot.acme_accounts.len(), 1);
    assert_eq!(snapshot.admin_password_hash.as_deref(), Some(PASSWORD_HASH));
    assert!(snapshot.settings.contains_key("api_secret"));
    // It says what it is.
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.starts_with("{\n  \"format\": \"rtcbox-backup\",\n  \"version\": 1,"),
        "{text}"
    );

    let other = tempfile::tempdir().unwrap();
    let fresh = db::open(other.path()).await.unwrap();
    let flags = BTreeMap::new();
    let restored = restore(&fresh, &bytes, &flags, &no_env, 99).await.unwrap();
    assert_eq!(restored, snapshot);
    assert_eq!(db::backup::snapshot(&fresh).await.unwrap(), snapshot);
    assert_eq!(
        db::admin::account(&fresh).await.unwrap(),
        db::admin::AccountState::Ready {
            password_hash: PASSWORD_HASH.into()
        }
    );
    // The restored certificate is the one served (not made anew).
    let served = crate::tls::TlsCertificates::load_or_create(&fresh, &["rtc.example.org".into()])
        .await
        .unwrap();
    assert_eq!(
        db::backup::snapshot(&fresh).await.unwrap().certificates,
        snapshot.certificates
    );
    assert_eq!(served.info().not_after, snapshot.certificates[0].not_after);
}

#[tokio::test]
async fn a_restore_replaces_what_was_there_and_logs_everyone_out() {
    let (_tmp, source) = populated().await;
    let (snapshot, bytes) = backup_of(&source).await;
    let (_tmp2, target) = populated().await;
    db::settings::set(&target, "node_ip", "203.0.113.9")
        .await
        .unwrap();
    db::admin::create_session(&target, "session-id", "csrf", 10, 10_000)
        .await
        .unwrap();
    let flags = BTreeMap::new();
    restore(&target, &bytes, &flags, &no_env, 99).await.unwrap();
    assert_eq!(db::backup::snapshot(&target).await.unwrap(), snapshot);
    assert!(
        db::admin::session(&target, "session-id", 11)
            .await
            .unwrap()
            .is_none()
    );
}

/// Every refusal leaves the database exactly as it was.
async fn refused(bytes: &[u8]) -> Refused {
    let (_tmp, pool) = populated().await;
    let before = db::backup::snapshot(&pool).await.unwrap();
    let flags = BTreeMap::new();
    let error = match restore(&pool, bytes, &flags, &no_env, 99).await {
        Err(RestoreError::Refused(refused)) => refused,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(
        db::backup::snapshot(&pool).await.unwrap(),
        before,
        "{error}"
    );
    error
}

/// A backup file as `write` makes it, of a snapshot changed by `change` (a valid checksum).
async fn rewritten(change: impl FnOnce(&mut Snapshot)) -> Vec<u8> {
    let (_tmp, pool) = populated().await;
    let (mut snapshot, _) = backup_of(&pool).await;
    change(&mut snapshot);
    write(snapshot, 1)
}

/// The file as JSON, changed by `change`, written back (the checksum is not recomputed).
async fn edited(change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (_tmp, pool) = populated().await;
    let (_, bytes) = backup_of(&pool).await;
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    change(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[tokio::test]
async fn files_that_are_not_backups_are_refused_as_such() {
    assert_eq!(refused(b"").await, Refused::Empty);
    assert_eq!(refused(b" \n").await, Refused::Empty);
    for foreign in [
        &b"-----BEGIN CERTIFICATE-----\nMIIB...\n"[..],
        b"\x00\x01\x02\xff binary",
        b"[1, 2, 3]",
        br#"{"settings": {}}"#,
        br#"{"format": "something-else", "version": 1}"#,
        b"SQLite format 3\x00",
    ] {
        assert!(
            matches!(refused(foreign).await, Refused::Foreign(_)),
            "{}",
            String::from_utf8_lossy(foreign)
        );
    }
    let huge = vec![b' '; MAX_BYTES + 2];
    let mut huge = huge;
    huge[0] = b'{';
    assert_eq!(refused(&huge).await, Refused::TooLarge);
}

#[tokio::test]
async fn a_truncated_backup_is_refused_as_cut_off() {
    let (_tmp, pool) = populated().await;
    let (_, bytes) = backup_of(&pool).await;
    for cut in [1, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 3] {
        assert_eq!(
            refused(&bytes[..cut]).await,
            Refused::Truncated,
            "cut at {cut}"
        );
    }
}

#[tokio::test]
async fn versions_other_than_ours_are_refused() {
    let newer = edited(|v| v["version"] = 2.into()).await;
    assert_eq!(refused(&newer).await, Refused::Newer(2));
    assert!(refused(&newer).await.to_string().contains("upgrade rtcbox"));
    for version in [
        serde_json::json!(0),
        serde_json::json!("1"),
        serde_json::Value::Null,
    ] {
        let bytes = edited(|v| v["version"] = version.clone()).await;
        assert_eq!(refused(&bytes).await, Refused::UnknownVersion, "{version}");
    }
}

#[tokio::test]
async fn a_changed_backup_fails_its_checksum() {
    let changed =
        edited(|v| v["contents"]["settings"]["full_access_homeservers"] = "evil.example".into())
            .await;
    assert_eq!(refused(&changed).await, Refused::Checksum);
    let dropped_certificate =
        edited(|v| v["contents"]["certificates"] = serde_json::json!([])).await;
    assert_eq!(refused(&dropped_certificate).await, Refused::Checksum);
}

#[tokio::test]
async fn a_backup_missing_parts_is_damaged() {
    let bytes = edited(|v| {
        v["contents"].as_object_mut().unwrap().remove("settings");
    })
    .await;
    assert!(matches!(refused(&bytes).await, Refused::Damaged(_)));
    let bytes = edited(|v| v["contents"]["certificates"] = "not a list".into()).await;
    let error = refused(&bytes).await;
    assert!(matches!(error, Refused::Damaged(_)), "{error}");
    assert!(!error.to_string().contains("not a list"), "{error}");
}

#[tokio::test]
async fn a_backup_whose_values_rtcbox_cannot_use_is_refused() {
    let check = |bytes: Vec<u8>, says: &'static str| async move {
        let error = refused(&bytes).await;
        assert!(matches!(error, Refused::Invalid(_)), "{error}");
        assert!(
            error.to_string().contains(says),
            "{error} should say {says}"
        );
    };
    check(
        rewritten(|s| {
            s.settings.insert("api_secret".into(), "short".into());
        })
        .await,
        "RTCBOX_API_SECRET",
    )
    .await;
    check(
        rewritten(|s| {
            s.settings.remove("api_key");
        })
        .await,
        "no LiveKit key pair",
    )
    .await;
    check(
        rewritten(|s| {
            s.settings.insert("frobnicate".into(), "1".into());
        })
        .await,
        "frobnicate",
    )
    .await;
    check(
        rewritten(|s| s.admin_password_hash = Some("hunter2".into())).await,
        "password hash",
    )
    .await;
    check(
        rewritten(|s| {
            s.wizard_steps.insert(
                "extra".into(),
                db::backup::WizardStep {
                    data: "{}".into(),
                    complete: true,
                },
            );
        })
        .await,
        "unknown setup wizard step",
    )
    .await;
    // A certificate with another certificate's key.
    check(
        rewritten(|s| {
            s.certificates[0].key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        })
        .await,
        "certificate 'default'",
    )
    .await;
    check(
        rewritten(|s| s.certificates[0].cert_pem = "garbage".into()).await,
        "certificate 'default'",
    )
    .await;
    check(
        rewritten(|s| {
            s.acme_accounts = vec![AcmeAccount {
                directory: "https://acme.test/dir".into(),
                credentials: "{}".into(),
                created_at: 1,
            }]
        })
        .await,
        "ACME account",
    )
    .await;
}

#[tokio::test]
async fn settings_are_checked_with_the_flags_and_environment_they_will_run_with() {
    let bytes = rewritten(|s| {
        s.settings.insert("tls_mode".into(), "files".into());
    })
    .await;
    let (_tmp, pool) = populated().await;
    let empty = BTreeMap::new();
    let flags = BTreeMap::new();
    // Files mode needs both files: refused alone...
    assert!(matches!(
        read(&bytes, &layers(&flags, &empty)),
        Err(Refused::Invalid(_))
    ));
    // ...and accepted where the command line names them.
    let flags = BTreeMap::from([
        (SettingKey::TlsCertFile, "/etc/rtc/cert.pem".to_owned()),
        (SettingKey::TlsKeyFile, "/etc/rtc/key.pem".to_owned()),
    ]);
    restore(&pool, &bytes, &flags, &no_env, 1).await.unwrap();
}

#[test]
fn file_names_carry_the_time() {
    assert_eq!(
        file_name(1_764_850_000),
        "rtcbox-backup-2025-12-04-1206.json"
    );
}
