//! `bff-dev`: starts the reference downstream services and the three gateways on one machine.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = dev_launcher::Args::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(dev_launcher::run(args)),
        Err(error) => {
            eprintln!("bff-dev: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
