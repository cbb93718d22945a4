//! `ticketmaxctl`: the operator CLI of TicketMax Jobs. See `ticketmaxctl --help`.
//!
//! This file only parses the command line, starts the runtime and turns the outcome into an
//! exit code. The rest, one concern a module:
//!
//! - [`args`]: the clap definitions (global flags, subcommands, help texts, value parsing);
//! - [`exit`]: exit codes and the one-line error message of every failure;
//! - [`commands`]: connecting, then one module per command group (`status`, `jobs`, `runs`,
//!   `reports`);
//! - [`follow`]: following a run's events (progress bar, log lines, JSON lines, Ctrl-C);
//! - [`render`]: tables, key/value views and JSON documents on stdout.

mod args;
mod commands;
mod exit;
mod follow;
mod render;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message());
            ExitCode::from(f.exit_code())
        }
    }
}
