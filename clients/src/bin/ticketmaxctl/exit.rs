//! Exit codes: how every way the CLI can end ([`Failure`]: a usage error, a client error, a run
//! that ended badly, Ctrl-C) maps to a process exit code and a one-line message, and the
//! `exit_codes!` text that `--help` shows for them. The table in `clients/README.md` says the
//! same.

use ticketmax_client::Error;
use ticketmax_client::proto::Run;
use tonic::Code;

use crate::render::{one_line, short_state};

/// The exit-code table of `--help`, as a literal for `concat!` in clap attributes.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success
  1  the run ended FAILED, CANCELLED or TIMED_OUT (trigger --wait, watch), or --wait timed out,
     or an unexpected server error
  2  usage error (unknown flag, bad value, nothing to change, bad URL, unreadable CA file)
  3  not found (NOT_FOUND: unknown job, run or report)
  4  rejected (INVALID_ARGUMENT, FAILED_PRECONDITION: bad cron or timezone, run already ended)
  5  control plane unreachable (connection refused, UNAVAILABLE, DEADLINE_EXCEEDED)
  6  not allowed (UNAUTHENTICATED, PERMISSION_DENIED)
  130  interrupted (Ctrl-C) while following a run; the run goes on"
    };
}
pub(crate) use exit_codes;

pub enum Failure {
    Usage(String),
    Client(Error),
    /// The run ended in a state other than SUCCEEDED or SKIPPED.
    RunEnded(Box<Run>),
    /// Ctrl-C while following a run (which goes on).
    Interrupted {
        run_id: String,
        after: u64,
    },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Client(e)
    }
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::RunEnded(_) => 1,
            Failure::Interrupted { .. } => 130,
            Failure::Client(e) => match e {
                Error::InvalidUrl { .. }
                | Error::InvalidToken(_)
                | Error::File { .. }
                | Error::Tls(_)
                | Error::InvalidInput(_) => 2,
                Error::Connect { .. } => 5,
                Error::Timeout { .. } => 1,
                _ if e.is_unavailable() => 5,
                _ => match e.code() {
                    Some(Code::NotFound) => 3,
                    Some(Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange) => 4,
                    Some(Code::Unavailable | Code::DeadlineExceeded) => 5,
                    Some(Code::Unauthenticated | Code::PermissionDenied) => 6,
                    _ => 1,
                },
            },
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Usage(m) => m.clone(),
            Failure::Client(e) => e.to_string(),
            Failure::Interrupted { run_id, after } => format!(
                "interrupted; run {run_id} goes on (follow it again with: ticketmaxctl watch \
                 {run_id} --after-seq {after})"
            ),
            Failure::RunEnded(run) => {
                let mut m = format!("run {} ended {}", run.id, short_state(run.state()));
                if !run.error.is_empty() {
                    m.push_str(&format!(": {}", one_line(&run.error)));
                } else if !run.reason.is_empty() {
                    m.push_str(&format!(": {}", one_line(&run.reason)));
                }
                m
            }
        }
    }
}

pub type CliResult = Result<(), Failure>;
