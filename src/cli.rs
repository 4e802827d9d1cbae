//! The command line. Every setting flag is global, so `rtcbox --data-dir D token …` and
//! `rtcbox token --data-dir D …` both work; flags beat environment variables (see `config`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::SettingKey;

#[derive(Debug, Parser)]
#[command(
    name = "rtcbox",
    version = crate::VERSION_LINE,
    about = "The MatrixRTC backend of a homeserver in one binary"
)]
pub struct Cli {
    /// Data directory: database, keys, certificates [env: RTCBOX_DATA_DIR] [default: ./data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(flatten)]
    pub settings: SettingFlags,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run rtcbox: SFU, authorization service and admin panel.
    Serve,
    /// Exit 0 when the running server answers /healthz (for container health checks).
    Healthcheck(HealthcheckArgs),
    /// Print a LiveKit access token minted with the stored key pair.
    Token(TokenArgs),
    /// Take over an existing LiveKit + lk-jwt-service (+ coturn) deployment: read its files,
    /// show what would be set, and store it.
    Import(ImportArgs),
    /// Admin panel maintenance.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Write a backup of the data directory (settings, keys, admin account, certificates) to
    /// one file. It holds secrets: keep it private. Works while rtcbox runs.
    Backup(BackupArgs),
    /// Replace the data directory's settings, keys, admin account and certificates with a
    /// backup's, after checking all of it. Stop rtcbox first (or restore from the admin panel).
    Restore(RestoreArgs),
    /// Measure the SFU: many LiveKit clients in this process against `rtcbox serve` started as
    /// a child on loopback, beside the machine's floor (SRTP + send). JSON on stdout or --out.
    Loadtest(LoadtestArgs),
}

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// Scenarios to run, in order.
    #[arg(value_enum, default_values_t = [
        crate::loadtest::Scenario::Audio,
        crate::loadtest::Scenario::Meeting,
        crate::loadtest::Scenario::Livestream,
    ])]
    pub scenarios: Vec<crate::loadtest::Scenario>,
    /// Audio publishers in `audio`; participants in `meeting`.
    #[arg(long, default_value_t = 4)]
    pub publishers: u32,
    /// Listeners in `audio`; viewers in `livestream`.
    #[arg(long, default_value_t = 20)]
    pub subscribers: u32,
    /// How long each scenario is measured once everyone joined, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// The rtcbox binary to start as the server [default: this one].
    #[arg(long, value_name = "FILE")]
    pub server_bin: Option<PathBuf>,
    /// Write the JSON result here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also compare TURN with coturn: turnutils_uclient through rtcbox, then through
    /// turnserver (needs coturn's tools on PATH).
    #[arg(long)]
    pub turn: bool,
    /// Allocations (uclient clients) in the TURN comparison.
    #[arg(long, default_value_t = 20, requires = "turn")]
    pub turn_clients: u32,
    /// Messages each TURN client sends (one every 20 ms).
    #[arg(long, default_value_t = 500, requires = "turn")]
    pub turn_messages: u32,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write it (created with mode 0600); `-` or nothing: standard output, which must
    /// not be a terminal.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `rtcbox backup` or the admin panel's Backup page.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Forget the admin password, log every browser out, and print a new one-time setup token
    /// for the panel's /setup page.
    ResetPassword,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to probe instead of /healthz on the configured HTTP listener.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("sources")
        .required(true)
        .multiple(true)
        .args(["livekit_yaml", "env_file", "coturn_conf"])
))]
pub struct ImportArgs {
    /// LiveKit's config file: keys, ports, node IP, TURN.
    #[arg(long, value_name = "FILE")]
    pub livekit_yaml: Option<PathBuf>,
    /// lk-jwt-service's environment (KEY=VALUE lines, as for docker --env-file or systemd).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// coturn's turnserver.conf: the shared secret Synapse uses, TURN ports, relay range.
    #[arg(long, value_name = "FILE")]
    pub coturn_conf: Option<PathBuf>,
    /// Store without asking, also when the import replaces a stored key pair.
    #[arg(long, conflicts_with = "dry_run")]
    pub yes: bool,
    /// Only show what would be stored.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// LiveKit room name the token joins.
    #[arg(long)]
    pub room: String,
    /// Participant identity.
    #[arg(long)]
    pub identity: String,
    /// Validity, e.g. 3600, 90s, 30m, 6h, 1d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
}

/// Flags for settings; each has an environment variable too (named in its help).
#[derive(Debug, Args)]
pub struct SettingFlags {
    /// Public HTTP listener [env: RTCBOX_HTTP_BIND, LIVEKIT_JWT_BIND] [default: 0.0.0.0:8880]
    #[arg(long, global = true, value_name = "ADDR")]
    pub http_bind: Option<String>,
    /// LiveKit URL handed to clients, e.g. wss://rtc.example.org/livekit/sfu [env: RTCBOX_PUBLIC_URL, LIVEKIT_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub public_url: Option<String>,
    /// LiveKit API key [env: RTCBOX_API_KEY, LIVEKIT_KEY, …] [default: generated at first start]
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// LiveKit API secret, ≥ 32 bytes; prefer the environment or a file [env: RTCBOX_API_SECRET, LIVEKIT_SECRET, …]
    #[arg(long, global = true, value_name = "SECRET")]
    pub api_secret: Option<String>,
    /// Server names whose users may start calls, comma-separated, or * [env: RTCBOX_FULL_ACCESS_HOMESERVERS, LIVEKIT_FULL_ACCESS_HOMESERVERS]
    #[arg(long, global = true, value_name = "NAMES")]
    pub full_access_homeservers: Option<String>,
    /// Extra CA certificates (PEM) for homeservers' federation TLS [env: RTCBOX_MATRIX_CA_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub matrix_ca_file: Option<String>,
    /// Let the OpenID check reach any homeserver on loopback or LAN addresses [env: RTCBOX_DANGEROUS_ALLOW_PRIVATE_HOMESERVERS]
    #[arg(long, global = true)]
    pub dangerous_allow_private_homeservers: bool,
    /// UDP port for WebRTC media, shared by every peer [env: RTCBOX_RTC_UDP_PORT] [default: 8882]
    #[arg(long, global = true, value_name = "PORT")]
    pub rtc_udp_port: Option<String>,
    /// TCP port for ICE-TCP media fallback [env: RTCBOX_RTC_TCP_PORT] [default: 8881]
    #[arg(long, global = true, value_name = "PORT")]
    pub rtc_tcp_port: Option<String>,
    /// A fixed IP address advertised to clients for media and TURN relays, e.g. a static public IP [env: RTCBOX_NODE_IP] [default: automatic: the host's addresses and the public IP from STUN, followed when it changes]
    #[arg(long, global = true, value_name = "IP")]
    pub node_ip: Option<String>,
    /// Seconds between public IP checks when the node IP is automatic [env: RTCBOX_PUBLIC_IP_INTERVAL] [default: 60]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub public_ip_interval: Option<String>,
    /// A DNS name whose address is your public IP (dynamic DNS), resolved at every check instead of asking STUN servers [env: RTCBOX_PUBLIC_IP_DNS]
    #[arg(long, global = true, value_name = "NAME")]
    pub public_ip_dns: Option<String>,
    /// Create rooms on join instead of requiring the auth service or the API to create them [env: RTCBOX_AUTO_CREATE_ROOMS]
    #[arg(long, global = true)]
    pub auto_create_rooms: bool,
    /// Admin panel listener [env: RTCBOX_ADMIN_BIND] [default: 0.0.0.0:8089]
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin_bind: Option<String>,
    /// Serve the admin panel over HTTPS with rtcbox's own certificate [env: RTCBOX_ADMIN_TLS]
    #[arg(long, global = true)]
    pub admin_tls: bool,
    /// Reverse proxies whose X-Forwarded-For/-Proto headers are believed, comma-separated CIDRs [env: RTCBOX_TRUSTED_PROXIES] [default: none]
    #[arg(long, global = true, value_name = "CIDRS")]
    pub trusted_proxies: Option<String>,
    /// STUN servers for public IP detection, host:port, comma-separated [env: RTCBOX_STUN_SERVERS]
    #[arg(long, global = true, value_name = "LIST")]
    pub stun_servers: Option<String>,
    /// TURN REST shared secret for Synapse's turn_shared_secret; prefer the environment [env: RTCBOX_TURN_SHARED_SECRET, RTCBOX_TURN_SHARED_SECRET_FILE]
    #[arg(long, global = true, value_name = "SECRET")]
    pub turn_shared_secret: Option<String>,
    /// TURN over UDP and TCP; 0 = off [env: RTCBOX_TURN_PORT] [default: 3478]
    #[arg(long, global = true, value_name = "PORT")]
    pub turn_port: Option<String>,
    /// TURN over TLS; 0 = off [env: RTCBOX_TURN_TLS_PORT] [default: 5349]
    #[arg(long, global = true, value_name = "PORT")]
    pub turn_tls_port: Option<String>,
    /// TURN relay ports for legacy 1:1 calls [env: RTCBOX_TURN_RELAY_PORTS] [default: 49160-49200]
    #[arg(long, global = true, value_name = "FIRST-LAST")]
    pub turn_relay_ports: Option<String>,
    /// Address blocks TURN may relay to although they are private or loopback, comma-separated CIDRs [env: RTCBOX_TURN_ALLOW_PEERS]
    #[arg(long, global = true, value_name = "CIDRS")]
    pub turn_allow_peers: Option<String>,
    /// Public HTTPS listener with rtcbox's own certificate, TURN over TLS on the same port; 0 = off [env: RTCBOX_HTTPS_BIND] [default: 0.0.0.0:8443]
    #[arg(long, global = true, value_name = "ADDR")]
    pub https_bind: Option<String>,
    /// Where the TLS certificate comes from: proxy, self-signed, files or acme [env: RTCBOX_TLS_MODE] [default: proxy]
    #[arg(long, global = true, value_name = "MODE")]
    pub tls_mode: Option<String>,
    /// files mode: PEM certificate chain, leaf first [env: RTCBOX_TLS_CERT_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert_file: Option<String>,
    /// files mode: PEM private key of the leaf certificate [env: RTCBOX_TLS_KEY_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key_file: Option<String>,
    /// Names for the ACME certificate, comma-separated [env: RTCBOX_ACME_DOMAINS] [default: the public URL's host]
    #[arg(long, global = true, value_name = "NAMES")]
    pub acme_domains: Option<String>,
    /// Contact e-mail for the ACME account [env: RTCBOX_ACME_EMAIL]
    #[arg(long, global = true, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// ACME challenge: http-01 or dns-01 [env: RTCBOX_ACME_CHALLENGE] [default: http-01]
    #[arg(long, global = true, value_name = "TYPE")]
    pub acme_challenge: Option<String>,
    /// ACME directory: production, staging or an https:// URL [env: RTCBOX_ACME_DIRECTORY] [default: Let's Encrypt production]
    #[arg(long, global = true, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Extra CA certificates (PEM) trusted for the ACME server's HTTPS, e.g. a test CA [env: RTCBOX_ACME_CA_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub acme_ca_file: Option<String>,
    /// dns-01: who publishes the TXT record: rfc2136, cloudflare or manual [env: RTCBOX_ACME_DNS_PROVIDER]
    #[arg(long, global = true, value_name = "PROVIDER")]
    pub acme_dns_provider: Option<String>,
    /// dns-01 rfc2136: DNS server taking dynamic updates, host[:port] [env: RTCBOX_ACME_DNS_SERVER]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub acme_dns_server: Option<String>,
    /// dns-01: zone holding _acme-challenge records [env: RTCBOX_ACME_DNS_ZONE] [default: found from the DNS server's SOA]
    #[arg(long, global = true, value_name = "ZONE")]
    pub acme_dns_zone: Option<String>,
    /// dns-01 rfc2136: TSIG key name [env: RTCBOX_ACME_DNS_TSIG_KEY]
    #[arg(long, global = true, value_name = "NAME")]
    pub acme_dns_tsig_key: Option<String>,
    /// dns-01 rfc2136: TSIG algorithm, hmac-sha256 or hmac-sha512 [env: RTCBOX_ACME_DNS_TSIG_ALGORITHM] [default: hmac-sha256]
    #[arg(long, global = true, value_name = "ALGORITHM")]
    pub acme_dns_tsig_algorithm: Option<String>,
    /// dns-01 rfc2136: TSIG secret (base64); prefer the environment [env: RTCBOX_ACME_DNS_TSIG_SECRET, RTCBOX_ACME_DNS_TSIG_SECRET_FILE]
    #[arg(long, global = true, value_name = "BASE64")]
    pub acme_dns_tsig_secret: Option<String>,
    /// dns-01 cloudflare: API token with Zone.DNS edit; prefer the environment [env: RTCBOX_ACME_CLOUDFLARE_TOKEN, RTCBOX_ACME_CLOUDFLARE_TOKEN_FILE]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub acme_cloudflare_token: Option<String>,
    /// dns-01 cloudflare: API base URL, for tests [env: RTCBOX_ACME_CLOUDFLARE_API] [default: https://api.cloudflare.com/client/v4]
    #[arg(long, global = true, value_name = "URL")]
    pub acme_cloudflare_api: Option<String>,
    /// Bearer token Prometheus sends to /metrics on the admin listener; prefer the environment [env: RTCBOX_METRICS_TOKEN, RTCBOX_METRICS_TOKEN_FILE] [default: none: /metrics answers loopback only]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub metrics_token: Option<String>,
}

impl SettingFlags {
    /// The flags that were given, keyed by setting.
    pub fn to_map(&self) -> BTreeMap<SettingKey, String> {
        let mut map = BTreeMap::new();
        let mut put = |key, value: &Option<String>| {
            if let Some(value) = value {
                map.insert(key, value.clone());
            }
        };
        put(SettingKey::HttpBind, &self.http_bind);
        put(SettingKey::PublicUrl, &self.public_url);
        put(SettingKey::ApiKey, &self.api_key);
        put(SettingKey::ApiSecret, &self.api_secret);
        put(
            SettingKey::FullAccessHomeservers,
            &self.full_access_homeservers,
        );
        put(SettingKey::MatrixCaFile, &self.matrix_ca_file);
        put(SettingKey::RtcUdpPort, &self.rtc_udp_port);
        put(SettingKey::RtcTcpPort, &self.rtc_tcp_port);
        put(SettingKey::NodeIp, &self.node_ip);
        put(SettingKey::PublicIpInterval, &self.public_ip_interval);
        put(SettingKey::PublicIpDns, &self.public_ip_dns);
        put(SettingKey::AdminBind, &self.admin_bind);
        put(SettingKey::TrustedProxies, &self.trusted_proxies);
        put(SettingKey::StunServers, &self.stun_servers);
        put(SettingKey::TurnSharedSecret, &self.turn_shared_secret);
        put(SettingKey::TurnPort, &self.turn_port);
        put(SettingKey::TurnTlsPort, &self.turn_tls_port);
        put(SettingKey::TurnRelayPorts, &self.turn_relay_ports);
        put(SettingKey::TurnAllowPeers, &self.turn_allow_peers);
        put(SettingKey::HttpsBind, &self.https_bind);
        put(SettingKey::TlsMode, &self.tls_mode);
        put(SettingKey::TlsCertFile, &self.tls_cert_file);
        put(SettingKey::TlsKeyFile, &self.tls_key_file);
        put(SettingKey::AcmeDomains, &self.acme_domains);
        put(SettingKey::AcmeEmail, &self.acme_email);
        put(SettingKey::AcmeChallenge, &self.acme_challenge);
        put(SettingKey::AcmeDirectory, &self.acme_directory);
        put(SettingKey::AcmeCaFile, &self.acme_ca_file);
        put(SettingKey::AcmeDnsProvider, &self.acme_dns_provider);
        put(SettingKey::AcmeDnsServer, &self.acme_dns_server);
        put(SettingKey::AcmeDnsZone, &self.acme_dns_zone);
        put(SettingKey::AcmeDnsTsigKey, &self.acme_dns_tsig_key);
        put(
            SettingKey::AcmeDnsTsigAlgorithm,
            &self.acme_dns_tsig_algorithm,
        );
        put(SettingKey::AcmeDnsTsigSecret, &self.acme_dns_tsig_secret);
        put(SettingKey::AcmeCloudflareToken, &self.acme_cloudflare_token);
        put(SettingKey::AcmeCloudflareApi, &self.acme_cloudflare_api);
        put(SettingKey::MetricsToken, &self.metrics_token);
        if self.admin_tls {
            map.insert(SettingKey::AdminTls, "true".into());
        }
        if self.auto_create_rooms {
            map.insert(SettingKey::AutoCreateRooms, "true".into());
        }
        if self.dangerous_allow_private_homeservers {
            map.insert(SettingKey::DangerousAllowPrivateHomeservers, "true".into());
        }
        map
    }
}

/// `3600`, `90s`, `30m`, `6h`, `1d`.
pub fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration (e.g. 3600, 30m, 6h)"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{raw}' has an unknown unit (use s, m, h or d)")),
    };
    let seconds = value
        .checked_mul(factor)
        .filter(|s| *s > 0 && *s <= 366 * 86_400);
    seconds
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("'{raw}' must be between 1 second and 366 days"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_duration("6h").unwrap().as_secs(), 21_600);
        assert_eq!(parse_duration("1d").unwrap().as_secs(), 86_400);
        for bad in ["", "h", "0", "1y", "-5", "99999999999999999999", "400d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_after_the_subcommand_are_accepted() {
        let cli = Cli::try_parse_from([
            "rtcbox",
            "token",
            "--room",
            "r",
            "--identity",
            "i",
            "--data-dir",
            "/d",
            "--api-key",
            "k",
        ])
        .unwrap();
        assert_eq!(cli.data_dir.as_deref(), Some(std::path::Path::new("/d")));
        assert_eq!(cli.settings.to_map()[&SettingKey::ApiKey], "k");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
