//! `reference-services`: serves the reference product, cart and order services (see `--help`).

use std::process::ExitCode;

use clap::Parser;
use reference_services::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "reference-services failed");
            ExitCode::FAILURE
        }
    }
}
