//! Cron schedules: parsing, validation and tick arithmetic in a job's IANA timezone.
//!
//! Accepted forms: 5 fields (`m h dom mon dow`), 6 fields with seconds first (as NestJS accepts),
//! `@daily`-style nicknames, and the seed's NestJS names (`EVERY_5_MINUTES`, ...).
//!
//! Daylight-saving rule (croner's, after the Open Cron Pattern Specification): a job with a fixed
//! wall-clock time (e.g. `30 2 * * *`) runs exactly once per day. On a spring-forward day whose
//! 02:30 does not exist it runs at the first valid instant after the gap (03:00); on a fall-back
//! day whose 02:30 occurs twice it runs at the first of the two. The rule is wall-clock: every
//! wall-clock tick fires once, so interval jobs (`*/30 * * * *`) also fire once per wall-clock
//! time during the repeated hour (its first pass) and skip the instants the gap removes.
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::{Cron, parser::CronParser, parser::Seconds};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("invalid cron expression '{expr}': {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown timezone '{0}': use an IANA name such as 'Africa/Lagos' or 'UTC'")]
    Timezone(String),
}

/// A validated schedule: its 6-field form and its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub normalized: String,
    pub tz: Tz,
    cron: Cron,
}

/// NestJS `CronExpression` names used by the seed (and their siblings).
fn named(expr: &str) -> Option<String> {
    let fixed = match expr {
        "EVERY_SECOND" => "* * * * * *",
        "EVERY_5_SECONDS" => "*/5 * * * * *",
        "EVERY_10_SECONDS" => "*/10 * * * * *",
        "EVERY_30_SECONDS" => "*/30 * * * * *",
        "EVERY_MINUTE" => "0 * * * * *",
        "EVERY_5_MINUTES" => "0 */5 * * * *",
        "EVERY_10_MINUTES" => "0 */10 * * * *",
        "EVERY_30_MINUTES" => "0 */30 * * * *",
        "EVERY_HOUR" => "0 0 * * * *",
        "EVERY_DAY_AT_MIDNIGHT" => "0 0 0 * * *",
        "EVERY_DAY_AT_NOON" => "0 0 12 * * *",
        "EVERY_WEEK" => "0 0 0 * * 0",
        "EVERY_WEEKDAY" => "0 0 0 * * 1-5",
        "EVERY_WEEKEND" => "0 0 0 * * 6,0",
        "EVERY_1ST_DAY_OF_MONTH_AT_MIDNIGHT" => "0 0 0 1 * *",
        "EVERY_1ST_DAY_OF_MONTH_AT_NOON" => "0 0 12 1 * *",
        "EVERY_QUARTER" => "0 0 0 1 */3 *",
        "EVERY_6_MONTHS" => "0 0 0 1 */6 *",
        "EVERY_YEAR" => "0 0 0 1 1 *",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(fixed.to_string());
    }
    // EVERY_2_HOURS .. EVERY_12_HOURS
    if let Some(n) = expr
        .strip_prefix("EVERY_")
        .and_then(|r| r.strip_suffix("_HOURS"))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (2..=12).contains(n))
    {
        return Some(format!("0 0 */{n} * * *"));
    }
    // EVERY_DAY_AT_1AM .. EVERY_DAY_AT_11PM
    let at = expr.strip_prefix("EVERY_DAY_AT_")?;
    // The last two bytes must be a whole "AM"/"PM": split only on a character boundary.
    let split = at
        .len()
        .checked_sub(2)
        .filter(|&i| at.is_char_boundary(i))?;
    let (num, half) = at.split_at(split);
    let hour: u32 = num.parse().ok().filter(|h| (1..=11).contains(h))?;
    let hour = match half {
        "AM" => hour,
        "PM" => hour + 12,
        _ => return None,
    };
    Some(format!("0 0 {hour} * * *"))
}

fn normalize(expr: &str) -> Result<String, String> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err("the expression is empty".into());
    }
    if let Some(n) = named(trimmed) {
        return Ok(n);
    }
    if trimmed.starts_with('@') {
        return Ok(trimmed.to_string());
    }
    match trimmed.split_whitespace().count() {
        5 => Ok(format!(
            "0 {}",
            trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
        )),
        6 => Ok(trimmed.split_whitespace().collect::<Vec<_>>().join(" ")),
        n => Err(format!(
            "expected 5 fields (minute hour day month weekday) or 6 (seconds first), got {n}"
        )),
    }
}

/// Ticks are whole seconds; croner carries a start time's fraction into its answers.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

pub fn parse_timezone(tz: &str) -> Result<Tz, ScheduleError> {
    tz.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::Timezone(tz.to_string()))
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz = parse_timezone(timezone)?;
        let err = |reason: String| ScheduleError::Cron {
            expr: expr.to_string(),
            reason,
        };
        if expr.len() > 200 {
            return Err(err("longer than 200 characters".into()));
        }
        let normalized = normalize(expr).map_err(err)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(&normalized)
            .map_err(|e| err(e.to_string()))?;
        // A pattern that never fires (e.g. 30 February) is as useless as a syntax error.
        let probe = Utc::now().with_timezone(&tz);
        cron.find_next_occurrence(&probe, false)
            .map_err(|e| err(format!("it never fires: {e}")))?;
        Ok(Self {
            normalized,
            tz,
            cron,
        })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&whole_second(t).with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The newest tick at or before `t`.
    ///
    /// croner's backward search can land on a non-existent instant inside a DST gap, so it is
    /// only used to find a starting point two ticks back; the answer comes from the forward
    /// search, which applies the DST rule above.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let back = |from: DateTime<Utc>| {
            self.cron
                .find_previous_occurrence(&whole_second(from).with_timezone(&self.tz), false)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        };
        let start = back(t + chrono::Duration::seconds(1))
            .and_then(back)
            .map_or(t - chrono::Duration::days(400), |s| {
                s - chrono::Duration::seconds(1)
            });
        let mut latest = None;
        let mut cursor = start;
        while let Some(next) = self.next_after(cursor) {
            if next > t {
                break;
            }
            latest = Some(next);
            cursor = next;
        }
        latest
    }

    /// Ticks in `(after, until]`, oldest first; only the newest `limit` are kept. The walk is
    /// bounded (about a week of every-second ticks), so a very long outage costs seconds, not
    /// hours, at start-up.
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        const MAX_STEPS: usize = 1_000_000;
        let mut kept = std::collections::VecDeque::with_capacity(limit.min(4096));
        let mut cursor = after;
        for _ in 0..MAX_STEPS {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            if next > until {
                break;
            }
            if kept.len() == limit {
                kept.pop_front();
            }
            if limit > 0 {
                kept.push_back(next);
            }
            cursor = next;
        }
        kept.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn accepts_five_six_fields_names_and_nicknames() {
        assert_eq!(
            Schedule::parse("*/5 * * * *", "UTC").unwrap().normalized,
            "0 */5 * * * *"
        );
        assert_eq!(
            Schedule::parse("* * * * * *", "UTC").unwrap().normalized,
            "* * * * * *"
        );
        assert_eq!(
            Schedule::parse("EVERY_10_MINUTES", "UTC")
                .unwrap()
                .normalized,
            "0 */10 * * * *"
        );
        assert_eq!(
            Schedule::parse("EVERY_2_HOURS", "UTC").unwrap().normalized,
            "0 0 */2 * * *"
        );
        assert_eq!(
            Schedule::parse("EVERY_DAY_AT_11PM", "UTC")
                .unwrap()
                .normalized,
            "0 0 23 * * *"
        );
        assert!(Schedule::parse("@daily", "UTC").is_ok());
    }

    #[test]
    fn rejects_bad_expressions_and_zones() {
        for bad in [
            "",
            "not a cron",
            "61 * * * *",
            "* * * *",
            "* * * * * * * *",
            "0 0 30 2 *",
        ] {
            assert!(
                matches!(Schedule::parse(bad, "UTC"), Err(ScheduleError::Cron { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::Timezone("Mars/Olympus".into())
        );
    }

    #[test]
    fn next_and_previous_ticks_in_the_jobs_zone() {
        let s = Schedule::parse("0 9 * * *", "Africa/Lagos").unwrap();
        // 09:00 in Lagos (UTC+1) is 08:00 UTC.
        assert_eq!(
            s.next_after(utc("2026-11-28T07:00:00Z")),
            Some(utc("2026-11-28T08:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-11-28T08:00:00Z")),
            Some(utc("2026-11-28T08:00:00Z"))
        );
        let every = Schedule::parse("* * * * * *", "UTC").unwrap();
        let ticks = every.ticks_between(
            utc("2026-11-28T00:00:00Z"),
            utc("2026-11-28T00:00:05Z"),
            100,
        );
        assert_eq!(ticks.len(), 5);
        assert_eq!(ticks[0], utc("2026-11-28T00:00:01Z"));
        let capped =
            every.ticks_between(utc("2026-11-28T00:00:00Z"), utc("2026-11-28T00:00:05Z"), 2);
        assert_eq!(
            capped,
            vec![utc("2026-11-28T00:00:04Z"), utc("2026-11-28T00:00:05Z")]
        );
    }

    #[test]
    fn fixed_time_job_runs_once_on_dst_days() {
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // Spring forward 2026-03-29: 02:00 -> 03:00 local; 02:30 does not exist.
        let day = |d: u32, m: u32| {
            let start = chrono_tz::Europe::Berlin
                .with_ymd_and_hms(2026, m, d, 0, 0, 0)
                .unwrap();
            let end = chrono_tz::Europe::Berlin
                .with_ymd_and_hms(2026, m, d + 1, 0, 0, 0)
                .unwrap();
            s.ticks_between(start.with_timezone(&Utc), end.with_timezone(&Utc), 10)
        };
        let spring = day(29, 3);
        assert_eq!(
            spring,
            vec![utc("2026-03-29T01:00:00Z")],
            "03:00 CEST, once"
        );
        // Fall back 2026-10-25: 03:00 -> 02:00 local; 02:30 happens twice.
        let fall = day(25, 10);
        assert_eq!(
            fall,
            vec![utc("2026-10-25T00:30:00Z")],
            "the first 02:30 (CEST), once"
        );
        // What the firing path sees on those days.
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-29T01:00:00.5Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-10-25T01:45:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        // Wall-clock semantics: the repeated hour's ticks fire once, in its first pass.
        let every = Schedule::parse("*/30 * * * *", "Europe/Berlin").unwrap();
        let ticks = every.ticks_between(
            utc("2026-10-25T00:00:00Z"),
            utc("2026-10-25T02:00:00Z"),
            100,
        );
        assert_eq!(
            ticks,
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-25T02:00:00Z")]
        );
    }
}

/// Whatever a caller sends as a schedule or a timezone gets an answer, never a panic;
/// and every well-formed expression (fields within their ranges) is accepted and fires.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Pieces a cron expression (or a near miss) is made of, including the named forms.
    fn cronish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("*".to_string()),
            Just("?".to_string()),
            Just("L".to_string()),
            Just("W".to_string()),
            Just("#".to_string()),
            Just("MON-FRI".to_string()),
            Just("JAN".to_string()),
            Just("@daily".to_string()),
            Just("@every".to_string()),
            Just("EVERY_".to_string()),
            Just("EVERY_DAY_AT_".to_string()),
            Just("_HOURS".to_string()),
            Just("AM".to_string()),
            Just("PM".to_string()),
            Just("€".to_string()),
            Just("ä".to_string()),
            (0u64..100_000).prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[0-9*,/#LW?-]{1,12}",
            "\\PC{1,4}",
        ];
        let sep = prop_oneof![
            Just(" "),
            Just(""),
            Just("  "),
            Just("\t"),
            Just(","),
            Just("/"),
            Just("-")
        ];
        prop::collection::vec((token, sep), 0..10).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(t, s)| format!("{t}{s}"))
                .collect::<String>()
        })
    }

    /// A timezone-ish string: real names, their near misses, and anything.
    fn zoneish() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(chrono_tz::TZ_VARIANTS.to_vec())
                .prop_map(|z| z.name().to_string()),
            prop::sample::select(chrono_tz::TZ_VARIANTS.to_vec())
                .prop_map(|z| z.name().to_lowercase()),
            "[A-Za-z_/+-]{0,40}",
            "\\PC{0,50}",
            ".{0,300}",
        ]
    }

    /// One field: `*`, a value, a range, a step, or a list, within `lo..=hi`.
    fn field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
        let value = lo..=hi;
        prop_oneof![
            Just("*".to_string()),
            value.clone().prop_map(|v| v.to_string()),
            (value.clone(), value.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=(hi - lo + 1)).prop_map(|n| format!("*/{n}")),
            (value.clone(), 1..=(hi - lo + 1)).prop_map(|(a, n)| format!("{a}/{n}")),
            prop::collection::btree_set(value, 1..5).prop_map(|s| s
                .into_iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")),
        ]
    }

    /// A valid expression, 5 or 6 fields. Days of month stop at 28 so that every month has them.
    fn valid_cron() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            field(0, 59),
            field(0, 59),
            field(0, 23),
            field(1, 28),
            field(1, 12),
            field(0, 6),
        )
            .prop_map(|(seconds, s, m, h, dom, mon, dow)| {
                if seconds {
                    format!("{s} {m} {h} {dom} {mon} {dow}")
                } else {
                    format!("{m} {h} {dom} {mon} {dow}")
                }
            })
    }

    /// Found by `cron_like_strings_never_panic`: a multi-byte character where `AM`/`PM` goes
    /// made the named-schedule parser slice inside it.
    #[test]
    fn named_schedule_with_multibyte_suffix_is_an_error_not_a_panic() {
        for e in [
            "EVERY_DAY_AT_€",
            "EVERY_DAY_AT_1€",
            "EVERY_DAY_AT_ä",
            "EVERY_DAY_AT_11ÄM",
        ] {
            assert!(
                matches!(Schedule::parse(e, "UTC"), Err(ScheduleError::Cron { .. })),
                "{e}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_text_never_panics(expr in "\\PC{0,64}", tz in zoneish()) {
            let _ = Schedule::parse(&expr, &tz);
            let _ = Schedule::parse(&expr, "UTC");
            let _ = parse_timezone(&tz);
        }

        #[test]
        fn any_unicode_and_long_strings_never_panic(expr in ".{0,400}", tz in ".{0,400}") {
            let _ = Schedule::parse(&expr, "Europe/Berlin");
            let _ = parse_timezone(&tz);
            prop_assert!(Schedule::parse(&"* ".repeat(150), "UTC").is_err());
        }

        #[test]
        fn cron_like_strings_never_panic(expr in cronish(), tz in zoneish()) {
            for e in [expr.clone(), format!("EVERY_DAY_AT_{expr}"), format!("EVERY_{expr}_HOURS")] {
                if let Ok(s) = Schedule::parse(&e, &tz) {
                    // Whatever is accepted can be used by the scheduler.
                    let now = Utc::now();
                    let _ = s.next_after(now);
                    let _ = s.latest_at_or_before(now);
                }
                let _ = Schedule::parse(&e, "UTC");
            }
        }

        #[test]
        fn well_formed_expressions_parse_and_fire_after_now(
            expr in valid_cron(),
            zone in prop::sample::select(chrono_tz::TZ_VARIANTS.to_vec()),
        ) {
            let s = Schedule::parse(&expr, zone.name())
                .map_err(|e| TestCaseError::fail(format!("{expr:?} in {zone}: {e}")))?;
            prop_assert_eq!(s.normalized.split_whitespace().count(), 6);
            let now = Utc::now();
            let next = s.next_after(now);
            prop_assert!(next.is_some_and(|n| n > now), "{expr:?} in {zone}: next {next:?}");
        }
    }
}
