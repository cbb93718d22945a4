//! The dashboard in a real browser: `tests/browser/dashboard.mjs` drives Debian's Chromium
//! (headless, through playwright-core from npm) against the real binaries on Postgres. This
//! test starts the system, hands the script the URL and the tokens, starts the slow run the
//! script asks for (many events over several seconds, so it can drop the event stream in the
//! middle), and passes when the script does. Screenshots of each page are kept under
//! `target/e2e-logs/browser/<test>/screenshots/`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `TICKETMAX_CHROMIUM`) and `npm ci` in
//! `tests/browser/`; `./scripts/test.sh` installs all three.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use ticketmax_e2e::jobs::{CANCEL_EXPIRED, CLEAN_CACHE};
use ticketmax_e2e::tokens::{OPERATOR_TOKEN, VIEWER_TOKEN};
use ticketmax_e2e::*;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium() -> String {
    std::env::var("TICKETMAX_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// A TCP proxy to `upstream` whose open connections can all be cut at once, as a dropped
/// network would: the browser reaches the dashboard only through it.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (cut, _) = watch::channel(0u64);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // Both sockets are dropped: the browser sees the connection reset.
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn the_dashboard_in_chromium() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {} (./scripts/test.sh does)",
        dir.display()
    );
    assert!(
        Path::new(&chromium()).exists(),
        "no Chromium at {} (apt-get install chromium; ./scripts/test.sh does)",
        chromium()
    );
    let app = TestApp::builder()
        .operator_token("ops", OPERATOR_TOKEN)
        .api_token("dashboard", "viewer", VIEWER_TOKEN)
        .spawn()
        .await;
    app.silence_schedules(&[]).await;
    app.seed_expired_bookings(2_000).await;
    // Two periods of a report for the report page.
    app.control_exec(
        "INSERT INTO reports (id, kind, period, job, run_id, body, created_at) VALUES \
         ('rep-a', 'daily-analytics', '2026-11-27', 'analytics/generate-daily-analytics', 'run-a', \
          '{\"bookings\": 100, \"revenue\": {\"NGN\": 500}}', now() - interval '1 day'), \
         ('rep-b', 'daily-analytics', '2026-11-28', 'analytics/generate-daily-analytics', 'run-b', \
          '{\"bookings\": 120, \"revenue\": {\"NGN\": 450}}', now())",
    )
    .await;
    let proxy = Proxy::start(app.control_planes[0].http_addr).await;
    let shots = app.log_dir.join("screenshots");
    let handshake = app.log_dir.join("handshake");
    std::fs::create_dir_all(&handshake).expect("create the handshake dir");

    let mut node = tokio::process::Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .current_dir(&dir)
        .env("TM_URL", format!("http://{}", proxy.addr))
        .env("TM_VIEWER", VIEWER_TOKEN)
        .env("TM_OPERATOR", OPERATOR_TOKEN)
        .env("TM_JOB", CLEAN_CACHE)
        .env("TM_TICKING_JOB", CANCEL_EXPIRED)
        .env("TM_SHOTS", &shots)
        .env("TM_HANDSHAKE", &handshake)
        .env("TM_CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (apt-get install nodejs, or Node 18+ on PATH)");

    // The script asks for the slow run once it is signed in and on its way to watch it.
    let ready = handshake.join("ready");
    let deadline = std::time::Instant::now() + secs(120);
    let asked = loop {
        if ready.exists() {
            break true;
        }
        // Ended before asking: its output says why.
        if let Ok(Some(_)) = node.try_wait() {
            break false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the browser script did not ask for the slow run within 2 minutes"
        );
        tokio::time::sleep(millis(100)).await;
    };
    if asked {
        // 2,000 bookings in chunks of 50 with a 150 ms pause: about 40 progress events over 6 s.
        let run = app
            .try_trigger(
                CANCEL_EXPIRED,
                "",
                Some(serde_json::json!({"batch_size": 50, "pause_ms": 150})),
            )
            .await
            .expect("TriggerJob of the slow run");
        std::fs::write(handshake.join("slow-run"), &run.id).expect("write the run id");
        // Every second while the slow run goes on, with overlap skip: those ticks are skipped
        // (the ledger step looks for one, with its reason).
        app.update_job(UpdateJobRequest {
            name: CANCEL_EXPIRED.into(),
            schedule: Some("* * * * * *".into()),
            overlap_policy: v1::OverlapPolicy::Skip as i32,
            ..Default::default()
        })
        .await
        .expect("UpdateJob of the ticking job");
        // Then the script asks for the cut, once its console shows the first events.
        let deadline = std::time::Instant::now() + secs(60);
        while !handshake.join("cut").exists() && node.try_wait().ok().flatten().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the browser script did not ask for the cut within a minute"
            );
            tokio::time::sleep(millis(50)).await;
        }
        proxy.cut_all();
        std::fs::write(handshake.join("cut-done"), "").expect("write cut-done");
    }

    let out = tokio::time::timeout(secs(240), node.wait_with_output())
        .await
        .expect("the browser script finished within 4 minutes")
        .expect("the browser script's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");
    for name in [
        "overview-viewer",
        "run-succeeded",
        "job-paused",
        "job",
        "run-resumed",
        "runs-phone-dark",
        "edit-preview-invalid",
        "edit-invalid-cron",
        "report",
    ] {
        let shot = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 1_000,
            "screenshot {} missing or empty",
            shot.display()
        );
    }
    // What the browser did is on record under the operator's name.
    let by: String = app
        .control_scalar(&format!(
            "SELECT triggered_by FROM runs WHERE job = '{CLEAN_CACHE}' AND trigger = 'manual' \
             ORDER BY created_at DESC LIMIT 1"
        ))
        .await;
    assert_eq!(by, "ops");
    app.assert_inventory_consistent().await;
}
