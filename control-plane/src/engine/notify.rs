//! What replicas tell each other through Postgres `LISTEN/NOTIFY`, so that nobody polls: a job
//! changed (reload the job cache), a run was asked to cancel (the replica running it stops it
//! at once), a run has new events (watchers on other replicas read them once per run, not once
//! per watcher). Notifications are sent inside the writing transaction, so they arrive only
//! for what committed. Each carries the sending replica, which ignores its own.
//!
//! SQLite has no notifications; its embedded default is one replica, and the slow fallback
//! polls of the job cache and the watchers cover a second process.
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::app::SharedApp;

pub const CHANNEL: &str = "ticketmax";
/// Postgres refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;

pub fn jobs_changed(origin: &str) -> String {
    format!("jobs|{origin}")
}

pub fn cancel(origin: &str, run_id: &str) -> String {
    format!("cancel|{origin}|{run_id}")
}

/// `events|origin|run:seq,run:seq,...`, split to stay under the payload limit.
pub fn events(origin: &str, touched: &[(String, i64)]) -> Vec<String> {
    let mut newest: std::collections::BTreeMap<&str, i64> = Default::default();
    for (run, seq) in touched {
        let n = newest.entry(run.as_str()).or_default();
        *n = (*n).max(*seq);
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for (run, seq) in newest {
        let entry = format!("{run}:{seq}");
        if !current.is_empty() && current.len() + entry.len() + 1 > MAX_PAYLOAD {
            out.push(format!("events|{origin}|{current}"));
            current.clear();
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&entry);
    }
    if !current.is_empty() {
        out.push(format!("events|{origin}|{current}"));
    }
    out
}

/// A notification as received.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    JobsChanged,
    Cancel { run_id: String },
    Events(Vec<(String, i64)>),
}

/// Parses a payload; `None` for our own notifications and for anything unknown.
pub fn parse(payload: &str, me: &str) -> Option<Notice> {
    let mut parts = payload.splitn(3, '|');
    let kind = parts.next()?;
    let origin = parts.next()?;
    if origin == me {
        return None;
    }
    let rest = parts.next().unwrap_or("");
    match kind {
        "jobs" => Some(Notice::JobsChanged),
        "cancel" if !rest.is_empty() => Some(Notice::Cancel {
            run_id: rest.to_string(),
        }),
        "events" => Some(Notice::Events(
            rest.split(',')
                .filter_map(|e| {
                    let (run, seq) = e.rsplit_once(':')?;
                    Some((run.to_string(), seq.parse().ok()?))
                })
                .collect(),
        )),
        _ => None,
    }
}

/// Listens until `stop` (Postgres only) and hands each notice to the part of the replica it
/// concerns. After a lost connection everything that might have been missed is refreshed.
pub async fn listen(app: SharedApp, stop: CancellationToken) {
    if !app.store.is_postgres() {
        return;
    }
    // Checked above: the connection is a Postgres pool.
    let pool = app
        .store
        .connection()
        .get_postgres_connection_pool()
        .clone();
    let mut wait = Duration::from_millis(200);
    let mut first = true;
    while !stop.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for notifications; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot LISTEN; retrying");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        wait = Duration::from_millis(200);
        if !first {
            // Whatever was sent while the connection was down is lost: catch up.
            app.resync().await;
        }
        first = false;
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                n = listener.recv() => n,
            };
            match next {
                Ok(n) => {
                    if let Some(notice) = parse(n.payload(), &app.replica_id) {
                        app.on_notice(notice).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_our_own_are_ignored() {
        assert_eq!(parse(&jobs_changed("a"), "b"), Some(Notice::JobsChanged));
        assert_eq!(parse(&jobs_changed("a"), "a"), None);
        assert_eq!(
            parse(&cancel("a", "run-1"), "b"),
            Some(Notice::Cancel {
                run_id: "run-1".into()
            })
        );
        let touched = vec![
            ("r1".to_string(), 3),
            ("r2".to_string(), 1),
            ("r1".to_string(), 5),
        ];
        let sent = events("a", &touched);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            parse(&sent[0], "b"),
            Some(Notice::Events(vec![("r1".into(), 5), ("r2".into(), 1)]))
        );
        assert_eq!(parse("bogus", "b"), None);
    }

    #[test]
    fn many_runs_are_split_under_the_payload_limit() {
        let touched: Vec<_> = (0..1000)
            .map(|i| (uuid::Uuid::now_v7().to_string(), i64::from(i)))
            .collect();
        let sent = events("replica-1", &touched);
        assert!(sent.len() > 1);
        let mut n = 0;
        for p in &sent {
            assert!(p.len() < 8000, "{}", p.len());
            if let Some(Notice::Events(e)) = parse(p, "other") {
                n += e.len();
            }
        }
        assert_eq!(n, 1000);
    }
}
