//! Listening sockets: bound by the master (TCP v4/v6 with SO_REUSEADDR and `backlog`,
//! unix sockets with stale-file replacement, or `fd://N` inherited), kept open by the
//! master for its whole life so that the accept queue survives worker restarts.

use crate::config::{BindSpec, Config};
use crate::shared::dirfd::Dir;
use crate::shared::systemd::PassedFd;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage,
};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// One listening socket the master owns.
#[derive(Debug)]
pub struct Listener {
    /// The `bind` entry it came from.
    pub spec: BindSpec,
    /// What it is actually bound to ("127.0.0.1:8000", "unix:/run/a.sock"), for logs.
    pub local: String,
    pub kind: ListenerKind,
    pub fd: OwnedFd,
    /// The unix socket's file, when forkd created it (or took it over) and removes it
    /// on exit.
    pub socket_file: Option<SocketFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    /// A unix socket bound to `path`.
    Unix {
        path: PathBuf,
    },
}

/// A unix socket's file, held for its removal at exit: the directory it was bound in,
/// opened at bind time, and the file's identity then. The path is not looked up again:
/// a directory swapped for a symlink since (its parent writable by someone else) must
/// not make the root master unlink a file of the same name elsewhere.
#[derive(Debug)]
pub struct SocketFile {
    dir: Dir,
    name: OsString,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Records the socket file now at `path` (the directory is opened first, the file
    /// then looked up in it without following a symlink).
    fn record(path: &Path) -> io::Result<SocketFile> {
        let (dir, name) = Dir::parent_of(path)?;
        match dir.stat(&name)? {
            Some(st) if crate::shared::dirfd::is_socket(&st) => Ok(SocketFile {
                dir,
                name,
                dev: st.st_dev,
                ino: st.st_ino,
            }),
            _ => Err(io::Error::other(format!(
                "{} is not the socket file any more",
                path.display()
            ))),
        }
    }

    /// The held directory's fd (closed in workers, which have no use for it).
    pub fn dir_fd(&self) -> RawFd {
        self.dir.raw_fd()
    }

    /// Removes the file, only if it is still the same socket file in its directory.
    pub fn remove(&self) {
        let _ = self.dir.unlink_socket(&self.name, self.dev, self.ino);
    }
}

impl Listener {
    /// Removes the socket file if forkd created it, and only if it is still the same
    /// socket file in the directory it was bound in.
    pub fn cleanup(&self) {
        if let Some(file) = &self.socket_file {
            file.remove();
        }
    }

    /// Takes over the socket file of an adopted unix listener (removed at exit as if
    /// forkd had created it).
    pub fn own_socket_file(&mut self) {
        if let ListenerKind::Unix { path } = &self.kind {
            self.socket_file = SocketFile::record(path).ok();
        }
    }
}

/// Binds (or adopts) one `bind` entry. Errors name the address.
pub fn bind(spec: &BindSpec, backlog: i32) -> io::Result<Listener> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {spec}: {e}"));
    match spec {
        BindSpec::Tcp(addr) => bind_tcp(spec, *addr, backlog).map_err(context),
        BindSpec::Unix(path) => bind_unix(spec, path, backlog).map_err(context),
        // Its errors name the entry and the fd.
        BindSpec::Fd(fd) => adopt_fd(spec.clone(), *fd),
        BindSpec::Named(name) => Err(context(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no socket named {name:?} was passed (LISTEN_FDNAMES); is the .socket unit's FileDescriptorName= the same?"),
        ))),
        // The socket is a plain one; only the workers speak TLS on it.
        BindSpec::Tls(inner) => {
            let mut listener = bind(inner, backlog)?;
            listener.spec = spec.clone();
            Ok(listener)
        }
    }
}

fn bind_tcp(spec: &BindSpec, addr: std::net::SocketAddr, backlog: i32) -> io::Result<Listener> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // Accepted sockets inherit it on Linux: servers that never set it themselves
    // (`uvicorn --fd 3` takes any passed socket for a unix one) would otherwise wait
    // for the client's delayed ACK on every keep-alive response (~40 ms).
    socket::setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, backlog_of(backlog))?;
    let local = local_address(fd.as_fd())?;
    Ok(Listener {
        spec: spec.clone(),
        local,
        kind: ListenerKind::Tcp,
        fd,
        socket_file: None,
    })
}

fn bind_unix(spec: &BindSpec, path: &Path, backlog: i32) -> io::Result<Listener> {
    // Every look-up at the socket's name is made in this directory, opened once.
    let (dir, name) = Dir::parent_of(path)?;
    if let Some(st) = dir.stat(&name)? {
        if !crate::shared::dirfd::is_socket(&st) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        // A socket file is stale only if nobody accepts on it.
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on it",
            ));
        }
        // Only that socket file, in that directory.
        dir.unlink_socket(&name, st.st_dev, st.st_ino)?;
    }
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = socket::UnixAddr::new(path)?;
    socket::bind(fd.as_raw_fd(), &addr)?;
    socket::listen(&fd, backlog_of(backlog))?;
    let socket_file =
        match dir.stat(&name)? {
            Some(st) if crate::shared::dirfd::is_socket(&st) => SocketFile {
                dir,
                name,
                dev: st.st_dev,
                ino: st.st_ino,
            },
            _ => return Err(io::Error::other(
                "the socket file is not in its directory after bind (was the directory replaced?)",
            )),
        };
    Ok(Listener {
        spec: spec.clone(),
        local: format!("unix:{}", path.display()),
        kind: ListenerKind::Unix {
            path: path.to_path_buf(),
        },
        fd,
        socket_file: Some(socket_file),
    })
}

/// Why an fd cannot be adopted as a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotAdoptable {
    /// Not an open fd (EBADF).
    Closed,
    /// Opened by forkd itself (close-on-exec is set, so it was not inherited): its log
    /// file, the signalfd, a listener adopted or bound already. Owning it twice would
    /// close it under its owner.
    Owned,
    /// Not a socket (a file, a pipe, a signalfd...).
    NotASocket,
    /// A socket other than a byte stream (datagram, seqpacket).
    NotAStream,
    /// A stream socket of a family forkd does not serve (only IPv4, IPv6 and unix).
    Family(i32),
    /// A stream socket that is not listening (connected, or bound only).
    NotListening,
    /// The kernel refused a query: the errno's name.
    Query(&'static str),
}

impl std::fmt::Display for NotAdoptable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAdoptable::Closed => f.write_str("it is not open"),
            NotAdoptable::Owned => f.write_str(
                "it is one forkd opened itself (close-on-exec is set), not one it inherited",
            ),
            NotAdoptable::NotASocket => f.write_str("it is not a socket"),
            NotAdoptable::NotAStream => {
                f.write_str("it is not a stream socket (datagram or seqpacket)")
            }
            NotAdoptable::Family(family) => write!(
                f,
                "it is a socket of address family {family}, not TCP (IPv4, IPv6) or unix"
            ),
            NotAdoptable::NotListening => {
                f.write_str("it is a socket that is not listening (listen(2) was not called)")
            }
            NotAdoptable::Query(errno) => write!(f, "it cannot be inspected ({errno})"),
        }
    }
}

/// What the kernel says about an fd, for [`adoptable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FdFacts {
    /// FD_CLOEXEC is set.
    cloexec: bool,
    /// SO_TYPE, or the errno when it cannot be read (ENOTSOCK: not a socket).
    sock_type: Result<i32, nix::errno::Errno>,
    /// The address family (of getsockname).
    domain: Result<i32, nix::errno::Errno>,
    /// SO_ACCEPTCONN.
    accepting: Result<bool, nix::errno::Errno>,
}

/// Whether an fd with these facts can be adopted as a listener: an inherited (not
/// close-on-exec), listening stream socket of IPv4, IPv6 or unix.
fn adoptable(facts: FdFacts) -> Result<(), NotAdoptable> {
    use nix::errno::Errno;
    let query = |e: Errno| match e {
        Errno::ENOTSOCK => NotAdoptable::NotASocket,
        Errno::EBADF => NotAdoptable::Closed,
        other => NotAdoptable::Query(other.desc()),
    };
    if facts.cloexec {
        return Err(NotAdoptable::Owned);
    }
    if facts.sock_type.map_err(query)? != libc::SOCK_STREAM {
        return Err(NotAdoptable::NotAStream);
    }
    let domain = facts.domain.map_err(query)?;
    if ![libc::AF_INET, libc::AF_INET6, libc::AF_UNIX].contains(&domain) {
        return Err(NotAdoptable::Family(domain));
    }
    if !facts.accepting.map_err(query)? {
        return Err(NotAdoptable::NotListening);
    }
    Ok(())
}

/// Reads [`FdFacts`] of `raw`; `Err(Closed)` when it is not open.
fn facts_of(raw: RawFd) -> Result<FdFacts, NotAdoptable> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = fcntl(raw, FcntlArg::F_GETFD).map_err(|_| NotAdoptable::Closed)?;
    // SAFETY: F_GETFD just succeeded, so `raw` is open; the borrow lives only for the
    // getsockopt calls below, which neither close nor keep it.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    Ok(FdFacts {
        cloexec: FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC),
        sock_type: socket::getsockopt(&fd, sockopt::SockType).map(|t| t as i32),
        domain: socket::getsockname::<SockaddrStorage>(raw).map(|addr| {
            addr.family()
                .map_or(libc::AF_UNSPEC, |family| family as i32)
        }),
        accepting: socket::getsockopt(&fd, sockopt::AcceptConn),
    })
}

/// Adopts an inherited, already-listening socket (fd://N, or systemd's LISTEN_FDS) after
/// checking it is one ([`adoptable`]); errors name the entry and the fd.
pub fn adopt_fd(spec: BindSpec, raw: RawFd) -> io::Result<Listener> {
    if let Err(why) = facts_of(raw).and_then(adoptable) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot listen on {spec}: cannot adopt fd {raw}: {why}"),
        ));
    }
    // Close-on-exec marks it adopted: a second adoption of the same number is refused
    // (see `adoptable`), which the ownership taken below relies on, so a failure here
    // is an error, not something to pass over.
    nix::fcntl::fcntl(
        raw,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "cannot listen on {spec}: cannot set close-on-exec on fd {raw}: {e}"
        ))
    })?;
    // SAFETY: checked above that it is an open listening socket that was inherited
    // (not close-on-exec): nothing else in forkd owns it, and from here on, with
    // close-on-exec set (it just succeeded), a second adoption of the same number is
    // refused.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let addr: SockaddrStorage = socket::getsockname(raw)?;
    let (kind, local) = match addr.as_unix_addr() {
        Some(unix) => {
            let path = unix.path().map(Path::to_path_buf).unwrap_or_default();
            let local = format!("unix:{}", path.display());
            (ListenerKind::Unix { path }, local)
        }
        None => {
            // As for sockets forkd binds itself (see bind_tcp); best effort.
            let _ = socket::setsockopt(&fd, sockopt::TcpNoDelay, &true);
            (ListenerKind::Tcp, local_address(fd.as_fd())?)
        }
    };
    Ok(Listener {
        spec,
        local,
        kind,
        fd,
        socket_file: None,
    })
}

fn local_address(fd: BorrowedFd<'_>) -> io::Result<String> {
    let addr: SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Ok(std::net::SocketAddrV4::from(*v4).to_string());
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return Ok(std::net::SocketAddrV6::from(*v6).to_string());
    }
    Ok(addr.to_string())
}

fn backlog_of(backlog: i32) -> Backlog {
    Backlog::new(backlog).unwrap_or(Backlog::MAXCONN)
}

/// Every `bind` entry of `config`, taking a passed socket (systemd socket activation, or
/// the listeners handed over by USR2) where one matches the entry by name
/// (`LISTEN_FDNAMES`) or by address, and binding the rest. A passed socket that matches
/// no entry is an error: serving it silently, or dropping it, would both surprise.
/// Without a `bind` setting, every passed socket is served as it is.
pub fn bind_all(config: &Config, passed: Vec<PassedFd>) -> Result<Vec<Listener>, String> {
    let mut adopted = Vec::new();
    for p in passed {
        let spec = passed_spec(&p);
        adopted.push((
            p.name.clone(),
            adopt_fd(spec, p.fd).map_err(|e| format!("passed socket: {e}"))?,
        ));
    }
    if !config.bind_given && !adopted.is_empty() {
        return Ok(adopted.into_iter().map(|(_, l)| l).collect());
    }
    let mut listeners = Vec::new();
    for spec in &config.bind {
        let wanted = spec.to_string();
        // A `tls://` entry takes the socket of its address (or name) as a plain one does.
        let plain = spec.plain();
        let wanted_plain = plain.to_string();
        let matching = adopted.iter().position(|(name, l)| {
            name.as_deref() == Some(wanted.as_str())
                || matches!(plain, BindSpec::Named(n) if name.as_deref() == Some(n.as_str()))
                || l.local == wanted_plain
                || matches!(plain, BindSpec::Fd(fd) if l.fd.as_raw_fd() == *fd)
        });
        match matching {
            Some(index) => {
                let (_, mut listener) = adopted.remove(index);
                listener.spec = spec.clone();
                listeners.push(listener);
            }
            None => listeners.push(bind(spec, config.backlog).map_err(|e| e.to_string())?),
        }
    }
    if let Some((name, l)) = adopted.first() {
        return Err(format!(
            "a passed socket (fd {}, name {}, address {}) matches no bind entry; add it to `bind`",
            l.fd.as_raw_fd(),
            name.as_deref().unwrap_or("none"),
            l.local
        ));
    }
    Ok(listeners)
}

/// What a passed socket is called when it is served without a `bind` entry: the entry
/// its name spells (a USR2 hand-over names each socket by its entry), `fd://NAME` for a
/// systemd name, else `fd://N`.
fn passed_spec(p: &PassedFd) -> BindSpec {
    match &p.name {
        Some(name) => {
            crate::config::parse_bind_literal(name).unwrap_or_else(|| BindSpec::Named(name.clone()))
        }
        None => BindSpec::Fd(p.fd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    fn listening_tcp() -> FdFacts {
        FdFacts {
            cloexec: false,
            sock_type: Ok(libc::SOCK_STREAM),
            domain: Ok(libc::AF_INET),
            accepting: Ok(true),
        }
    }

    #[test]
    fn only_an_inherited_listening_stream_socket_is_adopted() {
        assert_eq!(adoptable(listening_tcp()), Ok(()));
        for domain in [libc::AF_INET6, libc::AF_UNIX] {
            let facts = FdFacts {
                domain: Ok(domain),
                ..listening_tcp()
            };
            assert_eq!(adoptable(facts), Ok(()));
        }
        let cases = [
            (
                FdFacts {
                    cloexec: true,
                    ..listening_tcp()
                },
                NotAdoptable::Owned,
            ),
            (
                FdFacts {
                    sock_type: Err(Errno::ENOTSOCK),
                    domain: Err(Errno::ENOTSOCK),
                    accepting: Err(Errno::ENOTSOCK),
                    ..listening_tcp()
                },
                NotAdoptable::NotASocket,
            ),
            (
                FdFacts {
                    sock_type: Ok(libc::SOCK_DGRAM),
                    accepting: Ok(false),
                    ..listening_tcp()
                },
                NotAdoptable::NotAStream,
            ),
            (
                FdFacts {
                    sock_type: Ok(libc::SOCK_SEQPACKET),
                    domain: Ok(libc::AF_UNIX),
                    ..listening_tcp()
                },
                NotAdoptable::NotAStream,
            ),
            (
                FdFacts {
                    domain: Ok(libc::AF_VSOCK),
                    ..listening_tcp()
                },
                NotAdoptable::Family(libc::AF_VSOCK),
            ),
            (
                FdFacts {
                    accepting: Ok(false),
                    ..listening_tcp()
                },
                NotAdoptable::NotListening,
            ),
            (
                FdFacts {
                    accepting: Err(Errno::EINVAL),
                    ..listening_tcp()
                },
                NotAdoptable::Query(Errno::EINVAL.desc()),
            ),
        ];
        for (facts, why) in cases {
            assert_eq!(adoptable(facts), Err(why), "{facts:?}");
        }
    }

    #[test]
    fn real_fds_are_told_apart_and_an_adopted_one_is_not_adopted_twice() {
        let spec = |fd| BindSpec::Fd(fd);
        // A file forkd opens itself (close-on-exec, as every fd forkd opens).
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let err = adopt_fd(spec(file.as_raw_fd()), file.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("forkd opened itself"), "{err}");
        // Without close-on-exec (as if inherited), the kind decides.
        let inherited = |fd: &dyn AsRawFd| {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .unwrap();
            facts_of(fd.as_raw_fd()).and_then(adoptable)
        };
        assert_eq!(inherited(&file), Err(NotAdoptable::NotASocket));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(inherited(&stream), Err(NotAdoptable::NotListening));
        let datagram = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(inherited(&datagram), Err(NotAdoptable::NotAStream));
        assert_eq!(inherited(&listener), Ok(()));
        assert_eq!(facts_of(-1).and_then(adoptable), Err(NotAdoptable::Closed));
        // Adopted once (the listener now owns the fd), refused the second time.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(listener);
        let adopted = adopt_fd(spec(raw), raw).unwrap();
        let err = adopt_fd(spec(raw), raw).unwrap_err();
        assert!(err.to_string().contains(&format!("fd://{raw}")), "{err}");
        assert!(err.to_string().contains(&format!("fd {raw}")), "{err}");
        assert!(err.to_string().contains("forkd opened itself"), "{err}");
        drop(adopted);
    }
}
