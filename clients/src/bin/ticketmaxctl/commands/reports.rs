//! `reports` and `report`: the analytics reports the jobs stored.

use ticketmax_client::{Client, json};

use crate::exit::CliResult;
use crate::render::{print_report, print_reports, show, show_all};

/// `reports [--kind K] [--limit N]`.
pub async fn list(client: &Client, kind: Option<&str>, limit: u32, json_out: bool) -> CliResult {
    let reports = client.reports(kind, limit).await?;
    show_all(&reports, json_out, json::report, print_reports);
    Ok(())
}

/// `report ID`.
pub async fn show_one(client: &Client, id: &str, json_out: bool) -> CliResult {
    show(
        &client.report(id).await?,
        json_out,
        json::report,
        print_report,
    );
    Ok(())
}
