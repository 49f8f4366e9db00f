//! The `bff-web` binary: the command line of [`bff_web::cli`] (settings → build → serve, see
//! [`server_kit::run`], or `bff-web manifest DIR`).

/// mimalloc: a gateway makes many small, short-lived allocations per request; it serves them
/// faster than the system allocator (measured in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bff_web::cli::main()
}
