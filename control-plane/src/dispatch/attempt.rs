//! One attempt of a run on one executor: `Executor.RunJob`, every streamed event numbered,
//! published and handed to the completer, and the attempt's end settled. What it learns while
//! running (cancel requested, superseded, executor lost) arrives as an `engine::attempts`
//! signal; its own deadline and the replica's handover stop it too.
use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

use ticketmax_proto::{
    json_to_struct, struct_to_json, to_timestamp,
    v1::{
        self, CancelTaskRequest, ExecutorEvent, RunJobRequest, executor_client::ExecutorClient,
        executor_event::Kind,
    },
};

use super::channels::Channels;
use crate::{
    app::SharedApp,
    engine::{attempts::Signal, hub::live_event},
    lifecycle::{self, EventPayload, ReportDraft, RunState, Settlement},
    store::{self, events::EventRecord, executor, job, lifecycle::SettleRow, run},
};

/// What one attempt may store, whatever its executor sends: a forged or runaway executor cannot
/// flood the database or the watchers.
pub mod limits {
    /// Events stored per attempt.
    pub const MAX_EVENTS: u64 = 10_000;
    /// Events per second, with a burst of twice as many.
    pub const EVENTS_PER_SECOND: f64 = 200.0;
    /// Bytes of one event's text.
    pub const MAX_TEXT: usize = 4096;
    /// Bytes of the summary.
    pub const MAX_SUMMARY: usize = 64 * 1024;
    /// Reports per run, and bytes of each.
    pub const MAX_REPORTS: usize = 64;
    pub const MAX_REPORT: usize = 256 * 1024;
}

/// A token bucket over the attempt's events.
struct Budget {
    tokens: f64,
    last: tokio::time::Instant,
    stored: u64,
    dropped: u64,
}

impl Budget {
    fn new() -> Self {
        Self {
            tokens: limits::EVENTS_PER_SECOND * 2.0,
            last: tokio::time::Instant::now(),
            stored: 0,
            dropped: 0,
        }
    }

    fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * limits::EVENTS_PER_SECOND;
        self.tokens = (self.tokens + refill).min(limits::EVENTS_PER_SECOND * 2.0);
        self.last = now;
        if self.tokens >= 1.0 && self.stored < limits::MAX_EVENTS {
            self.tokens -= 1.0;
            self.stored += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

/// `text` cut to `max` bytes on a character boundary, NUL bytes replaced (the database stores
/// no NUL in text, and one would fail the whole batch).
fn truncated(mut text: String, max: usize) -> String {
    if text.contains('\0') {
        text = text.replace('\0', "\u{fffd}");
    }
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

pub struct Attempt {
    app: SharedApp,
    channels: Arc<Channels>,
    run: run::Model,
    job: Arc<job::Model>,
    executor: executor::Model,
    handover: CancellationToken,
    signals: mpsc::UnboundedReceiver<Signal>,
    /// The control plane's own deadline for the attempt.
    timeout: Duration,
    /// The sequence number of this attempt's newest event.
    seq: i64,
    budget: Budget,
}

/// How the attempt ended, before it is settled.
enum End {
    /// A settlement decided by what happened.
    Settle(Settlement),
    /// The attempt failed: retried or failed per the job's retries.
    Failed(String),
    /// Someone else owns the run now: nothing to record.
    Superseded,
}

impl Attempt {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: SharedApp,
        channels: Arc<Channels>,
        run: run::Model,
        job: Arc<job::Model>,
        executor: executor::Model,
        handover: CancellationToken,
        signals: mpsc::UnboundedReceiver<Signal>,
        timeout: Duration,
    ) -> Self {
        let seq = run.last_seq;
        Self {
            app,
            channels,
            run,
            job,
            executor,
            handover,
            signals,
            timeout,
            seq,
            budget: Budget::new(),
        }
    }

    /// Runs the attempt inside its `dispatch` span (continuing the run's trace).
    pub async fn run(self) {
        let span = tracing::info_span!("dispatch", job = %self.run.job, run_id = %self.run.id, attempt = self.run.attempt, executor = %self.executor.id, trace_id = tracing::field::Empty, outcome = tracing::field::Empty);
        if let Some(tp) = &self.run.trace_parent {
            ticketmax_runtime::telemetry::adopt_traceparent(&span, tp);
        }
        // Every log line of the run carries the trace id (span fields are part of each line).
        let trace_id = ticketmax_runtime::telemetry::trace_id(&span);
        if !trace_id.is_empty() {
            span.record("trace_id", trace_id.as_str());
        }
        self.execute().instrument(span).await;
    }

    async fn execute(mut self) {
        tracing::info!(job = %self.run.job, run_id = %self.run.id, attempt = self.run.attempt, executor = %self.executor.id, "dispatching");
        let message = format!(
            "attempt {} on executor {}",
            self.run.attempt, self.executor.id
        );
        self.emit(EventPayload::state(
            RunState::Running,
            self.run.attempt,
            message,
        ));
        let end = self.stream().await;
        if self.budget.dropped > 0 {
            let message = format!(
                "{} events from the executor were dropped: over {} per second or {} in all",
                self.budget.dropped,
                limits::EVENTS_PER_SECOND,
                limits::MAX_EVENTS
            );
            tracing::warn!(run_id = %self.run.id, dropped = self.budget.dropped, "event limits reached");
            self.emit(EventPayload::log("warn", message));
        }
        let settlement = match end {
            End::Settle(s) => Some(s),
            End::Failed(error) => Some(lifecycle::after_failure(
                self.run.attempt,
                self.job.max_retries,
                Duration::from_secs(u64::try_from(self.job.retry_backoff_secs).unwrap_or(5)),
                error,
            )),
            End::Superseded => None,
        };
        if let Some(settlement) = settlement {
            tracing::Span::current().record("outcome", settlement.target().as_str());
            let row = SettleRow {
                run_id: self.run.id.clone(),
                attempt: self.run.attempt,
                settlement,
                lease_expired_before: None,
            };
            if let Err(e) = self.app.completer.settle(row).await {
                tracing::error!(run_id = %self.run.id, error = %e, "cannot record the end of a run; its lease will expire and the rescuer takes it");
            }
        }
        self.app.attempts.finish(&self.run.id, self.run.attempt);
    }

    /// Numbers an event, publishes it to watchers and queues it for the database.
    fn emit(&mut self, payload: EventPayload) {
        self.seq += 1;
        let at = store::now();
        self.app.hub.publish(
            &self.run.id,
            live_event(&self.run.id, self.seq, at, &payload),
        );
        self.app.completer.append(vec![EventRecord {
            run_id: self.run.id.clone(),
            attempt: self.run.attempt,
            seq: self.seq,
            at,
            payload,
        }]);
    }

    fn client(&self) -> Result<ExecutorClient<Channel>, String> {
        self.channels
            .get(&self.executor.address)
            .map(ExecutorClient::new)
            .map_err(|e| format!("bad executor address {}: {e}", self.executor.address))
    }

    async fn stream(&mut self) -> End {
        let mut client = match self.client() {
            Ok(c) => c,
            Err(e) => return End::Failed(e),
        };
        let params = self
            .run
            .params
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .map(|v| json_to_struct(&v));
        let request = RunJobRequest {
            run_id: self.run.id.clone(),
            job: self.run.job.clone(),
            attempt: u32::try_from(self.run.attempt).unwrap_or(1),
            scheduled_for: Some(to_timestamp(self.run.scheduled_for)),
            idempotency_key: format!(
                "{}|{}|{}",
                self.run.job,
                self.run.scheduled_for.to_rfc3339(),
                self.run.attempt
            ),
            params,
            timezone: self.job.timezone.clone(),
            timeout_seconds: u32::try_from(self.job.timeout_secs).unwrap_or(0),
            // A scheduled run's windows are computed from its tick (`scheduled_for`).
            trigger: self.run.trigger.to_proto().into(),
        };
        let mut request = tonic::Request::new(request);
        ticketmax_runtime::telemetry::inject(&tracing::Span::current(), request.metadata_mut());
        self.authenticate(request.metadata_mut());
        let mut stream = match client.run_job(request).await {
            Ok(s) => s.into_inner(),
            Err(status) => {
                return End::Failed(format!(
                    "executor {} refused the run: {} {}",
                    self.executor.id,
                    status.code(),
                    status.message()
                ));
            }
        };
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(ev)) => {
                        if let Some(end) = self.on_event(ev) {
                            return end;
                        }
                    }
                    Ok(None) => return End::Failed(format!("executor {} closed the stream without a result", self.executor.id)),
                    Err(status) => return End::Failed(format!("executor {} failed: {} {}", self.executor.id, status.code(), status.message())),
                },
                signal = self.signals.recv() => match signal {
                    Some(Signal::Cancel { reason }) if !cancel_sent => {
                        cancel_sent = true;
                        let message = match reason {
                            Some(r) => format!("cancellation requested: {r}"),
                            None => "cancellation requested".to_string(),
                        };
                        self.emit(EventPayload::log("warn", message));
                        self.cancel_on_executor(&mut client).await;
                    }
                    Some(Signal::Cancel { .. }) => {}
                    Some(Signal::Superseded) => {
                        self.cancel_on_executor(&mut client).await;
                        return End::Superseded;
                    }
                    Some(Signal::ExecutorLost(reason)) => return End::Failed(reason),
                    None => {}
                },
                () = &mut deadline => {
                    self.cancel_on_executor(&mut client).await;
                    return End::Settle(Settlement::TimedOut {
                        error: format!("no result within the timeout of {}s", self.job.timeout_secs),
                        summary: None,
                    });
                }
                () = self.handover.cancelled() => {
                    self.cancel_on_executor(&mut client).await;
                    return End::Failed(format!("handed over: replica {} shut down", self.app.replica_id));
                }
            }
        }
    }

    /// Executors that require the shared executor secret get it with every RunJob.
    fn authenticate(&self, md: &mut tonic::metadata::MetadataMap) {
        if let Some(token) = self.app.auth.executor_token()
            && let Ok(v) = format!("Bearer {token}").parse()
        {
            md.insert("authorization", v);
        }
    }

    async fn cancel_on_executor(&self, client: &mut ExecutorClient<Channel>) {
        let mut req = tonic::Request::new(CancelTaskRequest {
            run_id: self.run.id.clone(),
            attempt: u32::try_from(self.run.attempt).unwrap_or(1),
        });
        self.authenticate(req.metadata_mut());
        if let Err(e) = client.cancel_run(req).await {
            tracing::warn!(run_id = %self.run.id, error = %e, "could not ask the executor to cancel");
        }
    }

    /// Records one streamed event; returns how the attempt ended when it was the last one.
    fn on_event(&mut self, ev: ExecutorEvent) -> Option<End> {
        match ev.kind? {
            Kind::Started(s) => {
                self.emit(EventPayload::log(
                    "info",
                    format!("started on executor {}", s.executor_id),
                ));
                None
            }
            Kind::Progress(p) => {
                if self.budget.allow() {
                    self.emit(EventPayload::Progress {
                        done: p.done,
                        total: p.total,
                        message: truncated(p.message, limits::MAX_TEXT),
                    });
                }
                None
            }
            Kind::Log(l) => {
                if self.budget.allow() {
                    let level = truncated(l.level, 16);
                    self.emit(EventPayload::log(
                        &level,
                        truncated(l.message, limits::MAX_TEXT),
                    ));
                }
                None
            }
            Kind::Finished(f) => {
                let (end, refused) = finished(f);
                for r in refused {
                    self.emit(EventPayload::log("warn", r));
                }
                Some(end)
            }
        }
    }
}

/// The settlement an executor's `Finished` asks for, and what was refused of it (over the
/// size limits).
fn finished(f: v1::Finished) -> (End, Vec<String>) {
    let mut refused = Vec::new();
    let summary = f
        .summary
        .as_ref()
        .map(|s| struct_to_json(s).to_string())
        .filter(|s| {
            let fits = s.len() <= limits::MAX_SUMMARY;
            if !fits {
                refused.push(format!(
                    "summary of {} bytes dropped (over {} bytes)",
                    s.len(),
                    limits::MAX_SUMMARY
                ));
            }
            fits
        });
    let outcome = v1::RunState::try_from(f.outcome).unwrap_or(v1::RunState::Failed);
    let error = (!f.error.is_empty()).then(|| truncated(f.error.clone(), limits::MAX_TEXT));
    let end = match outcome {
        v1::RunState::Succeeded => {
            if f.reports.len() > limits::MAX_REPORTS {
                refused.push(format!(
                    "{} reports dropped (over {} per run)",
                    f.reports.len() - limits::MAX_REPORTS,
                    limits::MAX_REPORTS
                ));
            }
            let mut reports = Vec::new();
            for r in f.reports.iter().take(limits::MAX_REPORTS) {
                let body = r
                    .body
                    .as_ref()
                    .map(|b| struct_to_json(b).to_string())
                    .unwrap_or_else(|| "{}".into());
                let oversized =
                    body.len() > limits::MAX_REPORT || r.kind.len() > 200 || r.period.len() > 200;
                if oversized {
                    refused.push(format!(
                        "report '{}' dropped (over {} bytes, or kind/period over 200)",
                        truncated(r.kind.clone(), 200),
                        limits::MAX_REPORT
                    ));
                    continue;
                }
                reports.push(ReportDraft {
                    kind: truncated(r.kind.clone(), 200),
                    period: truncated(r.period.clone(), 200),
                    body,
                });
            }
            End::Settle(Settlement::Succeeded { summary, reports })
        }
        v1::RunState::Cancelled => End::Settle(Settlement::Cancelled {
            reason: None,
            summary,
            from_queue: false,
        }),
        v1::RunState::TimedOut => End::Settle(Settlement::TimedOut {
            error: error.unwrap_or_else(|| "timed out".into()),
            summary,
        }),
        // A failure no retry can fix (bad parameters): failed now, not retried.
        _ if f.permanent => End::Settle(Settlement::Failed {
            error: error.unwrap_or_else(|| "the task failed".into()),
            from_queue: false,
        }),
        _ => End::Failed(error.unwrap_or_else(|| "the task failed".into())),
    };
    (end, refused)
}
