//! Declared task parameters: what each task registers with the control plane is all it
//! accepts and all it can read, with the declared bounds enforced here too (a `RunJob` may
//! come from somewhere other than a control plane that checked it).
mod common;

use common::databases;
use serde_json::json;
use ticketmax_executor::tasks::{ParamKind, TaskError};

const CANCEL_EXPIRED: &str = "booking-cleanup/cancel-expired-bookings";
const DAILY_REPORT: &str = "booking-cleanup/generate-daily-report";

#[test]
fn every_task_declares_its_reference_time_and_bounded_integers() {
    let registry = ticketmax_executor::jobs::registry();
    let specs = registry.specs();
    assert_eq!(specs.len(), registry.names().len());
    for spec in &specs {
        let task = registry.get(&spec.job).expect("task of its own spec");
        assert!(
            task.params()
                .iter()
                .any(|p| p.name == "as_of" && p.kind == ParamKind::Timestamp),
            "{} does not declare as_of",
            spec.job
        );
        for p in task.params() {
            if p.kind == ParamKind::Integer {
                assert!(
                    p.min.is_some() && p.max.is_some(),
                    "{}: {} is unbounded",
                    spec.job,
                    p.name
                );
            }
        }
        assert_eq!(spec.params.len(), task.params().len(), "{}", spec.job);
    }
    // Chunked jobs take a chunk size; one-pass jobs do not pretend to.
    let names = |job: &str| -> Vec<&'static str> {
        registry
            .get(job)
            .map(|t| t.params().iter().map(|p| p.name).collect())
            .unwrap_or_default()
    };
    assert_eq!(names(CANCEL_EXPIRED), ["as_of", "batch_size", "pause_ms"]);
    assert_eq!(names(DAILY_REPORT), ["as_of"]);
}

#[tokio::test]
async fn undeclared_or_out_of_bound_parameters_fail_permanently_and_change_nothing() {
    let now = common::at("2026-03-01T09:30:00Z");
    for t in databases().await {
        t.exec(
            "INSERT INTO users (id, email, first_name, email_verified) \
             VALUES (1, 'ada@example.com', 'Ada', TRUE)",
        )
        .await;
        t.exec_with(
            "INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, price) \
             VALUES (1, 'Afrobeats Night', $1, 10, 8, 1000)",
            vec![(now + chrono::Duration::days(20)).into()],
        )
        .await;
        t.exec_with(
            "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) \
             VALUES (1, 1, 1, 2, 2000, 'pending', $1)",
            vec![(now - chrono::Duration::minutes(30)).into()],
        )
        .await;
        t.assert_inventory().await;
        let status = || t.text("SELECT status FROM bookings WHERE id = 1");
        for (job, params, name) in [
            (
                CANCEL_EXPIRED,
                json!({"drop_everything": true}),
                "drop_everything",
            ),
            (CANCEL_EXPIRED, json!({"batch_size": 0}), "batch_size"),
            (CANCEL_EXPIRED, json!({"batch_size": 10_001}), "batch_size"),
            (CANCEL_EXPIRED, json!({"pause_ms": 60_001}), "pause_ms"),
            (CANCEL_EXPIRED, json!({"batch_size": "lots"}), "batch_size"),
            (DAILY_REPORT, json!({"batch_size": 10}), "batch_size"),
        ] {
            let r = t.run(job, now, params.clone()).await;
            match &r {
                Err(e @ TaskError::InvalidParam { name: n, .. }) => {
                    assert_eq!(n, name, "{}: {job} {params}: {e}", t.name);
                    assert!(e.is_permanent(), "{e}");
                }
                other => panic!("{}: {job} with {params}: {other:?}", t.name),
            }
            assert_eq!(
                status().await.as_deref(),
                Some("pending"),
                "{}: {job} with {params} changed a booking",
                t.name
            );
        }
        // The same job with what it declares does its work.
        t.run(CANCEL_EXPIRED, now, json!({"batch_size": 1, "pause_ms": 0}))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(status().await.as_deref(), Some("cancelled"), "{}", t.name);
        t.assert_inventory().await;
    }
}
