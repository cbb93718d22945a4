//! `status`: the control plane's view of every job, the executors and this replica's role.

use ticketmax_client::{Client, json};

use crate::exit::CliResult;
use crate::render::{out_json, print_status};

pub async fn status(client: &Client, json_out: bool) -> CliResult {
    let status = client.status().await?;
    if json_out {
        out_json(&json::status(&status));
    } else {
        print_status(&status);
    }
    Ok(())
}
