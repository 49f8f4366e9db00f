//! The `bff-partner` binary: settings → build → serve (see [`server_kit::run`]).

fn main() -> std::process::ExitCode {
    server_kit::run("bff-partner", bff_partner::build)
}
