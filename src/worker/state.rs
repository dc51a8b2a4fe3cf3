//! What every task of a worker's serving core shares: the listening sockets it is given
//! ([`Listening`]), the core's state ([`Shared`]: the app, the slot, the settings its
//! connections read, the drain, the open connections and their places), the connection
//! tasks it can end ([`ConnectionTasks`]), a connection's place ([`OpenConnection`]) and
//! the throttle of repeated warnings ([`Throttled`]). `serve` builds and drains it,
//! `accept` fills it, the connection modules read it.

use crate::app::App;
use crate::shared::listeners::Listener;
use crate::shared::scoreboard::{monotonic_ms, Board, Slot, WorkerState};
use crate::worker::acceptor::Socket;
use crate::worker::http::access_log::AccessLog;
use crate::worker::http::forwarded::TrustedProxies;
use crate::worker::http::health::HealthPaths;
use crate::worker::http::violation::HeadLimits;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// A listening socket [`serve`](super::serve::serve) accepts on. The core accepts on it
/// until the drain begins, then closes it.
pub struct Listening {
    pub(super) socket: Socket,
    /// Its connections begin with a TLS handshake ([`Settings::tls`](super::serve::Settings::tls)).
    pub(super) tls: bool,
    /// What it is bound to, for errors.
    pub(super) name: String,
}

impl Listening {
    /// A bound TCP listener (`std::net::TcpListener::bind`).
    pub fn tcp(listener: std::net::TcpListener) -> Listening {
        let name = listener
            .local_addr()
            .map_or_else(|_| "tcp".to_string(), |a| a.to_string());
        Listening {
            socket: Socket::Tcp(listener),
            tls: false,
            name,
        }
    }

    /// A bound unix socket listener.
    pub fn unix(listener: std::os::unix::net::UnixListener) -> Listening {
        let name = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
            .unwrap_or_else(|| "unix".to_string());
        Listening {
            socket: Socket::Unix(listener),
            tls: false,
            name,
        }
    }

    /// Serves this listener's connections over TLS, with the server config given as
    /// [`Settings::tls`](super::serve::Settings::tls) (without it, [`serve`](super::serve::serve) fails).
    pub fn with_tls(mut self) -> Listening {
        self.tls = true;
        self
    }

    /// A worker's own copy of one of the master's listeners (TLS if its `bind` entry
    /// says so). `what` names it in errors.
    pub(super) fn copy_of(listener: &Listener, what: &str) -> Result<Listening, String> {
        Ok(Listening {
            socket: Socket::copy_of(listener, what)?,
            tls: listener.spec.is_tls(),
            name: listener.local.clone(),
        })
    }
}

/// State shared by every task of the worker.
pub(crate) struct Shared {
    pub(super) app: Arc<dyn App>,
    pub(super) slot: &'static Slot,
    pub(super) board: &'static Board,
    pub(super) http: crate::worker::http::sniff::Builders,
    pub(super) keepalive: Duration,
    pub(super) header_read_timeout: Duration,
    /// `limits.body_read_timeout`; zero = off.
    pub(super) body_read_timeout: Duration,
    /// `limits.send_timeout`.
    pub(super) send_timeout: Duration,
    /// This worker's own `max_requests` (with its jitter drawn); 0 = unlimited.
    pub(super) request_limit: u64,
    pub(super) draining: AtomicBool,
    pub(super) drain_tx: watch::Sender<bool>,
    pub(super) open_connections: AtomicUsize,
    pub(super) all_closed: Notify,
    /// Rung when a connection closes while the accept loop is stepping back (accept
    /// balancing waits on it); `stepping_back` says whether anyone is waiting, so that
    /// a closing connection costs no lock otherwise.
    pub(super) connection_closed: Notify,
    pub(super) stepping_back: AtomicBool,
    pub(super) limits: HeadLimits,
    pub(super) max_connections: usize,
    /// `limits.max_connections_per_ip`; 0 = off.
    pub(super) max_connections_per_ip: usize,
    /// Open connections per client IP, kept only when `max_connections_per_ip` is on.
    pub(super) per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// "This worker is full" error-log lines, at most one per period.
    pub(super) full_warning: Throttled,
    /// accept(2) failures (EMFILE...) in the error log, at most one line per period.
    pub(super) accept_warning: Throttled,
    pub(super) health: HealthPaths,
    pub(super) proxies: TrustedProxies,
    pub(super) access_log: Option<Arc<AccessLog>>,
    /// Metrics are on: record each request's duration in the slot's histogram.
    pub(super) record_durations: bool,
    /// Something needs a request's start time (the histogram or the access log).
    pub(super) timing: bool,
    /// Wraps connections accepted on `tls://` listeners.
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Every connection's task, ended when the core returns without a full drain.
    pub(super) connection_tasks: ConnectionTasks,
    /// `tls.handshake_timeout`.
    pub(super) handshake_timeout: Duration,
}

impl Shared {
    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }
    pub(super) fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }
    pub(super) fn start_drain(&self) {
        if !self.draining.swap(true, AcqRel) {
            self.slot.set_state(WorkerState::Draining);
            let _ = self.drain_tx.send(true);
            self.app.draining();
        }
    }
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
    pub(super) fn spawn<F>(&self, shared: &Arc<Shared>, future: F)
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

impl Shared {
    /// Counts a connection from `ip` if it stays within `max_connections_per_ip`.
    pub(super) fn claim_ip(&self, ip: std::net::IpAddr) -> bool {
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

    pub(super) fn release_ip(&self, ip: std::net::IpAddr) {
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
pub(crate) struct OpenConnection(Arc<Shared>, pub(super) Option<std::net::IpAddr>);

impl OpenConnection {
    /// Takes one of the worker's `max_connections` places, or None when all are taken:
    /// the check and the count are one atomic step, so the limit cannot be overshot.
    pub(super) fn claim(shared: &Arc<Shared>) -> Option<OpenConnection> {
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
