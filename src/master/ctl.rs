//! The control socket `forkd -s status` asks: a unix stream socket beside the pidfile
//! (`PIDFILE.ctl`), mode 0600 (owner only, and peers of another uid are refused too),
//! served by the single-threaded master from its loop without ever blocking it.
//!
//! The wire: a client sends one request line (`status\n`, at most [`MAX_REQUEST`]
//! bytes, within [`CLIENT_TIME`]) and gets one answer, then the master closes the
//! connection. The answer is text: the status table, or one line starting with
//! `error:`. Everything is non-blocking: a client that sends nothing, sends too much,
//! or never reads its answer is dropped once its time is up; at most [`MAX_CLIENTS`]
//! are served at once (more are closed at accept).
//!
//! The socket file is made like the pidfile: in the pidfile's directory, opened once,
//! never following a symlink at the name, and removed at exit only if it is still this
//! socket. A master started by USR2 makes its own (replacing the old master's file,
//! which the old one then leaves alone at its exit: the identity no longer matches).

use crate::shared::dirfd::Dir;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest request line read; a longer one is an error.
pub const MAX_REQUEST: usize = 256;
/// How long one client may take, from accept to its answer written.
pub const CLIENT_TIME: Duration = Duration::from_secs(2);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 8;
/// The control socket's name: the pidfile's with this appended.
pub const SUFFIX: &str = ".ctl";

/// The control socket's path for a pidfile.
pub fn path_for(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_os_string();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// What a request line asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `status`: the master and its workers.
    Status,
}

/// Parses one request (the bytes before the newline): `Err` says why, for the error
/// line sent back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the request is not UTF-8".to_string())?;
    match text.trim_end_matches('\r').trim() {
        "status" => Ok(Request::Status),
        "" => Err("empty request (known requests: status)".to_string()),
        other => {
            let shown: String = other.chars().take(40).collect();
            Err(format!(
                "unknown request {shown:?} (known requests: status)"
            ))
        }
    }
}

/// What reading a client's bytes so far gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// No full line yet.
    More,
    /// A full line: the request, or why it is not one.
    Line(Result<Request, String>),
}

/// Looks at the bytes a client sent so far.
pub fn received(buffer: &[u8]) -> Received {
    match buffer.iter().position(|&b| b == b'\n') {
        Some(end) if end <= MAX_REQUEST => Received::Line(parse_request(&buffer[..end])),
        Some(_) => Received::Line(Err(format!("request longer than {MAX_REQUEST} bytes"))),
        None if buffer.len() > MAX_REQUEST => {
            Received::Line(Err(format!("request longer than {MAX_REQUEST} bytes")))
        }
        None => Received::More,
    }
}

/// One connected client.
struct Client {
    stream: UnixStream,
    /// Dropped past this.
    deadline: Instant,
    /// What it sent so far (reading), or nothing once answered.
    input: Vec<u8>,
    /// The answer, and how much of it is written (`None`: still reading).
    output: Option<(Vec<u8>, usize)>,
    /// It hung up before its answer, or a write failed: dropped.
    gone: bool,
}

/// What a client is waiting on, for `poll`.
pub enum Interest {
    Read,
    Write,
}

/// The bound control socket and its clients.
pub struct ControlSocket {
    listener: UnixListener,
    clients: Vec<Client>,
    dir: Dir,
    name: OsString,
    dev: u64,
    ino: u64,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the control socket for the pidfile at `pidfile` (mode 0600). A socket
    /// file already there is replaced (the pidfile is this master's, so it is a
    /// stale one, or the old master's after USR2); anything else there is an error.
    pub fn bind(pidfile: &Path) -> io::Result<ControlSocket> {
        let path = path_for(pidfile);
        let fail = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let (dir, name) = Dir::parent_of(&path).map_err(fail)?;
        if let Some(st) = dir.stat(&name).map_err(fail)? {
            if !crate::shared::dirfd::is_socket(&st) {
                return Err(fail(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket",
                )));
            }
            dir.unlink_socket(&name, st.st_dev, st.st_ino)
                .map_err(fail)?;
        }
        // Owner-only from the start: the file is made by bind(2) with the umask's mode.
        // The master is single-threaded here.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(&path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let st = match dir.stat(&name).map_err(fail)? {
            Some(st) if crate::shared::dirfd::is_socket(&st) => st,
            _ => return Err(fail(io::Error::other(
                "the socket file is not in its directory after bind (was the directory replaced?)",
            ))),
        };
        Ok(ControlSocket {
            listener,
            clients: Vec::new(),
            dir,
            name,
            dev: st.st_dev,
            ino: st.st_ino,
            path,
        })
    }

    /// Where it is bound.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file, if it is still this one.
    pub fn remove(&self) {
        let _ = self.dir.unlink_socket(&self.name, self.dev, self.ino);
    }

    /// Every fd it holds (the listener, its directory, the clients), for a forked
    /// worker to close.
    pub fn fds(&self) -> Vec<RawFd> {
        let clients = self.clients.iter().map(|c| c.stream.as_raw_fd());
        [self.listener.as_raw_fd(), self.dir.raw_fd()]
            .into_iter()
            .chain(clients)
            .collect()
    }

    /// The listening socket's fd, polled for new clients.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Each client's fd and what it waits for, for `poll`.
    pub fn client_fds(&self) -> impl Iterator<Item = (BorrowedFd<'_>, Interest)> {
        self.clients.iter().map(|c| {
            let interest = match c.output {
                None => Interest::Read,
                Some(_) => Interest::Write,
            };
            (c.stream.as_fd(), interest)
        })
    }

    /// The nearest client deadline, if any client is connected.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.deadline).min()
    }

    /// Accepts new clients, reads requests, answers them with `answer` and writes
    /// what it can; drops clients that are done or out of time. Never blocks.
    pub fn serve(&mut self, answer: impl Fn(&Request) -> String) {
        let now = Instant::now();
        self.accept(now);
        for client in &mut self.clients {
            if client.output.is_none() {
                read_request(client, &answer);
            }
            if let Some((bytes, written)) = &mut client.output {
                while *written < bytes.len() {
                    // MSG_NOSIGNAL: a client gone mid-answer is EPIPE, never SIGPIPE.
                    let sent = nix::sys::socket::send(
                        client.stream.as_raw_fd(),
                        &bytes[*written..],
                        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    )
                    .map_err(io::Error::from);
                    match sent {
                        Ok(0) => break,
                        Ok(n) => *written += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            // EAGAIN: it is not reading; it gets until its deadline.
                            client.gone = e.kind() != io::ErrorKind::WouldBlock;
                            break;
                        }
                    }
                }
            }
        }
        self.clients.retain(|c| {
            let done = c
                .output
                .as_ref()
                .is_some_and(|(bytes, written)| *written >= bytes.len());
            !done && !c.gone && now < c.deadline
        });
    }

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || !same_user(&stream) {
                        continue; // dropped: closed at once
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Client {
                        stream,
                        deadline: now + CLIENT_TIME,
                        input: Vec::new(),
                        output: None,
                        gone: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // EAGAIN, or out of fds: the next turn tries again
            }
        }
    }
}

/// Reads what the client sent; once a line (or too much) is in, sets the answer.
fn read_request(client: &mut Client, answer: &impl Fn(&Request) -> String) {
    let mut chunk = [0u8; MAX_REQUEST + 1];
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => {
                // The peer closed its side: answer what it sent, if anything.
                match client.input.is_empty() {
                    true => client.gone = true,
                    false => client.input.push(b'\n'),
                }
                break;
            }
            Ok(n) => {
                client.input.extend_from_slice(&chunk[..n]);
                if client.input.len() > MAX_REQUEST || client.input.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EAGAIN: more later.
                client.gone = e.kind() != io::ErrorKind::WouldBlock;
                break;
            }
        }
    }
    let text = match received(&client.input) {
        Received::More => return,
        Received::Line(Ok(request)) => answer(&request),
        Received::Line(Err(why)) => format!("error: {why}\n"),
    };
    client.input.clear();
    client.output = Some((text.into_bytes(), 0));
}

/// Whether the peer runs as this process's effective user (or root).
fn same_user(stream: &UnixStream) -> bool {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .is_ok_and(|cred| cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw())
}

/// One worker's line of the status answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub pid: i32,
    pub generation: u64,
    pub state: &'static str,
    pub age: Duration,
    pub requests: u64,
    /// Resident memory in bytes, if it could be read.
    pub rss: Option<u64>,
    /// Proportional memory in bytes (shared pages divided among their sharers), if it
    /// could be read.
    pub pss: Option<u64>,
}

/// The master's line of the status answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterRow {
    pub pid: i32,
    /// serving, reloading, upgrading, stopping.
    pub state: &'static str,
    pub generation: u64,
    pub target: usize,
    pub uptime: Duration,
}

/// A duration as people read it: `42s`, `3m04s`, `2h05m`, `3d04h`.
pub fn human_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Bytes as MiB with one decimal, or `-` when unknown.
pub fn human_rss(rss: Option<u64>) -> String {
    match rss {
        Some(bytes) => format!("{:.1}M", bytes as f64 / (1024.0 * 1024.0)),
        None => "-".to_string(),
    }
}

/// The status answer: the master's line, then a table with one line per worker.
pub fn render(master: &MasterRow, workers: &[WorkerRow]) -> String {
    let mut out = format!(
        "master {} {}: generation {}, {} workers wanted, up {}\n",
        master.pid,
        master.state,
        master.generation,
        master.target,
        human_age(master.uptime)
    );
    out.push_str(&format!(
        "{:>8} {:>4} {:<9} {:>7} {:>10} {:>9} {:>9}\n",
        "PID", "GEN", "STATE", "AGE", "REQUESTS", "RSS", "PSS"
    ));
    for w in workers {
        out.push_str(&format!(
            "{:>8} {:>4} {:<9} {:>7} {:>10} {:>9} {:>9}\n",
            w.pid,
            w.generation,
            w.state,
            human_age(w.age),
            w.requests,
            human_rss(w.rss),
            human_rss(w.pss)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn requests_parse_and_garbage_is_refused_with_a_reason() {
        assert_eq!(parse_request(b"status"), Ok(Request::Status));
        assert_eq!(parse_request(b" status \r"), Ok(Request::Status));
        assert!(parse_request(b"").unwrap_err().contains("empty"));
        assert!(parse_request(b"stats")
            .unwrap_err()
            .contains("unknown request"));
        assert!(parse_request(b"\xff\xfe").unwrap_err().contains("UTF-8"));
        // A long unknown request is named shortly.
        let long = "x".repeat(200);
        assert!(parse_request(long.as_bytes()).unwrap_err().len() < 120);
    }

    #[test]
    fn a_line_is_needed_and_bounded() {
        assert_eq!(received(b""), Received::More);
        assert_eq!(received(b"sta"), Received::More);
        assert_eq!(received(b"status\n"), Received::Line(Ok(Request::Status)));
        assert_eq!(
            received(b"status\nmore"),
            Received::Line(Ok(Request::Status))
        );
        let long = vec![b'a'; MAX_REQUEST + 1];
        assert!(matches!(received(&long), Received::Line(Err(e)) if e.contains("longer")));
        let mut long_line = vec![b'a'; MAX_REQUEST + 5];
        long_line.push(b'\n');
        assert!(matches!(received(&long_line), Received::Line(Err(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_answer_only_with_a_line() {
        // A small deterministic fuzz: every prefix of many pseudo-random byte strings.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 400) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 % 64) & 0xff) as u8)
                .collect();
            match received(&bytes) {
                Received::More => {
                    assert!(!bytes.contains(&b'\n') && bytes.len() <= MAX_REQUEST)
                }
                Received::Line(_) => {
                    assert!(bytes.contains(&b'\n') || bytes.len() > MAX_REQUEST)
                }
            }
        }
    }

    #[test]
    fn ages_and_sizes_read_as_people_write_them() {
        assert_eq!(human_age(Duration::from_secs(42)), "42s");
        assert_eq!(human_age(Duration::from_secs(184)), "3m04s");
        assert_eq!(human_age(Duration::from_secs(7500)), "2h05m");
        assert_eq!(
            human_age(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d04h"
        );
        assert_eq!(human_rss(Some(12 * 1024 * 1024 + 300 * 1024)), "12.3M");
        assert_eq!(human_rss(None), "-");
    }

    #[test]
    fn the_answer_has_the_master_line_and_one_line_per_worker() {
        let master = MasterRow {
            pid: 10,
            state: "serving",
            generation: 2,
            target: 2,
            uptime: Duration::from_secs(65),
        };
        let row = |pid, generation| WorkerRow {
            pid,
            generation,
            state: "ready",
            age: Duration::from_secs(5),
            requests: 7,
            rss: Some(1024 * 1024),
            pss: Some(512 * 1024),
        };
        let text = render(&master, &[row(11, 1), row(12, 2)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            "master 10 serving: generation 2, 2 workers wanted, up 1m05s"
        );
        assert!(lines[1]
            .split_whitespace()
            .eq(["PID", "GEN", "STATE", "AGE", "REQUESTS", "RSS", "PSS"]));
        assert!(lines[2]
            .split_whitespace()
            .eq(["11", "1", "ready", "5s", "7", "1.0M", "0.5M"]));
        assert!(lines[3]
            .split_whitespace()
            .eq(["12", "2", "ready", "5s", "7", "1.0M", "0.5M"]));
    }

    #[test]
    fn a_client_that_never_reads_its_answer_never_blocks_and_is_dropped_in_time() {
        let dir = std::env::temp_dir().join(format!("forkd-ctl-slow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut socket = ControlSocket::bind(&dir.join("forkd.pid")).unwrap();
        let mut client = UnixStream::connect(socket.path()).unwrap();
        client.write_all(b"status\n").unwrap();
        // Far more than any socket buffer holds.
        let started = Instant::now();
        socket.serve(|_| "x".repeat(64 << 20));
        assert!(started.elapsed() < Duration::from_secs(1), "serve blocked");
        assert_eq!(socket.clients.len(), 1, "dropped before its time");
        std::thread::sleep(CLIENT_TIME);
        socket.serve(|_| String::new());
        assert!(socket.clients.is_empty(), "kept past its time");
        // More clients than allowed at once: the extra ones are closed at accept.
        let waiting: Vec<UnixStream> = (0..MAX_CLIENTS + 2)
            .map(|_| UnixStream::connect(socket.path()).unwrap())
            .collect();
        socket.serve(|_| String::new());
        assert_eq!(socket.clients.len(), MAX_CLIENTS);
        drop(waiting);
        socket.remove();
    }

    #[test]
    fn the_socket_is_owner_only_answers_once_and_is_removed() {
        let dir = std::env::temp_dir().join(format!("forkd-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("forkd.pid");
        let mut socket = ControlSocket::bind(&pidfile).unwrap();
        let path = dir.join("forkd.pid.ctl");
        assert_eq!(socket.path(), path);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"status\n").unwrap();
        let mut garbage = UnixStream::connect(&path).unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let silent = UnixStream::connect(&path).unwrap();
        socket.serve(|_| "answer\n".to_string());
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        assert_eq!(text, "answer\n");
        let mut text = String::new();
        garbage.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("error: unknown request"), "{text}");
        // The silent one waits, bounded by its deadline.
        assert_eq!(socket.clients.len(), 1);
        assert!(socket.next_deadline().unwrap() <= Instant::now() + CLIENT_TIME);
        drop(silent);
        socket.serve(|_| String::new());
        assert!(socket.clients.is_empty());
        socket.remove();
        assert!(!path.exists());
        // A second bind replaces a stale socket file.
        let again = ControlSocket::bind(&pidfile).unwrap();
        let _third = ControlSocket::bind(&pidfile).unwrap();
        again.remove(); // not its file any more: left alone
        assert!(path.exists());
    }
}
