//! The systemd socket-passing protocol (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`,
//! fds from 3), used both to receive sockets (socket activation, and a new master
//! started by USR2) and to pass them to a new master on upgrade.

use std::os::fd::RawFd;

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
        std::env::remove_var(var);
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
