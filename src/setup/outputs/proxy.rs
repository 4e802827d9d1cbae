//! Reverse-proxy configurations: Synology DSM steps, nginx, Caddy, Traefik and Apache.
//!
//! rtcbox's public HTTP listener serves the authorization service and the SFU both at the root
//! and under `/livekit/jwt` and `/livekit/sfu`, so every configuration forwards whole hosts,
//! without path rules or prefix stripping: the simplest rule is the one nobody gets wrong. What
//! each must get right instead: the WebSocket upgrade for the SFU's signaling, long read
//! timeouts (a call's WebSocket stays open for the whole call), and `Host`/`X-Forwarded-*`.
//! Media never passes through a proxy; it has its own port forwards (see `ports`).

use super::{Output, bracketed_host, label_for, public_origins, underline, upstream, yaml_str};
use crate::setup::model::{Deployment, PublicOrigin};

pub const DSM_ID: &str = "proxy-synology-dsm";
pub const NGINX_ID: &str = "proxy-nginx";
pub const CADDY_ID: &str = "proxy-caddy";
pub const TRAEFIK_ID: &str = "proxy-traefik";
pub const APACHE_ID: &str = "proxy-apache";

/// Seconds a proxied connection may stay quiet. LiveKit clients ping every few seconds, so this
/// is a generous ceiling, not a tuning knob.
const TIMEOUT_SECS: u32 = 3600;

pub fn synology_dsm(d: &Deployment) -> Output {
    Output {
        id: DSM_ID,
        title: "Reverse proxy: Synology DSM".to_owned(),
        filename: "synology-dsm-reverse-proxy.txt".to_owned(),
        media_type: "text/plain",
        intro: format!(
            "Steps for DSM's built-in reverse proxy: {} that forward{} HTTPS to rtcbox on port {}. \
             Do not skip the WebSocket custom header.",
            rule_count(d),
            if public_origins(d).len() == 1 {
                "s"
            } else {
                ""
            },
            d.network.ports.http
        ),
        text: dsm_text(d),
    }
}

pub fn nginx(d: &Deployment) -> Output {
    Output {
        id: NGINX_ID,
        title: "Reverse proxy: nginx".to_owned(),
        filename: "rtcbox-nginx.conf".to_owned(),
        media_type: "text/plain",
        intro: "Save as /etc/nginx/conf.d/rtcbox.conf (files there are included inside http { }), \
                adjust the certificate paths if yours differ, then run nginx -t and reload nginx."
            .to_owned(),
        text: nginx_text(d),
    }
}

pub fn caddy(d: &Deployment) -> Output {
    Output {
        id: CADDY_ID,
        title: "Reverse proxy: Caddy".to_owned(),
        filename: "Caddyfile".to_owned(),
        media_type: "text/plain",
        intro: "Add this site block to your Caddyfile and run caddy reload; Caddy obtains the \
                certificate and passes WebSockets through by itself."
            .to_owned(),
        text: caddy_text(d),
    }
}

pub fn traefik(d: &Deployment) -> Output {
    Output {
        id: TRAEFIK_ID,
        title: "Reverse proxy: Traefik".to_owned(),
        filename: "rtcbox-traefik.yml".to_owned(),
        media_type: "application/yaml",
        intro: "A dynamic configuration file for Traefik's file provider: put it in the directory \
                your static configuration watches (providers.file.directory)."
            .to_owned(),
        text: traefik_text(d),
    }
}

pub fn apache(d: &Deployment) -> Output {
    Output {
        id: APACHE_ID,
        title: "Reverse proxy: Apache httpd".to_owned(),
        filename: "rtcbox-apache.conf".to_owned(),
        media_type: "text/plain",
        intro: "Save as /etc/apache2/sites-available/rtcbox.conf, enable the modules it lists and \
                the site (a2ensite rtcbox), then run apachectl configtest and reload Apache."
            .to_owned(),
        text: apache_text(d),
    }
}

fn rule_count(d: &Deployment) -> &'static str {
    if public_origins(d).len() == 1 {
        "one rule"
    } else {
        "two rules"
    }
}

fn scheme(origin: &PublicOrigin) -> &'static str {
    if origin.tls { "HTTPS" } else { "HTTP" }
}

fn dsm_text(d: &Deployment) -> String {
    let http = d.network.ports.http;
    let origins = public_origins(d);
    let mut out = underline("Synology DSM reverse proxy for rtcbox", '=');
    out += &format!(
        "\n\
         rtcbox answers everything clients need (the authorization service, the SFU's WebSocket\n\
         and its API) on one plain-HTTP port, {http}, at the root and under /livekit/jwt and\n\
         /livekit/sfu alike. So DSM needs {} without any path settings. Menu names are DSM 7's;\n\
         on DSM 6 the same page is Control Panel > Application Portal > Reverse Proxy.\n\
         The destination is localhost because rtcbox runs on the NAS itself; if it runs on\n\
         another machine, enter that machine's address ({}) instead.\n",
        rule_count(d),
        d.network.lan_ip
    );
    for (i, origin) in origins.iter().enumerate() {
        out += "\n";
        let heading = if origins.len() == 1 {
            format!("The rule for {} ({})", origin.host, label_for(d, origin))
        } else {
            format!(
                "Rule {} of {}: {} ({})",
                i + 1,
                origins.len(),
                origin.host,
                label_for(d, origin)
            )
        };
        out += &underline(&heading, '-');
        out += &format!(
            "1. Control Panel > Login Portal > Advanced > Reverse Proxy > Create.\n\
             2. General tab:\n\
             \x20    Reverse Proxy Name: rtcbox{}\n\
             \x20    Source:      Protocol {}, Hostname {}, Port {}\n\
             \x20    Destination: Protocol HTTP, Hostname localhost, Port {http}\n\
             3. Custom Header tab: Create > WebSocket.   <-- do not skip this step\n\
             \x20    It adds two rows, Upgrade = $http_upgrade and Connection = $connection_upgrade.\n\
             \x20    Without them DSM cannot pass the SFU's WebSocket: the token request succeeds,\n\
             \x20    then every call fails to connect.\n\
             4. Advanced Settings tab:\n\
             \x20    Proxy connection timeout: 60\n\
             \x20    Proxy send timeout: {TIMEOUT_SECS}\n\
             \x20    Proxy read timeout: {TIMEOUT_SECS}\n\
             \x20    Proxy HTTP version: HTTP 1.1 (where DSM shows this option)\n\
             \x20    A call's WebSocket stays open for the whole call; long timeouts keep a quiet\n\
             \x20    connection from being cut.\n\
             5. Save.\n",
            if origins.len() == 1 {
                String::new()
            } else {
                format!("-{}", i + 1)
            },
            scheme(origin),
            origin.host,
            origin.effective_port(),
        );
    }
    out += "\n";
    out += &underline("Certificate", '-');
    let hosts: Vec<&str> = origins.iter().map(|o| o.host.as_str()).collect();
    out += &format!(
        "Control Panel > Security > Certificate:\n\
         1. If you have no certificate covering {hosts}: Add > Add a new certificate > Get a\n\
         \x20  certificate from Let's Encrypt, domain name {first}{more}. Let's Encrypt checks on\n\
         \x20  port 80, so TCP 80 must reach the NAS (see port-forwards.txt).\n\
         2. Settings: in the list of services, pick that certificate for {hosts}.\n",
        hosts = hosts.join(" and "),
        first = hosts[0],
        more = if hosts.len() > 1 {
            format!(", subject alternative name {}", hosts[1..].join(", "))
        } else {
            String::new()
        }
    );
    out += "\n";
    out += &underline("Then", '-');
    out += &format!(
        "- Forward TCP {} on your router to the NAS, {} (see port-forwards.txt).\n\
         - Media does not pass through the reverse proxy: UDP {} and TCP {} are forwarded to\n\
         \x20 the NAS directly.\n\
         - If DSM's firewall is on, allow these ports (see dsm-firewall.txt).\n",
        origins[0].effective_port(),
        super::socket(d.network.lan_ip, origins[0].effective_port()),
        d.network.ports.rtc_udp,
        d.network.ports.rtc_tcp,
    );
    out
}

fn nginx_text(d: &Deployment) -> String {
    let upstream = upstream(d);
    let origins = public_origins(d);
    let mut out = String::new();
    out += &format!(
        "# rtcbox behind nginx: save as /etc/nginx/conf.d/rtcbox.conf.\n\
         # Files in conf.d/ are included inside http {{ }}, where map and server blocks belong.\n\
         #\n\
         # rtcbox serves the authorization service and the SFU both at the root and under\n\
         # /livekit/jwt and /livekit/sfu, so whole hosts are forwarded to it unchanged: no\n\
         # prefix stripping, no per-path locations. Media (UDP {}, TCP {}) does not pass\n\
         # through nginx; forward those ports on the router.\n\
         #\n\
         # The certificate paths are certbot's defaults. nginx does not start while one is\n\
         # missing, so get them first, e.g. (port 80 free, i.e. nginx stopped):\n\
{}\
         # Later renewals can use `--webroot -w /var/www/html`, which the port-80 server answers.\n\
         # HTTP/2 is optional: `listen 443 ssl http2;` on nginx before 1.25.1, `http2 on;` after.\n\
         \n\
         # The SFU's signaling is a WebSocket: pass the upgrade, and close other connections\n\
         # normally. (Named for rtcbox so it cannot clash with a map elsewhere in your config.)\n\
         map $http_upgrade $rtcbox_connection_upgrade {{\n\
         \x20   default upgrade;\n\
         \x20   ''      close;\n\
         }}\n",
        d.network.ports.rtc_udp,
        d.network.ports.rtc_tcp,
        origins
            .iter()
            .filter(|o| o.tls)
            .map(|o| format!("#   certbot certonly --standalone -d {}\n", o.host))
            .collect::<String>(),
    );

    let redirected: Vec<&str> = origins
        .iter()
        .filter(|o| o.tls && o.effective_port() == 443)
        .map(|o| o.host.as_str())
        .collect();
    if !redirected.is_empty() {
        out += &format!(
            "\n\
             # Plain HTTP: certificate renewals, and a redirect to HTTPS for everything else.\n\
             server {{\n\
             \x20   listen 80;\n\
             \x20   listen [::]:80;\n\
             \x20   server_name {};\n\
             \n\
             \x20   location /.well-known/acme-challenge/ {{\n\
             \x20       root /var/www/html;\n\
             \x20   }}\n\
             \x20   location / {{\n\
             \x20       return 301 https://$host$request_uri;\n\
             \x20   }}\n\
             }}\n",
            redirected.join(" ")
        );
    }

    for origin in &origins {
        let port = origin.effective_port();
        let ssl = if origin.tls { " ssl" } else { "" };
        out += &format!(
            "\n\
             # {} ({})\n\
             server {{\n\
             \x20   listen {port}{ssl};\n\
             \x20   listen [::]:{port}{ssl};\n\
             \x20   server_name {};\n",
            origin.https_url(),
            label_for(d, origin),
            origin.host,
        );
        if origin.tls {
            out += &format!(
                "\n\
                 \x20   ssl_certificate     /etc/letsencrypt/live/{host}/fullchain.pem;\n\
                 \x20   ssl_certificate_key /etc/letsencrypt/live/{host}/privkey.pem;\n",
                host = origin.host
            );
        }
        out += &format!(
            "\n\
             \x20   location / {{\n\
             \x20       proxy_pass http://{upstream};\n\
             \x20       proxy_http_version 1.1;\n\
             \x20       proxy_set_header Upgrade $http_upgrade;\n\
             \x20       proxy_set_header Connection $rtcbox_connection_upgrade;\n\
             \x20       proxy_set_header Host $host;\n\
             \x20       proxy_set_header X-Real-IP $remote_addr;\n\
             \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20       proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20       # A call's WebSocket stays open for the whole call.\n\
             \x20       proxy_read_timeout {TIMEOUT_SECS}s;\n\
             \x20       proxy_send_timeout {TIMEOUT_SECS}s;\n\
             \x20   }}\n\
             }}\n"
        );
    }
    out
}

fn caddy_text(d: &Deployment) -> String {
    let origins = public_origins(d);
    let addresses: Vec<String> = origins
        .iter()
        .map(|o| {
            let host = bracketed_host(&o.host);
            match (o.tls, o.port) {
                (true, None) => host,
                (true, Some(port)) => format!("{host}:{port}"),
                (false, _) => format!("http://{host}:{}", o.effective_port()),
            }
        })
        .collect();
    format!(
        "# rtcbox behind Caddy: add this site block to your Caddyfile, then run `caddy reload`.\n\
         #\n\
         # Caddy gets and renews the certificate itself (ports 80 and 443 must reach it), passes\n\
         # WebSocket upgrades through and sets X-Forwarded-For/-Proto on its own. rtcbox serves\n\
         # /livekit/jwt and /livekit/sfu itself, so the whole host is forwarded as it is: no\n\
         # handle_path, no prefix stripping. Media (UDP {udp}, TCP {tcp}) does not pass\n\
         # through Caddy; forward those ports on the router.\n\
         #\n\
         # `caddy reload` closes proxied WebSockets, which drops running calls (clients rejoin).\n\
         # Caddy 2.7 and newer can wait instead: add `stream_close_delay 1h` inside reverse_proxy.\n\
         \n\
         {addresses} {{\n\
         \treverse_proxy {upstream}\n\
         }}\n",
        udp = d.network.ports.rtc_udp,
        tcp = d.network.ports.rtc_tcp,
        addresses = addresses.join(", "),
        upstream = upstream(d),
    )
}

fn traefik_text(d: &Deployment) -> String {
    let origins = public_origins(d);
    let mut out = format!(
        "# rtcbox behind Traefik (v2 or v3): a dynamic configuration file for the file provider,\n\
         # e.g. /etc/traefik/dynamic/rtcbox.yml with providers.file.directory: /etc/traefik/dynamic\n\
         # in the static configuration.\n\
         #\n\
         # Traefik passes WebSocket upgrades and X-Forwarded-* headers through on its own. rtcbox\n\
         # serves /livekit/jwt and /livekit/sfu itself, so no StripPrefix middleware is needed.\n\
         # The entry point \"websecure\" and the certificate resolver \"letsencrypt\" must match\n\
         # the names in your static configuration; rename them here if yours differ.\n\
         # If calls drop after a fixed time (e.g. 60 s), raise\n\
         # entryPoints.websecure.transport.respondingTimeouts.readTimeout there.\n\
         # Media (UDP {}, TCP {}) does not pass through Traefik; forward those ports on the router.\n\
         \n\
         http:\n\
         \x20 routers:\n",
        d.network.ports.rtc_udp, d.network.ports.rtc_tcp,
    );
    for (i, origin) in origins.iter().enumerate() {
        let name = if origins.len() == 1 {
            "rtcbox".to_owned()
        } else if i == 0 {
            "rtcbox-jwt".to_owned()
        } else {
            "rtcbox-sfu".to_owned()
        };
        let entry_point = match (origin.tls, origin.effective_port()) {
            (true, 443) => "websecure".to_owned(),
            (false, 80) => "web".to_owned(),
            (_, port) => format!("port{port}"),
        };
        out += &format!(
            "    # {} ({})\n\
             \x20   {name}:\n\
             \x20     rule: {}\n\
             \x20     entryPoints:\n\
             \x20       - {entry_point}\n\
             \x20     service: rtcbox\n",
            origin.https_url(),
            label_for(d, origin),
            yaml_str(&format!("Host(`{}`)", origin.host)),
        );
        if !matches!(entry_point.as_str(), "websecure" | "web") {
            out += &format!(
                "      # Port {} needs an entry point of its own in the static configuration.\n",
                origin.effective_port()
            );
        }
        if origin.tls {
            out += "      tls:\n        certResolver: letsencrypt\n";
        }
    }
    out += &format!(
        "  services:\n\
         \x20   rtcbox:\n\
         \x20     loadBalancer:\n\
         \x20       passHostHeader: true\n\
         \x20       servers:\n\
         \x20         - url: {}\n",
        yaml_str(&format!("http://{}", upstream(d)))
    );
    out
}

fn apache_text(d: &Deployment) -> String {
    let upstream = upstream(d);
    let origins = public_origins(d);
    let mut out = format!(
        "# rtcbox behind Apache httpd 2.4: save as /etc/apache2/sites-available/rtcbox.conf and\n\
         # enable it with `a2ensite rtcbox`.\n\
         #\n\
         # Modules: ssl, proxy, proxy_http, headers, alias\n\
         #   a2enmod ssl proxy proxy_http headers alias\n\
         # WebSockets go through mod_proxy_http's upgrade=websocket, which needs Apache 2.4.47 or\n\
         # newer; for older versions see the comment in the 443 block.\n\
         #\n\
         # rtcbox serves /livekit/jwt and /livekit/sfu itself, so whole hosts are forwarded as\n\
         # they are, without rewriting. mod_proxy adds X-Forwarded-For by itself. Media (UDP {},\n\
         # TCP {}) does not pass through Apache; forward those ports on the router.\n\
         # The certificate paths are certbot's defaults.\n",
        d.network.ports.rtc_udp, d.network.ports.rtc_tcp,
    );
    for origin in &origins {
        let port = origin.effective_port();
        out += &format!(
            "\n\
             # {} ({})\n",
            origin.https_url(),
            label_for(d, origin)
        );
        if origin.tls && port == 443 {
            out += &format!(
                "<VirtualHost *:80>\n\
                 \x20   ServerName {host}\n\
                 \x20   Redirect permanent / https://{host}/\n\
                 </VirtualHost>\n\
                 \n",
                host = origin.host
            );
        }
        if !matches!(port, 80 | 443) {
            out += &format!("# Port {port} also needs `Listen {port}` in ports.conf.\n");
        }
        out += &format!(
            "<VirtualHost *:{port}>\n\
             \x20   ServerName {}\n",
            origin.host
        );
        if origin.tls {
            out += &format!(
                "\n\
                 \x20   SSLEngine on\n\
                 \x20   SSLCertificateFile /etc/letsencrypt/live/{host}/fullchain.pem\n\
                 \x20   SSLCertificateKeyFile /etc/letsencrypt/live/{host}/privkey.pem\n",
                host = origin.host
            );
        }
        out += &format!(
            "\n\
             \x20   ProxyRequests Off\n\
             \x20   ProxyPreserveHost On\n\
             \x20   RequestHeader set X-Forwarded-Proto \"{}\"\n\
             \x20   # upgrade=websocket passes the SFU's signaling WebSocket; a call's WebSocket stays\n\
             \x20   # open for the whole call, hence the long timeout.\n\
             \x20   ProxyPass \"/\" \"http://{upstream}/\" upgrade=websocket timeout={TIMEOUT_SECS}\n\
             \x20   ProxyPassReverse \"/\" \"http://{upstream}/\"\n\
             \x20   # Apache before 2.4.47: drop upgrade=websocket above, `a2enmod proxy_wstunnel\n\
             \x20   # rewrite`, and put these lines above the ProxyPass line:\n\
             \x20   #   RewriteEngine On\n\
             \x20   #   RewriteCond %{{HTTP:Upgrade}} =websocket [NC]\n\
             \x20   #   RewriteRule ^/(.*)$ ws://{upstream}/$1 [P,L]\n\
             </VirtualHost>\n",
            if origin.tls { "https" } else { "http" },
        );
    }
    out
}
