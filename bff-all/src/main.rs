//! The `bff-all` binary: settings → the three gateways over one `Downstream` → serve them all
//! (see [`server_kit::run_servers`]).

/// mimalloc, as in each gateway's own binary (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    server_kit::run_servers("bff-all", bff_all::build)
}
