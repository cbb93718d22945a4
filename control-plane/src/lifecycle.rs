//! The run lifecycle, in one place: the states a run can be in, what started it, the job
//! policies that shape it, which transitions are legal, how a failed attempt continues, and
//! the payload of the events a run records.
//!
//! ```text
//!            create                claim               settle
//!   (tick | TriggerJob) ──► QUEUED ──────► RUNNING ──────────► SUCCEEDED | FAILED | CANCELLED | TIMED_OUT
//!            │                 ▲             │
//!            │                 └── retry ────┘   (attempt + 1, after a backoff)
//!            └──► SKIPPED  (overlap policy, missed tick: recorded, never run)
//!   QUEUED ──► CANCELLED | FAILED  (CancelRun; no executor can ever run it)
//! ```
//!
//! Every state is stored as the same text it always was (`queued`, `running`, ...), so the enums
//! need no data migration. The transitions here are enforced by the settling statements in
//! `store/lifecycle.rs`, which re-check the current state and attempt in their `UPDATE`; the one
//! component that asks for them is `engine::completer`.
use std::time::Duration;

use sea_orm::{DeriveActiveEnum, EnumIter};
use serde::{Deserialize, Serialize};
use ticketmax_proto::v1;

/// Where a run is. Terminal states never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum RunState {
    #[sea_orm(string_value = "queued")]
    Queued,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
    #[sea_orm(string_value = "timed_out")]
    TimedOut,
    #[sea_orm(string_value = "skipped")]
    Skipped,
}

impl RunState {
    pub const ACTIVE: [RunState; 2] = [RunState::Queued, RunState::Running];

    pub const fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed_out",
            RunState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            "timed_out" => RunState::TimedOut,
            "skipped" => RunState::Skipped,
            _ => return None,
        })
    }

    pub const fn is_terminal(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }

    pub const fn to_proto(self) -> v1::RunState {
        match self {
            RunState::Queued => v1::RunState::Queued,
            RunState::Running => v1::RunState::Running,
            RunState::Succeeded => v1::RunState::Succeeded,
            RunState::Failed => v1::RunState::Failed,
            RunState::Cancelled => v1::RunState::Cancelled,
            RunState::TimedOut => v1::RunState::TimedOut,
            RunState::Skipped => v1::RunState::Skipped,
        }
    }

    /// `None` for `RUN_STATE_UNSPECIFIED` ("any state" in filters).
    pub const fn from_proto(s: v1::RunState) -> Option<Self> {
        Some(match s {
            v1::RunState::Unspecified => return None,
            v1::RunState::Queued => RunState::Queued,
            v1::RunState::Running => RunState::Running,
            v1::RunState::Succeeded => RunState::Succeeded,
            v1::RunState::Failed => RunState::Failed,
            v1::RunState::Cancelled => RunState::Cancelled,
            v1::RunState::TimedOut => RunState::TimedOut,
            v1::RunState::Skipped => RunState::Skipped,
        })
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RunState::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown run state '{s}'")))
    }
}

/// What created a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Trigger {
    /// A tick of the job's schedule (`tick_at` is set, unique per job).
    #[sea_orm(string_value = "schedule")]
    Schedule,
    /// `TriggerJob`, a seed REST endpoint or the dashboard.
    #[sea_orm(string_value = "manual")]
    Manual,
}

impl Trigger {
    pub const fn to_proto(self) -> v1::Trigger {
        match self {
            Trigger::Schedule => v1::Trigger::Schedule,
            Trigger::Manual => v1::Trigger::Manual,
        }
    }

    pub const fn from_proto(t: v1::Trigger) -> Option<Self> {
        match t {
            v1::Trigger::Unspecified => None,
            v1::Trigger::Schedule => Some(Trigger::Schedule),
            v1::Trigger::Manual => Some(Trigger::Manual),
        }
    }
}

/// What a new run of a job does while another one is active. Enforced by the unique index on
/// `(job, active_slot)`, so it holds across replicas and for manual triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum OverlapPolicy {
    /// At most one active run; a tick or trigger meanwhile is recorded as skipped.
    #[sea_orm(string_value = "skip")]
    Skip,
    /// One active run and at most one queued behind it; more are skipped.
    #[sea_orm(string_value = "queue_one")]
    QueueOne,
    /// Runs overlap freely.
    #[sea_orm(string_value = "allow")]
    Allow,
}

impl OverlapPolicy {
    /// The overlap slots a new run may take, in order: 0 is the active run, 1 the one queued
    /// behind it, `None` no slot at all.
    pub const fn slots(self) -> &'static [Option<i32>] {
        match self {
            OverlapPolicy::Skip => &[Some(0)],
            OverlapPolicy::QueueOne => &[Some(0), Some(1)],
            OverlapPolicy::Allow => &[None],
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::QueueOne => "queue_one",
            OverlapPolicy::Allow => "allow",
        }
    }

    pub const fn to_proto(self) -> v1::OverlapPolicy {
        match self {
            OverlapPolicy::Skip => v1::OverlapPolicy::Skip,
            OverlapPolicy::QueueOne => v1::OverlapPolicy::QueueOne,
            OverlapPolicy::Allow => v1::OverlapPolicy::Allow,
        }
    }

    pub const fn from_proto(p: v1::OverlapPolicy) -> Option<Self> {
        match p {
            v1::OverlapPolicy::Unspecified => None,
            v1::OverlapPolicy::Skip => Some(OverlapPolicy::Skip),
            v1::OverlapPolicy::QueueOne => Some(OverlapPolicy::QueueOne),
            v1::OverlapPolicy::Allow => Some(OverlapPolicy::Allow),
        }
    }
}

/// What happens to ticks that fell while no control plane was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum MissedTickPolicy {
    /// The newest missed tick inside the catch-up window runs; the others are skipped.
    #[sea_orm(string_value = "run_once")]
    RunOnce,
    /// Every missed tick is recorded as skipped.
    #[sea_orm(string_value = "skip")]
    Skip,
}

impl MissedTickPolicy {
    pub const fn to_proto(self) -> v1::MissedTickPolicy {
        match self {
            MissedTickPolicy::RunOnce => v1::MissedTickPolicy::RunOnce,
            MissedTickPolicy::Skip => v1::MissedTickPolicy::Skip,
        }
    }

    pub const fn from_proto(p: v1::MissedTickPolicy) -> Option<Self> {
        match p {
            v1::MissedTickPolicy::Unspecified => None,
            v1::MissedTickPolicy::RunOnce => Some(MissedTickPolicy::RunOnce),
            v1::MissedTickPolicy::Skip => Some(MissedTickPolicy::Skip),
        }
    }
}

/// A report an attempt produced, stored with its run's end.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportDraft {
    pub kind: String,
    pub period: String,
    /// JSON text.
    pub body: String,
}

/// How a run ends, or goes back to the queue. Whoever decides it (the dispatcher, `CancelRun`,
/// the lease rescuer, shutdown) hands it to the completer, which applies it with a conditional
/// `UPDATE` from the states [`Settlement::from_states`] allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Succeeded {
        summary: Option<String>,
        reports: Vec<ReportDraft>,
    },
    Failed {
        error: String,
        /// What a queued run failed from (no executor can ever run it) or a running one.
        from_queue: bool,
    },
    /// `reason` says who cancelled; `None` keeps the reason recorded with the cancel request
    /// (`CancelRun` stores it while the task stops), falling back to "cancelled on request".
    Cancelled {
        reason: Option<String>,
        summary: Option<String>,
        from_queue: bool,
    },
    TimedOut {
        error: String,
        summary: Option<String>,
    },
    /// The attempt failed and the job has retries left: back to the queue as the next attempt.
    Retry { error: String, backoff: Duration },
}

impl Settlement {
    /// The state the run is in once this settlement applied.
    pub const fn target(&self) -> RunState {
        match self {
            Settlement::Succeeded { .. } => RunState::Succeeded,
            Settlement::Failed { .. } => RunState::Failed,
            Settlement::Cancelled { .. } => RunState::Cancelled,
            Settlement::TimedOut { .. } => RunState::TimedOut,
            Settlement::Retry { .. } => RunState::Queued,
        }
    }

    /// The legal transitions: the states a run may be settled from this way.
    pub const fn from_states(&self) -> &'static [RunState] {
        match self {
            Settlement::Failed {
                from_queue: true, ..
            }
            | Settlement::Cancelled {
                from_queue: true, ..
            } => &[RunState::Queued],
            Settlement::Succeeded { .. }
            | Settlement::Failed { .. }
            | Settlement::Cancelled { .. }
            | Settlement::TimedOut { .. }
            | Settlement::Retry { .. } => &[RunState::Running],
        }
    }

    pub const fn is_retry(&self) -> bool {
        matches!(self, Settlement::Retry { .. })
    }

    pub fn summary(&self) -> Option<&str> {
        match self {
            Settlement::Succeeded { summary, .. }
            | Settlement::Cancelled { summary, .. }
            | Settlement::TimedOut { summary, .. } => summary.as_deref(),
            Settlement::Failed { .. } | Settlement::Retry { .. } => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Settlement::Failed { error, .. }
            | Settlement::TimedOut { error, .. }
            | Settlement::Retry { error, .. } => Some(error),
            Settlement::Succeeded { .. } | Settlement::Cancelled { .. } => None,
        }
    }
}

/// Whether a legal transition leads from `from` to `to`.
pub fn is_legal(from: RunState, to: RunState) -> bool {
    use RunState::*;
    matches!(
        (from, to),
        (Queued, Running)
            | (Queued, Cancelled | Failed)
            | (Running, Succeeded | Failed | Cancelled | TimedOut | Queued)
    )
}

/// How a failed attempt continues: retried with exponential backoff (`base`, doubling, at most
/// five minutes) while the job has retries left, failed for good otherwise.
pub fn after_failure(attempt: i32, max_retries: i32, base: Duration, error: String) -> Settlement {
    const MAX_BACKOFF: Duration = Duration::from_secs(300);
    if attempt <= max_retries {
        let exp = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(16);
        let backoff = base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(MAX_BACKOFF);
        Settlement::Retry { error, backoff }
    } else {
        Settlement::Failed {
            error,
            from_queue: false,
        }
    }
}

/// What a run event says. Stored as `kind` (`state`, `progress`, `log`) and a JSON payload;
/// the same type writes and reads them.
#[derive(Debug, Clone, PartialEq)]
pub enum EventPayload {
    State {
        state: RunState,
        attempt: i32,
        message: String,
    },
    Progress {
        done: u64,
        total: u64,
        message: String,
    },
    Log {
        level: String,
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct StateJson {
    state: RunState,
    #[serde(default)]
    attempt: i32,
    #[serde(default)]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct ProgressJson {
    #[serde(default)]
    done: u64,
    #[serde(default)]
    total: u64,
    #[serde(default)]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct LogJson {
    #[serde(default)]
    level: String,
    #[serde(default)]
    message: String,
}

impl EventPayload {
    pub const fn kind(&self) -> &'static str {
        match self {
            EventPayload::State { .. } => "state",
            EventPayload::Progress { .. } => "progress",
            EventPayload::Log { .. } => "log",
        }
    }

    pub fn state(state: RunState, attempt: i32, message: impl Into<String>) -> Self {
        EventPayload::State {
            state,
            attempt,
            message: message.into(),
        }
    }

    pub fn log(level: &str, message: impl Into<String>) -> Self {
        EventPayload::Log {
            level: level.to_string(),
            message: message.into(),
        }
    }

    /// The terminal state this event announces, if it does.
    pub fn terminal_state(&self) -> Option<RunState> {
        match self {
            EventPayload::State { state, .. } if state.is_terminal() => Some(*state),
            _ => None,
        }
    }

    pub fn to_json(&self) -> String {
        let value = match self {
            EventPayload::State {
                state,
                attempt,
                message,
            } => serde_json::to_string(&StateJson {
                state: *state,
                attempt: *attempt,
                message: message.clone(),
            }),
            EventPayload::Progress {
                done,
                total,
                message,
            } => serde_json::to_string(&ProgressJson {
                done: *done,
                total: *total,
                message: message.clone(),
            }),
            EventPayload::Log { level, message } => serde_json::to_string(&LogJson {
                level: level.clone(),
                message: message.clone(),
            }),
        };
        value.unwrap_or_else(|_| "{}".to_string())
    }

    /// Reads a stored event; an unreadable payload becomes a log line saying so rather than an
    /// error, so one bad row never stops a watcher.
    pub fn parse(kind: &str, payload: &str) -> Self {
        let parsed = match kind {
            "state" => serde_json::from_str::<StateJson>(payload).map(|s| EventPayload::State {
                state: s.state,
                attempt: s.attempt,
                message: s.message,
            }),
            "progress" => {
                serde_json::from_str::<ProgressJson>(payload).map(|p| EventPayload::Progress {
                    done: p.done,
                    total: p.total,
                    message: p.message,
                })
            }
            _ => serde_json::from_str::<LogJson>(payload).map(|l| EventPayload::Log {
                level: l.level,
                message: l.message,
            }),
        };
        parsed.unwrap_or_else(|e| EventPayload::Log {
            level: "warn".into(),
            message: format!("unreadable {kind} event: {e}"),
        })
    }

    pub fn to_proto(&self) -> v1::run_event::Kind {
        match self {
            EventPayload::State {
                state,
                attempt,
                message,
            } => v1::run_event::Kind::State(v1::StateChange {
                state: state.to_proto().into(),
                message: message.clone(),
                attempt: u32::try_from(*attempt).unwrap_or(0),
            }),
            EventPayload::Progress {
                done,
                total,
                message,
            } => v1::run_event::Kind::Progress(v1::Progress {
                done: *done,
                total: *total,
                message: message.clone(),
            }),
            EventPayload::Log { level, message } => v1::run_event::Kind::Log(v1::LogLine {
                level: level.clone(),
                message: message.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    #[test]
    fn states_round_trip_through_their_stored_text_and_the_proto() {
        for s in RunState::iter() {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
            assert_eq!(RunState::from_proto(s.to_proto()), Some(s));
            assert_eq!(s.to_proto().is_terminal(), s.is_terminal(), "{s}");
        }
        assert_eq!(RunState::parse("Queued"), None);
    }

    #[test]
    fn every_settlement_is_a_legal_transition_and_nothing_leaves_a_terminal_state() {
        let all = [
            Settlement::Succeeded {
                summary: None,
                reports: vec![],
            },
            Settlement::Failed {
                error: "x".into(),
                from_queue: false,
            },
            Settlement::Failed {
                error: "x".into(),
                from_queue: true,
            },
            Settlement::Cancelled {
                reason: None,
                summary: None,
                from_queue: false,
            },
            Settlement::Cancelled {
                reason: None,
                summary: None,
                from_queue: true,
            },
            Settlement::TimedOut {
                error: "x".into(),
                summary: None,
            },
            Settlement::Retry {
                error: "x".into(),
                backoff: Duration::from_secs(1),
            },
        ];
        for s in &all {
            for from in s.from_states() {
                assert!(is_legal(*from, s.target()), "{from} -> {}", s.target());
            }
        }
        for from in RunState::iter().filter(|s| s.is_terminal()) {
            for to in RunState::iter() {
                assert!(!is_legal(from, to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn failures_back_off_exponentially_until_the_retries_run_out() {
        let base = Duration::from_secs(5);
        let backoff = |attempt| match after_failure(attempt, 3, base, "e".into()) {
            Settlement::Retry { backoff, .. } => Some(backoff.as_secs()),
            _ => None,
        };
        assert_eq!(backoff(1), Some(5));
        assert_eq!(backoff(2), Some(10));
        assert_eq!(backoff(3), Some(20));
        assert_eq!(backoff(4), None);
        assert_eq!(
            after_failure(30, 100, base, "e".into()),
            Settlement::Retry {
                error: "e".into(),
                backoff: Duration::from_secs(300)
            }
        );
    }

    #[test]
    fn event_payloads_round_trip_and_bad_ones_become_a_warning() {
        for e in [
            EventPayload::state(RunState::Running, 2, "attempt 2"),
            EventPayload::Progress {
                done: 3,
                total: 9,
                message: "chunk".into(),
            },
            EventPayload::log("info", "hello\nworld"),
        ] {
            assert_eq!(EventPayload::parse(e.kind(), &e.to_json()), e);
        }
        assert!(matches!(
            EventPayload::parse("state", "{\"state\":\"bogus\"}"),
            EventPayload::Log { level, .. } if level == "warn"
        ));
        // The stored text of old rows reads the same.
        assert_eq!(
            EventPayload::parse(
                "state",
                r#"{"state":"queued","attempt":1,"message":"scheduled tick"}"#
            ),
            EventPayload::state(RunState::Queued, 1, "scheduled tick")
        );
    }
}
