//! Accepting a worker's connections: one accept loop per listener (with accept
//! balancing), the `max_connections` and `max_connections_per_ip` places each
//! connection holds while it is open ([`OpenConnection`]), the 503 for a full worker,
//! and the TLS handshake before a `tls://` connection is served.

use crate::shared::scoreboard::{monotonic_ms, Handshake, Rejection};
use crate::worker::acceptor::{Accepted, Acceptor};
use crate::worker::balance;
use crate::worker::http::{conn, conn_state, io};
use crate::worker::serve::{Listening, Shared};
use std::sync::atomic::Ordering::*;
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

/// At most one log line per `period` for a condition that may recur in a burst;
/// [`Throttled::hit`] counts every occurrence and says when to log, with the count.
pub(crate) struct Throttled {
    period_ms: u64,
    /// When the last line was logged (monotonic ms; 0 = never).
    last_ms: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

impl Throttled {
    pub(crate) fn new(period: Duration) -> Throttled {
        Throttled {
            period_ms: period.as_millis() as u64,
            last_ms: Default::default(),
            count: Default::default(),
        }
    }

    /// Counts one occurrence; `Some(occurrences since the last line)` when a line is due.
    pub(crate) fn hit(&self) -> Option<u64> {
        self.count.fetch_add(1, Relaxed);
        let now = monotonic_ms().max(1);
        let last = self.last_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < self.period_ms {
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            return None;
        }
        Some(self.count.swap(0, Relaxed))
    }
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

/// The connection tasks a core has running, so that it can end them when it returns
/// early (an immediate stop, or `graceful_timeout` passed with connections open): the
/// caller's runtime may go on, and must not go on serving a stopped core's connections.
/// Costs two uncontended locks per connection, nothing per request.
#[derive(Default)]
pub(crate) struct ConnectionTasks {
    next_id: std::sync::atomic::AtomicU64,
    table: std::sync::Mutex<TaskTable>,
}

#[derive(Default)]
struct TaskTable {
    running: std::collections::HashMap<u64, tokio::task::AbortHandle>,
    /// Tasks that ended before their handle was filed (a fast connection).
    ended_unfiled: std::collections::HashSet<u64>,
    /// The core has returned: a task started now is ended at once.
    stopped: bool,
}

/// Takes a task out of the table when its future ends, however it ends (returns,
/// panics, is aborted).
struct TaskEnds {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for TaskEnds {
    fn drop(&mut self) {
        self.shared.connection_tasks.ended(self.id);
    }
}

impl ConnectionTasks {
    /// Spawns one connection's task and files its handle.
    fn spawn<F>(&self, shared: &Arc<Shared>, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Relaxed);
        let ends = TaskEnds {
            shared: shared.clone(),
            id,
        };
        let task = tokio::spawn(async move {
            let _ends = ends;
            future.await
        });
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if table.stopped {
            task.abort();
        } else if !table.ended_unfiled.remove(&id) {
            table.running.insert(id, task.abort_handle());
        }
    }

    fn ended(&self, id: u64) {
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if table.running.remove(&id).is_none() && !table.stopped {
            table.ended_unfiled.insert(id);
        }
    }

    /// Ends every connection task still running (they are dropped at their next
    /// poll: their sockets close, their apps' futures are dropped), and any started
    /// later. Returns how many there were.
    pub(crate) fn end_all(&self) -> usize {
        let Ok(mut table) = self.table.lock() else {
            return 0;
        };
        table.stopped = true;
        table.ended_unfiled.clear();
        let running = std::mem::take(&mut table.running);
        drop(table);
        let count = running.len();
        for (_, task) in running {
            task.abort();
        }
        count
    }
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
    let response = io::error_response(503, "Service Unavailable", why, "retry-after: 1\r\n");
    io::answer_and_close(stream, response);
}

impl Shared {
    /// Counts a connection from `ip` if it stays within `max_connections_per_ip`.
    fn claim_ip(&self, ip: std::net::IpAddr) -> bool {
        let Ok(mut per_ip) = self.per_ip.lock() else {
            return true;
        };
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_connections_per_ip {
            return false;
        }
        *count += 1;
        true
    }

    fn release_ip(&self, ip: std::net::IpAddr) {
        if let Ok(mut per_ip) = self.per_ip.lock() {
            if let std::collections::hash_map::Entry::Occupied(mut entry) = per_ip.entry(ip) {
                *entry.get_mut() -= 1;
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
        }
    }
}

/// Counts one connection as open (in the worker and its scoreboard slot) for as long as
/// it lives. Dropping it uncounts it, also when the app panics: the panic unwinds the
/// connection's task only, tokio drops its future, and without this guard the count
/// would stay up and every later drain would wait out `graceful_timeout` for a
/// connection that is long gone.
/// It also holds the connection's place under `max_connections_per_ip` (`Some(ip)`).
pub(crate) struct OpenConnection(Arc<Shared>, Option<std::net::IpAddr>);

impl OpenConnection {
    /// Takes one of the worker's `max_connections` places, or None when all are taken:
    /// the check and the count are one atomic step, so the limit cannot be overshot.
    fn claim(shared: &Arc<Shared>) -> Option<OpenConnection> {
        shared
            .open_connections
            .fetch_update(AcqRel, Acquire, |open| {
                (open < shared.max_connections).then_some(open + 1)
            })
            .ok()?;
        shared.slot.connection_opened();
        Some(OpenConnection(shared.clone(), None))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(ip) = self.1 {
            self.0.release_ip(ip);
        }
        self.0.slot.connection_closed();
        if self.0.open_connections.fetch_sub(1, AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
        if self.0.stepping_back.load(Relaxed) {
            self.0.connection_closed.notify_waiters();
        }
    }
}
