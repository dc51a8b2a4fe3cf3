//! `preload_app`: the app's import in a generation's zygote (see forkd's
//! `master::zygote`), before any worker is forked from it. `forkd._worker.preload`
//! (Python) sets `[env]` and `[python] path`, routes print/stderr and `logging` to the
//! error log, imports the app with the collector off, refuses an import that left a
//! thread or an event loop behind (naming them), and `gc.freeze()`s what it made; each
//! worker forked from the zygote then boots with that app (`boot.rs`: the worker module
//! hands it over instead of importing again).

use forkd::hosted::HostedPreload;
use pyo3::prelude::*;

/// The [`HostedPreloader`](forkd::hosted::HostedPreloader) for `MODULE:ATTR` apps.
pub fn preload(preload: &HostedPreload<'_>) -> Result<(), String> {
    Python::with_gil(|py| preload_with(py, preload).map_err(|e| crate::boot::describe(py, &e)))
}

fn preload_with(py: Python<'_>, preload: &HostedPreload<'_>) -> PyResult<()> {
    let config = preload.config;
    tracing::info!(
        pid = std::process::id(),
        "zygote: importing {} (preload_app)",
        preload.spec
    );
    let paths = crate::boot::absolute_paths(config);
    let env = crate::boot::env_pairs(config);
    py.import("forkd._worker")?.call_method1(
        "preload",
        (
            preload.spec,
            env,
            paths,
            crate::pylog::python_level(config.log.level),
            config.python.log_config.as_str(),
        ),
    )?;
    Ok(())
}
