//! `WatchRun`: the stored events after the caller's offset, then live ones, ending with the
//! run's terminal state event. Live events come from the run's feed in the hub (shared by all
//! watchers of the run on this replica), so an open stream costs no query while the run is
//! quiet but for the feed's slow fallback poll; a gap in the sequence (a lagging receiver, an
//! event published before it was stored) is filled from the database.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use ticketmax_proto::v1;

use crate::{
    app::SharedApp,
    engine::hub::{Event, stored_event},
};

/// The feed's fallback poll while nothing arrives: events written by another replica when
/// its notification was lost (Postgres), or by another process at all (SQLite).
fn idle_poll(app: &SharedApp) -> Duration {
    if app.store.is_postgres() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    }
}

const PAGE: u64 = 500;

fn is_terminal(ev: &v1::RunEvent) -> bool {
    matches!(&ev.kind, Some(v1::run_event::Kind::State(s)) if s.state().is_terminal())
}

struct Cursor {
    app: SharedApp,
    run_id: String,
    feed: Arc<crate::engine::hub::Feed>,
    rx: tokio::sync::broadcast::Receiver<Event>,
    /// The newest sequence number sent.
    last: i64,
    /// Events received ahead of a gap, waiting for it to be filled.
    ahead: BTreeMap<i64, Event>,
    /// Ready to send, in order.
    ready: std::collections::VecDeque<Event>,
    replayed: bool,
    done: bool,
}

impl Cursor {
    /// Moves whatever continues the sequence from `ahead` to `ready`.
    fn advance(&mut self) {
        while let Some(entry) = self.ahead.first_entry() {
            let seq = *entry.key();
            if seq <= self.last {
                entry.remove();
                continue;
            }
            if seq != self.last + 1 {
                break;
            }
            let ev = entry.remove();
            self.last = seq;
            self.ready.push_back(ev);
        }
    }

    fn accept(&mut self, ev: Event) {
        let seq = i64::try_from(ev.seq).unwrap_or(0);
        if seq > self.last {
            self.ahead.insert(seq, ev);
            self.advance();
        }
    }

    /// Reads stored events after the last one sent.
    async fn fill(&mut self) -> Result<(), Status> {
        loop {
            let page = self
                .app
                .store
                .events_after(&self.run_id, self.last, PAGE)
                .await?;
            let full = page.len() as u64 == PAGE;
            for e in &page {
                self.accept(Arc::new(stored_event(e)));
            }
            self.feed.seen(self.last);
            if !full || !self.ready.is_empty() {
                return Ok(());
            }
        }
    }
}

pub fn watch(
    app: SharedApp,
    run_id: String,
    after: i64,
) -> impl Stream<Item = Result<v1::RunEvent, Status>> + Send + 'static {
    // Subscribe before reading the database, so nothing falls between the two.
    let feed = app.hub.subscribe(&run_id);
    let rx = feed.subscribe();
    let cursor = Cursor {
        app,
        run_id,
        feed,
        rx,
        last: after,
        ahead: BTreeMap::new(),
        ready: Default::default(),
        replayed: false,
        done: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(ev) = c.ready.pop_front() {
                if is_terminal(&ev) {
                    c.done = true;
                    c.ready.clear();
                }
                return Some((Ok((*ev).clone()), c));
            }
            if c.done {
                return None;
            }
            if !c.replayed {
                c.replayed = true;
                if let Err(e) = c.fill().await {
                    c.done = true;
                    return Some((Err(e), c));
                }
                if c.ready.is_empty() {
                    // A run that ended without a terminal event (written before this version):
                    // nothing more will come.
                    match c.app.store.run(&c.run_id).await {
                        Ok(Some(r)) if r.state.is_terminal() => return None,
                        Ok(None) => return None,
                        Ok(_) => {}
                        Err(e) => {
                            c.done = true;
                            return Some((Err(e.into()), c));
                        }
                    }
                }
                continue;
            }
            let poll = idle_poll(&c.app);
            let gap = !c.ahead.is_empty();
            let wait = if gap { Duration::from_millis(50) } else { poll };
            tokio::select! {
                received = c.rx.recv() => match received {
                    Ok(ev) => c.accept(ev),
                    Err(RecvError::Lagged(_)) => {
                        if let Err(e) = c.fill().await {
                            c.done = true;
                            return Some((Err(e), c));
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                () = tokio::time::sleep(wait) => {
                    let result = if gap {
                        c.fill().await
                    } else {
                        // One watcher of the run polls for all of them.
                        c.feed.catch_up(&c.app.store, poll).await.map_err(Status::from)
                    };
                    if let Err(e) = result {
                        c.done = true;
                        return Some((Err(e), c));
                    }
                }
            }
        }
    })
}
