//! forkd's `forkd` binary with mimalloc as the global allocator (allocator experiment).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    forkd::main_with(None)
}
