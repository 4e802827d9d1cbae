//! Composition root: turns the command line into running parts. The only place that reads the
//! process environment, opens the database and spawns long-lived tasks.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sqlx::SqlitePool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::EnvFilter;

use crate::auth::delayed_leave::DelayedLeaves;
use crate::auth::{AuthConfig, AuthService};
use crate::cli::{AdminCommand, BackupArgs, Cli, Command, HealthcheckArgs, RestoreArgs, TokenArgs};
use crate::config::{self, Layers, Origin, SettingKey, Settings};
use crate::livekit::signal::SignalState;
use crate::livekit::token::{self, VideoGrant};
use crate::matrix::FederationClient;
use crate::setup::fetch::HttpClient;
use crate::sfu::{SfuHandle, SfuSockets};
use crate::{db, http, livekit};

/// Logs go to stderr (stdout carries command output such as `token`). `RTCBOX_LOG` or `RUST_LOG`
/// set the filter; the default is `info`.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("RTCBOX_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only on a terminal: docker, systemd and DSM logs would show escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
        )
        // The admin panel's log page reads the same lines, uncoloured.
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(crate::logbuf::global().clone()),
        )
        .init();
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve => serve(&cli).await,
        Command::Healthcheck(args) => healthcheck(&cli, args).await,
        Command::Token(args) => print_token(&cli, args).await,
        Command::Import(args) => {
            let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
            crate::import::command::run(args, &data_dir, &cli.settings.to_map(), &process_env).await
        }
        Command::Admin(AdminCommand::ResetPassword) => reset_password(&cli).await,
        Command::Backup(args) => backup(&cli, args).await,
        Command::Restore(args) => restore(&cli, args).await,
        Command::Loadtest(args) => crate::loadtest::run(args).await,
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Opens the data directory's database (first start generates the key pair) and resolves settings.
async fn open_and_resolve(cli: &Cli) -> anyhow::Result<(SqlitePool, Settings)> {
    let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
    let pool = db::open(&data_dir).await?;
    if db::settings::ensure_key_pair(&pool)
        .await
        .context("cannot store the generated key pair")?
    {
        tracing::info!(data_dir = %data_dir.display(), "first start: generated a LiveKit API key pair");
    }
    let stored = db::settings::all(&pool)
        .await
        .context("cannot read stored settings")?;
    let flags = cli.settings.to_map();
    let settings = config::resolve(&Layers {
        flags: &flags,
        env: &process_env,
        stored: &stored,
    })?;
    Ok((pool, settings))
}

async fn serve(cli: &Cli) -> anyhow::Result<ExitCode> {
    for warning in config::ignored_env_warnings(&process_env) {
        tracing::warn!("{warning}");
    }
    let (pool, settings) = open_and_resolve(cli).await?;
    // The admin panel's log page keeps its lines in the data directory (writable: the database
    // was just opened there), so they survive a restart.
    let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
    if let Err(error) = crate::logbuf::global().persist_in(&data_dir) {
        tracing::warn!(
            %error,
            "cannot keep the log in {}/{}: the admin panel shows this run's lines only",
            data_dir.display(),
            crate::logbuf::FILE_NAME
        );
    }
    // Held while serving: `rtcbox restore` refuses to replace the data under a running server.
    let _serve_lock = {
        let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
        let lock = db::try_serve_lock(&data_dir)?;
        if lock.is_none() {
            tracing::warn!(
                data_dir = %data_dir.display(),
                "another rtcbox process serves this data directory"
            );
        }
        lock
    };
    let full_access = settings.full_access();
    log_settings(&settings);

    let federation = Arc::new(FederationClient::new(settings.matrix_ca_file.as_deref())?);
    str0m::crypto::from_feature_flags().install_process_default();
    let sockets = SfuSockets::bind(
        settings.http_bind.ip(),
        settings.node_ip,
        settings.rtc_udp_port,
        settings.rtc_tcp_port,
    )
    .await?;
    tracing::info!(
        udp = ?sockets.udp_advertised(),
        tcp = ?sockets.tcp_advertised(),
        auto_create_rooms = settings.auto_create_rooms,
        "media candidates"
    );
    let media = http::admin::MediaAddresses {
        udp: sockets.udp_advertised(),
        tcp: sockets.tcp_advertised().to_vec(),
    };
    let acme_mode = settings.tls_mode == config::TlsMode::Acme;
    let certificates = tls_certificates(&pool, &settings).await?;
    let (turn, turn_tls_streams) = start_turn(&settings, &sockets, certificates.clone()).await;
    let sfu = SfuHandle::spawn(sockets, settings.auto_create_rooms, Some(turn.clone()));
    let public_ip = follow_public_ip(&settings, sfu.clone(), turn.clone());
    // The admin panel changes the full-access list without a restart (`live`).
    let leave_access = Arc::new(std::sync::RwLock::new(full_access.clone()));
    let (delayed_leaves, leaves) = {
        let full_access = leave_access.clone();
        let dangerous = settings.dangerous_allow_private_homeservers;
        DelayedLeaves::new(
            pool.clone(),
            federation.clone(),
            sfu.clone(),
            Box::new(move |server_name| {
                let full_access = full_access.read().unwrap_or_else(|e| e.into_inner());
                crate::auth::address_policy(&full_access, dangerous, server_name)
            }),
        )
    };
    let auth = Arc::new(AuthService::new(
        AuthConfig {
            public_url: settings.public_url.clone(),
            api_key: settings.api_key.clone(),
            api_secret: settings.api_secret.clone(),
            full_access,
            dangerous_allow_private_homeservers: settings.dangerous_allow_private_homeservers,
        },
        federation.clone(),
        Arc::new(sfu.clone()),
        Arc::new(leaves),
    ));
    let listener = TcpListener::bind(settings.http_bind).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {} (choose another address with RTCBOX_HTTP_BIND)",
            settings.http_bind,
            crate::net::explain::io_error(&e)
        )
    })?;
    let bound = listener.local_addr().context("listener address")?;
    tracing::info!(version = crate::VERSION_LINE, "listening on http://{bound}");

    let signaling = livekit::signal::router(Arc::new(SignalState {
        sfu: sfu.clone(),
        key: settings.api_key.clone(),
        secret: settings.api_secret.clone(),
        turn: Some(turn.clone()),
    }));
    let rtc = signaling.merge(livekit::twirp::router(
        Arc::new(sfu.clone()),
        settings.api_key.clone(),
        settings.api_secret.clone(),
    ));
    let challenges = crate::acme::Challenges::default();
    // One list for the public and the admin listener, changed in place by the panel.
    let trusted_proxies = http::forwarded::TrustedProxies::new(settings.trusted_proxies.clone());
    let state = Arc::new(
        http::PublicState::new(auth.clone())
            .with_rtc(rtc)
            .with_acme(challenges.clone())
            .with_trusted_proxies(trusted_proxies.clone()),
    );
    let https = match (settings.https_bind, &certificates) {
        (Some(bind), Some(certificates)) => {
            let front = http::https::HttpsFront::new(certificates, turn_tls_streams);
            bind_https(bind, &turn)
                .await
                .map(|listener| (listener, front))
        }
        _ => None,
    };
    let acme = match (acme_mode, &certificates) {
        (true, Some(certificates)) => {
            let handle = crate::acme::AcmeHandle::default();
            let tls = crate::matrix::tls_client_config_with(
                settings.acme_ca_file.as_deref(),
                "RTCBOX_ACME_CA_FILE",
            )?;
            let responder = acme_responder(&settings, challenges, certificates, &handle)?;
            let task = crate::acme::task::AcmeTask {
                pool: pool.clone(),
                setup: crate::acme::order::OrderSetup {
                    directory: settings.acme_directory.url().to_owned(),
                    email: settings.acme_email.clone(),
                    domains: settings.acme_domains.clone(),
                    responder,
                    http: HttpClient::with_tls_config(tls),
                },
                certificates: certificates.clone(),
                handle: handle.clone(),
                ports: crate::acme::plan::Ports {
                    http: bound.port(),
                    https: settings.https_bind.map(|bind| bind.port()),
                },
            };
            tokio::spawn(task.run());
            Some(handle)
        }
        _ => None,
    };

    let admin_listener = TcpListener::bind(settings.admin_bind)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} for the admin panel: {} (choose another address with RTCBOX_ADMIN_BIND)",
                settings.admin_bind,
                crate::net::explain::io_error(&e)
            )
        })?;
    let admin_bound = admin_listener
        .local_addr()
        .context("admin listener address")?;
    // With RTCBOX_ADMIN_TLS the panel is served with rtcbox's certificate (`tls_certificates`
    // made one for it).
    let admin_front = match (settings.admin_tls, &certificates) {
        (true, Some(certificates)) => Some(http::https::HttpsFront::http_only(certificates)),
        _ => None,
    };
    let admin_scheme = if admin_front.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!("admin panel on {admin_scheme}://{admin_bound}");
    let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
    announce_setup_token(&pool, admin_bound, admin_scheme, &data_dir).await?;
    let public_caps = http_caps("public HTTP", http::PUBLIC_LIMITS, &settings);
    let https_caps = http_caps("public HTTPS", http::PUBLIC_LIMITS, &settings);
    let admin_caps = http_caps("admin panel", http::ADMIN_LIMITS, &settings);
    // One shutdown signal stops every listener: SIGTERM/Ctrl-C, or "Restart now".
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let mut admin = http::admin::AdminState::new(pool, settings.clone(), cli.settings.to_map());
    admin.restart = Some(crate::restart::Restarter::new(stop_tx.clone()));
    admin.trusted_proxies = trusted_proxies.clone();
    admin.connection_caps = vec![sfu.ice_tcp_caps(), public_caps.clone(), admin_caps.clone()];
    if https.is_some() {
        admin.connection_caps.push(https_caps.clone());
    }
    admin.live = Some(Arc::new(crate::live::Live::new(
        crate::live::Targets {
            auth: Some(auth),
            leave_access: Some(leave_access),
            turn: Some(turn.clone()),
            public_ip: Some(public_ip.clone()),
            trusted_proxies: Some(trusted_proxies),
            proxy_caps: vec![public_caps.clone(), https_caps.clone(), admin_caps.clone()],
        },
        settings.clone(),
    )));
    admin.sfu = Some(sfu);
    admin.turn = Some(turn);
    admin.acme = acme;
    admin.public_ip = Some(public_ip);
    admin.certificates = certificates;
    admin.media = media;
    admin.logs = crate::logbuf::global().clone();
    admin.data_dir = Some(config::data_dir(cli.data_dir.as_deref(), &process_env));
    admin.net = Some(http::admin::NetClients {
        http: Arc::new(HttpClient::new(settings.matrix_ca_file.as_deref())?),
        federation,
    });

    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Stops before the listeners close the participants' sessions: a shutdown is no leave (a
    // restarted rtcbox resumes the stored delegations).
    tokio::spawn(delayed_leaves.run(stopped(stop_rx.clone())));
    let serve_https = {
        let service = http::public_service(state.clone());
        let stop = stopped(stop_rx.clone());
        let caps = https_caps;
        async move {
            if let Some((listener, front)) = https {
                http::serve_with(listener, Some(front), caps, service, stop).await;
            }
        }
    };
    tokio::join!(
        http::serve_with(
            listener,
            None,
            public_caps,
            http::public_service(state),
            stopped(stop_rx.clone())
        ),
        serve_https,
        http::serve_with(
            admin_listener,
            admin_front,
            admin_caps,
            http::admin::router(Arc::new(admin)),
            stopped(stop_rx)
        ),
    );
    if crate::restart::requested() {
        tracing::info!("stopped; starting again in this process");
    } else {
        tracing::info!("stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// Without a fixed `RTCBOX_NODE_IP`, starts the public IP monitor (`net::public_ip`): each
/// change is advertised by the SFU and becomes TURN's relay address, live.
fn follow_public_ip(
    settings: &Settings,
    sfu: SfuHandle,
    turn: crate::turn::TurnHandle,
) -> crate::net::public_ip::PublicIpHandle {
    use crate::net::public_ip::{self, Mode, PublicIpHandle};
    let handle = PublicIpHandle::new(
        settings.node_ip.map_or(Mode::Automatic, Mode::Fixed),
        public_ip::Source::of(settings),
        settings.public_ip_interval,
    );
    let detect = |source: public_ip::Source| async move {
        match source {
            public_ip::Source::Stun(servers) => crate::setup::discover::public_ip(&servers).await,
            public_ip::Source::Dns(name) => public_ip::resolve_name(&name).await,
        }
    };
    let apply = move |change: public_ip::Change| {
        let (sfu, turn) = (sfu.clone(), turn.clone());
        async move {
            // Relays follow only an address media is advertised on (same family as the sockets).
            if let Ok(media) = sfu.set_public_ip(change.to).await
                && media.udp.iter().any(|a| a.ip() == change.to)
            {
                tracing::info!(udp = ?media.udp, tcp = ?media.tcp, "media candidates");
                turn.readdress(crate::turn::handle::Readdress {
                    relay_ip: change.to,
                    sfu_media: media.udp,
                    sfu_routes: media.routes,
                });
            }
        }
    };
    tokio::spawn(public_ip::run(handle.clone(), detect, apply));
    handle
}

/// An HTTP listener's connection caps: trusted reverse proxies carry many clients, so they are
/// held to the total only.
fn http_caps(
    name: &'static str,
    limits: crate::net::caps::Limits,
    settings: &Settings,
) -> crate::net::caps::ConnectionCaps {
    crate::net::caps::ConnectionCaps::new(name, limits)
        .with_exempt(settings.trusted_proxies.clone())
        .with_hint(http::PROXY_HINT)
}

/// How the ACME task answers the CA's challenges, by `RTCBOX_ACME_CHALLENGE` and, for dns-01,
/// `RTCBOX_ACME_DNS_PROVIDER` (whose settings `config` has checked are complete).
fn acme_responder(
    settings: &Settings,
    challenges: crate::acme::Challenges,
    certificates: &crate::tls::TlsCertificates,
    handle: &crate::acme::AcmeHandle,
) -> anyhow::Result<crate::acme::order::Responder> {
    use crate::acme::dns01::{Dns01, Provider, cloudflare::Cloudflare, rfc2136::Rfc2136};
    use crate::acme::order::Responder;
    let provider = match (settings.acme_challenge, settings.acme_dns_provider) {
        (config::AcmeChallenge::Http01, _) => return Ok(Responder::Http01(challenges)),
        (config::AcmeChallenge::TlsAlpn01, _) => {
            return Ok(Responder::TlsAlpn01(certificates.alpn_challenges()));
        }
        (config::AcmeChallenge::Dns01, Some(config::DnsProvider::Rfc2136)) => {
            let incomplete = || anyhow::anyhow!("RTCBOX_ACME_DNS_PROVIDER=rfc2136 is incomplete");
            let server = settings.acme_dns_server.clone().ok_or_else(incomplete)?;
            let key = settings
                .acme_dns_tsig_key
                .as_deref()
                .ok_or_else(incomplete)?;
            let secret = settings
                .acme_dns_tsig_secret
                .as_ref()
                .ok_or_else(incomplete)?;
            Provider::Rfc2136(
                Rfc2136::new(
                    server,
                    settings.acme_dns_zone.as_deref(),
                    key,
                    settings.acme_dns_tsig_algorithm,
                    secret,
                )
                .map_err(anyhow::Error::msg)?,
            )
        }
        (config::AcmeChallenge::Dns01, Some(config::DnsProvider::Cloudflare)) => {
            let token = settings
                .acme_cloudflare_token
                .clone()
                .context("RTCBOX_ACME_CLOUDFLARE_TOKEN is not set")?;
            // Cloudflare's API has a public certificate: the system roots, as for any request.
            Provider::Cloudflare(Cloudflare::new(
                HttpClient::new(None)?,
                &settings.acme_cloudflare_api,
                token,
                settings.acme_dns_zone.clone(),
            ))
        }
        (config::AcmeChallenge::Dns01, Some(config::DnsProvider::Manual)) => Provider::Manual {
            check: settings.acme_dns_server.clone(),
        },
        (config::AcmeChallenge::Dns01, None) => {
            anyhow::bail!("RTCBOX_ACME_CHALLENGE=dns-01 needs RTCBOX_ACME_DNS_PROVIDER")
        }
    };
    Ok(Responder::Dns01(Dns01::new(provider, handle.clone())))
}

/// The certificate rtcbox's own TLS listeners (TURN-TLS, HTTPS) serve, when either runs, by
/// `RTCBOX_TLS_MODE`: the stored self-signed one for the public names, or the files (a task
/// re-reads them when they change). Unreadable or mismatched files stop the start.
async fn tls_certificates(
    pool: &SqlitePool,
    settings: &Settings,
) -> anyhow::Result<Option<crate::tls::TlsCertificates>> {
    use crate::config::TlsMode;
    use crate::tls::{CertFiles, FILES_POLL_INTERVAL, TlsCertificates, watch_files};

    if settings.turn_tls_port == 0
        && settings.https_bind.is_none()
        && settings.tls_mode != TlsMode::Acme
        && !settings.admin_tls
    {
        return Ok(None);
    }
    let certificates = match (
        settings.tls_mode,
        &settings.tls_cert_file,
        &settings.tls_key_file,
    ) {
        (TlsMode::Files, Some(cert), Some(key)) => {
            let mut files = CertFiles::new(cert, key);
            let certificates = files
                .load()
                .context("RTCBOX_TLS_MODE is files, but the certificate cannot be used")?;
            let info = certificates.info();
            tracing::info!(names = ?info.names, not_after = info.not_after, source = %info.source, "serving the TLS certificate from files");
            tokio::spawn(watch_files(
                files,
                certificates.clone(),
                FILES_POLL_INTERVAL,
            ));
            certificates
        }
        // `config` refuses files mode without both files. ACME starts from the stored
        // certificate (its own, once it has one) and swaps in each new one.
        (TlsMode::Proxy | TlsMode::SelfSigned | TlsMode::Files | TlsMode::Acme, ..) => {
            let public_host = settings.public_url.host();
            let mut names = vec![public_host];
            names.extend(settings.node_ip.map(|ip| ip.to_string()));
            TlsCertificates::load_or_create(pool, &names).await?
        }
    };
    Ok(Some(certificates))
}

/// Binds the public HTTPS listener; a port that cannot be bound is logged and shown with the
/// TURN listeners on the dashboard (TURN over TLS runs on it too), and rtcbox runs on without it.
async fn bind_https(bind: SocketAddr, turn: &crate::turn::TurnHandle) -> Option<TcpListener> {
    use crate::turn::status::{ListenerStatus, Transport};

    let (listener, addr, error) = match TcpListener::bind(bind).await {
        Ok(listener) => {
            let addr = listener.local_addr().unwrap_or(bind);
            tracing::info!("listening on https://{addr} (and TURN over TLS)");
            (Some(listener), addr, None)
        }
        Err(error) => {
            let error = crate::net::explain::io_error(&error);
            tracing::error!(
                "HTTPS listener not running: cannot listen on {bind}: {error} (choose another address with RTCBOX_HTTPS_BIND, or 0 to turn it off)"
            );
            (None, bind, Some(format!("HTTPS port: {error}")))
        }
    };
    turn.publish(|status| {
        status.listeners.push(ListenerStatus {
            transport: Transport::Tls,
            addr,
            https: true,
            error,
        });
    });
    listener
}

/// Starts the embedded TURN server on the public listener's IP. Relays are advertised on the
/// node IP (the public IP behind a NAT) and may always reach the SFU's media sockets; every
/// address of this host (and the node IP, the router, whose forwarded ports lead back here) is
/// otherwise refused, as are private and special addresses unless RTCBOX_TURN_ALLOW_PEERS says.
async fn start_turn(
    settings: &Settings,
    sockets: &SfuSockets,
    certificates: Option<crate::tls::TlsCertificates>,
) -> (crate::turn::TurnHandle, crate::turn::driver::TlsStreams) {
    use crate::turn::driver::{TurnSetup, start};
    use crate::turn::policy::RelayPolicy;

    let bind_ip = settings.http_bind.ip();
    let public_host = settings.public_url.host();
    // Relays are advertised where media is: the node IP, the listener's own address, or the
    // host's first reachable address.
    let relay_ip = sockets
        .udp_advertised()
        .first()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), SocketAddr::ip);
    // Loopback and link-local are refused as special addresses anyway.
    let mut host_addresses = crate::net::host_addresses();
    host_addresses.extend(settings.node_ip);
    host_addresses.push(bind_ip);
    let policy = RelayPolicy {
        allow: settings.turn_allow_peers.clone(),
        host_addresses,
        sfu_media: sockets.udp_advertised(),
    };
    let realm = if public_host.is_empty() {
        "rtcbox".to_owned()
    } else {
        public_host.trim_matches(['[', ']']).to_owned()
    };
    start(TurnSetup {
        bind_ip,
        port: settings.turn_port,
        tls_port: settings.turn_tls_port,
        certificates,
        public_host,
        // The public URL's port leads to rtcbox's HTTPS listener (and so to TURN over TLS) when
        // rtcbox gets the certificate for that name itself. With files or behind a proxy it may
        // be a reverse proxy that holds 443 (DSM's, with the exported certificate in files).
        https_port: match (settings.tls_mode, settings.https_bind) {
            (config::TlsMode::Acme, Some(_)) => settings.public_url.tls_port(),
            _ => None,
        },
        realm,
        shared_secret: settings.turn_shared_secret.clone(),
        relay_ip,
        relay_ports: settings.turn_relay_ports,
        policy,
        sfu_routes: sockets.udp_routes(),
    })
    .await
}

/// While no admin password exists, prints a fresh one-time setup token (or the one preset in
/// `RTCBOX_SETUP_TOKEN`, e.g. by the Synology install wizard) as a setup URL with the token in
/// it, on this machine's LAN address, and writes that URL to `setup-url.txt` in the data
/// directory (0600). Once a password exists, a file left from before is deleted.
async fn announce_setup_token(
    pool: &SqlitePool,
    admin: SocketAddr,
    scheme: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let preset = process_env("RTCBOX_SETUP_TOKEN").filter(|t| !t.trim().is_empty());
    if let Some(preset) = &preset
        && (preset.trim().len() < 16 || !preset.trim().chars().all(|c| c.is_ascii_alphanumeric()))
    {
        anyhow::bail!(
            "RTCBOX_SETUP_TOKEN must be at least 16 letters and digits (or unset, so rtcbox generates one)"
        );
    }
    let token = http::admin::ensure_setup_token(pool, preset.as_deref().map(str::trim))
        .await
        .context("cannot store the admin setup token")?;
    let Some(token) = token else {
        http::admin::remove_setup_url(data_dir);
        return Ok(());
    };
    let lan = crate::setup::discover::suggested_lan_ip();
    let url = http::admin::setup_url(scheme, admin, lan, &token);
    let file = match http::admin::write_setup_url(data_dir, &url) {
        Ok(()) => format!(
            "; the link is also in {}",
            data_dir.join(http::admin::SETUP_URL_FILE).display()
        ),
        Err(error) => {
            tracing::warn!(%error, "cannot write {} to the data directory", http::admin::SETUP_URL_FILE);
            String::new()
        }
    };
    tracing::warn!(
        "admin panel setup: open {url} in a browser on your LAN to choose the admin password (or open /setup there and enter the one-time setup token {token}). Valid for 24 hours; restarting rtcbox before a password is set prints a new one{file}"
    );
    Ok(())
}

/// The database of the configured data directory, which must exist (maintenance commands do
/// not create one).
async fn open_existing(cli: &Cli) -> anyhow::Result<(std::path::PathBuf, SqlitePool)> {
    let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
    if !db::db_path(&data_dir).exists() {
        anyhow::bail!(
            "no rtcbox database in {} (give the data directory with --data-dir or RTCBOX_DATA_DIR)",
            data_dir.display()
        );
    }
    let pool = db::open(&data_dir).await?;
    Ok((data_dir, pool))
}

/// `rtcbox admin reset-password`: works while rtcbox runs (SQLite in WAL mode).
async fn reset_password(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (_, pool) = open_existing(cli).await?;
    let token = http::admin::new_setup_token();
    let now = db::unix_now();
    db::admin::reset_password(&pool, &token, now + http::admin::SETUP_TOKEN_TTL_SECS, now)
        .await
        .context("cannot reset the admin password")?;
    println!(
        "The admin password was removed and every browser was logged out.\n\
         Open the admin panel's /setup page and enter this one-time setup token (valid for 24 hours):\n\n    {token}\n"
    );
    Ok(ExitCode::SUCCESS)
}

/// `rtcbox backup`: the data directory's settings, keys, admin account and certificates as one
/// file (`backup`), to `--out` or standard output.
async fn backup(cli: &Cli, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let to_stdout = args
        .out
        .as_deref()
        .is_none_or(|p| p == std::path::Path::new("-"));
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!(
            "the backup holds secrets and is not printed to a terminal: give --out FILE, or \
             redirect standard output to a file"
        );
    }
    let (data_dir, pool) = open_existing(cli).await?;
    let snapshot = db::backup::snapshot(&pool)
        .await
        .context("cannot read the database")?;
    let summary = crate::backup::summary(&snapshot);
    let bytes = crate::backup::write(snapshot, db::unix_now());
    let written_to = match &args.out {
        Some(path) if !to_stdout => {
            write_private_file(path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            path.display().to_string()
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .context("cannot write the backup to standard output")?;
            "standard output".to_owned()
        }
    };
    eprintln!(
        "Backup of {} written to {written_to}. It holds:\n  - {}\nIt contains secrets (the API \
         secret, private keys, the admin password hash): keep it where only you can read it.",
        data_dir.display(),
        summary.join("\n  - ")
    );
    Ok(ExitCode::SUCCESS)
}

/// A new file only its owner can read, replacing any file of that name.
fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through `open`: narrow it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `rtcbox restore FILE`: checks the whole backup, then replaces the data directory's
/// settings, keys, admin account and certificates with it in one transaction. Refused while
/// `rtcbox serve` runs on the same data directory (it would keep running with the old keys and
/// could write its own state over the restored one); the panel's restore is for a running one.
async fn restore(cli: &Cli, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(&args.file)
        .and_then(|f| {
            f.take(crate::backup::MAX_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
    let flags = cli.settings.to_map();
    let empty = BTreeMap::new();
    let layers = Layers {
        flags: &flags,
        env: &process_env,
        stored: &empty,
    };
    // Checked before the database is even opened: a refused file leaves no trace.
    let snapshot = crate::backup::read(&bytes, &layers).map_err(|why| {
        anyhow::anyhow!(
            "{} was not restored: {why}. Nothing was changed.",
            args.file.display()
        )
    })?;
    let Some(_serve_lock) = db::try_serve_lock(&data_dir)? else {
        anyhow::bail!(
            "rtcbox is running on {}: stop it first (e.g. `systemctl stop rtcbox`, `docker stop \
             rtcbox`, or stop the package), then restore and start it again; or restore from the \
             admin panel's Backup page. Nothing was changed.",
            data_dir.display()
        );
    };
    let pool = db::open(&data_dir).await?;
    db::backup::replace(&pool, &snapshot, db::unix_now())
        .await
        .with_context(|| {
            format!(
                "{} was not restored; nothing was changed",
                args.file.display()
            )
        })?;
    eprintln!(
        "Restored {} into {}:\n  - {}\nStart rtcbox to run with it. Browsers that were \
         logged in must log in again.",
        args.file.display(),
        data_dir.display(),
        crate::backup::summary(&snapshot).join("\n  - ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Where each setting came from, without secret values.
fn log_settings(settings: &Settings) {
    let origin = |key| {
        settings
            .origins
            .get(&key)
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    tracing::info!(
        public_url = %settings.public_url,
        public_url_from = origin(SettingKey::PublicUrl),
        api_key = %settings.api_key,
        api_key_from = origin(SettingKey::ApiKey),
        api_secret_from = origin(SettingKey::ApiSecret),
        full_access_homeservers = %settings.full_access_homeservers.as_ref().map(ToString::to_string).unwrap_or_default(),
        "settings"
    );
    if settings.origins.get(&SettingKey::PublicUrl) == Some(&Origin::Default) {
        tracing::warn!(
            "RTCBOX_PUBLIC_URL is not set: clients are told to connect to {}, which only works on this \
             machine. The setup wizard in the admin panel stores the public URL",
            settings.public_url
        );
    }
    let from_store = |key| matches!(settings.origins.get(&key), Some(Origin::Stored));
    if from_store(SettingKey::ApiKey) != from_store(SettingKey::ApiSecret) {
        tracing::warn!(
            "the API key and the API secret come from different places ({} and {}); tokens only \
             verify when both belong to the same pair",
            origin(SettingKey::ApiKey),
            origin(SettingKey::ApiSecret)
        );
    }
    if settings.full_access_homeservers.is_none() {
        tracing::warn!(
            "RTCBOX_FULL_ACCESS_HOMESERVERS is not set: no homeserver's users can start calls (they \
             can only join rooms that exist). The setup wizard in the admin panel stores your \
             homeserver"
        );
    }
    if settings.dangerous_allow_private_homeservers {
        tracing::warn!(
            "RTCBOX_DANGEROUS_ALLOW_PRIVATE_HOMESERVERS is on: requests naming any homeserver can make \
             rtcbox connect to loopback and LAN addresses"
        );
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

async fn print_token(cli: &Cli, args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let (_pool, settings) = open_and_resolve(cli).await?;
    let video = VideoGrant {
        room_join: true,
        room: args.room.clone(),
        can_publish: Some(true),
        can_subscribe: Some(true),
        ..VideoGrant::default()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock")?
        .as_secs();
    let jwt = token::mint(
        &settings.api_key,
        &settings.api_secret,
        &args.identity,
        video,
        args.ttl,
        now,
    )?;
    println!("{jwt}");
    Ok(ExitCode::SUCCESS)
}

/// Probes `/healthz` with a plain HTTP/1.1 request; exit 0 on 200.
async fn healthcheck(cli: &Cli, args: &HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let (host, port, path) = match &args.url {
        Some(url) => parse_http_url(url)?,
        None => {
            let data_dir = config::data_dir(cli.data_dir.as_deref(), &process_env);
            // Read stored settings only if a database exists: a health check must not create one.
            let stored = if db::db_path(&data_dir).exists() {
                let pool = db::open(&data_dir).await?;
                db::settings::all(&pool).await.unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            let flags = cli.settings.to_map();
            let bind = config::resolve_http_bind(&Layers {
                flags: &flags,
                env: &process_env,
                stored: &stored,
            })?;
            let addr = SocketAddr::new(loopback_for(bind.ip()), bind.port());
            let host = match addr.ip() {
                IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            (host, addr.port(), "/healthz".to_owned())
        }
    };
    let shown = format!("{host}:{port}");
    match tokio::time::timeout(Duration::from_secs(5), probe(&host, port, &path)).await {
        Ok(Ok(200)) => {
            println!("healthy: http://{shown}{path} answered 200");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(status)) => {
            eprintln!("unhealthy: http://{shown}{path} answered {status}");
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(error)) => {
            eprintln!("unhealthy: http://{shown}{path}: {error}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            eprintln!("unhealthy: http://{shown}{path} did not answer within 5 s");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A wildcard listener is probed on loopback of the same family.
fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// `http://host[:port]/path` → (host, port, path); the host is a name or an IP literal.
fn parse_http_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/healthz".to_owned()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (
            host,
            port.parse::<u16>()
                .ok()
                .with_context(|| format!("--url has no usable port ('{authority}')"))?,
        ),
        _ => (authority, 80),
    };
    if host.is_empty() {
        anyhow::bail!("--url names no host, e.g. http://127.0.0.1:8880/healthz");
    }
    Ok((host.to_owned(), port, path))
}

async fn probe(host: &str, port: u16, path: &str) -> anyhow::Result<u16> {
    let addrs = crate::net::dns::lookup(host, port)
        .await
        .map_err(|reason| anyhow::anyhow!("cannot resolve {host}: {reason}"))?;
    let mut last = None;
    let mut connected = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(error) => {
                last = Some(anyhow::Error::new(error).context(format!("cannot connect to {addr}")))
            }
        }
    }
    let Some(mut stream) = connected else {
        return Err(last.unwrap_or_else(|| anyhow::anyhow!("{host} has no address")));
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = vec![0u8; 1024];
    let mut len = 0;
    while len < head.len() {
        let read = stream.read(&mut head[len..]).await?;
        if read == 0 {
            break;
        }
        len += read;
        if head[..len].windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .context("the answer is not HTTP")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: Option<(&str, u16, &str)>) {
        let got = parse_http_url(url).ok();
        let got = got
            .as_ref()
            .map(|(h, p, path)| (h.as_str(), *p, path.as_str()));
        assert_eq!(got, expected, "{url}");
    }

    #[test]
    fn health_check_urls() {
        check(
            "http://127.0.0.1:8880/healthz",
            Some(("127.0.0.1", 8880, "/healthz")),
        );
        check("http://rtcbox:8880", Some(("rtcbox", 8880, "/healthz")));
        check("http://[::1]:8880/x", Some(("[::1]", 8880, "/x")));
        check("http://[::1]/x", Some(("[::1]", 80, "/x")));
        check("http://localhost/", Some(("localhost", 80, "/")));
        check("https://127.0.0.1:8880/", None);
        check("http://:8880/", None);
        check("http://host:port/", None);
        check("http://host:99999/", None);
    }
}
