//! The `bff-web` binary: settings → build → serve (see [`server_kit::run`]).

fn main() -> std::process::ExitCode {
    server_kit::run("bff-web", bff_web::build)
}
