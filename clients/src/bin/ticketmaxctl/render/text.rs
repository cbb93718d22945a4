//! Text output primitives: writing lines and JSON documents to stdout (a closed pipe ends the
//! program quietly), plain-text tables and key/value lists, and the short forms of states,
//! times, durations and long strings that the views use.

use std::io::Write;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use serde_json::Value;

use ticketmax_client::from_timestamp;
use ticketmax_client::proto::{Run, RunState};

/// Writes a line to stdout; a closed pipe (`| head`) ends the program quietly.
pub fn out(line: impl AsRef<str>) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{}", line.as_ref())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

pub fn out_json(v: &Value) {
    out(serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

pub fn short_state(s: RunState) -> &'static str {
    let name = s.as_str_name();
    name.strip_prefix("RUN_STATE_").unwrap_or(name)
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn time_of(t: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(from_timestamp)
}

pub fn fmt_time(t: Option<&Timestamp>) -> String {
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
pub fn fmt_when(t: Option<&Timestamp>) -> String {
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

pub fn fmt_duration(run: &Run) -> String {
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

pub fn compact_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A plain text table: columns padded to their widest cell, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

pub fn kv(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        out(format!("{k:<width$}  {v}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }
}
