//! Run parameters: what each executor declares its jobs accept (sent with `Register`, kept in
//! `executors.tasks`), and the check `TriggerJob` makes before a run exists. A parameter the
//! job does not declare, of the wrong type or out of its bounds is refused with
//! `INVALID_ARGUMENT`; so is an `as_of` in the future (beyond a small clock skew) or before the
//! horizon (`TICKETMAX_AS_OF_HORIZON_DAYS`), whichever executor would run it.
//!
//! A job no executor has declared (only executors older than this check do that) gets the
//! checks that need no declaration: `as_of` must be a bounded RFC 3339 time.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticketmax_proto::v1;

/// How far ahead of this replica's clock `as_of` may be (clock skew between machines).
pub const AS_OF_SKEW: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    String,
    Integer,
    Number,
    Boolean,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub job: String,
    pub params: Vec<ParamSpec>,
}

const MAX_TASKS: usize = 1000;
const MAX_PARAMS: usize = 64;
const MAX_TEXT: usize = 500;

/// The specs an executor registers, checked for size and sense.
pub fn from_proto(tasks: &[v1::TaskSpec]) -> Result<Vec<TaskSpec>, String> {
    if tasks.len() > MAX_TASKS {
        return Err(format!("more than {MAX_TASKS} task specs"));
    }
    tasks
        .iter()
        .map(|t| {
            if t.job.is_empty() || t.job.len() > MAX_TEXT || t.params.len() > MAX_PARAMS {
                return Err(format!("task spec '{}' is malformed", t.job));
            }
            let params = t
                .params
                .iter()
                .map(|p| {
                    let kind = match v1::ParamType::try_from(p.r#type) {
                        Ok(v1::ParamType::String) => ParamKind::String,
                        Ok(v1::ParamType::Integer) => ParamKind::Integer,
                        Ok(v1::ParamType::Number) => ParamKind::Number,
                        Ok(v1::ParamType::Boolean) => ParamKind::Boolean,
                        Ok(v1::ParamType::Timestamp) => ParamKind::Timestamp,
                        _ => {
                            return Err(format!("parameter '{}' of {} has no type", p.name, t.job));
                        }
                    };
                    if p.name.is_empty()
                        || p.name.len() > MAX_TEXT
                        || p.description.len() > MAX_TEXT
                        || p.name.contains('\0')
                    {
                        return Err(format!("a parameter of {} is malformed", t.job));
                    }
                    Ok(ParamSpec {
                        name: p.name.clone(),
                        kind,
                        description: p.description.clone(),
                        min: p.min,
                        max: p.max,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(TaskSpec {
                job: t.job.clone(),
                params,
            })
        })
        .collect()
}

/// The declared parameters of `job` in an executor's stored specs.
pub fn declared(tasks_json: &str, job: &str) -> Option<Vec<ParamSpec>> {
    serde_json::from_str::<Vec<TaskSpec>>(tasks_json)
        .ok()?
        .into_iter()
        .find(|t| t.job == job)
        .map(|t| t.params)
}

fn check_time(
    name: &str,
    v: &serde_json::Value,
    now: DateTime<Utc>,
    horizon_days: u32,
) -> Result<(), String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("parameter '{name}' must be an RFC 3339 time string"))?;
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("parameter '{name}' = '{s}' is not an RFC 3339 time: {e}"))?
        .with_timezone(&Utc);
    if t > now + AS_OF_SKEW {
        return Err(format!(
            "parameter '{name}' = '{s}' is in the future; a run's reference time cannot be after now"
        ));
    }
    let horizon = now - chrono::Duration::days(i64::from(horizon_days));
    if t < horizon {
        return Err(format!(
            "parameter '{name}' = '{s}' is more than {horizon_days} days in the past \
             (TICKETMAX_AS_OF_HORIZON_DAYS)"
        ));
    }
    Ok(())
}

/// Checks `params` (a JSON object) against the declared parameters, or, with no declaration,
/// against what needs none.
pub fn check(
    declared: Option<&[ParamSpec]>,
    params: &serde_json::Map<String, serde_json::Value>,
    now: DateTime<Utc>,
    horizon_days: u32,
) -> Result<(), String> {
    let Some(specs) = declared else {
        if let Some(v) = params.get("as_of") {
            check_time("as_of", v, now, horizon_days)?;
        }
        return Ok(());
    };
    for (name, v) in params {
        let Some(spec) = specs.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(if known.is_empty() {
                format!("unknown parameter '{name}': this job takes none")
            } else {
                format!(
                    "unknown parameter '{name}': this job takes {}",
                    known.join(", ")
                )
            });
        };
        let bounded = |n: f64| -> Result<(), String> {
            if spec.min.is_some_and(|m| n < m) || spec.max.is_some_and(|m| n > m) {
                return Err(format!(
                    "parameter '{name}' = {n} is out of bounds [{}, {}]",
                    spec.min.map_or("-".into(), |m| m.to_string()),
                    spec.max.map_or("-".into(), |m| m.to_string())
                ));
            }
            Ok(())
        };
        match spec.kind {
            ParamKind::String => {
                if !v.is_string() {
                    return Err(format!("parameter '{name}' must be a string"));
                }
            }
            ParamKind::Boolean => {
                if !v.is_boolean() {
                    return Err(format!("parameter '{name}' must be true or false"));
                }
            }
            ParamKind::Integer => {
                let n = v
                    .as_f64()
                    .filter(|n| n.fract() == 0.0)
                    .ok_or_else(|| format!("parameter '{name}' must be a whole number"))?;
                bounded(n)?;
            }
            ParamKind::Number => {
                let n = v
                    .as_f64()
                    .ok_or_else(|| format!("parameter '{name}' must be a number"))?;
                bounded(n)?;
            }
            ParamKind::Timestamp => check_time(name, v, now, horizon_days)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec {
                name: "as_of".into(),
                kind: ParamKind::Timestamp,
                description: String::new(),
                min: None,
                max: None,
            },
            ParamSpec {
                name: "batch_size".into(),
                kind: ParamKind::Integer,
                description: String::new(),
                min: Some(1.0),
                max: Some(100_000.0),
            },
        ]
    }

    fn params(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn declared_parameters_are_checked_for_name_type_and_bounds() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let s = specs();
        let ok = |v| check(Some(&s), &params(v), now, 400);
        assert!(ok(json!({"batch_size": 500, "as_of": "2026-11-30T23:00:00Z"})).is_ok());
        assert!(
            ok(json!({"as_of": "2026-12-01T10:04:00Z"})).is_ok(),
            "within the skew"
        );
        for bad in [
            json!({"as_of": "yesterday"}),
            json!({"as_of": "9999-12-31T23:59:59Z"}),
            json!({"as_of": "2026-12-01T10:06:00Z"}),
            json!({"as_of": "2020-01-01T00:00:00Z"}),
            json!({"as_of": 5}),
            json!({"batch_size": 0}),
            json!({"batch_size": 1.5}),
            json!({"batch_size": "500"}),
            json!({"batch_size": 100_001}),
            json!({"drop_tables": true}),
        ] {
            assert!(ok(bad.clone()).is_err(), "{bad} was accepted");
        }
        // No declaration: only what needs none.
        assert!(check(None, &params(json!({"as_of": "tomorrow"})), now, 400).is_err());
        assert!(check(None, &params(json!({"anything": 1})), now, 400).is_ok());
    }

    #[test]
    fn specs_round_trip_through_the_stored_json() {
        let tasks = vec![TaskSpec {
            job: "a/b".into(),
            params: specs(),
        }];
        let text = serde_json::to_string(&tasks).unwrap_or_default();
        assert_eq!(declared(&text, "a/b"), Some(specs()));
        assert_eq!(declared(&text, "a/c"), None);
        assert_eq!(declared("not json", "a/b"), None);
    }
}
