//! `--print-config`: the effective configuration as TOML, every key included.

use super::cpus::available_cpus;
use super::registry::*;
use super::types::{Config, Workers};
use super::values::quoted;

impl Config {
    /// Resolves `workers` ("auto" counts usable CPUs).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Workers::Count(n) => n,
            Workers::Auto => available_cpus(),
        }
    }

    /// The effective configuration as TOML, every key included (unset ones as comments).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let file = self
            .config_file
            .as_ref()
            .map_or("(none)".to_string(), |p| p.display().to_string());
        out.push_str(&format!(
            "# forkd effective configuration (config file: {file})\n"
        ));
        let mut current = None;
        for key in KEYS {
            if key.table() != current {
                current = key.table();
                out.push_str(&format!("\n[{}]\n", current.unwrap_or_default()));
            }
            match key.print {
                Print::Value(print) => match print(self) {
                    Some(value) => out.push_str(&format!("{} = {value}\n", key.short_name())),
                    None => out.push_str(&format!("# {} = (unset)\n", key.short_name())),
                },
                Print::Table(entries) => {
                    for (name, value) in entries(self) {
                        out.push_str(&format!("{} = {}\n", quoted(&name), quoted(&value)));
                    }
                }
            }
        }
        out
    }
}
