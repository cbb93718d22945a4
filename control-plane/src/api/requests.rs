//! Requests as the handlers use them: parsed and validated on construction (`TryFrom` the
//! wire message), so a handler never sees a malformed value and every refusal is an
//! `INVALID_ARGUMENT` that changed nothing.
use tonic::Status;

use ticketmax_proto::{struct_to_json, v1};

use crate::lifecycle::{MissedTickPolicy, OverlapPolicy, RunState, Trigger};

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_KEY_LEN: usize = 200;
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;
pub const MAX_REASON_LEN: usize = 500;
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

/// Text the database can store: a NUL byte is refused here, with the field's name, rather than
/// by the database with an error clients would retry.
pub fn text<'a>(what: &str, s: &'a str) -> Result<&'a str, Status> {
    if s.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{what} contains a NUL byte"
        )));
    }
    Ok(s)
}

/// Every string of a JSON value (keys included) is storable text.
fn json_text(what: &str, v: &serde_json::Value) -> Result<(), Status> {
    match v {
        serde_json::Value::String(s) => text(what, s).map(|_| ()),
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| json_text(what, i)),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            text(what, k)?;
            json_text(what, v)
        }),
        _ => Ok(()),
    }
}

/// A required, bounded name (job, run id, executor id, report id).
pub fn require_name(what: &str, name: &str) -> Result<String, Status> {
    let name = text(what, name)?.trim();
    if name.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Status::invalid_argument(format!(
            "{what} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    Ok(name.to_string())
}

pub struct TriggerJob {
    pub job: String,
    pub idempotency_key: Option<String>,
    /// JSON text, `None` when empty.
    pub params: Option<String>,
    /// The same, as an object (a non-object `Struct` cannot arrive: the wire type is a map).
    pub params_map: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<v1::TriggerJobRequest> for TriggerJob {
    type Error = Status;

    fn try_from(req: v1::TriggerJobRequest) -> Result<Self, Status> {
        let key = text("idempotency_key", &req.idempotency_key)?
            .trim()
            .to_string();
        if key.len() > MAX_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "idempotency_key is longer than {MAX_KEY_LEN} characters"
            )));
        }
        let params = req.params.as_ref().map(struct_to_json);
        if let Some(p) = &params {
            json_text("params", p)?;
        }
        let params_map = match &params {
            Some(serde_json::Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let params = params.map(|p| p.to_string()).filter(|p| p != "{}");
        if params.as_ref().is_some_and(|p| p.len() > MAX_PARAMS_BYTES) {
            return Err(Status::invalid_argument(format!(
                "params are larger than {MAX_PARAMS_BYTES} bytes"
            )));
        }
        Ok(Self {
            job: require_name("job name", &req.job)?,
            idempotency_key: (!key.is_empty()).then_some(key),
            params,
            params_map,
        })
    }
}

pub struct ListRuns {
    pub job: Option<String>,
    pub state: Option<RunState>,
    pub page: u32,
    pub before_id: Option<String>,
    pub matching: Matching,
}

/// The trigger and creation-time range a list or a bulk cancel is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct Matching {
    pub trigger: Option<Trigger>,
    pub created_since: Option<chrono::DateTime<chrono::Utc>>,
    pub created_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Matching {
    fn parse(
        trigger: i32,
        since: Option<&prost_types::Timestamp>,
        until: Option<&prost_types::Timestamp>,
    ) -> Result<Self, Status> {
        let trigger = v1::Trigger::try_from(trigger)
            .map_err(|_| Status::invalid_argument(format!("unknown trigger {trigger}")))?;
        let time = |what: &str, t: Option<&prost_types::Timestamp>| {
            t.map(|t| {
                ticketmax_proto::from_timestamp(t)
                    .ok_or_else(|| Status::invalid_argument(format!("{what} is not a valid time")))
            })
            .transpose()
        };
        let created_since = time("created_since", since)?;
        let created_until = time("created_until", until)?;
        if let (Some(a), Some(b)) = (created_since, created_until)
            && b < a
        {
            return Err(Status::invalid_argument(
                "created_until is before created_since",
            ));
        }
        Ok(Self {
            trigger: Trigger::from_proto(trigger),
            created_since,
            created_until,
        })
    }
}

/// The job filter of a list: empty means every job.
fn job_filter(job: &str) -> Result<Option<String>, Status> {
    let job = job.trim();
    if job.is_empty() {
        Ok(None)
    } else {
        require_name("job", job).map(Some)
    }
}

impl TryFrom<v1::ListRunsRequest> for ListRuns {
    type Error = Status;

    fn try_from(req: v1::ListRunsRequest) -> Result<Self, Status> {
        let page = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let state = v1::RunState::try_from(req.state)
            .map_err(|_| Status::invalid_argument(format!("unknown run state {}", req.state)))?;
        let token = req.page_token.trim();
        let before_id = if token.is_empty() {
            None
        } else {
            // Exactly the spelling the server issued (a run id): not upper case, braces, a
            // URN or the hyphen-less form, which would page from a different place.
            let issued =
                uuid::Uuid::parse_str(token).is_ok_and(|u| u.hyphenated().to_string() == token);
            if !issued {
                return Err(Status::invalid_argument(
                    "page_token is not one this server issued",
                ));
            }
            Some(token.to_string())
        };
        Ok(Self {
            job: job_filter(&req.job)?,
            state: RunState::from_proto(state),
            page,
            before_id,
            matching: Matching::parse(
                req.trigger,
                req.created_since.as_ref(),
                req.created_until.as_ref(),
            )?,
        })
    }
}

pub const DEFAULT_CANCEL_LIMIT: u32 = 1000;
pub const MAX_CANCEL_LIMIT: u32 = 10_000;

pub struct CancelRuns {
    pub job: Option<String>,
    /// The active states to cancel: queued, running, or both.
    pub states: Vec<RunState>,
    pub matching: Matching,
    pub reason: Option<String>,
    pub dry_run: bool,
    pub limit: u32,
}

impl TryFrom<v1::CancelRunsRequest> for CancelRuns {
    type Error = Status;

    fn try_from(req: v1::CancelRunsRequest) -> Result<Self, Status> {
        let state = v1::RunState::try_from(req.state)
            .map_err(|_| Status::invalid_argument(format!("unknown run state {}", req.state)))?;
        let states = match RunState::from_proto(state) {
            None => vec![RunState::Queued, RunState::Running],
            Some(s @ (RunState::Queued | RunState::Running)) => vec![s],
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "only queued or running runs can be cancelled, not {other} ones"
                )));
            }
        };
        let limit = match req.limit {
            0 => DEFAULT_CANCEL_LIMIT,
            n if n > MAX_CANCEL_LIMIT => {
                return Err(Status::invalid_argument(format!(
                    "limit is at most {MAX_CANCEL_LIMIT}"
                )));
            }
            n => n,
        };
        Ok(Self {
            job: job_filter(&req.job)?,
            states,
            matching: Matching::parse(
                req.trigger,
                req.created_since.as_ref(),
                req.created_until.as_ref(),
            )?,
            reason: cancel_reason(&req.reason)?,
            dry_run: req.dry_run,
            limit,
        })
    }
}

/// A cancellation's reason: trimmed, at most `MAX_REASON_LEN` characters, `None` when empty.
fn cancel_reason(reason: &str) -> Result<Option<String>, Status> {
    let reason = text("reason", reason)?.trim();
    if reason.len() > MAX_REASON_LEN {
        return Err(Status::invalid_argument(format!(
            "reason is longer than {MAX_REASON_LEN} characters"
        )));
    }
    Ok((!reason.is_empty()).then(|| reason.to_string()))
}

pub struct CancelRun {
    pub run_id: String,
    pub reason: Option<String>,
}

impl TryFrom<v1::CancelRunRequest> for CancelRun {
    type Error = Status;

    fn try_from(req: v1::CancelRunRequest) -> Result<Self, Status> {
        Ok(Self {
            run_id: require_name("run_id", &req.run_id)?,
            reason: cancel_reason(&req.reason)?,
        })
    }
}

/// The changes of an `UpdateJob`, each checked on its own; the schedule and timezone are
/// checked together against the job's current values by the handler.
pub struct UpdateJob {
    pub name: String,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub enabled: Option<bool>,
    pub overlap_policy: Option<OverlapPolicy>,
    pub missed_tick_policy: Option<MissedTickPolicy>,
    pub catch_up_window_secs: Option<i32>,
    pub timeout_secs: Option<i32>,
    pub max_retries: Option<i32>,
}

fn bounded(what: &str, v: Option<u32>, lo: u32, hi: u32) -> Result<Option<i32>, Status> {
    match v {
        None => Ok(None),
        Some(n) if (lo..=hi).contains(&n) => Ok(i32::try_from(n).ok()),
        Some(n) => Err(Status::invalid_argument(format!(
            "{what} must be between {lo} and {hi}, got {n}"
        ))),
    }
}

impl TryFrom<v1::UpdateJobRequest> for UpdateJob {
    type Error = Status;

    fn try_from(req: v1::UpdateJobRequest) -> Result<Self, Status> {
        let overlap_policy = v1::OverlapPolicy::try_from(req.overlap_policy)
            .map_err(|_| Status::invalid_argument("unknown overlap_policy"))?;
        let missed_tick_policy = v1::MissedTickPolicy::try_from(req.missed_tick_policy)
            .map_err(|_| Status::invalid_argument("unknown missed_tick_policy"))?;
        Ok(Self {
            name: require_name("job name", &req.name)?,
            schedule: req
                .schedule
                .as_deref()
                .map(|s| text("schedule", s).map(|s| s.trim().to_string()))
                .transpose()?,
            timezone: req
                .timezone
                .as_deref()
                .map(|s| text("timezone", s).map(|s| s.trim().to_string()))
                .transpose()?,
            enabled: req.enabled,
            overlap_policy: OverlapPolicy::from_proto(overlap_policy),
            missed_tick_policy: MissedTickPolicy::from_proto(missed_tick_policy),
            catch_up_window_secs: bounded(
                "catch_up_window_seconds",
                req.catch_up_window_seconds,
                0,
                7 * 86_400,
            )?,
            timeout_secs: bounded("timeout_seconds", req.timeout_seconds, 1, 7 * 86_400)?,
            max_retries: bounded("max_retries", req.max_retries, 0, 100)?,
        })
    }
}
