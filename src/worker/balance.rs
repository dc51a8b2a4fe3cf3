//! Accept balancing across workers that share one listening socket.
//!
//! Every worker waits on the same accept queue, and whichever runs first takes what is
//! queued: when a client opens a burst of keep-alive connections, one worker can take
//! nearly all of them (measured: 61 of 64 with 2 workers, two of four workers with none)
//! and keep them for their whole life, so one core does the work of all. Before each
//! accept, a worker that holds clearly more connections than the least loaded of its
//! live peers steps back for up to [`MAX_STEPS`] × [`STEP`], which lets a peer (woken by
//! the same readiness event) take the connection. It then accepts anyway, so a
//! connection waits at most a few milliseconds even when every peer is busy or stuck.
//! A step ends early when one of this worker's own connections closes: with short
//! connections, two workers could otherwise both be stepping back on stale counts while
//! the queue fills (measured: 16k connections/s fell to 2.6k before this).
//! This is the idea of Puma's `wait_for_less_busy_worker`, with the load read from the
//! scoreboard (relaxed loads of a few slots per accepted connection, nothing per request).

use crate::shared::scoreboard::monotonic_ms;
use crate::worker::state::Shared;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long one step back lasts (the timer's resolution).
const STEP: Duration = Duration::from_millis(1);
/// Steps back at most before accepting anyway.
const MAX_STEPS: u32 = 3;
/// A peer whose event loop has not ticked for this long is busy or stuck: it will not
/// accept soon, so it does not count.
const PEER_SILENT_MS: u64 = 2_500;

/// Whether a worker holding `mine` connections should leave the next one to a peer
/// holding `least`: more than a quarter above it, and by more than two connections.
pub(super) fn should_defer(mine: u64, least: u64) -> bool {
    mine > least + 2 + least / 4
}

/// Waits (briefly, bounded) while this worker is clearly busier than a live peer.
pub(super) async fn wait_for_less_busy_peers(shared: &Shared) {
    for _ in 0..MAX_STEPS {
        let mine = shared.open_connections.load(Relaxed) as u64;
        if mine <= 2 {
            return;
        }
        let alive_since = monotonic_ms().saturating_sub(PEER_SILENT_MS);
        match shared
            .board
            .least_connections_of_peers(shared.slot, alive_since)
        {
            Some(least) if should_defer(mine, least) => {
                shared.stepping_back.store(true, Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(STEP) => {}
                    _ = shared.connection_closed.notified() => {}
                }
                shared.stepping_back.store(false, Relaxed);
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::should_defer;

    #[test]
    fn defers_only_when_clearly_busier_than_the_least_loaded_peer() {
        assert!(!should_defer(1, 0), "one connection is no imbalance");
        assert!(!should_defer(2, 0), "nor are two");
        assert!(should_defer(3, 0));
        assert!(!should_defer(10, 8), "two more than a peer is balanced");
        assert!(!should_defer(33, 31));
        assert!(!should_defer(40, 31));
        assert!(should_defer(41, 31), "a quarter and two above the peer");
        assert!(!should_defer(3, 7), "the less loaded worker never waits");
    }
}
