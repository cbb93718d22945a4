//! `ticketmax-control-plane`: see `config.rs` (or `--help`) for what it does and how to run it,
//! and `lib.rs` for where everything lives.
use clap::Parser;

use ticketmax_control_plane::config::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let c = &cli.config;
    // Token hashes are not secrets, but nothing of the token setting belongs in a log.
    let mut secrets = ticketmax_runtime::redact::Secrets::new()
        .url(Some(&c.database_url()))
        .value(c.executor_token.as_deref());
    for entry in c.api_tokens.as_deref().unwrap_or("").split(',') {
        secrets = secrets.value(entry.rsplit(':').next());
    }
    let telemetry = ticketmax_runtime::telemetry::init(
        "ticketmax-control-plane",
        "info,sqlx=warn,sea_orm=warn,tokio_cron_scheduler=warn,h2=warn,tower=warn,hyper=warn,opentelemetry=warn",
        secrets.clone(),
    );
    let result = ticketmax_control_plane::run(cli).await;
    telemetry.shutdown();
    secrets.exit_code(result)
}
