//! Calendar windows (a day, a week, a month) computed in the job's timezone from `ctx.now`.
use chrono::{DateTime, Datelike, Days, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// `[start, end)` in UTC, plus how reports name it ("2026-11-27", "2026-W48", "2026-10").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub period: String,
}

/// Local midnight of `date` in `tz`; on a day whose midnight falls in a DST gap, the first
/// instant of the day that exists.
pub fn midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut t = date.and_time(chrono::NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(local) = tz.from_local_datetime(&t).earliest() {
            return local.with_timezone(&Utc);
        }
        t += Duration::minutes(30);
    }
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

/// The local calendar date of `now` in `tz`.
pub fn local_date(tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

pub fn day(tz: Tz, date: NaiveDate) -> Window {
    let next = date.checked_add_days(Days::new(1)).unwrap_or(date);
    Window {
        start: midnight(tz, date),
        end: midnight(tz, next),
        period: date.format("%Y-%m-%d").to_string(),
    }
}

/// The day `offset` days from today (0 = today, -1 = yesterday, 1 = tomorrow).
pub fn day_offset(tz: Tz, now: DateTime<Utc>, offset: i64) -> Window {
    let today = local_date(tz, now);
    let date = if offset >= 0 {
        today.checked_add_days(Days::new(offset as u64))
    } else {
        today.checked_sub_days(Days::new(offset.unsigned_abs()))
    }
    .unwrap_or(today);
    day(tz, date)
}

/// The ISO week (Monday to Sunday) `offset` weeks from the current one (-1 = last week).
pub fn iso_week(tz: Tz, now: DateTime<Utc>, offset: i64) -> Window {
    let today = local_date(tz, now);
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let start = monday + Duration::weeks(offset);
    let end = start + Duration::weeks(1);
    let iso = start.iso_week();
    Window {
        start: midnight(tz, start),
        end: midnight(tz, end),
        period: format!("{}-W{:02}", iso.year(), iso.week()),
    }
}

/// The seven local days ending with today (today included), named by today's ISO week.
pub fn last_seven_days(tz: Tz, now: DateTime<Utc>) -> Window {
    let today = local_date(tz, now);
    let start = today - Duration::days(6);
    let end = today + Duration::days(1);
    let iso = today.iso_week();
    Window {
        start: midnight(tz, start),
        end: midnight(tz, end),
        period: format!("{}-W{:02}", iso.year(), iso.week()),
    }
}

/// The calendar month `offset` months from the current one (-1 = last month).
pub fn month(tz: Tz, now: DateTime<Utc>, offset: i32) -> Window {
    let today = local_date(tz, now);
    let index = today.year() * 12 + today.month0() as i32 + offset;
    let first = |i: i32| NaiveDate::from_ymd_opt(i.div_euclid(12), i.rem_euclid(12) as u32 + 1, 1);
    let (Some(start), Some(end)) = (first(index), first(index + 1)) else {
        return day(tz, today);
    };
    Window {
        start: midnight(tz, start),
        end: midnight(tz, end),
        period: start.format("%Y-%m").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn midnight_report_covers_the_day_that_just_ended() {
        let w = day_offset(chrono_tz::Africa::Lagos, at("2026-11-27T23:00:00Z"), -1);
        // 00:00 in Lagos (UTC+1) on the 28th is 23:00 UTC on the 27th.
        assert_eq!(w.period, "2026-11-27");
        assert_eq!(w.start, at("2026-11-26T23:00:00Z"));
        assert_eq!(w.end, at("2026-11-27T23:00:00Z"));
    }

    #[test]
    fn months_and_weeks() {
        let now = at("2026-01-15T10:00:00Z");
        let last = month(chrono_tz::UTC, now, -1);
        assert_eq!(last.period, "2025-12");
        assert_eq!(last.end, at("2026-01-01T00:00:00Z"));
        let w = iso_week(chrono_tz::UTC, at("2026-11-30T09:00:00Z"), -1);
        assert_eq!(w.period, "2026-W48");
        assert_eq!(w.start, at("2026-11-23T00:00:00Z"));
    }
}
