//! The master's signal intake: every signal it acts on is blocked and read from a
//! `signalfd`, so the supervisor loop can `poll` it with a deadline. Unlike handlers, a
//! blocked mask and a signalfd leave nothing behind in forked workers once the child
//! restores the mask and closes the fd (see `restore_in_child`).

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// The doorbell: a pipe whose write end every native worker inherits. A worker writes a
/// byte when its scoreboard state changes (ready, asking to be recycled) so that the
/// master reacts at once instead of on its tick. A pipe rather than a signal: a worker
/// running as `user` may not signal a root master (EPERM), but it may write to a pipe
/// it inherited.
pub struct Doorbell {
    read: std::os::fd::OwnedFd,
    /// The end workers write to (kept open in the master for the workers to come).
    pub write: std::os::fd::OwnedFd,
}

impl Doorbell {
    pub fn new() -> nix::Result<Doorbell> {
        use nix::fcntl::OFlag;
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Doorbell { read, write })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe (how many times it rang does not matter).
    pub fn drain(&self) {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }
}

const HANDLED: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
];

fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    // nix's `Signal` has no realtime signals: that one is added to the raw set.
    let mut raw = *set.as_ref();
    // SAFETY: raw is an initialised sigset_t and the upgrade-ready signal a valid number.
    unsafe { libc::sigaddset(&mut raw, crate::shared::protocol::upgrade_ready_signal()) };
    // SAFETY: raw was initialised from an empty SigSet and filled with sigaddset.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

/// What the master reads from its signalfd.
pub struct SignalIntake {
    fd: SignalFd,
}

/// One received signal: its number, the pid and real uid that sent it, and for a signal
/// sent with sigqueue(3) (`code` = `SI_QUEUE`) the value it carried. A process allowed
/// to signal the master can forge `sender` and `uid` with rt_sigqueueinfo(2): only
/// `token` (a secret the legitimate sender knows) authenticates a message.
pub struct Received {
    pub signo: i32,
    pub sender: i32,
    pub uid: u32,
    pub code: i32,
    /// The whole sigqueue value (`sival_ptr`, 64 bits).
    pub token: u64,
}

impl Received {
    /// Whether this is a message from `pid` carrying `token`, queued by a process of
    /// this master's user (see [`Received`] for why the token is what counts).
    pub fn is_from(&self, pid: i32, token: u64) -> bool {
        self.code == libc::SI_QUEUE
            && self.sender == pid
            && self.uid == nix::unistd::getuid().as_raw()
            && token != 0
            && self.token == token
    }
}

impl SignalIntake {
    pub fn install() -> nix::Result<SignalIntake> {
        let set = handled_set();
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalIntake { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The next pending signal, if any (non-blocking).
    pub fn next(&mut self) -> Option<Received> {
        match self.fd.read_signal() {
            Ok(Some(info)) => Some(Received {
                signo: info.ssi_signo as i32,
                sender: info.ssi_pid as i32,
                uid: info.ssi_uid,
                code: info.ssi_code,
                token: info.ssi_ptr,
            }),
            _ => None,
        }
    }
}

/// In a freshly forked child: unblock every signal so the child gets default delivery
/// (its runtime installs its own handlers). The signalfd is closed with the intake.
pub fn restore_in_child() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(sender: i32, code: i32, token: u64) -> Received {
        Received {
            signo: crate::shared::protocol::upgrade_ready_signal(),
            sender,
            uid: nix::unistd::getuid().as_raw(),
            code,
            token,
        }
    }

    #[test]
    fn only_the_right_token_from_the_right_pid_authenticates() {
        let token = crate::shared::protocol::random_token();
        assert!(received(42, libc::SI_QUEUE, token).is_from(42, token));
        assert!(!received(42, libc::SI_QUEUE, token ^ 1).is_from(42, token));
        assert!(!received(43, libc::SI_QUEUE, token).is_from(42, token));
        assert!(
            !received(42, libc::SI_USER, token).is_from(42, token),
            "kill(2) carries no token"
        );
        assert!(
            !received(42, libc::SI_QUEUE, 0).is_from(42, 0),
            "0 is no token"
        );
        let mut other_user = received(42, libc::SI_QUEUE, token);
        other_user.uid = other_user.uid.wrapping_add(1);
        assert!(!other_user.is_from(42, token));
    }
}
