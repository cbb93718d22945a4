//! analytics: daily, weekly and monthly business reports and the real-time activity monitor.
use chrono::Duration;
use serde_json::{Map, Value, json};

use super::aggregates::{self, count_by, count_in, growth, ratio, sum_by_currency};
use super::window::{Window, day_offset, iso_week, month};
use crate::db::{Sql, col};
use crate::tasks::{
    DbContext, Param, Task, TaskContext, TaskError, TaskOutput, TaskRegistry, params,
};

pub fn register(r: &mut TaskRegistry) {
    r.register(GenerateDailyAnalytics);
    r.register(GenerateWeeklyBusinessReport);
    r.register(GenerateMonthlyExecutiveSummary);
    r.register(MonitorRealTimePerformance);
}

/// The figures every business report shows for a window.
struct Metrics {
    new_users: i64,
    bookings: u64,
    confirmed: u64,
    revenue: Map<String, Value>,
    body: Value,
}

async fn metrics(ctx: &TaskContext, w: &Window) -> Result<Metrics, TaskError> {
    // Independent reads, each on its own pooled connection at once, so their scans overlap
    // (they never shared a snapshot: one statement after another did not either).
    let (
        new_users,
        logins,
        users_logged_in,
        events_created,
        bookings_by_status,
        payments_by_status,
        revenue,
        tickets,
    ) = futures::try_join!(
        count_in(ctx, "users", "created_at", w, "TRUE"),
        count_in(ctx, "login_events", "created_at", w, "TRUE"),
        count_in(ctx, "users", "last_login_at", w, "TRUE"),
        count_in(ctx, "events", "created_at", w, "TRUE"),
        count_by(ctx, "bookings", "status", "created_at", w, ""),
        count_by(ctx, "payments", "status", "created_at", w, ""),
        sum_by_currency(
            ctx,
            "payments",
            // What was kept: a partially refunded payment counts its retained part.
            "amount - refunded_amount",
            "COALESCE(paid_at, created_at)",
            w,
            "status = 'success'",
        ),
        aggregates::scalar(ctx, "counting tickets sold", |q| {
            let (s, e) = (q.bind(w.start), q.bind(w.end));
            format!(
                "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM bookings \
                 WHERE status = 'confirmed' AND {}",
                q.dialect().within("created_at", &s, &e)
            )
        }),
    )?;
    let bookings: u64 = bookings_by_status.values().filter_map(Value::as_u64).sum();
    let confirmed = bookings_by_status
        .get("confirmed")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let body = json!({
        "period": w.period,
        "window": {"start": w.start, "end": w.end},
        "users": {"new": new_users, "logins": logins, "users_logged_in": users_logged_in},
        "events": {"created": events_created},
        "bookings": {"total": bookings, "by_status": bookings_by_status, "tickets_sold": tickets},
        "conversion_rate": ratio(confirmed, bookings),
        "payments": {"by_status": payments_by_status, "revenue": revenue},
    });
    Ok(Metrics {
        new_users,
        bookings,
        confirmed,
        revenue,
        body,
    })
}

fn revenue_growth(before: &Map<String, Value>, after: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for currency in before.keys().chain(after.keys()) {
        let amount = |m: &Map<String, Value>| m.get(currency).and_then(Value::as_i64).unwrap_or(0);
        out.insert(currency.clone(), growth(amount(before), amount(after)));
    }
    Value::Object(out)
}

/// Today's users, logins, events, bookings, conversion, payments and top 5 events.
pub struct GenerateDailyAnalytics;

#[async_trait::async_trait]
impl Task for GenerateDailyAnalytics {
    fn name(&self) -> &'static str {
        "analytics/generate-daily-analytics"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let day = day_offset(ctx.tz, ctx.now, 0);
        let (m, top) =
            futures::try_join!(metrics(ctx, &day), aggregates::top_events(ctx, &day, 5))?;
        let mut body = m.body;
        if let Value::Object(map) = &mut body {
            map.insert("top_events".into(), json!(top));
            map.insert("timezone".into(), json!(ctx.tz.name()));
        }
        ctx.set("bookings", m.bookings);
        ctx.set("new_users", m.new_users);
        ctx.info(format!(
            "Daily Report {} - Bookings: {}, confirmed: {}, revenue: {}",
            day.period,
            m.bookings,
            m.confirmed,
            Value::Object(m.revenue)
        ));
        aggregates::report(ctx, "daily-analytics", &day.period, body).await
    }
}

/// Last week (Monday to Sunday) against the week before.
pub struct GenerateWeeklyBusinessReport;

#[async_trait::async_trait]
impl Task for GenerateWeeklyBusinessReport {
    fn name(&self) -> &'static str {
        "analytics/generate-weekly-business-report"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let week = iso_week(ctx.tz, ctx.now, -1);
        let before = iso_week(ctx.tz, ctx.now, -2);
        let now = metrics(ctx, &week).await?;
        let prev = metrics(ctx, &before).await?;
        ctx.progress(2, 3, "figures computed");
        let top = aggregates::top_events(ctx, &week, 10).await?;
        let body = json!({
            "period": week.period,
            "timezone": ctx.tz.name(),
            "current": now.body,
            "previous": prev.body,
            "growth": {
                "new_users": growth(prev.new_users, now.new_users),
                "bookings": growth(prev.bookings as i64, now.bookings as i64),
                "revenue": revenue_growth(&prev.revenue, &now.revenue),
            },
            "top_events": top,
        });
        ctx.set("bookings", now.bookings);
        ctx.info(format!(
            "Weekly business report {}: {} bookings",
            week.period, now.bookings
        ));
        aggregates::report(ctx, "weekly-business", &week.period, body).await
    }
}

/// Last month against the month before, with a breakdown by event category.
pub struct GenerateMonthlyExecutiveSummary;

async fn categories(ctx: &TaskContext, w: &Window) -> Result<Vec<Value>, TaskError> {
    let mut q = Sql::new(ctx.dialect);
    let (s, e) = (q.bind(w.start), q.bind(w.end));
    q.push(&format!(
        "SELECT e.category, b.currency, COUNT(*), CAST(SUM(b.quantity) AS BIGINT), \
         CAST(SUM(b.total_amount) AS BIGINT) \
         FROM bookings b JOIN events e ON e.id = b.event_id \
         WHERE b.status = 'confirmed' AND {} \
         GROUP BY e.category, b.currency ORDER BY 5 DESC, 1",
        ctx.dialect.within("b.created_at", &s, &e)
    ));
    let rows = q
        .fetch_all(&ctx.db)
        .await
        .context("breaking bookings down by category")?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "category": col::<String>(r, 0)?,
                "currency": col::<String>(r, 1)?,
                "bookings": col::<i64>(r, 2)?,
                "tickets": col::<i64>(r, 3)?,
                "revenue": col::<i64>(r, 4)?,
            }))
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()
        .context("reading the category breakdown")
}

#[async_trait::async_trait]
impl Task for GenerateMonthlyExecutiveSummary {
    fn name(&self) -> &'static str {
        "analytics/generate-monthly-executive-summary"
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let last = month(ctx.tz, ctx.now, -1);
        let before = month(ctx.tz, ctx.now, -2);
        let now = metrics(ctx, &last).await?;
        let prev = metrics(ctx, &before).await?;
        let by_category = categories(ctx, &last).await?;
        let body = json!({
            "period": last.period,
            "timezone": ctx.tz.name(),
            "current": now.body,
            "previous": prev.body,
            "growth": {
                "new_users": growth(prev.new_users, now.new_users),
                "bookings": growth(prev.bookings as i64, now.bookings as i64),
                "confirmed_bookings": growth(prev.confirmed as i64, now.confirmed as i64),
                "revenue": revenue_growth(&prev.revenue, &now.revenue),
            },
            "categories": by_category,
        });
        ctx.set("bookings", now.bookings);
        ctx.info(format!(
            "Monthly executive summary {}: {} bookings",
            last.period, now.bookings
        ));
        aggregates::report(ctx, "monthly-executive", &last.period, body).await
    }
}

/// Activity of the last 30 minutes; warnings (logged and mailed to admins) above thresholds.
pub struct MonitorRealTimePerformance;

/// Thresholds of the monitor; each can be overridden by a run parameter of the same name.
const MIN_PAYMENTS_FOR_RATE: u64 = 10;
const MAX_PAYMENT_FAILURE_RATE_PERCENT: u64 = 50;
const MAX_STUCK_PENDING_BOOKINGS: u64 = 100;
const MAX_BOOKINGS_PER_WINDOW: u64 = 1000;

/// Each alert threshold can be overridden per run.
const MONITOR_PARAMS: &[Param] = &[
    params::AS_OF,
    Param::integer(
        "min_payments_for_rate",
        "settled payments needed before the failure rate counts",
        0,
        1_000_000_000,
    ),
    Param::integer(
        "max_payment_failure_rate_percent",
        "failure rate that raises an alert",
        0,
        100,
    ),
    Param::integer(
        "max_stuck_pending_bookings",
        "pending bookings older than 10 minutes that raise an alert",
        0,
        1_000_000_000,
    ),
    Param::integer(
        "max_bookings_per_window",
        "bookings in the window that raise an alert",
        0,
        1_000_000_000,
    ),
];

#[async_trait::async_trait]
impl Task for MonitorRealTimePerformance {
    fn name(&self) -> &'static str {
        "analytics/monitor-real-time-performance"
    }

    fn params(&self) -> &'static [Param] {
        MONITOR_PARAMS
    }

    async fn run(&self, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
        let w = Window {
            start: ctx.now - Duration::minutes(30),
            end: ctx.now,
            period: ctx.now.to_rfc3339(),
        };
        let bookings = count_in(ctx, "bookings", "created_at", &w, "TRUE")
            .await?
            .max(0) as u64;
        let confirmed = count_in(ctx, "bookings", "confirmed_at", &w, "status = 'confirmed'")
            .await?
            .max(0) as u64;
        let payments = count_by(ctx, "payments", "status", "created_at", &w, "").await?;
        let n = |s: &str| payments.get(s).and_then(Value::as_u64).unwrap_or(0);
        let new_users = count_in(ctx, "users", "created_at", &w, "TRUE").await?;
        let logins = count_in(ctx, "login_events", "created_at", &w, "TRUE").await?;
        let stuck = aggregates::scalar(ctx, "counting stuck pending bookings", |q| {
            let cutoff = q.bind(ctx.now - Duration::minutes(10));
            format!(
                "SELECT COUNT(*) FROM bookings WHERE status = 'pending' AND {}",
                ctx.dialect.cmp("created_at", "<", &cutoff)
            )
        })
        .await?
        .max(0) as u64;

        let threshold =
            |name: &str, default: u64| ctx.param_u64(name).map(|v| v.unwrap_or(default));
        let min_payments = threshold("min_payments_for_rate", MIN_PAYMENTS_FOR_RATE)?;
        let max_failure = threshold(
            "max_payment_failure_rate_percent",
            MAX_PAYMENT_FAILURE_RATE_PERCENT,
        )?;
        let max_stuck = threshold("max_stuck_pending_bookings", MAX_STUCK_PENDING_BOOKINGS)?;
        let max_bookings = threshold("max_bookings_per_window", MAX_BOOKINGS_PER_WINDOW)?;

        let settled = n("success") + n("failed") + n("abandoned");
        let failure_rate = ratio(n("failed") + n("abandoned"), settled);
        let mut warnings = Vec::new();
        if settled >= min_payments && failure_rate * 100.0 > max_failure as f64 {
            warnings.push(format!(
                "payment failure rate {:.1}% over {settled} payments in 30 min (threshold {max_failure}%)",
                failure_rate * 100.0
            ));
        }
        if stuck > max_stuck {
            warnings.push(format!(
                "{stuck} pending bookings older than 10 min (threshold {max_stuck})"
            ));
        }
        if bookings > max_bookings {
            warnings.push(format!(
                "High activity detected: {bookings} bookings in 30 min (threshold {max_bookings})"
            ));
        }
        ctx.set("bookings", bookings);
        ctx.set("bookings_confirmed", confirmed);
        ctx.set(
            "payments",
            payments.values().filter_map(Value::as_u64).sum::<u64>(),
        );
        ctx.set("payment_failure_rate", failure_rate);
        ctx.set("new_users", new_users);
        ctx.set("logins", logins);
        ctx.set("stuck_pending_bookings", stuck);
        ctx.set("warnings", warnings.len() as u64);
        if warnings.is_empty() {
            ctx.info(format!(
                "Last 30 min: {bookings} bookings, {} payments, no warnings",
                settled
            ));
        } else {
            let slot = ctx.now.with_timezone(&ctx.tz).format("%Y-%m-%dT%H:%M");
            let body = Value::Object(ctx.summary());
            aggregates::alert(
                ctx,
                &format!("real-time:{slot}"),
                "real-time performance",
                &warnings,
                &body,
            )
            .await?;
        }
        Ok(ctx.output(Vec::new()))
    }
}
