//! HTML building blocks of the dashboard: escaping (every value from the store or the user goes
//! through [`esc`]), the page layout, times (rendered as `<time>` elements that the script
//! shows in the zone the viewer picked), run-state badges, and schedules in words.
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use ticketmax_proto::{from_timestamp, v1};

use super::session::Session;

/// `s` with the five HTML-special characters escaped: safe in text and in quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` for a query-string value.
pub fn url_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Which page of the navigation is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Runs,
    Reports,
    None,
}

/// A whole page: head, navigation (with who is signed in), `body` in `<main>`.
pub fn page(title: &str, nav: Nav, session: Option<&Session>, body: &str) -> String {
    let link = |href: &str, label: &str, this: Nav| {
        let current = if nav == this {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    let user = match session {
        Some(s) => {
            let sign_out = if s.caller.is_some() {
                format!(
                    "<form method=\"post\" action=\"/logout\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <button type=\"submit\">Sign out</button></form>",
                    esc(&s.csrf)
                )
            } else {
                String::new()
            };
            format!("<span class=\"who\">{}</span>{sign_out}", esc(&s.who()))
        }
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · TicketMax Jobs</title>\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\">\
         <script src=\"/assets/dashboard.js\" defer></script></head>\
         <body><header><nav><strong class=\"brand\">TicketMax Jobs</strong>{}{}{}\
         <span class=\"spacer\"></span>\
         <label class=\"zone\">Times <select id=\"tm-zone\" aria-label=\"Time zone\">\
         <option value=\"utc\">UTC</option><option value=\"local\">My zone</option>\
         <option value=\"job\">Job's zone</option></select></label>{user}</nav></header>\
         <main id=\"tm-main\">{body}</main></body></html>",
        link("/", "Overview", Nav::Overview),
        link("/runs", "Runs", Nav::Runs),
        link("/reports", "Reports", Nav::Reports),
        title = esc(title),
    )
}

/// A `<time>` element for `t`, in UTC; the script rewrites the text in the zone picked (and
/// `tz`, the job's zone, for "Job's zone") with the relative time beside it.
pub fn time(t: Option<&prost_types::Timestamp>, tz: &str) -> String {
    match t.and_then(from_timestamp) {
        Some(t) => time_at(t, tz),
        None => "<span class=\"muted\">—</span>".to_owned(),
    }
}

pub fn time_at(t: DateTime<Utc>, tz: &str) -> String {
    format!(
        "<time datetime=\"{}\" data-tz=\"{}\">{}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        esc(tz),
        t.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// A run's duration, when it started (and, while it runs, so far).
pub fn duration(run: &v1::Run) -> String {
    let Some(start) = run.started_at.as_ref().and_then(from_timestamp) else {
        return "<span class=\"muted\">—</span>".to_owned();
    };
    let end = run
        .finished_at
        .as_ref()
        .and_then(from_timestamp)
        .unwrap_or_else(Utc::now);
    human_duration((end - start).num_milliseconds())
}

pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// The run state's short name ("succeeded").
pub fn state_name(state: i32) -> &'static str {
    match v1::RunState::try_from(state).unwrap_or(v1::RunState::Unspecified) {
        v1::RunState::Queued => "queued",
        v1::RunState::Running => "running",
        v1::RunState::Succeeded => "succeeded",
        v1::RunState::Failed => "failed",
        v1::RunState::Cancelled => "cancelled",
        v1::RunState::TimedOut => "timed out",
        v1::RunState::Skipped => "skipped",
        v1::RunState::Unspecified => "unknown",
    }
}

/// A badge for the run state (colour by class, the name as text: readable without colour).
pub fn state_badge(state: i32) -> String {
    let name = state_name(state);
    format!(
        "<span class=\"badge s-{}\" data-state>{name}</span>",
        name.replace(' ', "-")
    )
}

pub fn trigger_name(trigger: i32) -> &'static str {
    match v1::Trigger::try_from(trigger).unwrap_or(v1::Trigger::Unspecified) {
        v1::Trigger::Schedule => "schedule",
        v1::Trigger::Manual | v1::Trigger::Unspecified => "manual",
    }
}

/// A hidden field with the session's CSRF token.
pub fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// A one-button POST form.
pub fn action_button(session: &Session, action: &str, label: &str, extra: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}{extra}\
         <button type=\"submit\">{}</button></form>",
        esc(action),
        csrf_field(session),
        esc(label)
    )
}

/// A cron expression in words, for the common shapes ("every 5 minutes", "daily at 02:00",
/// "Mondays at 08:00"); the expression itself otherwise. Six-field expressions (seconds first)
/// and named ones are described when their shape is one of these.
pub fn schedule_words(expr: &str) -> String {
    let named = match expr.trim() {
        "EVERY_SECOND" => Some("* * * * * *"),
        "EVERY_MINUTE" => Some("* * * * *"),
        "EVERY_5_MINUTES" => Some("*/5 * * * *"),
        "EVERY_10_MINUTES" => Some("*/10 * * * *"),
        "EVERY_30_MINUTES" => Some("*/30 * * * *"),
        "EVERY_HOUR" => Some("0 * * * *"),
        "EVERY_DAY_AT_MIDNIGHT" => Some("0 0 * * *"),
        _ => None,
    };
    let fields: Vec<&str> = named.unwrap_or(expr).split_whitespace().collect();
    let (sec, f) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        _ => return expr.to_owned(),
    };
    let (min, hour, dom, month, dow) = (f[0], f[1], f[2], f[3], f[4]);
    let every = |unit: &str, step: &str| -> String {
        if step == "1" {
            format!("every {unit}")
        } else {
            format!("every {step} {unit}s")
        }
    };
    let step = |field: &str| -> Option<String> {
        if field == "*" {
            Some("1".into())
        } else {
            field
                .strip_prefix("*/")
                .filter(|s| s.parse::<u32>().is_ok())
                .map(str::to_owned)
        }
    };
    let num = |field: &str| field.parse::<u32>().ok();
    let anyday = dom == "*" && month == "*" && dow == "*";
    if sec != "0" {
        if let Some(s) = step(sec)
            && min == "*"
            && hour == "*"
            && anyday
        {
            return every("second", &s);
        }
        return expr.to_owned();
    }
    if anyday && hour == "*" {
        if let Some(s) = step(min) {
            return every("minute", &s);
        }
        if let Some(m) = num(min) {
            return format!("hourly at :{m:02}");
        }
    }
    if anyday
        && let Some(s) = hour.strip_prefix("*/").filter(|s| s.parse::<u32>().is_ok())
        && let Some(m) = num(min)
    {
        return format!("every {s} hours at :{m:02}");
    }
    let (Some(m), Some(h)) = (num(min), num(hour)) else {
        return expr.to_owned();
    };
    let at = format!("{h:02}:{m:02}");
    if anyday {
        return format!("daily at {at}");
    }
    const DAYS: [&str; 7] = [
        "Sundays",
        "Mondays",
        "Tuesdays",
        "Wednesdays",
        "Thursdays",
        "Fridays",
        "Saturdays",
    ];
    if dom == "*" && month == "*" {
        if let Some(d) = num(dow).filter(|d| *d <= 7) {
            return format!("{} at {at}", DAYS[(d % 7) as usize]);
        }
        if dow == "1-5" || dow.eq_ignore_ascii_case("MON-FRI") {
            return format!("weekdays at {at}");
        }
        let names = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
        if let Some(i) = names.iter().position(|n| dow.eq_ignore_ascii_case(n)) {
            return format!("{} at {at}", DAYS[i]);
        }
    }
    if month == "*"
        && dow == "*"
        && let Some(d) = num(dom)
    {
        return format!("monthly on day {d} at {at}");
    }
    if dow == "*"
        && let (Some(d), Some(mo)) = (num(dom), num(month))
    {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        if (1..=12).contains(&mo) {
            return format!("yearly on {d} {} at {at}", MONTHS[(mo - 1) as usize]);
        }
    }
    expr.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(url_param("a/b c&d"), "a%2Fb%20c%26d");
    }

    #[test]
    fn schedules_in_words() {
        for (expr, words) in [
            ("*/5 * * * *", "every 5 minutes"),
            ("* * * * *", "every minute"),
            ("EVERY_5_MINUTES", "every 5 minutes"),
            ("* * * * * *", "every second"),
            ("*/10 * * * * *", "every 10 seconds"),
            ("0 * * * *", "hourly at :00"),
            ("15 * * * *", "hourly at :15"),
            ("0 */4 * * *", "every 4 hours at :00"),
            ("0 2 * * *", "daily at 02:00"),
            ("0 8 * * 1", "Mondays at 08:00"),
            ("0 8 * * 0", "Sundays at 08:00"),
            ("0 8 * * 7", "Sundays at 08:00"),
            ("0 8 * * MON", "Mondays at 08:00"),
            ("30 9 * * 1-5", "weekdays at 09:30"),
            ("0 6 1 * *", "monthly on day 1 at 06:00"),
            ("0 0 1 1 *", "yearly on 1 January at 00:00"),
            ("5 4 * 2 1", "5 4 * 2 1"),
            ("not a cron", "not a cron"),
        ] {
            assert_eq!(schedule_words(expr), words, "{expr}");
        }
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_duration(250), "250 ms");
        assert_eq!(human_duration(1_500), "1.5 s");
        assert_eq!(human_duration(125_000), "2 min 5 s");
        assert_eq!(human_duration(3_720_000), "1 h 2 min");
        assert_eq!(human_duration(-5), "0 ms");
    }
}
