//! What a forked child does with the listeners before it execs a program that takes
//! them by the systemd socket-activation protocol (an exec worker, or the new master of
//! a USR2 upgrade): the one routine that puts them on fds 3, 4, ... and checks every
//! step, so that the `LISTEN_FDS` the program is given always counts the fds it really
//! has.

use crate::shared::systemd::LISTEN_FDS_START;
use std::os::fd::RawFd;

/// In a forked child about to exec: makes `fds` inheritable on `LISTEN_FDS_START`,
/// `LISTEN_FDS_START + 1`, ... in their order, or fails naming the one that could not
/// be passed (`names[i]` names `fds[i]`). Returns the first fd past the range.
///
/// The fds are first copied above the target range (a target may be another's source,
/// and dup2 onto the same number would keep FD_CLOEXEC), then dup2'd onto 3, 4, ...
/// "Above" is the lowest free number past the range, not a fixed one such as 1024,
/// which a soft fd limit of 1024 or less refuses (EINVAL). The copies are close-on-exec;
/// dup2 clears FD_CLOEXEC on the targets, so exactly these fds are inherited from here.
pub fn pass_listen_fds(fds: &[RawFd], names: &[String]) -> Result<RawFd, String> {
    let name = |i: usize| names.get(i).map_or("?", String::as_str);
    let first_free = LISTEN_FDS_START + fds.len() as RawFd;
    let high: Vec<RawFd> = fds
        .iter()
        .enumerate()
        .map(|(i, &fd)| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(first_free))
                .map_err(|e| format!("cannot pass listener {}: {e}", name(i)))
        })
        .collect::<Result<_, _>>()?;
    for (i, fd) in high.iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        nix::unistd::dup2(*fd, target)
            .map_err(|e| format!("cannot pass listener {} on fd {target}: {e}", name(i)))?;
    }
    Ok(first_free)
}

/// Closes every fd from `first` on (close_range(2), or one by one from /proc/self/fd on
/// kernels before 5.9), so nothing of the master's leaks into the program.
pub fn close_fds_from(first: RawFd) {
    // SAFETY: close_range(2) takes integers only; it closes fds of this (forked,
    // single-threaded) process that nothing after it uses.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) } == 0;
    if done {
        return;
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in open {
        let _ = nix::unistd::close(fd);
    }
}
