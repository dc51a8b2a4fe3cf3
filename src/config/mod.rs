//! Configuration: the one validated `Config` built from defaults, the TOML file,
//! `FORKD_*` environment variables and command-line options (in that order of
//! precedence, lowest first). Errors name the file, key, line, problem and what is allowed.
//!
//! Every key is declared once, in `KEYS` (its name, what is allowed, how it is parsed
//! into the typed `Config`, how `--print-config` writes it, its command-line option);
//! tables, `FORKD_*` names, options and suggestions are derived from there. Values are
//! parsed once, here: the workers use `Config` as it is.

mod cpus;
mod env;
pub mod gunicorn;
mod load;
mod print;
mod registry;
mod suggest;
#[cfg(test)]
mod tests;
mod types;
mod values;

pub use cpus::available_cpus;
pub use env::warnings as env_warnings;
pub use load::{file_permission_warning, load, Given};
pub(crate) use registry::KEYS;
pub use types::*;
pub use values::{parse_bind, parse_bind_literal, parse_duration, parse_size, ready_mode_text};
