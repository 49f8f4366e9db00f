//! The command line every gateway accepts.

use std::path::PathBuf;

use clap::Parser;

/// Command-line arguments shared by every gateway binary.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// A TOML configuration file layered over the built-in defaults; `BFF_…` environment variables
    /// are layered over it.
    #[arg(long, value_name = "PATH", env = "BFF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Load and validate the configuration, print the outcome and exit (0 when valid, 2 when not),
    /// without binding a port. Meant for deploy pipelines.
    #[arg(long)]
    pub check_config: bool,
}
