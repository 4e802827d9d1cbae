//! Counters and the Prometheus text exposition format (version 0.0.4) for `/metrics`.
//!
//! Components count in plain atomics they own ([`Counter`], [`Gauge`]): the SFU core its
//! forwarded packets (`sfu::counters`), the TURN server its status, the connection caps their
//! refusals. The admin panel's `/metrics` handler reads them all and writes them out with
//! [`Exposition`]; the dashboard reads the same ones. Counters with no component of their own
//! are the statics below.
//!
//! The format is small enough to write by hand: `# HELP` and `# TYPE` once per family, then one
//! line per sample, `name{label="value"} number`, label values escaped.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

/// A count that only goes up (since start).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (rooms now, a bitrate).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicU64::new(0))
    }

    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Times the advertised public IP address changed since start. The public IP detection bumps
/// it (`metrics::PUBLIC_IP_CHANGES.inc()`); `/metrics` shows it as
/// `rtcbox_public_ip_changes_total`.
pub static PUBLIC_IP_CHANGES: Counter = Counter::new();
/// Admin login attempts refused by the login rate limit.
pub static LOGIN_RATE_LIMITED: Counter = Counter::new();
/// Token requests (`/sfu/get`, `/get_token`, `/delegate_delayed_leave`) refused by the
/// per-client rate limit.
pub static TOKEN_RATE_LIMITED: Counter = Counter::new();

/// The kind of a metric family, as `# TYPE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A text exposition being written: families in the order they are started, each with its
/// samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    /// The family samples are written for; set by [`Exposition::family`].
    current: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. A counter's name ends in `_total`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Exposition {
        debug_assert!(valid_name(name), "metric name {name}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"));
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self.current = name.to_owned();
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl fmt::Display) -> &mut Exposition {
        self.out.push_str(&self.current);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(name), "label name {name}");
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        value: impl fmt::Display,
    ) -> &mut Exposition {
        self.family(name, kind, help).sample(&[], value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_in_the_text_format() {
        let mut e = Exposition::new();
        e.single("rtcbox_rooms", Kind::Gauge, "Rooms open now.", 2);
        e.family(
            "rtcbox_refused_total",
            Kind::Counter,
            "Refused.\nBy reason \\ listener.",
        )
        .sample(&[("listener", "admin"), ("reason", "full")], 3)
        .sample(&[("listener", "a \"b\"\\c\nd"), ("reason", "x")], 0);
        assert_eq!(
            e.finish(),
            "# HELP rtcbox_rooms Rooms open now.\n\
             # TYPE rtcbox_rooms gauge\n\
             rtcbox_rooms 2\n\
             # HELP rtcbox_refused_total Refused.\\nBy reason \\\\ listener.\n\
             # TYPE rtcbox_refused_total counter\n\
             rtcbox_refused_total{listener=\"admin\",reason=\"full\"} 3\n\
             rtcbox_refused_total{listener=\"a \\\"b\\\"\\\\c\\nd\",reason=\"x\"} 0\n"
        );
    }

    #[test]
    fn names() {
        for good in ["a", "rtcbox_x_total", "_a:b9"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "9a", "a-b", "a b", "ä"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn counters_and_gauges() {
        let c = Counter::new();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
        let g = Gauge::new();
        g.set(7);
        g.set(3);
        assert_eq!(g.get(), 3);
    }
}
