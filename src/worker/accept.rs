//! Accepting a worker's connections: one accept loop per listener (with accept
//! balancing), the `max_connections` and `max_connections_per_ip` places each
//! connection holds while it is open ([`OpenConnection`]), the 503 for a full worker,
//! and the TLS handshake before a `tls://` connection is served.

use crate::shared::scoreboard::{Handshake, Rejection};
use crate::worker::acceptor::{Accepted, Acceptor};
use crate::worker::balance;
use crate::worker::http::{conn, conn_state, error_response, io};
use crate::worker::state::{Listening, OpenConnection, Shared};
use std::sync::Arc;
use std::time::Duration;

/// The accept loops' tasks, which end when the drain begins.
pub(super) type AcceptTasks = Vec<tokio::task::JoinHandle<()>>;

/// Starts one accept loop per listener (none if any listener cannot be used).
pub(super) fn start_accepting(
    shared: &Arc<Shared>,
    listeners: Vec<Listening>,
) -> Result<AcceptTasks, String> {
    let mut acceptors = Vec::with_capacity(listeners.len());
    for Listening { socket, tls, name } in listeners {
        if tls && shared.tls.is_none() {
            return Err(format!("{name}: a tls:// listener without [tls]"));
        }
        acceptors.push((Acceptor::new(socket, "listener", &name)?, tls));
    }
    Ok(acceptors
        .into_iter()
        .map(|(acceptor, tls)| tokio::spawn(accept(acceptor, shared.clone(), tls)))
        .collect())
}

/// Accepts on one listener until the drain begins.
async fn accept(acceptor: Acceptor, shared: Arc<Shared>, tls: bool) {
    let mut drain = shared.drain_signal();
    loop {
        tokio::select! {
            accepted = async {
                balance::wait_for_less_busy_peers(&shared).await;
                acceptor.accept().await
            } => match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    let local = stream.local_addr().ok();
                    spawn_connection(&shared, stream, Some(peer), local, tls)
                }
                Ok(Accepted::Unix(stream)) => spawn_connection(&shared, stream, None, None, tls),
                Err(e) => accept_error(&shared, e).await,
            },
            _ = drain.changed() => return,
        }
    }
}

/// Out of fds or similar: back off briefly instead of spinning, and say so in the
/// error log at most once per period (with how many failed since), not every 50 ms.
async fn accept_error(shared: &Shared, e: std::io::Error) {
    if let Some(count) = shared.accept_warning.hit() {
        tracing::warn!(
            pid = std::process::id(),
            failures = count,
            "accept failed: {e} ({count} time(s) since the last such line)"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn spawn_connection<T>(
    shared: &Arc<Shared>,
    stream: T,
    addr: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    tls: bool,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Claimed before anything else: with `threads` > 1 accept loops run in parallel,
    // and a check followed by an increment could let both past the last place.
    let Some(mut open) = OpenConnection::claim(shared) else {
        let why = format!(
            "this worker has {} connections open (limits.max_connections)\n",
            shared.max_connections
        );
        refuse(shared, stream, addr, tls, Rejection::MaxConnections, &why);
        return;
    };
    let ip = addr
        .map(|a| a.ip())
        .filter(|_| shared.max_connections_per_ip > 0);
    if let Some(ip) = ip {
        if !shared.claim_ip(ip) {
            drop(open);
            let why = format!(
                "this worker has {} connections open from {ip} (limits.max_connections_per_ip)\n",
                shared.max_connections_per_ip
            );
            refuse(
                shared,
                stream,
                addr,
                tls,
                Rejection::MaxConnectionsPerIp,
                &why,
            );
            return;
        }
        open.1 = Some(ip);
    }
    let mut peer = conn_state::Peer::new(addr, shared);
    peer.local = local;
    if !tls {
        // A task of its own type: one future with a TLS stream inside (rustls's
        // connection state) would make every plain connection's task as large.
        shared
            .connection_tasks
            .spawn(shared, conn::serve(shared.clone(), stream, peer, open));
        return;
    }
    let tls_shared = shared.clone();
    let served = async move {
        // In the connection's own task: a slow handshake holds up nobody else.
        if let Some((stream, info)) = handshake(&tls_shared, stream).await {
            let mut peer = peer;
            peer.tls = Some(info);
            conn::serve(tls_shared, stream, peer, open).await;
        }
    };
    shared.connection_tasks.spawn(shared, served);
}

/// The TLS handshake of an accepted connection, bounded by `tls.handshake_timeout`,
/// counted in the scoreboard for `forkd_tls_handshakes_total`.
async fn handshake<T>(
    shared: &Shared,
    stream: T,
) -> Option<(tokio_rustls::server::TlsStream<T>, crate::tls::TlsInfo)>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let acceptor = shared.tls.as_ref()?;
    let began = std::time::Instant::now();
    let outcome = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await;
    let header = shared.board.header();
    match outcome {
        Ok(Ok(stream)) => {
            header.count_handshake(Handshake::Ok, began.elapsed());
            let info = crate::tls::TlsInfo::of(stream.get_ref().1);
            Some((stream, info))
        }
        Ok(Err(e)) => {
            header.count_handshake(Handshake::Failed, began.elapsed());
            tracing::debug!(pid = std::process::id(), "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            header.count_handshake(Handshake::Timeout, began.elapsed());
            None
        }
    }
}

/// A full worker answers a new connection at once (503, `Retry-After: 1`) rather than
/// leave the client hanging in the queue, counts it, and says so in the error log at
/// most once per period. On a TLS port it is closed instead: no clear-text answer there,
/// and no handshake for a full worker.
fn refuse<T>(
    shared: &Shared,
    stream: T,
    addr: Option<std::net::SocketAddr>,
    tls: bool,
    rejection: Rejection,
    why: &str,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    shared.board.header().count_rejection(rejection);
    if let Some(refused) = shared.full_warning.hit() {
        tracing::error!(
            pid = std::process::id(),
            refused,
            "worker full, refusing connections with 503: {} ({refused} refused since the last such line)",
            why.trim_end()
        );
    }
    if tls {
        return;
    }
    if let Some(log) = &shared.access_log {
        io::log_refused(log, &conn_state::Peer::new(addr, shared), b"", 503, why);
    }
    let response =
        error_response::error_response(503, "Service Unavailable", why, "retry-after: 1\r\n");
    io::answer_and_close(stream, response);
}
