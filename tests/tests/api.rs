//! The public JobService API: catalogue, status, bad input, idempotency, listing.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::Utc;
use ticketmax_e2e::schedule::{JOB_TABLE, next_fires, same_schedule};
use ticketmax_e2e::*;
use tonic::Code;

use ticketmax_e2e::jobs::ABANDONED_PAYMENTS as ABANDONED;
use ticketmax_e2e::jobs::CANCEL_EXPIRED;

#[tokio::test]
async fn list_jobs_has_every_spec_job_with_the_seed_default_schedule() {
    let app = TestApp::spawn().await;

    let jobs = app.list_jobs().await;
    let by_name: BTreeMap<&str, &Job> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    assert_eq!(by_name.len(), jobs.len(), "ListJobs lists a job twice");

    let mut problems = Vec::new();
    for (name, expected) in JOB_TABLE {
        let Some(job) = by_name.get(name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        if !same_schedule(&job.schedule, expected) {
            problems.push(format!(
                "{name}: schedule {:?}, expected {expected:?}",
                job.schedule
            ));
        }
        if !job.default_schedule.is_empty() && !same_schedule(&job.default_schedule, expected) {
            problems.push(format!(
                "{name}: default_schedule {:?}, expected {expected:?}",
                job.default_schedule
            ));
        }
        let (service, task) = name.split_once('/').unwrap();
        if job.service != service {
            problems.push(format!("{name}: service {:?}", job.service));
        }
        if !job.task.is_empty() && job.task != task {
            problems.push(format!("{name}: task {:?}", job.task));
        }
        if !job.enabled {
            problems.push(format!("{name}: not enabled by default"));
        }
        if job.timezone != "UTC" {
            problems.push(format!(
                "{name}: timezone {:?}, expected UTC (default)",
                job.timezone
            ));
        }
        match job.next_fire_time.as_ref().and_then(from_timestamp) {
            None => problems.push(format!("{name}: no next_fire_time")),
            Some(next) => {
                let expected_next =
                    next_fires(expected, Utc::now() - chrono::Duration::seconds(5), 1).unwrap()[0];
                let later = next_fires(expected, Utc::now(), 1).unwrap()[0];
                if next != expected_next && next != later {
                    problems.push(format!(
                        "{name}: next_fire_time {next}, expected {expected_next} or {later}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "ListJobs disagrees with the catalog of docs/jobs.md:\n{}",
        problems.join("\n")
    );

    // ListJobs(service) filters.
    let booking = app
        .api()
        .list_jobs(ListJobsRequest {
            service: "booking-cleanup".into(),
        })
        .await
        .expect("ListJobs(service)")
        .into_inner()
        .jobs;
    let names: BTreeSet<_> = booking.iter().map(|j| j.name.as_str()).collect();
    let expected: BTreeSet<_> = JOB_TABLE
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with("booking-cleanup/"))
        .collect();
    assert_eq!(names, expected, "ListJobs(service = booking-cleanup)");

    // GetJob agrees with ListJobs.
    let job = app.get_job(CANCEL_EXPIRED).await;
    assert_eq!(job.name, CANCEL_EXPIRED);
    assert!(
        same_schedule(&job.schedule, "*/5 * * * *"),
        "GetJob schedule {:?}",
        job.schedule
    );
}

#[tokio::test]
async fn get_status_is_active_lists_jobs_and_the_live_executor() {
    let app = TestApp::spawn().await;

    let status = app.status().await;
    assert_eq!(status.status, "active", "GetStatus.status");
    assert_eq!(
        status.replica_id, "cp-1",
        "GetStatus.replica_id (TICKETMAX_REPLICA_ID)"
    );
    assert!(status.now.is_some(), "GetStatus.now");

    let names: HashSet<_> = status.jobs.iter().map(|j| j.name.as_str()).collect();
    for (name, _) in JOB_TABLE {
        assert!(names.contains(name), "GetStatus.jobs lacks {name}");
    }
    for job in &status.jobs {
        if job.enabled {
            assert!(
                job.next_fire_time.is_some(),
                "{}: enabled job without next_fire_time",
                job.name
            );
        }
    }

    let ex = status
        .executors
        .iter()
        .find(|e| e.id == "ex-1")
        .unwrap_or_else(|| panic!("GetStatus.executors lacks ex-1: {:?}", status.executors));
    assert!(ex.live, "ex-1 is not live: {ex:?}");
    assert!(!ex.address.is_empty(), "ex-1 has no address: {ex:?}");
    let ex_jobs: HashSet<_> = ex.jobs.iter().map(String::as_str).collect();
    for (name, _) in JOB_TABLE {
        assert!(
            ex_jobs.contains(name),
            "executor ex-1 does not offer {name}: {:?}",
            ex.jobs
        );
    }

    // A single replica becomes the leader.
    let role = eventually("the only replica to become leader", secs(15), || async {
        let s = app.status().await;
        (s.role == "leader").then_some(s.role)
    })
    .await;
    assert_eq!(role, "leader");
}

#[tokio::test]
async fn bad_cron_is_invalid_argument_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let before = app.get_job(CANCEL_EXPIRED).await;

    for bad in [
        "not a cron",
        "61 * * * *",
        "* * * *",
        "0 25 * * *",
        "*/0 * * * *",
        "EVERY_FORTNIGHT",
    ] {
        let err = app
            .try_set_schedule(CANCEL_EXPIRED, bad)
            .await
            .expect_err(&format!("UpdateJob(schedule = {bad:?}) must fail"));
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "UpdateJob(schedule = {bad:?}): {err}"
        );
        assert!(
            !err.message().is_empty(),
            "INVALID_ARGUMENT without a message for {bad:?}"
        );
        let after = app.get_job(CANCEL_EXPIRED).await;
        assert_eq!(
            after.schedule, before.schedule,
            "schedule changed by rejected {bad:?}"
        );
        assert_eq!(after.timezone, before.timezone);
        assert_eq!(after.enabled, before.enabled);
        assert_eq!(
            after.updated_at, before.updated_at,
            "updated_at changed by rejected {bad:?}"
        );
    }
}

#[tokio::test]
async fn bad_timezone_is_invalid_argument_and_a_good_one_moves_next_fire_time() {
    let app = TestApp::spawn().await;
    let job = "event-management/send-event-reminders"; // daily 09:00
    let before = app.get_job(job).await;

    for bad in ["Mars/Olympus_Mons", "UTC+25", "not a timezone"] {
        let err = app
            .update_job(UpdateJobRequest {
                name: job.into(),
                timezone: Some(bad.into()),
                ..Default::default()
            })
            .await
            .expect_err(&format!("UpdateJob(timezone = {bad:?}) must fail"));
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "UpdateJob(timezone = {bad:?}): {err}"
        );
        let after = app.get_job(job).await;
        assert_eq!(
            after.timezone, before.timezone,
            "timezone changed by rejected {bad:?}"
        );
        assert_eq!(after.schedule, before.schedule);
    }

    // A valid schedule and timezone together: next_fire_time is computed in that zone.
    let updated = app
        .update_job(UpdateJobRequest {
            name: job.into(),
            schedule: Some("30 2 * * *".into()),
            timezone: Some("Asia/Kolkata".into()),
            ..Default::default()
        })
        .await
        .expect("UpdateJob(schedule, timezone)");
    assert_eq!(updated.schedule, "30 2 * * *");
    assert_eq!(updated.timezone, "Asia/Kolkata");
    let now = Utc::now().with_timezone(&chrono_tz::Asia::Kolkata);
    let expected = next_fires("30 2 * * *", now, 1).unwrap()[0];
    let next = updated.next_fire_time.as_ref().and_then(from_timestamp);
    assert_eq!(
        next,
        Some(expected),
        "next fire of 02:30 Asia/Kolkata (21:00 UTC)"
    );
    assert_eq!(expected.format("%H:%M").to_string(), "21:00");
    assert_eq!(app.get_job(job).await.timezone, "Asia/Kolkata");
}

#[tokio::test]
async fn unknown_job_is_not_found_everywhere() {
    let app = TestApp::spawn().await;
    let nope = "booking-cleanup/no-such-job";
    let mut api = app.api();

    let err = api
        .get_job(GetJobRequest { name: nope.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "GetJob: {err}");
    let err = app.try_trigger(nope, "", None).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "TriggerJob: {err}");
    let err = api
        .pause_job(PauseJobRequest { name: nope.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "PauseJob: {err}");
    let err = api
        .resume_job(ResumeJobRequest { name: nope.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "ResumeJob: {err}");
    let err = app.try_set_schedule(nope, "*/5 * * * *").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "UpdateJob: {err}");

    // Nothing was created by the failed trigger.
    let runs = app.list_all_runs("", RunState::Unspecified, 500).await;
    assert!(
        runs.iter().all(|r| r.job != nope),
        "a run of an unknown job exists: {runs:?}"
    );
}

#[tokio::test]
async fn unknown_run_is_not_found() {
    let app = TestApp::spawn().await;
    let mut api = app.api();
    for id in [
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::now_v7().to_string(),
    ] {
        let err = app.try_get_run(&id).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "GetRun({id}): {err}");

        let err = api
            .cancel_run(v1::CancelRunRequest {
                run_id: id.clone(),
                reason: "test".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "CancelRun({id}): {err}");

        // WatchRun may fail at the call or as the first stream item.
        let code = match api
            .watch_run(WatchRunRequest {
                run_id: id.clone(),
                after_seq: 0,
            })
            .await
        {
            Err(s) => s.code(),
            Ok(resp) => {
                let mut stream = resp.into_inner();
                match tokio::time::timeout(secs(10), futures::StreamExt::next(&mut stream)).await {
                    Ok(Some(Err(s))) => s.code(),
                    other => panic!("WatchRun({id}) of an unknown run gave {other:?}"),
                }
            }
        };
        assert_eq!(code, Code::NotFound, "WatchRun({id})");
    }
}

#[tokio::test]
async fn trigger_with_the_same_idempotency_key_returns_the_same_run() {
    let app = TestApp::spawn().await;
    let key = format!("e2e-{}", uuid::Uuid::new_v4());

    let first = app
        .try_trigger(CANCEL_EXPIRED, &key, None)
        .await
        .expect("TriggerJob");
    assert!(!first.id.is_empty());
    assert_eq!(first.job, CANCEL_EXPIRED);
    assert_eq!(first.trigger(), Trigger::Manual);
    assert_eq!(first.idempotency_key, key);

    let again = app
        .try_trigger(CANCEL_EXPIRED, &key, None)
        .await
        .expect("TriggerJob again");
    assert_eq!(again.id, first.id, "same idempotency key, different run");

    let done = app.wait_for_run(&first.id, terminal, secs(60)).await;
    let after_end = app
        .try_trigger(CANCEL_EXPIRED, &key, None)
        .await
        .expect("TriggerJob after end");
    assert_eq!(
        after_end.id, first.id,
        "same key after the run ended, different run"
    );
    assert_eq!(after_end.state(), done.state());

    // The key is per job.
    let other_job = app
        .try_trigger(ABANDONED, &key, None)
        .await
        .expect("TriggerJob other job");
    assert_ne!(other_job.id, first.id, "idempotency key shared across jobs");

    let other_key = app
        .try_trigger(CANCEL_EXPIRED, &format!("{key}-2"), None)
        .await
        .expect("TriggerJob other key");
    assert_ne!(other_key.id, first.id);

    let manual: Vec<_> = app
        .runs_of(CANCEL_EXPIRED)
        .await
        .into_iter()
        .filter(|r| r.trigger() == Trigger::Manual)
        .collect();
    assert_eq!(
        manual.len(),
        2,
        "manual runs of {CANCEL_EXPIRED}: {manual:#?}"
    );
}

#[tokio::test]
async fn list_runs_filters_by_job_and_state_and_pages_without_duplicates_or_gaps() {
    let app = TestApp::spawn().await;

    // Quick successive triggers: some run, some are skipped by the overlap policy, so there are
    // several states to filter on.
    let mut ids_a = BTreeSet::new();
    for _ in 0..9 {
        ids_a.insert(app.trigger(CANCEL_EXPIRED).await.id);
    }
    let mut ids_b = BTreeSet::new();
    for _ in 0..4 {
        ids_b.insert(app.trigger(ABANDONED).await.id);
    }
    assert_eq!(
        ids_a.len(),
        9,
        "TriggerJob without a key returned a run twice"
    );
    for id in ids_a.iter().chain(&ids_b) {
        app.wait_for_run(id, terminal, secs(60)).await;
    }

    for page_size in [1, 2, 4, 50] {
        let runs = app
            .list_all_runs(CANCEL_EXPIRED, RunState::Unspecified, page_size)
            .await;
        let ids: Vec<_> = runs.iter().map(|r| r.id.clone()).collect();
        let unique: BTreeSet<_> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "page_size {page_size}: duplicates in {ids:?}"
        );
        assert!(
            runs.iter().all(|r| r.job == CANCEL_EXPIRED),
            "page_size {page_size}: other jobs"
        );
        let manual: BTreeSet<_> = runs
            .iter()
            .filter(|r| r.trigger() == Trigger::Manual)
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(
            manual, ids_a,
            "page_size {page_size}: manual runs listed != runs triggered"
        );
    }

    let runs_b = app.list_all_runs(ABANDONED, RunState::Unspecified, 3).await;
    let manual_b: BTreeSet<_> = runs_b
        .iter()
        .filter(|r| r.trigger() == Trigger::Manual)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(manual_b, ids_b);

    // Unfiltered listing holds both jobs' runs.
    let all: BTreeSet<_> = app
        .list_all_runs("", RunState::Unspecified, 5)
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(
        ids_a.is_subset(&all) && ids_b.is_subset(&all),
        "unfiltered ListRuns misses runs"
    );

    // State filter: exactly the runs whose GetRun says that state.
    let mut by_state: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for id in &ids_a {
        let run = app.get_run(id).await;
        assert!(run.state().is_terminal());
        by_state.entry(run.state).or_default().insert(run.id);
    }
    assert!(
        by_state.contains_key(&(RunState::Succeeded as i32)),
        "no run of {CANCEL_EXPIRED} succeeded: {by_state:?}"
    );
    for state in [
        RunState::Succeeded,
        RunState::Skipped,
        RunState::Failed,
        RunState::Running,
    ] {
        let listed: BTreeSet<_> = app
            .list_all_runs(CANCEL_EXPIRED, state, 2)
            .await
            .into_iter()
            .inspect(|r| {
                assert_eq!(
                    r.state(),
                    state,
                    "ListRuns(state = {state:?}) returned {r:?}"
                )
            })
            .filter(|r| r.trigger() == Trigger::Manual)
            .map(|r| r.id)
            .collect();
        let expected = by_state.get(&(state as i32)).cloned().unwrap_or_default();
        assert_eq!(listed, expected, "ListRuns(job, state = {state:?})");
    }
}

#[tokio::test]
async fn update_pause_and_resume_are_reflected_in_get_job() {
    let app = TestApp::spawn().await;
    let job = "data-cleanup/clean-cache";

    let paused = app.pause(job).await;
    assert!(!paused.enabled, "PauseJob returned enabled job");
    assert!(!app.get_job(job).await.enabled, "GetJob after PauseJob");

    let resumed = app.resume(job).await;
    assert!(resumed.enabled, "ResumeJob returned disabled job");
    assert!(
        resumed.next_fire_time.is_some(),
        "resumed job without next_fire_time"
    );

    let updated = app.set_schedule(job, "0 */4 * * * *").await;
    assert_eq!(updated.schedule, "0 */4 * * * *");
    let next = updated
        .next_fire_time
        .as_ref()
        .and_then(from_timestamp)
        .expect("next_fire_time");
    let expected = next_fires(
        "0 */4 * * * *",
        Utc::now() - chrono::Duration::seconds(2),
        1,
    )
    .unwrap()[0];
    let expected_later = next_fires("0 */4 * * * *", Utc::now(), 1).unwrap()[0];
    assert!(
        next == expected || next == expected_later,
        "next_fire_time {next} for every 4th minute, expected {expected}"
    );
    assert_eq!(app.get_job(job).await.schedule, "0 */4 * * * *");
    // Other fields are kept.
    assert!(app.get_job(job).await.enabled);
}
