//! The `bff-mobile` binary: settings → build → serve (see [`server_kit::run`]).

/// mimalloc: a gateway makes many small, short-lived allocations per request; it serves them
/// faster than the system allocator (measured in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    server_kit::run("bff-mobile", bff_mobile::build)
}
