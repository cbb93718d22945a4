//! `jobs`, `job`, `pause`, `resume` and `update`: reading and changing job definitions.

use ticketmax_client::proto::{MissedTickPolicy, OverlapPolicy};
use ticketmax_client::{Client, UpdateJob, json};

use crate::args::UpdateArgs;
use crate::exit::{CliResult, Failure};
use crate::render::{print_enabled, print_job, print_jobs, show, show_all};

/// `jobs [--service S]`.
pub async fn list(client: &Client, service: Option<&str>, json_out: bool) -> CliResult {
    let jobs = client.jobs_of_service(service.unwrap_or("")).await?;
    show_all(&jobs, json_out, json::job, print_jobs);
    Ok(())
}

/// `job NAME`.
pub async fn show_one(client: &Client, name: &str, json_out: bool) -> CliResult {
    show(&client.job(name).await?, json_out, json::job, print_job);
    Ok(())
}

/// `pause JOB`.
pub async fn pause(client: &Client, job: &str, json_out: bool) -> CliResult {
    show(
        &client.pause(job).await?,
        json_out,
        json::job,
        print_enabled,
    );
    Ok(())
}

/// `resume JOB`.
pub async fn resume(client: &Client, job: &str, json_out: bool) -> CliResult {
    show(
        &client.resume(job).await?,
        json_out,
        json::job,
        print_enabled,
    );
    Ok(())
}

/// `update JOB [--schedule S] ...`: a usage error when no change is given.
pub async fn update(client: &Client, args: UpdateArgs, json_out: bool) -> CliResult {
    let changes = UpdateJob {
        schedule: args.schedule,
        timezone: args.timezone,
        enabled: match (args.enable, args.disable) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        overlap_policy: args.overlap.map(OverlapPolicy::from),
        missed_tick_policy: args.missed_ticks.map(MissedTickPolicy::from),
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
    show(&job, json_out, json::job, print_job);
    Ok(())
}
