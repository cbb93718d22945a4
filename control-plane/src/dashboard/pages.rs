//! The dashboard's pages, rendered on the server from the answers of the same `JobService`
//! handlers the gRPC and REST doors call (so roles are checked there, once):
//! the overview (replica, executors, queues, last failures, every job with its schedule in
//! words), a job (settings, recent runs with a duration strip, run now / pause / resume), the
//! runs list (filters in the URL, keyset pages) and a run (the live console, fed by
//! [`super::live`]).
use std::fmt::Write as _;

use ticketmax_proto::{struct_to_json, v1};

use super::filters::RunsQuery;
use super::html::{
    self, action_button, csrf_field, duration, esc, schedule_words, state_badge, time,
    trigger_name, url_param,
};
use super::session::Session;

/// The overview: status of the replica and executors, counts, the last failures, the jobs.
pub fn overview(
    session: &Session,
    status: &v1::GetStatusResponse,
    failures: &[v1::Run],
    service: &str,
) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Overview</h1><section class=\"cards\">\
         <div class=\"card\"><h2>Replica</h2><p><b>{}</b> · {}</p><p class=\"muted\">{} · v{}</p></div>\
         <div class=\"card\"><h2>Runs</h2><p><a href=\"/runs?state=queued\"><b data-count=\"queued\">{}</b> queued</a> · \
         <a href=\"/runs?state=running\"><b data-count=\"running\">{}</b> running</a></p></div>",
        esc(&status.replica_id),
        esc(&status.role),
        esc(&status.status),
        esc(&status.version),
        status.queued_runs,
        status.running_runs,
    );
    b.push_str("<div class=\"card wide\"><h2>Executors</h2>");
    if status.executors.is_empty() {
        b.push_str("<p class=\"warn\">No executor has registered: runs wait in the queue.</p>");
    } else {
        b.push_str(
            "<table><thead><tr><th>Executor</th><th>State</th><th>Heartbeat</th>\
             <th>Running</th><th>Outbox</th><th>Version</th></tr></thead><tbody>",
        );
        for e in &status.executors {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} pending · {} sent · {} failed</td><td>{}</td></tr>",
                esc(&e.id),
                if e.live {
                    "<span class=\"badge s-succeeded\">live</span>"
                } else {
                    "<span class=\"badge s-failed\">gone</span>"
                },
                time(e.last_heartbeat_at.as_ref(), "UTC"),
                e.running,
                e.outbox_pending,
                e.emails_sent,
                e.emails_failed,
                esc(&e.version),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</div></section>");

    b.push_str("<section><h2>Last failures</h2>");
    if failures.is_empty() {
        b.push_str("<p class=\"muted\">No failed run.</p>");
    } else {
        b.push_str(&runs_table(failures, false));
    }
    b.push_str("</section>");

    // Jobs, filtered by service.
    let mut services: Vec<&str> = status.jobs.iter().map(|j| j.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let _ = write!(
        b,
        "<section><h2>Jobs</h2><form method=\"get\" action=\"/\" class=\"filters\">\
         <label>Service <select name=\"service\" data-autosubmit><option value=\"\">all</option>"
    );
    for s in &services {
        let _ = write!(
            b,
            "<option value=\"{0}\"{1}>{0}</option>",
            esc(s),
            if *s == service { " selected" } else { "" }
        );
    }
    b.push_str("</select></label><noscript><button>Filter</button></noscript></form>");
    b.push_str(
        "<table class=\"jobs\"><thead><tr><th>Job</th><th>Schedule</th><th>Next fire</th>\
         <th>Last run</th><th>Took</th><th></th></tr></thead><tbody>",
    );
    for j in status
        .jobs
        .iter()
        .filter(|j| service.is_empty() || j.service == service)
    {
        let last = j.last_run.as_ref();
        let _ = write!(
            b,
            "<tr{paused}><td><a href=\"/jobs/{link}\">{name}</a>{paused_badge}</td>\
             <td title=\"{expr}\">{words}<br><span class=\"muted\">{tz}</span></td><td>{next}</td>\
             <td>{last_state}</td><td>{took}</td><td class=\"actions\">{actions}</td></tr>",
            paused = if j.enabled { "" } else { " class=\"paused\"" },
            link = esc(&j.name),
            name = esc(&j.name),
            paused_badge = if j.enabled {
                ""
            } else {
                " <span class=\"badge s-skipped\">paused</span>"
            },
            expr = esc(&j.schedule),
            words = esc(&schedule_words(&j.schedule)),
            tz = esc(&j.timezone),
            next = if j.enabled {
                time(j.next_fire_time.as_ref(), &j.timezone)
            } else {
                "<span class=\"muted\">paused</span>".to_owned()
            },
            last_state = last.map_or_else(
                || "<span class=\"muted\">never</span>".to_owned(),
                |r| format!(
                    "<a href=\"/runs/{}\">{}</a> {}",
                    esc(&r.id),
                    state_badge(r.state),
                    time(
                        r.finished_at.as_ref().or(r.created_at.as_ref()),
                        &j.timezone
                    )
                )
            ),
            took = last.map_or_else(String::new, duration),
            actions = job_actions(session, j, true),
        );
    }
    b.push_str("</tbody></table></section>");
    b
}

/// Run now, pause or resume: for sessions that may write; nothing otherwise.
fn job_actions(session: &Session, j: &v1::Job, back_to_overview: bool) -> String {
    if !session.can_write() {
        return String::new();
    }
    let name = &j.name;
    let back = if back_to_overview {
        "<input type=\"hidden\" name=\"back\" value=\"/\">"
    } else {
        ""
    };
    let mut out = action_button(session, &format!("/jobs/{name}/trigger"), "Run now", back);
    if j.enabled {
        out.push_str(&action_button(
            session,
            &format!("/jobs/{name}/pause"),
            "Pause",
            back,
        ));
    } else {
        out.push_str(&action_button(
            session,
            &format!("/jobs/{name}/resume"),
            "Resume",
            back,
        ));
    }
    out
}

/// A table of runs; with `job_column`, the job of each.
pub fn runs_table(runs: &[v1::Run], select: bool) -> String {
    let mut b = String::from("<table class=\"runs\"><thead><tr>");
    if select {
        b.push_str("<th><span class=\"sr\">Select</span></th>");
    }
    b.push_str(
        "<th>Run</th><th>Job</th><th>State</th><th>Trigger</th><th>Scheduled for</th>\
         <th>Took</th><th>Summary or reason</th></tr></thead><tbody>",
    );
    for r in runs {
        let note = if !r.error.is_empty() {
            format!("<span class=\"err\">{}</span>", esc(&r.error))
        } else if !r.reason.is_empty() {
            esc(&r.reason)
        } else {
            r.summary
                .as_ref()
                .map(|s| esc(&struct_to_json(s).to_string()))
                .unwrap_or_default()
        };
        b.push_str("<tr>");
        if select {
            let _ = write!(
                b,
                "<td><input type=\"checkbox\" name=\"run\" value=\"{}\" form=\"bulk\" aria-label=\"select run\"></td>",
                esc(&r.id)
            );
        }
        let _ = write!(
            b,
            "<td><a href=\"/runs/{id}\"><code>{short}</code></a></td><td><a href=\"/jobs/{job}\">{job}</a></td>\
             <td>{state}</td><td>{trigger}</td><td>{at}</td><td>{took}</td><td class=\"note\">{note}</td></tr>",
            id = esc(&r.id),
            short = esc(r.id.get(..13).unwrap_or(&r.id)),
            job = esc(&r.job),
            state = state_badge(r.state),
            trigger = trigger_name(r.trigger),
            at = time(r.scheduled_for.as_ref(), "UTC"),
            took = duration(r),
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// The runs list: filters, one keyset page, the link to the next one; cancel of the selection
/// for sessions that may write.
pub fn runs(
    session: &Session,
    q: &RunsQuery,
    jobs: &[v1::Job],
    page: &v1::ListRunsResponse,
) -> String {
    let mut b = String::from("<h1>Runs</h1>");
    b.push_str(&q.form(jobs, &refresh_picker()));
    if session.can_write() {
        let _ = write!(
            b,
            "<form id=\"bulk\" method=\"post\" action=\"/runs/cancel\" class=\"bulk\">{}\
             <button type=\"submit\" data-confirm-selected>Cancel selected</button> \
             <a class=\"button\" href=\"/runs/cancel-matching?{}\">Cancel all matching…</a></form>",
            csrf_field(session),
            esc(&q.with_page(""))
        );
    }
    if page.runs.is_empty() {
        b.push_str("<p class=\"muted\">No run matches.</p>");
    } else {
        b.push_str(&runs_table(&page.runs, session.can_write()));
    }
    let first = if q.page.is_empty() {
        String::new()
    } else {
        format!("<a href=\"/runs?{}\">First page</a>", esc(&q.with_page("")))
    };
    let next = if page.next_page_token.is_empty() {
        String::new()
    } else {
        format!(
            "<a href=\"/runs?{}\" rel=\"next\">Older runs →</a>",
            esc(&q.with_page(&page.next_page_token))
        )
    };
    let _ = write!(b, "<nav class=\"pager\">{first} {next}</nav>");
    b
}

/// The refresh interval picker of list pages (the script runs it; it is paused while the tab
/// is hidden).
fn refresh_picker() -> String {
    let mut b = String::from(
        "<label class=\"refresh\">Refresh <select id=\"tm-refresh\" aria-label=\"Refresh interval\">",
    );
    for (v, label) in [
        ("0", "off"),
        ("2", "2 s"),
        ("5", "5 s"),
        ("10", "10 s"),
        ("30", "30 s"),
        ("60", "60 s"),
    ] {
        let _ = write!(b, "<option value=\"{v}\">{label}</option>");
    }
    b.push_str("</select></label>");
    b
}

/// A job: its settings and policies, actions, recent runs with a duration strip.
pub fn job(session: &Session, j: &v1::Job, runs: &[v1::Run]) -> String {
    let overlap = match v1::OverlapPolicy::try_from(j.overlap_policy) {
        Ok(v1::OverlapPolicy::QueueOne) => "queue one",
        Ok(v1::OverlapPolicy::Allow) => "allow",
        _ => "skip",
    };
    let missed = match v1::MissedTickPolicy::try_from(j.missed_tick_policy) {
        Ok(v1::MissedTickPolicy::Skip) => "skip",
        _ => "run once",
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>{name}{paused}</h1><p class=\"muted\">{desc}</p>\
         <div class=\"actions\">{actions}</div>\
         <dl class=\"settings\">\
         <dt>Schedule</dt><dd>{words} <code>{expr}</code> (default <code>{default}</code>)</dd>\
         <dt>Timezone</dt><dd>{tz}</dd>\
         <dt>Next fire</dt><dd>{next}</dd>\
         <dt>Overlap</dt><dd>{overlap}</dd>\
         <dt>Missed ticks</dt><dd>{missed}, catch-up window {window} s</dd>\
         <dt>Timeout</dt><dd>{timeout} s</dd>\
         <dt>Retries</dt><dd>{retries}</dd>\
         <dt>Last change</dt><dd>{updated} {by}</dd></dl>",
        name = esc(&j.name),
        paused = if j.enabled {
            ""
        } else {
            " <span class=\"badge s-skipped\">paused</span>"
        },
        desc = esc(&j.description),
        actions = job_actions(session, j, false),
        words = esc(&schedule_words(&j.schedule)),
        expr = esc(&j.schedule),
        default = esc(&j.default_schedule),
        tz = esc(&j.timezone),
        next = if j.enabled {
            time(j.next_fire_time.as_ref(), &j.timezone)
        } else {
            "paused".to_owned()
        },
        window = j.catch_up_window_seconds,
        timeout = j.timeout_seconds,
        retries = j.max_retries,
        updated = time(j.updated_at.as_ref(), &j.timezone),
        by = if j.updated_by.is_empty() {
            String::new()
        } else {
            format!("by {}", esc(&j.updated_by))
        },
    );
    b.push_str("<h2>Recent runs</h2>");
    b.push_str(&duration_strip(runs));
    if runs.is_empty() {
        b.push_str("<p class=\"muted\">No run yet.</p>");
    } else {
        b.push_str(&runs_table(runs, false));
        let _ = write!(
            b,
            "<p><a href=\"/runs?job={}\">All runs of this job →</a></p>",
            esc(&url_param(&j.name))
        );
    }
    b
}

/// One bar per run (oldest first), its height the run's duration against the longest; the
/// colour and the title say its state.
fn duration_strip(runs: &[v1::Run]) -> String {
    let ms = |r: &v1::Run| -> i64 {
        match (
            r.started_at
                .as_ref()
                .and_then(ticketmax_proto::from_timestamp),
            r.finished_at
                .as_ref()
                .and_then(ticketmax_proto::from_timestamp),
        ) {
            (Some(s), Some(f)) => (f - s).num_milliseconds().max(0),
            _ => 0,
        }
    };
    let longest = runs.iter().map(ms).max().unwrap_or(0).max(1);
    let mut b =
        String::from("<div class=\"strip\" role=\"img\" aria-label=\"Durations of recent runs\">");
    for r in runs.iter().rev() {
        let pct = (ms(r) * 100 / longest).max(1);
        let state = html::state_name(r.state);
        let _ = write!(
            b,
            "<a href=\"/runs/{}\" class=\"bar s-{} h{}\" title=\"{} · {}\"></a>",
            esc(&r.id),
            state.replace(' ', "-"),
            (pct + 9) / 10,
            state,
            esc(&duration(r)),
        );
    }
    b.push_str("</div>");
    b
}

/// A run: header, then the live console that [`super::live`] feeds (or replays).
pub fn run(session: &Session, r: &v1::Run, trace_url: Option<&str>) -> String {
    let mut b = String::new();
    let params = r
        .params
        .as_ref()
        .map(|p| struct_to_json(p).to_string())
        .unwrap_or_default();
    let summary = r
        .summary
        .as_ref()
        .map(|s| struct_to_json(s).to_string())
        .unwrap_or_default();
    let cancel = if session.can_write()
        && matches!(
            v1::RunState::try_from(r.state),
            Ok(v1::RunState::Queued | v1::RunState::Running)
        ) {
        action_button(
            session,
            &format!("/runs/{}/cancel", url_param(&r.id)),
            "Cancel run",
            "",
        )
    } else {
        String::new()
    };
    let trace = trace_url
        .map(|t| format!("<a href=\"{}\">Trace</a>", esc(t)))
        .unwrap_or_default();
    let _ = write!(
        b,
        "<h1>Run <code>{id}</code></h1>\
         <p><a href=\"/jobs/{job}\">{job}</a> · {trigger} · attempt {attempt} {by} {trace}</p>\
         <div class=\"actions\">{cancel}</div>\
         <section id=\"tm-run\" data-run=\"{id}\" data-state=\"{state_name}\">\
         <p>State: <span id=\"tm-state\">{state}</span></p>\
         <div class=\"progress\"><progress id=\"tm-progress\" max=\"1\" value=\"0\"></progress>\
         <span id=\"tm-progress-text\" class=\"muted\"></span></div>\
         <dl class=\"settings\"><dt>Scheduled for</dt><dd>{scheduled}</dd>\
         <dt>Created</dt><dd>{created}</dd><dt>Started</dt><dd>{started}</dd>\
         <dt>Finished</dt><dd>{finished}</dd><dt>Executor</dt><dd>{executor}</dd>\
         <dt>Parameters</dt><dd><code>{params}</code></dd>\
         <dt>Summary</dt><dd><code id=\"tm-summary\">{summary}</code></dd>\
         <dt>Error or reason</dt><dd id=\"tm-error\">{error}</dd></dl>\
         <h2>Events</h2><label>Level <select id=\"tm-level\" aria-label=\"Lowest level shown\">\
         <option value=\"debug\">debug</option><option value=\"info\" selected>info</option>\
         <option value=\"warn\">warn</option><option value=\"error\">error</option></select></label>\
         <ol id=\"tm-events\" class=\"events\" aria-live=\"polite\"></ol>\
         <noscript><p>The live console needs JavaScript; the events are at \
         <a href=\"/runs/{id}/events\">/runs/{id}/events</a>.</p></noscript></section>",
        id = esc(&r.id),
        job = esc(&r.job),
        trigger = trigger_name(r.trigger),
        attempt = r.attempt,
        by = if r.triggered_by.is_empty() {
            String::new()
        } else {
            format!("· by {}", esc(&r.triggered_by))
        },
        state_name = html::state_name(r.state),
        state = state_badge(r.state),
        scheduled = time(r.scheduled_for.as_ref(), "UTC"),
        created = time(r.created_at.as_ref(), "UTC"),
        started = time(r.started_at.as_ref(), "UTC"),
        finished = time(r.finished_at.as_ref(), "UTC"),
        executor = esc(&r.executor_id),
        params = esc(&params),
        summary = esc(&summary),
        error = esc(if r.error.is_empty() {
            &r.reason
        } else {
            &r.error
        }),
    );
    b
}

/// The sign-in form; `error` says why the last attempt failed.
pub fn login(error: Option<&str>, next: &str) -> String {
    format!(
        "<h1>Sign in</h1><form method=\"post\" action=\"/login\" class=\"login\">\
         {err}<label>API token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" \
         required autofocus></label><input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"muted\">Use a token of <code>TICKETMAX_API_TOKENS</code>: a viewer reads, an \
         operator also acts.</p>",
        err = error
            .map(|e| format!("<p class=\"err\" role=\"alert\">{}</p>", esc(e)))
            .unwrap_or_default(),
        next = esc(next),
    )
}

/// A page for an error the API answered (not found, forbidden, bad input, unavailable).
pub fn error(message: &str) -> String {
    format!(
        "<h1>Not possible</h1><p class=\"err\" role=\"alert\">{}</p><p><a href=\"/\">Overview</a></p>",
        esc(message)
    )
}

/// "Cancel everything matching": the count first, then one button that acts on what was
/// counted (runs created after the count are left alone).
pub fn cancel_matching(
    session: &Session,
    q: &RunsQuery,
    counted: &v1::CancelRunsResponse,
    shown_at: chrono::DateTime<chrono::Utc>,
) -> String {
    let total = counted.queued + counted.running;
    let mut b = format!(
        "<h1>Cancel all matching</h1><p>Filters: <strong>{}</strong>.</p>",
        esc(&q.describe())
    );
    let back = format!("/runs?{}", q.with_page(""));
    if total == 0 {
        let _ = write!(
            b,
            "<p class=\"count\" data-count=\"0\">No queued or running run matches: nothing to cancel.</p>\
             <p><a href=\"{}\">Back to the runs</a></p>",
            esc(&back)
        );
        return b;
    }
    let _ = write!(
        b,
        "<p class=\"count\" data-count=\"{total}\"><strong>{total}</strong> run{} match: \
         {} queued (cancelled at once) and {} running (their executors are asked to stop){}.</p>",
        if total == 1 { "" } else { "s" },
        counted.queued,
        counted.running,
        if counted.more {
            " — more match than one pass takes; run it again for the rest"
        } else {
            ""
        }
    );
    if session.can_write() {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/runs/cancel-matching\">{}{}\
             <input type=\"hidden\" name=\"shown_at\" value=\"{}\">\
             <label>Reason <input type=\"text\" name=\"reason\" maxlength=\"400\"></label> \
             <button type=\"submit\" class=\"danger\">Cancel {total} run{}</button> \
             <a href=\"{}\">Back</a></form>",
            csrf_field(session),
            q.hidden_fields(),
            shown_at.timestamp_micros(),
            if total == 1 { "" } else { "s" },
            esc(&back)
        );
    }
    b
}

/// What a bulk cancel did.
pub fn cancelled_matching(q: &RunsQuery, done: &v1::CancelRunsResponse) -> String {
    format!(
        "<h1>Cancelled</h1><p class=\"count\" data-cancelled=\"{}\" data-requested=\"{}\">\
         {} queued run{} cancelled; cancellation requested for {} running.{}</p>\
         <p><a href=\"/runs?{}\">Back to the runs</a></p>",
        done.queued,
        done.running,
        done.queued,
        if done.queued == 1 { "" } else { "s" },
        done.running,
        if done.more {
            " More runs match: count again to go on."
        } else {
            ""
        },
        esc(&q.with_page(""))
    )
}
