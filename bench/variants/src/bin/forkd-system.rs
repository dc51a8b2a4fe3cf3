//! forkd's `forkd` binary, unchanged (the system allocator), built here so that release
//! profile experiments (LTO, codegen units, panic strategy) can override the profile
//! without touching forkd's own build.

fn main() -> std::process::ExitCode {
    forkd::main_with(None)
}
