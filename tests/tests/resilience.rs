//! Scheduling rules of `docs/scheduling.md`, proven with real processes: DST, missed ticks, overlap policies (one replica and two),
//! retries with backoff, timeouts, cancellation, executor loss and control-plane replicas that
//! are SIGKILLed or SIGTERMed. Each test is one scenario; its name says what must hold.
//!
//! A "slow run" is `booking-cleanup/cancel-expired-bookings` over hundreds or thousands of expired
//! bookings with `params = {batch_size: 1, pause_ms: 20}`: one booking per chunk and a 20 ms pause
//! between chunks (the executor's throttle), so the run takes seconds whatever the machine's
//! speed, and checks for cancellation between chunks. Scheduled ticks carry no params; when a test needs a slow run
//! occupying a job's overlap slot it is triggered manually, and the job's every-second ticks arrive
//! while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value as Json, json};
use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CANCEL_EXPIRED;
/// Cheap jobs that succeed on an empty ticketing database.
use ticketmax_e2e::jobs::CLEAN_CACHE;
use ticketmax_e2e::jobs::UPDATE_STATUSES;
const EVERY_SECOND: &str = "* * * * * *";
/// A replica picks a changed schedule up within about a second; the tick(s) before that are
/// recorded by the missed-tick sweeper (as skipped, "missed: ..."). Overlap assertions look at
/// ticks after this margin.
/// Bookings for slow runs that must also finish (after a retry) within the test's budget: at
/// most 50 per second with [`slow_params`], so at least 10 s of work.
const FINISHING: u32 = 500;

fn slow_params() -> Json {
    json!({ "batch_size": 1, "pause_ms": 20 })
}
const SETTLE: chrono::Duration = chrono::Duration::seconds(2);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn cancelled_bookings(app: &TestApp) -> i64 {
    app.ticketing_scalar("SELECT count(*) FROM bookings WHERE status = 'cancelled'")
        .await
}

/// The inventory rule of `docs/jobs.md`: available + held by pending and confirmed bookings = total, and every cancelled
/// booking got exactly one e-mail (none lost, none doubled by a retry).
async fn assert_ticketing_consistent(app: &TestApp) {
    app.assert_inventory_consistent().await;
    let cancelled = cancelled_bookings(app).await;
    let mails: i64 = app
        .ticketing_scalar("SELECT count(*) FROM email_outbox")
        .await;
    assert_eq!(
        mails, cancelled,
        "one cancellation e-mail per cancelled booking expected"
    );
}

/// Triggers the slow run and waits until it is RUNNING and has committed a few chunks.
async fn start_slow_run(app: &TestApp, api: usize) -> Run {
    let run = app
        .api_of(api)
        .trigger_job(TriggerJobRequest {
            job: CANCEL_EXPIRED.into(),
            idempotency_key: String::new(),
            params: Some(json_to_struct(&slow_params())),
        })
        .await
        .expect("TriggerJob of the slow run")
        .into_inner();
    assert_eq!(run.state(), RunState::Queued, "{run:#?}");
    let running = app
        .wait_for_run(
            &run.id,
            |r| r.state() == RunState::Running || terminal(r),
            secs(30),
        )
        .await;
    assert_eq!(
        running.state(),
        RunState::Running,
        "the slow run ended before the scenario could use it: {running:#?}"
    );
    eventually("the slow run to commit some chunks", secs(30), || async {
        (cancelled_bookings(app).await >= 5).then_some(())
    })
    .await;
    app.get_run(&run.id).await
}

async fn cancel(app: &TestApp, run_id: &str) -> Result<Run, tonic::Status> {
    app.api()
        .cancel_run(v1::CancelRunRequest {
            run_id: run_id.into(),
            reason: "e2e".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn set_overlap(app: &TestApp, job: &str, policy: v1::OverlapPolicy) -> Job {
    app.update_job(UpdateJobRequest {
        name: job.into(),
        overlap_policy: policy as i32,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|s| panic!("UpdateJob({job}, {policy:?}) failed: {s}"))
}

/// Run counts of `job` by state, from the store.
async fn counts(app: &TestApp, job: &str) -> (i64, i64) {
    let rows = app
        .control_rows(&format!(
            "SELECT count(*) FILTER (WHERE state = 'running')::bigint AS running, \
                    count(*) FILTER (WHERE state = 'queued')::bigint AS queued \
             FROM runs WHERE job = '{job}'"
        ))
        .await;
    let get = |k: &str| rows[0].get(k).and_then(Json::as_i64).unwrap_or(0);
    (get("running"), get("queued"))
}

/// Samples the store every 50 ms until `stop`: the most runs of `job` seen RUNNING at once and
/// the most seen QUEUED at once.
async fn watch_concurrency(app: &TestApp, job: &str, stop: &AtomicBool) -> (i64, i64) {
    let (mut max_running, mut max_queued) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        let (running, queued) = counts(app, job).await;
        max_running = max_running.max(running);
        max_queued = max_queued.max(queued);
        tokio::time::sleep(millis(50)).await;
    }
    (max_running, max_queued)
}

/// Pairs of runs of `job` whose [started_at, finished_at] intervals overlap.
async fn overlapping_runs(app: &TestApp, job: &str) -> Vec<Json> {
    app.control_rows(&format!(
        "SELECT a.id AS a, b.id AS b, a.trigger AS a_trigger, b.trigger AS b_trigger, \
                a.started_at::text AS a_start, a.finished_at::text AS a_end, \
                b.started_at::text AS b_start, b.finished_at::text AS b_end \
         FROM runs a JOIN runs b ON a.job = b.job AND a.id < b.id \
         WHERE a.job = '{job}' AND a.started_at IS NOT NULL AND b.started_at IS NOT NULL \
           AND a.started_at < COALESCE(b.finished_at, now()) \
           AND b.started_at < COALESCE(a.finished_at, now())"
    ))
    .await
}

/// Schedule runs of `job` with `scheduled_for > after`.
fn ticks_after(runs: &[Run], after: DateTime<Utc>) -> Vec<Run> {
    runs.iter()
        .filter(|r| scheduled_for(r).is_some_and(|t| t > after))
        .cloned()
        .collect()
}

/// From the store: seconds between the first and the last recorded tick of `job` that have no
/// row, and ticks that have more than one.
async fn holes_and_doubles(app: &TestApp, job: &str) -> (Vec<Json>, Vec<Json>) {
    let holes = app
        .control_rows(&format!(
            "WITH b AS (SELECT min(tick_at) AS lo, max(tick_at) AS hi FROM runs \
                        WHERE job = '{job}' AND trigger = 'schedule') \
             SELECT s::text AS tick FROM b, generate_series(b.lo, b.hi, interval '1 second') s \
             WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = '{job}' AND r.tick_at = s)"
        ))
        .await;
    let doubles = app
        .control_rows(&format!(
            "SELECT scheduled_for::text AS tick, count(*)::bigint AS n FROM runs \
             WHERE job = '{job}' AND trigger = 'schedule' GROUP BY scheduled_for HAVING count(*) > 1"
        ))
        .await;
    (holes, doubles)
}

async fn assert_no_hole_no_double(app: &TestApp, job: &str) {
    let (holes, doubles) = holes_and_doubles(app, job).await;
    assert!(holes.is_empty(), "{job}: ticks without a row: {holes:?}");
    assert!(
        doubles.is_empty(),
        "{job}: ticks recorded twice: {doubles:?}"
    );
}

/// State changes of a run as (state, attempt, message, time).
fn state_changes(events: &[RunEvent]) -> Vec<(RunState, u32, String, DateTime<Utc>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(EventKind::State(s)) => Some((
                s.state(),
                s.attempt,
                s.message.clone(),
                e.time
                    .as_ref()
                    .and_then(from_timestamp)
                    .expect("event time"),
            )),
            _ => None,
        })
        .collect()
}

fn describe_states(changes: &[(RunState, u32, String, DateTime<Utc>)]) -> String {
    changes
        .iter()
        .map(|(s, a, m, t)| format!("{} {s:?} #{a} {m}", t.format("%H:%M:%S%.3f")))
        .collect::<Vec<_>>()
        .join("\n  ")
}

// ---------------------------------------------------------------------------------------------
// 1. DST
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_0230_berlin_schedule_gets_a_next_fire_time_at_0230_berlin_wall_clock() {
    let app = TestApp::spawn().await;
    let before = Utc::now();
    let job = app
        .update_job(UpdateJobRequest {
            name: CLEAN_CACHE.into(),
            schedule: Some("30 2 * * *".into()),
            timezone: Some("Europe/Berlin".into()),
            ..Default::default()
        })
        .await
        .expect("UpdateJob 30 2 * * * Europe/Berlin");
    assert_eq!(job.timezone, "Europe/Berlin");
    let next = job
        .next_fire_time
        .as_ref()
        .and_then(from_timestamp)
        .unwrap_or_else(|| panic!("no next_fire_time: {job:#?}"));
    assert!(next > before, "next fire time {next} is not in the future");
    assert!(
        next - before <= chrono::Duration::hours(25),
        "next fire time {next} is more than a day away"
    );
    assert_eq!(next.timestamp_subsec_nanos(), 0, "{next}");
    let local = next.with_timezone(&chrono_tz::Europe::Berlin);
    // 02:30 Berlin wall clock; on a spring-forward day 02:30 does not exist and the run happens
    // once, at 03:30 (CEST), the instant the gap ends plus 30 minutes.
    assert!(
        (local.hour(), local.minute()) == (2, 30) || (local.hour(), local.minute()) == (3, 30),
        "next fire time {next} is {local} in Berlin, not 02:30"
    );
    // GetJob agrees, and the 6-field form with seconds first means the same instant.
    assert_eq!(
        app.get_job(CLEAN_CACHE).await.next_fire_time,
        job.next_fire_time
    );
    let six = app.set_schedule(CLEAN_CACHE, "0 30 2 * * *").await;
    assert_eq!(
        six.next_fire_time, job.next_fire_time,
        "6-field form differs"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Missed ticks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ticks_missed_while_the_only_control_plane_is_down_run_once_or_are_skipped_per_job() {
    let mut app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    // ALLOW, so that a run cut off by the kill (still RUNNING until its lease expires) cannot
    // turn the catch-up run into an overlap skip: this test is about the missed-tick policy.
    for (job, policy) in [
        (CLEAN_CACHE, v1::MissedTickPolicy::RunOnce),
        (UPDATE_STATUSES, v1::MissedTickPolicy::Skip),
    ] {
        app.update_job(UpdateJobRequest {
            name: job.into(),
            missed_tick_policy: policy as i32,
            overlap_policy: v1::OverlapPolicy::Allow as i32,
            catch_up_window_seconds: Some(3600),
            ..Default::default()
        })
        .await
        .expect("UpdateJob missed-tick policy");
    }
    let set_at = Utc::now();
    app.set_schedule(CLEAN_CACHE, EVERY_SECOND).await;
    app.set_schedule(UPDATE_STATUSES, EVERY_SECOND).await;
    app.wait_for_ticks(CLEAN_CACHE, set_at, 2, secs(15)).await;
    app.wait_for_ticks(UPDATE_STATUSES, set_at, 2, secs(15))
        .await;

    app.cp().kill().await;
    let last_before = |job: &'static str| {
        let app = &app;
        async move {
            let t: Option<DateTime<Utc>> = app
                .control_scalar(&format!(
                    "SELECT max(tick_at) FROM runs WHERE job = '{job}'"
                ))
                .await;
            t.expect("ticks before the kill")
        }
    };
    let cache_last = last_before(CLEAN_CACHE).await;
    let statuses_last = last_before(UPDATE_STATUSES).await;
    tokio::time::sleep(secs(5)).await;
    let restart_begin = Utc::now();
    app.cp().start().await;

    app.wait_for_ticks(CLEAN_CACHE, restart_begin, 3, secs(20))
        .await;
    app.wait_for_ticks(UPDATE_STATUSES, restart_begin, 3, secs(20))
        .await;
    app.pause(CLEAN_CACHE).await;
    app.pause(UPDATE_STATUSES).await;
    app.wait_until_all_runs_end(CLEAN_CACHE, secs(40)).await;
    app.wait_until_all_runs_end(UPDATE_STATUSES, secs(40)).await;

    for (job, last, run_once) in [
        (CLEAN_CACHE, cache_last, true),
        (UPDATE_STATUSES, statuses_last, false),
    ] {
        let ticks = app.schedule_runs(job).await;
        // Every second between the first and the last tick has exactly one row.
        assert_ticks(&ticks, true);
        assert_no_hole_no_double(&app, job).await;
        // The ticks that fell while no control plane ran: after the last one recorded before
        // the kill, up to the moment the restarted one fired its first tick on time (its
        // start-up is part of the outage). Every one of them was recorded late, by the sweep.
        let missed: Vec<Run> = ticks_after(&ticks, last)
            .into_iter()
            .filter(|r| {
                let tick = scheduled_for(r).unwrap();
                let created = r.created_at.as_ref().and_then(from_timestamp).unwrap();
                tick <= restart_begin || created - tick > chrono::Duration::milliseconds(900)
            })
            .collect();
        assert!(
            missed.len() >= 3,
            "{job}: expected the ~5 s of downtime to hold at least 3 ticks: {}",
            describe_ticks(&ticks)
        );
        let ran: Vec<&Run> = missed
            .iter()
            .filter(|r| r.state() != RunState::Skipped)
            .collect();
        let skipped: Vec<&Run> = missed
            .iter()
            .filter(|r| r.state() == RunState::Skipped)
            .collect();
        for r in &skipped {
            assert!(
                r.reason.contains("missed"),
                "{job}: skipped missed tick without a reason saying so: {r:#?}"
            );
        }
        if run_once {
            assert_eq!(
                ran.len(),
                1,
                "{job} (run once): exactly one missed tick must run; missed: {}",
                describe_ticks(&missed)
            );
            assert_eq!(ran[0].state(), RunState::Succeeded, "{:#?}", ran[0]);
        } else {
            assert!(
                ran.is_empty(),
                "{job} (skip): no missed tick may run: {}",
                describe_ticks(&missed)
            );
            for r in &skipped {
                assert!(
                    r.reason.contains("skip"),
                    "{job}: reason should name the skip policy: {r:#?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Overlap
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn overlap_skip_records_ticks_and_manual_triggers_behind_an_active_run_as_skipped() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(3000).await;
    let job = set_overlap(&app, CANCEL_EXPIRED, v1::OverlapPolicy::Skip).await;
    assert_eq!(job.overlap_policy(), v1::OverlapPolicy::Skip);

    let stop = AtomicBool::new(false);
    let scenario = async {
        let slow = start_slow_run(&app, 0).await;
        let set_at = Utc::now();
        app.set_schedule(CANCEL_EXPIRED, EVERY_SECOND).await;
        let runs = app
            .wait_for_ticks(CANCEL_EXPIRED, set_at + SETTLE, 4, secs(15))
            .await;
        // A manual trigger obeys the policy too.
        let manual = app.trigger(CANCEL_EXPIRED).await;
        let still = app.get_run(&slow.id).await;
        assert_eq!(
            still.state(),
            RunState::Running,
            "the slow run ended too early"
        );
        // Stop the slow run; the next tick runs normally.
        cancel(&app, &slow.id).await.expect("CancelRun");
        let slow_done = app.wait_for_run(&slow.id, terminal, secs(30)).await;
        let freed_at = Utc::now();
        app.wait_for_ticks(
            CANCEL_EXPIRED,
            freed_at + chrono::Duration::seconds(1),
            2,
            secs(15),
        )
        .await;
        app.pause(CANCEL_EXPIRED).await;
        app.wait_until_all_runs_end(CANCEL_EXPIRED, secs(30)).await;
        stop.store(true, Ordering::SeqCst);
        (slow, slow_done, runs, manual, set_at, freed_at)
    };
    let ((slow, slow_done, _, manual, set_at, freed_at), (max_running, _)) =
        futures::join!(scenario, watch_concurrency(&app, CANCEL_EXPIRED, &stop));

    assert_eq!(
        manual.state(),
        RunState::Skipped,
        "TriggerJob while a run is active: {manual:#?}"
    );
    assert!(
        manual.reason.contains(&slow.id),
        "the skip reason must name the active run {}: {:?}",
        slow.id,
        manual.reason
    );
    let ticks = app.schedule_runs(CANCEL_EXPIRED).await;
    assert_ticks(&ticks, true);
    let slow_end = slow_done
        .finished_at
        .as_ref()
        .and_then(from_timestamp)
        .unwrap();
    let behind: Vec<Run> = ticks_after(&ticks, set_at + SETTLE)
        .into_iter()
        .filter(|r| scheduled_for(r).unwrap() + chrono::Duration::seconds(1) < slow_end)
        .collect();
    assert!(behind.len() >= 3, "{}", describe_ticks(&ticks));
    for r in &behind {
        assert_eq!(
            r.state(),
            RunState::Skipped,
            "tick while {} ran: {}",
            slow.id,
            describe_ticks(&ticks)
        );
        assert!(
            r.reason.contains(&slow.id),
            "skip reason must name the active run {}: {r:#?}",
            slow.id
        );
    }
    let after: Vec<&Run> = ticks
        .iter()
        .filter(|r| scheduled_for(r).unwrap() > freed_at + chrono::Duration::seconds(1))
        .collect();
    assert!(
        after.iter().any(|r| r.state() == RunState::Succeeded),
        "no tick ran after the slot was freed: {}",
        describe_ticks(&ticks)
    );
    assert!(max_running <= 1, "{max_running} runs RUNNING at once");
    let overlaps = overlapping_runs(&app, CANCEL_EXPIRED).await;
    assert!(overlaps.is_empty(), "runs overlapped: {overlaps:#?}");
    assert_ticketing_consistent(&app).await;
}

#[tokio::test]
async fn overlap_queue_one_keeps_at_most_one_run_queued_behind_the_active_one() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(3000).await;
    set_overlap(&app, CANCEL_EXPIRED, v1::OverlapPolicy::QueueOne).await;

    let stop = AtomicBool::new(false);
    let scenario = async {
        let slow = start_slow_run(&app, 0).await;
        let set_at = Utc::now();
        app.set_schedule(CANCEL_EXPIRED, EVERY_SECOND).await;
        app.wait_for_ticks(CANCEL_EXPIRED, set_at + SETTLE, 4, secs(15))
            .await;
        let manual = app.trigger(CANCEL_EXPIRED).await;
        let while_running = app.schedule_runs(CANCEL_EXPIRED).await;
        assert_eq!(app.get_run(&slow.id).await.state(), RunState::Running);
        app.pause(CANCEL_EXPIRED).await;
        cancel(&app, &slow.id).await.expect("CancelRun");
        let slow_done = app.wait_for_run(&slow.id, terminal, secs(30)).await;
        app.wait_until_all_runs_end(CANCEL_EXPIRED, secs(30)).await;
        stop.store(true, Ordering::SeqCst);
        (slow, slow_done, manual, while_running, set_at)
    };
    let ((slow, slow_done, manual, while_running, set_at), (max_running, max_queued)) =
        futures::join!(scenario, watch_concurrency(&app, CANCEL_EXPIRED, &stop));

    assert!(max_running <= 1, "{max_running} runs RUNNING at once");
    assert!(max_queued <= 1, "{max_queued} runs QUEUED at once");
    // The first tick after the slow run started waited; the others were skipped.
    let queued: Vec<&Run> = while_running
        .iter()
        .filter(|r| r.state() == RunState::Queued)
        .collect();
    assert_eq!(queued.len(), 1, "{}", describe_ticks(&while_running));
    let skipped: Vec<&Run> = while_running
        .iter()
        .filter(|r| r.state() == RunState::Skipped)
        .filter(|r| scheduled_for(r).unwrap() > set_at + SETTLE)
        .collect();
    assert!(skipped.len() >= 3, "{}", describe_ticks(&while_running));
    for r in &skipped {
        assert!(r.reason.contains("queue_one"), "{r:#?}");
    }
    assert_eq!(manual.state(), RunState::Skipped, "{manual:#?}");
    // The queued one ran after the slow one ended, and succeeded.
    let waited = app.get_run(&queued[0].id).await;
    assert_eq!(waited.state(), RunState::Succeeded, "{waited:#?}");
    let started = waited.started_at.as_ref().and_then(from_timestamp).unwrap();
    let slow_end = slow_done
        .finished_at
        .as_ref()
        .and_then(from_timestamp)
        .unwrap();
    assert!(
        started >= slow_end,
        "queued run started {started} before {} ended {slow_end}",
        slow.id
    );
    let overlaps = overlapping_runs(&app, CANCEL_EXPIRED).await;
    assert!(overlaps.is_empty(), "runs overlapped: {overlaps:#?}");
    assert_ticks(&app.schedule_runs(CANCEL_EXPIRED).await, true);
    assert_ticketing_consistent(&app).await;
}

#[tokio::test]
async fn overlap_allow_lets_ticks_and_manual_triggers_run_alongside_an_active_run() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(3000).await;
    set_overlap(&app, CANCEL_EXPIRED, v1::OverlapPolicy::Allow).await;

    let slow = start_slow_run(&app, 0).await;
    let set_at = Utc::now();
    app.set_schedule(CANCEL_EXPIRED, EVERY_SECOND).await;
    let manual = app.trigger(CANCEL_EXPIRED).await;
    app.wait_for_ticks(CANCEL_EXPIRED, set_at, 2, secs(15))
        .await;
    app.pause(CANCEL_EXPIRED).await;
    let runs = app.wait_until_all_runs_end(CANCEL_EXPIRED, secs(60)).await;

    assert_ne!(manual.state(), RunState::Skipped, "{manual:#?}");
    // Nothing is skipped for overlap under ALLOW. (A tick that came due before the replica
    // picked the new schedule up is recorded by the sweeper as missed; see SETTLE.)
    let skipped: Vec<&Run> = runs
        .iter()
        .filter(|r| r.state() == RunState::Skipped)
        .filter(|r| {
            !(r.reason.starts_with("missed") && scheduled_for(r).unwrap() <= set_at + SETTLE)
        })
        .collect();
    assert!(skipped.is_empty(), "skipped under ALLOW: {skipped:#?}");
    let overlaps = overlapping_runs(&app, CANCEL_EXPIRED).await;
    assert!(
        overlaps
            .iter()
            .any(|o| o.get("a").and_then(Json::as_str) == Some(slow.id.as_str())),
        "no run overlapped the slow run {}: {overlaps:#?}\n{}",
        slow.id,
        describe_ticks(&runs)
    );
    for r in runs.iter().filter(|r| r.state() != RunState::Skipped) {
        assert_eq!(
            r.state(),
            RunState::Succeeded,
            "every run ends well: {r:#?}"
        );
    }
    assert_eq!(
        app.ticketing_scalar::<i64>("SELECT count(*) FROM bookings WHERE status = 'pending'")
            .await,
        0
    );
    assert_ticketing_consistent(&app).await;
}

#[tokio::test]
async fn overlap_skip_holds_across_two_control_plane_replicas() {
    let app = TestApp::builder()
        .control_planes(2)
        .executors(2)
        .spawn()
        .await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(3000).await;
    set_overlap(&app, CANCEL_EXPIRED, v1::OverlapPolicy::Skip).await;

    let stop = AtomicBool::new(false);
    let scenario = async {
        // Started through the second replica; ticks fire on both.
        let slow = start_slow_run(&app, 1).await;
        let set_at = Utc::now();
        app.set_schedule(CANCEL_EXPIRED, EVERY_SECOND).await;
        app.wait_for_ticks(CANCEL_EXPIRED, set_at + SETTLE, 4, secs(15))
            .await;
        let mut manual = Vec::new();
        for i in 0..2 {
            manual.push(
                app.api_of(i)
                    .trigger_job(TriggerJobRequest {
                        job: CANCEL_EXPIRED.into(),
                        ..Default::default()
                    })
                    .await
                    .expect("TriggerJob")
                    .into_inner(),
            );
        }
        assert_eq!(app.get_run(&slow.id).await.state(), RunState::Running);
        cancel(&app, &slow.id).await.expect("CancelRun");
        app.wait_for_run(&slow.id, terminal, secs(30)).await;
        let freed_at = Utc::now();
        app.wait_for_ticks(
            CANCEL_EXPIRED,
            freed_at + chrono::Duration::seconds(1),
            3,
            secs(15),
        )
        .await;
        app.pause(CANCEL_EXPIRED).await;
        app.wait_until_all_runs_end(CANCEL_EXPIRED, secs(30)).await;
        stop.store(true, Ordering::SeqCst);
        (slow, manual)
    };
    let ((slow, manual), (max_running, max_queued)) =
        futures::join!(scenario, watch_concurrency(&app, CANCEL_EXPIRED, &stop));

    for m in &manual {
        assert_eq!(m.state(), RunState::Skipped, "{m:#?}");
        assert!(m.reason.contains(&slow.id), "{m:#?}");
    }
    assert!(max_running <= 1, "{max_running} runs RUNNING at once");
    assert!(max_queued <= 1, "{max_queued} runs QUEUED at once");
    let overlaps = overlapping_runs(&app, CANCEL_EXPIRED).await;
    assert!(overlaps.is_empty(), "runs overlapped: {overlaps:#?}");
    let ticks = app.schedule_runs(CANCEL_EXPIRED).await;
    assert_ticks(&ticks, true);
    assert_no_hole_no_double(&app, CANCEL_EXPIRED).await;
    assert!(
        ticks
            .iter()
            .filter(|r| r.state() == RunState::Skipped)
            .count()
            >= 3,
        "{}",
        describe_ticks(&ticks)
    );
    // Both replicas dispatched or fired something: the runs were not all one replica's.
    assert_ticketing_consistent(&app).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Retries, timeouts, cancellation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_task_is_retried_with_exponential_backoff_up_to_max_retries_then_fails() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("bookings").await;
    let job = app
        .update_job(UpdateJobRequest {
            name: CANCEL_EXPIRED.into(),
            max_retries: Some(2),
            ..Default::default()
        })
        .await
        .expect("UpdateJob max_retries");
    assert_eq!(job.max_retries, 2);

    // The task's table is gone: every attempt fails with a database error, which a retry
    // could fix (a bad parameter could not, and is refused before a run exists).
    app.ticketing_exec("ALTER TABLE bookings RENAME TO bookings_away")
        .await;
    let run = app.trigger(CANCEL_EXPIRED).await;
    let done = app.wait_for_run(&run.id, terminal, secs(55)).await;
    assert_eq!(done.state(), RunState::Failed, "{done:#?}");
    assert_eq!(done.attempt, 3, "1 attempt + 2 retries: {done:#?}");
    assert!(done.error.contains("bookings"), "error: {:?}", done.error);

    let changes = state_changes(&app.watch(&run.id, 0, secs(10)).await);
    let seq: Vec<(RunState, u32)> = changes.iter().map(|(s, a, _, _)| (*s, *a)).collect();
    assert_eq!(
        seq,
        vec![
            (RunState::Queued, 1),
            (RunState::Running, 1),
            (RunState::Queued, 2),
            (RunState::Running, 2),
            (RunState::Queued, 3),
            (RunState::Running, 3),
            (RunState::Failed, 3),
        ],
        "state changes:\n  {}",
        describe_states(&changes)
    );
    // Backoff: 5 s before attempt 2, 10 s before attempt 3 (base 5 s, doubling).
    let gap = |i: usize| changes[i + 1].3 - changes[i].3;
    let first = gap(2);
    let second = gap(4);
    assert!(
        first >= chrono::Duration::milliseconds(4500)
            && second >= chrono::Duration::milliseconds(9500),
        "backoff too short: {first} then {second}\n  {}",
        describe_states(&changes)
    );
    assert!(
        second > first,
        "backoff does not grow: {first} then {second}"
    );
    for (s, _, m, _) in &changes {
        if *s == RunState::Queued && m.contains("failed") {
            assert!(m.contains("bookings"), "retry message names the error: {m}");
        }
    }
}

#[tokio::test]
async fn a_run_over_its_timeout_ends_timed_out_and_the_task_stops() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(3000).await;
    app.update_job(UpdateJobRequest {
        name: CANCEL_EXPIRED.into(),
        timeout_seconds: Some(1),
        ..Default::default()
    })
    .await
    .expect("UpdateJob timeout_seconds");

    let run = app
        .try_trigger(CANCEL_EXPIRED, "", Some(slow_params()))
        .await
        .expect("TriggerJob");
    let done = app.wait_for_run(&run.id, terminal, secs(30)).await;
    assert_eq!(done.state(), RunState::TimedOut, "{done:#?}");
    let started = done.started_at.as_ref().and_then(from_timestamp).unwrap();
    let finished = done.finished_at.as_ref().and_then(from_timestamp).unwrap();
    assert!(
        finished - started < chrono::Duration::seconds(8),
        "timed out after {} for a 1 s timeout",
        finished - started
    );
    // The task stopped on the executor: nothing more is cancelled afterwards.
    tokio::time::sleep(secs(2)).await;
    let at_end = cancelled_bookings(&app).await;
    tokio::time::sleep(secs(2)).await;
    assert_eq!(
        cancelled_bookings(&app).await,
        at_end,
        "the task kept running"
    );
    assert!(at_end < 3000, "the task ran to the end despite the timeout");
    if let Some(n) = summary_count(&done, "cancelled") {
        assert_eq!(n, at_end, "partial summary: {}", summary(&done));
    }
    assert_ticketing_consistent(&app).await;
}

#[tokio::test]
async fn cancel_run_stops_a_running_task_with_a_partial_summary_and_refuses_finished_runs() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(3000).await;
    let slow = start_slow_run(&app, 0).await;
    let resp = cancel(&app, &slow.id).await.expect("CancelRun");
    assert_eq!(resp.id, slow.id);
    let done = app.wait_for_run(&slow.id, terminal, secs(20)).await;
    assert_eq!(done.state(), RunState::Cancelled, "{done:#?}");
    assert!(
        !done.reason.is_empty(),
        "a cancelled run says why: {done:#?}"
    );
    let cancelled = cancelled_bookings(&app).await;
    assert!(cancelled > 0 && cancelled < 3000, "{cancelled} cancelled");
    assert_eq!(
        summary_count(&done, "cancelled"),
        Some(cancelled),
        "partial summary: {}",
        summary(&done)
    );
    tokio::time::sleep(secs(2)).await;
    assert_eq!(
        cancelled_bookings(&app).await,
        cancelled,
        "the task kept running"
    );
    assert_ticketing_consistent(&app).await;

    let err = cancel(&app, &slow.id)
        .await
        .expect_err("CancelRun of a finished run");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let ok = app.run_to_completion(CLEAN_CACHE).await;
    let err = cancel(&app, &ok.id)
        .await
        .expect_err("CancelRun of a succeeded run");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
}

// ---------------------------------------------------------------------------------------------
// 5. Executor loss
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_killed_executor_is_detected_within_seconds_and_its_run_finishes_on_the_other() {
    let mut app = TestApp::builder().executors(2).spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(FINISHING).await;
    let slow = start_slow_run(&app, 0).await;
    let victim = slow.executor_id.clone();
    assert_eq!(slow.attempt, 1);
    let index = app
        .executors
        .iter()
        .position(|e| e.executor_id == victim)
        .unwrap_or_else(|| panic!("run on unknown executor {victim:?}"));
    app.executors[index].kill().await;
    let killed_at = Instant::now();

    // TICKETMAX_EXECUTOR_TIMEOUT_MS is 3000 in the harness; the lease is renewed every ~1.7 s.
    let requeued = app
        .wait_for_run(&slow.id, |r| r.attempt >= 2 || terminal(r), secs(15))
        .await;
    let detected = killed_at.elapsed();
    assert!(
        detected < secs(8),
        "executor loss detected only after {detected:?}: {requeued:#?}"
    );
    assert_eq!(requeued.attempt, 2, "{requeued:#?}");
    assert!(
        requeued.error.contains(&victim) || requeued.error.contains("heartbeat"),
        "the retry records why: {requeued:#?}"
    );

    let done = app.wait_for_run(&slow.id, terminal, secs(50)).await;
    assert_eq!(done.state(), RunState::Succeeded, "{done:#?}");
    assert_eq!(done.attempt, 2, "{done:#?}");
    assert_ne!(
        done.executor_id, victim,
        "retried on the dead executor: {done:#?}"
    );
    assert!(!done.executor_id.is_empty());
    assert_eq!(
        app.ticketing_scalar::<i64>("SELECT count(*) FROM bookings WHERE status = 'pending'")
            .await,
        0
    );
    assert_ticketing_consistent(&app).await;
}

#[tokio::test]
async fn a_frozen_executor_is_superseded_and_its_late_attempt_cannot_overwrite_the_run() {
    let app = TestApp::builder().executors(2).spawn().await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(FINISHING).await;
    let slow = start_slow_run(&app, 0).await;
    let victim = slow.executor_id.clone();
    let index = app
        .executors
        .iter()
        .position(|e| e.executor_id == victim)
        .unwrap();
    let pid = app.executors[index].proc.pid().expect("executor pid") as libc::pid_t;
    // SAFETY: signals to our own live child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let frozen_at = Instant::now();
    // Only the missing heartbeats tell: TICKETMAX_EXECUTOR_TIMEOUT_MS = 3000 in the harness.
    let requeued = app
        .wait_for_run(&slow.id, |r| r.attempt >= 2 || terminal(r), secs(15))
        .await;
    let detected = frozen_at.elapsed();
    assert_eq!(requeued.attempt, 2, "{requeued:#?}");
    assert!(
        detected >= millis(1500) && detected < secs(8),
        "a silent executor must be declared lost after about 3 s, took {detected:?}"
    );
    assert!(requeued.error.contains("heartbeat"), "{requeued:#?}");
    // Attempt 2 is running elsewhere; wake attempt 1 up.
    let second = app
        .wait_for_run(
            &slow.id,
            |r| r.state() == RunState::Running || terminal(r),
            secs(15),
        )
        .await;
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let done = app.wait_for_run(&slow.id, terminal, secs(50)).await;
    assert_eq!(done.state(), RunState::Succeeded, "{done:#?}");
    assert_eq!(
        done.attempt, 2,
        "the late attempt changed the run: {done:#?}"
    );
    assert_eq!(done.executor_id, second.executor_id, "{done:#?}");
    assert_ne!(done.executor_id, victim, "{done:#?}");
    // Settled: give the woken attempt time to try to report, then check nothing changed.
    tokio::time::sleep(secs(3)).await;
    assert_eq!(
        app.get_run(&slow.id).await,
        done,
        "the run changed after it ended"
    );
    assert_ticketing_consistent(&app).await;
}

// ---------------------------------------------------------------------------------------------
// 6. Control-plane replicas
// ---------------------------------------------------------------------------------------------

async fn leader_index(app: &TestApp) -> usize {
    eventually("a leader", secs(20), || async {
        let holder: Option<String> = app
            .control_scalar(
                "SELECT max(holder) FROM leases WHERE name = 'scheduler' AND expires_at > now()",
            )
            .await;
        let holder = holder?;
        app.control_planes
            .iter()
            .position(|c| c.replica_id == holder)
    })
    .await
}

#[tokio::test]
async fn sigkill_of_either_replica_during_an_every_second_schedule_loses_no_tick_and_doubles_none()
{
    let mut app = TestApp::builder()
        .control_planes(2)
        .executors(2)
        .spawn()
        .await;
    app.silence_schedules(&[]).await;
    for job in [CLEAN_CACHE, UPDATE_STATUSES] {
        app.set_schedule(job, EVERY_SECOND).await;
    }
    let started = Utc::now();
    app.wait_for_ticks(CLEAN_CACHE, started, 3, secs(15)).await;

    // Kill the leader (the sweeper), then the other one; each comes back after 3 s.
    let leader = leader_index(&app).await;
    for victim in [leader, 1 - leader] {
        app.control_planes[victim].kill().await;
        tokio::time::sleep(secs(3)).await;
        app.control_planes[victim].start().await;
        let back = Utc::now();
        app.wait_for_ticks(CLEAN_CACHE, back, 2, secs(15)).await;
    }
    let api = app.control_planes[0].client();
    for job in [CLEAN_CACHE, UPDATE_STATUSES] {
        api.clone()
            .pause_job(PauseJobRequest { name: job.into() })
            .await
            .expect("PauseJob");
    }
    for job in [CLEAN_CACHE, UPDATE_STATUSES] {
        app.wait_until_all_runs_end(job, secs(40)).await;
        let ticks = app.schedule_runs(job).await;
        assert!(ticks.len() >= 10, "{job}: {}", describe_ticks(&ticks));
        assert_ticks(&ticks, true);
        assert_no_hole_no_double(&app, job).await;
    }
    let dups = app.duplicate_ticks_in_store().await;
    assert!(dups.is_empty(), "{dups:?}");
}

#[tokio::test]
async fn sigterm_drains_a_replica_its_run_is_handed_over_and_it_exits_0_within_the_grace() {
    let grace_ms = 3000;
    let mut app = TestApp::builder()
        .control_planes(2)
        .executors(2)
        .control_plane_env("TICKETMAX_SHUTDOWN_GRACE_MS", &grace_ms.to_string())
        .spawn()
        .await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(FINISHING).await;
    let slow = start_slow_run(&app, 0).await;
    let owner: String = app
        .control_scalar(&format!("SELECT owner FROM runs WHERE id = '{}'", slow.id))
        .await;
    let index = app
        .control_planes
        .iter()
        .position(|c| c.replica_id == owner)
        .unwrap_or_else(|| panic!("run owned by unknown replica {owner:?}"));
    let survivor = 1 - index;

    let t0 = Instant::now();
    let status = app.control_planes[index]
        .proc
        .terminate_within(millis(grace_ms) + secs(7))
        .await;
    let took = t0.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{owner} did not exit 0 after SIGTERM within the grace + 7 s: {status:?}\n{}",
        app.control_planes[index].proc.log_tail(30)
    );
    assert!(took < millis(grace_ms) + secs(5), "drain took {took:?}");

    // The run was finished or handed over, not failed; the survivor completes it.
    let survivor_api = app.control_planes[survivor].client();
    let done = eventually("the run to end", secs(50), || {
        let mut api = survivor_api.clone();
        let id = slow.id.clone();
        async move {
            let r = api
                .get_run(GetRunRequest { run_id: id })
                .await
                .ok()?
                .into_inner();
            terminal(&r).then_some(r)
        }
    })
    .await;
    assert_eq!(done.state(), RunState::Succeeded, "{done:#?}");
    if done.attempt > 1 {
        let new_owner: String = app
            .control_scalar(&format!(
                "SELECT COALESCE(owner, '') FROM runs WHERE id = '{}'",
                slow.id
            ))
            .await;
        assert_ne!(new_owner, owner, "handed over to the replica that left");
    }
    assert_eq!(
        app.ticketing_scalar::<i64>("SELECT count(*) FROM bookings WHERE status = 'pending'")
            .await,
        0
    );
    assert_ticketing_consistent(&app).await;
}
