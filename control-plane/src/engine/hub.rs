//! Live run events for watchers (`WatchRun`, the dashboard's SSE). One feed per watched run,
//! shared by all its watchers on this replica: events of attempts this replica runs are
//! published the moment they happen (before they are persisted); events written by another
//! replica are read from the database once per feed when its notification arrives, or by the
//! feed's slow fallback poll. A run nobody watches costs nothing.
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use ticketmax_proto::{to_timestamp, v1};

use crate::lifecycle::EventPayload;
use crate::store::{self, Store, run_event};

pub type Event = Arc<v1::RunEvent>;

const FEED_CAPACITY: usize = 1024;

pub struct Feed {
    pub run_id: String,
    tx: broadcast::Sender<Event>,
    /// The newest sequence number published on this feed.
    newest: AtomicI64,
    /// Serialises database catch-ups and remembers when the last one ran, so many watchers of
    /// one run poll once between them.
    last_poll: tokio::sync::Mutex<Option<Instant>>,
}

impl Feed {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn newest(&self) -> i64 {
        self.newest.load(Ordering::Relaxed)
    }

    /// A watcher read everything up to `seq` from the database: nothing older needs
    /// publishing again.
    pub fn seen(&self, seq: i64) {
        self.newest.fetch_max(seq, Ordering::Relaxed);
    }

    fn publish(&self, ev: Event) {
        self.newest
            .fetch_max(i64::try_from(ev.seq).unwrap_or(0), Ordering::Relaxed);
        let _ = self.tx.send(ev);
    }

    /// Reads events newer than what the feed published and publishes them, unless another
    /// watcher did so within `min_gap` (pass zero to force it).
    pub async fn catch_up(&self, store: &Store, min_gap: Duration) -> store::Result<()> {
        let mut last = self.last_poll.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_gap) {
            return Ok(());
        }
        *last = Some(Instant::now());
        loop {
            let after = self.newest();
            let page = store.events_after(&self.run_id, after, 500).await?;
            let full = page.len() == 500;
            for e in &page {
                self.publish(Arc::new(stored_event(e)));
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// A stored event as the API sends it.
pub fn stored_event(e: &run_event::Model) -> v1::RunEvent {
    v1::RunEvent {
        run_id: e.run_id.clone(),
        seq: u64::try_from(e.seq).unwrap_or(0),
        time: Some(to_timestamp(e.at)),
        kind: Some(EventPayload::parse(&e.kind, &e.payload).to_proto()),
    }
}

/// An event as it happens.
pub fn live_event(
    run_id: &str,
    seq: i64,
    at: chrono::DateTime<chrono::Utc>,
    payload: &EventPayload,
) -> Event {
    Arc::new(v1::RunEvent {
        run_id: run_id.to_string(),
        seq: u64::try_from(seq).unwrap_or(0),
        time: Some(to_timestamp(at)),
        kind: Some(payload.to_proto()),
    })
}

#[derive(Default)]
pub struct Hub {
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Feed>>> {
        self.feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The feed of a run, created on first use; it lives while someone holds it.
    pub fn subscribe(&self, run_id: &str) -> Arc<Feed> {
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get(run_id).and_then(Weak::upgrade) {
            return feed;
        }
        if feeds.len() > 64 {
            feeds.retain(|_, f| f.strong_count() > 0);
        }
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        let feed = Arc::new(Feed {
            run_id: run_id.to_string(),
            tx,
            newest: AtomicI64::new(0),
            last_poll: tokio::sync::Mutex::new(None),
        });
        feeds.insert(run_id.to_string(), Arc::downgrade(&feed));
        feed
    }

    /// The feed of a run if somebody watches it here.
    pub fn watched(&self, run_id: &str) -> Option<Arc<Feed>> {
        self.lock().get(run_id).and_then(Weak::upgrade)
    }

    pub fn all_watched(&self) -> Vec<Arc<Feed>> {
        self.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// Publishes an event to the run's watchers on this replica, if any.
    pub fn publish(&self, run_id: &str, ev: Event) {
        if let Some(feed) = self.watched(run_id) {
            feed.publish(ev);
        }
    }
}
