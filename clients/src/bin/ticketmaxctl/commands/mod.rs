//! The commands: connecting with the global flags, then one module per command group doing the
//! calls and handing the answers to [`crate::render`]: [`status`] (`status`), [`jobs`] (`jobs`,
//! `job`, `pause`, `resume`, `update`), [`runs`] (`trigger`, `runs`, `run`, `watch`, `cancel`,
//! `cancel-all`)
//! and [`reports`] (`reports`, `report`).

mod jobs;
mod reports;
mod runs;
mod status;

use std::time::Duration;

use ticketmax_client::Client;
use ticketmax_client::proto::{RunState, Trigger};

use crate::args::{Cli, Command, Output};
use crate::exit::CliResult;

/// Connects as the global flags say and runs the subcommand.
pub async fn run(cli: Cli) -> CliResult {
    let client = connect(&cli).await?;
    let json_out = cli.output == Output::Json;

    match cli.command {
        Command::Status => status::status(&client, json_out).await,
        Command::Jobs { service } => jobs::list(&client, service.as_deref(), json_out).await,
        Command::Job { name } => jobs::show_one(&client, &name, json_out).await,
        Command::Trigger(args) => runs::trigger(&client, args, json_out).await,
        Command::Runs { job, state, limit } => {
            runs::list(&client, job, state, limit, json_out).await
        }
        Command::Run { id } => runs::show_one(&client, &id, json_out).await,
        Command::Watch { id, after_seq } => runs::watch(&client, &id, after_seq, json_out).await,
        Command::Cancel { id, reason } => {
            runs::cancel(&client, &id, reason.as_deref(), json_out).await
        }
        Command::CancelAll {
            job,
            state,
            trigger,
            reason,
            dry_run,
            limit,
        } => {
            let req = ticketmax_client::proto::CancelRunsRequest {
                job: job.unwrap_or_default(),
                state: state.map_or(0, |s| RunState::from(s).into()),
                trigger: trigger.map_or(0, |t| Trigger::from(t).into()),
                reason: reason.unwrap_or_default(),
                dry_run,
                limit,
                ..Default::default()
            };
            runs::cancel_all(&client, req, json_out).await
        }
        Command::Pause { job } => jobs::pause(&client, &job, json_out).await,
        Command::Resume { job } => jobs::resume(&client, &job, json_out).await,
        Command::Update(args) => jobs::update(&client, args, json_out).await,
        Command::Reports { kind, limit } => {
            reports::list(&client, kind.as_deref(), limit, json_out).await
        }
        Command::Report { id } => reports::show_one(&client, &id, json_out).await,
    }
}

async fn connect(cli: &Cli) -> Result<Client, ticketmax_client::Error> {
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
    builder.connect().await
}
