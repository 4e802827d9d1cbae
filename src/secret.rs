//! Newtypes for secrets: their `Debug` and `Display` never print the value, so a secret cannot end
//! up in a log line by accident. Read the value with `expose()`, and only where it is needed.

use std::fmt;

/// A secret string (API secret, password, access token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Random alphanumeric characters from the operating system's CSPRNG.
///
/// Alphanumerics only, so the value survives YAML, shell and `.env` files unquoted.
pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the OS random source is available");
        for &byte in &buf {
            // Rejection sampling: 62 * 4 = 248, so bytes >= 248 would bias the first letters.
            if byte < 248 && out.len() < len {
                out.push(ALPHABET[usize::from(byte % 62)] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("hunter2hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2hunter2");
    }

    #[test]
    fn random_alphanumeric_has_the_length_and_alphabet_asked_for() {
        let a = random_alphanumeric(48);
        let b = random_alphanumeric(48);
        assert_eq!(a.len(), 48);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b, "two draws of 48 characters never collide");
    }
}
