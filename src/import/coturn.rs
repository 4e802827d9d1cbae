//! coturn's `turnserver.conf`: one option a line, `name=value`, `name value` or a bare `name`
//! (a switch such as `use-auth-secret`); `#` starts a comment line. An option may appear more
//! than once (`listening-ip`, `user`...); every occurrence is kept, in order.

use super::{Entry, Parsed};

pub fn parse(file: &str, text: &str) -> Parsed {
    let mut parsed = Parsed::new(file);
    for (line, trimmed) in super::meaningful_lines(text) {
        // coturn also accepts the command-line spelling `--name=value`.
        let trimmed = trimmed.trim_start_matches('-');
        // The separator may be any whitespace, and some (U+0085, U+3000) are more than a byte.
        let split = trimmed
            .char_indices()
            .find(|&(_, c)| c == '=' || c.is_whitespace());
        let (name, value) = match split {
            Some((at, sep)) => (&trimmed[..at], trimmed[at + sep.len_utf8()..].trim()),
            None => (trimmed, ""),
        };
        let value = value.trim_matches('"');
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            parsed.notes.push(format!(
                "{file} line {line}: '{}' is not a coturn option, skipped",
                name.chars().take(40).collect::<String>()
            ));
            continue;
        }
        parsed.entries.push(Entry::text(name, value, line));
    }
    parsed
}
