//! One acceptor for the listening sockets a worker accepts on, its app listeners and
//! the metrics listener alike: a TCP or unix listener on the worker's own copy of the
//! fd, and what it accepts.

use crate::listeners::{Listener, ListenerKind};
use std::net::SocketAddr;

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
    /// Accepts on a duplicate of `listener`'s fd: closing it stops this worker's
    /// accepting only; the queue lives on in the master and the other workers.
    /// `what` names the listener in errors ("listener", "metrics listener").
    pub(crate) fn new(listener: &Listener, what: &str) -> Result<Acceptor, String> {
        let fd = listener
            .fd
            .try_clone()
            .map_err(|e| format!("dup {what} {}: {e}", listener.local))?;
        let fail = |e: std::io::Error| format!("{what} {}: {e}", listener.local);
        Ok(match listener.kind {
            ListenerKind::Tcp => {
                let l = std::net::TcpListener::from(fd);
                let _ = l.set_nonblocking(true);
                Acceptor::Tcp(tokio::net::TcpListener::from_std(l).map_err(fail)?)
            }
            ListenerKind::Unix { .. } => {
                let l = std::os::unix::net::UnixListener::from(fd);
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
