//! Aggregate queries shared by the report jobs, and how a report leaves a task.
use serde_json::{Map, Value, json};

use super::window::Window;
use crate::db::{Sql, col};
use crate::outbox;
use crate::tasks::{DbContext, ReportDraft, TaskContext, TaskError, TaskOutput};

/// `{group value: count}` of `table` rows whose `time_col` lies in `window`, grouped by `group`.
/// `extra` is an optional additional condition.
pub async fn count_by(
    ctx: &TaskContext,
    table: &str,
    group: &str,
    time_col: &str,
    window: &Window,
    extra: &str,
) -> Result<Map<String, Value>, TaskError> {
    let mut q = Sql::new(ctx.dialect);
    let (start, end) = (q.bind(window.start), q.bind(window.end));
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" AND {extra}")
    };
    q.push(&format!(
        "SELECT CAST({group} AS TEXT), COUNT(*) FROM {table} \
         WHERE {time_col} >= {start} AND {time_col} < {end}{extra} GROUP BY {group} ORDER BY 1"
    ));
    let rows = q
        .fetch_all(&ctx.db)
        .await
        .context(format!("counting {table} by {group}"))?;
    let mut out = Map::new();
    for row in rows {
        let key: Option<String> = col(&row, 0).context("reading a group")?;
        let n: i64 = col(&row, 1).context("reading a count")?;
        out.insert(key.unwrap_or_else(|| "none".into()), json!(n));
    }
    Ok(out)
}

/// `{currency: sum of amount_col}` over rows in `window` matching `extra`.
pub async fn sum_by_currency(
    ctx: &TaskContext,
    table: &str,
    amount_col: &str,
    time_col: &str,
    window: &Window,
    extra: &str,
) -> Result<Map<String, Value>, TaskError> {
    let mut q = Sql::new(ctx.dialect);
    let (start, end) = (q.bind(window.start), q.bind(window.end));
    q.push(&format!(
        "SELECT currency, CAST(COALESCE(SUM({amount_col}), 0) AS BIGINT) FROM {table} \
         WHERE {time_col} >= {start} AND {time_col} < {end} AND {extra} \
         GROUP BY currency ORDER BY currency"
    ));
    let rows = q
        .fetch_all(&ctx.db)
        .await
        .context(format!("summing {table}.{amount_col} by currency"))?;
    let mut out = Map::new();
    for row in rows {
        let currency: String = col(&row, 0).context("reading a currency")?;
        let sum: i64 = col(&row, 1).context("reading a sum")?;
        out.insert(currency, json!(sum));
    }
    Ok(out)
}

/// The single BIGINT a `SELECT COUNT(*) ...`-like query returns (NULL and no row are 0).
pub async fn count(q: Sql, ctx: &TaskContext, what: &str) -> Result<u64, TaskError> {
    let row = q.fetch_one(&ctx.db).await.context(what.to_owned())?;
    let n = match row {
        Some(row) => col::<Option<i64>>(&row, 0)
            .context(what.to_owned())?
            .unwrap_or(0),
        None => 0,
    };
    Ok(n.max(0) as u64)
}

/// Like [`count`], for a query built by `build` (which binds into the given `Sql`).
pub async fn scalar(
    ctx: &TaskContext,
    what: &str,
    build: impl FnOnce(&mut Sql) -> String,
) -> Result<i64, TaskError> {
    let mut q = Sql::new(ctx.dialect);
    let text = build(&mut q);
    q.push(&text);
    Ok(count(q, ctx, what).await? as i64)
}

/// Rows in `window` of `table` (by `time_col`) that match `extra` ("TRUE" for all).
pub async fn count_in(
    ctx: &TaskContext,
    table: &str,
    time_col: &str,
    window: &Window,
    extra: &str,
) -> Result<i64, TaskError> {
    scalar(ctx, &format!("counting {table}"), |q| {
        let (start, end) = (q.bind(window.start), q.bind(window.end));
        format!(
            "SELECT COUNT(*) FROM {table} WHERE {time_col} >= {start} AND {time_col} < {end} \
             AND {extra}"
        )
    })
    .await
}

/// Top events by confirmed revenue among bookings created in `window`.
pub async fn top_events(
    ctx: &TaskContext,
    window: &Window,
    limit: i64,
) -> Result<Vec<Value>, TaskError> {
    let mut q = Sql::new(ctx.dialect);
    let (start, end, limit) = (q.bind(window.start), q.bind(window.end), q.bind(limit));
    q.push(&format!(
        "SELECT e.id, e.title, b.currency, CAST(SUM(b.total_amount) AS BIGINT), \
         CAST(SUM(b.quantity) AS BIGINT), COUNT(*) \
         FROM bookings b JOIN events e ON e.id = b.event_id \
         WHERE b.status = 'confirmed' AND b.created_at >= {start} AND b.created_at < {end} \
         GROUP BY e.id, e.title, b.currency ORDER BY 4 DESC, e.id LIMIT {limit}"
    ));
    let rows = q
        .fetch_all(&ctx.db)
        .await
        .context("ranking events by revenue")?;
    rows.iter()
        .map(|row| {
            Ok(json!({
                "event_id": col::<i64>(row, 0)?,
                "title": col::<String>(row, 1)?,
                "currency": col::<String>(row, 2)?,
                "revenue": col::<i64>(row, 3)?,
                "tickets": col::<i64>(row, 4)?,
                "bookings": col::<i64>(row, 5)?,
            }))
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()
        .context("reading top events")
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        // Four decimals are plenty for a rate in a report.
        ((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0
    }
}

/// Growth from `before` to `after` as a fraction (0.25 = +25 %); None when `before` is 0.
pub fn growth(before: i64, after: i64) -> Value {
    if before == 0 {
        Value::Null
    } else {
        json!((((after - before) as f64 / before as f64) * 10_000.0).round() / 10_000.0)
    }
}

/// Finishes a report task: mails the report to ADMIN_EMAILS (deduplicated per period) and hands
/// the report to the control plane through the task output.
pub async fn report(
    ctx: &TaskContext,
    kind: &str,
    period: &str,
    body: Value,
) -> Result<TaskOutput, TaskError> {
    let admins = &ctx.settings.admin_emails;
    if !admins.is_empty() {
        let mut payload = json!({"report_kind": kind, "period": period, "body": body.clone()});
        if let Value::Object(map) = &mut payload {
            map.insert("job".into(), json!(ctx.job));
        }
        let rows = outbox::to_admins(
            admins,
            "report",
            &format!("{kind}:{period}"),
            &format!("TicketMax report: {kind} {period}"),
            &payload,
        );
        let queued = outbox::insert_rows(&ctx.db, ctx.dialect, &rows, chrono::Utc::now())
            .await
            .context("queueing report e-mails")?;
        ctx.add("emails_queued", queued);
        if queued > 0 {
            ctx.mail_queued();
        }
    }
    Ok(ctx.output(vec![ReportDraft {
        kind: kind.to_owned(),
        period: period.to_owned(),
        body,
    }]))
}

/// Logs `warnings` and mails them to ADMIN_EMAILS, once per `key`.
pub async fn alert(
    ctx: &TaskContext,
    key: &str,
    title: &str,
    warnings: &[String],
    body: &Value,
) -> Result<(), TaskError> {
    for w in warnings {
        ctx.warn(w.clone());
    }
    let payload = json!({"title": title, "warnings": warnings, "body": body});
    let rows = outbox::to_admins(
        &ctx.settings.admin_emails,
        "alert",
        key,
        &format!("TicketMax alert: {title}"),
        &payload,
    );
    let queued = outbox::insert_rows(&ctx.db, ctx.dialect, &rows, chrono::Utc::now())
        .await
        .context("queueing alert e-mails")?;
    ctx.add("alerts_queued", queued);
    if queued > 0 {
        ctx.mail_queued();
    }
    Ok(())
}
