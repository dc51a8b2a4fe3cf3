//! One generation: everything a HUP changes, as one value. The configuration, what the
//! workers run, the loaded `[tls]`, the listeners and the metrics listener bound for
//! it, and how many workers are wanted. Workers are forked from the current
//! generation; a HUP builds the next one whole (every socket bound, every file loaded)
//! before anything changes, and a reload whose workers cannot boot puts the previous
//! one back whole. The log configuration is the config's `[log]`, applied when a
//! generation becomes current.
//!
//! Sockets the next generation keeps are shared with the previous one (a duplicate of
//! the same socket, so either can be put back); a socket file belongs to one generation
//! at a time and moves to the one that survives ([`Generation::retire`]).

use crate::config::{BindSpec, Config};
use crate::shared::listeners::{self, Listener, SocketFile};
use std::fmt;
use std::io;
use std::sync::Arc;

/// What a worker runs.
#[derive(Clone)]
pub enum Program {
    /// A hyper server around an app, in the forked process.
    Native(crate::app::AppFactory),
    /// A program exec'd after the fork, given the listeners (exec workers).
    Exec(std::sync::Arc<super::exec::ExecProgram>),
    /// A hyper server around an app of the host's runtime (a Python ASGI app), whose
    /// event loop owns the worker's main thread.
    Hosted(crate::hosted::HostedProgram),
}

/// A configuration generation and everything bound or loaded for it.
pub(super) struct Generation {
    /// 1, then +1 per HUP that succeeds (a rollback returns to the previous number).
    pub number: u64,
    /// Its configuration.
    pub config: Arc<Config>,
    /// What its workers run.
    pub program: Program,
    /// Its `[tls]`, loaded and checked here and inherited by its workers.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Its listeners, inherited by every worker forked from it.
    pub listeners: Vec<Listener>,
    /// Its `[metrics]` listener, served by its workers.
    pub metrics: Option<Listener>,
    /// How many active workers are wanted (config, then TTIN/TTOU, WINCH).
    pub target: usize,
    /// `chdir` as resolved for it (see [`super::workdir`]): where its workers run.
    pub workdir: Option<std::path::PathBuf>,
    /// `preload_app`: the zygote its workers fork from (see [`super::zygote`]); killed
    /// when the generation is dropped.
    pub zygote: Option<super::zygote_state::Zygote>,
}

/// Why a HUP could not build the next generation: nothing changed.
#[derive(Debug)]
pub enum ReloadError {
    /// The configuration could not be read or is invalid.
    Config(crate::config::ConfigError),
    /// The app the configuration names cannot be resolved.
    App(String),
    /// A `[tls]` file is missing, unparsable or does not match.
    Tls(String),
    /// A `bind` address cannot be bound.
    Bind {
        /// Why (it names the address).
        source: io::Error,
    },
    /// A socket the next generation keeps cannot be shared with it (dup failed).
    Share {
        /// What it is bound to.
        local: String,
        /// Why.
        source: io::Error,
    },
    /// The `[metrics]` listener cannot be bound.
    Metrics(String),
    /// `chdir` cannot be resolved (a release symlink pointing nowhere).
    Chdir(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::App(e)
            | ReloadError::Tls(e)
            | ReloadError::Metrics(e)
            | ReloadError::Chdir(e) => {
                write!(f, "{e}")
            }
            ReloadError::Bind { source } => write!(f, "key `bind`: {source}"),
            ReloadError::Share { local, source } => {
                write!(f, "cannot keep the socket on {local}: {source}")
            }
        }
    }
}

impl std::error::Error for ReloadError {}

impl Generation {
    /// The first generation, from what start-up bound and loaded.
    pub fn first(
        config: Config,
        program: Program,
        tls: Option<Arc<rustls::ServerConfig>>,
        listeners: Vec<Listener>,
        metrics: Option<Listener>,
    ) -> Generation {
        Generation {
            number: 1,
            target: config.worker_count(),
            config: Arc::new(config),
            program,
            tls,
            listeners,
            metrics,
            workdir: None,
            zygote: None,
        }
    }

    /// The generation after this one, for `config`: its sockets are this one's where
    /// the addresses match (shared), else bound now. `keep_passed`: serving the sockets
    /// systemd passed, and `config` names none, so it keeps them all. An error leaves
    /// nothing bound.
    pub fn next(
        &self,
        config: Config,
        program: Program,
        tls: Option<Arc<rustls::ServerConfig>>,
        keep_passed: bool,
    ) -> Result<Generation, ReloadError> {
        let listeners = if keep_passed && !config.bind_given {
            self.listeners
                .iter()
                .map(|l| share(l, l.spec.clone()))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            self.bind_for(&config)?
        };
        let metrics = match self.metrics_for(&config) {
            Ok(metrics) => metrics,
            Err(e) => {
                release_all(listeners);
                return Err(e);
            }
        };
        Ok(Generation {
            number: self.number + 1,
            target: config.worker_count(),
            config: Arc::new(config),
            program,
            tls,
            listeners,
            metrics,
            workdir: None,
            zygote: None,
        })
    }

    /// `config`'s listeners: this generation's socket for an address it has (also when
    /// the entry changes between plain and TLS: the new generation's workers serve it
    /// as the entry now says), a fresh bind for a new one.
    fn bind_for(&self, config: &Config) -> Result<Vec<Listener>, ReloadError> {
        let mut next = Vec::new();
        for spec in &config.bind {
            let found = self
                .listeners
                .iter()
                .find(|l| l.spec.plain() == spec.plain());
            let made = match found {
                Some(listener) => share(listener, spec.clone()),
                None => listeners::bind(spec, config.backlog)
                    .inspect(|l| tracing::info!("listening on {}", l.local))
                    .map_err(|source| ReloadError::Bind { source }),
            };
            match made {
                Ok(listener) => next.push(listener),
                Err(e) => {
                    release_all(next);
                    return Err(e);
                }
            }
        }
        Ok(next)
    }

    /// `config`'s metrics listener: this generation's when `metrics.bind` is unchanged,
    /// else a fresh bind (or none).
    fn metrics_for(&self, config: &Config) -> Result<Option<Listener>, ReloadError> {
        match (&self.metrics, &config.metrics.bind) {
            (Some(listener), Some(spec)) if &listener.spec == spec => {
                share(listener, spec.clone()).map(Some)
            }
            (None, None) => Ok(None),
            _ => crate::metrics::listen(config, None).map_err(ReloadError::Metrics),
        }
    }

    /// Gives up this generation in favour of `survivor` (the next one once it is
    /// committed, or the previous one on a rollback): the socket files of the sockets
    /// both have move to `survivor`; the sockets only this one has are closed (their
    /// files removed). Running workers keep their own copies until they exit.
    pub fn retire(self, survivor: &mut Generation) {
        for mut listener in self.listeners {
            match survivor
                .listeners
                .iter_mut()
                .find(|l| l.spec.plain() == listener.spec.plain())
            {
                Some(kept) => adopt_socket_file(kept, &mut listener),
                None => {
                    tracing::info!("no longer listening on {}", listener.local);
                    listener.cleanup();
                }
            }
        }
        if let Some(mut listener) = self.metrics {
            match survivor
                .metrics
                .as_mut()
                .filter(|m| m.spec == listener.spec)
            {
                Some(kept) => adopt_socket_file(kept, &mut listener),
                None => {
                    tracing::info!("metrics: no longer serving on {}", listener.local);
                    listener.cleanup();
                }
            }
        }
    }

    /// Every listener of this generation, the metrics one included.
    pub fn all_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter().chain(self.metrics.iter())
    }

    /// At the stop: closes this process's fds of every listener (the metrics one
    /// included) and returns their socket files, which are removed at exit. A socket
    /// refuses new connections once no process holds it: the workers close their own
    /// copies as their drain begins. A socket another process also holds (the new
    /// master after USR2, systemd under socket activation) stays open there.
    pub fn close_listeners(&mut self) -> Vec<SocketFile> {
        let metrics = self.metrics.take();
        std::mem::take(&mut self.listeners)
            .into_iter()
            .chain(metrics)
            .filter_map(|mut listener| listener.socket_file.take())
            .collect()
    }
}

/// A second handle on `listener`'s socket (same socket, own fd), serving `spec`; the
/// socket file stays with `listener`.
fn share(listener: &Listener, spec: BindSpec) -> Result<Listener, ReloadError> {
    let fd = listener
        .fd
        .try_clone()
        .map_err(|source| ReloadError::Share {
            local: listener.local.clone(),
            source,
        })?;
    Ok(Listener {
        spec,
        local: listener.local.clone(),
        kind: listener.kind.clone(),
        fd,
        socket_file: None,
    })
}

/// Moves `from`'s socket file to `to` (the same socket) unless `to` has one.
fn adopt_socket_file(to: &mut Listener, from: &mut Listener) {
    if to.socket_file.is_none() {
        to.socket_file = from.socket_file.take();
    }
}

/// Closes listeners bound for a generation that is not made after all (their socket
/// files, if they made any, removed).
fn release_all(listeners: Vec<Listener>) {
    for listener in listeners {
        listener.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("forkd-gen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(binds: &[BindSpec]) -> Config {
        Config {
            bind: binds.to_vec(),
            bind_given: true,
            ..Config::default()
        }
    }

    fn program() -> Program {
        Program::Native(crate::apps::builtin("hello").unwrap())
    }

    fn first(binds: &[BindSpec]) -> Generation {
        let config = config(binds);
        let listeners = binds
            .iter()
            .map(|spec| listeners::bind(spec, 16).unwrap())
            .collect();
        Generation::first(config, program(), None, listeners, None)
    }

    fn is_open(fd: i32) -> bool {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
    }

    #[test]
    fn closing_the_listeners_closes_every_fd_and_keeps_the_socket_files() {
        let dir = dir("close");
        let path = dir.join("a.sock");
        let mut generation = first(&[BindSpec::Unix(path.clone())]);
        let fd = generation.listeners[0].fd.as_raw_fd();
        let files = generation.close_listeners();
        assert!(generation.listeners.is_empty());
        assert!(!is_open(fd));
        assert_eq!(files.len(), 1);
        let refused = std::os::unix::net::UnixStream::connect(&path).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert!(path.exists(), "the socket file is removed at exit, not now");
        files[0].remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_failed_generation_retired_into_the_previous_one_leaves_it_whole() {
        let dir = dir("rollback");
        let kept = BindSpec::Unix(dir.join("kept.sock"));
        let dropped = BindSpec::Unix(dir.join("dropped.sock"));
        let added = BindSpec::Unix(dir.join("added.sock"));
        let mut previous = first(&[kept.clone(), dropped.clone()]);
        let next = previous
            .next(
                config(&[kept.clone(), added.clone()]),
                program(),
                None,
                false,
            )
            .unwrap();
        assert_eq!(next.number, 2);
        // The kept socket is the same socket under another fd, its file still the
        // previous generation's; the dropped one is untouched until the new one is
        // committed.
        assert_eq!(next.listeners[0].local, previous.listeners[0].local);
        assert!(next.listeners[0].socket_file.is_none());
        assert!(dir.join("dropped.sock").exists() && dir.join("added.sock").exists());
        let added_fd = next.listeners[1].fd.as_raw_fd();
        next.retire(&mut previous);
        // Rolled back: every socket of the previous generation is still there, with its
        // file; the one only the failed generation had is gone.
        assert_eq!(previous.listeners.len(), 2);
        assert!(previous.listeners.iter().all(|l| l.socket_file.is_some()));
        assert!(dir.join("kept.sock").exists() && dir.join("dropped.sock").exists());
        assert!(!dir.join("added.sock").exists());
        assert!(!is_open(added_fd));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_committed_generation_takes_the_socket_files_and_the_rest_is_released() {
        let dir = dir("commit");
        let kept = BindSpec::Unix(dir.join("kept.sock"));
        let dropped = BindSpec::Unix(dir.join("dropped.sock"));
        let previous = first(&[kept.clone(), dropped.clone()]);
        let dropped_fd = previous.listeners[1].fd.as_raw_fd();
        let mut next = previous
            .next(config(std::slice::from_ref(&kept)), program(), None, false)
            .unwrap();
        previous.retire(&mut next);
        assert!(next.listeners[0].socket_file.is_some());
        assert!(dir.join("kept.sock").exists());
        assert!(!dir.join("dropped.sock").exists());
        assert!(!is_open(dropped_fd));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bind_that_fails_leaves_nothing_bound() {
        let dir = dir("fails");
        let previous = first(&[BindSpec::Unix(dir.join("a.sock"))]);
        let new = BindSpec::Unix(dir.join("new.sock"));
        let missing = BindSpec::Unix(dir.join("no/such/dir.sock"));
        let result = previous.next(config(&[new, missing]), program(), None, false);
        assert!(
            matches!(result, Err(ReloadError::Bind { .. })),
            "{:?}",
            result.err()
        );
        assert!(!dir.join("new.sock").exists());
        assert!(dir.join("a.sock").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
