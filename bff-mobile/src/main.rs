//! The `bff-mobile` binary: settings → build → serve (see [`server_kit::run`]).

fn main() -> std::process::ExitCode {
    server_kit::run("bff-mobile", bff_mobile::build)
}
