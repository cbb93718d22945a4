//! The operator dashboard on the control plane's HTTP port, against the real binaries on
//! Postgres, spoken to with hand-written HTTP (what a browser sends: cookies, forms,
//! `Last-Event-ID`): sign-in with viewer and operator tokens, the session cookie's attributes,
//! a viewer's forged POST and a POST without or with a wrong CSRF token refused with nothing
//! changed, run now / pause / resume recorded under the operator's name, a run's events as
//! Server-Sent Events resumed after the last id seen with no gap and no duplicate, sign-out,
//! and an open dashboard (no tokens) whose pages escape what the data says.
use std::net::SocketAddr;

use ticketmax_e2e::http::{HttpResponse, request};
use ticketmax_e2e::jobs::{CANCEL_EXPIRED, CLEAN_CACHE};
use ticketmax_e2e::tokens::{OPERATOR_TOKEN, VIEWER_TOKEN};
use ticketmax_e2e::*;

async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> HttpResponse {
    let mut headers = vec![];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    request(addr, "GET", path, &headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn post(addr: SocketAddr, path: &str, cookie: Option<&str>, form: &str) -> HttpResponse {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    request(addr, "POST", path, &headers, form)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Signs in with `token`; the session cookie (`tm_session=...`).
async fn sign_in(addr: SocketAddr, token: &str) -> String {
    let resp = post(addr, "/login", None, &format!("token={token}&next=%2F")).await;
    assert_eq!(resp.status, 303, "{resp:?}");
    assert_eq!(resp.header("location"), Some("/"));
    let set = resp
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("tm_session="))
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "cookie without {attr}: {set}");
    }
    assert!(!set.contains("Secure"), "plaintext port, no Secure: {set}");
    assert!(!set.contains(token), "the token went to the browser: {set}");
    resp.cookie("tm_session").expect("the cookie")
}

/// The CSRF token of the first form on the page.
fn csrf(page: &HttpResponse) -> String {
    let at = page
        .body
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field on the page:\n{}", page.body));
    let rest = &page.body[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of the value")].to_owned()
}

async fn manual_runs(app: &TestApp, job: &str) -> i64 {
    app.control_scalar(&format!(
        "SELECT count(*) FROM runs WHERE job = '{job}' AND trigger = 'manual'"
    ))
    .await
}

/// The `id:` lines of an SSE body, in order.
fn sse_ids(body: &str) -> Vec<u64> {
    body.lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().expect("a numeric event id"))
        .collect()
}

#[tokio::test]
async fn sign_in_roles_csrf_actions_and_the_live_console() {
    let app = TestApp::builder().viewer_and_operator().spawn().await;
    let http = app.control_planes[0].http_addr;
    let job_path = format!("/jobs/{CANCEL_EXPIRED}");

    // Signed out: every page sends to the sign-in page, which says where to come back.
    let resp = get(http, "/", None).await;
    assert_eq!(resp.status, 303, "{resp:?}");
    assert_eq!(resp.header("location"), Some("/login?next=%2F"));
    let resp = get(http, "/login", None).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.contains("type=\"password\""), "{}", resp.body);
    let csp = resp.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    // A wrong token: refused, no session.
    let resp = post(http, "/login", None, "token=not-a-token&next=%2F").await;
    assert_eq!(resp.status, 401, "{resp:?}");
    assert!(resp.cookie("tm_session").is_none());
    // An event stream needs a session too.
    assert_eq!(get(http, "/runs/x/events", None).await.status, 401);

    // The viewer reads and sees no write control.
    let viewer = sign_in(http, VIEWER_TOKEN).await;
    let page = get(http, "/", Some(&viewer)).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains(CANCEL_EXPIRED), "{}", page.body);
    assert!(page.body.contains("dashboard (viewer)"), "who is signed in");
    assert!(page.body.contains("every 5 minutes"), "schedules in words");
    assert!(
        !page.body.contains("Run now"),
        "a viewer sees no write control"
    );
    assert!(!page.body.contains("Pause</button>"));
    // A forged POST with the viewer's own, valid CSRF token: the API refuses it (403) and no
    // run exists.
    let viewer_csrf = csrf(&page);
    let before = manual_runs(&app, CANCEL_EXPIRED).await;
    let resp = post(
        http,
        &format!("{job_path}/trigger"),
        Some(&viewer),
        &format!("csrf={viewer_csrf}"),
    )
    .await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert!(resp.body.contains("needs operator"), "{}", resp.body);
    assert_eq!(manual_runs(&app, CANCEL_EXPIRED).await, before);

    // The operator: without or with a wrong CSRF token nothing happens; with it, the run.
    let operator = sign_in(http, OPERATOR_TOKEN).await;
    let page = get(http, &job_path, Some(&operator)).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("Run now"), "{}", page.body);
    let op_csrf = csrf(&page);
    assert_ne!(op_csrf, viewer_csrf, "one CSRF token per session");
    for form in [
        String::new(),
        format!("csrf={viewer_csrf}"),
        "csrf=".to_owned(),
    ] {
        let resp = post(http, &format!("{job_path}/trigger"), Some(&operator), &form).await;
        assert_eq!(resp.status, 403, "{form:?}: {resp:?}");
        assert!(resp.body.contains("CSRF"), "{}", resp.body);
    }
    // No cookie at all (a cross-site form would send none: SameSite=Strict).
    let resp = post(
        http,
        &format!("{job_path}/trigger"),
        None,
        &format!("csrf={op_csrf}"),
    )
    .await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(manual_runs(&app, CANCEL_EXPIRED).await, before);

    let resp = post(
        http,
        &format!("{job_path}/trigger"),
        Some(&operator),
        &format!("csrf={op_csrf}"),
    )
    .await;
    assert_eq!(resp.status, 303, "{resp:?}");
    let location = resp.header("location").expect("to the run page").to_owned();
    let run_id = location
        .strip_prefix("/runs/")
        .expect("a run page")
        .to_owned();
    assert_eq!(manual_runs(&app, CANCEL_EXPIRED).await, before + 1);
    let by: String = app
        .control_scalar(&format!(
            "SELECT triggered_by FROM runs WHERE id = '{run_id}'"
        ))
        .await;
    assert_eq!(by, "ops", "who did it is recorded as for gRPC");

    // Pause and resume, back to the page the form names; the viewer's resume is refused.
    let enabled = || async {
        app.control_scalar::<bool>(&format!(
            "SELECT enabled FROM jobs WHERE name = '{CANCEL_EXPIRED}'"
        ))
        .await
    };
    let resp = post(
        http,
        &format!("{job_path}/pause"),
        Some(&operator),
        &format!("csrf={op_csrf}&back=%2F"),
    )
    .await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.header("location"), Some("/"));
    assert!(!enabled().await);
    let resp = post(
        http,
        &format!("{job_path}/resume"),
        Some(&viewer),
        &format!("csrf={viewer_csrf}"),
    )
    .await;
    assert_eq!(resp.status, 403);
    assert!(!enabled().await, "the viewer's resume changed nothing");
    let resp = post(
        http,
        &format!("{job_path}/resume"),
        Some(&operator),
        &format!("csrf={op_csrf}&back=//evil.example/"),
    )
    .await;
    assert_eq!(resp.status, 303);
    assert_eq!(
        resp.header("location"),
        Some(job_path.as_str()),
        "no open redirect"
    );
    assert!(enabled().await);

    // The run page, then its events: all of them once it has ended, then only those after
    // the id a reconnecting browser last saw.
    let page = get(http, &location, Some(&viewer)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&run_id) && page.body.contains("tm-events"));
    assert!(!page.body.contains("Cancel run"), "no cancel for a viewer");
    eventually("the triggered run to end", secs(60), || async {
        let state: String = app
            .control_scalar(&format!("SELECT state FROM runs WHERE id = '{run_id}'"))
            .await;
        (state == "succeeded").then_some(())
    })
    .await;
    let events = get(http, &format!("/runs/{run_id}/events"), Some(&viewer)).await;
    assert_eq!(events.status, 200, "{events:?}");
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let ids = sse_ids(&events.body);
    assert!(
        ids.len() >= 3,
        "queued, running, succeeded at least: {}",
        events.body
    );
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "no gap: {}",
        events.body
    );
    assert!(events.body.contains("event: state"), "{}", events.body);
    assert!(
        events.body.contains("\"state\":\"succeeded\""),
        "{}",
        events.body
    );
    assert!(
        events.body.trim_end().ends_with("data: {}"),
        "ends with the end event"
    );
    assert!(events.body.contains("event: end"));
    let k = ids[ids.len() / 2];
    let resumed = request(
        http,
        "GET",
        &format!("/runs/{run_id}/events"),
        &[
            ("Cookie", viewer.as_str()),
            ("Last-Event-ID", &k.to_string()),
        ],
        "",
    )
    .await
    .expect("resume");
    assert_eq!(
        sse_ids(&resumed.body),
        ids.iter().copied().filter(|i| *i > k).collect::<Vec<_>>(),
        "exactly what follows event {k}"
    );

    // The runs list, filtered in the URL.
    let list = get(
        http,
        &format!("/runs?job={CANCEL_EXPIRED}&state=succeeded"),
        Some(&operator),
    )
    .await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(&run_id), "{}", list.body);
    let bad = get(http, "/runs?state=nonsense", Some(&operator)).await;
    assert_eq!(bad.status, 400, "{bad:?}");

    // Sign out: the session is gone on the server, not only in the browser.
    let page = get(http, "/", Some(&operator)).await;
    let resp = post(
        http,
        "/logout",
        Some(&operator),
        &format!("csrf={}", csrf(&page)),
    )
    .await;
    assert_eq!(resp.status, 303);
    assert!(
        resp.headers.iter().any(|(k, v)| k == "set-cookie"
            && v.starts_with("tm_session=;")
            && v.contains("Max-Age=0")),
        "{resp:?}"
    );
    assert_eq!(get(http, "/", Some(&operator)).await.status, 303);
}

#[tokio::test]
async fn an_open_dashboard_renders_every_page_and_escapes_the_data() {
    // No executor: runs stay queued until cancelled.
    let app = TestApp::builder().executors(0).spawn().await;
    app.silence_schedules(&[]).await;
    let http = app.control_planes[0].http_addr;

    // No tokens: no sign-in, an anonymous session for the CSRF token.
    assert_eq!(get(http, "/login", None).await.status, 303);
    let page = get(http, "/", None).await;
    assert_eq!(page.status, 200, "{page:?}");
    let cookie = page.cookie("tm_session").expect("an anonymous session");
    assert!(page.body.contains("open access"));
    assert!(
        page.body.contains("Run now"),
        "open access may act, like the API"
    );
    assert!(
        page.body.contains("No executor has registered"),
        "{}",
        page.body
    );

    // A run cancelled with a reason full of markup: shown as text on every page.
    let run = app
        .try_trigger(CLEAN_CACHE, "", None)
        .await
        .expect("TriggerJob");
    let evil = "<script>alert(1)</script>";
    app.api()
        .cancel_run(v1::CancelRunRequest {
            run_id: run.id.clone(),
            reason: evil.into(),
        })
        .await
        .expect("CancelRun of a queued run");
    let cancelled = app.wait_for_run(&run.id, terminal, secs(30)).await;
    assert_eq!(cancelled.state(), RunState::Cancelled);
    for path in [
        format!("/runs/{}", run.id),
        format!("/runs?job={CLEAN_CACHE}"),
        format!("/jobs/{CLEAN_CACHE}"),
        "/".to_owned(),
    ] {
        let page = get(http, &path, Some(&cookie)).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        assert!(
            !page.body.contains("<script>alert"),
            "{path} renders markup from the data"
        );
        assert_eq!(page.header("cache-control"), Some("no-store"), "{path}");
    }
    let page = get(http, &format!("/runs/{}", run.id), Some(&cookie)).await;
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    // The list refresh asks for the page's main content only.
    let partial = request(
        http,
        "GET",
        "/runs",
        &[("Cookie", cookie.as_str()), ("X-TM-Partial", "1")],
        "",
    )
    .await
    .expect("partial");
    assert_eq!(partial.status, 200);
    assert!(!partial.body.contains("<html"), "only the main content");
    assert!(partial.body.contains("<h1>Runs</h1>"));
    // Unknown things are 404 pages, not crashes.
    assert_eq!(
        get(http, "/jobs/nope/nothing", Some(&cookie)).await.status,
        404
    );
    assert_eq!(
        get(http, "/runs/no-such-run", Some(&cookie)).await.status,
        404
    );
    // The assets are embedded.
    let css = get(http, "/assets/dashboard.css", None).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css"));
    let js = get(http, "/assets/dashboard.js", None).await;
    assert!(js.body.contains("EventSource"));
}

#[tokio::test]
async fn edit_with_preview_the_tick_ledger_and_reports_beside_the_previous_period() {
    let mut app = TestApp::builder()
        .viewer_and_operator()
        .executors(1)
        .spawn()
        .await;
    let http = app.control_planes[0].http_addr;
    let operator = sign_in(http, OPERATOR_TOKEN).await;
    let job_path = format!("/jobs/{CLEAN_CACHE}");
    let schedule = || async {
        app.control_scalar::<String>(&format!(
            "SELECT schedule FROM jobs WHERE name = '{CLEAN_CACHE}'"
        ))
        .await
    };

    // The preview of a schedule being edited: ten fire times, or the parser's message.
    let page = get(
        http,
        &format!("{job_path}?schedule=0+8+*+*+1&timezone=Africa%2FLagos"),
        Some(&operator),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Mondays at 08:00"), "{}", page.body);
    assert_eq!(
        page.body.matches("+01:00</td>").count(),
        10,
        "ten fire times in Lagos: {}",
        page.body
    );
    assert!(
        page.body.contains("value=\"0 8 * * 1\""),
        "the form keeps what is previewed"
    );
    let page = get(
        http,
        &format!("{job_path}?schedule=61+*+*+*+*&timezone=UTC"),
        Some(&operator),
    )
    .await;
    assert!(page.body.contains("class=\"err\""), "{}", page.body);

    // A bad cron or zone: the API's message, status 400, nothing stored.
    let before = schedule().await;
    let csrf_token = csrf(&get(http, &job_path, Some(&operator)).await);
    for (form, expect) in [
        (
            format!("csrf={csrf_token}&schedule=61+*+*+*+*&timezone=UTC"),
            "61 * * * *",
        ),
        (
            format!("csrf={csrf_token}&schedule=*+*+*+*+*&timezone=Mars%2FOlympus"),
            "Mars/Olympus",
        ),
        (
            format!("csrf={csrf_token}&schedule=*+*+*+*+*&timezone=UTC&timeout=-3"),
            "timeout",
        ),
    ] {
        let resp = post(http, &format!("{job_path}/update"), Some(&operator), &form).await;
        assert_eq!(resp.status, 400, "{form}: {resp:?}");
        assert!(resp.body.contains(expect), "{form}: {}", resp.body);
        assert_eq!(schedule().await, before, "{form} changed the schedule");
    }

    // Every second with missed ticks skipped; then no control plane for a few seconds.
    let resp = post(
        http,
        &format!("{job_path}/update"),
        Some(&operator),
        &format!("csrf={csrf_token}&schedule=*+*+*+*+*+*&timezone=UTC&missed=skip&overlap=skip&catch_up=0"),
    )
    .await;
    assert_eq!(resp.status, 303, "{resp:?}");
    assert_eq!(schedule().await, "* * * * * *");
    let by: String = app
        .control_scalar(&format!(
            "SELECT updated_by FROM jobs WHERE name = '{CLEAN_CACHE}'"
        ))
        .await;
    assert_eq!(by, "ops");
    tokio::time::sleep(secs(2)).await;
    app.control_planes[0].kill().await;
    tokio::time::sleep(secs(3)).await;
    app.control_planes[0].start().await;
    // Sessions live in the database: the restart (a SIGKILL) signed nobody out.
    assert_eq!(get(http, &job_path, Some(&operator)).await.status, 200);
    let ledger = eventually("the missed ticks in the ledger", secs(30), || async {
        let page = get(http, &job_path, Some(&operator)).await;
        (page.body.contains("data-verdict=\"missed\"")
            && page.body.contains("data-verdict=\"ran\""))
        .then_some(page.body)
    })
    .await;
    assert!(
        ledger.contains("missed: no control plane was running"),
        "{ledger}"
    );
    let csrf_token = csrf(&get(http, &job_path, Some(&operator)).await);
    let resp = post(
        http,
        &format!("{job_path}/update"),
        Some(&operator),
        &format!("csrf={csrf_token}&schedule=0+0+1+1+*&timezone=UTC"),
    )
    .await;
    assert_eq!(resp.status, 303);

    // Two periods of a report: the newer beside the older, with the change; the downloads.
    app.control_exec(
        "INSERT INTO reports (id, kind, period, job, run_id, body, created_at) VALUES \
         ('rep-a', 'daily-analytics', '2026-11-27', 'analytics/generate-daily-analytics', 'run-a', \
          '{\"bookings\": 100, \"revenue\": {\"NGN\": 500}}', now()), \
         ('rep-b', 'daily-analytics', '2026-11-28', 'analytics/generate-daily-analytics', 'run-b', \
          '{\"bookings\": 120, \"revenue\": {\"NGN\": 450}}', now())",
    )
    .await;
    let list = get(http, "/reports?kind=daily-analytics", Some(&operator)).await;
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains("2026-11-27") && list.body.contains("2026-11-28"),
        "{}",
        list.body
    );
    let page = get(http, "/reports/rep-b", Some(&operator)).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("+20 (+20.0%)"), "{}", page.body);
    assert!(page.body.contains("-50 (-10.0%)"), "{}", page.body);
    assert!(
        page.body.contains("href=\"/reports/rep-a\""),
        "the previous period is linked"
    );
    let csv = get(http, "/reports/rep-b.csv", Some(&operator)).await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        csv.body,
        "field,value\r\nbookings,120\r\nrevenue.NGN,450\r\n"
    );
    let json = get(http, "/reports/rep-b.json", Some(&operator)).await;
    assert!(
        json.header("content-disposition")
            .unwrap_or_default()
            .contains("attachment")
    );
    let body: serde_json::Value = serde_json::from_str(&json.body).expect("JSON");
    assert_eq!(body["bookings"], 120);
    assert_eq!(
        get(http, "/reports/none", Some(&operator)).await.status,
        404
    );
}

/// The value of hidden field `name` in the page's first form that has one.
fn hidden(page: &HttpResponse, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let at = page
        .body
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} field on the page:\n{}", page.body));
    let rest = &page.body[at + key.len()..];
    rest[..rest.find('"').expect("end of the value")].to_owned()
}

async fn count_runs(app: &TestApp, job: &str, state: &str) -> i64 {
    app.control_scalar(&format!(
        "SELECT count(*) FROM runs WHERE job = '{job}' AND trigger = 'manual' AND state = '{state}'"
    ))
    .await
}

#[tokio::test]
async fn sessions_hold_on_every_replica_and_cancel_all_matching_shows_its_count_first() {
    // No executor: triggered runs stay queued, so what matches is known exactly.
    let app = TestApp::builder()
        .viewer_and_operator()
        .operator_token("harness", "harness-secret-31f9")
        .control_planes(2)
        .executors(0)
        .wait_for_executors(false)
        .spawn()
        .await;
    let (a, b) = (
        app.control_planes[0].http_addr,
        app.control_planes[1].http_addr,
    );
    app.update_job(v1::UpdateJobRequest {
        name: CLEAN_CACHE.into(),
        overlap_policy: v1::OverlapPolicy::Allow as i32,
        ..Default::default()
    })
    .await
    .expect("overlap allowed");
    for _ in 0..5 {
        app.trigger(CLEAN_CACHE).await;
    }
    app.trigger(CANCEL_EXPIRED).await;

    // Signed in on one replica, known on the other: its pages, its CSRF token, who it is.
    let operator = sign_in(a, OPERATOR_TOKEN).await;
    let page = get(b, "/runs", Some(&operator)).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("ops (operator)"), "{}", page.body);
    assert!(page.body.contains("Cancel all matching"), "{}", page.body);
    let viewer = sign_in(b, VIEWER_TOKEN).await;

    // The runs list narrowed by trigger and time range, the filters kept in the URL.
    let manual = get(
        b,
        &format!("/runs?job={CLEAN_CACHE}&trigger=manual&range=1h"),
        Some(&viewer),
    )
    .await;
    assert_eq!(manual.status, 200);
    assert_eq!(
        manual.body.matches("<tr><td><a href=\"/runs/").count(),
        5,
        "{}",
        manual.body
    );
    assert!(
        manual.body.contains("<option value=\"1h\" selected>")
            && manual.body.contains("<option value=\"manual\" selected>"),
        "the form shows the filters of the URL"
    );
    let scheduled = get(
        b,
        &format!("/runs?job={CLEAN_CACHE}&trigger=schedule"),
        Some(&viewer),
    )
    .await;
    assert_eq!(
        scheduled.body.matches("<tr><td><a href=\"/runs/").count(),
        0,
        "{}",
        scheduled.body
    );
    let past = get(
        b,
        &format!(
            "/runs?job={CLEAN_CACHE}&range=custom&since=2020-01-01T00:00&until=2020-01-02T00:00"
        ),
        Some(&viewer),
    )
    .await;
    assert!(past.body.contains("No run matches"), "{}", past.body);
    for bad in [
        "trigger=cron",
        "range=2w",
        "range=custom&since=yesterday",
        "range=custom&since=2026-01-02T00:00&until=2026-01-01T00:00",
    ] {
        let resp = get(b, &format!("/runs?{bad}"), Some(&viewer)).await;
        assert_eq!(resp.status, 400, "{bad}: {resp:?}");
    }

    // The count first. A viewer sees it without the button, and a forged POST is refused.
    let filters = format!("job={CLEAN_CACHE}&trigger=manual");
    let count = get(
        a,
        &format!("/runs/cancel-matching?{filters}"),
        Some(&viewer),
    )
    .await;
    assert_eq!(count.status, 200, "{count:?}");
    assert!(count.body.contains("data-count=\"5\""), "{}", count.body);
    assert!(
        !count.body.contains("Cancel 5 runs"),
        "no button for a viewer"
    );
    let viewer_csrf = csrf(&get(a, "/", Some(&viewer)).await);
    let shown_at = chrono::Utc::now().timestamp_micros();
    let resp = post(
        a,
        "/runs/cancel-matching",
        Some(&viewer),
        &format!("csrf={viewer_csrf}&{filters}&shown_at={shown_at}"),
    )
    .await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(count_runs(&app, CLEAN_CACHE, "queued").await, 5);

    let count = get(
        b,
        &format!("/runs/cancel-matching?{filters}"),
        Some(&operator),
    )
    .await;
    assert!(count.body.contains("data-count=\"5\""), "{}", count.body);
    assert!(count.body.contains("Cancel 5 runs"), "{}", count.body);
    let op_csrf = csrf(&count);
    let shown_at = hidden(&count, "shown_at");
    // A run that arrives after the count is not what the operator saw counted.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let late = app.trigger(CLEAN_CACHE).await;
    // Without the CSRF token: nothing.
    let form = format!(
        "{}&shown_at={shown_at}&reason=drain+before+deploy",
        count_fields(&count)
    );
    let resp = post(a, "/runs/cancel-matching", Some(&operator), &form).await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(count_runs(&app, CLEAN_CACHE, "queued").await, 6);
    // On the other replica than the one that counted: the five, and only them.
    let resp = post(
        a,
        "/runs/cancel-matching",
        Some(&operator),
        &format!("csrf={op_csrf}&{form}"),
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body.contains("data-cancelled=\"5\""), "{}", resp.body);
    assert_eq!(count_runs(&app, CLEAN_CACHE, "cancelled").await, 5);
    assert_eq!(count_runs(&app, CLEAN_CACHE, "queued").await, 1);
    assert_eq!(app.get_run(&late.id).await.state, RunState::Queued as i32);
    assert_eq!(
        count_runs(&app, CANCEL_EXPIRED, "queued").await,
        1,
        "another job is left alone"
    );
    let reasons: i64 = app
        .control_scalar(&format!(
            "SELECT count(*) FROM runs WHERE job = '{CLEAN_CACHE}' AND state = 'cancelled' \
             AND reason = 'cancelled by ''ops'': from the dashboard: drain before deploy'"
        ))
        .await;
    assert_eq!(reasons, 5, "who did it and why are recorded");
    // Counting again: the late run only.
    let again = get(
        b,
        &format!("/runs/cancel-matching?{filters}"),
        Some(&operator),
    )
    .await;
    assert!(again.body.contains("data-count=\"1\""), "{}", again.body);

    // Signed out on one replica, signed out on both.
    let resp = post(b, "/logout", Some(&operator), &format!("csrf={op_csrf}")).await;
    assert_eq!(resp.status, 303, "{resp:?}");
    assert_eq!(get(a, "/runs", Some(&operator)).await.status, 303);
    let rows: i64 = app
        .control_scalar(&format!(
            "SELECT count(*) FROM dashboard_sessions WHERE id_hash = '{}'",
            hash_token(operator.trim_start_matches("tm_session="))
        ))
        .await;
    assert_eq!(rows, 0, "the session row is gone");
}

/// The filter fields of a cancel-matching confirmation, as the browser posts them.
fn count_fields(page: &HttpResponse) -> String {
    ["job", "state", "trigger", "range", "since", "until"]
        .iter()
        .filter(|f| page.body.contains(&format!("name=\"{f}\" value=\"")))
        .map(|f| format!("{f}={}", hidden(page, f).replace('/', "%2F")))
        .collect::<Vec<_>>()
        .join("&")
}
