//! `rtcbox import`: takes over an existing deployment of LiveKit (livekit.yaml), element-hq's
//! lk-jwt-service (its environment file) and coturn (turnserver.conf).
//!
//! Three layers, IO only at the edge:
//! - the readers ([`livekit_yaml`], [`env_file`], [`coturn`]) turn a file's text into
//!   [`Entry`]s: a key, its text and its line. Pure, never panic on garbage.
//! - [`plan()`] turns the entries into a [`Plan`]: each setting with its new value and where it
//!   came from, every value checked by the parser the next start uses
//!   ([`crate::config::check_value`]), plus warnings for what cannot be carried over and notes
//!   for what is ignored. Pure: files a source names (`LIVEKIT_KEY_FILE`, `key_file`) are read
//!   through a function the caller passes.
//! - [`command`] is the command: reads the files (never writes them), shows the plan with
//!   secrets masked, asks before replacing a stored key pair, validates the result as the next
//!   start would, and stores it with a record of the import in one transaction.

pub mod command;
pub mod coturn;
pub mod env_file;
pub mod livekit_yaml;
mod plan;

pub use plan::{Action, Change, Plan, Row, plan, render, rows};

/// One setting as a source file states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `rtc.udp_port` in livekit.yaml, `LIVEKIT_URL` in an env file, `listening-port` in coturn's.
    pub key: String,
    /// The text as written (quotes removed); empty for a switch or an empty value.
    pub value: String,
    /// 1-based line of the key.
    pub line: u64,
    /// False when YAML read the value as a number or boolean rather than a string.
    pub is_text: bool,
}

impl Entry {
    pub fn text(key: &str, value: &str, line: u64) -> Self {
        Entry {
            key: key.to_owned(),
            value: value.to_owned(),
            line,
            is_text: true,
        }
    }
}

/// What a reader found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The file as the plan names it (its file name).
    pub file: String,
    pub entries: Vec<Entry>,
    /// Lines the reader skipped, and why.
    pub notes: Vec<String>,
    /// Where each YAML mapping starts (`redis`, `turn`...), for messages about a whole section.
    pub sections: Vec<(String, u64)>,
}

impl Parsed {
    pub fn new(file: &str) -> Self {
        Parsed {
            file: file.to_owned(),
            entries: Vec::new(),
            notes: Vec::new(),
            sections: Vec::new(),
        }
    }

    /// The last entry with this key (in env and coturn files a later line overrides).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

/// The lines of a line-oriented config file (env files, turnserver.conf) that say something:
/// (1-based line number, trimmed text), without blank lines and `#` comment lines.
pub fn meaningful_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, raw)| (index as u64 + 1, raw.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// The files of the deployment being imported, each read already.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub livekit: Option<Parsed>,
    pub env: Option<Parsed>,
    pub coturn: Option<Parsed>,
}

/// Why an import stores nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    /// The file as a whole cannot be used.
    #[error("{file}: {message}")]
    Unreadable { file: String, message: String },
    /// One value cannot be used.
    #[error("{file} line {line}, {key}: {message}")]
    Value {
        file: String,
        line: u64,
        key: String,
        message: String,
    },
    /// Values that cannot work together.
    #[error("{0}")]
    Conflict(String),
}

impl ImportError {
    /// A refused value's message with advice on what to do appended; other errors unchanged.
    pub fn with_advice(self, advice: &str) -> Self {
        match self {
            ImportError::Value {
                file,
                line,
                key,
                message,
            } => ImportError::Value {
                file,
                line,
                key,
                message: format!("{message}. {advice}"),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
