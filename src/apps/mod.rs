//! Built-in apps, chosen by name: `hello` (for benchmarks) and `echo` (for tests).

mod echo;
mod hello;

use crate::app::{App, AppFactory};
use std::sync::Arc;

pub const NAMES: [&str; 2] = ["hello", "echo"];

/// The factory for a built-in app, or None if no built-in app has that name.
pub fn builtin(name: &str) -> Option<AppFactory> {
    let make: fn() -> Arc<dyn App> = match name {
        "hello" => || Arc::new(hello::Hello),
        "echo" => || Arc::new(echo::echo),
        _ => return None,
    };
    Some(Arc::new(move || Box::pin(async move { Ok(make()) })))
}
