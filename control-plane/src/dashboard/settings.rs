//! A job's settings on its page: the edit form (schedule, timezone, overlap and missed-tick
//! policies, catch-up window, timeout, retries), the server-computed preview of the next fire
//! times of the schedule being edited, with the DST changes they cross, and the tick ledger:
//! the job's latest intended fire times, each ran, skipped or missed, with the reason.
use std::fmt::Write as _;

use chrono::{DateTime, Offset, TimeZone, Utc};
use ticketmax_proto::{from_timestamp, v1};

use super::html::{csrf_field, esc, schedule_words, state_name, time_at};
use super::session::Session;
use crate::cron::Schedule;

/// The schedule and zone a preview is for (the job's own, or the ones being edited).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct PreviewQuery {
    pub schedule: Option<String>,
    pub timezone: Option<String>,
}

/// The next `n` fire times of `expr` in `tz` after `now`, or the parser's message.
pub fn next_fires(
    expr: &str,
    tz: &str,
    now: DateTime<Utc>,
    n: usize,
) -> Result<Vec<DateTime<Utc>>, String> {
    let schedule = Schedule::parse(expr, tz).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    let mut cursor = now;
    while out.len() < n {
        match schedule.next_after(cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    Ok(out)
}

/// The DST changes of `tz` between `from` and the last of `fires`, as sentences: "Clocks
/// change on Sun 29 Mar 2026 (+00:00 → +01:00): fire times that fall in the skipped hour run
/// at the first instant after it; repeated ones run once." Empty for zones without DST in
/// that span.
pub fn dst_notes(tz: &str, from: DateTime<Utc>, fires: &[DateTime<Utc>]) -> Vec<String> {
    let Ok(zone) = crate::cron::parse_timezone(tz) else {
        return Vec::new();
    };
    let Some(last) = fires.last().copied() else {
        return Vec::new();
    };
    let offset = |t: DateTime<Utc>| zone.offset_from_utc_datetime(&t.naive_utc()).fix();
    let mut notes = Vec::new();
    // Hour by hour is fine-grained enough for every zone's transitions; bounded to a year.
    let end = last.min(from + chrono::Duration::days(366));
    let mut t = from;
    let mut before = offset(t);
    while t < end {
        let next = t + chrono::Duration::hours(1);
        let after = offset(next);
        if after != before {
            let day = next.with_timezone(&zone).format("%a %-d %b %Y");
            let what = if after.local_minus_utc() > before.local_minus_utc() {
                "the skipped hour's fire times run at the first instant after it"
            } else {
                "fire times in the repeated hour run once"
            };
            notes.push(format!(
                "Clocks change on {day} ({before} → {after}): {what}."
            ));
        }
        before = after;
        t = next;
    }
    notes
}

/// The preview block: the next 10 fire times in the job's zone and UTC (and, by the script,
/// the viewer's), the DST notes, or the reason the schedule is refused.
pub fn preview(expr: &str, tz: &str, now: DateTime<Utc>) -> String {
    let mut b = format!(
        "<section class=\"preview\" aria-live=\"polite\"><h2>Next fire times of <code>{}</code> in {}</h2>",
        esc(expr),
        esc(tz)
    );
    match next_fires(expr, tz, now, 10) {
        Err(message) => {
            let _ = write!(b, "<p class=\"err\" role=\"alert\">{}</p>", esc(&message));
        }
        Ok(fires) => {
            let zone = crate::cron::parse_timezone(tz).ok();
            let _ = write!(
                b,
                "<p>{}</p><table><thead><tr><th>In {}</th><th>UTC</th><th>In your zone</th></tr></thead><tbody>",
                esc(&schedule_words(expr)),
                esc(tz)
            );
            for t in &fires {
                let local = zone.map_or_else(String::new, |z| {
                    t.with_timezone(&z)
                        .format("%a %Y-%m-%d %H:%M:%S %:z")
                        .to_string()
                });
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&local),
                    t.format("%Y-%m-%d %H:%M:%S"),
                    time_at(*t, "local")
                );
            }
            b.push_str("</tbody></table>");
            for note in dst_notes(tz, now, &fires) {
                let _ = write!(b, "<p class=\"warn\">{}</p>", esc(&note));
            }
        }
    }
    b.push_str("</section>");
    b
}

/// The edit form, filled with `schedule` and `timezone` (the ones being previewed) and the
/// job's other settings. Viewers get none.
pub fn edit_form(session: &Session, j: &v1::Job, schedule: &str, timezone: &str) -> String {
    if !session.can_write() {
        return String::new();
    }
    let selected = |cond: bool| if cond { " selected" } else { "" };
    let overlap = v1::OverlapPolicy::try_from(j.overlap_policy).unwrap_or(v1::OverlapPolicy::Skip);
    let missed = v1::MissedTickPolicy::try_from(j.missed_tick_policy)
        .unwrap_or(v1::MissedTickPolicy::RunOnce);
    format!(
        "<section><h2>Edit</h2><form method=\"post\" action=\"/jobs/{name}/update\" class=\"edit\">{csrf}\
         <label>Schedule <input name=\"schedule\" value=\"{schedule}\" required maxlength=\"200\" \
         aria-describedby=\"schedule-help\"></label>\
         <small id=\"schedule-help\" class=\"muted\">cron, 5 fields (or 6 with seconds first), or a name such as EVERY_5_MINUTES</small>\
         <label>Timezone <input name=\"timezone\" value=\"{timezone}\" required maxlength=\"64\"></label>\
         <label>Overlap <select name=\"overlap\"><option value=\"skip\"{o1}>skip</option>\
         <option value=\"queue_one\"{o2}>queue one</option><option value=\"allow\"{o3}>allow</option></select></label>\
         <label>Missed ticks <select name=\"missed\"><option value=\"run_once\"{m1}>run once</option>\
         <option value=\"skip\"{m2}>skip</option></select></label>\
         <label>Catch-up window (s) <input name=\"catch_up\" type=\"number\" min=\"0\" value=\"{catch_up}\"></label>\
         <label>Timeout (s) <input name=\"timeout\" type=\"number\" min=\"1\" value=\"{timeout}\"></label>\
         <label>Retries <input name=\"retries\" type=\"number\" min=\"0\" value=\"{retries}\"></label>\
         <div class=\"actions\"><button type=\"submit\" formmethod=\"get\" formaction=\"/jobs/{name}\" formnovalidate>Preview</button>\
         <button type=\"submit\">Save</button></div></form></section>",
        name = esc(&j.name),
        csrf = csrf_field(session),
        schedule = esc(schedule),
        timezone = esc(timezone),
        o1 = selected(
            overlap == v1::OverlapPolicy::Skip || overlap == v1::OverlapPolicy::Unspecified
        ),
        o2 = selected(overlap == v1::OverlapPolicy::QueueOne),
        o3 = selected(overlap == v1::OverlapPolicy::Allow),
        m1 = selected(missed != v1::MissedTickPolicy::Skip),
        m2 = selected(missed == v1::MissedTickPolicy::Skip),
        catch_up = j.catch_up_window_seconds,
        timeout = j.timeout_seconds,
        retries = j.max_retries,
    )
}

/// The `UpdateJob` a submitted edit form asks for; bad numbers and unknown policies are
/// refused here with the field's name, before the API validates the rest.
pub fn update_request(
    name: &str,
    form: &[(String, String)],
) -> Result<v1::UpdateJobRequest, String> {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim());
    let number = |k: &str, what: &str| -> Result<Option<u32>, String> {
        match get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("{what} must be a whole number of 0 or more, not '{v}'")),
        }
    };
    let overlap = match get("overlap") {
        None | Some("") => v1::OverlapPolicy::Unspecified,
        Some("skip") => v1::OverlapPolicy::Skip,
        Some("queue_one") => v1::OverlapPolicy::QueueOne,
        Some("allow") => v1::OverlapPolicy::Allow,
        Some(other) => return Err(format!("no overlap policy '{other}'")),
    };
    let missed = match get("missed") {
        None | Some("") => v1::MissedTickPolicy::Unspecified,
        Some("run_once") => v1::MissedTickPolicy::RunOnce,
        Some("skip") => v1::MissedTickPolicy::Skip,
        Some(other) => return Err(format!("no missed-tick policy '{other}'")),
    };
    Ok(v1::UpdateJobRequest {
        name: name.to_owned(),
        schedule: get("schedule").filter(|s| !s.is_empty()).map(str::to_owned),
        timezone: get("timezone").filter(|s| !s.is_empty()).map(str::to_owned),
        enabled: None,
        overlap_policy: overlap.into(),
        missed_tick_policy: missed.into(),
        catch_up_window_seconds: number("catch_up", "The catch-up window")?,
        timeout_seconds: number("timeout", "The timeout")?,
        max_retries: number("retries", "Retries")?,
    })
}

/// The tick ledger: the job's latest intended fire times (schedule runs, oldest first), each
/// as a cell saying whether it ran (and how it ended), was skipped or missed, and why.
pub fn ledger(runs: &[v1::Run], tz: &str) -> String {
    let ticks: Vec<&v1::Run> = runs
        .iter()
        .filter(|r| r.trigger == i32::from(v1::Trigger::Schedule))
        .collect();
    if ticks.is_empty() {
        return "<p class=\"muted\">No scheduled tick yet.</p>".to_owned();
    }
    let mut b = String::from("<ol class=\"ledger\" aria-label=\"Latest fire times\">");
    for r in ticks.iter().rev() {
        let state = state_name(r.state);
        let at = r
            .scheduled_for
            .as_ref()
            .and_then(from_timestamp)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let verdict = if state == "skipped" {
            if r.reason.starts_with("missed") {
                "missed"
            } else {
                "skipped"
            }
        } else {
            "ran"
        };
        let why = if r.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", r.reason)
        };
        let _ = write!(
            b,
            "<li class=\"tick s-{cls}\" data-verdict=\"{verdict}\"><a href=\"/runs/{id}\" \
             title=\"{at} — {verdict} ({state}){why}\"><span class=\"sr\">{at} {verdict}{why}</span></a></li>",
            cls = state.replace(' ', "-"),
            id = esc(&r.id),
            at = esc(&at),
            why = esc(&why),
        );
    }
    b.push_str("</ol>");
    let _ = write!(
        b,
        "<p class=\"muted\">Oldest first; hover or focus a tick for its time and reason. Times of the \
         job's zone ({}) are in the run pages.</p>",
        esc(tz)
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_preview_lists_the_next_fire_times_in_the_jobs_zone() {
        let fires = next_fires("0 8 * * 1", "Africa/Lagos", at("2026-11-28T12:00:00Z"), 3)
            .expect("a valid schedule");
        assert_eq!(
            fires,
            vec![
                at("2026-11-30T07:00:00Z"),
                at("2026-12-07T07:00:00Z"),
                at("2026-12-14T07:00:00Z")
            ]
        );
        let bad = next_fires("61 * * * *", "UTC", at("2026-11-28T12:00:00Z"), 3);
        assert!(bad.is_err(), "{bad:?}");
        let zone = next_fires("* * * * *", "Mars/Olympus", at("2026-11-28T12:00:00Z"), 3);
        assert!(zone.expect_err("unknown zone").contains("Mars/Olympus"));
    }

    #[test]
    fn dst_changes_crossed_by_the_preview_are_called_out() {
        let from = at("2026-03-28T12:00:00Z");
        let fires = next_fires("30 2 * * *", "Europe/London", from, 3).expect("valid");
        let notes = dst_notes("Europe/London", from, &fires);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("Sun 29 Mar 2026"), "{notes:?}");
        assert!(notes[0].contains("skipped hour"), "{notes:?}");
        let autumn = at("2026-10-24T12:00:00Z");
        let fires = next_fires("30 1 * * *", "Europe/London", autumn, 3).expect("valid");
        let notes = dst_notes("Europe/London", autumn, &fires);
        assert!(notes[0].contains("repeated hour"), "{notes:?}");
        assert!(
            dst_notes("Africa/Lagos", from, &fires).is_empty(),
            "Lagos has no DST"
        );
    }

    #[test]
    fn the_edit_form_turns_into_one_update_and_refuses_bad_fields() {
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        let req = update_request(
            "a/b",
            &form(&[
                ("schedule", "*/5 * * * *"),
                ("timezone", "UTC"),
                ("overlap", "queue_one"),
                ("missed", "skip"),
                ("catch_up", "600"),
                ("timeout", "30"),
                ("retries", ""),
            ]),
        )
        .expect("a valid form");
        assert_eq!(req.schedule.as_deref(), Some("*/5 * * * *"));
        assert_eq!(req.overlap_policy, i32::from(v1::OverlapPolicy::QueueOne));
        assert_eq!(
            req.missed_tick_policy,
            i32::from(v1::MissedTickPolicy::Skip)
        );
        assert_eq!(req.catch_up_window_seconds, Some(600));
        assert_eq!(req.max_retries, None, "empty keeps the value");
        let err = update_request("a/b", &form(&[("timeout", "-1")])).expect_err("negative");
        assert!(err.contains("timeout"), "{err}");
        assert!(update_request("a/b", &form(&[("overlap", "sometimes")])).is_err());
    }

    #[test]
    fn the_ledger_says_ran_skipped_or_missed_with_the_reason() {
        let run = |state: v1::RunState, reason: &str, trigger: v1::Trigger| v1::Run {
            id: format!("r-{reason}"),
            state: state.into(),
            trigger: trigger.into(),
            reason: reason.into(),
            ..Default::default()
        };
        let html = ledger(
            &[
                run(
                    v1::RunState::Skipped,
                    "missed: no control plane was running; missed-tick policy is skip",
                    v1::Trigger::Schedule,
                ),
                run(
                    v1::RunState::Skipped,
                    "overlap skip: run x is active",
                    v1::Trigger::Schedule,
                ),
                run(v1::RunState::Succeeded, "", v1::Trigger::Schedule),
                run(v1::RunState::Succeeded, "manual", v1::Trigger::Manual),
            ],
            "UTC",
        );
        assert_eq!(
            html.matches("<li").count(),
            3,
            "manual runs are not ticks: {html}"
        );
        assert!(html.contains("data-verdict=\"missed\""));
        assert!(html.contains("data-verdict=\"skipped\""));
        assert!(html.contains("overlap skip: run x is active"));
        assert!(html.contains("data-verdict=\"ran\""));
    }
}
