//! Manual runs end to end: TriggerJob → executor → ticketing database → run summary, and
//! WatchRun live and replayed.

use ticketmax_e2e::*;

use ticketmax_e2e::jobs::ABANDONED_PAYMENTS as ABANDONED;
use ticketmax_e2e::jobs::CANCEL_EXPIRED;

async fn booking_status(app: &TestApp, id: i64) -> String {
    app.ticketing_scalar(&format!("SELECT status FROM bookings WHERE id = {id}"))
        .await
}

async fn payment_status(app: &TestApp, id: i64) -> String {
    app.ticketing_scalar(&format!("SELECT status FROM payments WHERE id = {id}"))
        .await
}

async fn available(app: &TestApp, event: i64) -> i64 {
    app.ticketing_scalar(&format!(
        "SELECT available_tickets FROM events WHERE id = {event}"
    ))
    .await
}

async fn mails_to(app: &TestApp, recipient: &str) -> i64 {
    app.ticketing_scalar(&format!(
        "SELECT count(*) FROM email_outbox WHERE recipient = '{recipient}'"
    ))
    .await
}

#[tokio::test]
async fn cancel_expired_bookings_cancels_only_bookings_pending_over_10_minutes() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("bookings").await;

    app.ticketing_exec(
        "INSERT INTO users (id, email, first_name, email_verified) VALUES \
           (1, 'ada@example.com', 'Ada', true), (2, 'bola@example.com', 'Bola', true), \
           (3, 'chi@example.com', 'Chi', true), (4, 'dayo@example.com', 'Dayo', true); \
         INSERT INTO events (id, organizer_id, title, starts_at, total_tickets, available_tickets, price, currency, status) VALUES \
           (10, 99, 'Afrobeats Night', now() + interval '10 days', 100, 90, 500000, 'NGN', 'upcoming'), \
           (20, 99, 'Tech Summit',     now() + interval '20 days',  50, 48, 250000, 'NGN', 'upcoming'); \
         INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, currency, status, created_at, confirmed_at) VALUES \
           (101, 1, 10, 2, 1000000, 'NGN', 'pending',   now() - interval '9 minutes',  NULL), \
           (102, 2, 10, 3, 1500000, 'NGN', 'pending',   now() - interval '11 minutes', NULL), \
           (103, 3, 10, 5, 2500000, 'NGN', 'confirmed', now() - interval '2 hours',    now() - interval '2 hours'), \
           (104, 3, 10, 4, 2000000, 'NGN', 'cancelled', now() - interval '3 days',     NULL), \
           (201, 4, 20, 2,  500000, 'NGN', 'pending',   now() - interval '30 minutes', NULL); \
         INSERT INTO payments (id, booking_id, user_id, amount, currency, status, created_at, paid_at) VALUES \
           (2001, 201, 4, 500000, 'NGN', 'success', now() - interval '29 minutes', now() - interval '28 minutes');",
    )
    .await;
    app.assert_inventory_consistent().await;

    let run = app.trigger(CANCEL_EXPIRED).await;
    assert_eq!(run.job, CANCEL_EXPIRED);
    assert_eq!(run.trigger(), Trigger::Manual);
    assert!(
        matches!(
            run.state(),
            RunState::Queued | RunState::Running | RunState::Succeeded
        ),
        "TriggerJob returned {run:?}"
    );
    let run = app.wait_for_run(&run.id, terminal, secs(60)).await;
    assert_eq!(run.state(), RunState::Succeeded, "run: {run:#?}");
    assert_eq!(
        summary_count(&run, "cancelled"),
        Some(1),
        "summary {}",
        summary(&run)
    );
    if let Some(released) = summary_count(&run, "tickets_released") {
        assert_eq!(released, 3, "summary {}", summary(&run));
    }
    assert!(
        run.started_at.is_some() && run.finished_at.is_some(),
        "{run:#?}"
    );
    assert_eq!(run.attempt, 1);
    assert_eq!(run.executor_id, "ex-1");
    assert!(
        run.error.is_empty(),
        "succeeded run with error {:?}",
        run.error
    );

    assert_eq!(
        booking_status(&app, 102).await,
        "cancelled",
        "11-minute pending booking"
    );
    let cancelled_at: Option<chrono::DateTime<chrono::Utc>> = app
        .ticketing_scalar("SELECT cancelled_at FROM bookings WHERE id = 102")
        .await;
    assert!(
        cancelled_at.is_some(),
        "cancelled booking without cancelled_at"
    );
    assert_eq!(
        booking_status(&app, 101).await,
        "pending",
        "9-minute pending booking"
    );
    assert_eq!(booking_status(&app, 103).await, "confirmed");
    assert_eq!(booking_status(&app, 104).await, "cancelled");
    assert_eq!(
        booking_status(&app, 201).await,
        "pending",
        "pending booking with a successful payment"
    );
    assert_eq!(
        available(&app, 10).await,
        93,
        "available_tickets must rise by exactly 3"
    );
    assert_eq!(available(&app, 20).await, 48);
    app.assert_inventory_consistent().await;
    assert_eq!(
        mails_to(&app, "bola@example.com").await,
        1,
        "one cancellation e-mail queued"
    );
    assert_eq!(mails_to(&app, "ada@example.com").await, 0);

    // Idempotent: a second run changes nothing and sends nothing.
    let again = app.run_to_completion(CANCEL_EXPIRED).await;
    assert_ne!(again.id, run.id);
    assert_eq!(again.state(), RunState::Succeeded, "second run: {again:#?}");
    assert_eq!(
        summary_count(&again, "cancelled"),
        Some(0),
        "summary {}",
        summary(&again)
    );
    assert_eq!(available(&app, 10).await, 93);
    assert_eq!(booking_status(&app, 101).await, "pending");
    assert_eq!(
        mails_to(&app, "bola@example.com").await,
        1,
        "second run sent another e-mail"
    );
    app.assert_inventory_consistent().await;
}

#[tokio::test]
async fn cleanup_abandoned_payments_abandons_payments_pending_over_15_minutes() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("payments").await;

    app.ticketing_exec(
        "INSERT INTO users (id, email, first_name, email_verified) VALUES \
           (1, 'ada@example.com', 'Ada', true), (2, 'bola@example.com', 'Bola', true), \
           (3, 'chi@example.com', 'Chi', true), (4, 'dayo@example.com', 'Dayo', true); \
         INSERT INTO events (id, organizer_id, title, starts_at, total_tickets, available_tickets, price, currency, status) VALUES \
           (10, 99, 'Afrobeats Night', now() + interval '10 days', 100, 85, 500000, 'NGN', 'upcoming'); \
         INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, currency, status, created_at, confirmed_at) VALUES \
           (101, 1, 10, 2, 1000000, 'NGN', 'pending',   now() - interval '9 minutes',  NULL), \
           (102, 2, 10, 3, 1500000, 'NGN', 'pending',   now() - interval '17 minutes', NULL), \
           (103, 3, 10, 5, 2500000, 'NGN', 'confirmed', now() - interval '2 hours',    now() - interval '2 hours'), \
           (104, 4, 10, 5, 2500000, 'NGN', 'pending',   now() - interval '40 minutes', NULL); \
         INSERT INTO payments (id, booking_id, user_id, amount, currency, status, created_at, paid_at) VALUES \
           (1001, 101, 1, 1000000, 'NGN', 'pending',    now() - interval '9 minutes',  NULL), \
           (1002, 102, 2, 1500000, 'NGN', 'pending',    now() - interval '16 minutes', NULL), \
           (1003, 103, 3, 2500000, 'NGN', 'success',    now() - interval '2 hours',    now() - interval '2 hours'), \
           (1004, 104, 4, 2500000, 'NGN', 'processing', now() - interval '40 minutes', NULL);",
    )
    .await;
    app.assert_inventory_consistent().await;

    let run = app.run_to_completion(ABANDONED).await;
    assert_eq!(run.state(), RunState::Succeeded, "run: {run:#?}");
    assert_eq!(
        summary_count(&run, "abandoned"),
        Some(1),
        "summary {}",
        summary(&run)
    );

    assert_eq!(
        payment_status(&app, 1002).await,
        "abandoned",
        "payment pending 16 min"
    );
    let abandoned_at: Option<chrono::DateTime<chrono::Utc>> = app
        .ticketing_scalar("SELECT abandoned_at FROM payments WHERE id = 1002")
        .await;
    assert!(
        abandoned_at.is_some(),
        "abandoned payment without abandoned_at"
    );
    assert_eq!(
        booking_status(&app, 102).await,
        "cancelled",
        "booking of the abandoned payment"
    );
    assert_eq!(
        payment_status(&app, 1001).await,
        "pending",
        "payment pending 9 min"
    );
    assert_eq!(booking_status(&app, 101).await, "pending");
    assert_eq!(payment_status(&app, 1003).await, "success");
    assert_eq!(booking_status(&app, 103).await, "confirmed");
    // `processing` payments belong to handle-payment-timeouts, not to this job.
    assert_eq!(payment_status(&app, 1004).await, "processing");
    assert_eq!(booking_status(&app, 104).await, "pending");
    assert_eq!(
        available(&app, 10).await,
        88,
        "available_tickets must rise by exactly 3"
    );
    app.assert_inventory_consistent().await;
    assert_eq!(
        mails_to(&app, "bola@example.com").await,
        1,
        "one e-mail to the customer"
    );

    let again = app.run_to_completion(ABANDONED).await;
    assert_eq!(again.state(), RunState::Succeeded, "second run: {again:#?}");
    assert_eq!(
        summary_count(&again, "abandoned"),
        Some(0),
        "summary {}",
        summary(&again)
    );
    assert_eq!(available(&app, 10).await, 88);
    assert_eq!(
        mails_to(&app, "bola@example.com").await,
        1,
        "second run sent another e-mail"
    );
    app.assert_inventory_consistent().await;
}

fn state_of(e: &RunEvent) -> Option<RunState> {
    match &e.kind {
        Some(EventKind::State(s)) => Some(s.state()),
        _ => None,
    }
}

#[tokio::test]
async fn watch_run_streams_events_in_order_live_and_replays_them_afterwards() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("bookings").await;

    // 300 expired bookings cancelled one per chunk: a run long enough to be watched live, with
    // many progress events.
    app.ticketing_exec(
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'); \
         INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, status) VALUES \
           (10, 'Big Show', now() + interval '10 days', 1000, 700, 'upcoming'); \
         INSERT INTO bookings (user_id, event_id, quantity, total_amount, status, created_at) \
           SELECT 1, 10, 1, 1000, 'pending', now() - interval '30 minutes' FROM generate_series(1, 300);",
    )
    .await;

    let run = app
        .try_trigger(
            CANCEL_EXPIRED,
            "",
            Some(serde_json::json!({ "batch_size": 1 })),
        )
        .await
        .expect("TriggerJob");
    let live_from_start = !run.state().is_terminal();
    let live = app.watch(&run.id, 0, secs(120)).await;
    let done = app.get_run(&run.id).await;
    assert_eq!(done.state(), RunState::Succeeded, "{done:#?}");
    assert_eq!(
        summary_count(&done, "cancelled"),
        Some(300),
        "summary {}",
        summary(&done)
    );
    assert!(
        live_from_start,
        "the run ended before TriggerJob returned: {run:?}"
    );

    // Order and shape.
    assert!(!live.is_empty(), "WatchRun gave no events");
    for (i, e) in live.iter().enumerate() {
        assert_eq!(
            e.seq,
            i as u64 + 1,
            "seq must run 1, 2, 3... without gaps: {:?}",
            seqs(&live)
        );
        assert_eq!(e.run_id, run.id);
        assert!(e.time.is_some(), "event {} without time", e.seq);
    }
    let times: Vec<_> = live
        .iter()
        .filter_map(|e| e.time.as_ref().and_then(from_timestamp))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "event times go backwards"
    );
    let first = state_of(&live[0]);
    assert!(
        matches!(first, Some(RunState::Queued | RunState::Running)),
        "first event must be a state change to QUEUED or RUNNING: {:?}",
        live[0]
    );
    let last = state_of(live.last().unwrap());
    assert_eq!(
        last,
        Some(RunState::Succeeded),
        "the live stream must end with the terminal state; got {}",
        describe_events(&live)
    );
    let progress: Vec<_> = live
        .iter()
        .filter_map(|e| match &e.kind {
            Some(EventKind::Progress(p)) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(
        progress.len() >= 10,
        "expected a progress event per chunk of 1 (params.batch_size = 1), got {progress:?}; \
         run: {done:#?}"
    );
    assert!(
        progress.windows(2).all(|w| w[0].done <= w[1].done),
        "progress.done goes backwards"
    );
    assert_eq!(
        progress.last().unwrap().done,
        300,
        "last progress: {:?}",
        progress.last()
    );
    let states: Vec<_> = live.iter().filter_map(state_of).collect();
    let first_progress = live
        .iter()
        .position(|e| matches!(e.kind, Some(EventKind::Progress(_))))
        .unwrap();
    let running = live
        .iter()
        .position(|e| state_of(e) == Some(RunState::Running))
        .expect("a RUNNING state event");
    assert!(
        running < first_progress,
        "progress before RUNNING: {:?}",
        &live[..=first_progress]
    );
    assert_eq!(
        states.iter().filter(|s| s.is_terminal()).count(),
        1,
        "exactly one terminal state event: {states:?}"
    );

    // Replay after the end: the same events.
    let replay = app.watch(&run.id, 0, secs(30)).await;
    assert_eq!(
        replay, live,
        "WatchRun(after_seq = 0) after the end differs from the live stream"
    );

    // Resuming after k returns exactly the events after k.
    let n = live.len() as u64;
    for k in [1, n / 2, n - 1, n] {
        let tail = app.watch(&run.id, k, secs(30)).await;
        assert_eq!(
            tail.as_slice(),
            &live[k as usize..],
            "WatchRun(after_seq = {k})"
        );
    }
}

#[tokio::test]
async fn watch_run_joined_mid_run_replays_then_follows_to_the_end() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("bookings").await;
    app.ticketing_exec(
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'); \
         INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, status) VALUES \
           (10, 'Big Show', now() + interval '10 days', 1000, 600, 'upcoming'); \
         INSERT INTO bookings (user_id, event_id, quantity, total_amount, status, created_at) \
           SELECT 1, 10, 1, 1000, 'pending', now() - interval '30 minutes' FROM generate_series(1, 400);",
    )
    .await;
    let run = app
        .try_trigger(
            CANCEL_EXPIRED,
            "",
            Some(serde_json::json!({ "batch_size": 1 })),
        )
        .await
        .expect("TriggerJob");

    // Join once a few progress events exist.
    let joined_at = eventually("a few progress events", secs(60), || async {
        let r = app.get_run(&run.id).await;
        let n: i64 = app
            .control_scalar(&format!(
                "SELECT count(*) FROM run_events WHERE run_id = '{}'",
                run.id
            ))
            .await;
        (n >= 5 || r.state().is_terminal()).then_some(n)
    })
    .await;
    let two = futures::join!(
        app.watch(&run.id, 0, secs(120)),
        app.watch(&run.id, 3, secs(120))
    );
    let (from0, from3) = two;
    assert!(joined_at >= 5);
    assert_eq!(
        from0.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=from0.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(from3.as_slice(), &from0[3..], "after_seq = 3 while live");
    assert_eq!(state_of(from0.last().unwrap()), Some(RunState::Succeeded));
}

fn seqs(events: &[RunEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn describe_events(events: &[RunEvent]) -> String {
    events
        .iter()
        .map(|e| match &e.kind {
            Some(EventKind::State(s)) => format!("#{} state {:?}", e.seq, s.state()),
            Some(EventKind::Progress(p)) => format!("#{} progress {}/{}", e.seq, p.done, p.total),
            Some(EventKind::Log(l)) => format!("#{} log {}: {}", e.seq, l.level, l.message),
            None => format!("#{} (empty)", e.seq),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn every_watch_stream_ends_with_the_terminal_state_event() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("bookings").await;
    app.ticketing_exec(
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'); \
         INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, status) VALUES \
           (10, 'Big Show', now() + interval '10 days', 100000, 100000, 'upcoming');",
    )
    .await;

    // The stream ends when the run ends; the terminal StateChange must be in it, every time
    // (a race between storing the outcome and storing its event would show up here).
    let mut problems = Vec::new();
    for i in 0..25 {
        app.ticketing_exec(
            "INSERT INTO bookings (user_id, event_id, quantity, total_amount, status, created_at) \
               SELECT 1, 10, 1, 1000, 'pending', now() - interval '30 minutes' \
               FROM generate_series(1, 20); \
             UPDATE events SET available_tickets = available_tickets - 20 WHERE id = 10;",
        )
        .await;
        let run = app.trigger(CANCEL_EXPIRED).await;
        let live = app.watch(&run.id, 0, secs(60)).await;
        let replay = app.watch(&run.id, 0, secs(60)).await;
        let ends_terminal = live
            .last()
            .and_then(state_of)
            .is_some_and(RunState::is_terminal);
        if !ends_terminal || live != replay {
            problems.push(format!(
                "iteration {i}, run {}: live [{}] / replay [{}]",
                run.id,
                describe_events(&live),
                describe_events(&replay)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of 25 WatchRun streams did not end with the terminal state event (or differ from \
         the replay):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
