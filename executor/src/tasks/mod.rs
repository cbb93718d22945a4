//! The task framework: what a task is, what it gets to work with, and how it reports.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::{Map, Value};
use ticketmax_proto::v1::{self, ExecutorEvent, LogLine, Progress, executor_event};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::Dirs;
use crate::db::Dialect;

pub type Summary = Map<String, Value>;

/// One report a task produced: kind (e.g. "payment-analytics"), period, JSON body.
#[derive(Clone, Debug)]
pub struct ReportDraft {
    pub kind: String,
    pub period: String,
    pub body: Value,
}

#[derive(Debug, Default)]
pub struct TaskOutput {
    pub summary: Summary,
    pub reports: Vec<ReportDraft>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Stopped at a chunk boundary; carries the counts of the work already committed.
    #[error("cancelled")]
    Cancelled(Summary),
    #[error("database error while {context}: {source}")]
    Db {
        context: String,
        #[source]
        source: DbErr,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid parameter '{name}': {reason}")]
    InvalidParam { name: String, reason: String },
    /// The executor lacks a setting this task needs; the run fails rather than send mail that
    /// breaks a rule (e.g. marketing mail without a signed unsubscribe link).
    #[error("{0}")]
    NotConfigured(String),
}

impl TaskError {
    /// A failure no retry can fix (a bad parameter, a missing setting): the control plane
    /// fails the run at once instead of retrying it with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TaskError::InvalidParam { .. } | TaskError::NotConfigured(_)
        )
    }
}

/// The type of a declared parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A whole number within the declared bounds.
    Integer,
    /// An RFC 3339 time (the control plane also bounds it: not in the future, not before its
    /// horizon).
    Timestamp,
}

/// A parameter a task takes. Each task declares its own; the executor sends them when it
/// registers, so `TriggerJob` refuses any other name, type or value before a run exists, and a
/// task can read no parameter it did not declare (see [`TaskContext::param_u64`]).
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: ParamKind,
    pub description: &'static str,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Param {
    /// A whole number in `[min, max]`.
    pub const fn integer(
        name: &'static str,
        description: &'static str,
        min: u64,
        max: u64,
    ) -> Self {
        Param {
            name,
            kind: ParamKind::Integer,
            description,
            min: Some(min as f64),
            max: Some(max as f64),
        }
    }

    fn to_proto(self) -> v1::ParamSpec {
        v1::ParamSpec {
            name: self.name.to_owned(),
            r#type: match self.kind {
                ParamKind::Integer => v1::ParamType::Integer,
                ParamKind::Timestamp => v1::ParamType::Timestamp,
            } as i32,
            description: self.description.to_owned(),
            min: self.min,
            max: self.max,
        }
    }
}

/// Parameters shared by many tasks.
pub mod params {
    use super::{Param, ParamKind};

    /// The reference time of the run (see [`super::TaskContext::new`]); every task takes it.
    pub const AS_OF: Param = Param {
        name: "as_of",
        kind: ParamKind::Timestamp,
        description: "reference time of the run (RFC 3339), instead of its tick or the clock",
        min: None,
        max: None,
    };
    /// Rows per chunk (one transaction each).
    pub const BATCH_SIZE: Param = Param::integer("batch_size", "rows per chunk", 1, MAX_BATCH);
    /// A pause between chunks, an operator's throttle for a busy database.
    pub const PAUSE_MS: Param = Param::integer(
        "pause_ms",
        "pause between chunks, in milliseconds",
        0,
        60_000,
    );
    /// The largest chunk a run may ask for.
    pub const MAX_BATCH: u64 = 10_000;

    /// What a task that works in one pass takes.
    pub const PLAIN: &[Param] = &[AS_OF];
    /// What a task that works in chunks takes.
    pub const CHUNKED: &[Param] = &[AS_OF, BATCH_SIZE, PAUSE_MS];
}

/// Adds "while doing what" to database errors.
pub trait DbContext<T> {
    fn context(self, context: impl Into<String>) -> Result<T, TaskError>;
}

impl<T> DbContext<T> for Result<T, DbErr> {
    fn context(self, context: impl Into<String>) -> Result<T, TaskError> {
        self.map_err(|source| TaskError::Db {
            context: context.into(),
            source,
        })
    }
}

#[async_trait::async_trait]
pub trait Task: Send + Sync {
    /// "<service>/<task>", e.g. "booking-cleanup/cancel-expired-bookings".
    fn name(&self) -> &'static str;
    /// The parameters it takes; nothing else is accepted or readable.
    fn params(&self) -> &'static [Param] {
        params::PLAIN
    }
    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError>;
}

#[derive(Default)]
pub struct TaskRegistry {
    tasks: HashMap<&'static str, Arc<dyn Task>>,
}

impl TaskRegistry {
    pub fn register(&mut self, task: impl Task + 'static) {
        self.tasks.insert(task.name(), Arc::new(task));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Task>> {
        self.tasks.get(name).cloned()
    }

    /// Every task name, sorted, as registered with the control plane.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tasks.keys().map(|n| (*n).to_owned()).collect();
        names.sort();
        names
    }

    /// Every task's declared parameters, sorted by name, as sent with `Register`.
    pub fn specs(&self) -> Vec<v1::TaskSpec> {
        let mut specs: Vec<v1::TaskSpec> = self
            .tasks
            .values()
            .map(|t| v1::TaskSpec {
                job: t.name().to_owned(),
                params: t.params().iter().map(|p| p.to_proto()).collect(),
            })
            .collect();
        specs.sort_by(|a, b| a.job.cmp(&b.job));
        specs
    }
}

/// Thresholds, links and directories the tasks need from the configuration.
#[derive(Clone, Debug)]
pub struct TaskSettings {
    pub dirs: Dirs,
    pub frontend_url: String,
    pub admin_emails: Vec<String>,
    pub memory_alert_mb: u64,
    pub disk_alert_percent: u8,
    pub reengagement_batch_limit: u64,
    pub started_at: DateTime<Utc>,
    /// Signs unsubscribe links; None when TICKETMAX_UNSUBSCRIBE_SECRET is unset.
    pub unsubscribe: Option<crate::mail::unsubscribe::Unsubscribe>,
}

impl TaskSettings {
    /// Newsletter and marketing jobs call this first: without a secret no e-mail of theirs could
    /// carry the signed one-click unsubscribe link the law and mailbox providers require.
    pub fn require_unsubscribe(&self) -> Result<(), TaskError> {
        match self.unsubscribe {
            Some(_) => Ok(()),
            None => Err(TaskError::NotConfigured(
                "TICKETMAX_UNSUBSCRIBE_SECRET is not set: newsletter and marketing e-mail need \
                 a signed one-click unsubscribe link, so none is queued (transactional e-mail \
                 is unaffected)"
                    .into(),
            )),
        }
    }
}

/// Outcomes of the runs this executor process has finished, for the health report.
#[derive(Default, Debug)]
pub struct RunStats {
    by_job: Mutex<HashMap<String, (u64, u64)>>,
}

impl RunStats {
    pub fn record(&self, job: &str, succeeded: bool) {
        let mut map = self.by_job.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(job.to_owned()).or_default();
        if succeeded {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    /// `{job: {"succeeded": n, "failed": m, "success_rate": r}}`.
    pub fn snapshot(&self) -> Value {
        let map = self.by_job.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Map::new();
        for (job, (ok, failed)) in map.iter() {
            let total = ok + failed;
            out.insert(
                job.clone(),
                serde_json::json!({
                    "succeeded": ok,
                    "failed": failed,
                    "success_rate": if total == 0 { 1.0 } else { *ok as f64 / total as f64 },
                }),
            );
        }
        Value::Object(out)
    }
}

/// Everything a task works with. Built per run by the API layer.
pub struct TaskContext {
    pub db: DatabaseConnection,
    pub dialect: Dialect,
    pub run_id: String,
    pub job: String,
    pub attempt: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub trigger: RunTrigger,
    /// Reference time of the run: `params.as_of`, else a scheduled run's tick, else the wall
    /// clock at start (see [`TaskContext::new`]).
    pub now: DateTime<Utc>,
    pub tz: chrono_tz::Tz,
    pub params: Map<String, Value>,
    /// What the task declared; the only names `params` may hold and the task may read.
    declared: &'static [Param],
    pub settings: Arc<TaskSettings>,
    pub run_stats: Arc<RunStats>,
    events: mpsc::UnboundedSender<ExecutorEvent>,
    cancel: CancellationToken,
    summary: Arc<Mutex<Summary>>,
    mail_queued: Arc<Notify>,
}

/// The parts of a context the API layer supplies.
pub struct ContextParts {
    pub db: DatabaseConnection,
    pub dialect: Dialect,
    pub settings: Arc<TaskSettings>,
    pub run_stats: Arc<RunStats>,
    pub mail_queued: Arc<Notify>,
}

/// What fired a run; decides its reference time (see [`TaskContext::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunTrigger {
    /// Fired by the job's schedule: the run belongs to its tick.
    Schedule,
    /// TriggerJob, or a control plane too old to say (it sends TRIGGER_UNSPECIFIED).
    Manual,
}

pub struct RunRequest {
    pub run_id: String,
    pub job: String,
    pub attempt: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub trigger: RunTrigger,
    pub tz: chrono_tz::Tz,
    pub params: Map<String, Value>,
    /// The task's declared parameters ([`Task::params`]).
    pub declared: &'static [Param],
}

/// `params.as_of` as a time, when given.
fn as_of(params: &Map<String, Value>) -> Result<Option<DateTime<Utc>>, TaskError> {
    match params.get("as_of") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| TaskError::InvalidParam {
                name: "as_of".into(),
                reason: format!("'{s}' is not an RFC 3339 time: {e}"),
            }),
        Some(other) => Err(TaskError::InvalidParam {
            name: "as_of".into(),
            reason: format!("expected an RFC 3339 string, got {other}"),
        }),
    }
}

impl TaskContext {
    /// Builds the context; fails when `params` holds a name the task did not declare (the
    /// control plane refuses those, but a `RunJob` may come from elsewhere) or `as_of` is not
    /// RFC 3339.
    ///
    /// The reference time ("now" of every window and cutoff): `params.as_of` when given; else,
    /// for a run fired by the schedule, its tick (`scheduled_for`), so that a run starting late
    /// (a retry after backoff, a catch-up after an outage, a queued run) still covers the day,
    /// week or month of its tick; else the wall clock at start.
    pub fn new(
        parts: ContextParts,
        request: RunRequest,
        events: mpsc::UnboundedSender<ExecutorEvent>,
        cancel: CancellationToken,
        summary: Arc<Mutex<Summary>>,
    ) -> Result<Self, TaskError> {
        if let Some(name) = request
            .params
            .keys()
            .find(|name| !request.declared.iter().any(|p| p.name == name.as_str()))
        {
            let known: Vec<&str> = request.declared.iter().map(|p| p.name).collect();
            return Err(TaskError::InvalidParam {
                name: name.clone(),
                reason: format!("{} takes only {}", request.job, known.join(", ")),
            });
        }
        let now = match (
            as_of(&request.params)?,
            request.trigger,
            request.scheduled_for,
        ) {
            (Some(as_of), _, _) => as_of,
            (None, RunTrigger::Schedule, Some(tick)) => tick,
            (None, _, _) => Utc::now(),
        };
        Ok(TaskContext {
            db: parts.db,
            dialect: parts.dialect,
            run_id: request.run_id,
            job: request.job,
            attempt: request.attempt,
            scheduled_for: request.scheduled_for,
            trigger: request.trigger,
            now,
            tz: request.tz,
            params: request.params,
            declared: request.declared,
            settings: parts.settings,
            run_stats: parts.run_stats,
            events,
            cancel,
            summary,
            mail_queued: parts.mail_queued,
        })
    }

    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(job = %self.job, run_id = %self.run_id, done, total, "{message}");
        // A closed channel means the stream is gone; the cancellation token handles that.
        let _ = self.events.send(ExecutorEvent {
            kind: Some(executor_event::Kind::Progress(Progress {
                done,
                total,
                message,
            })),
        });
    }

    /// A log line for the run's event stream, also emitted through tracing.
    pub fn log(&self, level: &str, message: impl Into<String>) {
        let message = message.into();
        match level {
            "error" => tracing::error!(job = %self.job, run_id = %self.run_id, "{message}"),
            "warn" => tracing::warn!(job = %self.job, run_id = %self.run_id, "{message}"),
            "debug" => tracing::debug!(job = %self.job, run_id = %self.run_id, "{message}"),
            _ => tracing::info!(job = %self.job, run_id = %self.run_id, "{message}"),
        }
        let _ = self.events.send(ExecutorEvent {
            kind: Some(executor_event::Kind::Log(LogLine {
                level: level.to_owned(),
                message,
            })),
        });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.log("info", message);
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.log("warn", message);
    }

    /// Adds `n` to the summary count `key` (creating it at 0 first, so zero counts show).
    pub fn add(&self, key: &str, n: u64) {
        let mut summary = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
        let current = summary.get(key).and_then(Value::as_u64).unwrap_or(0);
        summary.insert(key.to_owned(), Value::from(current + n));
    }

    pub fn set(&self, key: &str, value: impl Into<Value>) {
        let mut summary = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
        summary.insert(key.to_owned(), value.into());
    }

    pub fn count(&self, key: &str) -> u64 {
        let summary = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
        summary.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    pub fn summary(&self) -> Summary {
        self.summary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called between chunks: stops the task with its partial summary once cancelled.
    pub fn checkpoint(&self) -> Result<(), TaskError> {
        if self.cancel.is_cancelled() {
            Err(TaskError::Cancelled(self.summary()))
        } else {
            Ok(())
        }
    }

    /// The pause between chunks asked for by `params.pause_ms` (an operator's throttle for big
    /// runs on a busy database; at most one minute).
    pub fn chunk_pause(&self) -> Result<Option<std::time::Duration>, TaskError> {
        Ok(self
            .param_u64("pause_ms")?
            .filter(|ms| *ms > 0)
            .map(|ms| std::time::Duration::from_millis(ms.min(60_000))))
    }

    /// Sleeps for `pause`, or less if the run is cancelled meanwhile.
    pub async fn pause(&self, pause: std::time::Duration) {
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }

    /// Wakes the mail sender after a transaction that queued e-mails has committed.
    pub fn mail_queued(&self) {
        self.mail_queued.notify_one();
    }

    /// The finished output: the summary so far plus the given reports.
    pub fn output(&self, reports: Vec<ReportDraft>) -> TaskOutput {
        TaskOutput {
            summary: self.summary(),
            reports,
        }
    }

    /// Rows per chunk: `params.batch_size`, else `default`.
    pub fn batch_size(&self, default: u64) -> Result<u64, TaskError> {
        match self.param_u64("batch_size")? {
            Some(0) => Err(TaskError::InvalidParam {
                name: "batch_size".into(),
                reason: "must be at least 1".into(),
            }),
            Some(n) => Ok(n.min(params::MAX_BATCH)),
            None => Ok(default),
        }
    }

    /// A declared whole-number parameter, when given. Reading a name the task did not declare
    /// is a bug in the task, reported as such (every task runs in the test suite, so it cannot
    /// ship), rather than a parameter silently ignored by the control plane's check.
    pub fn param_u64(&self, name: &str) -> Result<Option<u64>, TaskError> {
        let Some(spec) = self.declared.iter().find(|p| p.name == name) else {
            return Err(TaskError::InvalidParam {
                name: name.into(),
                reason: format!("{} reads a parameter it does not declare", self.job),
            });
        };
        let value = match self.params.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                        .map(|f| f as u64)
                })
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| TaskError::InvalidParam {
                    name: name.into(),
                    reason: format!("expected a non-negative integer, got {v}"),
                })?,
        };
        let n = value as f64;
        if spec.min.is_some_and(|m| n < m) || spec.max.is_some_and(|m| n > m) {
            return Err(TaskError::InvalidParam {
                name: name.into(),
                reason: format!(
                    "{value} is out of bounds [{}, {}]",
                    spec.min.unwrap_or(0.0),
                    spec.max.unwrap_or(f64::INFINITY)
                ),
            });
        }
        Ok(Some(value))
    }
}
