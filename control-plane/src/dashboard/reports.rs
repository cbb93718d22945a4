//! Reports: the list by kind and period, and one report rendered as tables beside the previous
//! period of the same kind, with the change of every number, and charts of each number across
//! the latest periods; downloads as JSON and CSV.
use std::fmt::Write as _;

use serde_json::Value;
use ticketmax_proto::{struct_to_json, v1};

use super::html::{esc, time, url_param};

/// The report list, newest first, with the kinds to filter by.
pub fn list(kind: &str, kinds: &[String], reports: &[v1::Report]) -> String {
    let mut b = String::from(
        "<h1>Reports</h1><form method=\"get\" action=\"/reports\" class=\"filters\">\
         <label>Kind <select name=\"kind\" data-autosubmit><option value=\"\">all</option>",
    );
    for k in kinds {
        let _ = write!(
            b,
            "<option value=\"{0}\"{1}>{0}</option>",
            esc(k),
            if k == kind { " selected" } else { "" }
        );
    }
    b.push_str("</select></label><noscript><button>Filter</button></noscript></form>");
    if reports.is_empty() {
        b.push_str("<p class=\"muted\">No report yet.</p>");
        return b;
    }
    b.push_str(
        "<table><thead><tr><th>Kind</th><th>Period</th><th>Job</th><th>Made</th></tr></thead><tbody>",
    );
    for r in reports {
        let _ = write!(
            b,
            "<tr><td><a href=\"/reports/{id}\">{kind}</a></td><td>{period}</td><td><a href=\"/jobs/{job}\">{job}</a></td><td>{at}</td></tr>",
            id = url_param(&r.id),
            kind = esc(&r.kind),
            period = esc(&r.period),
            job = esc(&r.job),
            at = time(r.created_at.as_ref(), "UTC"),
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// `(path, value)` of every leaf of `v`, paths joined with dots (array items by index).
pub fn flatten(v: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    walk(&key(k), child, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(&key(&i.to_string()), child, out);
                }
            }
            leaf => out.push((prefix.to_owned(), leaf.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The report as CSV: `field,value` rows of its flattened body (RFC 4180 quoting).
pub fn csv(r: &v1::Report) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let body = r.body.as_ref().map(struct_to_json).unwrap_or(Value::Null);
    let mut out = String::from("field,value\r\n");
    for (k, v) in flatten(&body) {
        let _ = write!(out, "{},{}\r\n", quote(&k), quote(&cell(&v)));
    }
    out
}

/// One report: its fields as a table beside the previous period's, with the change of each
/// number and a pair of bars (this period, the previous) scaled to the larger of the two; then
/// the history of each number across the latest periods of the kind (`same_kind`).
pub fn page(r: &v1::Report, previous: Option<&v1::Report>, same_kind: &[v1::Report]) -> String {
    let body = r.body.as_ref().map(struct_to_json).unwrap_or(Value::Null);
    let prev = previous
        .and_then(|p| p.body.as_ref())
        .map(struct_to_json)
        .unwrap_or(Value::Null);
    let prev_fields: std::collections::HashMap<String, Value> =
        flatten(&prev).into_iter().collect();
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>{kind} · {period}</h1><p class=\"muted\">by <a href=\"/jobs/{job}\">{job}</a> in \
         <a href=\"/runs/{run}\">run {run_short}</a> · {at}</p>\
         <p class=\"actions\"><a href=\"/reports/{id}.json\" download>JSON</a> \
         <a href=\"/reports/{id}.csv\" download>CSV</a></p>",
        kind = esc(&r.kind),
        period = esc(&r.period),
        job = esc(&r.job),
        run = esc(&r.run_id),
        run_short = esc(r.run_id.get(..13).unwrap_or(&r.run_id)),
        at = time(r.created_at.as_ref(), "UTC"),
        id = url_param(&r.id),
    );
    let previous_label = previous.map_or_else(
        || "no previous period".to_owned(),
        |p| {
            format!(
                "<a href=\"/reports/{}\">{}</a>",
                url_param(&p.id),
                esc(&p.period)
            )
        },
    );
    let _ = write!(
        b,
        "<table class=\"report\"><thead><tr><th>Field</th><th>{}</th><th>{}</th><th>Change</th><th class=\"muted\">this / previous</th></tr></thead><tbody>",
        esc(&r.period),
        previous_label
    );
    for (k, v) in flatten(&body) {
        let before = prev_fields.get(&k);
        let (change, bar) = match (v.as_f64(), before.and_then(Value::as_f64)) {
            (Some(now), Some(then)) => {
                let delta = now - then;
                let pct = if then != 0.0 {
                    format!(" ({:+.1}%)", delta / then.abs() * 100.0)
                } else {
                    String::new()
                };
                let top = now.abs().max(then.abs()).max(f64::MIN_POSITIVE);
                let step = |x: f64| ((x.abs() / top) * 10.0).ceil().clamp(1.0, 10.0) as u32;
                (
                    format!("{}{pct}", trim_number(delta, true)),
                    format!(
                        "<span class=\"pair\"><span class=\"hbar w{}\" title=\"{}\"></span>\
                         <span class=\"hbar prev w{}\" title=\"previous\"></span></span>",
                        step(now),
                        esc(&r.period),
                        step(then)
                    ),
                )
            }
            (Some(_), None) => ("new".to_owned(), String::new()),
            _ => (String::new(), String::new()),
        };
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{bar}</td></tr>",
            esc(&k),
            esc(&cell(&v)),
            esc(&before.map(cell).unwrap_or_default()),
            esc(&change),
        );
    }
    b.push_str("</tbody></table>");
    b.push_str(&history(r, same_kind));
    b
}

/// How many periods the history charts show, ending with the report's own.
const HISTORY: usize = 12;

/// A bar chart per number of the report (the first eight) across the latest periods of its
/// kind up to its own, which is highlighted; each bar says its period and value on hover.
/// Inline SVG with presentation attributes only, so the content security policy holds.
fn history(r: &v1::Report, same_kind: &[v1::Report]) -> String {
    let mut periods: Vec<&v1::Report> = same_kind
        .iter()
        .filter(|o| o.period <= r.period && o.id != r.id)
        .collect();
    periods.push(r);
    periods.sort_by(|a, b| a.period.cmp(&b.period));
    periods.dedup_by(|a, b| a.period == b.period);
    let periods = &periods[periods.len().saturating_sub(HISTORY)..];
    if periods.len() < 2 {
        return String::new();
    }
    let bodies: Vec<std::collections::HashMap<String, Value>> = periods
        .iter()
        .map(|p| {
            flatten(&p.body.as_ref().map(struct_to_json).unwrap_or(Value::Null))
                .into_iter()
                .collect()
        })
        .collect();
    let body = r.body.as_ref().map(struct_to_json).unwrap_or(Value::Null);
    let fields: Vec<String> = flatten(&body)
        .into_iter()
        .filter(|(_, v)| v.is_number())
        .map(|(k, _)| k)
        .take(8)
        .collect();
    if fields.is_empty() {
        return String::new();
    }
    let (w, h, gap) = (16.0_f64, 48.0_f64, 4.0_f64);
    let mut b = format!(
        "<h2>History</h2><p class=\"muted\">The last {} periods of {}; this one is highlighted.</p>\
         <div class=\"history\">",
        periods.len(),
        esc(&r.kind)
    );
    for field in &fields {
        let values: Vec<Option<f64>> = bodies
            .iter()
            .map(|m| m.get(field).and_then(Value::as_f64))
            .collect();
        let top = values
            .iter()
            .flatten()
            .fold(0.0_f64, |m, v| m.max(v.abs()))
            .max(f64::MIN_POSITIVE);
        let width = periods.len() as f64 * (w + gap);
        let _ = write!(
            b,
            "<figure><svg viewBox=\"0 0 {width} {h}\" width=\"{width}\" height=\"{h}\" role=\"img\" \
             aria-label=\"{f} over {n} periods\">",
            f = esc(field),
            n = periods.len()
        );
        for (i, (p, v)) in periods.iter().zip(&values).enumerate() {
            let Some(v) = v else { continue };
            let bar = (v.abs() / top * (h - 2.0)).max(1.0);
            let _ = write!(
                b,
                "<rect class=\"{cls}\" x=\"{x}\" y=\"{y:.1}\" width=\"{w}\" height=\"{bar:.1}\" data-period=\"{period}\">\
                 <title>{period}: {value}</title></rect>",
                cls = if p.id == r.id { "now" } else { "then" },
                x = i as f64 * (w + gap),
                y = h - bar,
                period = esc(&p.period),
                value = esc(&trim_number(*v, false)),
            );
        }
        let _ = write!(
            b,
            "</svg><figcaption><code>{}</code></figcaption></figure>",
            esc(field)
        );
    }
    b.push_str("</div>");
    b
}

fn trim_number(x: f64, signed: bool) -> String {
    let text = if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.2}")
    };
    if signed && x > 0.0 {
        format!("+{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ticketmax_proto::json_to_struct;

    fn report(id: &str, period: &str, body: Value) -> v1::Report {
        v1::Report {
            id: id.into(),
            kind: "daily-analytics".into(),
            period: period.into(),
            job: "analytics/generate-daily-analytics".into(),
            run_id: "run-1".into(),
            created_at: None,
            body: Some(json_to_struct(&body)),
        }
    }

    #[test]
    fn a_report_is_shown_beside_the_previous_period_with_the_change() {
        let now = report(
            "r2",
            "2026-11-28",
            json!({"bookings": 120, "revenue": {"NGN": 500}, "note": "<b>"}),
        );
        let before = report(
            "r1",
            "2026-11-27",
            json!({"bookings": 100, "revenue": {"NGN": 500}}),
        );
        let later = report("r3", "2026-11-29", json!({"bookings": 999}));
        let all = [later, now.clone(), before.clone()];
        let html = page(&now, Some(&before), &all);
        assert!(html.contains("+20 (+20.0%)"), "{html}");
        assert!(html.contains("<code>revenue.NGN</code>"), "{html}");
        assert!(html.contains("&lt;b&gt;"), "escaped: {html}");
        assert!(html.contains("2026-11-27"));
        // This period's bar is full, the previous one's 100/120 of it.
        assert!(
            html.contains("class=\"hbar w10\"") && html.contains("class=\"hbar prev w9\""),
            "{html}"
        );
        // The history: the two periods up to this one, oldest first, this one highlighted; a
        // later period is not this report's history; text fields have no chart.
        assert!(html.contains("<h2>History</h2>"), "{html}");
        let bars: Vec<&str> = html
            .match_indices("data-period=\"")
            .map(|(i, _)| &html[i + 13..i + 23])
            .collect();
        assert_eq!(
            bars,
            ["2026-11-27", "2026-11-28", "2026-11-27", "2026-11-28"],
            "{html}"
        );
        assert!(html.contains("<title>2026-11-28: 120</title>"), "{html}");
        assert!(html.contains("class=\"now\""), "{html}");
        assert!(!html.contains("999"), "{html}");
        assert!(!html.contains("<figcaption><code>note"), "{html}");
        let alone = page(&now, None, &[]);
        assert!(alone.contains("no previous period"));
        assert!(!alone.contains("History"), "one period has no history");
    }

    #[test]
    fn csv_has_one_row_per_field_and_quotes_what_needs_it() {
        let r = report(
            "r",
            "p",
            json!({"a": 1, "b": {"c": "x,y"}, "d": [true, "say \"hi\""]}),
        );
        assert_eq!(
            csv(&r),
            "field,value\r\na,1\r\nb.c,\"x,y\"\r\nd.0,true\r\nd.1,\"say \"\"hi\"\"\"\r\n"
        );
    }
}
