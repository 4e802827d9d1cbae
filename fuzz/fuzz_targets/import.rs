//! `rtcbox import` (src/import): the first byte says which reader gets the text (livekit.yaml,
//! an lk-jwt-service env file, coturn's turnserver.conf), then the plan. Whatever the text,
//! readers and plan return; every entry's line lies within the text; every value the plan
//! would store passes the parser the next start uses; a secret never shows in the table (except
//! where the file has its text outside the secret's own value).

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
    let parsed = match which % 3 {
        0 => match livekit_yaml::parse("livekit.yaml", &text) {
            Ok(parsed) => parsed,
            Err(_) => return,
        },
        1 => env_file::parse("jwt.env", &text),
        _ => coturn::parse("turnserver.conf", &text),
    };
    for entry in &parsed.entries {
        assert!(
            entry.line >= 1 && entry.line <= lines,
            "{entry:?} of {lines}"
        );
    }
    let sources = |p: Parsed| match which % 3 {
        0 => Sources {
            livekit: Some(p),
            env: None,
            coturn: None,
        },
        1 => Sources {
            livekit: None,
            env: Some(p),
            coturn: None,
        },
        _ => Sources {
            livekit: None,
            env: None,
            coturn: Some(p),
        },
    };
    let no_files = |_: &str| Err::<String, String>("not here".into());
    let Ok(plan) = plan(&sources(parsed), &Default::default(), &no_files) else {
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
    for change in &plan.changes {
        let secret = matches!(
            change.key,
            SettingKey::ApiSecret | SettingKey::TurnSharedSecret
        );
        // The table shows what the file has besides its secrets (the API key, the names of
        // keys it does not import), and any of those may hold a secret's text too: the fuzzer
        // wrote it into a key's name, and into an API key. So the secret may show as often as
        // the file has it outside its own value, never more.
        if secret && change.value.len() >= 8 {
            let in_file = text.matches(change.value.as_str()).count();
            let shown = table.matches(change.value.as_str()).count();
            assert!(
                shown < in_file.max(1),
                "a secret in the table ({shown} times, {in_file} in the file)"
            );
        }
    }
});
