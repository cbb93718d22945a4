//! HTTP side of the control plane on `TICKETMAX_HTTP_ADDR`: the seed's REST endpoints (so the
//! curl commands in existing runbooks keep working), Prometheus `/metrics`, `/healthz`, and the
//! operator dashboard at `/` ([`crate::dashboard`]).
//! The REST handlers call the same `JobService` implementation as gRPC.
use std::{collections::BTreeMap, fmt::Write as _};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

use ticketmax_proto::{
    from_timestamp, struct_to_json,
    v1::{self, RunState, job_service_server::JobService},
};

use crate::{
    api::JobApi,
    app::SharedApp,
    auth::Role,
    metrics::{escape_label, family},
};

/// The seed's trigger endpoints and the job each one starts.
pub const SEED_ENDPOINTS: [(&str, &str); 6] = [
    (
        "/background-jobs/payment-cleanup/run",
        "payment-cleanup/cleanup-abandoned-payments",
    ),
    (
        "/background-jobs/booking-cleanup/run",
        "booking-cleanup/cancel-expired-bookings",
    ),
    (
        "/background-jobs/event-management/archive",
        "event-management/archive-past-events",
    ),
    (
        "/background-jobs/analytics/daily-report",
        "analytics/generate-daily-analytics",
    ),
    (
        "/background-jobs/data-cleanup/temp-files",
        "data-cleanup/clean-temporary-files",
    ),
    (
        "/background-jobs/notifications/weekly-newsletter",
        "notifications/send-weekly-newsletter",
    ),
];

#[derive(Clone)]
struct Http {
    app: SharedApp,
    api: std::sync::Arc<JobApi>,
}

pub fn router(app: SharedApp) -> Router {
    let api = std::sync::Arc::new(JobApi::new(app.clone()));
    let dashboard = crate::dashboard::router(app.clone(), api.clone());
    let state = Http { api, app };
    let mut router = Router::new()
        .route("/background-jobs/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    for (path, job) in SEED_ENDPOINTS {
        router = router.route(
            path,
            post(move |s: State<Http>, h: HeaderMap| trigger(s, h, job)),
        );
    }
    router.with_state(state).merge(dashboard)
}

/// Serves until `shutdown`, over TLS when `tls` is given, under the connection limits
/// (`ticketmax_runtime::net`): a cap per port, a deadline for the first bytes and for a request
/// head, idle connections closed, heads over `TICKETMAX_MAX_HEADER_BYTES` answered with 431.
pub async fn serve(
    app: SharedApp,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use std::time::Duration;

    let router = router(app.clone());
    let config = &app.config;
    let listener =
        ticketmax_runtime::net::GuardedListener::new(listener, config.connection_limits(), "HTTP");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handshake = Duration::from_millis(config.handshake_timeout_ms);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        // hyper answers a head that does not fit with 431 Request Header Fields Too Large.
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = std::sync::Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let served = match acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "HTTP TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after 5 s of shutdown");
    }
    Ok(())
}

/// The HTTP status for an API error: one mapping for the REST endpoints and the dashboard.
pub fn http_status(status: &tonic::Status) -> StatusCode {
    match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(status: &tonic::Status) -> Response {
    (
        http_status(status),
        Json(json!({ "error": status.message(), "code": format!("{:?}", status.code()) })),
    )
        .into_response()
}

fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(from_timestamp)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

pub fn run_json(r: &v1::Run) -> Value {
    json!({
        "id": r.id,
        "job": r.job,
        "state": RunState::try_from(r.state).unwrap_or(RunState::Unspecified).as_str_name(),
        "trigger": v1::Trigger::try_from(r.trigger).unwrap_or(v1::Trigger::Unspecified).as_str_name(),
        "scheduledFor": time(r.scheduled_for.as_ref()),
        "createdAt": time(r.created_at.as_ref()),
        "startedAt": time(r.started_at.as_ref()),
        "finishedAt": time(r.finished_at.as_ref()),
        "attempt": r.attempt,
        "summary": r.summary.as_ref().map_or(Value::Null, struct_to_json),
        "error": r.error,
        "reason": r.reason,
    })
}

async fn status(State(h): State<Http>, headers: HeaderMap) -> Response {
    let mut req = Request::new(v1::GetStatusRequest {});
    with_credentials(&mut req, &headers);
    match h.api.get_status(req).await {
        Ok(resp) => {
            let s = resp.into_inner();
            let jobs: Vec<Value> = s
                .jobs
                .iter()
                .map(|j| {
                    json!({
                        "name": j.name,
                        "service": j.service,
                        "schedule": j.schedule,
                        "timezone": j.timezone,
                        "enabled": j.enabled,
                        "nextFireTime": time(j.next_fire_time.as_ref()),
                        "lastRun": j.last_run.as_ref().map_or(Value::Null, run_json),
                    })
                })
                .collect();
            let executors: Vec<Value> = s
                .executors
                .iter()
                .map(|e| json!({"id": e.id, "address": e.address, "live": e.live, "running": e.running, "lastHeartbeatAt": time(e.last_heartbeat_at.as_ref())}))
                .collect();
            Json(json!({
                "status": s.status,
                "role": s.role,
                "replicaId": s.replica_id,
                "timestamp": time(s.now.as_ref()),
                "queuedRuns": s.queued_runs,
                "runningRuns": s.running_runs,
                "jobs": jobs,
                "executors": executors,
            }))
            .into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Credentials travel like gRPC metadata, so the same checks apply to both doors.
fn with_credentials<T>(req: &mut Request<T>, headers: &HeaderMap) {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Ok(v) = auth.parse()
    {
        req.metadata_mut().insert("authorization", v);
    }
}

async fn trigger(State(h): State<Http>, headers: HeaderMap, job: &'static str) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut req = Request::new(v1::TriggerJobRequest {
        job: job.to_string(),
        idempotency_key: key,
        params: None,
    });
    with_credentials(&mut req, &headers);
    match h.api.trigger_job(req).await {
        Ok(run) => {
            let run = run.into_inner();
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "message": format!("{job} triggered"),
                    "run": run_json(&run),
                })),
            )
                .into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Open to load balancers without a token, so it says no more than up, draining or down; the
/// database error itself goes to the log.
async fn healthz(State(h): State<Http>) -> Response {
    match h.app.store.ping().await {
        Ok(()) if !h.app.is_draining() => (StatusCode::OK, "ok").into_response(),
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "/healthz: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// Prometheus text format. Counts come from the database, so every replica reports the same
/// totals and a restart loses nothing. Job names, executor addresses and e-mail figures are not
/// for everyone: with API tokens configured the scraper needs a viewer token (Prometheus:
/// `authorization: { credentials_file: ... }`).
async fn metrics(State(h): State<Http>, headers: HeaderMap) -> Response {
    let mut credentials = Request::new(());
    with_credentials(&mut credentials, &headers);
    if let Err(status) = h
        .app
        .auth
        .require(credentials.metadata(), Role::Viewer, "GET /metrics")
    {
        return error_response(&status);
    }
    let store = &h.app.store;
    let counts = match store.run_counts().await {
        Ok(c) => c,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let executors = h
        .app
        .executors
        .overlay(store.executors(None).await.unwrap_or_default());
    let timeout = h.app.config.executor_timeout();
    let live_executors: Vec<_> = executors
        .iter()
        .filter(|e| crate::api::convert::executor_to_proto(e, timeout).live)
        .collect();
    let live = live_executors.len();
    let mut out = String::new();
    family(
        &mut out,
        "ticketmax_runs",
        "gauge",
        "Runs recorded, by job and state.",
    );
    let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
    for (job, st, n) in &counts {
        let st = st.as_str();
        *by_state.entry(st).or_default() += n;
        let _ = writeln!(
            out,
            "ticketmax_runs{{job=\"{}\",state=\"{}\"}} {n}",
            escape_label(job),
            escape_label(st)
        );
    }
    family(
        &mut out,
        "ticketmax_runs_by_state",
        "gauge",
        "Runs recorded, by state.",
    );
    for (st, n) in &by_state {
        let _ = writeln!(out, "ticketmax_runs_by_state{{state=\"{st}\"}} {n}");
    }
    let in_state = |want: &str| by_state.get(want).copied().unwrap_or(0);
    // Executors sharing a ticketing database report the same outbox: the largest figure is it.
    let outbox = live_executors
        .iter()
        .map(|e| e.outbox_pending)
        .max()
        .unwrap_or(0);
    for (name, help, value) in [
        (
            "ticketmax_executors_connected",
            "Executors with a recent heartbeat.",
            i64::try_from(live).unwrap_or(i64::MAX),
        ),
        (
            "ticketmax_replica_leader",
            "1 when this replica holds the scheduler lease.",
            i64::from(h.app.is_leader()),
        ),
        (
            "ticketmax_queue_depth",
            "Runs waiting to be dispatched.",
            in_state("queued"),
        ),
        (
            "ticketmax_running_runs",
            "Runs being executed.",
            in_state("running"),
        ),
        (
            "ticketmax_outbox_depth",
            "E-mails waiting in the outbox, as executors report it.",
            outbox,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let by_executor = |n: fn(&&crate::store::executor::Model) -> i64| {
        live_executors
            .iter()
            .map(|e| (e.id.as_str(), n(e)))
            .collect::<Vec<_>>()
    };
    for (name, help, values) in [
        (
            "ticketmax_emails_sent_total",
            "E-mails delivered, by executor process.",
            by_executor(|e| e.emails_sent),
        ),
        (
            "ticketmax_emails_failed_total",
            "E-mails given up on, by executor process.",
            by_executor(|e| e.emails_failed),
        ),
    ] {
        family(&mut out, name, "counter", help);
        for (id, n) in values {
            let _ = writeln!(out, "{name}{{executor=\"{}\"}} {n}", escape_label(id));
        }
    }
    h.app.metrics.render(&mut out);
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
