//! Prompt pickup of outbox rows written by other processes, on Postgres: LISTEN on
//! [`CHANNEL`], which the `email_outbox` insert trigger (migration
//! `m20261203_000005_outbox_notify`) notifies, and wake the sender on each notification.
//!
//! A notification is only a hint to claim now. The sender still claims rows through their lease,
//! so exactly-once is untouched: a lost notification delays a row until the sender's fallback
//! poll (`TICKETMAX_MAIL_POLL_MS`), an extra one costs an empty claim. Notifications sent while
//! the listener is disconnected are lost, so every (re)connect wakes the sender once as well.
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The channel the outbox insert trigger notifies.
pub const CHANNEL: &str = "ticketmax_outbox";

/// First wait after a failed connect or a lost connection; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Listens on [`CHANNEL`] through a connection of `pool` and calls `wake.notify_one()` after
/// each (re)connect and on each notification, until `stop` is cancelled. Connection errors are
/// retried with exponential backoff; they never end the listener, since the sender's poll keeps
/// mail flowing meanwhile.
pub async fn listen(pool: PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = subscribe(&pool) => connected,
        };
        match connected {
            Ok(mut listener) => {
                tracing::debug!(channel = CHANNEL, "listening for new outbox rows");
                let since = tokio::time::Instant::now();
                // Rows may have been inserted while no connection was listening.
                wake.notify_one();
                let lost = loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        received = listener.try_recv() => match received {
                            Ok(Some(_)) => wake.notify_one(),
                            Ok(None) => break "the connection was lost".to_owned(),
                            Err(e) => break e.to_string(),
                        },
                    }
                };
                tracing::warn!(channel = CHANNEL, error = %lost, "outbox LISTEN connection ended; reconnecting (the sender polls meanwhile)");
                // A connection that held for a while starts the backoff over; one that keeps
                // dropping right after connecting does not reconnect in a tight loop.
                if since.elapsed() >= BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
            }
            Err(e) => {
                tracing::warn!(channel = CHANNEL, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot LISTEN for new outbox rows; retrying (the sender polls meanwhile)");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A listener on its own connection of `pool`, subscribed to [`CHANNEL`].
async fn subscribe(pool: &PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is reported (Ok(None) from try_recv) instead of silently re-established
    // by sqlx, so that [`listen`] wakes the sender for what it may have missed meanwhile.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
