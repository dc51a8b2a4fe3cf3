//! Loading: defaults, then the TOML file, then `FORKD_*` variables, then the command line's
//! options; every error names where the value came from, the key and what is allowed.

use super::registry::*;
use super::suggest::suggestion;
use super::types::*;
use super::values::*;
use std::path::Path;
use toml::Value;

/// A command-line option that sets a config key, as given (the command line's parser
/// makes them: `cli::Cli::overrides`).
#[derive(Debug, Clone)]
pub struct Given {
    /// The option as the user knows it: `--workers`, `APP`, `-- COMMAND`.
    pub option: String,
    /// The config key it sets.
    pub key: &'static str,
    /// Its value: a string, or an array for a repeatable option.
    pub value: Value,
}

/// Where a value came from, for error messages.
pub(super) enum Origin<'a> {
    File {
        path: &'a std::path::Path,
        source: &'a str,
    },
    Env(&'a str),
    Flag(&'a str),
}

impl Origin<'_> {
    pub(super) fn error(&self, key: &str, problem: &str) -> ConfigError {
        let message = match self {
            Origin::File { path, source } => match line_of(source, key) {
                Some(line) => format!("{} line {line}: key `{key}`: {problem}", path.display()),
                None => format!("{}: key `{key}`: {problem}", path.display()),
            },
            Origin::Env(var) => format!("environment variable {var} (key `{key}`): {problem}"),
            Origin::Flag(option) => format!("option {option}: {problem}"),
        };
        ConfigError { message }
    }
}

/// Builds the effective config: defaults, then the file, then `FORKD_*` variables from
/// `env`, then the command line.
pub fn load(
    file: Option<&Path>,
    overrides: &[Given],
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut file_source = None;
    if let Some(path) = file {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("cannot read config file {}: {e}", path.display()),
        })?;
        if super::gunicorn::is_python_config(path) {
            let mapped = super::gunicorn::read(path)?;
            apply_table(
                &mut config,
                &Origin::File {
                    path,
                    source: &source,
                },
                mapped.table,
            )?;
            config.warnings = mapped.warnings;
        } else {
            apply_file(&mut config, path, &source)?;
        }
        file_source = Some((path, source));
        config.config_file =
            Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
    }
    // A variable that names no key is ignored here (Kubernetes puts service links in
    // forkd's prefix); `env_warnings` says what a typo was meant to be.
    for (var, value) in env.iter().filter(|(k, _)| k.starts_with("FORKD_")) {
        let Some(key) = key_for_env(var) else {
            continue;
        };
        set(
            &mut config,
            key,
            &Value::String(value.clone()),
            &Origin::Env(var),
        )?;
    }
    for given in overrides {
        let key = key(given.key).ok_or_else(|| ConfigError {
            message: format!("option {} sets no key", given.option),
        })?;
        set(&mut config, key, &given.value, &Origin::Flag(&given.option))?;
    }
    let origin = match &file_source {
        Some((path, source)) => Origin::File { path, source },
        None => Origin::Env("FORKD_* or the command line"),
    };
    serve_tls_where_no_bind_says(&mut config);
    check_tls(&config, &origin)?;
    check_preload(&config, &origin)?;
    Ok(config)
}

/// A certificate given (`tls.certfile`, Gunicorn's `--certfile`) and no bind served with
/// TLS: every bind is (`tls://HOST:PORT`, `tls+unix:`, `tls+fd://`), as Gunicorn serves
/// TLS on all its addresses, rather than plain HTTP with the certificate unused. With a
/// TLS bind among them, each bind is as it says (HTTPS and HTTP side by side).
fn serve_tls_where_no_bind_says(config: &mut Config) {
    if config.tls.certfile.is_none() || config.bind.iter().any(BindSpec::is_tls) {
        return;
    }
    config.bind = std::mem::take(&mut config.bind)
        .into_iter()
        .map(|bind| BindSpec::Tls(Box::new(bind)))
        .collect();
}

/// The checks across `bind` and `[tls]` (the files themselves: `crate::tls::load`).
pub(super) fn check_tls(config: &Config, origin: &Origin<'_>) -> Result<(), ConfigError> {
    let tls = &config.tls;
    let table_given = tls.certfile.is_some() || tls.keyfile.is_some() || tls.ca_certs.is_some();
    if let Some(spec) = config.bind.iter().find(|b| b.is_tls()) {
        if !table_given {
            return Err(origin.error(
                "bind",
                &format!("\"{spec}\" is served with TLS and needs a [tls] table with certfile and keyfile"),
            ));
        }
    }
    if table_given {
        if tls.certfile.is_none() {
            return Err(origin.error(
                "tls.certfile",
                "[tls] needs certfile (the PEM certificate chain)",
            ));
        }
        if tls.keyfile.is_none() {
            return Err(origin.error("tls.keyfile", "[tls] needs keyfile (the PEM private key)"));
        }
    }
    if tls.client_auth != ClientAuth::None && tls.ca_certs.is_none() {
        return Err(origin.error(
            "tls.client_auth",
            "client certificates are checked against tls.ca_certs, which is not set",
        ));
    }
    Ok(())
}

/// `preload_app` imports a Python app in a zygote: with exec workers or a built-in app
/// there is nothing to import (an embedded service: `app_resolver` says so).
pub(super) fn check_preload(config: &Config, origin: &Origin<'_>) -> Result<(), ConfigError> {
    if !config.preload_app {
        return Ok(());
    }
    let problem = if !config.exec.command.is_empty() {
        Some("exec workers run their own program: there is no app to preload (set preload_app = false, or preload in the program itself)".to_string())
    } else {
        match config.app.as_deref() {
            Some(app) if crate::hosted::is_python_app(app) => None,
            Some(app) => Some(format!(
                "{app:?} is a built-in app: preload_app is for Python apps (MODULE:ATTR)"
            )),
            // Named on the command line at start (`forkd -c FILE -s stop` reads the
            // file without it); no app at all is the resolver's error.
            None => None,
        }
    };
    match problem {
        Some(problem) => Err(origin.error("preload_app", &problem)),
        None => Ok(()),
    }
}

/// A warning about the config file's permissions, if someone other than root and the
/// user forkd runs as can change it: that someone chooses what forkd runs (`exec.command`,
/// `user`...) with forkd's privileges, root's at start. Checked at start and on HUP.
pub fn file_permission_warning(config: &Config) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = config.config_file.as_ref()?;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "config file {} has mode {mode:04o}: writable by {}, who can make forkd run any program with its privileges; `chmod go-w` it",
            path.display(),
            if mode & 0o002 != 0 { "everyone" } else { "its group" }
        ));
    }
    let us = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != us {
        return Some(format!(
            "config file {} (mode {mode:04o}) is owned by uid {}, neither root nor forkd's uid {us}: its owner can make forkd run any program with its privileges; `chown root` it",
            path.display(),
            meta.uid()
        ));
    }
    None
}

pub(super) fn apply_file(
    config: &mut Config,
    path: &std::path::Path,
    source: &str,
) -> Result<(), ConfigError> {
    let origin = Origin::File { path, source };
    let table: toml::Table = source.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|span| {
            source[..span.start.min(source.len())]
                .lines()
                .count()
                .max(1)
        });
        let what = e.message().to_string();
        ConfigError {
            message: match line {
                Some(line) => format!("{} line {line}: invalid TOML: {what}", path.display()),
                None => format!("{}: invalid TOML: {what}", path.display()),
            },
        }
    })?;
    apply_table(config, &origin, table)
}

/// Sets the keys of a file's table (TOML, or a Gunicorn config file's settings mapped
/// to forkd's keys); an unknown key is an error with the closest known one.
pub(super) fn apply_table(
    config: &mut Config,
    origin: &Origin<'_>,
    table: toml::Table,
) -> Result<(), ConfigError> {
    let tables = tables();
    for (name, value) in table {
        if let Some(key) = key(&name) {
            set(config, key, &value, origin)?;
        } else if tables.contains(&name.as_str()) {
            let Value::Table(inner) = value else {
                return Err(origin.error(&name, &format!("expected a table [{name}]")));
            };
            for (sub, value) in inner {
                let dotted = format!("{name}.{sub}");
                let Some(key) = key(&dotted) else {
                    let known = KEYS
                        .iter()
                        .filter(|k| k.table() == Some(name.as_str()))
                        .map(Key::short_name);
                    let hint = suggestion(&sub, known);
                    return Err(origin.error(&dotted, &format!("unknown key in [{name}]{hint}")));
                };
                set(config, key, &value, origin)?;
            }
        } else {
            let known = KEYS
                .iter()
                .filter(|k| !k.name.contains('.'))
                .map(|k| k.name)
                .chain(tables.iter().copied());
            let hint = suggestion(&name, known);
            return Err(origin.error(&name, &format!("unknown key{hint}")));
        }
    }
    Ok(())
}

/// Sets one key from a TOML value (a file) or a string (environment, command line);
/// the error names the key, where the value came from and what is allowed.
pub(super) fn set(
    config: &mut Config,
    key: &Key,
    value: &Value,
    origin: &Origin<'_>,
) -> Result<(), ConfigError> {
    (key.set)(config, value).map_err(|problem| match problem {
        Problem::Expected => origin.error(
            key.name,
            &format!("expected {}, got {}", key.allowed, show(value)),
        ),
        Problem::Invalid(why) => {
            origin.error(key.name, &format!("{why}; allowed: {}", key.allowed))
        }
        Problem::Said(entry, message) => {
            origin.error(entry.as_deref().unwrap_or(key.name), &message)
        }
    })
}

/// The line (1-based) where `key` (dotted for tables) is set in a TOML source.
pub(super) fn line_of(source: &str, key: &str) -> Option<usize> {
    let (table, name) = match key.split_once('.') {
        Some((table, name)) => (Some(table), name),
        None => (None, key),
    };
    let mut current: Option<String> = None;
    for (index, line) in source.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            current = Some(header.trim_end_matches([']', ' ']).trim().to_string());
            if table.is_none() && current.as_deref() == Some(name) {
                return Some(index + 1);
            }
            continue;
        }
        let Some((lhs, _)) = trimmed.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().trim_matches('"');
        if current.as_deref() == table && lhs == name {
            return Some(index + 1);
        }
        if current.is_none() && table.is_some() && lhs == key {
            return Some(index + 1);
        }
    }
    None
}
