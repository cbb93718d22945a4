//! The `Executor` gRPC service: runs a task per RunJob call and streams its events.
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::Stream;
use sea_orm::DatabaseConnection;
use serde_json::{Map, Value};
use ticketmax_proto::v1::executor_server::Executor;
use ticketmax_proto::v1::{
    CancelTaskRequest, CancelTaskResponse, ExecutorEvent, Finished, ReportDraft, RunJobRequest,
    RunState, Started, Trigger, executor_event,
};
use ticketmax_proto::{from_timestamp, json_map_to_struct, json_to_struct, struct_to_json};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::db::Dialect;
use crate::tasks::{
    ContextParts, RunRequest, RunStats, RunTrigger, Summary, TaskContext, TaskError, TaskOutput,
    TaskRegistry, TaskSettings,
};

/// Admits only the control plane: callers presenting the shared executor token, when one is
/// configured, and a client certificate issued to one of the pinned names, when those are set.
#[derive(Clone)]
pub struct RequireToken {
    expected: Option<String>,
    names: ticketmax_runtime::peer_names::PeerNames,
}

impl RequireToken {
    pub fn new(token: Option<String>, names: ticketmax_runtime::peer_names::PeerNames) -> Self {
        RequireToken {
            expected: token,
            names,
        }
    }
}

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.names
            .admit(request.peer_certs().as_deref().map(Vec::as_slice))?;
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(ticketmax_runtime::credentials::bearer);
        match given {
            Some(given)
                if ticketmax_runtime::credentials::constant_time_eq(
                    given.as_bytes(),
                    expected.as_bytes(),
                ) =>
            {
                Ok(request)
            }
            Some(_) => Err(Status::unauthenticated("wrong executor token")),
            None => Err(Status::unauthenticated(
                "missing executor token: set TICKETMAX_EXECUTOR_TOKEN on the control plane",
            )),
        }
    }
}

/// How long a cancelled or timed-out task gets to reach its next chunk boundary before it is
/// dropped (which rolls back its open transaction).
const CANCEL_GRACE: Duration = Duration::from_secs(15);

struct RunningTask {
    attempt: u32,
    cancel: CancellationToken,
}

/// Tasks currently running on this executor, by run id.
#[derive(Default)]
pub struct RunningTasks {
    tasks: Mutex<HashMap<String, RunningTask>>,
}

impl RunningTasks {
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningTask>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct ExecutorService {
    pub executor_id: String,
    pub registry: Arc<TaskRegistry>,
    pub db: DatabaseConnection,
    pub dialect: Dialect,
    pub settings: Arc<TaskSettings>,
    pub default_tz: chrono_tz::Tz,
    pub running: Arc<RunningTasks>,
    pub run_stats: Arc<RunStats>,
    pub mail_queued: Arc<Notify>,
    /// Owner of every task driver; cancelled on shutdown.
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ExecutorEvent, Status>> + Send>>;

fn event(kind: executor_event::Kind) -> ExecutorEvent {
    ExecutorEvent { kind: Some(kind) }
}

/// How a run ended. `permanent`: no retry can fix it (a bad parameter, a missing setting, an
/// unknown task), so the control plane fails the run instead of retrying it.
fn finished(
    outcome: RunState,
    summary: &Summary,
    error: String,
    reports: Vec<ReportDraft>,
    permanent: bool,
) -> ExecutorEvent {
    event(executor_event::Kind::Finished(Finished {
        outcome: outcome as i32,
        summary: Some(json_map_to_struct(summary)),
        error,
        reports,
        permanent,
    }))
}

#[tonic::async_trait]
impl Executor for ExecutorService {
    type RunJobStream = EventStream;

    async fn run_job(
        &self,
        request: Request<RunJobRequest>,
    ) -> Result<Response<Self::RunJobStream>, Status> {
        // The control plane's dispatch span travels as W3C `traceparent` in the metadata.
        let metadata = request.metadata().clone();
        let req = request.into_inner();
        if req.run_id.is_empty() {
            return Err(Status::invalid_argument("run_id is required"));
        }
        if self.shutdown.is_cancelled() {
            return Err(Status::unavailable("executor is shutting down"));
        }
        let (tx, rx) = mpsc::channel::<Result<ExecutorEvent, Status>>(256);
        let started = event(executor_event::Kind::Started(Started {
            executor_id: self.executor_id.clone(),
        }));
        // The channel is fresh, so these sends cannot fail for lack of room.
        let _ = tx.try_send(Ok(started));

        let Some(task) = self.registry.get(&req.job) else {
            let error = format!(
                "executor {} has no task named '{}'",
                self.executor_id, req.job
            );
            tracing::warn!(run_id = %req.run_id, "{error}");
            let _ = tx.try_send(Ok(finished(
                RunState::Failed,
                &Map::new(),
                error,
                Vec::new(),
                true,
            )));
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        };

        let tz = match req.timezone.trim() {
            "" => self.default_tz,
            name => name
                .parse::<chrono_tz::Tz>()
                .map_err(|_| Status::invalid_argument(format!("unknown timezone '{name}'")))?,
        };
        let params = req
            .params
            .as_ref()
            .map(struct_to_json)
            .and_then(|v| match v {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .unwrap_or_default();

        let cancel = self.shutdown.child_token();
        {
            let mut running = self.running.lock();
            if running.contains_key(&req.run_id) {
                return Err(Status::already_exists(format!(
                    "run {} is already running on this executor",
                    req.run_id
                )));
            }
            running.insert(
                req.run_id.clone(),
                RunningTask {
                    attempt: req.attempt,
                    cancel: cancel.clone(),
                },
            );
        }

        let summary = Arc::new(Mutex::new(Summary::new()));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let ctx = TaskContext::new(
            ContextParts {
                db: self.db.clone(),
                dialect: self.dialect,
                settings: self.settings.clone(),
                run_stats: self.run_stats.clone(),
                mail_queued: self.mail_queued.clone(),
            },
            RunRequest {
                run_id: req.run_id.clone(),
                job: req.job.clone(),
                attempt: req.attempt,
                scheduled_for: req.scheduled_for.as_ref().and_then(from_timestamp),
                trigger: match req.trigger() {
                    Trigger::Schedule => RunTrigger::Schedule,
                    // UNSPECIFIED comes from control planes older than the field.
                    Trigger::Manual | Trigger::Unspecified => RunTrigger::Manual,
                },
                tz,
                params,
                declared: task.params(),
            },
            events_tx,
            cancel.clone(),
            summary.clone(),
        );

        let span = tracing::info_span!("task", job = %req.job, run_id = %req.run_id, attempt = req.attempt, trace_id = tracing::field::Empty, outcome = tracing::field::Empty);
        ticketmax_runtime::telemetry::adopt(&span, &metadata);
        // Every log line of the run carries the trace id (span fields are part of each line).
        let trace_id = ticketmax_runtime::telemetry::trace_id(&span);
        if !trace_id.is_empty() {
            span.record("trace_id", trace_id.as_str());
        }
        let driver = Driver {
            run_id: req.run_id.clone(),
            job: req.job.clone(),
            timeout: (req.timeout_seconds > 0)
                .then(|| Duration::from_secs(u64::from(req.timeout_seconds))),
            cancel,
            summary,
            running: self.running.clone(),
            run_stats: self.run_stats.clone(),
            out: tx,
        };
        self.tracker.spawn(
            async move {
                match ctx {
                    Ok(ctx) => driver.drive(task, ctx, events_rx).await,
                    Err(e) => driver.finish(Err(e), false).await,
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_run(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        let req = request.into_inner();
        let running = self.running.lock();
        let found = match running.get(&req.run_id) {
            // attempt 0 means "whichever attempt runs here".
            Some(task) if req.attempt == 0 || task.attempt == req.attempt => {
                tracing::info!(run_id = %req.run_id, attempt = task.attempt, "cancel requested");
                task.cancel.cancel();
                true
            }
            _ => false,
        };
        Ok(Response::new(CancelTaskResponse { found }))
    }
}

/// Runs one task and turns what happens into the stream of events.
struct Driver {
    run_id: String,
    job: String,
    timeout: Option<Duration>,
    cancel: CancellationToken,
    summary: Arc<Mutex<Summary>>,
    running: Arc<RunningTasks>,
    run_stats: Arc<RunStats>,
    out: mpsc::Sender<Result<ExecutorEvent, Status>>,
}

impl Driver {
    async fn drive(
        self,
        task: Arc<dyn crate::tasks::Task>,
        ctx: TaskContext,
        mut events: mpsc::UnboundedReceiver<ExecutorEvent>,
    ) {
        tracing::info!("task started");
        // Boxed, so that dropping it (when a cancelled task overruns its grace period) really
        // drops the task and rolls back its open transaction before the outcome is reported.
        let mut run = Box::pin(task.run(&ctx));
        let timeout = self.timeout;
        let deadline = async move {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;

        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                Some(e) = events.recv() => {
                    if self.out.send(Ok(e)).await.is_err() {
                        // The control plane dropped the stream: nobody will see the outcome.
                        self.cancel.cancel();
                    }
                }
                () = &mut deadline, if !timed_out => {
                    timed_out = true;
                    tracing::warn!("task exceeded its timeout; cancelling");
                    self.cancel.cancel();
                }
                () = self.out.closed(), if !self.cancel.is_cancelled() => {
                    tracing::warn!("stream closed by the caller; cancelling the task");
                    self.cancel.cancel();
                }
                () = self.cancel.cancelled(), if grace.is_none() => {
                    grace = Some(Box::pin(tokio::time::sleep(CANCEL_GRACE)));
                }
                () = async { if let Some(g) = grace.as_mut() { g.await } else { std::future::pending().await } }, if grace.is_some() => {
                    tracing::warn!("task did not stop within {CANCEL_GRACE:?}; dropping it");
                    let partial = self.summary.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    break Err(TaskError::Cancelled(partial));
                }
            }
        };
        drop(run);
        // Forward what the task logged before it returned.
        while let Ok(e) = events.try_recv() {
            let _ = self.out.send(Ok(e)).await;
        }
        self.finish(result, timed_out).await;
    }

    async fn finish(self, result: Result<TaskOutput, TaskError>, timed_out: bool) {
        let permanent = result.as_ref().err().is_some_and(TaskError::is_permanent);
        let (outcome, summary, error, reports) = match result {
            Ok(output) => (
                RunState::Succeeded,
                output.summary,
                String::new(),
                output
                    .reports
                    .into_iter()
                    .map(|r| ReportDraft {
                        kind: r.kind,
                        period: r.period,
                        body: Some(json_to_struct(&r.body)),
                    })
                    .collect(),
            ),
            Err(TaskError::Cancelled(partial)) if timed_out => (
                RunState::TimedOut,
                partial,
                format!("task {} exceeded its timeout", self.job),
                Vec::new(),
            ),
            Err(TaskError::Cancelled(partial)) => (
                RunState::Cancelled,
                partial,
                "cancelled".to_owned(),
                Vec::new(),
            ),
            Err(e) => {
                let partial = self
                    .summary
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                (
                    RunState::Failed,
                    partial,
                    format!("{}: {e}", self.job),
                    Vec::new(),
                )
            }
        };
        match outcome {
            RunState::Succeeded => {
                let summary = Value::Object(summary.clone());
                tracing::info!(%summary, "task succeeded");
            }
            _ => tracing::warn!(outcome = outcome.as_str_name(), %error, "task ended"),
        }
        // Same words as the control plane's dispatch span and the run's state: "succeeded", ...
        let state = outcome
            .as_str_name()
            .trim_start_matches("RUN_STATE_")
            .to_ascii_lowercase();
        tracing::Span::current().record("outcome", state.as_str());
        self.run_stats
            .record(&self.job, outcome == RunState::Succeeded);
        self.running.lock().remove(&self.run_id);
        let _ = self
            .out
            .send(Ok(finished(outcome, &summary, error, reports, permanent)))
            .await;
    }
}
