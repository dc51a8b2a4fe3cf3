//! The `forkd` binary: the command line and the built-in apps; all logic is in the library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    forkd::main_with(None)
}
