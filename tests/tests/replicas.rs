//! Durability and replication: restarting the control plane keeps history and runs no tick twice;
//! two control planes on one Postgres run each tick exactly once.

use std::collections::BTreeSet;

use chrono::Utc;
use ticketmax_e2e::*;

use ticketmax_e2e::jobs::CANCEL_EXPIRED;
use ticketmax_e2e::jobs::CLEAN_CACHE as TICKING;

#[tokio::test]
async fn restart_keeps_history_and_runs_no_tick_twice() {
    let mut app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;

    // History: a finished manual run and its events.
    let manual = app.run_to_completion(CANCEL_EXPIRED).await;
    assert_eq!(manual.state(), RunState::Succeeded, "{manual:#?}");
    let manual_events = app.watch(&manual.id, 0, secs(30)).await;

    let set_at = Utc::now();
    app.set_schedule(TICKING, "* * * * * *").await;
    app.wait_for_ticks(TICKING, set_at, 3, secs(10)).await;

    // SIGKILL in the middle of ticking, then start again on the same database.
    app.cp().kill().await;
    tokio::time::sleep(secs(2)).await;
    let restarted_at = Utc::now();
    app.cp().start().await;

    // History survived.
    let after = app.get_run(&manual.id).await;
    assert_eq!(after, manual, "the finished run changed across the restart");
    let replay = app.watch(&manual.id, 0, secs(30)).await;
    assert_eq!(
        replay, manual_events,
        "the run's events changed across the restart"
    );
    let job = app.get_job(TICKING).await;
    assert_eq!(
        job.schedule, "* * * * * *",
        "UpdateJob's schedule lost across the restart"
    );

    // Ticking resumes, then stops.
    app.wait_for_ticks(TICKING, restarted_at, 3, secs(15)).await;
    app.pause(TICKING).await;
    // Runs cut off by the kill are recovered: nothing stays active forever.
    let runs = app.wait_until_all_runs_end(TICKING, secs(60)).await;

    let mut ticks: Vec<_> = runs
        .iter()
        .filter(|r| r.trigger() == Trigger::Schedule)
        .cloned()
        .collect();
    ticks.sort_by_key(scheduled_for);
    assert_ticks(&ticks, false);
    // Each tick once, via ListRuns paging with small pages as well.
    let paged = app.list_all_runs(TICKING, RunState::Unspecified, 3).await;
    let ids: BTreeSet<_> = paged.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids.len(),
        paged.len(),
        "ListRuns paging returned a run twice"
    );
    assert_eq!(
        ids,
        runs.iter().map(|r| r.id.clone()).collect(),
        "paging disagrees with large pages"
    );
    // And in the store itself.
    let dups = app.duplicate_ticks_in_store().await;
    assert!(
        dups.is_empty(),
        "(job, scheduled_for) recorded twice in the store: {dups:?}"
    );
}

#[tokio::test]
async fn ticks_missed_while_down_are_recorded_and_at_most_one_is_run() {
    let mut app = TestApp::spawn().await;
    app.silence_schedules(&[]).await;
    let set_at = Utc::now();
    app.set_schedule(TICKING, "* * * * * *").await;
    app.wait_for_ticks(TICKING, set_at, 2, secs(10)).await;

    app.cp().kill().await;
    let down_at = Utc::now();
    tokio::time::sleep(secs(4)).await;
    let restarted_at = Utc::now();
    app.cp().start().await;
    app.wait_for_ticks(TICKING, restarted_at, 3, secs(15)).await;
    app.pause(TICKING).await;
    let runs = app.wait_until_all_runs_end(TICKING, secs(60)).await;

    let mut ticks: Vec<_> = runs
        .into_iter()
        .filter(|r| r.trigger() == Trigger::Schedule)
        .collect();
    ticks.sort_by_key(scheduled_for);
    // MISSED_TICK_POLICY_RUN_ONCE (default): every tick is recorded, none lost...
    assert_ticks(&ticks, true);
    // ...and of the ticks that fell while no control plane ran, at most one was run.
    let missed: Vec<_> = ticks
        .iter()
        .filter(|r| {
            let t = scheduled_for(r).unwrap();
            t > down_at + chrono::Duration::seconds(1)
                && t < restarted_at - chrono::Duration::seconds(1)
        })
        .collect();
    assert!(
        !missed.is_empty(),
        "no tick recorded for the downtime: {}",
        describe_ticks(&ticks)
    );
    let ran: Vec<_> = missed
        .iter()
        .filter(|r| r.state() != RunState::Skipped)
        .collect();
    assert!(
        ran.len() <= 1,
        "missed ticks run more than once: {}",
        describe_ticks(&ticks)
    );
}

#[tokio::test]
async fn two_control_planes_on_one_postgres_run_each_tick_exactly_once() {
    let app = TestApp::builder()
        .control_planes(2)
        .executors(1)
        .spawn()
        .await;
    app.silence_schedules(&[]).await;

    let set_at = Utc::now();
    app.set_schedule(TICKING, "* * * * * *").await;
    // The other replica sees the change.
    let seen = eventually("cp-2 to see the new schedule", secs(10), || async {
        let job = app
            .api_of(1)
            .get_job(GetJobRequest {
                name: TICKING.into(),
            })
            .await
            .ok()?
            .into_inner();
        (job.schedule == "* * * * * *").then_some(job)
    })
    .await;
    assert!(seen.enabled);

    app.wait_for_ticks(TICKING, set_at + chrono::Duration::seconds(1), 6, secs(12))
        .await;
    app.pause(TICKING).await;
    let runs = app.wait_until_all_runs_end(TICKING, secs(60)).await;

    let mut ticks: Vec<_> = runs
        .iter()
        .filter(|r| r.trigger() == Trigger::Schedule)
        .cloned()
        .collect();
    ticks.sort_by_key(scheduled_for);
    assert!(ticks.len() >= 6, "{}", describe_ticks(&ticks));
    assert_ticks(&ticks, true);
    let dups = app.duplicate_ticks_in_store().await;
    assert!(
        dups.is_empty(),
        "(job, scheduled_for) recorded twice in the store: {dups:?}"
    );

    // Both replicas tell the same history.
    let mut from_cp2 = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .api_of(1)
            .list_runs(ListRunsRequest {
                job: TICKING.into(),
                page_size: 4,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("ListRuns on cp-2")
            .into_inner();
        from_cp2.extend(page.runs.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let a: BTreeSet<_> = runs.iter().map(|r| r.id.clone()).collect();
    let b: BTreeSet<_> = from_cp2.iter().cloned().collect();
    assert_eq!(b.len(), from_cp2.len(), "cp-2 paging returned a run twice");
    assert_eq!(a, b, "cp-1 and cp-2 list different runs");
}

async fn roles(app: &TestApp) -> Vec<String> {
    let mut roles = Vec::new();
    for i in 0..app.control_planes.len() {
        let mut api = app.api_of(i);
        match api.get_status(GetStatusRequest {}).await {
            Ok(s) => roles.push(s.into_inner().role),
            Err(_) => roles.push("down".into()),
        }
    }
    roles
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_the_other_takes_over_when_it_dies() {
    let mut app = TestApp::builder()
        .control_planes(2)
        .executors(1)
        .spawn()
        .await;
    app.silence_schedules(&[]).await;

    let r = eventually(
        "exactly one leader among two replicas",
        secs(20),
        || async {
            let r = roles(&app).await;
            let leaders = r.iter().filter(|x| *x == "leader").count();
            let followers = r.iter().filter(|x| *x == "follower").count();
            (leaders == 1 && followers == 1).then_some(r)
        },
    )
    .await;
    let leader = r.iter().position(|x| x == "leader").unwrap();
    let other = 1 - leader;

    let set_at = Utc::now();
    app.set_schedule(TICKING, "* * * * * *").await;
    app.wait_for_ticks(TICKING, set_at, 2, secs(10)).await;

    // The executor registered with cp-1; keep it if cp-1 is the leader we kill: it must
    // be reachable through the shared store anyway, so only the survivor's API is used below.
    app.control_planes[leader].kill().await;
    let killed_at = Utc::now();
    let mut survivor = app.api_of(other);
    eventually("the surviving replica to become leader", secs(20), || {
        let mut api = survivor.clone();
        async move {
            let s = api.get_status(GetStatusRequest {}).await.ok()?.into_inner();
            (s.role == "leader").then_some(())
        }
    })
    .await;

    // Ticks go on through the survivor, still once each.
    let deadline = std::time::Instant::now() + secs(15);
    let ticks = loop {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = survivor
                .list_runs(ListRunsRequest {
                    job: TICKING.into(),
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .expect("ListRuns on the survivor")
                .into_inner();
            all.extend(page.runs);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let after = all
            .iter()
            .filter(|r| r.trigger() == Trigger::Schedule)
            .filter(|r| {
                scheduled_for(r).is_some_and(|t| t > killed_at + chrono::Duration::seconds(2))
            })
            .count();
        if after >= 3 {
            break all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ticks after the leader died: {}",
            describe_ticks(&all)
        );
        tokio::time::sleep(millis(300)).await;
    };
    let mut sched: Vec<_> = ticks
        .into_iter()
        .filter(|r| r.trigger() == Trigger::Schedule)
        .collect();
    sched.sort_by_key(scheduled_for);
    assert_ticks(&sched, false);
    let dups = app.duplicate_ticks_in_store().await;
    assert!(
        dups.is_empty(),
        "(job, scheduled_for) recorded twice in the store: {dups:?}"
    );
    let _ = survivor
        .pause_job(PauseJobRequest {
            name: TICKING.into(),
        })
        .await;
}
