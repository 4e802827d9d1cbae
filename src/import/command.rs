//! `rtcbox import`, the IO edge around [`super::plan()`]: reads the files (never writes them),
//! prints the plan (secrets masked), validates the result as the next start would resolve it,
//! asks before replacing a stored key pair, and stores settings and a record of the import in
//! one transaction. A refused import stores nothing.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{Action, Change, Sources, coturn, env_file, livekit_yaml, plan, render, rows};
use crate::cli::ImportArgs;
use crate::config::{self, Layers, SettingKey};
use crate::db::{self, imports::ImportRecord};

/// Exit status when the import needs a confirmation it did not get.
const NOT_CONFIRMED: u8 = 2;

/// Source files larger than this are not configuration files.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

pub async fn run(
    args: &ImportArgs,
    data_dir: &Path,
    flags: &BTreeMap<SettingKey, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut sources = Sources::default();
    let mut read = Vec::new();
    if let Some(path) = &args.livekit_yaml {
        let text = read_source(path, "--livekit-yaml")?;
        sources.livekit = Some(
            livekit_yaml::parse(&file_name(path), &text).map_err(|e| refused(&e.to_string()))?,
        );
        read.push(format!("livekit.yaml ({})", path.display()));
    }
    if let Some(path) = &args.env_file {
        let text = read_source(path, "--env-file")?;
        sources.env = Some(env_file::parse(&file_name(path), &text));
        read.push(format!("lk-jwt-service env ({})", path.display()));
    }
    if let Some(path) = &args.coturn_conf {
        let text = read_source(path, "--coturn-conf")?;
        sources.coturn = Some(coturn::parse(&file_name(path), &text));
        read.push(format!("coturn ({})", path.display()));
    }

    // A dry run creates no database where none is.
    let pool = if args.dry_run && !db::db_path(data_dir).exists() {
        None
    } else {
        Some(db::open(data_dir).await?)
    };
    let stored = match &pool {
        Some(pool) => db::settings::all(pool)
            .await
            .context("cannot read stored settings")?,
        None => BTreeMap::new(),
    };
    let current = config::raw_values(&Layers {
        flags,
        env,
        stored: &stored,
    })?;
    let current_values = current
        .iter()
        .map(|(key, (value, _))| (*key, value.clone()))
        .collect();
    let read_file = |path: &str| read_limited(Path::new(path)).map_err(|e| format!("{e:#}"));
    let plan = plan(&sources, &current_values, &read_file).map_err(|e| refused(&e.to_string()))?;
    let rows = rows(&plan, &current);
    println!(
        "rtcbox import from {} into {}\n",
        read.join(", "),
        data_dir.display()
    );
    print!("{}", render(&rows, &plan));

    let writes: Vec<&Change> = plan
        .changes
        .iter()
        .zip(&rows)
        .filter(|(_, row)| row.action == Action::Set)
        .map(|(change, _)| change)
        .collect();
    validate(flags, env, &stored, &writes)?;
    if writes.is_empty() {
        println!("\nNothing to store: every setting already has these values or is locked.");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(pool) = pool.filter(|_| !args.dry_run) else {
        println!(
            "\nDry run: nothing was stored. Without --dry-run, {} settings would be stored.",
            writes.len()
        );
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(old) = replaced_key(&stored, &writes)
        && !args.yes
        && !confirm(old)?
    {
        return Ok(ExitCode::from(NOT_CONFIRMED));
    }

    let values: Vec<(&str, Option<String>)> = writes
        .iter()
        .map(|c| (c.key.db_key(), Some(c.value.clone())))
        .collect();
    let record = ImportRecord {
        imported_at: db::unix_now(),
        sources: read.join(", "),
        settings: writes.iter().map(|c| c.key.env_name().to_owned()).collect(),
    };
    db::imports::store(&pool, &values, &record)
        .await
        .context("cannot store the imported settings")?;
    // As the next start would: a pair of its own when neither the files nor the store have one.
    db::settings::ensure_key_pair(&pool)
        .await
        .context("cannot store a generated key pair")?;
    println!(
        "\nStored {} settings. They take effect when rtcbox starts (restart it if it is running); \
         the admin panel's dashboard shows this import. Next: the setup wizard and its \
         verification page.",
        writes.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The stored settings with the import applied must resolve, as at the next start.
fn validate(
    flags: &BTreeMap<SettingKey, String>,
    env: &dyn Fn(&str) -> Option<String>,
    stored: &BTreeMap<String, String>,
    writes: &[&Change],
) -> anyhow::Result<()> {
    let mut next = stored.clone();
    for change in writes {
        next.insert(change.key.db_key().to_owned(), change.value.clone());
    }
    // A missing pair is generated at the next start; stand in for it (never stored).
    for (key, len) in [(SettingKey::ApiKey, 15), (SettingKey::ApiSecret, 48)] {
        next.entry(key.db_key().to_owned())
            .or_insert_with(|| crate::secret::random_alphanumeric(len));
    }
    if let Err(error) = config::resolve(&Layers {
        flags,
        env,
        stored: &next,
    }) {
        let from = writes
            .iter()
            .find(|c| c.key.env_name() == error.setting)
            .map(|c| format!(" (imported from {})", c.from))
            .unwrap_or_default();
        return Err(refused(&format!("{error}{from}")));
    }
    Ok(())
}

/// The stored API key the import replaces, if it replaces one.
fn replaced_key<'a>(stored: &'a BTreeMap<String, String>, writes: &[&Change]) -> Option<&'a str> {
    let touches_pair = writes
        .iter()
        .any(|c| matches!(c.key, SettingKey::ApiKey | SettingKey::ApiSecret));
    stored
        .get(SettingKey::ApiKey.db_key())
        .filter(|_| touches_pair)
        .map(String::as_str)
}

/// Asks on a terminal; elsewhere says how to confirm. True to go on.
fn confirm(old_key: &str) -> anyhow::Result<bool> {
    let question = format!(
        "\nThis replaces the stored API key pair (key '{old_key}'): tokens signed with it stop \
         verifying when rtcbox next starts."
    );
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "{question}\nNothing was stored. Run again with --yes to replace it (or --dry-run to \
             only look)."
        );
        return Ok(false);
    }
    print!("{question}\nReplace it? [y/N] ");
    std::io::stdout()
        .flush()
        .context("cannot write to the terminal")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    if !yes {
        println!("Nothing was stored.");
    }
    Ok(yes)
}

fn refused(why: &str) -> anyhow::Error {
    anyhow::anyhow!("the import stored nothing: {why}")
}

fn read_source(path: &Path, flag: &str) -> anyhow::Result<String> {
    read_limited(path).with_context(|| format!("{flag} {}", path.display()))
}

fn read_limited(path: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)
        .context("cannot read the file")?
        .len();
    anyhow::ensure!(
        size <= MAX_FILE_BYTES,
        "the file is {size} bytes; a configuration file is smaller than {MAX_FILE_BYTES}"
    );
    let bytes = std::fs::read(path).context("cannot read the file")?;
    String::from_utf8(bytes).context("the file is not UTF-8 text")
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
