//! `ticketmaxctl`: the operator CLI of TicketMax Jobs. See `ticketmaxctl --help`.
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost_types::Timestamp;
use serde_json::Value;

use ticketmax_client::proto::{
    ExecutorInfo, GetStatusResponse, Job, MissedTickPolicy, OverlapPolicy, Report, Run, RunEvent,
    RunState, run_event::Kind,
};
use ticketmax_client::{
    Client, DEFAULT_URL, Error, RunFilter, TriggerOptions, UpdateJob, from_timestamp, json,
};
use tonic::Code;

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
struct Cli {
    /// Control plane gRPC URL (http:// or https://).
    #[arg(long, env = "TICKETMAX_CONTROL_PLANE_URL", default_value = DEFAULT_URL, global = true)]
    url: String,

    /// Bearer token sent as `authorization: Bearer <token>`.
    #[arg(long, env = "TICKETMAX_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,

    /// Output format: human-readable tables, or JSON (one document; one object per line for
    /// `watch`).
    #[arg(long, short = 'o', value_enum, env = "TICKETMAX_OUTPUT", default_value_t = Output::Table, global = true)]
    output: Output,

    /// PEM file with the CA certificate that signed the control plane's certificate (enables
    /// TLS; https:// URLs without it use the web PKI roots).
    #[arg(long, env = "TICKETMAX_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,

    /// PEM client certificate for a control plane that requires mutual TLS
    /// (TICKETMAX_TLS_CLIENT_CA there).
    #[arg(
        long,
        env = "TICKETMAX_CLIENT_CERT",
        requires = "client_key",
        global = true
    )]
    client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "TICKETMAX_CLIENT_KEY",
        requires = "client_cert",
        global = true
    )]
    client_key: Option<PathBuf>,

    /// Name to expect in the control plane's certificate, when it differs from the URL's host.
    #[arg(long, env = "TICKETMAX_TLS_DOMAIN", global = true)]
    tls_domain: Option<String>,

    /// Seconds to wait for the connection.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300), global = true)]
    connect_timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
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
struct TriggerArgs {
    /// Job name, SERVICE/TASK.
    job: String,
    /// Idempotency key: repeating it returns the run created the first time.
    #[arg(long)]
    key: Option<String>,
    /// Task parameter KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, Value)>,
    /// Follow the run until it ends; exit 1 unless it SUCCEEDED or was SKIPPED.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds (the run goes on).
    #[arg(long, default_value_t = 3600, requires = "wait")]
    timeout: u64,
}

#[derive(Args, Debug)]
struct UpdateArgs {
    /// Job name.
    job: String,
    /// Cron expression or named expression.
    #[arg(long)]
    schedule: Option<String>,
    /// IANA timezone, e.g. Europe/Berlin.
    #[arg(long)]
    timezone: Option<String>,
    /// Enable the schedule.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Disable the schedule (like pause).
    #[arg(long)]
    disable: bool,
    /// What happens when a run is due while another is active.
    #[arg(long, value_enum)]
    overlap: Option<OverlapArg>,
    /// What happens to ticks missed while no control plane ran.
    #[arg(long, value_enum)]
    missed_ticks: Option<MissedArg>,
    /// Catch-up window for missed ticks, in seconds.
    #[arg(long)]
    catch_up_window_seconds: Option<u32>,
    /// Per-run timeout in seconds.
    #[arg(long)]
    timeout_seconds: Option<u32>,
    /// Retries after a failed attempt.
    #[arg(long)]
    max_retries: Option<u32>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum StateArg {
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
enum OverlapArg {
    Skip,
    QueueOne,
    Allow,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum MissedArg {
    RunOnce,
    Skip,
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

// -------------------------------------------------------------------------------------------
// Errors and exit codes
// -------------------------------------------------------------------------------------------

enum Failure {
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
    fn exit_code(&self) -> u8 {
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

    fn message(&self) -> String {
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

type CliResult = Result<(), Failure>;

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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message());
            ExitCode::from(f.exit_code())
        }
    }
}

/// Writes a line to stdout; a closed pipe (`| head`) ends the program quietly.
fn out(line: impl AsRef<str>) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{}", line.as_ref())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

fn out_json(v: &Value) {
    out(serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

async fn run(cli: Cli) -> CliResult {
    let mut builder =
        Client::builder(cli.url.clone()).connect_timeout(Duration::from_secs(cli.connect_timeout));
    if let Some(token) = &cli.token {
        builder = builder.token(token.clone());
    }
    if let Some(ca) = &cli.ca_file {
        builder = builder.ca_file(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        builder = builder.client_identity(cert.clone(), key.clone());
    }
    if let Some(domain) = &cli.tls_domain {
        builder = builder.tls_domain(domain.clone());
    }
    let client = builder.connect().await?;
    let json_out = cli.output == Output::Json;

    match cli.command {
        Command::Status => {
            let status = client.status().await?;
            if json_out {
                out_json(&json::status(&status));
            } else {
                print_status(&status);
            }
        }
        Command::Jobs { service } => {
            let jobs = client
                .jobs_of_service(service.as_deref().unwrap_or(""))
                .await?;
            if json_out {
                out_json(&Value::Array(jobs.iter().map(json::job).collect()));
            } else {
                print_jobs(&jobs);
            }
        }
        Command::Job { name } => {
            let job = client.job(&name).await?;
            print_job(&job, json_out);
        }
        Command::Trigger(args) => trigger(&client, args, json_out).await?,
        Command::Runs { job, state, limit } => {
            let filter = RunFilter {
                job,
                state: state.map(RunState::from),
                page_size: limit.min(500),
                page_token: None,
            };
            let runs: Vec<Run> = client
                .all_runs(filter)
                .take(limit as usize)
                .try_collect()
                .await?;
            if json_out {
                out_json(&Value::Array(runs.iter().map(json::run).collect()));
            } else {
                print_runs(&runs);
            }
        }
        Command::Run { id } => {
            let run = client.run(&id).await?;
            print_run(&run, json_out);
        }
        Command::Watch { id, after_seq } => {
            // Fail early (exit 3) on an unknown run, before any output.
            client.run(&id).await?;
            let mode = if json_out {
                FollowOutput::JsonLines
            } else {
                FollowOutput::Human
            };
            let run = follow(&client, &id, after_seq, mode, None).await?;
            if !json_out {
                print_outcome(&run);
            }
            check_outcome(run)?;
        }
        Command::Cancel { id, reason } => {
            let run = client.cancel(&id, reason.as_deref()).await?;
            if json_out {
                out_json(&json::run(&run));
            } else if run.state().is_terminal() {
                out(format!("run {} {}", run.id, short_state(run.state())));
            } else {
                out(format!(
                    "run {}: cancellation requested (the task stops at its next chunk; it is {} now)",
                    run.id,
                    short_state(run.state())
                ));
            }
        }
        Command::Pause { job } => {
            let job = client.pause(&job).await?;
            print_enabled(&job, json_out);
        }
        Command::Resume { job } => {
            let job = client.resume(&job).await?;
            print_enabled(&job, json_out);
        }
        Command::Update(args) => {
            let changes = UpdateJob {
                schedule: args.schedule,
                timezone: args.timezone,
                enabled: match (args.enable, args.disable) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                overlap_policy: args.overlap.map(|o| match o {
                    OverlapArg::Skip => OverlapPolicy::Skip,
                    OverlapArg::QueueOne => OverlapPolicy::QueueOne,
                    OverlapArg::Allow => OverlapPolicy::Allow,
                }),
                missed_tick_policy: args.missed_ticks.map(|m| match m {
                    MissedArg::RunOnce => MissedTickPolicy::RunOnce,
                    MissedArg::Skip => MissedTickPolicy::Skip,
                }),
                catch_up_window_seconds: args.catch_up_window_seconds,
                timeout_seconds: args.timeout_seconds,
                max_retries: args.max_retries,
            };
            if changes.is_empty() {
                return Err(Failure::Usage(
                    "nothing to change: give at least one of --schedule, --timezone, --enable, \
                     --disable, --overlap, --missed-ticks, --catch-up-window-seconds, \
                     --timeout-seconds, --max-retries"
                        .into(),
                ));
            }
            let job = client.update(&args.job, changes).await?;
            print_job(&job, json_out);
        }
        Command::Reports { kind, limit } => {
            let reports = client.reports(kind.as_deref(), limit).await?;
            if json_out {
                out_json(&Value::Array(reports.iter().map(json::report).collect()));
            } else {
                print_reports(&reports);
            }
        }
        Command::Report { id } => {
            let report = client.report(&id).await?;
            if json_out {
                out_json(&json::report(&report));
            } else {
                print_report(&report);
            }
        }
    }
    Ok(())
}

async fn trigger(client: &Client, args: TriggerArgs, json_out: bool) -> CliResult {
    let params = (!args.params.is_empty())
        .then(|| Value::Object(args.params.into_iter().collect::<serde_json::Map<_, _>>()));
    let options = TriggerOptions {
        idempotency_key: args.key,
        params,
    };
    let run = client.trigger_with(&args.job, options).await?;
    if !args.wait {
        if json_out {
            out_json(&json::run(&run));
        } else {
            out(format!(
                "run {} of {}: {}{}",
                run.id,
                run.job,
                short_state(run.state()),
                if run.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", one_line(&run.reason))
                }
            ));
            if !run.state().is_terminal() {
                out(format!("follow it with: ticketmaxctl watch {}", run.id));
            }
        }
        return Ok(());
    }
    if !json_out {
        out(format!(
            "run {} of {}: {}",
            run.id,
            run.job,
            short_state(run.state())
        ));
    }
    let mode = if json_out {
        FollowOutput::Quiet
    } else {
        FollowOutput::Human
    };
    let run = if run.state().is_terminal() {
        run
    } else {
        follow(
            client,
            &run.id,
            0,
            mode,
            Some(Duration::from_secs(args.timeout)),
        )
        .await?
    };
    if json_out {
        out_json(&json::run(&run));
    } else {
        print_outcome(&run);
    }
    check_outcome(run)
}

fn check_outcome(run: Run) -> CliResult {
    match run.state() {
        RunState::Succeeded | RunState::Skipped => Ok(()),
        _ => Err(Failure::RunEnded(Box::new(run))),
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum FollowOutput {
    /// Progress bar on stderr (text lines when stderr is not a terminal), log on stdout.
    Human,
    /// One JSON object per event on stdout.
    JsonLines,
    /// Nothing per event.
    Quiet,
}

/// Follows the run's events from `after_seq` until the run ends; survives dropped streams.
async fn follow(
    client: &Client,
    run_id: &str,
    after_seq: u64,
    mode: FollowOutput,
    timeout: Option<Duration>,
) -> Result<Run, Failure> {
    let bar = if mode == FollowOutput::Human && std::io::stderr().is_terminal() {
        // A spinner until the first progress event tells how much there is to do.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(spinner_style());
        bar.set_message("waiting for the run to start");
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let print = |line: String| match &bar {
        Some(b) => b.suspend(|| out(&line)),
        None => out(&line),
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut after = after_seq;
    // Ctrl-C stops following, not the run: say how to pick it up again.
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let result = 'follow: loop {
        let mut events = client.watch(run_id, after);
        let mut stream_error = None;
        loop {
            let next_event = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, events.next()).await.ok(),
                    None => Some(events.next().await),
                }
            };
            let next = tokio::select! {
                next = next_event => match next {
                    Some(n) => n,
                    None => break, // deadline
                },
                _ = &mut interrupt => break 'follow Err(Failure::Interrupted {
                    run_id: run_id.to_string(),
                    after,
                }),
            };
            match next {
                None => break,
                Some(Ok(event)) => {
                    after = after.max(event.seq);
                    match mode {
                        FollowOutput::JsonLines => out(json::event(&event).to_string()),
                        FollowOutput::Quiet => {}
                        FollowOutput::Human => show_event(&event, bar.as_ref(), &print),
                    }
                }
                Some(Err(e)) => {
                    stream_error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = stream_error.filter(|e| !e.is_unavailable()) {
            break Err(Failure::Client(e));
        }
        match client.run(run_id).await {
            Ok(run) if run.state().is_terminal() => break Ok(run),
            Ok(_) => {}
            Err(e) if e.is_unavailable() => {}
            Err(e) => break Err(Failure::Client(e)),
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let last_state = match client.run(run_id).await {
                Ok(run) => run.state().as_str_name().to_string(),
                Err(e) => format!("unknown: {e}"),
            };
            break Err(Failure::Client(Error::Timeout {
                run_id: run_id.into(),
                timeout: timeout.unwrap_or_default(),
                last_state,
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:32.cyan/blue} {pos}/{len} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn show_event(event: &RunEvent, bar: Option<&ProgressBar>, print: &dyn Fn(String)) {
    let at = event
        .time
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into());
    match &event.kind {
        Some(Kind::State(s)) => {
            let mut line = format!("{at} state {}", short_state(s.state()));
            if s.attempt > 1 {
                line.push_str(&format!(" (attempt {})", s.attempt));
            }
            if !s.message.is_empty() {
                line.push_str(&format!(": {}", one_line(&s.message)));
            }
            print(line);
            if let Some(bar) = bar.filter(|b| b.length().is_none()) {
                bar.set_message(short_state(s.state()).to_lowercase());
            }
        }
        Some(Kind::Progress(p)) => match bar {
            Some(bar) => {
                if p.total > 0 && bar.length().is_none() {
                    bar.set_style(bar_style());
                }
                if p.total > 0 {
                    bar.set_length(p.total.max(p.done));
                }
                bar.set_position(p.done);
                bar.set_message(one_line(&p.message));
            }
            None => {
                let mut line = format!("{at} progress {}/{}", p.done, p.total);
                if !p.message.is_empty() {
                    line.push_str(&format!(" {}", one_line(&p.message)));
                }
                print(line);
            }
        },
        Some(Kind::Log(l)) => print(format!(
            "{at} {:<5} {}",
            l.level.to_uppercase(),
            one_line(&l.message)
        )),
        None => {}
    }
}

// -------------------------------------------------------------------------------------------
// Human output
// -------------------------------------------------------------------------------------------

fn short_state(s: RunState) -> &'static str {
    let name = s.as_str_name();
    name.strip_prefix("RUN_STATE_").unwrap_or(name)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn time_of(t: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(from_timestamp)
}

fn fmt_time(t: Option<&Timestamp>) -> String {
    time_of(t).map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

fn fmt_span(secs: i64) -> String {
    let s = secs.abs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// "2026-11-28 11:00:00Z (in 4m)" / "... (3h05m ago)".
fn fmt_when(t: Option<&Timestamp>) -> String {
    match time_of(t) {
        None => "-".into(),
        Some(at) => {
            let d = (at - Utc::now()).num_seconds();
            let rel = if d > 0 {
                format!("in {}", fmt_span(d))
            } else {
                format!("{} ago", fmt_span(d))
            };
            format!("{} ({rel})", at.format("%Y-%m-%d %H:%M:%SZ"))
        }
    }
}

fn fmt_duration(run: &Run) -> String {
    let (Some(start), Some(end)) = (
        time_of(run.started_at.as_ref()),
        time_of(run.finished_at.as_ref()),
    ) else {
        return "-".into();
    };
    let ms = (end - start).num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        fmt_span(ms / 1000)
    }
}

fn compact_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A plain text table: columns padded to their widest cell, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn print_status(s: &GetStatusResponse) {
    let rows: Vec<Vec<String>> = s
        .jobs
        .iter()
        .map(|j| {
            let (last, finished) = match &j.last_run {
                None => ("-".to_string(), "-".to_string()),
                Some(r) => (
                    short_state(r.state()).to_string(),
                    if r.state().is_terminal() {
                        fmt_time(r.finished_at.as_ref())
                    } else {
                        "-".into()
                    },
                ),
            };
            vec![
                j.name.clone(),
                j.schedule.clone(),
                j.timezone.clone(),
                yes_no(j.enabled),
                last,
                finished,
                fmt_when(j.next_fire_time.as_ref()),
            ]
        })
        .collect();
    out(table(
        &[
            "JOB",
            "SCHEDULE",
            "TIMEZONE",
            "ENABLED",
            "LAST RUN",
            "FINISHED",
            "NEXT FIRE",
        ],
        &rows,
    ));
    out("");
    if s.executors.is_empty() {
        out("executors: none registered");
    } else {
        out(executors_table(&s.executors));
    }
    out("");
    out(format!(
        "control plane: {} ({}), replica {}, version {}; {} job(s), {} queued, {} running",
        s.status,
        s.role,
        if s.replica_id.is_empty() {
            "-"
        } else {
            &s.replica_id
        },
        if s.version.is_empty() {
            "-"
        } else {
            &s.version
        },
        s.jobs.len(),
        s.queued_runs,
        s.running_runs
    ));
}

fn executors_table(executors: &[ExecutorInfo]) -> String {
    let rows: Vec<Vec<String>> = executors
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.address.clone(),
                yes_no(e.live),
                e.running.to_string(),
                e.jobs.len().to_string(),
                fmt_when(e.last_heartbeat_at.as_ref()),
                e.version.clone(),
            ]
        })
        .collect();
    table(
        &[
            "EXECUTOR",
            "ADDRESS",
            "LIVE",
            "RUNNING",
            "JOBS",
            "LAST HEARTBEAT",
            "VERSION",
        ],
        &rows,
    )
}

fn overlap_name(p: OverlapPolicy) -> &'static str {
    match p {
        OverlapPolicy::Unspecified => "-",
        OverlapPolicy::Skip => "skip",
        OverlapPolicy::QueueOne => "queue-one",
        OverlapPolicy::Allow => "allow",
    }
}

fn missed_name(p: MissedTickPolicy) -> &'static str {
    match p {
        MissedTickPolicy::Unspecified => "-",
        MissedTickPolicy::RunOnce => "run-once",
        MissedTickPolicy::Skip => "skip",
    }
}

fn print_jobs(jobs: &[Job]) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.name.clone(),
                j.schedule.clone(),
                j.timezone.clone(),
                yes_no(j.enabled),
                overlap_name(j.overlap_policy()).into(),
                format!("{}s", j.timeout_seconds),
                j.max_retries.to_string(),
                fmt_when(j.next_fire_time.as_ref()),
            ]
        })
        .collect();
    out(table(
        &[
            "JOB",
            "SCHEDULE",
            "TIMEZONE",
            "ENABLED",
            "OVERLAP",
            "TIMEOUT",
            "RETRIES",
            "NEXT FIRE",
        ],
        &rows,
    ));
}

fn kv(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        out(format!("{k:<width$}  {v}"));
    }
}

fn print_job(j: &Job, json_out: bool) {
    if json_out {
        out_json(&json::job(j));
        return;
    }
    let schedule = if j.default_schedule.is_empty() || j.default_schedule == j.schedule {
        j.schedule.clone()
    } else {
        format!("{} (default {})", j.schedule, j.default_schedule)
    };
    let last = match &j.last_run {
        None => "-".into(),
        Some(r) => format!(
            "{} {} (finished {})",
            r.id,
            short_state(r.state()),
            fmt_time(r.finished_at.as_ref())
        ),
    };
    kv(&[
        ("name", j.name.clone()),
        ("description", one_line(&j.description)),
        ("schedule", schedule),
        ("timezone", j.timezone.clone()),
        ("enabled", yes_no(j.enabled)),
        ("next fire", fmt_when(j.next_fire_time.as_ref())),
        ("overlap", overlap_name(j.overlap_policy()).into()),
        ("missed ticks", missed_name(j.missed_tick_policy()).into()),
        ("catch-up window", format!("{}s", j.catch_up_window_seconds)),
        ("timeout", format!("{}s", j.timeout_seconds)),
        ("max retries", j.max_retries.to_string()),
        ("last run", last),
        (
            "updated",
            format!(
                "{}{}",
                fmt_time(j.updated_at.as_ref()),
                if j.updated_by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", j.updated_by)
                }
            ),
        ),
    ]);
}

fn print_enabled(j: &Job, json_out: bool) {
    if json_out {
        out_json(&json::job(j));
    } else {
        out(format!(
            "{}: {} (next fire {})",
            j.name,
            if j.enabled { "enabled" } else { "paused" },
            fmt_when(j.next_fire_time.as_ref())
        ));
    }
}

fn trigger_name(r: &Run) -> &'static str {
    match r.trigger() {
        ticketmax_client::proto::Trigger::Schedule => "schedule",
        ticketmax_client::proto::Trigger::Manual => "manual",
        ticketmax_client::proto::Trigger::Unspecified => "-",
    }
}

fn print_runs(runs: &[Run]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let detail = if !r.error.is_empty() {
                one_line(&r.error)
            } else if !r.reason.is_empty() {
                one_line(&r.reason)
            } else {
                compact_json(&json::summary(r))
            };
            vec![
                r.id.clone(),
                r.job.clone(),
                short_state(r.state()).into(),
                trigger_name(r).into(),
                fmt_time(r.scheduled_for.as_ref()),
                fmt_duration(r),
                r.attempt.to_string(),
                truncate(&detail, 80),
            ]
        })
        .collect();
    if rows.is_empty() {
        out("no runs");
        return;
    }
    out(table(
        &[
            "RUN",
            "JOB",
            "STATE",
            "TRIGGER",
            "SCHEDULED FOR",
            "DURATION",
            "ATTEMPT",
            "SUMMARY / ERROR",
        ],
        &rows,
    ));
}

fn print_run(r: &Run, json_out: bool) {
    if json_out {
        out_json(&json::run(r));
        return;
    }
    let mut pairs = vec![
        ("run", r.id.clone()),
        ("job", r.job.clone()),
        ("state", short_state(r.state()).into()),
        ("trigger", trigger_name(r).into()),
        ("scheduled for", fmt_time(r.scheduled_for.as_ref())),
        ("started", fmt_time(r.started_at.as_ref())),
        ("finished", fmt_time(r.finished_at.as_ref())),
        ("duration", fmt_duration(r)),
        ("attempt", r.attempt.to_string()),
        (
            "executor",
            if r.executor_id.is_empty() {
                "-".into()
            } else {
                r.executor_id.clone()
            },
        ),
    ];
    if !r.idempotency_key.is_empty() {
        pairs.push(("idempotency key", r.idempotency_key.clone()));
    }
    if let Some(p) = &r.params {
        pairs.push(("params", compact_json(&ticketmax_client::struct_to_json(p))));
    }
    if !r.triggered_by.is_empty() {
        pairs.push(("triggered by", r.triggered_by.clone()));
    }
    pairs.push(("summary", compact_json(&json::summary(r))));
    if !r.error.is_empty() {
        pairs.push(("error", one_line(&r.error)));
    }
    if !r.reason.is_empty() {
        pairs.push(("reason", one_line(&r.reason)));
    }
    kv(&pairs);
}

/// The end of `trigger --wait` and `watch`.
fn print_outcome(r: &Run) {
    let mut line = format!(
        "run {} of {} {} in {} (attempt {})",
        r.id,
        r.job,
        short_state(r.state()),
        fmt_duration(r),
        r.attempt
    );
    if !r.reason.is_empty() {
        line.push_str(&format!(": {}", one_line(&r.reason)));
    }
    out(line);
    out(format!("summary: {}", compact_json(&json::summary(r))));
    if !r.error.is_empty() {
        out(format!("error: {}", one_line(&r.error)));
    }
}

fn print_reports(reports: &[Report]) {
    if reports.is_empty() {
        out("no reports");
        return;
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.kind.clone(),
                r.period.clone(),
                r.job.clone(),
                fmt_time(r.created_at.as_ref()),
            ]
        })
        .collect();
    out(table(
        &["REPORT", "KIND", "PERIOD", "JOB", "CREATED"],
        &rows,
    ));
}

fn print_report(r: &Report) {
    kv(&[
        ("report", r.id.clone()),
        ("kind", r.kind.clone()),
        ("period", r.period.clone()),
        ("job", r.job.clone()),
        ("run", r.run_id.clone()),
        ("created", fmt_time(r.created_at.as_ref())),
    ]);
    out("");
    let body = r.body.as_ref().map_or(
        Value::Object(Default::default()),
        ticketmax_client::struct_to_json,
    );
    out_json(&body);
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

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }
}
