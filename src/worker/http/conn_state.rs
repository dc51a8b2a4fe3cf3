//! What a connection's IO (`io`) and its service and watchdog (`conn`) share: who is at
//! the other end ([`Peer`]) and the connection's state ([`ConnState`]: requests in
//! flight, idleness, refusals, HTTP/2 stream counts, writes waiting), with the
//! watchdog's decision on it ([`ConnState::time_left`]).

use crate::app::{ClientAddr, ClientCertSubject, Scheme, ServerAddr, TlsServerName};
use crate::shared::scoreboard::{monotonic_ms, Incomplete};
use crate::worker::http::access_log::Remote;
use crate::worker::http::violation::Violation;
use crate::worker::state::Shared;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Once a connection's client has abandoned this many streams early, and they are more
/// than half of the streams it opened, it is flooding resets (CVE-2023-44487 paced to
/// stay under h2's limit of resets waiting to be accepted): GOAWAY, then close.
pub(crate) const RESET_FLOOD_STREAMS: u64 = 100;

/// Who is at the other end of a connection.
pub(crate) struct Peer {
    /// None for unix sockets.
    pub addr: Option<SocketAddr>,
    /// The local end (TCP only), for apps that want it (`ServerAddr`).
    pub local: Option<SocketAddr>,
    /// `ClientAddr` when no trusted proxy says otherwise: `IP:PORT`, or `unix`; made
    /// once per connection, shared by its requests.
    pub display: Arc<str>,
    /// The peer is in `forwarded_allow_ips`: its proxy headers are believed.
    pub trusted: bool,
    /// What the TLS handshake negotiated, on a TLS connection.
    pub tls: Option<crate::tls::TlsInfo>,
}

impl Peer {
    pub(crate) fn new(addr: Option<SocketAddr>, shared: &Shared) -> Peer {
        let ip = addr.map_or(crate::worker::http::forwarded::UNIX_PEER, |a| a.ip());
        Peer {
            addr,
            local: None,
            display: addr.map_or_else(|| Arc::from("unix"), |a| Arc::from(a.to_string())),
            trusted: shared.proxies.trusts(ip),
            tls: None,
        }
    }
    /// The TLS version and cipher suite, for the access log.
    pub(crate) fn tls_fields(&self) -> Option<(&'static str, &'static str)> {
        self.tls.as_ref().map(|t| (t.version, t.cipher))
    }
    pub(crate) fn ip(&self) -> IpAddr {
        self.addr
            .map_or(crate::worker::http::forwarded::UNIX_PEER, |a| a.ip())
    }
    /// The log's `remote_addr` when no trusted proxy names the client.
    pub(crate) fn remote(&self) -> Remote {
        self.addr.map_or(Remote::Unix, |a| Remote::Ip(a.ip()))
    }
    /// Inserts the request extensions this connection gives each of its requests
    /// unless a trusted proxy says otherwise (`prepare`).
    pub(crate) fn add_extensions(&self, extensions: &mut hyper::http::Extensions) {
        extensions.insert(ClientAddr(self.display.clone()));
        if let Some(local) = self.local {
            extensions.insert(ServerAddr(local));
        }
        if let Some(tls) = &self.tls {
            extensions.insert(Scheme("https"));
            if let Some(subject) = &tls.client_subject {
                extensions.insert(ClientCertSubject(subject.clone()));
            }
            if let Some(name) = &tls.server_name {
                extensions.insert(TlsServerName(name.clone()));
            }
        }
    }
}

/// What the connection's watchdog needs to know, updated from the IO and the service.
pub(crate) struct ConnState {
    in_flight: AtomicU64,
    bytes_read: AtomicU64,
    /// `bytes_read` when the connection last became idle.
    bytes_read_at_idle: AtomicU64,
    pub(crate) idle_since_ms: AtomicU64,
    pub(crate) is_h2: AtomicBool,
    /// Requests the service has started (HTTP/1: their number on the connection,
    /// which is the scanner's count of heads).
    pub(crate) requests: AtomicU64,
    /// The number of the HTTP/1 request whose body the IO refused (0: none), and why:
    /// that request's response becomes the refusal (413, 400, 431, 408), not another's.
    refused_request: AtomicU64,
    refused: Mutex<Option<Violation>>,
    /// The app switched protocols (101, or 2xx to `CONNECT`): the IO stops scanning.
    pub(crate) switched: AtomicBool,
    /// Until the first request, a silent connection gets `header_read_timeout`, not
    /// the (shorter, possibly zero) keep-alive period.
    pub(crate) served_any: AtomicBool,
    /// HTTP/2 streams ended, and of them those the client abandoned early.
    pub(crate) streams_ended: AtomicU64,
    pub(crate) streams_abandoned: AtomicU64,
    /// The client turned out to be flooding resets: the connection's loop, which looks
    /// at least every `conn::H2_WATCH` on HTTP/2, closes it (a flag rather than a `Notify`,
    /// which would be polled on every wake-up of every connection).
    pub(crate) flooding: AtomicBool,
    /// Requests in flight that wait on the app (for its answer, or the next frame of its
    /// body) rather than on the client: the others have bytes waiting to be sent.
    app_busy: AtomicU64,
    /// The last write or flush waited: hyper holds bytes the socket did not take.
    write_blocked: AtomicBool,
    /// Response body bytes written to the connection: the send watchdog's progress.
    pub(crate) body_written: AtomicU64,
    /// Why forkd ended the connection, if it did ([`Incomplete`] as a number plus one):
    /// the reason its unfinished responses are counted under.
    closed_by: AtomicU8,
    /// HTTP/2: the streams whose responses have begun, for `send_timeout` per stream.
    pub(crate) streams: crate::worker::http::send_watch::Streams,
}

impl ConnState {
    pub(crate) fn new() -> ConnState {
        ConnState {
            in_flight: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_read_at_idle: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(monotonic_ms()),
            is_h2: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            refused_request: AtomicU64::new(0),
            refused: Mutex::new(None),
            switched: AtomicBool::new(false),
            served_any: AtomicBool::new(false),
            streams_ended: AtomicU64::new(0),
            streams_abandoned: AtomicU64::new(0),
            flooding: AtomicBool::new(false),
            app_busy: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            body_written: AtomicU64::new(0),
            closed_by: AtomicU8::new(0),
            streams: Default::default(),
        }
    }

    /// A write or flush waited for the socket.
    #[inline]
    pub(crate) fn write_waits(&self) {
        self.write_blocked.store(true, Relaxed);
    }
    /// A write or flush went through. A connection that was blocked with nothing in
    /// flight (the last bytes of a response) is idle from now, not from when its last
    /// request ended.
    #[inline]
    pub(crate) fn write_moved(&self) {
        if self.write_blocked.load(Relaxed) {
            self.write_blocked.store(false, Relaxed);
            self.idle_since_ms.store(monotonic_ms(), Release);
        }
    }
    /// A write waited `send_timeout`: the IO fails it and the connection ends.
    pub(crate) fn send_timed_out(&self) {
        self.close_for(Incomplete::SendTimeout);
    }
    pub(crate) fn close_for(&self, reason: Incomplete) {
        let _ = self
            .closed_by
            .compare_exchange(0, reason as u8 + 1, Relaxed, Relaxed);
    }
    /// Why a response of this connection was cut short, unless the app failed it: what
    /// forkd closed the connection for, else the client left.
    pub(crate) fn cut_reason(&self) -> Incomplete {
        match self.closed_by.load(Relaxed) {
            0 => Incomplete::ClientClosed,
            n => Incomplete::ALL
                .get(usize::from(n - 1))
                .copied()
                .unwrap_or(Incomplete::ClientClosed),
        }
    }
    pub(crate) fn app_busy(&self, busy: bool) {
        if busy {
            self.app_busy.fetch_add(1, Relaxed);
        } else {
            self.app_busy.fetch_sub(1, Relaxed);
        }
    }
    /// Response bytes wait to be sent: a request in flight that is not waiting on the
    /// app, or bytes the socket did not take.
    pub(crate) fn waits_to_send(&self) -> bool {
        self.write_blocked.load(Relaxed)
            || self.in_flight.load(Acquire) > self.app_busy.load(Relaxed)
    }

    pub(crate) fn add_bytes_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Release);
    }
    pub(crate) fn mark_http2(&self) {
        self.is_h2.store(true, Relaxed);
    }
    /// The IO refused request `request`'s body.
    pub(crate) fn refuse(&self, request: u64, violation: Violation) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused = Some(violation);
        }
        self.refused_request.store(request, Release);
    }
    /// Why request `request`'s body was refused, if it was.
    #[inline]
    pub(crate) fn refusal_for(&self, request: u64) -> Option<Violation> {
        if self.refused_request.load(Acquire) != request {
            return None;
        }
        self.refused.lock().ok().and_then(|refused| *refused)
    }
    pub(crate) fn switched_protocols(&self) -> bool {
        self.switched.load(Acquire)
    }

    /// How long until this connection should be closed for being idle (keep-alive) or
    /// for not finishing its headers; `Err` says which, and means close now.
    pub(crate) fn time_left(
        &self,
        keepalive: Duration,
        header_timeout: Duration,
        busy_recheck: Duration,
    ) -> Result<Duration, Closing> {
        if self.in_flight.load(Acquire) > 0 || self.write_blocked.load(Relaxed) {
            // A request in progress, or a response's last bytes not yet written: never
            // idle (`send_timeout` owns it); re-check after a while.
            return Ok(busy_recheck);
        }
        let idle_for = monotonic_ms().saturating_sub(self.idle_since_ms.load(Acquire));
        let partial = self.bytes_read.load(Acquire) != self.bytes_read_at_idle.load(Acquire);
        let waiting_for_first = !self.served_any.load(Acquire);
        let limit = if partial || waiting_for_first {
            header_timeout
        } else {
            keepalive
        };
        let limit_ms = limit.as_millis() as u64;
        if idle_for >= limit_ms {
            // A connection that never sent a whole request (not a byte, or part of a
            // head) holds a slot until `header_read_timeout`: counted as such.
            Err(if partial || waiting_for_first {
                Closing::HeaderTimeout
            } else {
                Closing::Idle
            })
        } else {
            Ok(Duration::from_millis(limit_ms - idle_for))
        }
    }

    /// Counts a request in; returns its number on the connection (1-based).
    pub(crate) fn request_started(&self) -> u64 {
        self.served_any.store(true, Release);
        self.in_flight.fetch_add(1, AcqRel);
        self.requests.fetch_add(1, Relaxed) + 1
    }

    pub(crate) fn request_finished(&self) {
        self.bytes_read_at_idle
            .store(self.bytes_read.load(Acquire), Release);
        self.idle_since_ms.store(monotonic_ms(), Release);
        self.in_flight.fetch_sub(1, AcqRel);
    }

    /// Counts an ended HTTP/2 stream; sets `flooding` when the abandoned ones
    /// first pass the bound.
    pub(crate) fn stream_ended(&self, abandoned_early: bool) {
        let ended = self.streams_ended.fetch_add(1, Relaxed) + 1;
        if abandoned_early {
            let abandoned = self.streams_abandoned.fetch_add(1, Relaxed) + 1;
            if abandoned >= RESET_FLOOD_STREAMS && abandoned * 2 > ended {
                self.flooding.store(true, Relaxed);
            }
        }
    }
}

/// Why the watchdog closes a connection.
#[derive(Debug)]
pub(crate) enum Closing {
    Idle,
    /// No whole request head within `header_read_timeout`: part of one arrived, or
    /// nothing at all since the connection opened.
    HeaderTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_with_unwritten_bytes_or_requests_in_flight_is_not_idle() {
        let state = ConnState::new();
        state.served_any.store(true, Relaxed);
        state.idle_since_ms.store(0, Relaxed);
        let (keepalive, header) = (Duration::from_secs(2), Duration::from_secs(10));
        let recheck = Duration::from_millis(500);
        assert!(matches!(
            state.time_left(keepalive, header, recheck),
            Err(Closing::Idle)
        ));
        // The socket did not take the last bytes of a response: send_timeout's, not idle.
        state.write_waits();
        assert_eq!(
            state.time_left(keepalive, header, recheck).ok(),
            Some(recheck)
        );
        assert!(state.waits_to_send());
        // Once they are written, the keep-alive period starts from then.
        state.write_moved();
        assert!(state.time_left(keepalive, header, recheck).unwrap() > recheck);
        // A request in flight that waits on the app has nothing waiting to be sent.
        state.request_started();
        state.app_busy(true);
        assert_eq!(
            state.time_left(keepalive, header, recheck).ok(),
            Some(recheck)
        );
        assert!(!state.waits_to_send());
        state.app_busy(false);
        assert!(state.waits_to_send());
    }
}
