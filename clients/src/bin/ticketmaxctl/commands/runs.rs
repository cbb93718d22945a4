//! `trigger`, `runs`, `run`, `watch` and `cancel`: starting runs, their history, following one
//! to its end (through [`crate::follow`]) and cancelling.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use ticketmax_client::proto::{Run, RunState};
use ticketmax_client::{Client, RunFilter, TriggerOptions, json};

use crate::args::{StateArg, TriggerArgs};
use crate::exit::{CliResult, Failure};
use crate::follow::{FollowOutput, follow};
use crate::render::{
    out, out_json, print_cancelled, print_outcome, print_run, print_runs, print_triggered,
    short_state, show, show_all,
};

/// `trigger JOB [--key K] [--param k=v ...] [--wait [--timeout SECS]]`.
pub async fn trigger(client: &Client, args: TriggerArgs, json_out: bool) -> CliResult {
    let params = (!args.params.is_empty())
        .then(|| Value::Object(args.params.into_iter().collect::<serde_json::Map<_, _>>()));
    let options = TriggerOptions {
        idempotency_key: args.key,
        params,
    };
    let run = client.trigger_with(&args.job, options).await?;
    if !args.wait {
        show(&run, json_out, json::run, print_triggered);
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
    show(&run, json_out, json::run, print_outcome);
    check_outcome(run)
}

/// Exit 0 when the run SUCCEEDED or was SKIPPED, [`Failure::RunEnded`] otherwise.
fn check_outcome(run: Run) -> CliResult {
    match run.state() {
        RunState::Succeeded | RunState::Skipped => Ok(()),
        _ => Err(Failure::RunEnded(Box::new(run))),
    }
}

/// `runs [--job J] [--state S] [--limit N]`: pages are fetched until `limit` runs are read.
pub async fn list(
    client: &Client,
    job: Option<String>,
    state: Option<StateArg>,
    limit: u32,
    json_out: bool,
) -> CliResult {
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
    show_all(&runs, json_out, json::run, print_runs);
    Ok(())
}

/// `run ID`.
pub async fn show_one(client: &Client, id: &str, json_out: bool) -> CliResult {
    show(&client.run(id).await?, json_out, json::run, print_run);
    Ok(())
}

/// `watch ID [--after-seq N]`.
pub async fn watch(client: &Client, id: &str, after_seq: u64, json_out: bool) -> CliResult {
    // Fail early (exit 3) on an unknown run, before any output.
    client.run(id).await?;
    let mode = if json_out {
        FollowOutput::JsonLines
    } else {
        FollowOutput::Human
    };
    let run = follow(client, id, after_seq, mode, None).await?;
    if !json_out {
        print_outcome(&run);
    }
    check_outcome(run)
}

/// `cancel ID [--reason R]`.
/// `cancel-all [--job J] [--state S] [--trigger T] [--reason R] [--dry-run] [--limit N]`.
pub async fn cancel_all(
    client: &Client,
    req: ticketmax_client::proto::CancelRunsRequest,
    json_out: bool,
) -> CliResult {
    let dry_run = req.dry_run;
    let done = client.cancel_runs(req).await?;
    if json_out {
        out_json(&serde_json::json!({
            "dry_run": dry_run,
            "queued": done.queued,
            "running": done.running,
            "more": done.more,
        }));
    } else if dry_run {
        out(format!(
            "{} runs match: {} queued, {} running{}",
            done.queued + done.running,
            done.queued,
            done.running,
            if done.more {
                " (and more beyond --limit)"
            } else {
                ""
            }
        ));
    } else {
        out(format!(
            "cancelled {} queued runs; cancellation requested for {} running{}",
            done.queued,
            done.running,
            if done.more {
                "; more match: run it again"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

pub async fn cancel(client: &Client, id: &str, reason: Option<&str>, json_out: bool) -> CliResult {
    show(
        &client.cancel(id, reason).await?,
        json_out,
        json::run,
        print_cancelled,
    );
    Ok(())
}
