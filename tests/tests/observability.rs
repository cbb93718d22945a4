//! Observability (README, "Operating it") end to end: one trace per run across both processes, exported over OTLP/gRPC to a real
//! receiver running inside this test; the control plane's Prometheus `/metrics`; JSON logs with
//! `LOG_FORMAT=json`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CANCEL_EXPIRED;
const CP_SERVICE: &str = "ticketmax-control-plane";
const EX_SERVICE: &str = "ticketmax-executor";

// -------------------------------------------------------------------------------------------
// The OTLP receiver
// -------------------------------------------------------------------------------------------

/// One exported span, flattened: ids in lowercase hex, attribute values as text.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

impl Exported {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .map(|r| attributes(&r.attributes))
        .and_then(|mut a| a.remove("service.name"))
        .unwrap_or_default()
}

struct Traces(mpsc::UnboundedSender<Exported>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref());
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                let _ = self.0.send(Exported {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Accepts metric exports (both processes export with the same endpoint), recording
/// `(service.name, metric name)`.
struct Metrics(mpsc::UnboundedSender<(String, String)>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        for rm in request.into_inner().resource_metrics {
            let service = service_name(rm.resource.as_ref());
            for m in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                let _ = self.0.send((service.clone(), m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on 127.0.0.1:0, serving until the test ends.
async fn start_receiver() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Exported>,
    mpsc::UnboundedReceiver<(String, String)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the OTLP receiver");
    let addr = listener.local_addr().expect("receiver address");
    let (spans_tx, spans_rx) = mpsc::unbounded_channel();
    let (metrics_tx, metrics_rx) = mpsc::unbounded_channel();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((conn, listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Traces(spans_tx)))
            .add_service(MetricsServiceServer::new(Metrics(metrics_tx)))
            .serve_with_incoming(incoming),
    );
    (addr, spans_rx, metrics_rx)
}

// -------------------------------------------------------------------------------------------
// Helpers
// -------------------------------------------------------------------------------------------

/// A plain HTTP/1.1 GET; returns (status code, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response within 10 s")
        .expect("read HTTP response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// What one run's trace must contain; `None` when complete, else what is still missing.
fn missing(spans: &[Exported], trace_id: &str) -> Option<String> {
    let in_trace: Vec<&Exported> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let has = |service: &str, name: &str| {
        in_trace
            .iter()
            .any(|s| s.service == service && s.name == name)
    };
    let task_ids: Vec<&str> = in_trace
        .iter()
        .filter(|s| s.service == EX_SERVICE && s.name == "task")
        .map(|s| s.span_id.as_str())
        .collect();
    let mut missing = Vec::new();
    for (service, name) in [
        (CP_SERVICE, "trigger_job"),
        (CP_SERVICE, "dispatch"),
        (EX_SERVICE, "task"),
    ] {
        if !has(service, name) {
            missing.push(format!("{service}/{name}"));
        }
    }
    if !in_trace
        .iter()
        .any(|s| s.name == "sql" && task_ids.contains(&s.parent_span_id.as_str()))
    {
        missing.push(format!("{EX_SERVICE}/sql under the task span"));
    }
    if !spans
        .iter()
        .any(|s| s.service == EX_SERVICE && s.name == "smtp.send")
    {
        missing.push(format!("{EX_SERVICE}/smtp.send"));
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>, into: &mut Vec<T>) {
    while let Ok(x) = rx.try_recv() {
        into.push(x);
    }
}

/// Collects exported spans until the trace is complete or `timeout` passes.
async fn collect_until_complete(
    rx: &mut mpsc::UnboundedReceiver<Exported>,
    spans: &mut Vec<Exported>,
    trace_id: &str,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        drain(rx, spans);
        if missing(spans, trace_id).is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(millis(200)).await;
    }
}

fn describe(spans: &[Exported]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} {} trace={} span={} parent={} {:?}",
                s.service, s.name, s.trace_id, s.span_id, s.parent_span_id, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// -------------------------------------------------------------------------------------------
// The test
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_trace_per_run_across_both_processes_with_metrics_and_json_logs() {
    let (otlp, mut spans_rx, mut metrics_rx) = start_receiver().await;
    let mut app = TestApp::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{otlp}"))
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("LOG_FORMAT", "json")
        .control_plane_env("TICKETMAX_TRACE_URL", "http://jaeger.test/trace/{trace_id}")
        .spawn()
        .await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("bookings").await;

    // One booking pending for 30 minutes: the run cancels it and queues one e-mail, which the
    // executor's sender delivers (.eml files: no SMTP_HOST here) under an `smtp.send` span.
    app.ticketing_exec(
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'); \
         INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, status) VALUES \
           (10, 'Big Show', now() + interval '10 days', 100, 98, 'upcoming'); \
         INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) VALUES \
           (1, 1, 10, 2, 1000, 'pending', now() - interval '30 minutes');",
    )
    .await;

    // The caller's own trace: a made-up W3C trace context in the gRPC metadata.
    let caller_trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let traceparent = format!("00-{caller_trace_id}-{caller_span_id}-01");
    let mut request = tonic::Request::new(TriggerJobRequest {
        job: CANCEL_EXPIRED.into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii metadata"));
    let run = app
        .api()
        .trigger_job(request)
        .await
        .expect("TriggerJob with a traceparent")
        .into_inner();
    let run = app.wait_for_run(&run.id, terminal, secs(60)).await;
    assert_eq!(run.state(), RunState::Succeeded, "{run:#?}");
    assert_eq!(
        summary_count(&run, "cancelled"),
        Some(1),
        "summary {}",
        summary(&run)
    );

    // The run carries the caller's trace, and the dashboard's run page links to it.
    assert_eq!(run.trace_id, caller_trace_id, "{run:#?}");
    let http_addr = app.control_planes[0].http_addr;
    let page =
        ticketmax_e2e::http::request(http_addr, "GET", &format!("/runs/{}", run.id), &[], "")
            .await
            .expect("the run page");
    let link = format!("href=\"http://jaeger.test/trace/{caller_trace_id}\"");
    assert!(
        page.body.contains(&link),
        "no {link} on the run page:\n{}",
        page.body
    );

    // Prometheus text on the control plane's HTTP address.
    let (status, metrics) = http_get(http_addr, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {metrics}");
    let expected = format!("ticketmax_runs{{job=\"{CANCEL_EXPIRED}\",state=\"succeeded\"}} 1");
    assert!(
        metrics.lines().any(|l| l.trim() == expected),
        "/metrics lacks `{expected}`:\n{metrics}"
    );
    for family in ["ticketmax_runs", "ticketmax_executors_connected"] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "/metrics lacks the {family} family:\n{metrics}"
        );
    }

    // The e-mail is delivered (the smtp.send span exists once this happened).
    let deadline = Instant::now() + secs(30);
    loop {
        let sent: i64 = app
            .ticketing_scalar("SELECT count(*) FROM email_outbox WHERE status = 'sent'")
            .await;
        if sent == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the booking-cancelled e-mail was not delivered within 30 s"
        );
        tokio::time::sleep(millis(200)).await;
    }

    // Spans: the batch exporters send every few seconds; SIGTERM flushes what is left.
    let mut spans = Vec::new();
    let live = collect_until_complete(&mut spans_rx, &mut spans, &caller_trace_id, secs(15)).await;
    if !live {
        eprintln!(
            "[observability] trace incomplete after 15 s ({}); stopping the processes to flush",
            missing(&spans, &caller_trace_id).unwrap_or_default()
        );
    }
    // Stop everything gracefully: exit must flush the exporters, and the logs are then final.
    for ex in &mut app.executors {
        let status = ex.terminate().await;
        assert!(
            status.is_some_and(|s| s.success()),
            "executor exit after SIGTERM: {status:?}"
        );
    }
    for cp in &mut app.control_planes {
        let status = cp.terminate().await;
        assert!(
            status.is_some_and(|s| s.success()),
            "control plane exit after SIGTERM: {status:?}"
        );
    }
    let complete =
        collect_until_complete(&mut spans_rx, &mut spans, &caller_trace_id, secs(10)).await;
    let in_trace: Vec<Exported> = spans
        .iter()
        .filter(|s| s.trace_id == caller_trace_id)
        .cloned()
        .collect();
    assert!(
        complete,
        "trace {caller_trace_id} incomplete: missing {}\nspans of the trace:\n{}\nall {} spans:\n{}",
        missing(&spans, &caller_trace_id).unwrap_or_default(),
        describe(&in_trace),
        spans.len(),
        describe(&spans)
    );

    let one = |service: &str, name: &str| -> Exported {
        let found: Vec<&Exported> = in_trace
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one {service}/{name} span in the trace:\n{}",
            describe(&in_trace)
        );
        found[0].clone()
    };
    let trigger = one(CP_SERVICE, "trigger_job");
    let dispatch = one(CP_SERVICE, "dispatch");
    let task = one(EX_SERVICE, "task");

    // The chain: caller → TriggerJob → dispatch → (gRPC metadata) → the executor's task.
    assert_eq!(
        trigger.parent_span_id, caller_span_id,
        "trigger_job continues the caller's span"
    );
    assert_eq!(
        dispatch.parent_span_id, trigger.span_id,
        "dispatch continues the trigger (the run's stored traceparent)"
    );
    assert_eq!(
        task.parent_span_id,
        dispatch.span_id,
        "the executor's task span is a child of the control plane's dispatch span:\n{}",
        describe(&in_trace)
    );
    for (service, _) in [(CP_SERVICE, ()), (EX_SERVICE, ())] {
        assert!(
            in_trace.iter().any(|s| s.service == service),
            "no {service} span shares the caller's trace id"
        );
    }

    // Run identity on both sides.
    for span in [&dispatch, &task] {
        assert_eq!(span.attr("job"), Some(CANCEL_EXPIRED), "{span:?}");
        assert_eq!(span.attr("run_id"), Some(run.id.as_str()), "{span:?}");
        assert_eq!(
            span.attr("attempt"),
            Some(run.attempt.to_string().as_str()),
            "{span:?}"
        );
        assert_eq!(span.attr("outcome"), Some("succeeded"), "{span:?}");
    }
    assert_eq!(trigger.attr("job"), Some(CANCEL_EXPIRED), "{trigger:?}");

    // SQL spans: children of the task (or of the delivery of the run's e-mail, which joins the
    // run's trace), carrying the statement text (placeholders, not values).
    let sends_in_trace: Vec<&Exported> = in_trace
        .iter()
        .filter(|s| s.service == EX_SERVICE && s.name == "smtp.send")
        .collect();
    let sql: Vec<&Exported> = in_trace
        .iter()
        .filter(|s| s.service == EX_SERVICE && s.name == "sql")
        .collect();
    assert!(
        sql.iter().all(|s| s.parent_span_id == task.span_id
            || sends_in_trace
                .iter()
                .any(|send| send.span_id == s.parent_span_id)),
        "every sql span hangs under the task or the run's e-mail delivery:\n{}",
        describe(&in_trace)
    );
    assert!(
        sql.iter().any(|s| s
            .attr("db.statement")
            .is_some_and(|t| t.contains("UPDATE bookings"))),
        "no sql span for the cancelling UPDATE:\n{}",
        describe(&in_trace)
    );
    assert!(
        sql.iter().all(|s| !s
            .attr("db.statement")
            .unwrap_or_default()
            .contains("ada@example.com")),
        "bound values leaked into db.statement"
    );

    // The e-mail delivery span names its outbox row.
    let outbox_id: i64 = app
        .ticketing_scalar("SELECT id FROM email_outbox WHERE dedupe_key = 'booking-cancelled:1'")
        .await;
    // The delivery joins the run's trace: its span is in the caller's trace.
    let sends = sends_in_trace;
    assert!(
        sends.iter().any(
            |s| s.attr("outbox_id") == Some(outbox_id.to_string().as_str())
                && s.attr("outcome") == Some("sent")
        ),
        "no smtp.send span for outbox row {outbox_id}:\n{}",
        describe(
            &spans
                .iter()
                .filter(|s| s.name == "smtp.send")
                .cloned()
                .collect::<Vec<_>>()
        )
    );

    // Metrics over OTLP: runs by job and outcome (the duration histogram), queue depth and
    // running runs from the leader, e-mails by outcome and the outbox depth from the executor.
    let expected = [
        ("ticketmax-control-plane", "ticketmax.run.duration"),
        ("ticketmax-control-plane", "ticketmax.runs.queued"),
        ("ticketmax-control-plane", "ticketmax.runs.running"),
        ("ticketmax-executor", "ticketmax.emails"),
        ("ticketmax-executor", "ticketmax.outbox.pending"),
    ];
    let mut metric_names = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        drain(&mut metrics_rx, &mut metric_names);
        let missing: Vec<_> = expected
            .iter()
            .filter(|(svc, name)| !metric_names.iter().any(|(s, n)| s == svc && n == name))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "OTLP metrics never exported: {missing:?}; received: {metric_names:?}"
    );

    // LOG_FORMAT=json: every line a process wrote is one JSON object (the harness's own
    // `===== e2e harness ... =====` markers are not process output).
    let procs = app
        .control_planes
        .iter()
        .map(|c| &c.proc)
        .chain(app.executors.iter().map(|e| &e.proc));
    for proc in procs {
        let log = proc.log();
        let mut lines = 0;
        for (n, line) in log.lines().enumerate() {
            if line.starts_with("===== e2e harness") || line.trim().is_empty() {
                continue;
            }
            lines += 1;
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
            assert!(
                parsed.as_ref().is_ok_and(|v| v.is_object()),
                "{} line {} is not a JSON object: {line:?}",
                proc.log_path().display(),
                n + 1
            );
        }
        assert!(lines > 0, "{} is empty", proc.log_path().display());
    }
}
