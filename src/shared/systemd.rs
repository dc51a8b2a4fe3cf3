//! The two systemd protocols forkd speaks, both without libsystemd:
//!
//! - socket passing (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, fds from 3), used to
//!   receive sockets (socket activation, and a new master started by USR2) and to pass
//!   them to a new master on upgrade;
//! - readiness notification (`NOTIFY_SOCKET`, sd_notify(3)): one datagram per message to
//!   a path or abstract (`@name`) unix socket, plus the watchdog (`WATCHDOG_USEC`,
//!   `WATCHDOG_PID`).
//!
//! The variables are read once by the master and removed from the environment, so that
//! workers and apps never see them (a worker that sent `READY=1` as the main process
//! would confuse systemd).

use std::os::fd::RawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The variables a new master started by USR2 needs to keep talking to systemd.
pub const NOTIFY_SOCKET_VAR: &str = "NOTIFY_SOCKET";
pub const WATCHDOG_USEC_VAR: &str = "WATCHDOG_USEC";
const WATCHDOG_PID_VAR: &str = "WATCHDOG_PID";

/// A connection to systemd's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    target: NotifyTarget,
    /// The `NOTIFY_SOCKET` value, passed on to a new master on upgrade.
    pub address: String,
}

enum NotifyTarget {
    Path(std::path::PathBuf),
    Abstract(std::os::unix::net::SocketAddr),
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` from the environment; `None` when it is unset (not under
    /// `Type=notify`), so no message is ever sent. An unusable value is an error.
    pub fn from_env() -> Result<Option<Notifier>, String> {
        let Some(address) = std::env::var_os(NOTIFY_SOCKET_VAR) else {
            return Ok(None);
        };
        crate::shared::single_threaded::set_env(NOTIFY_SOCKET_VAR, None);
        let address = address
            .into_string()
            .map_err(|v| format!("NOTIFY_SOCKET is not valid UTF-8: {v:?}"))?;
        Notifier::connect(&address).map(Some)
    }

    /// A notifier for `address`: a filesystem path, or `@name` for an abstract socket.
    pub fn connect(address: &str) -> Result<Notifier, String> {
        let target = if let Some(name) = address.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(|e| {
                    format!("NOTIFY_SOCKET {address:?} is not a usable abstract socket name: {e}")
                })?;
            NotifyTarget::Abstract(addr)
        } else if address.starts_with('/') {
            NotifyTarget::Path(address.into())
        } else {
            return Err(format!(
                "NOTIFY_SOCKET {address:?} is neither an absolute path nor an abstract socket (@name)"
            ));
        };
        let socket = UnixDatagram::unbound()
            .map_err(|e| format!("cannot create a socket for NOTIFY_SOCKET: {e}"))?;
        Ok(Notifier {
            socket,
            target,
            address: address.to_string(),
        })
    }

    /// Sends one message (newline-separated `KEY=VALUE` lines). Best effort: systemd may
    /// be gone during shutdown, and a lost status line must not stop the supervisor.
    pub fn send(&self, message: &str) {
        let sent = match &self.target {
            NotifyTarget::Path(path) => self.socket.send_to(message.as_bytes(), path),
            NotifyTarget::Abstract(addr) => self.socket.send_to_addr(message.as_bytes(), addr),
        };
        match sent {
            Ok(_) => tracing::debug!("sd_notify: {}", message.replace('\n', " ")),
            Err(e) => tracing::warn!("sd_notify to {} failed: {e}", self.address),
        }
    }
}

/// The watchdog interval systemd expects a keep-alive within, if it is meant for this
/// process (`WATCHDOG_PID` unset or ours). Removes the variables from the environment.
pub fn take_watchdog() -> Option<Duration> {
    let usec = std::env::var(WATCHDOG_USEC_VAR).ok();
    let pid = std::env::var(WATCHDOG_PID_VAR).ok();
    crate::shared::single_threaded::set_env(WATCHDOG_USEC_VAR, None);
    crate::shared::single_threaded::set_env(WATCHDOG_PID_VAR, None);
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec))
}

/// `CLOCK_MONOTONIC` in microseconds, for `RELOADING=1`'s `MONOTONIC_USEC=`.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// The first passed fd, per sd_listen_fds(3).
pub const LISTEN_FDS_START: RawFd = 3;

/// One socket passed to this process.
#[derive(Debug, Clone)]
pub struct PassedFd {
    pub fd: RawFd,
    pub name: Option<String>,
}

/// Takes the sockets passed to this process, if `LISTEN_PID` names it, and removes the
/// variables from the environment so that workers and apps never see them.
pub fn take_listen_fds() -> Vec<PassedFd> {
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        crate::shared::single_threaded::set_env(var, None);
    }
    let (Some(count), Some(pid)) = (count, pid) else {
        return Vec::new();
    };
    if pid != std::process::id() || count <= 0 {
        return Vec::new();
    }
    let names: Vec<Option<String>> = match names {
        Some(names) => names
            .split(':')
            .map(|n| Some(decode_name(n)).filter(|n| !n.is_empty()))
            .collect(),
        None => Vec::new(),
    };
    (0..count)
        .map(|i| PassedFd {
            fd: LISTEN_FDS_START + i,
            name: names.get(i as usize).cloned().flatten(),
        })
        .collect()
}

/// Encodes a name for `LISTEN_FDNAMES`, whose separator is `:` (bind entries such as
/// `127.0.0.1:8000` contain it): `%` and `:` are percent-encoded.
pub fn encode_name(name: &str) -> String {
    name.replace('%', "%25").replace(':', "%3A")
}

fn decode_name(name: &str) -> String {
    name.replace("%3A", ":").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_colons_survive_the_round_trip() {
        for name in ["127.0.0.1:8000", "[::1]:80", "unix:/run/a%b.sock", "http"] {
            let encoded = encode_name(name);
            assert!(!encoded.contains(':'));
            assert_eq!(decode_name(&encoded), name);
        }
    }
}
