//! The directory a generation's workers run in: `chdir` resolved (symlinks followed)
//! when the generation is built, at start, at every HUP and in a USR2's new master.
//! With `chdir = "/srv/app/current"` and `current -> releases/N`, a HUP after the link
//! moves serves releases/N+1, and every worker of a generation (recycled ones too)
//! runs in the directory its generation resolved, whatever the link says by then.
//!
//! The master itself stays where it went at start, so that the relative paths it
//! resolved then (pidfile, unix sockets, log files) keep their meaning.

use crate::config::Config;
use std::path::{Path, PathBuf};

/// `chdir`, absolute and with every symlink followed; `None` without `chdir`.
pub fn resolve(config: &Config) -> Result<Option<PathBuf>, String> {
    let Some(dir) = crate::shared::privileges::chdir_path(config) else {
        return Ok(None);
    };
    std::fs::canonicalize(&dir)
        .map(Some)
        .map_err(|e| format!("key `chdir`: cannot resolve {}: {e}", dir.display()))
}

/// In a new worker, after the fork: into its generation's directory.
pub fn enter(dir: Option<&Path>) -> Result<(), String> {
    match dir {
        Some(dir) => {
            std::env::set_current_dir(dir).map_err(|e| format!("chdir to {}: {e}", dir.display()))
        }
        None => Ok(()),
    }
}

/// A relative program path of `exec.command` (one with a `/`), found from the
/// generation's directory rather than through a symlink that may have moved since.
pub fn program_path(dir: Option<&Path>, program: &str, resolved: &Path) -> PathBuf {
    match dir {
        Some(dir) if program.contains('/') && !program.starts_with('/') => dir.join(program),
        _ => resolved.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("forkd-workdir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_release_symlink_resolves_to_where_it_points_now() {
        let root = temp("link");
        std::fs::create_dir_all(root.join("r1")).unwrap();
        std::fs::create_dir_all(root.join("r2")).unwrap();
        std::os::unix::fs::symlink("r1", root.join("current")).unwrap();
        let config = Config {
            chdir: Some(root.join("current")),
            ..Config::default()
        };
        let root = std::fs::canonicalize(&root).unwrap();
        assert_eq!(resolve(&config).unwrap(), Some(root.join("r1")));
        std::fs::remove_file(root.join("current")).unwrap();
        std::os::unix::fs::symlink("r2", root.join("current")).unwrap();
        assert_eq!(resolve(&config).unwrap(), Some(root.join("r2")));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn no_chdir_is_none_and_a_missing_one_is_an_error_naming_the_key() {
        assert_eq!(resolve(&Config::default()).unwrap(), None);
        let config = Config {
            chdir: Some("/nonexistent/forkd-release".into()),
            ..Config::default()
        };
        let e = resolve(&config).unwrap_err();
        assert!(
            e.contains("`chdir`") && e.contains("/nonexistent/forkd-release"),
            "{e}"
        );
    }

    #[test]
    fn only_a_relative_program_path_is_taken_from_the_generation_dir() {
        let dir = Path::new("/srv/releases/7");
        let found = Path::new("/srv/current/bin/app");
        assert_eq!(
            program_path(Some(dir), "bin/app", found),
            dir.join("bin/app")
        );
        assert_eq!(
            program_path(Some(dir), "/usr/bin/app", Path::new("/usr/bin/app")),
            Path::new("/usr/bin/app")
        );
        assert_eq!(
            program_path(Some(dir), "uvicorn", Path::new("/usr/bin/uvicorn")),
            Path::new("/usr/bin/uvicorn")
        );
        assert_eq!(program_path(None, "bin/app", found), found);
    }
}
