//! forkd's `forkd` binary with jemalloc as the global allocator (allocator experiment).

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    forkd::main_with(None)
}
