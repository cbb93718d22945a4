//! The executors a replica knows: kept in memory from the heartbeats it receives and from the
//! database (executors that heartbeat to other replicas), so that dispatching a run costs no
//! executor read. Heartbeats reach the database at most every `persist_every` per executor,
//! all of a replica's in one statement, which is enough for other replicas to see them live
//! within the executor timeout.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::store::{executor, executors::HeartbeatFigures};

#[derive(Default)]
struct Book {
    known: BTreeMap<String, Entry>,
    refreshed_at: Option<Instant>,
}

struct Entry {
    model: executor::Model,
    /// When its heartbeat last reached the database.
    persisted_at: DateTime<Utc>,
    /// A write of its heartbeat is under way.
    persisting: bool,
}

#[derive(Default)]
pub struct ExecutorBook {
    book: Mutex<Book>,
}

/// What to do with a heartbeat.
#[derive(Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Known and recently persisted (or being persisted): answered from memory.
    Known,
    /// Known here, its last write is old: write it, without making the executor wait.
    PersistInBackground,
    /// Not known here (registered with another replica): the database answers.
    Persist,
    /// It carries the session of a registration that another one replaced.
    Displaced,
}

pub fn jobs_of(e: &executor::Model) -> Vec<String> {
    serde_json::from_str(&e.jobs).unwrap_or_default()
}

impl ExecutorBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Executors with a heartbeat within `timeout` of `now`.
    pub fn live(&self, timeout: Duration, now: DateTime<Utc>) -> Vec<executor::Model> {
        let since = now - chrono::Duration::from_std(timeout).unwrap_or_default();
        self.lock()
            .known
            .values()
            .filter(|e| !e.model.deregistered && e.model.last_heartbeat_at >= since)
            .map(|e| e.model.clone())
            .collect()
    }

    /// The parameters `job` takes, as declared by a live executor that offers it (else by any
    /// known one); `None` when no executor declared the job.
    pub fn declared_params(
        &self,
        job: &str,
        timeout: Duration,
        now: DateTime<Utc>,
    ) -> Option<Vec<crate::params::ParamSpec>> {
        let since = now - chrono::Duration::from_std(timeout).unwrap_or_default();
        let book = self.lock();
        let mut all: Vec<&Entry> = book.known.values().collect();
        // Live executors first, then the most recently seen.
        all.sort_by_key(|e| {
            std::cmp::Reverse((
                e.model.last_heartbeat_at >= since,
                e.model.last_heartbeat_at,
            ))
        });
        all.iter()
            .find_map(|e| crate::params::declared(&e.model.tasks, job))
    }

    /// Rows read from the database, with the fresher heartbeat figures this replica holds in
    /// memory for the executors that talk to it.
    pub fn overlay(&self, rows: Vec<executor::Model>) -> Vec<executor::Model> {
        let book = self.lock();
        rows.into_iter()
            .map(|row| match book.known.get(&row.id) {
                Some(e) if e.model.last_heartbeat_at > row.last_heartbeat_at => e.model.clone(),
                _ => row,
            })
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<executor::Model> {
        self.lock().known.get(id).map(|e| e.model.clone())
    }

    /// Whether the database view is older than `max_age`.
    pub fn stale(&self, max_age: Duration) -> bool {
        self.lock()
            .refreshed_at
            .is_none_or(|t| t.elapsed() >= max_age)
    }

    /// Merges the database's view: a heartbeat this replica received later than the stored
    /// one wins; an executor gone from the database (deregistered) is forgotten.
    pub fn refresh(&self, rows: Vec<executor::Model>) {
        let mut book = self.lock();
        let mut next = BTreeMap::new();
        for row in rows {
            let entry = match book.known.remove(&row.id) {
                Some(local) if local.model.last_heartbeat_at > row.last_heartbeat_at => local,
                _ => Entry {
                    persisted_at: row.last_heartbeat_at,
                    model: row,
                    persisting: false,
                },
            };
            next.insert(entry.model.id.clone(), entry);
        }
        book.known = next;
        book.refreshed_at = Some(Instant::now());
    }

    pub fn registered(&self, model: executor::Model) {
        let persisted_at = model.last_heartbeat_at;
        self.lock().known.insert(
            model.id.clone(),
            Entry {
                model,
                persisted_at,
                persisting: false,
            },
        );
    }

    pub fn deregistered(&self, id: &str) {
        self.lock().known.remove(id);
    }

    /// Notes a heartbeat in memory and says whether it must reach the database now.
    pub fn heartbeat(
        &self,
        id: &str,
        session: &str,
        figures: HeartbeatFigures,
        now: DateTime<Utc>,
        persist_every: Duration,
    ) -> Heartbeat {
        let mut book = self.lock();
        let Some(e) = book.known.get_mut(id) else {
            return Heartbeat::Persist;
        };
        if !session.is_empty() && e.model.session.as_deref().is_some_and(|s| s != session) {
            return Heartbeat::Displaced;
        }
        e.model.last_heartbeat_at = now;
        e.model.running = figures.running;
        e.model.outbox_pending = figures.outbox_pending;
        e.model.emails_sent = figures.emails_sent;
        e.model.emails_failed = figures.emails_failed;
        let every = chrono::Duration::from_std(persist_every).unwrap_or_default();
        if now - e.persisted_at >= every && !e.persisting {
            e.persisting = true;
            Heartbeat::PersistInBackground
        } else {
            Heartbeat::Known
        }
    }

    /// A heartbeat reached the database (`known`: the executor is registered there).
    pub fn persisted(&self, id: &str, at: DateTime<Utc>, known: bool) {
        let mut book = self.lock();
        if known {
            if let Some(e) = book.known.get_mut(id) {
                e.persisted_at = at;
                e.persisting = false;
            }
        } else {
            book.known.remove(id);
        }
    }

    /// A heartbeat write failed: the next heartbeat tries again.
    pub fn persist_failed(&self, id: &str) {
        if let Some(e) = self.lock().known.get_mut(id) {
            e.persisting = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str, at: DateTime<Utc>) -> executor::Model {
        executor::Model {
            id: id.into(),
            address: "http://127.0.0.1:1".into(),
            jobs: "[\"a/b\"]".into(),
            version: "1".into(),
            running: 0,
            outbox_pending: 0,
            emails_sent: 0,
            emails_failed: 0,
            deregistered: false,
            registered_at: at,
            last_heartbeat_at: at,
            session: Some("s1".into()),
            tasks: "[]".into(),
        }
    }

    #[test]
    fn heartbeats_persist_once_per_interval_and_liveness_follows_them() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let book = ExecutorBook::default();
        let every = Duration::from_millis(1500);
        let figures = HeartbeatFigures::default();
        assert_eq!(
            book.heartbeat("e1", "s1", figures, t0, every),
            Heartbeat::Persist
        );
        book.registered(model("e1", t0));
        let s = chrono::Duration::seconds;
        assert_eq!(
            book.heartbeat("e1", "s1", figures, t0 + s(1), every),
            Heartbeat::Known
        );
        assert_eq!(
            book.heartbeat("e1", "s1", figures, t0 + s(2), every),
            Heartbeat::PersistInBackground
        );
        // While that write is under way, no second one.
        assert_eq!(
            book.heartbeat("e1", "s1", figures, t0 + s(2), every),
            Heartbeat::Known
        );
        book.persisted("e1", t0 + s(2), true);
        assert_eq!(
            book.heartbeat("e1", "s1", figures, t0 + s(3), every),
            Heartbeat::Known
        );
        assert_eq!(
            book.heartbeat("e1", "old", figures, t0 + s(3), every),
            Heartbeat::Displaced
        );
        let timeout = Duration::from_secs(5);
        assert_eq!(book.live(timeout, t0 + s(8)).len(), 1);
        assert!(book.live(timeout, t0 + s(9)).is_empty());
        // The database's older view does not undo a newer heartbeat; a missing row forgets it.
        book.refresh(vec![model("e1", t0)]);
        assert_eq!(book.live(timeout, t0 + s(8)).len(), 1);
        book.refresh(vec![]);
        assert!(book.get("e1").is_none());
    }
}
