//! Cron schedules fire: a 6-field every-second schedule records one run per tick; pause stops it.

use chrono::{DurationRound, Utc};
use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CLEAN_CACHE as JOB;

#[tokio::test]
async fn every_second_schedule_fires_each_tick_once_and_pause_stops_it() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;

    let set_at = Utc::now();
    let job = app.set_schedule(JOB, "* * * * * *").await;
    assert_eq!(job.schedule, "* * * * * *");
    let next = job
        .next_fire_time
        .as_ref()
        .and_then(from_timestamp)
        .expect("next_fire_time");
    assert!(
        next > set_at - chrono::Duration::seconds(1)
            && next <= set_at + chrono::Duration::seconds(2),
        "next_fire_time {next} of an every-second schedule set at {set_at}"
    );
    assert_eq!(
        next.timestamp_subsec_nanos(),
        0,
        "next_fire_time is not a whole second"
    );

    // Several ticks within ~5 s.
    let runs = app
        .wait_for_ticks(JOB, set_at - chrono::Duration::seconds(1), 4, secs(7))
        .await;
    assert_ticks(&runs, true);
    let floor = set_at.duration_trunc(chrono::Duration::seconds(1)).unwrap();
    for r in &runs {
        assert!(
            scheduled_for(r).unwrap() >= floor,
            "a tick from before the schedule was set: {}",
            describe_ticks(&runs)
        );
        assert_eq!(r.job, JOB);
    }

    // Pause: no tick after it (one already in flight at that instant is tolerated).
    let paused_at = Utc::now();
    let paused = app.pause(JOB).await;
    assert!(!paused.enabled);
    tokio::time::sleep(secs(3)).await;
    let runs = app.wait_until_all_runs_end(JOB, secs(30)).await;
    let late: Vec<_> = runs
        .iter()
        .filter(|r| r.trigger() == Trigger::Schedule)
        .filter(|r| scheduled_for(r).unwrap() > paused_at + chrono::Duration::seconds(1))
        .collect();
    assert!(
        late.is_empty(),
        "ticks after PauseJob at {paused_at}: {late:#?}"
    );

    let sched = app.schedule_runs(JOB).await;
    assert_ticks(&sched, true);
    // Each tick ran or was recorded as skipped by the overlap policy; at least one ran.
    for r in &sched {
        assert!(
            matches!(r.state(), RunState::Succeeded | RunState::Skipped),
            "tick run ended {:?}: {r:#?}",
            r.state()
        );
        if r.state() == RunState::Skipped {
            assert!(!r.reason.is_empty(), "skipped run without a reason: {r:?}");
        }
    }
    assert!(
        sched.iter().any(|r| r.state() == RunState::Succeeded),
        "no tick succeeded: {}",
        describe_ticks(&sched)
    );

    // Resume: ticks again, and the ticks that fell while paused are not caught up.
    let resumed_at = Utc::now();
    let resumed = app.resume(JOB).await;
    assert!(resumed.enabled);
    let runs = app.wait_for_ticks(JOB, resumed_at, 2, secs(7)).await;
    assert_ticks(&runs, false);
    let while_paused: Vec<_> = runs
        .iter()
        .filter(|r| {
            let t = scheduled_for(r).unwrap();
            t > paused_at + chrono::Duration::seconds(1)
                && t < resumed_at - chrono::Duration::seconds(1)
        })
        .collect();
    assert!(
        while_paused.is_empty(),
        "ticks from while the job was paused were run: {}",
        describe_ticks(&runs)
    );
    app.pause(JOB).await;
}

#[tokio::test]
async fn schedule_runs_are_listed_with_trigger_schedule_and_the_tick_as_scheduled_for() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    let set_at = Utc::now();
    app.set_schedule(JOB, "*/2 * * * * *").await;
    let runs = app.wait_for_ticks(JOB, set_at, 3, secs(10)).await;
    app.set_schedule(JOB, "0 0 1 1 *").await;
    for w in runs.windows(2) {
        let gap = scheduled_for(&w[1]).unwrap() - scheduled_for(&w[0]).unwrap();
        assert_eq!(
            gap,
            chrono::Duration::seconds(2),
            "every 2 s: {}",
            describe_ticks(&runs)
        );
    }
    for r in &runs {
        let t = scheduled_for(r).unwrap();
        assert_eq!(t.timestamp() % 2, 0, "*/2 tick at an odd second: {t}");
        assert_eq!(r.trigger(), Trigger::Schedule);
        if let Some(created) = r.created_at.as_ref().and_then(from_timestamp) {
            assert!(
                created >= t - chrono::Duration::milliseconds(1000),
                "run {} created at {created}, long before its tick {t}",
                r.id
            );
        }
    }
    // A manual run next to them is listed as manual, with scheduled_for = trigger time.
    let before = Utc::now() - chrono::Duration::seconds(1);
    let manual = app.run_to_completion(JOB).await;
    assert_eq!(manual.trigger(), Trigger::Manual);
    let t = scheduled_for(&manual).expect("manual run without scheduled_for");
    assert!(t >= before && t <= Utc::now(), "manual scheduled_for {t}");
}

/// A schedule whose first tick is due a moment after UpdateJob returns still runs that tick:
/// the replica that took the change registers it at once, and a tick it fires late anyway is
/// not taken for one missed during an outage. The job's missed-tick policy is `skip`, so a
/// first tick mistaken for a missed one would show up SKIPPED.
#[tokio::test]
async fn a_new_schedule_runs_its_first_tick_even_when_it_is_due_at_once() {
    let app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    app.update_job(UpdateJobRequest {
        name: JOB.into(),
        missed_tick_policy: v1::MissedTickPolicy::Skip as i32,
        overlap_policy: v1::OverlapPolicy::Allow as i32,
        ..Default::default()
    })
    .await
    .expect("UpdateJob policies");

    let second = chrono::Duration::seconds(1);
    let mut targets = Vec::new();
    for lead in [
        chrono::Duration::milliseconds(400),
        chrono::Duration::milliseconds(150),
    ] {
        // On a loaded machine UpdateJob itself can take longer than `lead`; such an attempt
        // says nothing (the tick is then before the change) and is made again.
        let mut attempts = 0;
        let target = loop {
            attempts += 1;
            assert!(
                attempts <= 10,
                "UpdateJob took longer than {lead} ten times; the test cannot say anything"
            );
            // The next whole second at least `lead` away; UpdateJob goes out `lead` before it,
            // with a once-a-day schedule that fires exactly then.
            let now = Utc::now();
            let mut target = (now + second).duration_trunc(second).unwrap();
            if target - now < lead + chrono::Duration::milliseconds(20) {
                target += second;
            }
            if let Ok(wait) = (target - lead - Utc::now()).to_std() {
                tokio::time::sleep(wait).await;
            }
            let schedule = format!(
                "{} {} {} * * *",
                target.format("%-S"),
                target.format("%-M"),
                target.format("%-H")
            );
            app.set_schedule(JOB, &schedule).await;
            if Utc::now() < target {
                break target;
            }
            eprintln!("UpdateJob returned after its target {target}; trying again");
        };
        app.wait_for_ticks(JOB, target - chrono::Duration::milliseconds(1), 1, secs(15))
            .await;
        targets.push(target);
    }
    app.set_schedule(JOB, "0 0 1 1 *").await;
    let runs = app.wait_until_all_runs_end(JOB, secs(60)).await;
    for target in targets {
        let at: Vec<&Run> = runs
            .iter()
            .filter(|r| r.trigger() == Trigger::Schedule && scheduled_for(r) == Some(target))
            .collect();
        assert_eq!(at.len(), 1, "one run for the tick at {target}: {at:#?}");
        assert_eq!(
            at[0].state(),
            RunState::Succeeded,
            "the first tick of a new schedule: {:#?}",
            at[0]
        );
    }
}
