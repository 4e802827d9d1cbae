//! "Restart now": the admin panel asks, every listener stops as on SIGTERM, and `main` replaces
//! the process image with the same binary, arguments and environment (execve). The process id
//! stays the same, so a supervisor (systemd, Docker or Podman, DSM's package manager) notices
//! nothing and keeps supervising it, and without one rtcbox still comes back. Sockets and the
//! database are close-on-exec, so the new image binds the same ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Set when the stop was a restart; read by `main` after the runtime ended.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// What the admin panel holds to restart the process.
#[derive(Clone)]
pub struct Restarter {
    stop: Arc<watch::Sender<bool>>,
}

impl Restarter {
    /// `stop` ends the listeners (`app::serve`'s shutdown signal).
    pub fn new(stop: Arc<watch::Sender<bool>>) -> Restarter {
        Restarter { stop }
    }

    /// Stops the listeners; `main` then starts rtcbox again in this process.
    pub fn request(&self) {
        REQUESTED.store(true, Ordering::SeqCst);
        tracing::info!("restart requested in the admin panel");
        let _ = self.stop.send(true);
    }
}

impl Restarter {
    /// [`Restarter::request`] once the page answering the request has had time to leave.
    pub fn request_soon(&self) {
        let restarter = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            restarter.request();
        });
    }
}

/// Whether the process stopped to restart.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Replaces this process with a fresh start of the same binary, arguments and environment.
/// Returns only when that failed, with the reason.
pub fn exec_self() -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => return error,
    };
    // An upgrade replaced the file: start the one now at that path.
    let exe = match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => std::path::PathBuf::from(path),
        None => exe,
    };
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec()
}

/// What runs rtcbox, as far as the environment tells: shown beside "Restart now".
pub fn supervisor() -> &'static str {
    let env = |name: &str| std::env::var_os(name).is_some();
    if env("SYNOPKG_PKGNAME") || env("SYNOPKG_PKGDEST") {
        "the Synology package manager"
    } else if env("INVOCATION_ID") {
        "systemd"
    } else if std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
    {
        "the container runtime"
    } else {
        "the program that started it"
    }
}
