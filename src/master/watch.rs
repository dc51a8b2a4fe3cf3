//! `reload = true` (`--reload`, development): a HUP when the app's files change.
//!
//! The watching runs in a small child process of the master, not in the master: the
//! `notify` crate's inotify backend always runs its own thread, and the master must
//! stay single-threaded (it forks workers). The child is forked before any worker,
//! closes every fd but stdio (it holds no listener), dies with the master
//! (`PR_SET_PDEATHSIG`), and sends the master SIGHUP once the files have been quiet for
//! [`DEBOUNCE`] after a change: a burst of saves is one reload. The master reaps it
//! like any unknown child. The directories watched are fixed when the master starts.

use super::generation::Program;
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Quiet time after the last change before the HUP.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What to watch: directories (recursively) and which changed paths count.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Directories watched with all their subdirectories.
    pub roots: Vec<PathBuf>,
    /// Any `.py` file counts (a Python app).
    pub python: bool,
    /// Absolute globs (`reload_extra_files`) a changed path may match.
    pub globs: Vec<String>,
}

/// `reload` where it makes no sense is a config error: exec workers are other
/// programs (forkd cannot know their files), and under systemd (`NOTIFY_SOCKET`) the
/// service manager deploys and reloads.
pub fn refusal(exec_workers: bool, notify_socket: bool) -> Result<(), String> {
    if exec_workers {
        return Err(
            "key `reload`: not with exec workers (forkd does not know which files \
                    their program loads); restart them with HUP (`forkd -s reload`)"
                .to_string(),
        );
    }
    if notify_socket {
        return Err(
            "key `reload`: not under systemd (NOTIFY_SOCKET is set): it is for \
                    development; a service reloads with `systemctl reload` (HUP)"
                .to_string(),
        );
    }
    Ok(())
}

/// The spec for `config` whose workers run in `dir`: for a Python app `dir` and each
/// `python.path` entry (relative to `dir`); for each glob its directory part.
pub fn spec(config: &Config, python: bool, dir: &Path) -> Spec {
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut add = |root: PathBuf| {
        if !roots.iter().any(|r| root.starts_with(r)) {
            roots.retain(|r| !r.starts_with(&root));
            roots.push(root);
        }
    };
    if python {
        add(dir.to_path_buf());
        for entry in &config.python.path {
            add(normalize(&dir.join(entry)));
        }
    }
    let globs: Vec<String> = config
        .reload_extra_files
        .iter()
        .map(|g| normalize(&dir.join(g)).to_string_lossy().into_owned())
        .collect();
    for glob in &globs {
        add(glob_base(glob));
    }
    Spec {
        roots,
        python,
        globs,
    }
}

/// `a/./b/../c` as `a/c` (without touching the file system).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The directory part of a glob before its first wildcard.
fn glob_base(glob: &str) -> PathBuf {
    let mut base = PathBuf::new();
    let parts: Vec<&str> = glob.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.contains(['*', '?', '[']) || i == parts.len() - 1 {
            break;
        }
        base.push(if part.is_empty() { "/" } else { part });
    }
    base
}

/// Whether a change of `path` makes a reload.
pub fn counts(spec: &Spec, path: &Path) -> bool {
    let text = path.to_string_lossy();
    let python = spec.python
        && path.extension().is_some_and(|e| e == "py")
        && !path.components().any(|c| c.as_os_str() == "__pycache__")
        && spec.roots.iter().any(|r| path.starts_with(r));
    python || spec.globs.iter().any(|g| glob_match(g, &text))
}

/// Shell-style matching of `/`-separated paths: `*` and `?` within one component,
/// `**` as a whole component for any number of them.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    match_parts(&pattern, &path)
}

fn match_parts(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_parts(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((name, tail)) => {
                match_component(first.as_bytes(), name.as_bytes()) && match_parts(rest, tail)
            }
            None => false,
        },
    }
}

fn match_component(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| match_component(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && match_component(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && match_component(rest, &name[1..]),
    }
}

/// Forks the watcher child for `program` (nothing to do when `reload` is off); the
/// master has checked [`refusal`] already.
pub fn start(config: &Config, program: &Program, dir: &Path, master: i32) -> Result<(), String> {
    if !config.reload {
        return Ok(());
    }
    let spec = spec(config, matches!(program, Program::Hosted(_)), dir);
    if spec.roots.is_empty() {
        return Err(
            "key `reload`: nothing to watch: a built-in app has no files; name some \
                    with `reload_extra_files`"
                .to_string(),
        );
    }
    let roots: Vec<String> = spec.roots.iter().map(|r| r.display().to_string()).collect();
    tracing::info!(
        "reload: watching {} (a change reloads, as HUP)",
        roots.join(", ")
    );
    // SAFETY: the master is single-threaded (checked in debug builds); the child only
    // closes fds and then runs the watcher, and never forks.
    #[allow(unsafe_code)]
    match unsafe { crate::shared::single_threaded::fork() } {
        Ok(nix::unistd::ForkResult::Child) => run_child(&spec, master),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            tracing::debug!(pid = child.as_raw(), "reload watcher started");
            Ok(())
        }
        Err(e) => Err(format!("reload: cannot start the file watcher: {e}")),
    }
}

/// The watcher child: never returns.
#[allow(unsafe_code)] // _exit
fn run_child(spec: &Spec, master: i32) -> ! {
    super::signals::restore_in_child();
    super::child::close_fds_from(3);
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() == master {
        if let Err(e) = watch(spec, master) {
            // Straight to stderr: the master's log queue is not this process's.
            let line = format!("forkd: reload: the file watcher stopped: {e}\n");
            let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
        }
    }
    // SAFETY: leaving the forked child without running the master's destructors.
    unsafe { libc::_exit(0) }
}

fn watch(spec: &Spec, master: i32) -> Result<(), String> {
    use notify::Watcher;
    let (send, events) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(send).map_err(|e| e.to_string())?;
    for root in &spec.roots {
        watcher
            .watch(root, notify::RecursiveMode::Recursive)
            .map_err(|e| format!("{}: {e}", root.display()))?;
    }
    let relevant = |event: notify::Result<notify::Event>| -> bool {
        event.is_ok_and(|e| {
            !matches!(e.kind, notify::EventKind::Access(_))
                && e.paths.iter().any(|p| counts(spec, p))
        })
    };
    loop {
        let event = events.recv().map_err(|e| e.to_string())?;
        if !relevant(event) {
            continue;
        }
        // Debounce: wait until nothing has changed for DEBOUNCE.
        loop {
            match events.recv_timeout(DEBOUNCE) {
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        let master = nix::unistd::Pid::from_raw(master);
        nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGHUP)
            .map_err(|e| format!("cannot signal the master: {e}"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_a_component_and_across_them_with_double_star() {
        assert!(glob_match("/a/*.html", "/a/index.html"));
        assert!(!glob_match("/a/*.html", "/a/b/index.html"));
        assert!(glob_match("/a/**/*.html", "/a/index.html"));
        assert!(glob_match("/a/**/*.html", "/a/b/c/index.html"));
        assert!(glob_match("/a/settings.tom?", "/a/settings.toml"));
        assert!(!glob_match("/a/settings.tom?", "/a/settings.tom"));
        assert!(!glob_match("/a/*.html", "/a/index.htm"));
        assert!(glob_match("/a/**", "/a/x/y"));
    }

    #[test]
    fn malformed_or_odd_globs_never_panic_and_match_only_literally() {
        for pattern in ["", "*", "**", "***", "/", "//", "[", "a/**/**/b", "?*?*"] {
            for path in ["", "/", "a", "/a/b", "a//b", "ééé/*"] {
                let _ = glob_match(pattern, path);
            }
        }
        assert!(glob_match("[", "["));
        assert!(glob_match("a/**/**/b", "a/b"));
    }

    #[test]
    fn a_glob_is_watched_from_its_directory_part() {
        assert_eq!(
            glob_base("/srv/app/templates/**/*.html"),
            Path::new("/srv/app/templates")
        );
        assert_eq!(glob_base("/srv/app/settings.toml"), Path::new("/srv/app"));
        assert_eq!(glob_base("/srv/*/x"), Path::new("/srv"));
    }

    #[test]
    fn a_python_app_watches_its_dir_and_path_and_counts_py_files_only() {
        let config = Config {
            reload_extra_files: vec!["conf/*.toml".to_string()],
            python: crate::config::Python {
                path: vec![".".to_string(), "../lib".to_string()],
                ..Config::default().python
            },
            ..Config::default()
        };
        let spec = spec(&config, true, Path::new("/srv/app"));
        assert_eq!(
            spec.roots,
            vec![PathBuf::from("/srv/app"), PathBuf::from("/srv/lib")]
        );
        assert!(counts(&spec, Path::new("/srv/app/main.py")));
        assert!(counts(&spec, Path::new("/srv/lib/pkg/mod.py")));
        assert!(!counts(
            &spec,
            Path::new("/srv/app/__pycache__/main.cpython-311.pyc")
        ));
        assert!(!counts(&spec, Path::new("/srv/app/__pycache__/x.py")));
        assert!(!counts(&spec, Path::new("/srv/app/README.md")));
        assert!(!counts(&spec, Path::new("/elsewhere/main.py")));
        assert!(counts(&spec, Path::new("/srv/app/conf/settings.toml")));
        // A built-in app: only the globs.
        let native = super::spec(&config, false, Path::new("/srv/app"));
        assert_eq!(native.roots, vec![PathBuf::from("/srv/app/conf")]);
        assert!(!counts(&native, Path::new("/srv/app/main.py")));
    }

    #[test]
    fn reload_is_refused_with_exec_workers_and_under_systemd() {
        assert!(refusal(false, false).is_ok());
        assert!(refusal(true, false).unwrap_err().contains("exec workers"));
        assert!(refusal(false, true).unwrap_err().contains("NOTIFY_SOCKET"));
    }
}
