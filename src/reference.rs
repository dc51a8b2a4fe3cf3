//! The configuration reference, generated from the one registry of keys
//! (`config::KEYS`) and the command line's options (`cli::Cli`): every key with its
//! default, its `FORKD_*` environment variable, the option that sets it and one line
//! on what it does. `docs/reference.md` is this text; a unit test fails when the file
//! is stale, and `UPDATE_DOCS=1 cargo test reference` writes it anew.

use crate::cli::Cli;
use crate::config::KEYS;
use clap::CommandFactory;

/// The whole of `docs/reference.md`.
pub fn markdown() -> String {
    let command = Cli::command();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from forkd's registry of config keys (`src/config/registry.rs`, `KEYS`) by\n\
         `UPDATE_DOCS=1 cargo test reference`; a test fails when this file is stale.\n\
         How the sources combine (command line, then `FORKD_*` variables, then the file,\n\
         then defaults), durations, sizes and what each part does in depth: see\n\
         [configuration.md](configuration.md).\n",
    );
    let mut table: Option<Option<&str>> = None;
    for key in KEYS {
        let (section, name) = match key.name.split_once('.') {
            Some((section, name)) => (Some(section), name),
            None if key.env_var().is_none() => (Some(key.name), ""),
            None => (None, key.name),
        };
        if table != Some(section) {
            table = Some(section);
            out.push_str(&match section {
                None => "\n## Top-level keys\n".to_string(),
                Some(s) => format!("\n## `[{s}]`\n"),
            });
            out.push_str(
                "\n| key | default | environment | option | meaning |\n\
                 | --- | --- | --- | --- | --- |\n",
            );
        }
        let shown = if name.is_empty() {
            format!("`[{}]`", key.name)
        } else {
            format!("`{name}`")
        };
        let default = key
            .default_text()
            .map_or("unset".to_string(), |d| format!("`{d}`"));
        let env = key
            .env_var()
            .map_or("file only".to_string(), |v| format!("`{v}`"));
        let option = key
            .option
            .and_then(|id| command.get_arguments().find(|a| a.get_id() == id))
            .map_or(String::new(), |arg| {
                let mut names = Vec::new();
                if let Some(short) = arg.get_short() {
                    names.push(format!("`-{short}`"));
                }
                if let Some(long) = arg.get_long() {
                    names.push(format!("`--{long}`"));
                }
                if names.is_empty() {
                    let value = arg
                        .get_value_names()
                        .and_then(|v| v.first())
                        .map_or(arg.get_id().to_string(), |v| v.to_string());
                    names.push(if arg.is_last_set() {
                        format!("`-- {value}`")
                    } else {
                        format!("`{value}`")
                    });
                }
                names.join(", ")
            });
        out.push_str(&format!(
            "| {shown} | {default} | {env} | {option} | {} |\n",
            cell(key.doc)
        ));
    }
    out
}

/// Text made safe for one markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_doc_line() {
        for key in KEYS {
            assert!(
                !key.doc.trim().is_empty(),
                "key {} has no doc line",
                key.name
            );
            assert!(!key.doc.contains('\n'), "key {}: one line", key.name);
        }
    }

    #[test]
    fn docs_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference.md");
        let want = markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/reference.md is stale: run `UPDATE_DOCS=1 cargo test reference`"
        );
    }

    #[test]
    fn reference_names_every_key_its_variable_and_option() {
        let text = markdown();
        assert!(text.contains("| `workers` | `1` | `FORKD_WORKERS` | `-w`, `--workers` |"));
        assert!(text.contains("| `level` | `\"info\"` | `FORKD_LOG_LEVEL` | `--log-level` |"));
        assert!(text.contains("| `command` | unset | `FORKD_EXEC_COMMAND` | `-- COMMAND` |"));
        assert!(text.contains("| `[env]` | unset | file only | `-e`, `--env` |"));
    }
}
