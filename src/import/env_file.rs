//! lk-jwt-service's environment as a file: docker's `--env-file` and systemd's `EnvironmentFile`
//! syntax (`KEY=VALUE`, optional `export `, optional matching quotes, `#` comment lines), and
//! docker-compose's list form (`- KEY=VALUE`), so the `environment:` lines of a compose file can
//! be pasted into a file as they are.

use super::{Entry, Parsed};

/// Every `KEY=VALUE` line; other non-empty lines are skipped with a note naming the line.
pub fn parse(file: &str, text: &str) -> Parsed {
    let mut parsed = Parsed::new(file);
    for (line, trimmed) in super::meaningful_lines(text) {
        let assignment = trimmed
            .strip_prefix("- ")
            .map(str::trim_start)
            .unwrap_or(trimmed);
        let assignment = assignment
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(assignment);
        let Some((name, value)) = assignment.split_once('=') else {
            parsed
                .notes
                .push(format!("{file} line {line}: not NAME=value, skipped"));
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            parsed.notes.push(format!(
                "{file} line {line}: '{}' is not a variable name, skipped",
                name.chars().take(40).collect::<String>()
            ));
            continue;
        }
        parsed
            .entries
            .push(Entry::text(name, unquote(value.trim()), line));
    }
    parsed
}

/// `"value"` and `'value'` lose their quotes; anything else is taken as written.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}
