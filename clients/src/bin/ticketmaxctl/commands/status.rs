//! `status`: the control plane's view of every job, the executors and this replica's role.

use ticketmax_client::{Client, json};

use crate::exit::CliResult;
use crate::render::{print_status, show};

pub async fn status(client: &Client, json_out: bool) -> CliResult {
    show(
        &client.status().await?,
        json_out,
        json::status,
        print_status,
    );
    Ok(())
}
