//! A zygote's own side (`preload_app`, see [`super::zygote`]): the process forked from
//! the master for one generation. It sheds what is the master's (as a worker does),
//! leaves the terminal's session, drops privileges, enters the generation's directory
//! and environment, has the host import the app (refused if the import left a thread
//! running), says so, and then forks a worker each time the master asks: twice, so
//! that the worker is the master's child (the middle process exits at once and the
//! master, the subreaper, adopts the worker), with the host's fork hooks around each
//! fork. The worker runs the same path as one the master forks, with the app already
//! imported. The zygote exits when the master's end of its socket closes, or at once
//! when the master dies (its parent-death signal).

use super::zygote_wire::{Report, Request, MAX_MESSAGE};
use super::{signals, Master, Program};
use crate::shared::protocol::EXIT_BOOT_ERROR;
use crate::worker::WorkerApp;
use nix::sys::socket::{self, MsgFlags};
use nix::unistd::ForkResult;
use std::os::fd::{AsRawFd, OwnedFd};

impl Master {
    /// In the forked zygote, given its end of the socket pair: never returns.
    #[allow(unsafe_code)] // _exit
    pub(super) fn become_zygote(&self, channel: OwnedFd) -> ! {
        signals::restore_in_child();
        crate::shared::proctitle::set(&crate::shared::proctitle::titled(
            &format!("forkd: zygote [generation {}]", self.current.number),
            self.current.config.proc_name.as_deref(),
        ));
        let code = match self.zygote_setup(&channel) {
            Ok(()) => {
                send(&channel, &Report::Ready);
                self.serve_master(&channel);
                0
            }
            Err(why) => {
                send(&channel, &Report::ImportFailed(why));
                EXIT_BOOT_ERROR
            }
        };
        crate::shared::logging::flush();
        // SAFETY: leaving the zygote without running the master's destructors (its
        // copies of the master's state are not its to clean up).
        unsafe { libc::_exit(code) }
    }

    /// Everything before the zygote can fork workers: the import last.
    #[allow(unsafe_code)] // prctl(PR_SET_PDEATHSIG)
    fn zygote_setup(&self, channel: &OwnedFd) -> Result<(), String> {
        let Program::Hosted(program) = &self.current.program else {
            return Err("preload_app is for Python apps".into());
        };
        let Some(preloader) = &program.preload else {
            return Err("preload_app is not set".into());
        };
        set_blocking(channel)?;
        self.prepare_child()?;
        crate::shared::logging::in_worker();
        crate::shared::privileges::detach_from_terminal()?;
        crate::shared::privileges::drop_for_worker(&self.current.config)?;
        // After the privilege drop (which clears it): the zygote goes with the master.
        // SAFETY: prctl(2) with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if nix::unistd::getppid().as_raw() != self.pid {
            return Err("the master exited".into());
        }
        preload(
            preloader,
            &crate::hosted::HostedPreload {
                spec: &program.spec,
                config: &self.current.config,
            },
        )?;
        let threads = other_threads();
        if !threads.is_empty() {
            return Err(format!(
                "preload_app: importing {} left {} thread(s) running ({}); forking a process with threads copies their locks half-way into every worker: start them after the fork (in the lifespan startup or a post_fork hook), or set preload_app = false",
                program.spec,
                threads.len(),
                threads.join(", ")
            ));
        }
        Ok(())
    }

    /// Forks a worker for each request, until the master's end closes.
    fn serve_master(&self, channel: &OwnedFd) {
        let mut buf = [0u8; MAX_MESSAGE + 1];
        loop {
            let n = match socket::recv(channel.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return,
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            match Request::parse(&buf[..n]) {
                Ok(Request::Spawn { slot, number }) => {
                    let report = self.fork_worker(channel, slot, number);
                    send(channel, &report);
                }
                Err(e) => {
                    tracing::error!("zygote: a request it cannot read ({e}); exiting");
                    return;
                }
            }
        }
    }

    /// Forks twice: the grandchild becomes worker `number` on `slot`; the middle
    /// process tells its pid and exits, and is reaped here.
    #[allow(unsafe_code)] // _exit
    fn fork_worker(&self, channel: &OwnedFd, slot: usize, number: u64) -> Report {
        let failed = |why: String| Report::SpawnFailed { number, why };
        let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => pipe,
            Err(e) => return failed(format!("cannot make a pipe: {e}")),
        };
        match self.fork_child() {
            Err(e) => failed(format!("fork failed: {e}")),
            Ok(ForkResult::Child) => {
                // The middle process.
                let _ = nix::unistd::close(channel.as_raw_fd());
                drop(read);
                let code = match self.fork_child() {
                    Ok(ForkResult::Child) => {
                        drop(write);
                        let Program::Hosted(program) = &self.current.program else {
                            // SAFETY: leaving the forked child at once.
                            unsafe { libc::_exit(EXIT_BOOT_ERROR) }
                        };
                        let slot_ref = self.scoreboard.slot(slot);
                        self.enter_worker(number, slot_ref, WorkerApp::Hosted(program.clone()))
                    }
                    Ok(ForkResult::Parent { child }) => {
                        let written = nix::unistd::write(&write, &child.as_raw().to_le_bytes());
                        i32::from(written != Ok(4))
                    }
                    Err(_) => 1,
                };
                // SAFETY: leaving the middle process at once, as a forked child does.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child: middle }) => {
                drop(write);
                let mut bytes = [0u8; 4];
                let read = read_full(&read, &mut bytes);
                let waited = nix::sys::wait::waitpid(middle, None);
                match (read, waited) {
                    (Ok(()), _) => Report::Spawned {
                        number,
                        pid: i32::from_le_bytes(bytes),
                    },
                    (Err(e), status) => failed(format!(
                        "the middle process of the double fork did not report the worker ({e}; {status:?})"
                    )),
                }
            }
        }
    }
}

/// The host's import, with a panic in it reported rather than unwinding out of a
/// forked process.
fn preload(
    preload_with: &crate::hosted::HostedPreloader,
    boot: &crate::hosted::HostedPreload<'_>,
) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| preload_with(boot)))
        .unwrap_or_else(|_| Err("the import panicked".into()))
}

fn send(channel: &OwnedFd, report: &Report) {
    let _ = socket::send(channel.as_raw_fd(), &report.encode(), MsgFlags::empty());
}

fn set_blocking(channel: &OwnedFd) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(channel.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(channel.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| e.to_string())?;
    Ok(())
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> Result<(), String> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => return Err("end of pipe".into()),
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The threads of this process other than the calling one, by name (from /proc), as
/// an import may start them in C where Python's `threading` does not see them.
fn other_threads() -> Vec<String> {
    let me = nix::unistd::gettid().as_raw().to_string();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| t.file_name().to_str() != Some(me.as_str()))
        .map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            format!("{:?}", comm.trim())
        })
        .collect()
}
