//! forkd's integration tests as one test binary (one link instead of one per file): each
//! module drives the real forkd binary over real sockets with real signals, through the
//! shared harness. The end-to-end tests under a booted systemd (tests/systemd_e2e.rs)
//! stay a binary of their own, which .config/nextest.toml runs alone.
//!
//! nextest (scripts/test.sh) runs every test in a process of its own; plain `cargo test`
//! runs them as threads of one process, which the tests allow: none changes the test
//! process's environment, limits, signal dispositions or working directory, and each
//! temporary directory is named after its test.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod nspawn;

mod balance;
mod containers;
mod core;
mod embedding;
mod exec_workers;
mod framing;
mod h2_drain;
mod h2_floods;
mod http_hardening;
mod operations;
mod os_faults;
mod panics;
mod preload;
mod privileges;
mod python;
mod reload_watch;
mod slow_readers;
mod socket_activation;
mod stop_and_status;
mod systemd_notify;
mod systemd_units;
mod tls;
mod untrusted;
mod wsgi;
mod zero_downtime;
