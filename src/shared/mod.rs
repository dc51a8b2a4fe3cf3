//! What both of forkd's processes use, the master and its workers: the process
//! protocol (signals, exit codes, safe kill/sigqueue), the scoreboard, listening
//! sockets, logging, privileges, the pidfile, files relative to a directory, the
//! single-threaded audits, systemd's protocols, process titles and time formats.

#[allow(unsafe_code)] // adopting fds from openat(2)
pub(crate) mod dirfd;
pub(crate) mod escape;
#[allow(unsafe_code)] // adopting inherited listening fds
pub(crate) mod listeners;
#[allow(unsafe_code)] // flock, adopting a reopened fd, borrowing the log fd
pub(crate) mod logging;
pub mod memory;
#[allow(unsafe_code)] // flock
pub(crate) mod pidfile;
pub(crate) mod privileges;
#[allow(unsafe_code)] // writing the process title over argv
pub(crate) mod proctitle;
#[allow(unsafe_code)] // kill and sigqueue with realtime signals
pub mod protocol;
#[allow(unsafe_code)] // the shared mapping (mmap)
pub mod scoreboard;
#[allow(unsafe_code)] // fork
pub(crate) mod single_threaded;
pub(crate) mod systemd;
pub(crate) mod timefmt;
