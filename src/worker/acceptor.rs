//! One acceptor for the listening sockets a worker accepts on, its app listeners and
//! the metrics listener alike: a TCP or unix listener on the worker's own copy of the
//! fd ([`Socket`]), registered with the runtime ([`Acceptor`]), and what it accepts.

use crate::shared::listeners::{Listener, ListenerKind};
use std::net::SocketAddr;

/// A listening socket of either kind, not yet registered with a runtime.
pub(crate) enum Socket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Socket {
    /// A duplicate of `listener`'s fd: closing it stops this worker's accepting only;
    /// the queue lives on in the master and the other workers. `what` names the
    /// listener in errors ("listener", "metrics listener").
    pub(crate) fn copy_of(listener: &Listener, what: &str) -> Result<Socket, String> {
        let fd = listener
            .fd
            .try_clone()
            .map_err(|e| format!("dup {what} {}: {e}", listener.local))?;
        Ok(match listener.kind {
            ListenerKind::Tcp => Socket::Tcp(fd.into()),
            ListenerKind::Unix { .. } => Socket::Unix(fd.into()),
        })
    }
}

/// A worker's listener of either kind.
pub(crate) enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// An accepted connection: a TCP one with its peer's address, or a unix one.
pub(crate) enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

impl Acceptor {
    /// Registers `socket` with the current tokio runtime. `what` and `name` name the
    /// listener in errors ("listener 127.0.0.1:8000: ...").
    pub(crate) fn new(socket: Socket, what: &str, name: &str) -> Result<Acceptor, String> {
        let fail = |e: std::io::Error| format!("{what} {name}: {e}");
        Ok(match socket {
            Socket::Tcp(l) => {
                let _ = l.set_nonblocking(true);
                Acceptor::Tcp(tokio::net::TcpListener::from_std(l).map_err(fail)?)
            }
            Socket::Unix(l) => {
                let _ = l.set_nonblocking(true);
                Acceptor::Unix(tokio::net::UnixListener::from_std(l).map_err(fail)?)
            }
        })
    }

    /// The next connection. (TCP_NODELAY is inherited from the listener, which the
    /// master set.)
    pub(crate) async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Acceptor::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Acceptor::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}
