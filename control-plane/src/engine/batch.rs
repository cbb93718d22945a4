//! Group commit: one writer task per kind of write. A request goes out at once when no write is
//! in flight; whatever arrives while one is in flight goes out together in the next one. At
//! low load that is one statement per request with no added wait; under load the batch grows
//! with the queue, so the database does one commit for many requests.
use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// One request and, when the caller waits, where its answer goes.
pub struct Item<T, R> {
    pub request: T,
    pub reply: Option<oneshot::Sender<R>>,
}

impl<T, R> Item<T, R> {
    /// Sends the answer; a caller that stopped waiting is no error.
    pub fn answer(self, r: R) {
        if let Some(tx) = self.reply {
            let _ = tx.send(r);
        }
    }
}

/// The sending side, cheap to clone.
pub struct GroupCommit<T, R> {
    tx: mpsc::UnboundedSender<Item<T, R>>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// The writer stopped (the replica is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the {0} writer has stopped")]
pub struct Stopped(pub &'static str);

impl<T, R> GroupCommit<T, R> {
    /// Queues a request and waits for its answer.
    pub async fn call(&self, name: &'static str, request: T) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Item {
                request,
                reply: Some(tx),
            })
            .map_err(|_| Stopped(name))?;
        rx.await.map_err(|_| Stopped(name))
    }

    /// Queues a request whose answer nobody waits for.
    pub fn send(&self, request: T) -> bool {
        self.tx
            .send(Item {
                request,
                reply: None,
            })
            .is_ok()
    }
}

/// The receiving side, handed to [`run`].
pub struct Queue<T, R> {
    rx: mpsc::UnboundedReceiver<Item<T, R>>,
}

/// A writer's two ends: the sender goes where requests come from, the queue to [`run`].
pub fn channel<T, R>() -> (GroupCommit<T, R>, Queue<T, R>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (GroupCommit { tx }, Queue { rx })
}

/// The writer loop: `write` gets every batch, oldest request first, at most `max_batch` long,
/// and answers each item. On `stop` it finishes what is queued, then returns.
pub async fn run<T, R, F, Fut>(
    mut queue: Queue<T, R>,
    max_batch: usize,
    stop: CancellationToken,
    mut write: F,
) where
    F: FnMut(Vec<Item<T, R>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let rx = &mut queue.rx;
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => item,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        write(batch).await;
    }
    // Drain what was queued before the stop.
    loop {
        let mut batch = Vec::new();
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        write(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// The first request is written alone and at once; the ones that arrive while it is being
    /// written go out together in the next batch.
    #[tokio::test]
    async fn a_lone_request_goes_at_once_and_the_rest_wait_for_one_batch() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let (gc, queue) = channel::<u32, u32>();
        let worker = run(queue, 100, CancellationToken::new(), move |batch| {
            let seen = seen.clone();
            async move {
                seen.lock().map(|mut s| s.push(batch.len())).ok();
                tokio::time::sleep(Duration::from_millis(50)).await;
                for item in batch {
                    let r = item.request * 2;
                    item.answer(r);
                }
            }
        });
        tokio::spawn(worker);
        let started = tokio::time::Instant::now();
        assert_eq!(gc.call("test", 1).await.ok(), Some(2));
        assert!(started.elapsed() < Duration::from_millis(200));
        let first = tokio::spawn({
            let gc = gc.clone();
            async move { gc.call("test", 10).await.ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = (0..20)
            .map(|i| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.call("test", i).await.ok() })
            })
            .collect();
        assert_eq!(first.await.ok().flatten(), Some(20));
        for (i, r) in rest.into_iter().enumerate() {
            assert_eq!(
                r.await.ok().flatten(),
                Some(u32::try_from(i).unwrap_or(0) * 2)
            );
        }
        let sizes = sizes.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(sizes, vec![1, 1, 20]);
    }

    #[tokio::test]
    async fn a_stopped_writer_finishes_what_was_queued() {
        let stop = CancellationToken::new();
        let total = Arc::new(Mutex::new(0u32));
        let t = total.clone();
        let (gc, queue) = channel::<u32, ()>();
        let worker = run(queue, 3, stop.clone(), move |batch| {
            let t = t.clone();
            async move {
                for item in batch {
                    t.lock().map(|mut n| *n += item.request).ok();
                    item.answer(());
                }
            }
        });
        for i in 1..=10 {
            assert!(gc.send(i));
        }
        stop.cancel();
        worker.await;
        assert_eq!(total.lock().map(|n| *n).unwrap_or(0), 55);
    }
}
