//! Heartbeats that must reach the database (see `executors::ExecutorBook`), written by one
//! group-commit writer: the heartbeats of all executors talking to this replica share a
//! statement.
use tokio_util::sync::CancellationToken;

use super::batch::{self, GroupCommit, Item};
use crate::app::SharedApp;
use crate::store::{StoreError, executors::HeartbeatRow};

/// `true`: the executor is registered (not deregistered) in the database.
pub type Reply = Result<bool, StoreError>;
pub type Heartbeats = GroupCommit<HeartbeatRow, Reply>;
pub type Queue = batch::Queue<HeartbeatRow, Reply>;

pub fn channel() -> (Heartbeats, Queue) {
    batch::channel()
}

pub async fn run(app: SharedApp, queue: Queue, stop: CancellationToken) {
    batch::run(queue, 256, stop, |items| write(&app, items)).await;
}

async fn write(app: &SharedApp, items: Vec<Item<HeartbeatRow, Reply>>) {
    let rows: Vec<HeartbeatRow> = items.iter().map(|i| i.request.clone()).collect();
    match app.store.heartbeats(&rows).await {
        Ok(known) => {
            for item in items {
                let ok = known.contains(&item.request.id);
                item.answer(Ok(ok));
            }
        }
        Err(e) => {
            for item in items {
                item.answer(Err(e.clone()));
            }
        }
    }
}
