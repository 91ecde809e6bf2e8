//! etcd-offsite: parse the command line, run it, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;
use etcd_offsite::{cli::Cli, error::exit_kind};

fn main() -> ExitCode {
    match etcd_offsite::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            etcd_offsite::print_error(format_args!("error: {err:#}"));
            ExitCode::from(exit_kind(&err) as u8)
        }
    }
}
