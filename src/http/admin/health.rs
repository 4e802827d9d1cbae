//! The dashboard's health summary: one line per thing that must be right for calls to work
//! (setup, settings waiting for a restart, the public IP, the certificate, the TURN listeners,
//! the last verification), each problem with a link to where it is fixed. Pure: the dashboard
//! gathers the inputs.

use crate::acme::AcmeStatus;
use crate::config::TlsMode;
use crate::net::public_ip::{Mode, Status};
use crate::setup::wizard::Step;
use crate::tls::CertificateInfo;

/// Certificates closer to their end than this are a problem (ACME renews long before).
const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

pub struct Inputs<'a> {
    pub setup_done: bool,
    pub next_step: Step,
    pub pending_restart: &'a [&'static str],
    pub public_ip: Option<&'a Status>,
    pub tls_mode: TlsMode,
    pub certificate: Option<&'a CertificateInfo>,
    pub acme: Option<&'a AcmeStatus>,
    /// TURN listeners that did not open: (what, why).
    pub turn_failures: Vec<(String, String)>,
    /// The last run of the checks on the verification page: (failed, total, when), if any.
    pub last_checks: Option<(usize, usize, i64)>,
    pub now: i64,
}

/// One line of the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub ok: bool,
    pub title: &'static str,
    pub detail: String,
    /// Where to fix it: (link, label).
    pub fix: Option<(String, String)>,
}

fn ok(title: &'static str, detail: String) -> Item {
    Item {
        ok: true,
        title,
        detail,
        fix: None,
    }
}

fn problem(title: &'static str, detail: String, href: &str, label: &str) -> Item {
    Item {
        ok: false,
        title,
        detail,
        fix: Some((href.to_owned(), label.to_owned())),
    }
}

pub fn summary(i: &Inputs<'_>) -> Vec<Item> {
    let mut out = Vec::new();
    out.push(if i.setup_done {
        ok("Setup", "complete".to_owned())
    } else {
        problem(
            "Setup",
            format!(
                "not finished: \"{}\" still needs an answer",
                i.next_step.title()
            ),
            &format!("/wizard/{}", i.next_step.id()),
            &format!("Continue with \"{}\"", i.next_step.title()),
        )
    });
    if !i.pending_restart.is_empty() {
        out.push(problem(
            "Restart",
            format!(
                "{} saved setting(s) wait for a restart: {}",
                i.pending_restart.len(),
                i.pending_restart.join(", ")
            ),
            "#pending-restart",
            "Restart now",
        ));
    }
    if let Some(status) = i.public_ip {
        out.push(match (status.mode, status.current) {
            (Mode::Fixed(ip), _) => ok("Public IP", format!("{ip}, fixed")),
            (Mode::Automatic, Some(ip)) => ok("Public IP", format!("{ip}, detected and followed")),
            (Mode::Automatic, None) => problem(
                "Public IP",
                match &status.last_error {
                    Some(error) => format!("not detected: {error}"),
                    None => "not detected yet".to_owned(),
                },
                "/settings#f-stun_servers",
                "Check the STUN servers, or set a fixed IP",
            ),
        });
    }
    out.push(certificate(i));
    if let Some((what, why)) = i.turn_failures.first() {
        out.push(problem(
            "TURN",
            format!("{what} is not running: {why}"),
            "/settings#f-turn_port",
            "Choose other TURN ports",
        ));
    }
    match i.last_checks {
        Some((0, total, _)) => out.push(ok("Last checks", format!("all {total} passed"))),
        Some((failed, total, _)) => out.push(problem(
            "Last checks",
            format!("{failed} of {total} failed"),
            "/verify",
            "See what to fix",
        )),
        None if i.setup_done => out.push(problem(
            "Last checks",
            "not run yet".to_owned(),
            "/verify",
            "Run the checks",
        )),
        None => {}
    }
    out
}

fn certificate(i: &Inputs<'_>) -> Item {
    let Some(info) = i.certificate else {
        return ok(
            "Certificate",
            "none: rtcbox serves no HTTPS itself".to_owned(),
        );
    };
    let days = (info.not_after - i.now) / 86_400;
    if let Some(acme) = i.acme
        && acme.state == "failed"
    {
        return problem(
            "Certificate",
            format!(
                "Let's Encrypt failed: {}",
                acme.last_error.as_deref().unwrap_or("unknown error")
            ),
            "/settings#f-acme_challenge",
            "Check the certificate settings",
        );
    }
    if info.not_after - i.now < EXPIRY_WARNING_SECS && i.tls_mode != TlsMode::Acme {
        return problem(
            "Certificate",
            if info.not_after <= i.now {
                "expired".to_owned()
            } else {
                format!("expires in {days} days")
            },
            "/settings#f-tls_mode",
            "Install a new one, or let rtcbox get one (ACME)",
        );
    }
    match i.tls_mode {
        TlsMode::Proxy => ok(
            "Certificate",
            "your reverse proxy serves the certificate".to_owned(),
        ),
        _ if info.publicly_trusted => ok(
            "Certificate",
            format!("trusted by browsers, {days} days left"),
        ),
        TlsMode::Acme => ok(
            "Certificate",
            "waiting for Let's Encrypt (self-signed until then)".to_owned(),
        ),
        _ => problem(
            "Certificate",
            "browsers do not trust it (self-signed or not from a known CA)".to_owned(),
            "/settings#f-tls_mode",
            "Choose the certificate source",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs<'static> {
        Inputs {
            setup_done: true,
            next_step: Step::Review,
            pending_restart: &[],
            public_ip: None,
            tls_mode: TlsMode::Proxy,
            certificate: None,
            acme: None,
            turn_failures: Vec::new(),
            last_checks: Some((0, 12, 0)),
            now: 1_000_000,
        }
    }

    #[test]
    fn a_healthy_deployment_is_all_ticks() {
        let items = summary(&inputs());
        assert!(items.iter().all(|i| i.ok), "{items:?}");
    }

    #[test]
    fn every_problem_links_to_its_fix() {
        let status = Status {
            mode: Mode::Automatic,
            current: None,
            checked_at: Some(1),
            last_error: Some("no STUN server answered".into()),
            changed_at: None,
            previous: None,
            changes: 0,
        };
        let cert = CertificateInfo {
            source: "files".into(),
            names: vec!["rtc.example.org".into()],
            not_after: 1_000_000 + 3 * 86_400,
            publicly_trusted: true,
        };
        let pending = ["RTCBOX_RTC_UDP_PORT"];
        let i = Inputs {
            setup_done: false,
            next_step: Step::Network,
            pending_restart: &pending,
            public_ip: Some(&status),
            tls_mode: TlsMode::Files,
            certificate: Some(&cert),
            turn_failures: vec![("TURN over UDP".into(), "port 3478 is in use".into())],
            last_checks: Some((2, 12, 0)),
            ..inputs()
        };
        let items = summary(&i);
        let problems: Vec<&Item> = items.iter().filter(|i| !i.ok).collect();
        assert_eq!(problems.len(), 6, "{items:?}");
        assert!(problems.iter().all(|p| p.fix.is_some()));
        let fix = |title: &str| {
            items
                .iter()
                .find(|i| i.title == title)
                .and_then(|i| i.fix.clone())
                .map(|(href, _)| href)
        };
        assert_eq!(fix("Setup").as_deref(), Some("/wizard/network"));
        assert_eq!(
            fix("Public IP").as_deref(),
            Some("/settings#f-stun_servers")
        );
        assert_eq!(fix("Certificate").as_deref(), Some("/settings#f-tls_mode"));
        assert_eq!(fix("Last checks").as_deref(), Some("/verify"));
        let cert = items.iter().find(|i| i.title == "Certificate").unwrap();
        assert_eq!(cert.detail, "expires in 3 days");
    }
}
