//! The Prometheus endpoint: `GET /metrics` on its own listener (`[metrics] bind`).
//!
//! The master binds the listener (and hands it to a new master on USR2, named
//! `metrics:<bind>` in `LISTEN_FDNAMES`); the workers serve it, rendering the text
//! format from the scoreboard, which every worker can read. Nothing here runs per
//! request: the request path only bumps relaxed atomics in its own scoreboard slot.

use crate::config::{BindSpec, Config};
use crate::shared::listeners::{self, Listener};
use crate::shared::scoreboard::{
    Board, Handshake, Incomplete, Rejection, WorkerState, DURATION_BOUNDS_US, RESTART_REASONS,
};
use crate::shared::systemd::PassedFd;
use crate::worker::acceptor::{Accepted, Acceptor};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// `/metrics` is served by forkd's own workers from the scoreboard; an exec worker is
/// another program, which would leave the listener unanswered: refuse the combination.
pub fn check_exec(config: &Config) -> Result<(), String> {
    match &config.metrics.bind {
        Some(_) => Err(
            "key `metrics.bind`: metrics are served by forkd's own workers and are not available with exec workers (`exec.command`) yet"
                .to_string(),
        ),
        None => Ok(()),
    }
}

/// The `LISTEN_FDNAMES` name of a handed-over metrics socket for `spec`.
fn passed_name(spec: &BindSpec) -> String {
    format!("metrics:{spec}")
}

/// Takes the metrics socket out of the sockets passed to a new master, so that the
/// app listeners' matching never sees it.
pub fn take_passed(passed: &mut Vec<PassedFd>) -> Option<PassedFd> {
    let index = passed
        .iter()
        .position(|p| p.name.as_deref().is_some_and(|n| n.starts_with("metrics:")))?;
    Some(passed.remove(index))
}

/// The metrics listener for `config`: the passed one if it was bound for the same
/// `metrics.bind`, else a fresh bind. A passed socket that is not wanted is closed.
pub fn listen(config: &Config, passed: Option<PassedFd>) -> Result<Option<Listener>, String> {
    let Some(spec) = &config.metrics.bind else {
        if let Some(p) = passed {
            let _ = nix::unistd::close(p.fd);
        }
        return Ok(None);
    };
    if let Some(p) = passed {
        if p.name.as_deref() == Some(passed_name(spec).as_str()) {
            let mut listener = listeners::adopt_fd(spec.clone(), p.fd)
                .map_err(|e| format!("key `metrics.bind`: passed socket: {e}"))?;
            listener.spec = spec.clone();
            // The old master created the file; this master now serves it.
            listener.own_socket_file();
            tracing::info!("metrics: serving /metrics on {}", listener.local);
            return Ok(Some(listener));
        }
        let _ = nix::unistd::close(p.fd);
    }
    let listener =
        listeners::bind(spec, config.backlog).map_err(|e| format!("key `metrics.bind`: {e}"))?;
    tracing::info!("metrics: serving /metrics on {}", listener.local);
    Ok(Some(listener))
}

/// The name and fd under which a new master receives the metrics listener on USR2.
pub fn handover_name(listener: &Listener) -> String {
    passed_name(&listener.spec)
}

/// Serves `/metrics` on a worker's copy of the metrics listener until `stop` fires.
pub fn serve(
    acceptor: Acceptor,
    board: &'static Board,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let open = Arc::new(Open::default());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    // Draining: accept no more, but let the scrapes already accepted be
                    // answered before the worker exits, so a HUP costs no scrape. Each
                    // connection closes once it is idle (a scraper's keep-alive
                    // connection at once), or within READ_TIMEOUT of a stalled head.
                    let _ = tokio::time::timeout(
                        READ_TIMEOUT + Duration::from_secs(1),
                        open.all_closed(),
                    )
                    .await;
                    return;
                }
                accepted = acceptor.accept() => match accepted {
                    Ok(Accepted::Tcp(stream, peer)) => {
                        admit(stream, Some(peer.ip().to_canonical()), board, &open, &stop);
                    }
                    Ok(Accepted::Unix(stream)) => admit(stream, None, board, &open, &stop),
                    Err(e) => {
                        tracing::warn!(pid = std::process::id(), "metrics accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    })
}

/// Open `/metrics` connections per worker: a scraper needs one or two. A new
/// connection past this closes one already open ([`victim`]), so that clients holding
/// connections cannot use up the worker's fds (which its app connections need), nor
/// keep a scraper out.
pub const MAX_CONNECTIONS: usize = 64;
/// A metrics connection that has not sent a whole request head this long (also
/// between keep-alive requests) is closed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One open metrics connection, as [`victim`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    id: u64,
    /// The client's address; None on a unix socket (all its clients count as one).
    peer: Option<IpAddr>,
    /// When it was accepted or last began a request.
    active: Instant,
}

/// The connection to close when a new one finds every place taken: of the client
/// holding the most connections, the one least recently active. A client that floods
/// the listener only ever closes its own connections while it holds the most, so a
/// scraper elsewhere keeps its keep-alive connection; and a new connection always gets
/// in, so a scraper behind the same address as the flood still gets its answer (a
/// scraper sends its request as soon as it has connected, and is then the most
/// recently active). Closing an idle HTTP/1.1 connection is what a server may always
/// do (RFC 9112 §9.5); a client retries a request that got no answer on a new one.
fn victim(open: &[Held]) -> Option<u64> {
    let mut counts: HashMap<Option<IpAddr>, usize> = HashMap::new();
    for held in open {
        *counts.entry(held.peer).or_default() += 1;
    }
    open.iter()
        .min_by_key(|h| {
            let count = counts.get(&h.peer).copied().unwrap_or(0);
            (std::cmp::Reverse(count), h.active)
        })
        .map(|h| h.id)
}

/// A worker's open metrics connections. A connection is closed by removing it: its
/// task sees its `close` sender dropped.
#[derive(Default)]
struct Open {
    table: Mutex<Table>,
    /// Told when the table becomes empty (the drain waits for it).
    emptied: Notify,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: Vec<(Held, oneshot::Sender<()>)>,
}

impl Open {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection from `peer`, closing one first when all places are
    /// taken; its id, and what tells it to close.
    fn admit(&self, peer: Option<IpAddr>) -> (u64, oneshot::Receiver<()>) {
        let mut table = self.table();
        if table.conns.len() >= MAX_CONNECTIONS {
            let held: Vec<Held> = table.conns.iter().map(|(h, _)| *h).collect();
            if let Some(id) = victim(&held) {
                table.conns.retain(|(h, _)| h.id != id);
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let (close, closed) = oneshot::channel();
        let held = Held {
            id,
            peer,
            active: Instant::now(),
        };
        table.conns.push((held, close));
        (id, closed)
    }

    /// Connection `id` began a request.
    fn touch(&self, id: u64) {
        if let Some((held, _)) = self.table().conns.iter_mut().find(|(h, _)| h.id == id) {
            held.active = Instant::now();
        }
    }

    /// Connection `id` has ended (or was closed).
    fn remove(&self, id: u64) {
        let mut table = self.table();
        table.conns.retain(|(h, _)| h.id != id);
        if table.conns.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Returns once no connection is open.
    async fn all_closed(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.table().conns.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

/// Serves `stream` from `peer`, making room for it if every place is taken.
fn admit<T>(
    stream: T,
    peer: Option<IpAddr>,
    board: &'static Board,
    open: &Arc<Open>,
    stop: &tokio::sync::watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (id, closed) = open.admit(peer);
    let (open, stop) = (open.clone(), stop.clone());
    tokio::spawn(async move {
        let touch = {
            let open = open.clone();
            move || open.touch(id)
        };
        tokio::select! {
            _ = serve_connection(stream, board, stop, touch) => {}
            // Closed to make room: the connection is dropped here.
            _ = closed => {}
        }
        open.remove(id);
    });
}

/// Serves one metrics connection; `touch` is called as each request begins. Once
/// `stop` (the worker's drain) fires, every
/// response says `Connection: close`, and a connection that has already been answered
/// and is idle (a scraper's keep-alive connection) is closed at once, so it does not
/// hold up the worker's drain. A connection not yet answered is left to get its
/// answer: it was accepted to be served, and its request may be on the wire.
async fn serve_connection<T>(
    stream: T,
    board: &'static Board,
    mut stop: tokio::sync::watch::Receiver<bool>,
    touch: impl Fn() + Send + Sync + 'static,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let answered = Arc::new(AtomicBool::new(false));
    let service = {
        let (answered, stop) = (answered.clone(), stop.clone());
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            touch();
            answered.store(true, Relaxed);
            let mut resp = answer(&req, board);
            if *stop.borrow() {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            std::future::ready(Ok::<_, Infallible>(resp))
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT);
    let connection = http.serve_connection(TokioIo::new(stream), service);
    let served = async move {
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stop.wait_for(|draining| *draining) => {}
        }
        if answered.load(Relaxed) {
            connection.as_mut().graceful_shutdown();
        }
        let _ = connection.await;
    };
    // A scraper that stops reading cannot hold a worker's task forever.
    let _ = tokio::time::timeout(Duration::from_secs(60), served).await;
}

fn answer(req: &Request<hyper::body::Incoming>, board: &'static Board) -> Response<Full<Bytes>> {
    let (status, body, content_type) =
        if req.uri().path() == "/metrics" && matches!(*req.method(), Method::GET | Method::HEAD) {
            (
                StatusCode::OK,
                render(board),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "forkd serves only GET /metrics here\n".to_string(),
                "text/plain; charset=utf-8",
            )
        };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Reads one per-worker value from a slot.
type SlotValue = fn(&crate::shared::scoreboard::Slot) -> u64;

/// Reads a process's memory from /proc (RSS or PSS, in bytes).
type ReadMemory = fn(i32) -> Option<u64>;

/// The Prometheus text exposition (format 0.0.4) of the whole server.
pub fn render(board: &Board) -> String {
    let header = board.header();
    let mut out = String::with_capacity(4096);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };

    family(
        &mut out,
        "forkd_uptime_seconds",
        "gauge",
        "Seconds since the master started.",
    );
    let _ = writeln!(
        out,
        "forkd_uptime_seconds {}",
        header.uptime_ms() as f64 / 1000.0
    );

    let live: Vec<_> = board.live_slots().collect();
    family(
        &mut out,
        "forkd_workers",
        "gauge",
        "Worker processes by state.",
    );
    for (state, label) in [
        (WorkerState::Booting, "booting"),
        (WorkerState::Ready, "ready"),
        (WorkerState::Draining, "draining"),
    ] {
        let count = live.iter().filter(|s| s.state() == state).count();
        let _ = writeln!(out, "forkd_workers{{state=\"{label}\"}} {count}");
    }

    let per_worker: [(&str, &str, &str, SlotValue); 5] = [
        (
            "forkd_worker_requests_total",
            "counter",
            "Requests served by each live worker.",
            |s| s.requests(),
        ),
        (
            "forkd_worker_requests_in_flight",
            "gauge",
            "Requests each live worker is serving now.",
            |s| s.in_flight(),
        ),
        (
            "forkd_worker_connections",
            "gauge",
            "Open client connections of each live worker.",
            |s| s.connections(),
        ),
        (
            "forkd_worker_wsgi_queued_total",
            "counter",
            "WSGI requests that found each live worker's thread pool busy and waited for a thread.",
            |s| s.queued(),
        ),
        (
            "forkd_worker_wsgi_waiting",
            "gauge",
            "WSGI requests waiting for a free pool thread in each live worker now.",
            |s| s.waiting(),
        ),
    ];
    for (name, kind, help, value) in per_worker {
        family(&mut out, name, kind, help);
        for slot in &live {
            let _ = writeln!(
                out,
                "{name}{{worker=\"{}\",pid=\"{}\",generation=\"{}\"}} {}",
                slot.number(),
                slot.pid(),
                slot.generation(),
                value(slot)
            );
        }
    }

    // Read from /proc at each scrape: RSS counts the pages a worker shares (with a
    // `preload_app` zygote, with the others) in full, PSS divides them among sharers.
    let memory: [(&str, &str, ReadMemory); 2] = [
        (
            "forkd_worker_resident_memory_bytes",
            "Resident memory (RSS) of each live worker: shared pages counted in full, as max_worker_memory counts them.",
            crate::shared::memory::read_rss,
        ),
        (
            "forkd_worker_proportional_memory_bytes",
            "Proportional memory (PSS) of each live worker: each shared page divided among the processes sharing it.",
            crate::shared::memory::read_pss,
        ),
    ];
    for (name, help, read) in memory {
        family(&mut out, name, "gauge", help);
        for slot in &live {
            if let Some(bytes) = read(slot.pid()) {
                let _ = writeln!(
                    out,
                    "{name}{{worker=\"{}\",pid=\"{}\",generation=\"{}\"}} {bytes}",
                    slot.number(),
                    slot.pid(),
                    slot.generation(),
                );
            }
        }
    }

    let totals = board.totals();
    family(
        &mut out,
        "forkd_requests_total",
        "counter",
        "Requests served by all workers since the master started, including exited ones.",
    );
    let _ = writeln!(out, "forkd_requests_total {}", totals.requests);

    family(
        &mut out,
        "forkd_request_duration_seconds",
        "histogram",
        "Time from a request's head to the end of its response, all workers.",
    );
    let mut cumulative = 0;
    for (index, count) in totals.durations.buckets.iter().enumerate() {
        cumulative = count.saturating_add(cumulative);
        let le = match DURATION_BOUNDS_US.get(index) {
            Some(bound) => format!("{}", *bound as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(
            out,
            "forkd_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "forkd_request_duration_seconds_sum {}",
        totals.durations.sum_us as f64 / 1e6
    );
    let _ = writeln!(out, "forkd_request_duration_seconds_count {cumulative}");

    family(
        &mut out,
        "forkd_worker_restarts_total",
        "counter",
        "Workers replaced, by reason.",
    );
    for (reason, count) in RESTART_REASONS.iter().zip(header.restarts()) {
        let _ = writeln!(
            out,
            "forkd_worker_restarts_total{{reason=\"{reason}\"}} {count}"
        );
    }
    family(
        &mut out,
        "forkd_reloads_total",
        "counter",
        "Configuration reloads (HUP) started.",
    );
    let _ = writeln!(out, "forkd_reloads_total {}", header.reloads());
    family(
        &mut out,
        "forkd_upgrades_total",
        "counter",
        "Binary upgrades (USR2) started.",
    );
    let _ = writeln!(out, "forkd_upgrades_total {}", header.upgrades());
    family(
        &mut out,
        "forkd_log_lines_dropped_total",
        "counter",
        "Error and access log lines that could not be written (a full disk, a stderr nobody reads).",
    );
    let _ = writeln!(
        out,
        "forkd_log_lines_dropped_total {}",
        header.log_lines_dropped()
    );
    family(
        &mut out,
        "forkd_requests_rejected_total",
        "counter",
        "Requests and connections refused by a [limits] setting before reaching the app.",
    );
    for rejection in Rejection::ALL {
        let _ = writeln!(
            out,
            "forkd_requests_rejected_total{{limit=\"{}\"}} {}",
            rejection.limit_name(),
            header.rejections(rejection)
        );
    }
    family(
        &mut out,
        "forkd_responses_incomplete_total",
        "counter",
        "Responses cut short before their last byte was written, by reason.",
    );
    for reason in Incomplete::ALL {
        let _ = writeln!(
            out,
            "forkd_responses_incomplete_total{{reason=\"{}\"}} {}",
            reason.label(),
            header.incomplete(reason)
        );
    }
    family(
        &mut out,
        "forkd_tls_handshakes_total",
        "counter",
        "TLS handshakes on tls:// listeners, by result.",
    );
    let mut handshakes = 0;
    for result in Handshake::ALL {
        let count = header.handshakes(result);
        handshakes += count;
        let _ = writeln!(
            out,
            "forkd_tls_handshakes_total{{result=\"{}\"}} {count}",
            result.label()
        );
    }
    family(
        &mut out,
        "forkd_tls_handshake_duration_seconds",
        "summary",
        "Time from accept to the end of the TLS handshake (every result).",
    );
    let _ = writeln!(
        out,
        "forkd_tls_handshake_duration_seconds_sum {}",
        header.handshake_us() as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "forkd_tls_handshake_duration_seconds_count {handshakes}"
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn held(id: u64, peer: [u8; 4], age_ms: u64, now: Instant) -> Held {
        Held {
            id,
            peer: Some(IpAddr::from(peer)),
            active: now - Duration::from_millis(age_ms),
        }
    }

    #[test]
    fn the_biggest_holders_least_recently_active_connection_is_closed() {
        let now = Instant::now();
        let scraper = [10, 0, 0, 9];
        let flood = [10, 0, 0, 1];
        // The scraper's connection is the oldest; the flood's are more.
        let mut open = vec![held(0, scraper, 9000, now)];
        open.extend((1..=5).map(|id| held(id, flood, 100 * id, now)));
        assert_eq!(victim(&open), Some(5), "the flood's oldest");
        // A scraper behind the flood's address: the oldest of them all goes, never the
        // newest (the scrape that just connected).
        let same: Vec<Held> = (0..4).map(|id| held(id, flood, 10 * id, now)).collect();
        assert_eq!(victim(&same), Some(3));
        // Equal holders: the least recently active.
        let even = vec![
            held(0, scraper, 5, now),
            held(1, flood, 50, now),
            held(2, scraper, 7, now),
            held(3, flood, 1, now),
        ];
        assert_eq!(victim(&even), Some(1));
        // Unix-socket clients count as one.
        let unix = vec![
            Held {
                id: 7,
                peer: None,
                active: now - Duration::from_millis(3),
            },
            Held {
                id: 8,
                peer: None,
                active: now,
            },
            held(9, scraper, 100, now),
        ];
        assert_eq!(victim(&unix), Some(7));
        assert_eq!(victim(&[]), None);
    }

    #[tokio::test]
    async fn a_full_table_closes_one_to_admit_one() {
        let open = Open::default();
        let flood = Some(IpAddr::from([127, 0, 0, 1]));
        let (first, mut first_closed) = open.admit(flood);
        let mut rest = Vec::new();
        for _ in 1..MAX_CONNECTIONS {
            rest.push(open.admit(flood));
        }
        assert_eq!(open.table().conns.len(), MAX_CONNECTIONS);
        assert!(first_closed
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Empty));
        // Another client's connection: the oldest of the flood is closed to make room.
        let (_, scraper_closed) = open.admit(Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(open.table().conns.len(), MAX_CONNECTIONS);
        assert!(!open.table().conns.iter().any(|(h, _)| h.id == first));
        assert_eq!(
            first_closed.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        // All closed: the drain's wait returns.
        open.remove(first);
        for (id, _) in &rest {
            open.remove(*id);
        }
        let open = Arc::new(open);
        let waiting = tokio::spawn({
            let open = open.clone();
            async move { open.all_closed().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "one is still open");
        let last = open.table().conns[0].0.id;
        open.remove(last);
        drop(scraper_closed);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken when the last closed")
            .unwrap();
    }
}
