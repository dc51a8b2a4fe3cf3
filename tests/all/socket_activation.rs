//! Socket activation: forkd serves the sockets passed with `LISTEN_FDS` when `LISTEN_PID`
//! is its own, matched to `bind` entries by name or address, through the real
//! `systemd-socket-activate` and through a test that passes the fds itself.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use nix::sys::signal::Signal;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `systemd-socket-activate` binds, waits for the first connection, then execs forkd
/// with the socket: that first request is answered from the queue.
fn activate(listen: &str, fdname: Option<&str>, forkd_args: &[&str]) -> Server {
    let mut command = Command::new("systemd-socket-activate");
    command.args(["-l", listen]);
    if let Some(name) = fdname {
        command.arg(format!("--fdname={name}"));
    }
    command.arg("--").arg(forkd()).args(forkd_args);
    Server::spawn(&mut command)
}

fn first_request_is_served(addr: &str, server: &Server) {
    // systemd-socket-activate needs a moment to bind before the first connection.
    let mut last = Err(String::new());
    poll_until(Duration::from_secs(10), || {
        last = get(addr, "/").map(|r| r.0);
        last.is_ok()
    });
    assert_eq!(last, Ok(200), "first request:\n{}", server.log());
}

#[test]
fn tcp_socket_from_systemd_socket_activate_matched_by_address() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = activate(&addr, None, &["-b", &addr, "-w", "2", "hello"]);
    first_request_is_served(&addr, &server);
    for _ in 0..20 {
        assert_eq!(get(&addr, "/").map(|r| r.0), Ok(200));
    }
    assert!(server.log().contains(&format!("listening on {addr}")));
    // A HUP keeps the passed socket.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGHUP).expect("HUP");
    assert!(poll_until(Duration::from_secs(10), || server
        .log()
        .contains("reload finished")));
    assert_eq!(get(&addr, "/").map(|r| r.0), Ok(200));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGTERM)
        .expect("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn named_socket_and_no_bind_at_all() {
    // By name: `fd://web` is the socket passed as "web".
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = activate(&addr, Some("web"), &["-b", "fd://web", "hello"]);
    first_request_is_served(&addr, &server);
    drop(server);
    // Without any `bind`, every passed socket is served (not the default 127.0.0.1:8000).
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = activate(&addr, Some("forkd.socket"), &["hello"]);
    first_request_is_served(&addr, &server);
    assert!(
        !server.log().contains("127.0.0.1:8000"),
        "bound the default address too:\n{}",
        server.log()
    );
}

#[test]
fn unix_socket_from_systemd_is_served_and_never_unlinked() {
    let dir = temp_dir("activate-unix");
    let path = dir.join("web.sock");
    let listen = path.to_str().unwrap().to_string();
    let bind = format!("unix:{listen}");
    let mut server = activate(&listen, None, &["-b", &bind, "echo"]);
    first_request_is_served(&bind, &server);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGTERM)
        .expect("TERM");
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log()
    );
    assert!(
        path.exists(),
        "forkd removed a socket file that systemd owns"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts forkd with `fds` passed as 3, 4, ... and `LISTEN_PID` set to its own pid (the
/// shell's `$$` survives its `exec`), as systemd does.
fn pass_fds(
    fds: &[RawFd],
    names: Option<&str>,
    pid_override: Option<&str>,
    args: &[&str],
) -> Command {
    let mut script = format!(
        "LISTEN_PID={} LISTEN_FDS={} ",
        pid_override.unwrap_or("$$"),
        fds.len()
    );
    if let Some(names) = names {
        script.push_str(&format!("LISTEN_FDNAMES={names} "));
    }
    script.push_str("exec \"$0\" \"$@\"");
    let mut command = Command::new("sh");
    command.arg("-c").arg(script).arg(forkd()).args(args);
    assert!(fds.len() <= 8);
    let fds = fds.to_vec();
    // SAFETY: only dup2 (async-signal-safe) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Out of the way first: dup2 onto the same number would keep FD_CLOEXEC,
            // and a later target may be an earlier source.
            // (No allocation here: this runs between fork and exec.)
            let mut high = [0; 8];
            for (i, fd) in fds.iter().enumerate() {
                let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = moved;
            }
            for (i, fd) in high[..fds.len()].iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
}

#[test]
fn fds_passed_by_hand_tcp_and_unix() {
    let dir = temp_dir("activate-hand");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = tcp.local_addr().expect("addr").to_string();
    let path = dir.join("hand.sock");
    let unix = UnixListener::bind(&path).expect("bind unix");
    let unix_bind = format!("unix:{}", path.display());
    let mut server = Server::spawn(&mut pass_fds(
        &[tcp.as_raw_fd(), unix.as_raw_fd()],
        Some("api:admin"),
        None,
        &["-b", "fd://admin", "-b", &addr, "-w", "2", "echo"],
    ));
    server.expect_log("all workers ready", Duration::from_secs(10));
    // Both served by forkd's workers (echo reports a worker pid, not ours).
    for target in [&addr, &unix_bind] {
        let (status, _, body) = get(target, "/").expect("request");
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("\"pid\""));
    }
    // The test still holds its own copies: forkd did not bind new sockets.
    assert!(!server.log().contains("cannot listen"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGTERM)
        .expect("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(path.exists(), "a passed unix socket's file was removed");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_passed_socket_that_matches_no_bind_entry_is_a_clear_error() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let other = TcpListener::bind("127.0.0.1:0").expect("bind other");
    let other_addr = other.local_addr().expect("addr").to_string();
    drop(other);
    let mut server = Server::spawn(&mut pass_fds(
        &[tcp.as_raw_fd()],
        None,
        None,
        &["-b", &other_addr, "hello"],
    ));
    let code = server.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{}", server.log());
    assert!(
        server.log().contains("matches no bind entry"),
        "unclear error:\n{}",
        server.log()
    );
}

#[test]
fn sockets_meant_for_another_pid_are_ignored() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = Server::spawn(&mut pass_fds(
        &[tcp.as_raw_fd()],
        None,
        Some("1"),
        &["-b", &addr, "hello"],
    ));
    server.expect_log("all workers ready", Duration::from_secs(10));
    // It bound its own address, and the passed fd stayed unused.
    assert_eq!(get(&addr, "/").map(|r| r.0), Ok(200));
    assert!(Path::new(&format!("/proc/{}", server.pid())).exists());
}

/// An `fd://N` entry adopts fd N only if it is an inherited, listening stream socket
/// (TCP or unix): a file, a socket that does not listen, a seqpacket socket, or an fd
/// forkd owns already (the same fd named twice) is refused at start with an error that
/// names the entry and the fd.
#[test]
fn fd_binds_adopt_only_inherited_listening_stream_sockets() {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let dir = temp_dir("activate-not-adoptable");
    let file = std::fs::File::open(forkd()).expect("open a file");
    let bound = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let connected_to = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let connected =
        std::net::TcpStream::connect(connected_to.local_addr().unwrap()).expect("connect");
    let seqpacket = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("seqpacket socket");
    let path = dir.join("seqpacket.sock");
    socket::bind(seqpacket.as_raw_fd(), &UnixAddr::new(&path).unwrap()).expect("bind");
    socket::listen(&seqpacket, Backlog::new(8).unwrap()).expect("listen");
    let listening = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let cases: [(&str, RawFd, &[&str], &str); 5] = [
        ("file", file.as_raw_fd(), &["-b", "fd://3"], "not a socket"),
        (
            "udp",
            bound.as_raw_fd(),
            &["-b", "fd://3"],
            "not a stream socket",
        ),
        (
            "connected",
            connected.as_raw_fd(),
            &["-b", "fd://3"],
            "not listening",
        ),
        (
            "seqpacket",
            seqpacket.as_raw_fd(),
            &["-b", "fd://3"],
            "not a stream socket",
        ),
        (
            "twice",
            listening.as_raw_fd(),
            &["-b", "fd://3", "-b", "fd://3"],
            "forkd opened itself",
        ),
    ];
    for (name, fd, binds, why) in cases {
        // LISTEN_PID names another process: fd 3 is inherited, not passed.
        let mut args = binds.to_vec();
        args.push("hello");
        let mut server = Server::spawn(&mut pass_fds(&[fd], None, Some("1"), &args));
        let code = server.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(1), "{name}: {}", server.log());
        server.expect_log(
            "cannot listen on fd://3: cannot adopt fd 3: it is",
            Duration::from_secs(5),
        );
        assert!(server.log_contains(why), "{name}: {}", server.log());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn after_term_under_socket_activation_new_connections_wait_in_systemds_socket() {
    // The test holds the socket, as systemd does: forkd stops accepting after TERM and
    // shutdown_delay, the requests in flight finish, and a connection made meanwhile
    // waits in the socket's queue for the next start instead of being refused.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = temp_config(
        "activate-stop",
        "app = \"echo\"\nworkers = 2\ngraceful_timeout = 20\n[health]\nshutdown_delay = \"300ms\"\n",
    );
    let mut server = Server::start_command(&mut pass_fds(
        &[listener.as_raw_fd()],
        None,
        None,
        &["-c", &config],
    ));
    let slow_addr = addr.clone();
    let slow = std::thread::spawn(move || get(&slow_addr, "/?sleep_ms=3000"));
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGTERM)
        .expect("TERM");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!slow.is_finished(), "the drain did not last");
    let waiting = std::net::TcpStream::connect(&addr).expect("queued, not refused");
    assert_eq!(
        slow.join().unwrap().map(|r| r.0),
        Ok(200),
        "{}",
        server.log()
    );
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log()
    );
    // The connection waited in the socket: the next one to accept (here the test) gets it.
    listener.set_nonblocking(true).unwrap();
    let (accepted, _) = listener.accept().expect("the waiting connection");
    assert_eq!(accepted.peer_addr().unwrap(), waiting.local_addr().unwrap());
}
