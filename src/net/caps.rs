//! Connection caps for stream listeners: at most so many connections at once, and at most so
//! many from one address, so one client cannot fill a listener for everyone else.
//!
//! Every stream listener (TURN over TCP and TLS, ICE-TCP, the public and the admin HTTP
//! listeners) takes a [`ConnectionPermit`] for each accepted connection and holds it until the
//! connection ends. An address is an IPv4 address, or an IPv6 /64 (one subscriber's network).
//! Addresses the operator trusts to carry many clients (reverse proxies) can be exempted from
//! the per-address cap; they still count towards the total.
//!
//! Refusals are counted ([`ConnectionCaps::refusals`], shown on the dashboard) and logged at
//! most once per [`LOG_INTERVAL`] per listener, with how many were not logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Cidr, canonical};

/// The least time between two overload messages of one listener.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many connections a listener takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_address: usize,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address already holds [`Limits::per_address`] connections.
    PerAddress,
    /// The listener holds [`Limits::total`] connections.
    Full,
}

/// Connections refused since start, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    pub per_address: u64,
    pub full: u64,
}

/// The caps of one listener (or of listeners that share them); clones share the counts.
#[derive(Clone)]
pub struct ConnectionCaps {
    name: &'static str,
    limits: Limits,
    /// Shared by clones; replaced without a restart ([`ConnectionCaps::set_exempt`]).
    exempt: Arc<std::sync::RwLock<Arc<[Cidr]>>>,
    /// Said after a per-address refusal (what an operator may have to change).
    hint: &'static str,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    open: usize,
    by_address: HashMap<AddressKey, usize>,
    refusals: Refusals,
    last_log: Option<Instant>,
    unlogged: u64,
}

/// An IPv4 address (also written inside IPv6), or the /64 of an IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AddressKey {
    V4(u32),
    V6(u64),
}

impl AddressKey {
    fn of(ip: IpAddr) -> AddressKey {
        match canonical(ip) {
            IpAddr::V4(v4) => AddressKey::V4(v4.to_bits()),
            IpAddr::V6(v6) => AddressKey::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// One accepted connection's place; given back when dropped.
pub struct ConnectionPermit {
    state: Arc<Mutex<State>>,
    key: AddressKey,
}

impl ConnectionCaps {
    /// Caps for the listener `name` (in log messages, e.g. "TURN over TCP").
    pub fn new(name: &'static str, limits: Limits) -> ConnectionCaps {
        ConnectionCaps {
            name,
            limits,
            exempt: Arc::new(std::sync::RwLock::new(Arc::from([]))),
            hint: "",
            state: Arc::default(),
        }
    }

    /// What the log says after a per-address refusal, e.g. how to exempt a reverse proxy.
    pub fn with_hint(mut self, hint: &'static str) -> ConnectionCaps {
        self.hint = hint;
        self
    }

    /// Addresses not held to the per-address cap (trusted reverse proxies).
    pub fn with_exempt(self, exempt: Vec<Cidr>) -> ConnectionCaps {
        self.set_exempt(exempt);
        self
    }

    /// Replaces the exempt addresses for every clone, from the next connection on.
    pub fn set_exempt(&self, exempt: Vec<Cidr>) {
        *self.exempt.write().unwrap_or_else(|e| e.into_inner()) = exempt.into();
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The listener's name, as in the log.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A permit for a connection from `ip`, or why not (counted, and logged now and then).
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        let key = AddressKey::of(ip);
        let mut state = self.state.lock().expect("connection caps lock");
        let from_address = state.by_address.get(&key).copied().unwrap_or(0);
        let refused = if state.open >= self.limits.total {
            Some(Refused::Full)
        } else if from_address >= self.limits.per_address
            && !self
                .exempt
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|block| block.contains(ip))
        {
            Some(Refused::PerAddress)
        } else {
            None
        };
        if let Some(reason) = refused {
            match reason {
                Refused::PerAddress => state.refusals.per_address += 1,
                Refused::Full => state.refusals.full += 1,
            }
            self.log_refusal(&mut state, ip, reason);
            return Err(reason);
        }
        state.open += 1;
        *state.by_address.entry(key).or_default() += 1;
        Ok(ConnectionPermit {
            state: self.state.clone(),
            key,
        })
    }

    pub fn refusals(&self) -> Refusals {
        self.state.lock().expect("connection caps lock").refusals
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().expect("connection caps lock").open
    }

    fn log_refusal(&self, state: &mut State, ip: IpAddr, reason: Refused) {
        let now = Instant::now();
        if state
            .last_log
            .is_some_and(|last| now.duration_since(last) < LOG_INTERVAL)
        {
            state.unlogged += 1;
            return;
        }
        let why = match reason {
            Refused::PerAddress => format!(
                "{} connections from this address are open already{}",
                self.limits.per_address, self.hint
            ),
            Refused::Full => format!(
                "all {} connections are taken (by {} addresses)",
                self.limits.total,
                state.by_address.len()
            ),
        };
        tracing::warn!(
            listener = self.name,
            client = %ip,
            unlogged = state.unlogged,
            "connection refused: {why} (a flood? `unlogged` counts refusals since the last message)"
        );
        state.last_log = Some(now);
        state.unlogged = 0;
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("connection caps lock");
        state.open = state.open.saturating_sub(1);
        if let Some(count) = state.by_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                state.by_address.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_the_listener() {
        let caps = ConnectionCaps::new(
            "test",
            Limits {
                total: 10,
                per_address: 3,
            },
        );
        let mut held: Vec<ConnectionPermit> = (0..3)
            .map(|_| caps.try_acquire(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(
            caps.try_acquire(ip("192.0.2.1")).err(),
            Some(Refused::PerAddress)
        );
        // The same address written inside IPv6 is the same address.
        assert_eq!(
            caps.try_acquire(ip("::ffff:192.0.2.1")).err(),
            Some(Refused::PerAddress)
        );
        // An IPv6 /64 is one address; the next /64 is another.
        for _ in 0..3 {
            held.push(caps.try_acquire(ip("2001:db8:1:2::1")).unwrap());
        }
        assert_eq!(
            caps.try_acquire(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refused::PerAddress)
        );
        held.push(caps.try_acquire(ip("2001:db8:1:3::1")).unwrap());
        // Others are served until the total is reached.
        for i in 0..3 {
            held.push(caps.try_acquire(ip(&format!("198.51.100.{i}"))).unwrap());
        }
        assert_eq!(caps.open(), 10);
        assert_eq!(
            caps.try_acquire(ip("203.0.113.1")).err(),
            Some(Refused::Full)
        );
        assert_eq!(
            caps.refusals(),
            Refusals {
                per_address: 3,
                full: 1
            }
        );
        // A closed connection gives its place back, to its address and to the total.
        held.remove(0);
        assert_eq!(caps.open(), 9);
        let again = caps.try_acquire(ip("192.0.2.1")).unwrap();
        drop(held);
        drop(again);
        assert_eq!(caps.open(), 0);
        assert!(caps.state.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn exempt_addresses_skip_the_per_address_cap_only() {
        let caps = ConnectionCaps::new(
            "test",
            Limits {
                total: 5,
                per_address: 1,
            },
        )
        .with_exempt(vec![Cidr::parse("127.0.0.1").unwrap()]);
        let held: Vec<ConnectionPermit> = (0..5)
            .map(|_| caps.try_acquire(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(caps.try_acquire(ip("127.0.0.1")).err(), Some(Refused::Full));
        drop(held);
        let _one = caps.try_acquire(ip("127.0.0.2")).unwrap();
        assert_eq!(
            caps.try_acquire(ip("127.0.0.2")).err(),
            Some(Refused::PerAddress)
        );
    }
}
