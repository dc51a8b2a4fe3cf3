//! forkd: a pre-fork process manager for HTTP services. A single-threaded master binds
//! the listeners and supervises worker processes, each running its own tokio runtime
//! and hyper server around an app: a built-in one (`hello`, `echo`) or your own.
//!
//! Embedding your own service: build it in each worker after the fork, and let forkd
//! provide the command line, config, signals and supervision. Any tower service whose
//! response body is an `http_body::Body` of `Bytes` (an `axum::Router` as it is):
//!
//! ```no_run
//! use axum::{extract::State, routing::get, Router};
//!
//! #[derive(Clone)]
//! struct AppState {
//!     greeting: &'static str,
//! }
//!
//! async fn index(State(state): State<AppState>) -> &'static str {
//!     state.greeting
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     forkd::run_service(|| async {
//!         // Built in each worker, after the fork: connect pools here.
//!         let state = AppState { greeting: "hello\n" };
//!         Ok(Router::new().route("/", get(index)).with_state(state))
//!     })
//! }
//! ```
//!
//! (`examples/axum.rs` is the whole program.) Or forkd's own [`app::App`] trait, which
//! a plain `async` function implements:
//!
//! ```no_run
//! use forkd::app::{respond, Request, Response};
//!
//! fn main() -> std::process::ExitCode {
//!     forkd::run(forkd::app::factory(|| async {
//!         Ok(|_req: Request| async { respond(200, "text/plain", "hi\n") })
//!     }))
//! }
//! ```

// `unsafe` only where a module needs it (marked `#[allow(unsafe_code)]` below, and on
// the few functions of `master` and `worker` that fork, signal or prctl); every block
// says why it is sound (clippy's `undocumented_unsafe_blocks`).
#![deny(unsafe_code)]

pub mod app;
pub mod apps;
pub mod cli;
pub mod config;
#[allow(unsafe_code)] // a signal set with a realtime signal
pub mod control;
pub mod hosted;
pub(crate) mod master;
mod metrics;
pub mod reference;
pub mod shared;
mod tls;
mod worker;

pub use worker::serve;

use app::AppFactory;
use std::process::ExitCode;

use shared::protocol::{EXIT_FAILURE, EXIT_NO_WORKER, EXIT_OK, EXIT_USAGE};

/// Runs forkd with your own app (see the crate docs): the same command line, config,
/// signals and supervision as the `forkd` binary.
pub fn run(app: AppFactory) -> ExitCode {
    main_with(Some(app))
}

/// Runs forkd with a tower service (an `axum::Router` as it is), built by `make` in
/// each worker after the fork: `run(app::service_factory(make))`.
pub fn run_service<F, Fut, S>(make: F) -> ExitCode
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<S, app::BoxError>> + Send + 'static,
    S: app::TowerService,
{
    run(app::service_factory(make))
}

/// The `forkd` binary's entry point; `embedded` is None for the built-in apps.
pub fn main_with(embedded: Option<AppFactory>) -> ExitCode {
    ExitCode::from(run_main(
        std::env::args_os().collect(),
        embedded,
        hosted::Host::default(),
    ))
}

/// The entry point for a host embedding forkd in another runtime (the Python package):
/// `args` is the command line (program name first), `host` its hooks.
/// Returns the exit code.
pub fn main_with_host(args: Vec<std::ffi::OsString>, host: hosted::Host) -> u8 {
    run_main(args, None, host)
}

fn run_main(args: Vec<std::ffi::OsString>, embedded: Option<AppFactory>, host: hosted::Host) -> u8 {
    // Resolved now, before anything renames the process or replaces the binary on disk:
    // USR2 re-executes this path with these arguments.
    let relaunch = match host.relaunch.clone() {
        Some((exe, args)) => master::upgrade::Relaunch {
            exe,
            args,
            cwd: std::env::current_dir().ok(),
        },
        None => master::upgrade::Relaunch {
            exe: std::env::current_exe()
                .unwrap_or_else(|_| std::path::PathBuf::from("/proc/self/exe")),
            args: args.clone(),
            cwd: std::env::current_dir().ok(),
        },
    };
    if let Some(python) = host.python.clone() {
        config::gunicorn::set_interpreter(python);
    }
    let mut cli = match cli::Cli::parse_args(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    // HUP re-reads the file after `chdir` may have moved the master elsewhere.
    if let Some(path) = cli.config.take() {
        cli.config = Some(std::path::absolute(&path).unwrap_or(path));
    }
    let environment: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("FORKD_"))
        .collect();
    let config = match config::load(cli.config.as_deref(), cli.overrides(), &environment) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    // Unknown `FORKD_*` variables: warned about, once (the environment stays as it is
    // across HUPs); Kubernetes service links are not among them.
    let env_warnings = config::env_warnings(&environment);
    let fork_hooks = host.fork;
    let resolve = app_resolver(embedded, host.loader, host.preload);
    if cli.check_config || cli.print_config || cli.signal.is_some() {
        for warning in env_warnings
            .iter()
            .chain(&config.warnings)
            .chain(&cli.warnings)
        {
            eprintln!("forkd: warning: {warning}");
        }
    }
    if cli.check_config || cli.print_config {
        if let Err(e) = resolve(&config) {
            eprintln!("forkd: config error: {e}");
            return EXIT_USAGE;
        }
        if cli.check_config {
            // The files too: a bad key is found now, not at the next start or HUP.
            match tls::load(&config) {
                Ok(loaded) => {
                    for warning in loaded.map(|l| l.warnings).unwrap_or_default() {
                        eprintln!("forkd: warning: {warning}");
                    }
                }
                Err(e) => {
                    eprintln!("forkd: config error: {e}");
                    return EXIT_USAGE;
                }
            }
        }
        if cli.print_config {
            print!("{}", config.to_toml());
        }
        return 0;
    }
    if let Some(name) = &cli.signal {
        // A reload is checked here first, as `nginx -t` before `nginx -s reload`: an
        // invalid file is refused with its error, and the master is not touched.
        // (Only what the file itself names: the master keeps the APP or `-- COMMAND`
        // it was started with.)
        let names_workers = config.app.is_some() || !config.exec.command.is_empty();
        if name == "reload" && names_workers {
            if let Err(e) = resolve(&config) {
                eprintln!("forkd: config error: {e}");
                return EXIT_USAGE;
            }
        }
        if name == "reload" {
            if let Err(e) = tls::load(&config) {
                eprintln!("forkd: config error: {e}");
                return EXIT_USAGE;
            }
        }
        return control::send_signal(&config, name);
    }
    if let Err(e) = resolve(&config) {
        // A command that cannot be executed means no worker can boot (exit 3), said
        // once and clearly rather than as a crash loop.
        if !config.exec.command.is_empty() {
            eprintln!("forkd: no worker could boot: {e}");
            return EXIT_NO_WORKER;
        }
        eprintln!("forkd: config error: {e}");
        return EXIT_USAGE;
    }
    let tls = match tls::load(&config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("forkd: config error: {e}");
            return EXIT_USAGE;
        }
    };
    if let Err(e) = shared::logging::init(&config.log) {
        eprintln!("forkd: {e}");
        return EXIT_FAILURE;
    }
    let tls = tls.map(|loaded| {
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        loaded.server
    });
    for warning in env_warnings
        .iter()
        .chain(&config.warnings)
        .chain(&cli.warnings)
    {
        tracing::warn!("{warning}");
    }
    if let Some(warning) = config::file_permission_warning(&config) {
        tracing::warn!("{warning}");
    }
    let reload: master::Reloader = Box::new(move || {
        let config = config::load(cli.config.as_deref(), cli.overrides(), &environment)?;
        for warning in &config.warnings {
            tracing::warn!("HUP: {warning}");
        }
        if let Some(warning) = config::file_permission_warning(&config) {
            tracing::warn!("{warning}");
        }
        Ok(config)
    });
    match master::Master::new(config, tls, reload, resolve, relaunch, fork_hooks) {
        Ok(master) => master.run(),
        Err(e) => {
            tracing::error!("cannot start: {e}");
            shared::logging::flush();
            EXIT_FAILURE
        }
    }
}

/// Picks what workers run for a config: an exec command if one is given, else the
/// embedded app if this is a library build, else a Python app (`MODULE:ATTR`) or a
/// built-in app by name.
fn app_resolver(
    embedded: Option<AppFactory>,
    loader: Option<hosted::HostedLoader>,
    preload: Option<hosted::HostedPreloader>,
) -> master::AppResolver {
    Box::new(move |config: &config::Config| {
        if !config.exec.command.is_empty() {
            metrics::check_exec(config)?;
            tls::check_exec(config)?;
            let program = master::exec::ExecProgram::resolve(config)?;
            return Ok(master::Program::Exec(std::sync::Arc::new(program)));
        }
        if let Some(factory) = &embedded {
            if config.preload_app {
                return Err("key `preload_app`: this program serves its own (Rust) service, built in each worker; preload_app is for Python apps (MODULE:ATTR)".into());
            }
            return Ok(master::Program::Native(factory.clone()));
        }
        // Gunicorn's rule: `MODULE` alone is `MODULE:application` (`forkd myproject.wsgi`
        // for Django), with the Python package, for a name that is no built-in app.
        let default_attr = config
            .app
            .as_deref()
            .filter(|name| loader.is_some() && apps::builtin(name).is_none())
            .and_then(|name| hosted::module_alone(name, &python_dirs(config)));
        match default_attr.as_deref().or(config.app.as_deref()) {
            Some(spec) if hosted::is_python_app(spec) => {
                hosted::check_python_spec(spec)?;
                let Some(loader) = &loader else {
                    return Err(format!(
                        "key `app`: {spec:?} is a Python ASGI app (MODULE:ATTR), and this forkd \
                         was built without Python support; install the Python package into \
                         the app's virtualenv (`pip install /path/to/forkd`, or `pip install .` \
                         in forkd's repository) and run the `forkd` command it installs"
                    ));
                };
                let preload = match (config.preload_app, &preload) {
                    (false, _) => None,
                    (true, Some(preload)) => Some(preload.clone()),
                    (true, None) => {
                        return Err("key `preload_app`: this host cannot preload apps".into())
                    }
                };
                Ok(master::Program::Hosted(hosted::HostedProgram {
                    spec: spec.to_string(),
                    loader: loader.clone(),
                    preload,
                }))
            }
            Some(name) => apps::builtin(name).map(master::Program::Native).ok_or_else(|| {
                format!(
                    "key `app`: unknown app {name:?}; built-in apps are {}{}",
                    apps::NAMES.join(", "),
                    python_app_hint(name)
                        .map(|spec| format!(
                            "; for a Python ASGI app name the object too, as MODULE:ATTR (did you mean {spec:?}?)"
                        ))
                        .unwrap_or_default()
                )
            }),
            None => Err(format!(
                "no app given: name a built-in app ({}) as APP, the `app` key, or a command after --",
                apps::NAMES.join(", ")
            )),
        }
    })
}

/// The directories a Python app is imported from (`python.path`, relative ones from
/// `chdir` when it is set), for [`hosted::module_alone`].
fn python_dirs(config: &config::Config) -> Vec<std::path::PathBuf> {
    let base = config
        .chdir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    config.python.path.iter().map(|p| base.join(p)).collect()
}

/// For an app name that looks like a Python module path (`app.main`, `app/main.py`)
/// but lacks `:ATTR`: the `MODULE:app` spec it most likely means.
fn python_app_hint(name: &str) -> Option<String> {
    let module = name.strip_suffix(".py").unwrap_or(name).replace('/', ".");
    let dotted = module.contains('.') || name.ends_with(".py");
    (dotted && !name.contains(':') && hosted::is_dotted_name(&module))
        .then(|| format!("{module}:app"))
}

#[cfg(test)]
mod app_hint_tests {
    use super::python_app_hint;

    #[test]
    fn a_module_path_without_attr_gets_module_colon_app() {
        assert_eq!(python_app_hint("app.main").as_deref(), Some("app.main:app"));
        assert_eq!(python_app_hint("main.py").as_deref(), Some("main:app"));
        assert_eq!(
            python_app_hint("app/main.py").as_deref(),
            Some("app.main:app")
        );
        assert_eq!(
            python_app_hint("_pkg.mod_2").as_deref(),
            Some("_pkg.mod_2:app")
        );
    }

    #[test]
    fn other_names_get_no_hint() {
        for name in [
            "helo",
            "",
            ".",
            "app.",
            ".main",
            "1app.main",
            "app..main",
            "a-b.c",
            "a:b",
            "app.main:",
        ] {
            assert_eq!(python_app_hint(name), None, "{name:?}");
        }
    }
}
