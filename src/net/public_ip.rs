//! The public IP, followed: without a fixed `RTCBOX_NODE_IP`, rtcbox asks its STUN servers
//! which address the internet sees (or resolves `RTCBOX_PUBLIC_IP_DNS`, a dynamic DNS name) at
//! start, then every `RTCBOX_PUBLIC_IP_INTERVAL` and
//! whenever the admin presses "Check now". A changed answer is applied at once, without a
//! restart: the SFU advertises the new address to new and connected clients (trickled
//! candidates, an ICE restart of the connection it offers) and TURN relays are advertised on
//! it (`app` wires both). A failed check keeps the address in use: a STUN server that is down
//! for a minute must not take calls with it.
//!
//! [`Tracker`] decides (pure); [`run`] does the asking.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// How the advertised public IP is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Detected with STUN and followed.
    Automatic,
    /// `RTCBOX_NODE_IP`: advertised as it is, never checked.
    Fixed(IpAddr),
}

/// Where a check learns the public IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Asks these STUN servers (`host:port`) which address they see.
    Stun(Vec<String>),
    /// Resolves this name (a dynamic DNS name kept pointing at the line's address).
    Dns(String),
}

impl Source {
    /// A DNS name when one is configured, else the STUN servers.
    pub fn of(settings: &crate::config::Settings) -> Source {
        match &settings.public_ip_dns {
            Some(name) => Source::Dns(name.clone()),
            None => Source::Stun(settings.stun_servers.clone()),
        }
    }
}

/// What the dashboard shows about the public IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub mode: Mode,
    /// The address in use (automatic mode: the last one a STUN server reported).
    pub current: Option<IpAddr>,
    /// When the last check finished, and whether it failed (Unix seconds, the reason).
    pub checked_at: Option<i64>,
    pub last_error: Option<String>,
    /// When the address in use last changed to another one (not the first detection).
    pub changed_at: Option<i64>,
    pub previous: Option<IpAddr>,
    /// Changes since start.
    pub changes: u64,
}

/// A change to apply: the new address, and the one it replaces (`None` at first detection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: Option<IpAddr>,
    pub to: IpAddr,
}

/// The decisions, without IO: fed each check's result, says when the address changed.
#[derive(Clone, Debug)]
pub struct Tracker {
    status: Status,
}

impl Tracker {
    pub fn new(mode: Mode) -> Tracker {
        Tracker {
            status: Status {
                mode,
                current: match mode {
                    Mode::Fixed(ip) => Some(ip),
                    Mode::Automatic => None,
                },
                checked_at: None,
                last_error: None,
                changed_at: None,
                previous: None,
                changes: 0,
            },
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// One check's result at `now` (Unix seconds). An answer no client could send to
    /// (unspecified, multicast) counts as a failure; a failure keeps the address in use.
    pub fn observe(&mut self, result: Result<IpAddr, String>, now: i64) -> Option<Change> {
        self.status.checked_at = Some(now);
        if self.status.mode != Mode::Automatic {
            return None;
        }
        let ip = match result {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                self.status.last_error = Some(format!("the STUN server reported {ip}, unusable"));
                return None;
            }
            Ok(ip) => ip.to_canonical(),
            Err(reason) => {
                self.status.last_error = Some(reason);
                return None;
            }
        };
        self.status.last_error = None;
        let from = self.status.current;
        if from == Some(ip) {
            return None;
        }
        if from.is_some() {
            self.status.changed_at = Some(now);
            self.status.previous = from;
            self.status.changes += 1;
        }
        self.status.current = Some(ip);
        Some(Change { from, to: ip })
    }
}

/// Resolves a dynamic DNS name to the public IP it names (IPv4 first: the address that
/// matters sits behind an IPv4 NAT).
pub async fn resolve_name(name: &str) -> Result<IpAddr, String> {
    let found = crate::net::dns::lookup(name, 0)
        .await
        .map_err(|why| format!("{name}: {why}"))?;
    found
        .iter()
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .or_else(|| found.first().map(|a| a.ip()))
        .ok_or_else(|| format!("{name} has no address"))
}

/// Shared between the monitor task and the admin panel.
#[derive(Clone)]
pub struct PublicIpHandle {
    tracker: Arc<Mutex<Tracker>>,
    wake: Arc<Notify>,
    /// Whom to ask and how often; the admin panel changes them without a restart.
    asking: Arc<Mutex<(Source, Duration)>>,
}

impl PublicIpHandle {
    /// `source` is asked every `interval` (automatic mode).
    pub fn new(mode: Mode, source: Source, interval: Duration) -> PublicIpHandle {
        PublicIpHandle {
            tracker: Arc::new(Mutex::new(Tracker::new(mode))),
            wake: Arc::new(Notify::new()),
            asking: Arc::new(Mutex::new((source, interval))),
        }
    }

    /// Another source or another interval, used from the check this starts.
    pub fn set_asking(&self, source: Source, interval: Duration) {
        let changed = {
            let mut asking = self.asking.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *asking != (source.clone(), interval);
            *asking = (source, interval);
            changed
        };
        if changed {
            self.check_now();
        }
    }

    fn asking(&self) -> (Source, Duration) {
        self.asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn status(&self) -> Status {
        self.lock().status().clone()
    }

    /// Records one check's result ([`Tracker::observe`]).
    pub fn record(&self, result: Result<IpAddr, String>, now: i64) -> Option<Change> {
        self.lock().observe(result, now)
    }

    /// Asks the monitor to check now ("Check now" on the dashboard).
    pub fn check_now(&self) {
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic elsewhere while holding it leaves plain data behind; keep using it.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks at once, then every interval and on [`PublicIpHandle::check_now`]; `detect` asks
/// the source it is given, `apply` carries a change out. Runs until the process ends
/// (automatic mode only; in fixed mode it returns at once).
pub async fn run<D, DF, A, AF>(handle: PublicIpHandle, detect: D, apply: A)
where
    D: Fn(Source) -> DF,
    DF: Future<Output = Result<IpAddr, String>>,
    A: Fn(Change) -> AF,
    AF: Future<Output = ()>,
{
    if handle.status().mode != Mode::Automatic {
        return;
    }
    let mut failing = false;
    loop {
        let (source, interval) = handle.asking();
        let result = detect(source).await;
        let now = crate::db::unix_now();
        let change = handle.record(result.clone(), now);
        match (&result, change) {
            (_, Some(change)) => {
                match change.from {
                    Some(from) => {
                        crate::metrics::PUBLIC_IP_CHANGES.inc();
                        tracing::warn!(
                        %from,
                        to = %change.to,
                        "the public IP changed; media and TURN now advertise the new address"
                        )
                    }
                    None => tracing::info!(ip = %change.to, "public IP detected"),
                }
                apply(change).await;
                failing = false;
            }
            // Said once per run of failures, not every interval.
            (Err(reason), None) if !failing => {
                tracing::warn!("cannot check the public IP: {reason}");
                failing = true;
            }
            (Ok(_), None) => failing = false,
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = handle.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_detection_then_a_change_then_failures_keep_it() {
        let mut t = Tracker::new(Mode::Automatic);
        assert_eq!(
            t.observe(Ok(ip("203.0.113.7")), 100),
            Some(Change {
                from: None,
                to: ip("203.0.113.7")
            })
        );
        assert_eq!(t.status().changes, 0);
        assert_eq!(t.status().changed_at, None);
        // The same answer: nothing to do.
        assert_eq!(t.observe(Ok(ip("203.0.113.7")), 160), None);
        // The STUN servers are unreachable for a while: the address stays.
        assert_eq!(t.observe(Err("no STUN server answered".into()), 220), None);
        assert_eq!(t.status().current, Some(ip("203.0.113.7")));
        assert_eq!(
            t.status().last_error.as_deref(),
            Some("no STUN server answered")
        );
        assert_eq!(t.status().checked_at, Some(220));
        // The line came back with another address.
        assert_eq!(
            t.observe(Ok(ip("::ffff:198.51.100.9")), 280),
            Some(Change {
                from: Some(ip("203.0.113.7")),
                to: ip("198.51.100.9")
            })
        );
        let s = t.status();
        assert_eq!(s.current, Some(ip("198.51.100.9")));
        assert_eq!(s.previous, Some(ip("203.0.113.7")));
        assert_eq!(
            (s.changes, s.changed_at, s.last_error.clone()),
            (1, Some(280), None)
        );
        // An unusable answer is a failure, not a change.
        assert_eq!(t.observe(Ok(ip("0.0.0.0")), 340), None);
        assert_eq!(t.status().current, Some(ip("198.51.100.9")));
    }

    #[test]
    fn a_fixed_address_is_never_replaced() {
        let mut t = Tracker::new(Mode::Fixed(ip("203.0.113.7")));
        assert_eq!(t.observe(Ok(ip("198.51.100.9")), 1), None);
        assert_eq!(t.status().current, Some(ip("203.0.113.7")));
    }

    #[tokio::test]
    async fn the_monitor_applies_changes_and_checks_on_demand() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let handle = PublicIpHandle::new(
            Mode::Automatic,
            Source::Stun(Vec::new()),
            Duration::from_secs(3600),
        );
        let answers = Arc::new(Mutex::new(vec![ip("198.51.100.9"), ip("203.0.113.7")]));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let checks = Arc::new(AtomicUsize::new(0));
        let task = {
            let (answers, applied, checks) = (answers.clone(), applied.clone(), checks.clone());
            tokio::spawn(run(
                handle.clone(),
                move |_| {
                    checks.fetch_add(1, Ordering::SeqCst);
                    let next = answers.lock().unwrap().pop();
                    async move { next.ok_or_else(|| "no answer".to_owned()) }
                },
                move |change| {
                    applied.lock().unwrap().push(change);
                    async {}
                },
            ))
        };
        // The first check runs at start; the second only when asked (the interval is an hour).
        while checks.load(Ordering::SeqCst) < 1 || applied.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        handle.check_now();
        while applied.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let applied = applied.lock().unwrap().clone();
        assert_eq!(
            applied,
            vec![
                Change {
                    from: None,
                    to: ip("203.0.113.7")
                },
                Change {
                    from: Some(ip("203.0.113.7")),
                    to: ip("198.51.100.9")
                }
            ]
        );
        assert_eq!(handle.status().changes, 1);
    }
}
