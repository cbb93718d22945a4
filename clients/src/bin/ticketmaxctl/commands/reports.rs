//! `reports` and `report`: the analytics reports the jobs stored.

use serde_json::Value;

use ticketmax_client::{Client, json};

use crate::exit::CliResult;
use crate::render::{out_json, print_report, print_reports};

/// `reports [--kind K] [--limit N]`.
pub async fn list(client: &Client, kind: Option<&str>, limit: u32, json_out: bool) -> CliResult {
    let reports = client.reports(kind, limit).await?;
    if json_out {
        out_json(&Value::Array(reports.iter().map(json::report).collect()));
    } else {
        print_reports(&reports);
    }
    Ok(())
}

/// `report ID`.
pub async fn show(client: &Client, id: &str, json_out: bool) -> CliResult {
    let report = client.report(id).await?;
    if json_out {
        out_json(&json::report(&report));
    } else {
        print_report(&report);
    }
    Ok(())
}
