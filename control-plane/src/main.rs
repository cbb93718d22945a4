//! `ticketmax-control-plane`: see `config.rs` (or `--help`) for what it does and how to run it,
//! and `lib.rs` for where everything lives.
use clap::Parser;

use ticketmax_control_plane::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = ticketmax_proto::telemetry::init(
        "ticketmax-control-plane",
        "info,sqlx=warn,sea_orm=warn,tokio_cron_scheduler=warn,h2=warn,tower=warn,hyper=warn,opentelemetry=warn",
    );
    let result = ticketmax_control_plane::run(cli).await;
    telemetry.shutdown();
    result
}
