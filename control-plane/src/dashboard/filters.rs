//! The runs list's filters as they travel in the URL (job, state, trigger, a time range as a
//! preset or from/to), their form, and their translation into the API's requests: the list
//! page (`ListRuns`) and "cancel everything matching" (`CancelRuns`) read the same filters,
//! so the count shown before a bulk cancel is the count of what the list shows.
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDateTime, Utc};
use tonic::Status;

use ticketmax_proto::{to_timestamp, v1};

use super::html::{esc, url_param};

/// The state filter's choices: the URL spelling and the API's state.
pub const STATES: [(&str, v1::RunState); 7] = [
    ("queued", v1::RunState::Queued),
    ("running", v1::RunState::Running),
    ("succeeded", v1::RunState::Succeeded),
    ("failed", v1::RunState::Failed),
    ("cancelled", v1::RunState::Cancelled),
    ("timed-out", v1::RunState::TimedOut),
    ("skipped", v1::RunState::Skipped),
];

const TRIGGERS: [(&str, v1::Trigger); 2] = [
    ("schedule", v1::Trigger::Schedule),
    ("manual", v1::Trigger::Manual),
];

/// Time-range presets: the URL spelling, the label, the span back from now.
const RANGES: [(&str, &str, i64); 4] = [
    ("1h", "last hour", 3600),
    ("24h", "last 24 hours", 86_400),
    ("7d", "last 7 days", 7 * 86_400),
    ("30d", "last 30 days", 30 * 86_400),
];

/// The `datetime-local` spelling of the custom range's ends (UTC).
const LOCAL: &str = "%Y-%m-%dT%H:%M";

/// The filters of the runs list, as they travel in the URL.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct RunsQuery {
    #[serde(default)]
    pub job: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub trigger: String,
    /// A preset (`1h`, `24h`, `7d`, `30d`), `custom` (then `since` / `until`), or empty: any time.
    #[serde(default)]
    pub range: String,
    /// Custom range: created at or after, `YYYY-MM-DDTHH:MM` UTC.
    #[serde(default)]
    pub since: String,
    /// Custom range: created before, `YYYY-MM-DDTHH:MM` UTC.
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub page: String,
}

/// The filters in the API's terms, at one instant (presets count back from it).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub state: v1::RunState,
    pub trigger: v1::Trigger,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

fn parse_local(what: &str, s: &str) -> Result<Option<DateTime<Utc>>, Status> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    NaiveDateTime::parse_from_str(s, LOCAL)
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .map(|t| Some(t.and_utc()))
        .map_err(|_| {
            Status::invalid_argument(format!(
                "'{s}' is not a {what} time (YYYY-MM-DDTHH:MM, UTC)"
            ))
        })
}

impl RunsQuery {
    /// The (job, state, trigger, range) pairs of the URL, `page` left out.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        let custom = self.range == "custom";
        [
            ("job", self.job.as_str()),
            ("state", self.state.as_str()),
            ("trigger", self.trigger.as_str()),
            ("range", self.range.as_str()),
            ("since", if custom { self.since.as_str() } else { "" }),
            ("until", if custom { self.until.as_str() } else { "" }),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// The query string of these filters on another page (`page` replaced).
    pub fn with_page(&self, page: &str) -> String {
        let mut parts: Vec<String> = self
            .pairs()
            .iter()
            .map(|(k, v)| format!("{k}={}", url_param(v)))
            .collect();
        if !page.is_empty() {
            parts.push(format!("page={}", url_param(page)));
        }
        parts.join("&")
    }

    /// The filters as hidden fields of a form (the bulk cancel's confirmation).
    pub fn hidden_fields(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
            .collect()
    }

    /// The filters read from a posted form.
    pub fn from_form(form: &[(String, String)]) -> Self {
        let get = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Self {
            job: get("job"),
            state: get("state"),
            trigger: get("trigger"),
            range: get("range"),
            since: get("since"),
            until: get("until"),
            page: String::new(),
        }
    }

    /// Whether any filter narrows the list.
    pub fn is_filtered(&self) -> bool {
        !self.pairs().is_empty()
    }

    /// The filters in the API's terms at `now`; a bad value is the API's kind of refusal.
    pub fn resolve(&self, now: DateTime<Utc>) -> Result<Resolved, Status> {
        let state = match self.state.as_str() {
            "" => v1::RunState::Unspecified,
            s => STATES
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(_, st)| *st)
                .ok_or_else(|| Status::invalid_argument(format!("no run state '{s}'")))?,
        };
        let trigger = match self.trigger.as_str() {
            "" => v1::Trigger::Unspecified,
            t => TRIGGERS
                .iter()
                .find(|(n, _)| *n == t)
                .map(|(_, tr)| *tr)
                .ok_or_else(|| Status::invalid_argument(format!("no trigger '{t}'")))?,
        };
        let (since, until) = match self.range.as_str() {
            "" => (None, None),
            "custom" => (
                parse_local("from", &self.since)?,
                parse_local("to", &self.until)?,
            ),
            r => {
                let (_, _, secs) = RANGES
                    .iter()
                    .find(|(n, _, _)| *n == r)
                    .ok_or_else(|| Status::invalid_argument(format!("no time range '{r}'")))?;
                (Some(now - chrono::Duration::seconds(*secs)), None)
            }
        };
        if let (Some(a), Some(b)) = (since, until)
            && b < a
        {
            return Err(Status::invalid_argument(
                "the range ends before it starts: 'to' is earlier than 'from'",
            ));
        }
        Ok(Resolved {
            state,
            trigger,
            since,
            until,
        })
    }

    /// The filters in words, for the bulk cancel's confirmation.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.job.is_empty() {
            parts.push(format!("job {}", self.job));
        }
        if !self.state.is_empty() {
            parts.push(format!("state {}", self.state));
        }
        if !self.trigger.is_empty() {
            parts.push(format!("trigger {}", self.trigger));
        }
        match self.range.as_str() {
            "" => {}
            "custom" => parts.push(format!(
                "created from {} to {} UTC",
                if self.since.is_empty() {
                    "the first run"
                } else {
                    &self.since
                },
                if self.until.is_empty() {
                    "now"
                } else {
                    &self.until
                },
            )),
            r => {
                if let Some((_, label, _)) = RANGES.iter().find(|(n, _, _)| *n == r) {
                    parts.push(format!("created in the {label}"));
                }
            }
        }
        if parts.is_empty() {
            "all runs".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// The filter form of the runs list (selects submit themselves when the script runs).
    pub fn form(&self, jobs: &[v1::Job], extra: &str) -> String {
        let mut b =
            String::from("<form method=\"get\" action=\"/runs\" class=\"filters\" id=\"filters\">");
        b.push_str(
            "<label>Job <select name=\"job\" data-autosubmit><option value=\"\">all</option>",
        );
        for j in jobs {
            let _ = write!(
                b,
                "<option value=\"{0}\"{1}>{0}</option>",
                esc(&j.name),
                if j.name == self.job { " selected" } else { "" }
            );
        }
        b.push_str("</select></label>");
        let select = |b: &mut String,
                      label: &str,
                      name: &str,
                      current: &str,
                      opts: &[(&str, &str)]| {
            let _ = write!(
                b,
                "<label>{label} <select name=\"{name}\" data-autosubmit><option value=\"\">any</option>"
            );
            for (value, text) in opts {
                let _ = write!(
                    b,
                    "<option value=\"{value}\"{}>{text}</option>",
                    if *value == current { " selected" } else { "" }
                );
            }
            b.push_str("</select></label>");
        };
        let states: Vec<(&str, &str)> = STATES.iter().map(|(n, _)| (*n, *n)).collect();
        select(&mut b, "State", "state", &self.state, &states);
        let triggers: Vec<(&str, &str)> = TRIGGERS.iter().map(|(n, _)| (*n, *n)).collect();
        select(&mut b, "Trigger", "trigger", &self.trigger, &triggers);
        let mut ranges: Vec<(&str, &str)> = RANGES.iter().map(|(n, l, _)| (*n, *l)).collect();
        ranges.push(("custom", "from … to (UTC)"));
        select(&mut b, "Created", "range", &self.range, &ranges);
        if self.range == "custom" {
            let _ = write!(
                b,
                "<label>From <input type=\"datetime-local\" name=\"since\" value=\"{}\"></label>\
                 <label>To <input type=\"datetime-local\" name=\"until\" value=\"{}\"></label>\
                 <button type=\"submit\">Apply</button>",
                esc(&self.since),
                esc(&self.until)
            );
        } else {
            b.push_str("<noscript><button>Filter</button></noscript>");
        }
        b.push_str(extra);
        b.push_str("</form>");
        b
    }

    /// The `ListRuns` request of one page of these filters.
    pub fn list_request(&self, r: &Resolved, page_size: u32) -> v1::ListRunsRequest {
        v1::ListRunsRequest {
            job: self.job.clone(),
            state: r.state.into(),
            page_size,
            page_token: self.page.clone(),
            trigger: r.trigger.into(),
            created_since: r.since.map(to_timestamp),
            created_until: r.until.map(to_timestamp),
        }
    }

    /// The `CancelRuns` request of these filters, bounded above by `until` (the instant the
    /// count was shown: runs created after it are not what the person saw counted).
    pub fn cancel_request(
        &self,
        r: &Resolved,
        until: DateTime<Utc>,
        reason: String,
        dry_run: bool,
    ) -> v1::CancelRunsRequest {
        v1::CancelRunsRequest {
            job: self.job.clone(),
            state: r.state.into(),
            trigger: r.trigger.into(),
            created_since: r.since.map(to_timestamp),
            created_until: Some(to_timestamp(r.until.map_or(until, |u| u.min(until)))),
            reason,
            dry_run,
            limit: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn presets_count_back_from_the_given_instant_and_custom_ranges_are_utc() {
        let now = at("2026-03-01T00:30:00Z");
        let q = RunsQuery {
            range: "24h".into(),
            ..Default::default()
        };
        let r = q.resolve(now).expect("valid");
        assert_eq!(r.since, Some(at("2026-02-28T00:30:00Z")));
        assert_eq!(r.until, None);
        let custom = RunsQuery {
            range: "custom".into(),
            since: "2026-02-28T23:00".into(),
            until: "2026-03-01T01:00".into(),
            ..Default::default()
        };
        let r = custom.resolve(now).expect("valid");
        assert_eq!(r.since, Some(at("2026-02-28T23:00:00Z")));
        assert_eq!(r.until, Some(at("2026-03-01T01:00:00Z")));
        // The custom ends travel only with the custom range.
        assert_eq!(
            custom.with_page("p"),
            "range=custom&since=2026-02-28T23%3A00&until=2026-03-01T01%3A00&page=p"
        );
        let preset_with_stale_ends = RunsQuery {
            range: "7d".into(),
            since: "2020-01-01T00:00".into(),
            ..Default::default()
        };
        assert_eq!(preset_with_stale_ends.with_page(""), "range=7d");
    }

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        let now = at("2026-03-01T00:00:00Z");
        for (q, says) in [
            (
                RunsQuery {
                    state: "done".into(),
                    ..Default::default()
                },
                "no run state 'done'",
            ),
            (
                RunsQuery {
                    trigger: "cron".into(),
                    ..Default::default()
                },
                "no trigger 'cron'",
            ),
            (
                RunsQuery {
                    range: "2w".into(),
                    ..Default::default()
                },
                "no time range '2w'",
            ),
            (
                RunsQuery {
                    range: "custom".into(),
                    since: "yesterday".into(),
                    ..Default::default()
                },
                "'yesterday' is not a from time",
            ),
            (
                RunsQuery {
                    range: "custom".into(),
                    since: "2026-03-01T10:00".into(),
                    until: "2026-03-01T09:00".into(),
                    ..Default::default()
                },
                "ends before it starts",
            ),
        ] {
            let e = q.resolve(now).expect_err("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(says), "{}", e.message());
        }
    }

    #[test]
    fn a_bulk_cancel_never_reaches_past_the_instant_its_count_was_shown() {
        let shown = at("2026-03-01T12:00:00Z");
        let q = RunsQuery {
            job: "data-cleanup/clean-cache".into(),
            trigger: "manual".into(),
            ..Default::default()
        };
        let r = q.resolve(shown).expect("valid");
        let req = q.cancel_request(&r, shown, "why".into(), true);
        assert_eq!(req.created_until, Some(to_timestamp(shown)));
        assert_eq!(req.trigger, i32::from(v1::Trigger::Manual));
        assert!(req.dry_run);
        let earlier = RunsQuery {
            range: "custom".into(),
            until: "2026-03-01T08:00".into(),
            ..Default::default()
        };
        let r = earlier.resolve(shown).expect("valid");
        assert_eq!(
            earlier
                .cancel_request(&r, shown, String::new(), false)
                .created_until,
            Some(to_timestamp(at("2026-03-01T08:00:00Z")))
        );
        assert_eq!(q.describe(), "job data-cleanup/clean-cache, trigger manual");
        assert_eq!(RunsQuery::default().describe(), "all runs");
    }
}
