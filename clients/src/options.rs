//! Request options: what the calls of [`Client`](crate::Client) take beyond a name or an id
//! ([`TriggerOptions`], [`RunFilter`], [`UpdateJob`]) and the page [`RunsPage`] that
//! [`Client::runs`](crate::Client::runs) returns.

use crate::proto::{MissedTickPolicy, OverlapPolicy, Run, RunState};

/// Options of [`Client::trigger_with`](crate::Client::trigger_with).
#[derive(Debug, Clone, Default)]
pub struct TriggerOptions {
    /// A key repeated for the same job returns the run created the first time instead of a new
    /// one (safe retries).
    pub idempotency_key: Option<String>,
    /// Task parameters (a JSON object), passed to the executor as they are.
    pub params: Option<serde_json::Value>,
}

/// Which runs [`Client::runs`](crate::Client::runs) and
/// [`Client::all_runs`](crate::Client::all_runs) return, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this job.
    pub job: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Runs per page, 1..=500 (server default 50 when 0).
    pub page_size: u32,
    /// Continue after this page ([`RunsPage::next_page_token`]).
    pub page_token: Option<String>,
}

impl RunFilter {
    /// Runs of one job.
    pub fn job(job: impl Into<String>) -> Self {
        Self {
            job: Some(job.into()),
            ..Self::default()
        }
    }

    /// Only runs in `state`.
    pub fn state(mut self, state: RunState) -> Self {
        self.state = Some(state);
        self
    }

    /// Runs per page.
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }
}

/// One page of [`Client::runs`](crate::Client::runs).
#[derive(Debug, Clone, Default)]
pub struct RunsPage {
    pub runs: Vec<Run>,
    /// `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Changes for [`Client::update`](crate::Client::update); fields left `None` keep their value.
#[derive(Debug, Clone, Default)]
pub struct UpdateJob {
    /// Cron (5 fields, or 6 with seconds first) or a named expression such as
    /// `EVERY_5_MINUTES`.
    pub schedule: Option<String>,
    /// IANA timezone, e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
    pub enabled: Option<bool>,
    pub overlap_policy: Option<OverlapPolicy>,
    pub missed_tick_policy: Option<MissedTickPolicy>,
    pub catch_up_window_seconds: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub max_retries: Option<u32>,
}

impl UpdateJob {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.schedule.is_none()
            && self.timezone.is_none()
            && self.enabled.is_none()
            && self.overlap_policy.is_none()
            && self.missed_tick_policy.is_none()
            && self.catch_up_window_seconds.is_none()
            && self.timeout_seconds.is_none()
            && self.max_retries.is_none()
    }
}
