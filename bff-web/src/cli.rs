//! The binary's command line: with no subcommand, the gateway (the flags every gateway shares,
//! see [`server_kit::run`]); `bff-web manifest DIR [--out FILE]` writes the Apollo-format
//! trusted-document manifest of the `.graphql` operation files in `DIR` and exits.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::Parser;

/// `bff-web manifest`: writes a trusted-document manifest.
#[derive(Debug, Parser)]
#[command(name = "bff-web manifest")]
struct ManifestArgs {
    /// A folder of `.graphql` files, one named operation each (with the fragments it uses).
    dir: PathBuf,
    /// Where to write the manifest (standard output without it).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The whole `main` of `bff-web`.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| OsString::from("bff-web"));
    let rest: Vec<OsString> = args.collect();
    if rest.first().is_some_and(|first| first == "manifest") {
        return manifest(std::iter::once(program).chain(rest.into_iter().skip(1)));
    }
    server_kit::run("bff-web", crate::build)
}

/// `bff-web manifest DIR [--out FILE]`: 0 once written, 2 when a file is not one named,
/// parsable operation (said on stderr).
fn manifest(args: impl Iterator<Item = OsString>) -> ExitCode {
    let args = ManifestArgs::parse_from(args);
    let text = match crate::trusted::manifest::generate(&args.dir) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("bff-web manifest: {error}");
            return ExitCode::from(2);
        }
    };
    let written = match &args.out {
        Some(path) => std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| e.to_string())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bff-web manifest: {error}");
            ExitCode::FAILURE
        }
    }
}
