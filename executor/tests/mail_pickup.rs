//! Outbox pickup through LISTEN/NOTIFY on Postgres: rows inserted over another connection (as
//! another process would) are sent promptly by a sender whose fallback poll is 10 minutes, so
//! only the insert trigger's notification can wake it in time. Each row is claimed (and sent)
//! once, and the sender and its listener stop on shutdown.
//!
//! Postgres only (`TICKETMAX_TEST_DATABASE_URL`); skipped with a message without it. The sender
//! writes .eml files (no SMTP_HOST), as the executor's other mail tests do.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use common::TestDb;
use ticketmax_executor::mail::Sender;
use tokio_util::sync::CancellationToken;

/// Inserts one outbox row with plain SQL, as other components do.
async fn insert(t: &TestDb, key: &str) {
    t.exec(&format!(
        "INSERT INTO email_outbox (dedupe_key, kind, recipient, subject, payload) \
         VALUES ('{key}', 'booking-confirmation', 'pickup@example.com', 'Hi', '{{}}')"
    ))
    .await;
}

/// How long until the row of `key` is recorded sent; panics after `limit`.
async fn sent_within(t: &TestDb, key: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let status = t
            .text(&format!(
                "SELECT status FROM email_outbox WHERE dedupe_key = '{key}'"
            ))
            .await;
        if status.as_deref() == Some("sent") {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{key} was not sent within {limit:?} (status {status:?}): the sender was not woken \
             by the insert's notification"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn eml_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_elsewhere_wake_the_sender_through_notify() {
    if !std::env::var("TICKETMAX_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("TICKETMAX_TEST_DATABASE_URL is unset: skipping the Postgres LISTEN/NOTIFY test");
        return;
    }
    let Some(t) = common::databases()
        .await
        .into_iter()
        .find(|t| t.backend == "postgres")
    else {
        panic!("TICKETMAX_TEST_DATABASE_URL is set but no Postgres test database was made");
    };

    // The sender has its own pool, so every row reaches it from another connection.
    let cli = ticketmax_executor::config::Cli::try_parse_from([
        "ticketmax-executor",
        "--mail-poll-ms",
        "600000",
    ])
    .expect("config");
    let sender_db = ticketmax_executor::db::connect(&t.url)
        .await
        .expect("sender connection");
    let mail_dir = t.dirs.mail.clone();
    let sender = Sender::new(
        &cli.config,
        sender_db.clone(),
        t.dialect,
        mail_dir.clone(),
        Arc::new(tokio::sync::Notify::new()),
        None,
    )
    .expect("sender");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sender.run(shutdown.clone()));

    // The first row also waits out the listener's connect (whose wake-up claims anyway).
    insert(&t, "pickup-warmup").await;
    let warmup = sent_within(&t, "pickup-warmup", Duration::from_secs(10)).await;
    eprintln!("warm-up row sent after {warmup:?}");

    let mut delays = Vec::new();
    for i in 0..5 {
        let key = format!("pickup-{i}");
        insert(&t, &key).await;
        delays.push(sent_within(&t, &key, Duration::from_secs(5)).await);
    }
    eprintln!("pickup delays (insert committed -> recorded sent): {delays:?}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sender stops on shutdown")
        .expect("the sender task did not panic");

    assert_eq!(
        t.int("SELECT COUNT(*) FROM email_outbox WHERE status = 'sent'")
            .await,
        6
    );
    // A row is sent only under a claim, and every claim adds one attempt.
    assert_eq!(
        t.int("SELECT COUNT(*) FROM email_outbox WHERE attempts <> 1")
            .await,
        0,
        "a row was claimed more than once"
    );
    assert_eq!(eml_files(&mail_dir), 6);
    sender_db.close().await.ok();
}

/// The notify migration: a statement-level trigger, so a bulk insert notifies once; its down
/// migration drops the trigger and its function; a no-op on SQLite both ways.
#[tokio::test]
async fn the_notify_trigger_fires_once_per_statement_and_migrates_down() {
    use sea_orm_migration::MigratorTrait as _;
    use ticketmax_executor::schema::Migrator;

    let dbs = common::databases().await;
    for t in &dbs {
        // The notify migration and the ones appended after it: down and up again on either
        // backend.
        Migrator::down(&t.db, Some(steps_to_undo_notify()))
            .await
            .expect("down");
        Migrator::up(&t.db, None).await.expect("up again");
    }
    let Some(t) = dbs.iter().find(|t| t.backend == "postgres") else {
        eprintln!("TICKETMAX_TEST_DATABASE_URL is unset: the trigger checks need Postgres");
        return;
    };
    let triggers = "SELECT COUNT(*) FROM pg_trigger WHERE tgname = 'ticketmax_outbox_notify' \
                    AND tgrelid = 'email_outbox'::regclass AND (tgtype & 1) = 0";
    assert_eq!(t.int(triggers).await, 1, "one statement-level trigger");

    let pool = t.db.get_postgres_connection_pool();
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(pool)
        .await
        .expect("listener");
    listener
        .listen(ticketmax_executor::mail::pickup::CHANNEL)
        .await
        .expect("listen");
    t.exec(
        "INSERT INTO email_outbox (dedupe_key, kind, recipient) \
         SELECT 'bulk-' || g, 'booking-confirmation', 'bulk@example.com' \
         FROM generate_series(1, 500) g",
    )
    .await;
    let mut received = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        received += 1;
    }
    assert_eq!(received, 1, "a 500-row INSERT notifies once");
    drop(listener);

    Migrator::down(&t.db, Some(steps_to_undo_notify()))
        .await
        .expect("down");
    assert_eq!(t.int(triggers).await, 0, "down drops the trigger");
    assert_eq!(
        t.int("SELECT COUNT(*) FROM pg_proc WHERE proname = 'ticketmax_outbox_notify'")
            .await,
        0,
        "down drops the function"
    );
}

/// How many `down` steps undo the notify migration: it and every migration appended after it.
fn steps_to_undo_notify() -> u32 {
    use sea_orm_migration::MigratorTrait;
    let migrations = ticketmax_executor::schema::Migrator::migrations();
    let notify = migrations
        .iter()
        .position(|m| m.name() == "m20261203_000005_outbox_notify")
        .expect("the notify migration");
    u32::try_from(migrations.len() - notify).expect("a few steps")
}
