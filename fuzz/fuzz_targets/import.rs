//! `rtcbox import` (src/import): the first byte says which reader gets the text (livekit.yaml,
//! an lk-jwt-service env file, coturn's turnserver.conf), then the plan. Whatever the text,
//! readers and plan return; every entry's line lies within the text; every value the plan
//! would store passes the parser the next start uses; the table never depends on a secret's
//! value. (Whether the plan's messages quote a secret is left to the unit tests: the file's
//! own text may hold the secret's by chance, in key names or as one of the notes' words, and
//! three checks of it here failed on such chances, never on a leak.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbox::config::{SettingKey, check_value};
use rtcbox::import::{Parsed, Sources, coturn, env_file, livekit_yaml, plan, render, rows};

fuzz_target!(|data: &[u8]| {
    let Some((which, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    // Lines as YAML counts them: a lone CR breaks a line too.
    let lines = text
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .lines()
        .count() as u64
        + 1;
    let Some(parsed) = parse(*which, &text) else {
        return;
    };
    for entry in &parsed.entries {
        assert!(
            entry.line >= 1 && entry.line <= lines,
            "{entry:?} of {lines}"
        );
    }
    let no_files = |_: &str| Err::<String, String>("not here".into());
    let Ok(plan) = plan(&sources(*which, parsed), &Default::default(), &no_files) else {
        return;
    };
    for change in &plan.changes {
        assert_eq!(
            check_value(change.key, &change.value),
            Ok(()),
            "{:?}",
            change.key
        );
    }
    let table = render(&rows(&plan, &Default::default()), &plan);
    for (i, change) in plan.changes.iter().enumerate() {
        let secret = matches!(
            change.key,
            SettingKey::ApiSecret | SettingKey::TurnSharedSecret
        );
        if !secret || change.value.len() < 8 {
            continue;
        }
        // The table never depends on a secret's value: with another value of the same length
        // it is the same table. (Its text may still be in the table where the file has it
        // elsewhere too, e.g. in the name of a key rtcbox does not import, which the table
        // names as spelled, once per key under it.)
        let mut other = plan.clone();
        if let Some(swapped) = other.changes.get_mut(i) {
            swapped.value = another_of_the_same_length(&change.value);
        }
        assert_eq!(
            render(&rows(&other, &Default::default()), &other),
            table,
            "the table shows a secret"
        );
    }
});

/// The reader the first byte names.
fn parse(which: u8, text: &str) -> Option<Parsed> {
    match which % 3 {
        0 => livekit_yaml::parse("livekit.yaml", text).ok(),
        1 => Some(env_file::parse("jwt.env", text)),
        _ => Some(coturn::parse("turnserver.conf", text)),
    }
}

/// `parsed` as the sources of the reader the first byte names.
fn sources(which: u8, parsed: Parsed) -> Sources {
    let mut sources = Sources {
        livekit: None,
        env: None,
        coturn: None,
    };
    match which % 3 {
        0 => sources.livekit = Some(parsed),
        1 => sources.env = Some(parsed),
        _ => sources.coturn = Some(parsed),
    }
    sources
}

/// A string of the same length in bytes and characters as `value` that differs from it in
/// every character.
fn another_of_the_same_length(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            let pair = match c.len_utf8() {
                1 => ['x', 'y'],
                2 => ['é', 'è'],
                3 => ['€', '₤'],
                _ => ['𝄞', '𝄢'],
            };
            if pair[0] == c { pair[1] } else { pair[0] }
        })
        .collect()
}
