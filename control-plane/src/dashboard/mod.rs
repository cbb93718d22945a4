//! The operator dashboard, served on the HTTP port at `/`: server-rendered pages
//! ([`pages`]), a run's live console over Server-Sent Events ([`live`]), sign-in with the
//! API tokens and sessions with CSRF tokens ([`session`]), and two embedded assets (a
//! stylesheet and a small script, `assets/`, no build step).
//!
//! Every read and every action goes through the `JobService` handlers the gRPC API and the
//! REST endpoints use, with the session's token as the caller's credentials: roles, validation
//! and the record of who did what exist once. The dashboard adds what a browser needs on top:
//! a viewer sees no write controls, every POST must carry the session's CSRF token (403 and no
//! change otherwise), and a viewer's forged POST is refused by the API (403).
use std::sync::Arc;
use std::time::Duration;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use tonic::{Code, Request, Status};

use ticketmax_proto::v1::{self, job_service_server::JobService};

use crate::{api::JobApi, app::SharedApp, auth::Role};

pub mod filters;
pub mod html;
pub mod live;
pub mod pages;
pub mod reports;
pub mod session;
pub mod settings;

use filters::RunsQuery;
use html::Nav;
use session::{Session, Sessions};

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

#[derive(Clone)]
struct Dashboard {
    app: SharedApp,
    api: Arc<JobApi>,
    sessions: Arc<Sessions>,
}

/// The dashboard's routes, for the HTTP port's router.
pub fn router(app: SharedApp, api: Arc<JobApi>) -> Router {
    let ttl = Duration::from_secs(app.config.dashboard_session_secs.max(60));
    let secure = app.config.tls_cert.is_some();
    let state = Dashboard {
        app,
        api,
        sessions: Arc::new(Sessions::new(ttl, secure)),
    };
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs))
        .route("/runs/cancel", post(cancel_selected))
        .route(
            "/runs/cancel-matching",
            get(cancel_matching_page).post(cancel_matching),
        )
        .route("/runs/{id}", get(run))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/reports", get(report_list))
        .route("/reports/{id}", get(report))
        .route("/jobs/{service}/{task}", get(job))
        .route("/jobs/{service}/{task}/{action}", post(job_action))
        .route(
            "/assets/dashboard.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
        .with_state(state)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// An HTML response with the dashboard's security headers; with `X-TM-Partial` (the list
/// pages' refresh), only the page's `<main>` content.
fn html_page(
    code: StatusCode,
    headers: &HeaderMap,
    title: &str,
    nav: Nav,
    session: Option<&Session>,
    body: &str,
) -> Response {
    let text = if headers.contains_key("x-tm-partial") {
        body.to_owned()
    } else {
        html::page(title, nav, session, body)
    };
    let mut resp = (code, text).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn with_cookie(mut resp: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The session of a page request: the cookie's, an anonymous one on an open API (handed out
/// with the response), or a redirect to the sign-in page.
type Gate = Result<(Session, Option<String>), Box<Response>>;

/// The page a store failure on the way to a session shows (the database is down or slow).
fn store_unavailable(headers: &HeaderMap, e: &crate::store::StoreError) -> Box<Response> {
    tracing::warn!(error = %e, "dashboard session lookup failed");
    Box::new(html_page(
        StatusCode::SERVICE_UNAVAILABLE,
        headers,
        "Unavailable",
        Nav::None,
        None,
        &pages::error("The control plane cannot reach its database; try again shortly."),
    ))
}

impl Dashboard {
    /// The live session the request's cookie names.
    async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, Box<Response>> {
        self.sessions
            .from_headers(&self.app.store, &self.app.auth, headers)
            .await
            .map_err(|e| store_unavailable(headers, &e))
    }

    async fn gate(&self, headers: &HeaderMap, here: &str) -> Gate {
        if let Some(s) = self.session(headers).await? {
            return Ok((s, None));
        }
        if !self.app.auth.api_tokens_configured() {
            let s = self.sessions.anonymous();
            let cookie = self.sessions.set_cookie(&s);
            return Ok((s, Some(cookie)));
        }
        Err(Box::new(
            Redirect::to(&format!("/login?next={}", html::url_param(here))).into_response(),
        ))
    }

    /// The session of a POST, which must exist and carry its CSRF token in `form`.
    async fn gate_post(
        &self,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> Result<Session, Box<Response>> {
        let refuse = |code: StatusCode, why: &str| {
            Box::new(html_page(
                code,
                headers,
                "Refused",
                Nav::None,
                None,
                &pages::error(why),
            ))
        };
        let Some(session) = self.session(headers).await? else {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "No session: sign in again (the form is older than the session, or was sent from elsewhere).",
            ));
        };
        match field(form, "csrf") {
            Some(token) if session.csrf_matches(token) => Ok(session),
            _ => Err(refuse(
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or wrong: nothing was changed.",
            )),
        }
    }

    fn page(
        &self,
        headers: &HeaderMap,
        (session, cookie): (Session, Option<String>),
        title: &str,
        nav: Nav,
        body: Result<String, Status>,
    ) -> Response {
        let resp = match body {
            Ok(body) => html_page(StatusCode::OK, headers, title, nav, Some(&session), &body),
            Err(status) => html_page(
                crate::http::http_status(&status),
                headers,
                "Not possible",
                nav,
                Some(&session),
                &pages::error(status.message()),
            ),
        };
        with_cookie(resp, cookie)
    }
}

/// A request to the API as the session's caller.
fn call<T>(session: &Session, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(caller) = &session.caller {
        req.extensions_mut().insert(caller.clone());
    }
    req
}

/// `application/x-www-form-urlencoded` fields, in order (repeated names kept).
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Where to go after an action: the form's `back` when it is a path of this site.
fn back_to(form: &[(String, String)], default: String) -> String {
    match field(form, "back") {
        Some(b) if b.starts_with('/') && !b.starts_with("//") && !b.contains('\\') => b.to_owned(),
        _ => default,
    }
}

// ---- pages ----------------------------------------------------------------------------

#[derive(serde::Deserialize, Default)]
struct OverviewQuery {
    #[serde(default)]
    service: String,
}

async fn overview(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let gate = match d.gate(&headers, "/").await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let body = async {
        let status = d
            .api
            .get_status(call(&gate.0, v1::GetStatusRequest {}))
            .await?
            .into_inner();
        let failures = d
            .api
            .list_runs(call(
                &gate.0,
                v1::ListRunsRequest {
                    state: v1::RunState::Failed.into(),
                    page_size: 5,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner()
            .runs;
        Ok(pages::overview(&gate.0, &status, &failures, &q.service))
    }
    .await;
    d.page(&headers, gate, "Overview", Nav::Overview, body)
}

async fn runs(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    let here = format!("/runs?{}", q.with_page(&q.page));
    let gate = match d.gate(&headers, &here).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let body = async {
        let filters = q.resolve(chrono::Utc::now())?;
        let jobs = d
            .api
            .list_jobs(call(&gate.0, v1::ListJobsRequest::default()))
            .await?
            .into_inner()
            .jobs;
        let page = d
            .api
            .list_runs(call(&gate.0, q.list_request(&filters, 50)))
            .await?
            .into_inner();
        Ok(pages::runs(&gate.0, &q, &jobs, &page))
    }
    .await;
    d.page(&headers, gate, "Runs", Nav::Runs, body)
}

async fn run(State(d): State<Dashboard>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let gate = match d
        .gate(&headers, &format!("/runs/{}", html::url_param(&id)))
        .await
    {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let body = d
        .api
        .get_run(call(&gate.0, v1::GetRunRequest { run_id: id.clone() }))
        .await
        .map(|r| {
            let r = r.into_inner();
            let trace = d
                .app
                .config
                .trace_url
                .as_deref()
                .filter(|_| !r.trace_id.is_empty())
                .map(|t| t.replace("{trace_id}", &r.trace_id));
            pages::run(&gate.0, &r, trace.as_deref())
        });
    d.page(&headers, gate, "Run", Nav::Runs, body)
}

#[derive(serde::Deserialize, Default)]
struct EventsQuery {
    after: Option<u64>,
}

async fn run_events(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let session = match d.session(&headers).await {
        Ok(Some(s)) => s,
        Ok(None) if !d.app.auth.api_tokens_configured() => d.sessions.anonymous(),
        Ok(None) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        Err(r) => return *r,
    };
    let after_seq = live::resume_after(
        headers.get("last-event-id").and_then(|v| v.to_str().ok()),
        q.after,
    );
    match d
        .api
        .watch_run(call(
            &session,
            v1::WatchRunRequest {
                run_id: id,
                after_seq,
            },
        ))
        .await
    {
        Ok(stream) => live::sse(stream.into_inner()).into_response(),
        Err(status) => (
            crate::http::http_status(&status),
            status.message().to_owned(),
        )
            .into_response(),
    }
}

async fn job(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path((service, task)): Path<(String, String)>,
    Query(preview): Query<settings::PreviewQuery>,
) -> Response {
    let name = format!("{service}/{task}");
    let gate = match d.gate(&headers, &format!("/jobs/{name}")).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let body = async {
        let job = d
            .api
            .get_job(call(&gate.0, v1::GetJobRequest { name: name.clone() }))
            .await?
            .into_inner();
        let runs = d
            .api
            .list_runs(call(
                &gate.0,
                v1::ListRunsRequest {
                    job: name.clone(),
                    page_size: 60,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner()
            .runs;
        let schedule = preview.schedule.as_deref().unwrap_or(&job.schedule);
        let timezone = preview.timezone.as_deref().unwrap_or(&job.timezone);
        let mut page = pages::job(&gate.0, &job, &runs[..runs.len().min(30)]);
        page.push_str("<h2>Tick ledger</h2>");
        page.push_str(&settings::ledger(&runs, &job.timezone));
        page.push_str(&settings::edit_form(&gate.0, &job, schedule, timezone));
        page.push_str(&settings::preview(schedule, timezone, chrono::Utc::now()));
        Ok(page)
    }
    .await;
    d.page(&headers, gate, &name, Nav::None, body)
}

#[derive(serde::Deserialize, Default)]
struct ReportsQuery {
    #[serde(default)]
    kind: String,
}

async fn report_list(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<ReportsQuery>,
) -> Response {
    let gate = match d.gate(&headers, "/reports").await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let body = async {
        let all = d
            .api
            .list_reports(call(
                &gate.0,
                v1::ListReportsRequest {
                    kind: String::new(),
                    limit: 500,
                },
            ))
            .await?
            .into_inner()
            .reports;
        let mut kinds: Vec<String> = all.iter().map(|r| r.kind.clone()).collect();
        kinds.sort();
        kinds.dedup();
        let shown = d
            .api
            .list_reports(call(
                &gate.0,
                v1::ListReportsRequest {
                    kind: q.kind.clone(),
                    limit: 100,
                },
            ))
            .await?
            .into_inner()
            .reports;
        Ok(reports::list(&q.kind, &kinds, &shown))
    }
    .await;
    d.page(&headers, gate, "Reports", Nav::Reports, body)
}

/// A report page, or its download (`<id>.json`, `<id>.csv`).
async fn report(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let gate = match d
        .gate(&headers, &format!("/reports/{}", html::url_param(&id)))
        .await
    {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let (id, format) = match (id.strip_suffix(".json"), id.strip_suffix(".csv")) {
        (Some(base), _) => (base.to_owned(), "json"),
        (_, Some(base)) => (base.to_owned(), "csv"),
        _ => (id, "html"),
    };
    let found = d
        .api
        .get_report(call(&gate.0, v1::GetReportRequest { id: id.clone() }))
        .await
        .map(tonic::Response::into_inner);
    let report = match found {
        Ok(r) => r,
        Err(status) => return d.page(&headers, gate, "Report", Nav::Reports, Err(status)),
    };
    let download = |body: String, content_type: &'static str, ext: &str| {
        let name = format!("{}-{}.{ext}", report.kind, report.period).replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
            "_",
        );
        (
            [
                (header::CONTENT_TYPE, content_type.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            body,
        )
            .into_response()
    };
    match format {
        "json" => {
            let body = report
                .body
                .as_ref()
                .map(ticketmax_proto::struct_to_json)
                .unwrap_or(serde_json::Value::Null);
            let text = serde_json::to_string_pretty(&body).unwrap_or_default();
            download(text, "application/json", "json")
        }
        "csv" => download(reports::csv(&report), "text/csv; charset=utf-8", "csv"),
        _ => {
            let body = async {
                let same_kind = d
                    .api
                    .list_reports(call(
                        &gate.0,
                        v1::ListReportsRequest {
                            kind: report.kind.clone(),
                            limit: 500,
                        },
                    ))
                    .await?
                    .into_inner()
                    .reports;
                // The previous period: the newest of the same kind before this one.
                let previous = same_kind
                    .iter()
                    .filter(|r| r.period < report.period)
                    .max_by(|a, b| a.period.cmp(&b.period));
                Ok(reports::page(&report, previous, &same_kind))
            }
            .await;
            d.page(&headers, gate, "Report", Nav::Reports, body)
        }
    }
}

// ---- sign-in ----------------------------------------------------------------------------

#[derive(serde::Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

async fn login_page(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !d.app.auth.api_tokens_configured() {
        return Redirect::to("/").into_response();
    }
    html_page(
        StatusCode::OK,
        &headers,
        "Sign in",
        Nav::None,
        None,
        &pages::login(None, &q.next),
    )
}

async fn login(State(d): State<Dashboard>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let token = field(&form, "token").unwrap_or("").trim().to_owned();
    let next = back_to(
        &[(
            "back".to_owned(),
            field(&form, "next").unwrap_or("/").to_owned(),
        )],
        "/".to_owned(),
    );
    let mut md = tonic::metadata::MetadataMap::new();
    if let Ok(v) = format!("Bearer {token}").parse() {
        md.insert("authorization", v);
    }
    match d.app.auth.require(&md, Role::Viewer, "dashboard sign-in") {
        Ok(principal) => {
            if let Some(p) = &principal {
                tracing::info!(who = %p.name, "dashboard sign-in");
            }
            let session = match principal {
                // An open API: nothing to remember.
                None => d.sessions.anonymous(),
                Some(_) => match d
                    .sessions
                    .create(&d.app.store, &d.app.auth, crate::auth::sha256_hex(&token))
                    .await
                {
                    Ok(s) => s,
                    Err(e) => return *store_unavailable(&headers, &e),
                },
            };
            with_cookie(
                Redirect::to(&next).into_response(),
                Some(d.sessions.set_cookie(&session)),
            )
        }
        Err(status) => {
            tracing::warn!(reason = %status.message(), "dashboard sign-in refused");
            html_page(
                StatusCode::UNAUTHORIZED,
                &headers,
                "Sign in",
                Nav::None,
                None,
                &pages::login(Some("That token is not valid."), &next),
            )
        }
    }
}

async fn logout(State(d): State<Dashboard>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let session = match d.gate_post(&headers, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(e) = d.sessions.remove(&d.app.store, &session.id).await {
        return *store_unavailable(&headers, &e);
    }
    with_cookie(
        Redirect::to("/login").into_response(),
        Some(d.sessions.clear_cookie()),
    )
}

// ---- actions ----------------------------------------------------------------------------

/// The outcome of an action: back where the form says, or the API's refusal as a page.
fn after_action(
    headers: &HeaderMap,
    session: &Session,
    result: Result<String, Status>,
) -> Response {
    match result {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(status) => html_page(
            crate::http::http_status(&status),
            headers,
            "Not possible",
            Nav::None,
            Some(session),
            &pages::error(status.message()),
        ),
    }
}

async fn job_action(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path((service, task, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let session = match d.gate_post(&headers, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let name = format!("{service}/{task}");
    let job_page = format!("/jobs/{name}");
    let result = match action.as_str() {
        "trigger" => d
            .api
            .trigger_job(call(
                &session,
                v1::TriggerJobRequest {
                    job: name,
                    ..Default::default()
                },
            ))
            .await
            .map(|r| back_to(&form, format!("/runs/{}", r.into_inner().id))),
        "pause" => d
            .api
            .pause_job(call(&session, v1::PauseJobRequest { name }))
            .await
            .map(|_| back_to(&form, job_page)),
        "resume" => d
            .api
            .resume_job(call(&session, v1::ResumeJobRequest { name }))
            .await
            .map(|_| back_to(&form, job_page)),
        "update" => match settings::update_request(&name, &form) {
            Err(message) => Err(Status::invalid_argument(message)),
            Ok(req) => d
                .api
                .update_job(call(&session, req))
                .await
                .map(|_| back_to(&form, job_page)),
        },
        other => Err(Status::not_found(format!("no action '{other}'"))),
    };
    after_action(&headers, &session, result)
}

async fn cancel_run(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let session = match d.gate_post(&headers, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let result = d
        .api
        .cancel_run(call(
            &session,
            v1::CancelRunRequest {
                run_id: id.clone(),
                reason: format!("cancelled from the dashboard by {}", session.who()),
            },
        ))
        .await
        .map(|_| format!("/runs/{}", html::url_param(&id)));
    after_action(&headers, &session, result)
}

/// "Cancel all matching": counts what the runs list's filters match (a dry run of the same
/// `CancelRuns` the button sends), and shows the count with the button.
async fn cancel_matching_page(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    let here = format!("/runs/cancel-matching?{}", q.with_page(""));
    let gate = match d.gate(&headers, &here).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let now = chrono::Utc::now();
    let body = async {
        let filters = q.resolve(now)?;
        // Finished runs cannot be cancelled: under such a state filter nothing matches.
        let active = [
            v1::RunState::Unspecified,
            v1::RunState::Queued,
            v1::RunState::Running,
        ];
        if !active.contains(&filters.state) {
            let none = v1::CancelRunsResponse::default();
            return Ok(pages::cancel_matching(&gate.0, &q, &none, now));
        }
        let counted = d
            .api
            .cancel_runs(call(
                &gate.0,
                q.cancel_request(&filters, now, String::new(), true),
            ))
            .await?
            .into_inner();
        Ok(pages::cancel_matching(&gate.0, &q, &counted, now))
    }
    .await;
    d.page(&headers, gate, "Cancel all matching", Nav::Runs, body)
}

/// Cancels what the confirmation counted: the same filters, created before the instant the
/// count was shown.
async fn cancel_matching(State(d): State<Dashboard>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let session = match d.gate_post(&headers, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let q = RunsQuery::from_form(&form);
    let result = async {
        let shown_at = field(&form, "shown_at")
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_micros)
            .ok_or_else(|| Status::invalid_argument("the confirmation's count time is missing"))?;
        let filters = q.resolve(shown_at)?;
        let reason = match field(&form, "reason").map(str::trim) {
            Some(r) if !r.is_empty() => format!("from the dashboard: {r}"),
            _ => "from the dashboard".to_owned(),
        };
        d.api
            .cancel_runs(call(
                &session,
                q.cancel_request(&filters, shown_at, reason, false),
            ))
            .await
            .map(tonic::Response::into_inner)
    }
    .await;
    match result {
        Ok(done) => html_page(
            StatusCode::OK,
            &headers,
            "Cancelled",
            Nav::Runs,
            Some(&session),
            &pages::cancelled_matching(&q, &done),
        ),
        Err(status) => after_action(&headers, &session, Err(status)),
    }
}

/// Cancels every selected run that is still queued or running; the others are left alone.
async fn cancel_selected(State(d): State<Dashboard>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let session = match d.gate_post(&headers, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let ids: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "run")
        .map(|(_, v)| v.as_str())
        .take(500)
        .collect();
    for id in &ids {
        let result = d
            .api
            .cancel_run(call(
                &session,
                v1::CancelRunRequest {
                    run_id: (*id).to_owned(),
                    reason: format!("cancelled from the dashboard by {}", session.who()),
                },
            ))
            .await;
        match result {
            Ok(_) => {}
            // Already finished meanwhile: nothing to cancel, not an error for a selection.
            Err(s) if s.code() == Code::FailedPrecondition => {}
            Err(s) => return after_action(&headers, &session, Err(s)),
        }
    }
    after_action(&headers, &session, Ok(back_to(&form, "/runs".to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_like_browsers_encode_them() {
        let form = parse_form(b"csrf=ab%2Fc&run=1&run=2&reason=two+words&odd=%zz&tail=%4");
        assert_eq!(field(&form, "csrf"), Some("ab/c"));
        let runs: Vec<_> = form.iter().filter(|(k, _)| k == "run").collect();
        assert_eq!(runs.len(), 2);
        assert_eq!(field(&form, "reason"), Some("two words"));
        assert_eq!(field(&form, "odd"), Some("%zz"));
        assert_eq!(field(&form, "tail"), Some("%4"));
    }

    #[test]
    fn actions_only_go_back_to_paths_of_this_site() {
        let form = |b: &str| vec![("back".to_owned(), b.to_owned())];
        assert_eq!(back_to(&form("/runs?x=1"), "/d".into()), "/runs?x=1");
        for evil in ["//evil.example/x", "https://evil.example", "/\\evil", ""] {
            assert_eq!(back_to(&form(evil), "/d".into()), "/d", "{evil}");
        }
    }
}
