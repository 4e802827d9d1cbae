//! Settings that apply while rtcbox runs. The admin panel stores a change, resolves the
//! settings as the next start would, and hands them to [`Live::apply`], which carries the live
//! ones over to the running parts:
//!
//! | setting | where it goes |
//! |---|---|
//! | public URL, full-access homeservers | the authorization service's next token; the delayed-leave task's address policy |
//! | TURN shared secret | the TURN server's next request |
//! | STUN servers, public IP DNS name and interval | the public IP monitor, which checks again at once |
//! | trusted proxies | the public and admin listeners' next request and connection |
//!
//! Everything else (listeners, ports, the node IP, certificates' mode) still waits for a restart,
//! which the panel's "Restart now" does in place (`restart`). [`Live::running`] is what runs:
//! the settings at start with the live changes applied, so the panel's "waits for a restart"
//! list names only what truly waits.

use std::sync::{Arc, Mutex, RwLock};

use crate::config::{FullAccess, SettingKey, Settings};
use crate::http::forwarded::TrustedProxies;
use crate::net::caps::ConnectionCaps;
use crate::net::public_ip::Source;

/// The settings [`Live::apply`] carries over.
pub const LIVE_KEYS: [SettingKey; 7] = [
    SettingKey::PublicUrl,
    SettingKey::FullAccessHomeservers,
    SettingKey::TurnSharedSecret,
    SettingKey::StunServers,
    SettingKey::PublicIpInterval,
    SettingKey::PublicIpDns,
    SettingKey::TrustedProxies,
];

/// The running parts a live setting reaches; any may be absent (tests of the panel alone).
#[derive(Clone, Default)]
pub struct Targets {
    pub auth: Option<Arc<crate::auth::AuthService>>,
    /// The delayed-leave task's view of the full-access list.
    pub leave_access: Option<Arc<RwLock<FullAccess>>>,
    pub turn: Option<crate::turn::TurnHandle>,
    pub public_ip: Option<crate::net::public_ip::PublicIpHandle>,
    pub trusted_proxies: Option<TrustedProxies>,
    /// Connection caps that exempt the trusted proxies.
    pub proxy_caps: Vec<ConnectionCaps>,
}

pub struct Live {
    targets: Targets,
    running: Mutex<Settings>,
}

impl Live {
    /// `running`: the settings rtcbox started with.
    pub fn new(targets: Targets, running: Settings) -> Live {
        Live {
            targets,
            running: Mutex::new(running),
        }
    }

    /// The settings in effect now.
    pub fn running(&self) -> Settings {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries the live settings of `next` (what the next start would resolve) over to the
    /// running parts; returns the environment names of those that changed.
    pub fn apply(&self, next: &Settings) -> Vec<&'static str> {
        let mut running = self.lock();
        let changed: Vec<SettingKey> = LIVE_KEYS
            .into_iter()
            .filter(|key| running.value(*key) != next.value(*key))
            .collect();
        if changed.is_empty() {
            return Vec::new();
        }
        let t = &self.targets;
        let access = next.full_access();
        if let Some(auth) = &t.auth {
            auth.set_live(next.public_url.clone(), access.clone());
        }
        if let Some(cell) = &t.leave_access {
            *cell.write().unwrap_or_else(|e| e.into_inner()) = access;
        }
        if changed.contains(&SettingKey::TurnSharedSecret)
            && let Some(turn) = &t.turn
        {
            turn.set_shared_secret(next.turn_shared_secret.clone());
        }
        if let Some(public_ip) = &t.public_ip {
            public_ip.set_asking(Source::of(next), next.public_ip_interval);
        }
        if let Some(proxies) = &t.trusted_proxies {
            proxies.set(next.trusted_proxies.clone());
        }
        for caps in &t.proxy_caps {
            caps.set_exempt(next.trusted_proxies.clone());
        }
        for key in &changed {
            running.adopt(next, *key);
        }
        let names: Vec<&'static str> = changed.iter().map(|k| k.env_name()).collect();
        tracing::info!(settings = ?names, "settings applied without a restart");
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layers, resolve};
    use crate::net::Cidr;
    use crate::net::caps::Limits;
    use crate::net::public_ip::{Mode, PublicIpHandle};
    use std::collections::BTreeMap;

    fn settings(stored: &[(&str, &str)]) -> Settings {
        let mut map: BTreeMap<String, String> = BTreeMap::from([
            ("api_key".to_owned(), "APIlive".to_owned()),
            ("api_secret".to_owned(), "s".repeat(40)),
        ]);
        for (k, v) in stored {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        resolve(&Layers {
            flags: &BTreeMap::new(),
            env: &|_| None,
            stored: &map,
        })
        .unwrap()
    }

    #[test]
    fn live_settings_reach_the_running_parts_and_the_rest_waits() {
        let proxies = TrustedProxies::new(Vec::new());
        let caps = ConnectionCaps::new(
            "test",
            Limits {
                total: 10,
                per_address: 1,
            },
        );
        let public_ip = PublicIpHandle::new(
            Mode::Automatic,
            crate::net::public_ip::Source::Stun(vec!["127.0.0.1:3478".into()]),
            std::time::Duration::from_secs(60),
        );
        let live = Live::new(
            Targets {
                trusted_proxies: Some(proxies.clone()),
                proxy_caps: vec![caps.clone()],
                public_ip: Some(public_ip.clone()),
                ..Targets::default()
            },
            settings(&[]),
        );
        let next = settings(&[
            ("trusted_proxies", "127.0.0.2"),
            ("stun_servers", "127.0.0.1:9999"),
            ("rtc_udp_port", "9000"),
        ]);
        let changed = live.apply(&next);
        assert_eq!(changed, ["RTCBOX_STUN_SERVERS", "RTCBOX_TRUSTED_PROXIES"]);
        assert!(proxies.trusts("127.0.0.2".parse().unwrap()));
        // The proxy is exempt from the per-address cap now: two connections from it.
        let ip = "127.0.0.2".parse().unwrap();
        let _one = caps.try_acquire(ip).unwrap();
        assert!(caps.try_acquire(ip).is_ok());
        let running = live.running();
        assert_eq!(running.stun_servers, ["127.0.0.1:9999"]);
        assert_eq!(running.trusted_proxies, [Cidr::parse("127.0.0.2").unwrap()]);
        // A port is not live: it still differs from what runs.
        assert_ne!(running.rtc_udp_port, 9000);
        assert!(live.apply(&next).is_empty(), "nothing changes twice");
    }
}
