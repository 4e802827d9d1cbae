//! From the files' entries to the settings rtcbox stores: the mapping, what cannot be carried
//! over, and the plan as a table. Pure functions; see the module doc of `import`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{Entry, ImportError, Parsed, Sources, livekit_yaml};
use crate::config::{self, Origin, SettingKey};

/// What an import would store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// At most one per setting, in [`SettingKey`] order.
    pub changes: Vec<Change>,
    /// What cannot be carried over, with what to do instead.
    pub warnings: Vec<String>,
    /// What was ignored and needs nothing.
    pub notes: Vec<String>,
}

/// One setting the sources give a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: SettingKey,
    /// The value in the settings store's text form (a secret in clear: never print it).
    pub value: String,
    /// Where it came from, e.g. `livekit.yaml: rtc.udp_port (line 7)`.
    pub from: String,
}

/// Synology's High Availability reserves these ports (LiveKit's defaults 7880-7882 among them).
const SYNOLOGY_HA: std::ops::RangeInclusive<u16> = 7400..=7999;

/// The plan for `sources`. `current` holds the raw values the settings have now (flags,
/// environment, store), for the checks that involve settings the files do not mention;
/// `read_file` reads a file a source names (a key file).
pub fn plan(
    sources: &Sources,
    current: &BTreeMap<SettingKey, String>,
    read_file: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Plan, ImportError> {
    let mut b = Builder::default();
    b.key_pair(sources, read_file)?;
    if let Some(lk) = &sources.livekit {
        b.livekit(lk)?;
    }
    if let Some(env) = &sources.env {
        b.lk_jwt_env(env)?;
    }
    if let Some(coturn) = &sources.coturn {
        b.coturn(coturn, sources.livekit.as_ref())?;
    }
    if let Some(lk) = &sources.livekit {
        b.livekit_after(lk, sources.coturn.is_some(), current);
    }
    b.ports(current)?;
    for parsed in [&sources.livekit, &sources.env, &sources.coturn]
        .into_iter()
        .flatten()
    {
        b.leftovers(parsed);
    }
    Ok(Plan {
        changes: b.changes.into_values().collect(),
        warnings: b.warnings,
        notes: b.notes,
    })
}

/// What happens to one change when it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Set,
    /// The setting already has this value.
    Unchanged,
    /// A flag or environment variable of this very command pins the setting; the store is
    /// not changed (the pin would win anyway).
    Locked(Origin),
}

/// A line of the plan's table. Secret values are masked here already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub key: SettingKey,
    pub action: Action,
    pub new: String,
    pub now: String,
    pub from: String,
}

/// The plan against the current raw values and their origins.
pub fn rows(plan: &Plan, current: &BTreeMap<SettingKey, (String, Origin)>) -> Vec<Row> {
    let pinned = |key: SettingKey| match current.get(&key) {
        Some((_, origin @ (Origin::Flag(_) | Origin::Env(_)))) => Some(origin.clone()),
        _ => None,
    };
    // The key and the secret are one pair: if either is pinned, neither is stored.
    let pair_pin = pinned(SettingKey::ApiKey).or_else(|| pinned(SettingKey::ApiSecret));
    plan.changes
        .iter()
        .map(|change| {
            let key = change.key;
            let lock = match key {
                SettingKey::ApiKey | SettingKey::ApiSecret => pair_pin.clone(),
                _ => pinned(key),
            };
            let now = current.get(&key);
            let action = match (lock, now) {
                (Some(origin), _) => Action::Locked(origin),
                (None, Some((value, _))) if value.trim() == change.value.trim() => {
                    Action::Unchanged
                }
                _ => Action::Set,
            };
            Row {
                key,
                action,
                new: if key.is_secret() {
                    format!("(secret, {} bytes)", change.value.len())
                } else {
                    change.value.clone()
                },
                now: match now {
                    Some((_, origin)) if key.is_secret() => format!("(set, hidden; {origin})"),
                    Some((value, origin)) => format!("{value} ({origin})"),
                    None => "(default)".to_owned(),
                },
                from: change.from.clone(),
            }
        })
        .collect()
}

/// The plan as the command prints it: a table, then warnings and notes.
pub fn render(rows: &[Row], plan: &Plan) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("The files set no setting rtcbox has.\n");
    } else {
        let table: Vec<[String; 5]> = rows
            .iter()
            .map(|row| {
                let action = match &row.action {
                    Action::Set => "set".to_owned(),
                    Action::Unchanged => "unchanged".to_owned(),
                    Action::Locked(_) => "LOCKED, not changed".to_owned(),
                };
                [
                    action,
                    row.key.env_name().to_owned(),
                    row.new.clone(),
                    row.now.clone(),
                    row.from.clone(),
                ]
            })
            .collect();
        let header = ["action", "setting", "new value", "now", "from"].map(str::to_owned);
        let mut widths = [0usize; 5];
        for line in std::iter::once(&header).chain(&table) {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for line in std::iter::once(&header).chain(&table) {
            let mut text = String::new();
            for (cell, width) in line.iter().zip(widths) {
                let _ = write!(text, "{cell:<width$}  ");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        for row in rows {
            if let Action::Locked(origin) = &row.action {
                let _ = writeln!(
                    out,
                    "{} is locked by {origin} of this command: the import leaves it alone; \
                     remove it there to use the imported value.",
                    row.key.env_name()
                );
            }
        }
    }
    for (title, lines) in [
        ("Not carried over (what to do instead)", &plan.warnings),
        ("Ignored", &plan.notes),
    ] {
        if !lines.is_empty() {
            let _ = writeln!(out, "\n{title}:");
            for line in lines {
                let _ = writeln!(out, "  - {line}");
            }
        }
    }
    out
}

#[derive(Default)]
struct Builder {
    changes: BTreeMap<SettingKey, Change>,
    warnings: Vec<String>,
    notes: Vec<String>,
    /// Entries already accounted for, per file: `(file, key)`.
    used: BTreeSet<(String, String)>,
}

/// A key pair found in one source.
struct Pair {
    key: String,
    secret: String,
    file: String,
    line: u64,
    /// The key in the source, e.g. `keys.lkprod` or `LIVEKIT_KEY`.
    source_key: String,
}

impl Builder {
    /// Takes `entry` of `parsed` as `key`'s value after checking it with the setting's parser.
    fn set(
        &mut self,
        key: SettingKey,
        value: &str,
        parsed: &Parsed,
        entry: &Entry,
    ) -> Result<(), ImportError> {
        let from = place(parsed, entry);
        self.set_from(key, value, &parsed.file, entry.line, &entry.key, from)
    }

    fn set_from(
        &mut self,
        key: SettingKey,
        value: &str,
        file: &str,
        line: u64,
        source_key: &str,
        from: String,
    ) -> Result<(), ImportError> {
        let value = value.trim();
        config::check_value(key, value).map_err(|message| ImportError::Value {
            file: file.to_owned(),
            line,
            key: source_key.to_owned(),
            message,
        })?;
        self.changes.insert(
            key,
            Change {
                key,
                value: value.to_owned(),
                from,
            },
        );
        Ok(())
    }

    fn mark(&mut self, parsed: &Parsed, key: &str) {
        self.used.insert((parsed.file.clone(), key.to_owned()));
    }

    /// The entry `key` of `parsed`, marked as accounted for.
    fn take<'a>(&mut self, parsed: &'a Parsed, key: &str) -> Option<&'a Entry> {
        self.mark(parsed, key);
        parsed.get(key)
    }

    /// The API key pair. LiveKit verifies tokens with every pair in `keys`; lk-jwt-service signs
    /// with its one. rtcbox keeps one pair: lk-jwt-service's if LiveKit knows it (tokens Element
    /// Call holds keep verifying), else LiveKit's first.
    fn key_pair(
        &mut self,
        sources: &Sources,
        read_file: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<(), ImportError> {
        let livekit = match &sources.livekit {
            Some(lk) => self.livekit_pairs(lk, read_file)?,
            None => Vec::new(),
        };
        let env = match &sources.env {
            Some(env) => self.env_pair(env, read_file),
            None => None,
        };
        let chosen = match (env, livekit.is_empty()) {
            (None, true) => return Ok(()),
            (Some(env), true) => env,
            (env, false) => {
                let known = env
                    .as_ref()
                    .and_then(|e| livekit.iter().position(|p| p.key == e.key));
                if let (Some(env), Some(at)) = (&env, known) {
                    if env.secret != livekit[at].secret {
                        self.warnings.push(format!(
                            "{}: {} '{}' has a different secret in livekit.yaml; LiveKit \
                             refused lk-jwt-service's tokens. rtcbox takes livekit.yaml's secret.",
                            env.file, env.source_key, env.key
                        ));
                    }
                } else if let Some(env) = &env {
                    self.warnings.push(format!(
                        "{}: {} '{}' is not among livekit.yaml's keys (LiveKit never accepted \
                         its tokens); rtcbox takes livekit.yaml's key '{}'.",
                        env.file, env.source_key, env.key, livekit[0].key
                    ));
                }
                let at = known.unwrap_or(0);
                let others: Vec<String> = livekit
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != at)
                    .map(|(_, p)| format!("'{}'", p.key))
                    .collect();
                if !others.is_empty() {
                    self.warnings.push(format!(
                        "livekit.yaml has {} API keys; rtcbox keeps one pair, '{}'. Tokens \
                         minted with {} stop verifying: point those tools at the key '{}' \
                         (its secret is in the same file).",
                        livekit.len(),
                        livekit[at].key,
                        others.join(", "),
                        livekit[at].key
                    ));
                }
                livekit.into_iter().nth(at).expect("the index is in range")
            }
        };
        let from = format!(
            "{}: {} (line {})",
            chosen.file, chosen.source_key, chosen.line
        );
        self.set_from(
            SettingKey::ApiKey,
            &chosen.key,
            &chosen.file,
            chosen.line,
            &chosen.source_key,
            from.clone(),
        )?;
        self.set_from(
            SettingKey::ApiSecret,
            &chosen.secret,
            &chosen.file,
            chosen.line,
            &chosen.source_key,
            from,
        )
        .map_err(|e| {
            e.with_advice(
                "LiveKit accepts short secrets only in development mode; make a new pair, use \
                 it in livekit.yaml and lk-jwt-service (or let rtcbox generate one by importing \
                 without it)",
            )
        })
    }

    /// livekit.yaml's `keys` (or the file its `key_file` names), in file order.
    fn livekit_pairs(
        &mut self,
        lk: &Parsed,
        read_file: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Vec<Pair>, ImportError> {
        let from_entries = |parsed: &Parsed, prefix: &str| -> Result<Vec<Pair>, ImportError> {
            parsed
                .entries
                .iter()
                .filter_map(|e| Some((e, e.key.strip_prefix(prefix)?)))
                .map(|(e, name)| {
                    if !e.is_text {
                        return Err(ImportError::Value {
                            file: parsed.file.clone(),
                            line: e.line,
                            key: e.key.clone(),
                            message: "YAML reads this secret as a number or boolean; put it \
                                      in quotes"
                                .into(),
                        });
                    }
                    Ok(Pair {
                        key: name.to_owned(),
                        secret: e.value.clone(),
                        file: parsed.file.clone(),
                        line: e.line,
                        source_key: e.key.clone(),
                    })
                })
                .collect()
        };
        let inline = from_entries(lk, "keys.")?;
        for e in lk.entries.iter().filter(|e| e.key.starts_with("keys.")) {
            self.used.insert((lk.file.clone(), e.key.clone()));
        }
        let key_file = self.take(lk, "key_file").cloned();
        let Some(key_file) = key_file.filter(|e| !e.value.is_empty()) else {
            return Ok(inline);
        };
        if !inline.is_empty() {
            self.notes.push(format!(
                "{}: key_file (line {}) is not read: LiveKit uses keys when both are set",
                lk.file, key_file.line
            ));
            return Ok(inline);
        }
        match read_file(&key_file.value) {
            Ok(text) => {
                let parsed = livekit_yaml::parse(&key_file.value, &text)?;
                from_entries(&parsed, "")
            }
            Err(error) => {
                self.warnings.push(format!(
                    "{}: key_file (line {}) names {}, which cannot be read here ({error}); its \
                     keys are not imported. Run the import where the file is, or copy it.",
                    lk.file, key_file.line, key_file.value
                ));
                Ok(Vec::new())
            }
        }
    }

    /// lk-jwt-service's pair, in its precedence: LIVEKIT_KEY_FILE, the *_FROM_FILE pair, the
    /// plain values (the same order as `config`'s aliases).
    fn env_pair(
        &mut self,
        env: &Parsed,
        read_file: &dyn Fn(&str) -> Result<String, String>,
    ) -> Option<Pair> {
        let names = [
            "LIVEKIT_KEY_FILE",
            "LIVEKIT_KEY_FROM_FILE",
            "LIVEKIT_SECRET_FROM_FILE",
            "LIVEKIT_KEY",
            "LIVEKIT_SECRET",
        ];
        let [key_file, key_from, secret_from, key, secret] =
            names.map(|name| self.take(env, name).filter(|e| !e.value.trim().is_empty()));
        let pair = |key: String, secret: String, e: &Entry| Pair {
            key,
            secret,
            file: env.file.clone(),
            line: e.line,
            source_key: e.key.clone(),
        };
        let mut unreadable = |e: &Entry, error: String| {
            self.warnings.push(format!(
                "{}: {} (line {}) names {}, which cannot be used here ({error}); the key pair \
                 is not taken from it. Run the import where the file is, or copy it.",
                env.file, e.key, e.line, e.value
            ));
        };
        if let Some(e) = key_file {
            match read_file(e.value.trim()).and_then(|text| config::split_key_file(&text)) {
                Ok((k, s)) => return Some(pair(k, s, e)),
                Err(error) => unreadable(e, error),
            }
        }
        if let (Some(k), Some(s)) = (key_from, secret_from) {
            let trim = |t: String| t.trim_matches([' ', '\r', '\n', '\t']).to_owned();
            match (read_file(k.value.trim()), read_file(s.value.trim())) {
                (Ok(key), Ok(secret)) => return Some(pair(trim(key), trim(secret), k)),
                (Err(error), _) => unreadable(k, error),
                (_, Err(error)) => unreadable(s, error),
            }
        }
        match (key, secret) {
            (Some(k), Some(s)) => Some(pair(k.value.trim().to_owned(), s.value.clone(), k)),
            (Some(e), None) | (None, Some(e)) => {
                self.warnings.push(format!(
                    "{}: {} (line {}) has no partner (LIVEKIT_KEY needs LIVEKIT_SECRET); the key \
                     pair is not taken from this file",
                    env.file, e.key, e.line
                ));
                None
            }
            (None, None) => None,
        }
    }

    fn livekit(&mut self, lk: &Parsed) -> Result<(), ImportError> {
        let range = (
            self.take(lk, "rtc.port_range_start"),
            self.take(lk, "rtc.port_range_end"),
        );
        if let Some(e) = self.take(lk, "rtc.udp_port") {
            // Newer LiveKit takes a range of mux ports; rtcbox multiplexes on one.
            let first = e.value.split('-').next().unwrap_or_default().trim();
            if first != e.value.trim() {
                self.warnings.push(format!(
                    "{}: rtc.udp_port (line {}) is the range {}; rtcbox receives every peer on one \
                     UDP port and keeps {first}. The router needs only {first}/udp forwarded.",
                    lk.file, e.line, e.value
                ));
            }
            self.set(SettingKey::RtcUdpPort, first, lk, e)?;
            if let (Some(start), _) | (_, Some(start)) = range {
                self.notes.push(format!(
                    "{}: rtc.port_range_start/end (line {}) are not used: LiveKit ignores them \
                     when rtc.udp_port is set, and so does rtcbox",
                    lk.file, start.line
                ));
            }
        } else if let (Some(start), end) = range {
            self.set(SettingKey::RtcUdpPort, &start.value, lk, start)?;
            let end = end.map_or_else(|| "?".to_owned(), |e| e.value.clone());
            self.warnings.push(format!(
                "{}: rtc.port_range_start/end (line {}) is {}-{end}, one port per peer; rtcbox \
                 receives every peer on one UDP port and keeps {}. The router needs only {}/udp \
                 forwarded; the rest of the range can be closed.",
                lk.file,
                start.line,
                start.value,
                start.value.trim(),
                start.value.trim()
            ));
        }
        if let Some(e) = self.take(lk, "rtc.tcp_port") {
            self.set(SettingKey::RtcTcpPort, &e.value, lk, e)?;
        }
        if let Some(e) = self.take(lk, "rtc.node_ip").filter(|e| !e.value.is_empty()) {
            self.set(SettingKey::NodeIp, &e.value, lk, e)?;
        }
        if let Some(e) = self
            .take(lk, "rtc.stun_servers")
            .filter(|e| !e.value.is_empty())
        {
            self.set(SettingKey::StunServers, &e.value, lk, e)?;
        }
        if let Some(e) = self.take(lk, "room.auto_create") {
            self.set(SettingKey::AutoCreateRooms, &e.value, lk, e)?;
            if self.changes[&SettingKey::AutoCreateRooms].value == "true" {
                self.warnings.push(format!(
                    "{}: room.auto_create (line {}) is true, so anyone with a token creates rooms; \
                     with MatrixRTC only full-access homeservers should. Consider \
                     RTCBOX_AUTO_CREATE_ROOMS=false in the admin panel's settings.",
                    lk.file, e.line
                ));
            }
        }
        let turn_on = self
            .take(lk, "turn.enabled")
            .is_some_and(|e| e.value == "true");
        for (path, key) in [
            ("turn.udp_port", SettingKey::TurnPort),
            ("turn.tls_port", SettingKey::TurnTlsPort),
        ] {
            match self.take(lk, path) {
                Some(e) if turn_on => self.set(key, &e.value, lk, e)?,
                Some(e) => self.notes.push(format!(
                    "{}: {path} (line {}) is not used: LiveKit's TURN was off",
                    lk.file, e.line
                )),
                None => {}
            }
        }
        Ok(())
    }

    /// livekit.yaml's points that depend on the other files: the signaling port, the public IP
    /// and TURN being off.
    fn livekit_after(
        &mut self,
        lk: &Parsed,
        coturn_given: bool,
        current: &BTreeMap<SettingKey, String>,
    ) {
        if let Some(e) = self.take(lk, "port") {
            let bind = self.value_or(SettingKey::HttpBind, current, config::DEFAULT_HTTP_BIND);
            self.warnings.push(format!(
                "{}: port (line {}) {}: rtcbox serves LiveKit signaling and the authorization \
                 service on one listener, {bind} (RTCBOX_HTTP_BIND). Point the reverse proxy's \
                 SFU location (/livekit/sfu or the SFU host) and its JWT location at it.",
                lk.file, e.line, e.value
            ));
        }
        if let Some(e) = self
            .take(lk, "rtc.use_external_ip")
            .filter(|e| e.value == "true")
        {
            if let Some(ip) = self.changes.get(&SettingKey::NodeIp) {
                self.notes.push(format!(
                    "{}: rtc.use_external_ip (line {}): rtcbox advertises the imported \
                     address {}",
                    lk.file, e.line, ip.value
                ));
            } else {
                self.warnings.push(format!(
                    "{}: rtc.use_external_ip (line {}): rtcbox does not look up its public IP \
                     at every start; it advertises RTCBOX_NODE_IP. The setup wizard's network \
                     step detects the public IP and stores it; or set it in the admin panel's \
                     settings.",
                    lk.file, e.line
                ));
            }
        }
        let turn_on = lk.get("turn.enabled").is_some_and(|e| e.value == "true");
        if !turn_on && !coturn_given {
            let port = self.value_or(SettingKey::TurnPort, current, "3478");
            let tls = self.value_or(SettingKey::TurnTlsPort, current, "5349");
            self.notes.push(format!(
                "{}: LiveKit's TURN was off; rtcbox's TURN server stays on (UDP/TCP {port}, TLS \
                 {tls}) for clients behind strict firewalls. RTCBOX_TURN_PORT=0 and \
                 RTCBOX_TURN_TLS_PORT=0 in rtcbox's environment turn it off.",
                lk.file
            ));
        }
    }

    fn lk_jwt_env(&mut self, env: &Parsed) -> Result<(), ImportError> {
        if let Some(e) = self.take(env, "LIVEKIT_URL") {
            self.set(SettingKey::PublicUrl, &e.value, env, e)?;
        }
        let local = self.take(env, "LIVEKIT_LOCAL_HOMESERVERS");
        match self.take(env, "LIVEKIT_FULL_ACCESS_HOMESERVERS") {
            Some(e) => self.set(SettingKey::FullAccessHomeservers, &e.value, env, e)?,
            None => {
                if let Some(e) = local {
                    self.set(SettingKey::FullAccessHomeservers, &e.value, env, e)?;
                    self.notes.push(format!(
                        "{}: LIVEKIT_LOCAL_HOMESERVERS (line {}) is lk-jwt-service's old name \
                         (removed in v0.5.0); imported as the full-access homeservers",
                        env.file, e.line
                    ));
                }
            }
        }
        let bind = self.take(env, "LIVEKIT_JWT_BIND");
        let port = self.take(env, "LIVEKIT_JWT_PORT");
        match (bind, port) {
            (Some(e), other) => {
                self.set(SettingKey::HttpBind, &e.value, env, e)?;
                if let Some(port) = other {
                    self.notes.push(format!(
                        "{}: LIVEKIT_JWT_PORT (line {}) is not used: LIVEKIT_JWT_BIND is set",
                        env.file, port.line
                    ));
                }
            }
            (None, Some(e)) => {
                let bind = format!("0.0.0.0:{}", e.value.trim());
                self.set(SettingKey::HttpBind, &bind, env, e)?;
            }
            (None, None) => {}
        }
        let lookup = |name: &str| env.get(name).map(|e| e.value.clone());
        for warning in config::ignored_env_warnings(&lookup) {
            let name = warning.split_whitespace().next().unwrap_or_default();
            if name != "LIVEKIT_LOCAL_HOMESERVERS" {
                self.warnings.push(format!("{}: {warning}", env.file));
            }
            self.mark(env, name);
        }
        Ok(())
    }

    fn coturn(&mut self, coturn: &Parsed, livekit: Option<&Parsed>) -> Result<(), ImportError> {
        let use_secret = self.take(coturn, "use-auth-secret").is_some();
        let secrets: Vec<&Entry> = coturn
            .entries
            .iter()
            .filter(|e| e.key == "static-auth-secret")
            .collect();
        self.mark(coturn, "static-auth-secret");
        match (secrets.first(), use_secret) {
            (Some(e), true) => {
                self.set(SettingKey::TurnSharedSecret, &e.value, coturn, e)
                    .map_err(|error| {
                        error.with_advice(
                            "Synapse's turn_shared_secret must equal it: make a new one, put it \
                             in homeserver.yaml and import again (or import without \
                             --coturn-conf and let the setup wizard make one)",
                        )
                    })?;
                if secrets.len() > 1 {
                    self.warnings.push(format!(
                        "{}: static-auth-secret appears {} times; rtcbox keeps the first (line \
                         {}). Credentials made with the others stop working.",
                        coturn.file,
                        secrets.len(),
                        e.line
                    ));
                }
            }
            (Some(e), false) => self.warnings.push(format!(
                "{}: static-auth-secret (line {}) is not imported: use-auth-secret is not set, \
                 so coturn did not use it",
                coturn.file, e.line
            )),
            (None, _) => {}
        }
        for (name, key) in [
            ("listening-port", SettingKey::TurnPort),
            ("tls-listening-port", SettingKey::TurnTlsPort),
        ] {
            if let Some(e) = self.take(coturn, name) {
                if let Some(old) = self.changes.get(&key)
                    && old.value != e.value.trim()
                {
                    self.notes.push(format!(
                        "{}: {name} (line {}) {} replaces {} from {}: Synapse's turn_uris \
                             name coturn's port, and LiveKit clients learn the TURN port from \
                             rtcbox",
                        coturn.file, e.line, e.value, old.value, old.from
                    ));
                }
                self.set(key, &e.value, coturn, e)?;
            }
        }
        match (self.take(coturn, "min-port"), self.take(coturn, "max-port")) {
            (Some(min), Some(max)) => {
                let range = format!("{}-{}", min.value.trim(), max.value.trim());
                self.set(SettingKey::TurnRelayPorts, &range, coturn, min)?;
            }
            (Some(e), None) | (None, Some(e)) => self.warnings.push(format!(
                "{}: {} (line {}) is not imported without its partner (min-port and max-port \
                 make the relay range together)",
                coturn.file, e.key, e.line
            )),
            (None, None) => {}
        }
        if let Some(e) = self.take(coturn, "external-ip") {
            // `public` or `public/private`.
            let public = e.value.split('/').next().unwrap_or_default().trim();
            match self.changes.get(&SettingKey::NodeIp) {
                Some(ip) if ip.value != public => self.warnings.push(format!(
                    "{}: external-ip (line {}) {public} differs from {} ({}); rtcbox keeps \
                     LiveKit's. Media and TURN relays are advertised on one address.",
                    coturn.file, e.line, ip.value, ip.from
                )),
                Some(_) => {}
                None => {
                    self.set(SettingKey::NodeIp, public, coturn, e)?;
                    if livekit.is_some() {
                        self.notes.push(format!(
                            "{}: external-ip (line {}) becomes the address advertised for \
                             media too",
                            coturn.file, e.line
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Ports that would collide are refused; ports Synology reserves, and a relay range that
    /// covers a listener, are warned about.
    fn ports(&mut self, current: &BTreeMap<SettingKey, String>) -> Result<(), ImportError> {
        let value = |key: SettingKey, default: &str| self.value_or(key, current, default);
        let port_of_bind = |bind: String| {
            config::parse_bind(&bind)
                .map(|a| a.port())
                .unwrap_or_default()
        };
        let port = |key: SettingKey, default: u16| {
            value(key, &default.to_string())
                .trim()
                .parse::<u16>()
                .unwrap_or_default()
        };
        let http = port_of_bind(value(SettingKey::HttpBind, config::DEFAULT_HTTP_BIND));
        let admin = port_of_bind(value(SettingKey::AdminBind, config::DEFAULT_ADMIN_BIND));
        let udp = port(SettingKey::RtcUdpPort, config::DEFAULT_RTC_UDP_PORT);
        let tcp = port(SettingKey::RtcTcpPort, config::DEFAULT_RTC_TCP_PORT);
        let turn = port(SettingKey::TurnPort, config::DEFAULT_TURN_PORT);
        let turns = port(SettingKey::TurnTlsPort, config::DEFAULT_TURN_TLS_PORT);
        let listeners = [
            (SettingKey::HttpBind, "tcp", http),
            (SettingKey::AdminBind, "tcp", admin),
            (SettingKey::RtcTcpPort, "tcp", tcp),
            (SettingKey::TurnPort, "tcp", turn),
            (SettingKey::TurnTlsPort, "tcp", turns),
            (SettingKey::RtcUdpPort, "udp", udp),
            (SettingKey::TurnPort, "udp", turn),
        ];
        for (i, (a, proto, port)) in listeners.iter().enumerate() {
            for (b, other_proto, other) in &listeners[i + 1..] {
                let imported = self.changes.contains_key(a) || self.changes.contains_key(b);
                if *port != 0 && port == other && proto == other_proto && imported {
                    return Err(ImportError::Conflict(format!(
                        "{} and {} would both use {proto} port {port}: {}. Change one in the \
                         file and import again.",
                        a.env_name(),
                        b.env_name(),
                        [a, b]
                            .iter()
                            .map(|k| self.changes.get(k).map_or_else(
                                || format!("{} is already set so", k.env_name()),
                                |c| format!("{} comes from {}", k.env_name(), c.from)
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        if let Some(relay) = self.changes.get(&SettingKey::TurnRelayPorts)
            && let Some((first, last)) = relay.value.split_once('-')
        {
            let (first, last) = (
                first.parse::<u16>().unwrap_or(0),
                last.parse::<u16>().unwrap_or(0),
            );
            let covered: Vec<String> =
                [(SettingKey::RtcUdpPort, udp), (SettingKey::TurnPort, turn)]
                    .iter()
                    .filter(|(_, p)| (first..=last).contains(p))
                    .map(|(k, p)| format!("{} {p}", k.env_name()))
                    .collect();
            if !covered.is_empty() {
                self.warnings.push(format!(
                    "the TURN relay range {first}-{last} ({}) includes {}; rtcbox's relays \
                         skip ports in use, but a smaller range that leaves them out is clearer \
                         (RTCBOX_TURN_RELAY_PORTS)",
                    relay.from,
                    covered.join(" and ")
                ));
            }
            if first <= *SYNOLOGY_HA.end() && last >= *SYNOLOGY_HA.start() {
                self.warnings.push(synology(
                    SettingKey::TurnRelayPorts,
                    &relay.value,
                    &relay.from,
                ));
            }
        }
        let synology_hits: Vec<String> = self
            .changes
            .values()
            .filter_map(|c| {
                let port = match c.key {
                    SettingKey::HttpBind | SettingKey::AdminBind => port_of_bind(c.value.clone()),
                    SettingKey::RtcUdpPort
                    | SettingKey::RtcTcpPort
                    | SettingKey::TurnPort
                    | SettingKey::TurnTlsPort => c.value.parse().unwrap_or(0),
                    _ => return None,
                };
                SYNOLOGY_HA
                    .contains(&port)
                    .then(|| synology(c.key, &port.to_string(), &c.from))
            })
            .collect();
        self.warnings.extend(synology_hits);
        Ok(())
    }

    /// The value a setting will have: imported, else current, else `default`.
    fn value_or(
        &self,
        key: SettingKey,
        current: &BTreeMap<SettingKey, String>,
        default: &str,
    ) -> String {
        self.changes
            .get(&key)
            .map(|c| c.value.clone())
            .or_else(|| current.get(&key).cloned())
            .unwrap_or_else(|| default.to_owned())
    }

    /// Whatever no rule took: a warning for what matters, a note for the rest.
    fn leftovers(&mut self, parsed: &Parsed) {
        self.notes.extend(parsed.notes.iter().cloned());
        // Each key once, at its first line (coturn repeats options such as denied-peer-ip).
        let mut ignored: Vec<(&String, u64)> = Vec::new();
        let mut warned: BTreeSet<&str> = BTreeSet::new();
        for e in &parsed.entries {
            if self.used.contains(&(parsed.file.clone(), e.key.clone())) {
                continue;
            }
            match not_carried_over(&e.key) {
                Some((group, why)) => {
                    if warned.insert(group) {
                        let line = parsed
                            .sections
                            .iter()
                            .find(|(name, _)| name == group)
                            .map_or(e.line, |(_, line)| *line);
                        self.warnings
                            .push(format!("{}: {group} (line {line}): {why}", parsed.file));
                    }
                }
                None if ignored.iter().any(|(key, _)| **key == e.key) => {}
                None => ignored.push((&e.key, e.line)),
            }
        }
        if !ignored.is_empty() {
            self.notes.push(format!(
                "{}: rtcbox has no equivalent of {}",
                parsed.file,
                ignored
                    .iter()
                    .map(|(key, line)| format!("{key} (line {line})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}

/// Keys that mattered to the old deployment and have no rtcbox equivalent: the group they
/// belong to and what to do.
fn not_carried_over(key: &str) -> Option<(&'static str, &'static str)> {
    const TABLE: &[(&str, &str, &str)] = &[
        // livekit.yaml
        (
            "redis.",
            "redis",
            "not carried over: rtcbox is a single node and keeps rooms in memory",
        ),
        (
            "webhook.",
            "webhook",
            "not carried over: rtcbox sends no webhooks",
        ),
        (
            "turn.external_tls",
            "turn.external_tls",
            "TLS for TURN was terminated by a proxy; rtcbox's TURN over TLS terminates TLS itself with its own certificate on RTCBOX_TURN_TLS_PORT, so forward that port to rtcbox directly (a TCP stream, not HTTPS)",
        ),
        (
            "turn.domain",
            "turn.domain",
            "rtcbox's TURN is named by the public URL's host name; LiveKit clients get the TURN address from rtcbox, so nothing changes for them",
        ),
        (
            "turn.cert_file",
            "turn.cert_file/key_file",
            "not carried over: rtcbox's TURN over TLS uses rtcbox's own certificate",
        ),
        (
            "turn.key_file",
            "turn.cert_file/key_file",
            "not carried over: rtcbox's TURN over TLS uses rtcbox's own certificate",
        ),
        (
            "turn.relay_range_",
            "turn.relay_range_start/end",
            "not needed: rtcbox's TURN reaches its own SFU internally; RTCBOX_TURN_RELAY_PORTS is only for legacy 1:1 calls",
        ),
        (
            "rtc.turn_servers",
            "rtc.turn_servers",
            "not carried over: rtcbox hands clients its own TURN server; keep coturn only if something else needs it",
        ),
        (
            "rtc.use_external_ip",
            "rtc.use_external_ip",
            "see the node IP",
        ),
        // lk-jwt-service
        (
            "LIVEKIT_REDIS_URL",
            "LIVEKIT_REDIS_URL",
            "not carried over: rtcbox needs no Redis",
        ),
        (
            "LIVEKIT_CS_API_URL_OVERRIDES",
            "LIVEKIT_CS_API_URL_OVERRIDES",
            "not carried over: rtcbox discovers homeservers through .well-known and SRV only",
        ),
        // coturn
        (
            "user",
            "user",
            "static TURN users are not carried over: rtcbox accepts Synapse's shared-secret credentials and its own call participants' credentials",
        ),
        (
            "lt-cred-mech",
            "lt-cred-mech",
            "static TURN users are not carried over: rtcbox accepts Synapse's shared-secret credentials and its own call participants' credentials",
        ),
        (
            "allowed-peer-ip",
            "allowed-peer-ip",
            "not carried over: rtcbox's TURN refuses private and special addresses; RTCBOX_TURN_ALLOW_PEERS opens blocks deliberately",
        ),
        (
            "cert",
            "cert/pkey",
            "not carried over: rtcbox's TURN over TLS uses rtcbox's own certificate",
        ),
        (
            "pkey",
            "cert/pkey",
            "not carried over: rtcbox's TURN over TLS uses rtcbox's own certificate",
        ),
    ];
    TABLE
        .iter()
        .find(|(prefix, _, _)| {
            key == *prefix || (prefix.ends_with(['.', '_']) && key.starts_with(prefix))
        })
        .map(|(_, group, why)| (*group, *why))
}

fn synology(key: SettingKey, value: &str, from: &str) -> String {
    format!(
        "{} {value} (from {from}) is in 7400-7999, which Synology's High Availability reserves: \
         on a Synology NAS choose another port in the admin panel's settings (rtcbox's \
         defaults avoid the range) and change the router's forwarding to match",
        key.env_name()
    )
}

/// `livekit.yaml: rtc.udp_port (line 7)`.
fn place(parsed: &Parsed, entry: &Entry) -> String {
    format!("{}: {} (line {})", parsed.file, entry.key, entry.line)
}
