//! The command line: the global flags (URL, token, output format, TLS files), one subcommand per
//! operation with its help text and examples, and the parsing of flag values (`--param
//! KEY=VALUE`, run states, policies) into the client's types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use ticketmax_client::DEFAULT_URL;
use ticketmax_client::proto::{MissedTickPolicy, OverlapPolicy, RunState, Trigger};

use crate::exit::exit_codes;

const MAIN_HELP: &str = concat!(
    "Examples:
  ticketmaxctl status
  ticketmaxctl trigger booking-cleanup/cancel-expired-bookings --wait
  ticketmaxctl runs --job payment-cleanup/cleanup-abandoned-payments --state failed
  ticketmaxctl --output json status | jq '.jobs[] | select(.enabled | not) | .name'
  TICKETMAX_CONTROL_PLANE_URL=https://jobs.internal:50051 TICKETMAX_TOKEN=... ticketmaxctl jobs

",
    exit_codes!()
);

/// Operate TicketMax Jobs: status, trigger and watch runs, run history, pause/resume and
/// reschedule jobs, analytics reports.
#[derive(Parser, Debug)]
#[command(name = "ticketmaxctl", version, after_help = MAIN_HELP)]
pub struct Cli {
    /// Control plane gRPC URL (http:// or https://).
    #[arg(long, env = "TICKETMAX_CONTROL_PLANE_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,

    /// Bearer token sent as `authorization: Bearer <token>`.
    #[arg(long, env = "TICKETMAX_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Output format: human-readable tables, or JSON (one document; one object per line for
    /// `watch`).
    #[arg(long, short = 'o', value_enum, env = "TICKETMAX_OUTPUT", default_value_t = Output::Table, global = true)]
    pub output: Output,

    /// PEM file with the CA certificate that signed the control plane's certificate (enables
    /// TLS; https:// URLs without it use the web PKI roots).
    #[arg(long, env = "TICKETMAX_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// PEM client certificate for a control plane that requires mutual TLS
    /// (TICKETMAX_TLS_CLIENT_CA there).
    #[arg(
        long,
        env = "TICKETMAX_CLIENT_CERT",
        requires = "client_key",
        global = true
    )]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "TICKETMAX_CLIENT_KEY",
        requires = "client_cert",
        global = true
    )]
    pub client_key: Option<PathBuf>,

    /// Name to expect in the control plane's certificate, when it differs from the URL's host.
    #[arg(long, env = "TICKETMAX_TLS_DOMAIN", global = true)]
    pub tls_domain: Option<String>,

    /// Seconds to wait for the connection.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300), global = true)]
    pub connect_timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every job with its schedule, last run and next fire time; the executors; this replica's
    /// role.
    #[command(
        after_help = "Example:\n  ticketmaxctl status\n  ticketmaxctl -o json status | jq '.executors'"
    )]
    Status,

    /// List the jobs and their settings.
    #[command(
        after_help = "Example:\n  ticketmaxctl jobs\n  ticketmaxctl jobs --service booking-cleanup"
    )]
    Jobs {
        /// Only the jobs of this service, e.g. booking-cleanup.
        #[arg(long)]
        service: Option<String>,
    },

    /// Show one job: schedule, policies, next fire time and last run.
    #[command(
        after_help = "Example:\n  ticketmaxctl job payment-cleanup/cleanup-abandoned-payments"
    )]
    Job {
        /// Job name, SERVICE/TASK.
        name: String,
    },

    /// Run a job now. With --wait, follow it with a progress bar and its log until it ends.
    #[command(after_help = concat!("\
Examples:
  ticketmaxctl trigger booking-cleanup/cancel-expired-bookings --wait
  ticketmaxctl trigger notifications/send-re-engagement-emails --key campaign-2026-11 --param batch_limit=100

--param values are read as JSON when they parse (100, true, \"text\", [1,2]) and as strings
otherwise. With --wait the exit code is 0 when the run SUCCEEDED (or was SKIPPED by the
overlap policy), 1 otherwise.

", exit_codes!()))]
    Trigger(TriggerArgs),

    /// List runs, newest first.
    #[command(
        after_help = "Examples:\n  ticketmaxctl runs\n  ticketmaxctl runs --job booking-cleanup/cancel-expired-bookings --state failed --limit 5"
    )]
    Runs {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only runs in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// At most this many runs (pages are fetched as needed).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },

    /// Show one run: state, times, attempt, summary, error.
    #[command(after_help = "Example:\n  ticketmaxctl run 0192f5c1-7d3a-7c1e-9a53-2b8f0c6d1e42")]
    Run {
        /// Run id.
        id: String,
    },

    /// Follow a run: its stored events, then live ones, until it ends (progress bar and log).
    #[command(after_help = concat!("\
Examples:
  ticketmaxctl watch 0192f5c1-7d3a-7c1e-9a53-2b8f0c6d1e42
  ticketmaxctl -o json watch 0192f5c1-7d3a-7c1e-9a53-2b8f0c6d1e42 --after-seq 10

Exit code 0 when the run SUCCEEDED (or was SKIPPED), 1 when it ended otherwise.

", exit_codes!()))]
    Watch {
        /// Run id.
        id: String,
        /// Only events after this sequence number (resume where you left off).
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
    },

    /// Cancel a run: a queued run at once, a running one at its next chunk boundary.
    #[command(
        after_help = "Example:\n  ticketmaxctl cancel 0192f5c1-7d3a-7c1e-9a53-2b8f0c6d1e42 --reason \"wrong data\"\n\nA run that has already ended exits 4 (FAILED_PRECONDITION)."
    )]
    Cancel {
        /// Run id.
        id: String,
        /// Why (recorded with the run).
        #[arg(long)]
        reason: Option<String>,
    },

    /// Cancel every queued or running run that matches, as `cancel` does each (--dry-run: only count).
    #[command(
        name = "cancel-all",
        after_help = "Examples:\n  ticketmaxctl cancel-all --job data-cleanup/clean-cache --dry-run\n  ticketmaxctl cancel-all --job data-cleanup/clean-cache --trigger manual --reason \"bad deploy\"\n\nPrints how many queued runs were cancelled and how many running ones were asked to stop;\nat most --limit per call, the oldest first (it says when more are left: run it again)."
    )]
    CancelAll {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only queued or only running runs (default: both).
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only runs of this trigger.
        #[arg(long, value_enum)]
        trigger: Option<TriggerArg>,
        /// Why (recorded with each run).
        #[arg(long)]
        reason: Option<String>,
        /// Count what would be cancelled; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many runs (1..10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },

    /// Stop a job's schedule (manual triggers still work).
    #[command(after_help = "Example:\n  ticketmaxctl pause notifications/send-weekly-newsletter")]
    Pause {
        /// Job name.
        job: String,
    },

    /// Start a paused job's schedule again.
    #[command(after_help = "Example:\n  ticketmaxctl resume notifications/send-weekly-newsletter")]
    Resume {
        /// Job name.
        job: String,
    },

    /// Change a job's schedule, timezone, policies or limits (only the given ones).
    #[command(after_help = "\
Examples:
  ticketmaxctl update analytics/generate-daily-analytics --schedule '0 30 23 * * *' --timezone Africa/Lagos
  ticketmaxctl update booking-cleanup/cancel-expired-bookings --overlap queue-one --max-retries 5
  ticketmaxctl update data-cleanup/optimize-database --disable

Schedules: 5 cron fields, 6 with seconds first, or a named expression (EVERY_5_MINUTES).
A bad schedule or timezone exits 4 and changes nothing.")]
    Update(UpdateArgs),

    /// List analytics reports, newest first.
    #[command(after_help = "Example:\n  ticketmaxctl reports --kind payment-analytics --limit 5")]
    Reports {
        /// Only reports of this kind, e.g. payment-analytics, daily-bookings.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many (1..500).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
    },

    /// Show one report with its body.
    #[command(
        after_help = "Example:\n  ticketmaxctl report 0192f5c1-7d3a-7c1e-9a53-2b8f0c6d1e42\n  ticketmaxctl -o json report ID | jq .body"
    )]
    Report {
        /// Report id.
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct TriggerArgs {
    /// Job name, SERVICE/TASK.
    pub job: String,
    /// Idempotency key: repeating it returns the run created the first time.
    #[arg(long)]
    pub key: Option<String>,
    /// Task parameter KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, Value)>,
    /// Follow the run until it ends; exit 1 unless it SUCCEEDED or was SKIPPED.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (the run goes on).
    #[arg(long, default_value_t = 3600, requires = "wait")]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Job name.
    pub job: String,
    /// Cron expression or named expression.
    #[arg(long)]
    pub schedule: Option<String>,
    /// IANA timezone, e.g. Europe/Berlin.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Enable the schedule.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Disable the schedule (like pause).
    #[arg(long)]
    pub disable: bool,
    /// What happens when a run is due while another is active.
    #[arg(long, value_enum)]
    pub overlap: Option<OverlapArg>,
    /// What happens to ticks missed while no control plane ran.
    #[arg(long, value_enum)]
    pub missed_ticks: Option<MissedArg>,
    /// Catch-up window for missed ticks, in seconds.
    #[arg(long)]
    pub catch_up_window_seconds: Option<u32>,
    /// Per-run timeout in seconds.
    #[arg(long)]
    pub timeout_seconds: Option<u32>,
    /// Retries after a failed attempt.
    #[arg(long)]
    pub max_retries: Option<u32>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum StateArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Skipped,
}

impl From<StateArg> for RunState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Queued => RunState::Queued,
            StateArg::Running => RunState::Running,
            StateArg::Succeeded => RunState::Succeeded,
            StateArg::Failed => RunState::Failed,
            StateArg::Cancelled => RunState::Cancelled,
            StateArg::TimedOut => RunState::TimedOut,
            StateArg::Skipped => RunState::Skipped,
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum TriggerArg {
    Schedule,
    Manual,
}

impl From<TriggerArg> for Trigger {
    fn from(t: TriggerArg) -> Self {
        match t {
            TriggerArg::Schedule => Trigger::Schedule,
            TriggerArg::Manual => Trigger::Manual,
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum OverlapArg {
    Skip,
    QueueOne,
    Allow,
}

impl From<OverlapArg> for OverlapPolicy {
    fn from(o: OverlapArg) -> Self {
        match o {
            OverlapArg::Skip => OverlapPolicy::Skip,
            OverlapArg::QueueOne => OverlapPolicy::QueueOne,
            OverlapArg::Allow => OverlapPolicy::Allow,
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum MissedArg {
    RunOnce,
    Skip,
}

impl From<MissedArg> for MissedTickPolicy {
    fn from(m: MissedArg) -> Self {
        match m {
            MissedArg::RunOnce => MissedTickPolicy::RunOnce,
            MissedArg::Skip => MissedTickPolicy::Skip,
        }
    }
}

fn parse_param(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn params_parse_as_json_or_string() {
        assert_eq!(
            parse_param("n=100").unwrap(),
            ("n".into(), Value::from(100))
        );
        assert_eq!(
            parse_param("name=abc").unwrap(),
            ("name".into(), Value::from("abc"))
        );
        assert_eq!(parse_param("e=").unwrap(), ("e".into(), Value::from("")));
        assert!(parse_param("nokey").is_err());
        assert!(parse_param("=v").is_err());
    }
}
