//! Every task of `docs/jobs.md` runs on seeded demo data, on SQLite and Postgres, keeps the ticket
//! invariant, and queues no e-mail the second time.
mod common;

use common::databases;
use serde_json::json;
use ticketmax_executor::config::SeedArgs;

#[tokio::test]
async fn all_32_jobs_run_twice_on_demo_data() {
    let names = ticketmax_executor::jobs::registry().names();
    assert_eq!(names.len(), 32, "{names:?}");
    for t in databases().await {
        let args = SeedArgs {
            users: 120,
            events: 24,
            bookings: 600,
            seed: 7,
            force: false,
        };
        // Demo data around a fixed reference time, never the wall clock.
        let now = common::at("2026-12-01T00:30:00Z");
        ticketmax_executor::seed::run_at(&t.db, &t.dirs, &args, now)
            .await
            .expect("seed");
        t.assert_inventory().await;
        let registry = ticketmax_executor::jobs::registry();
        for name in &names {
            // Small chunks where the task works in chunks; a task refuses what it does not take.
            let chunked = registry
                .get(name)
                .is_some_and(|task| task.params().iter().any(|p| p.name == "batch_size"));
            let params = if chunked {
                json!({"batch_size": 50})
            } else {
                json!({})
            };
            let first = t
                .run(name, now, params)
                .await
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", t.name));
            t.assert_inventory().await;
            let second = t
                .run(name, now, json!({}))
                .await
                .unwrap_or_else(|e| panic!("{}: {name} (second run): {e}", t.name));
            t.assert_inventory().await;
            eprintln!(
                "{} {name}: {:?}",
                t.name,
                serde_json::Value::Object(first.summary.clone())
            );
            let queued = second
                .summary
                .get("emails_queued")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            assert_eq!(
                queued, 0,
                "{}: {name} queued e-mails twice: {:?}",
                t.name, second.summary
            );
            for key in [
                "cancelled",
                "abandoned",
                "failed",
                "bookings_cancelled",
                "processed",
                "archived",
                "deleted",
                "reminders_sent",
                "follow_ups_sent",
                "confirmations_sent",
                "reengagement_sent",
                "files_deleted",
            ] {
                if let Some(n) = second.summary.get(key).and_then(|v| v.as_u64()) {
                    assert_eq!(
                        n, 0,
                        "{}: {name} second run changed {key}: {:?}",
                        t.name, second.summary
                    );
                }
            }
        }
    }
}
