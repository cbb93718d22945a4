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
         WHERE {}{extra} GROUP BY {group} ORDER BY 1",
        ctx.dialect.within(time_col, &start, &end)
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
         WHERE {} AND {extra} GROUP BY currency ORDER BY currency",
        ctx.dialect.within(time_col, &start, &end)
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
            "SELECT COUNT(*) FROM {table} WHERE {} AND {extra}",
            q.dialect().within(time_col, &start, &end)
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
         WHERE b.status = 'confirmed' AND {} \
         GROUP BY e.id, e.title, b.currency ORDER BY 4 DESC, e.id LIMIT {limit}",
        ctx.dialect.within("b.created_at", &start, &end)
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

/// Whether admins hear about a re-run of a report whose figures changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportMail {
    /// The first run of a period mails the report; a re-run whose figures differ from the last
    /// mailed ones mails it again once, marked as updated; a re-run with the same figures
    /// mails nothing.
    Updates,
    /// Mailed once per period: a snapshot (the health report) differs on every run.
    FirstOnly,
}

/// Finishes a report task: mails the report to ADMIN_EMAILS (see [`mail_report`]) and hands the
/// report to the control plane through the task output.
pub async fn report(
    ctx: &TaskContext,
    kind: &str,
    period: &str,
    body: Value,
) -> Result<TaskOutput, TaskError> {
    report_mailed(ctx, kind, period, body, ReportMail::Updates).await
}

pub async fn report_mailed(
    ctx: &TaskContext,
    kind: &str,
    period: &str,
    body: Value,
    policy: ReportMail,
) -> Result<TaskOutput, TaskError> {
    if !ctx.settings.admin_emails.is_empty() {
        mail_report(ctx, kind, period, &body, policy).await?;
    }
    Ok(ctx.output(vec![ReportDraft {
        kind: kind.to_owned(),
        period: period.to_owned(),
        body,
    }]))
}

/// The version of a report e-mail its dedupe key names: `report:<kind>:<period>:<admin>` is the
/// first, `...:<admin>:v<n>` the n-th (an update).
fn report_version(key: &str, base: &str) -> Option<u32> {
    let rest = key.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix(":v")?.parse().ok().filter(|n| *n >= 2)
}

/// Mails the report of (`kind`, `period`) to each admin, in one transaction: the first time as
/// `report:<kind>:<period>:<admin>`; later, only when its figures differ from the ones that
/// admin was last mailed (read back from the outbox), as version n+1,
/// `report:<kind>:<period>:<admin>:v<n+1>`, subject marked "[updated]". The key of each
/// version is unique, so one change is mailed once even by two re-runs at the same time, and
/// figures that change back are mailed again: what an admin last received is always current.
async fn mail_report(
    ctx: &TaskContext,
    kind: &str,
    period: &str,
    body: &Value,
    policy: ReportMail,
) -> Result<(), TaskError> {
    use sea_orm::TransactionTrait as _;
    let admins = &ctx.settings.admin_emails;
    let prefix = format!("report:{kind}:{period}:");
    let txn = ctx.db.begin().await.context("starting a transaction")?;
    let mut q = Sql::new(ctx.dialect);
    // INTEGER (not BIGINT): Postgres has substr(text, int, int) only.
    let len = q.bind(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX));
    let p = q.bind(prefix.clone());
    let recipients = q.bind_list(admins.iter().cloned());
    q.push(&format!(
        "SELECT dedupe_key, recipient, payload FROM email_outbox WHERE kind = 'report' \
         AND recipient IN ({recipients}) AND substr(dedupe_key, 1, {len}) = {p}"
    ));
    let sent = q
        .fetch_all(&txn)
        .await
        .context("reading the report e-mails already queued")?;
    // Per admin: the latest version mailed and its body.
    let mut latest: std::collections::HashMap<String, (u32, Value)> = Default::default();
    for row in &sent {
        let read = || -> Result<(String, String, String), sea_orm::DbErr> {
            Ok((col(row, 0)?, col(row, 1)?, col(row, 2)?))
        };
        let (key, recipient, payload) = read().context("reading report e-mails")?;
        let Some(version) = report_version(&key, &format!("{prefix}{recipient}")) else {
            continue;
        };
        let old = serde_json::from_str::<Value>(&payload)
            .ok()
            .and_then(|p| p.get("body").cloned())
            .unwrap_or(Value::Null);
        match latest.get(&recipient) {
            Some((v, _)) if *v >= version => {}
            _ => {
                latest.insert(recipient, (version, old));
            }
        }
    }
    let mut rows = Vec::new();
    for admin in admins {
        let (version, updated) = match latest.get(admin) {
            None => (1, false),
            Some((_, old)) if old == body => continue,
            Some(_) if policy == ReportMail::FirstOnly => continue,
            Some((v, _)) => (v + 1, true),
        };
        let key = if version == 1 {
            format!("{prefix}{admin}")
        } else {
            format!("{prefix}{admin}:v{version}")
        };
        let subject = format!(
            "TicketMax report: {kind} {period}{}",
            if updated { " [updated]" } else { "" }
        );
        rows.push(outbox::OutboxRow {
            dedupe_key: key,
            kind: "report".into(),
            recipient: admin.clone(),
            subject,
            payload: json!({
                "report_kind": kind, "period": period, "job": ctx.job, "body": body,
                "updated": updated, "version": version,
            }),
        });
    }
    let queued = outbox::insert_rows(&txn, ctx.dialect, &rows, chrono::Utc::now(), ctx.tz)
        .await
        .context("queueing report e-mails")?;
    txn.commit().await.context("committing report e-mails")?;
    ctx.add("emails_queued", queued);
    if queued > 0 {
        ctx.mail_queued();
    }
    Ok(())
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
    let queued = outbox::insert_rows(&ctx.db, ctx.dialect, &rows, chrono::Utc::now(), ctx.tz)
        .await
        .context("queueing alert e-mails")?;
    ctx.add("alerts_queued", queued);
    if queued > 0 {
        ctx.mail_queued();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_versions_from_dedupe_keys() {
        let base = "report:daily-bookings:2026-11-28:ops@x.example";
        assert_eq!(super::report_version(base, base), Some(1));
        assert_eq!(super::report_version(&format!("{base}:v2"), base), Some(2));
        assert_eq!(
            super::report_version(&format!("{base}:v17"), base),
            Some(17)
        );
        assert_eq!(super::report_version(&format!("{base}:v1"), base), None);
        assert_eq!(super::report_version(&format!("{base}.uk"), base), None);
        assert_eq!(super::report_version("report:other", base), None);
    }
}
