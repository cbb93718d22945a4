//! TLS and mutual TLS with certificates made here by rcgen: between every process, and for
//! grpcurl with credentials and bad inputs.

use super::*;

// ------------------------------------------------------------------------------------------
// TLS and mutual TLS
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_and_mutual_tls_with_generated_certificates() {
    let mut app = security_app().await;
    let ca = make_ca("TicketMax security test CA");
    let other = make_ca("Some other CA");
    let server = leaf(&ca, &["localhost", "127.0.0.1"], "control-plane");
    let client = leaf(&ca, &["ticketmaxctl"], "ticketmaxctl");
    let stranger = leaf(&other, &["ticketmaxctl"], "stranger");
    let dir = app.log_dir.clone();
    let write = |name: &str, text: &str| write_pem(&dir, name, text);
    let cert = write("server.pem", &server.0);
    let key = write("server.key", &server.1);
    let ca_file = write("ca.pem", &ca.pem());

    // TLS: plaintext clients fail, clients trusting the CA succeed, others fail; on both ports.
    app.set_readiness_tls(Some(https_client(&ca.pem(), None)));
    let (grpc, http) = app
        .start_control_plane(
            "cp-tls",
            &[
                ("TICKETMAX_TLS_CERT", cert.clone()),
                ("TICKETMAX_TLS_KEY", key.clone()),
            ],
        )
        .await;
    let https = format!("https://{grpc}");
    let plain = status_over(format!("http://{grpc}"), None).await;
    assert!(plain.is_err(), "a plaintext client got through: {plain:?}");
    let ok = status_over(https.clone(), Some(grpc_tls(&ca.pem(), None))).await;
    assert_eq!(ok.as_deref(), Ok("active"), "TLS client trusting the CA");
    let wrong = status_over(https.clone(), Some(grpc_tls(&other.pem(), None))).await;
    assert!(
        wrong.is_err(),
        "a client trusting another CA accepted the server: {wrong:?}"
    );
    let tls_http = https_client(&ca.pem(), None);
    let r = https_call(http, &tls_http, "GET", "/background-jobs/status", None).await;
    assert_eq!(r.as_ref().map(|r| r.0).ok(), Some(200), "HTTPS: {r:?}");
    let r = http_call(http, "GET", "/background-jobs/status", None).await;
    assert!(r.is_err(), "plaintext HTTP on the TLS port answered: {r:?}");
    let r = https_call(
        http,
        &https_client(&other.pem(), None),
        "GET",
        "/healthz",
        None,
    )
    .await;
    assert!(r.is_err(), "HTTPS trusting another CA, yet: {r:?}");
    app.control_planes[0].proc.kill().await;

    // Mutual TLS: a client certificate signed by TICKETMAX_TLS_CLIENT_CA is required.
    app.set_readiness_tls(Some(https_client(&ca.pem(), Some(&client))));
    let (grpc, http) = app
        .start_control_plane(
            "cp-mtls",
            &[
                ("TICKETMAX_TLS_CERT", cert),
                ("TICKETMAX_TLS_KEY", key),
                ("TICKETMAX_TLS_CLIENT_CA", ca_file),
            ],
        )
        .await;
    let https = format!("https://{grpc}");
    let none = status_over(https.clone(), Some(grpc_tls(&ca.pem(), None))).await;
    assert!(none.is_err(), "no client certificate, yet: {none:?}");
    let foreign = status_over(https.clone(), Some(grpc_tls(&ca.pem(), Some(&stranger)))).await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA, yet: {foreign:?}"
    );
    let plain = status_over(format!("http://{grpc}"), None).await;
    assert!(plain.is_err(), "plaintext, yet: {plain:?}");
    let ok = status_over(https.clone(), Some(grpc_tls(&ca.pem(), Some(&client)))).await;
    assert_eq!(ok.as_deref(), Ok("active"), "CA-signed client certificate");
    // The HTTP port asks for the same client certificate.
    for (what, tls) in [
        ("no client certificate", https_client(&ca.pem(), None)),
        (
            "a foreign certificate",
            https_client(&ca.pem(), Some(&stranger)),
        ),
    ] {
        let r = https_call(http, &tls, "GET", "/healthz", None).await;
        assert!(r.is_err(), "HTTPS with {what}, yet: {r:?}");
    }
    let r = https_call(
        http,
        &https_client(&ca.pem(), Some(&client)),
        "GET",
        "/healthz",
        None,
    )
    .await;
    assert_eq!(
        r.as_ref().map(|r| r.0).ok(),
        Some(200),
        "HTTPS with mTLS: {r:?}"
    );

    // Registration by hand over mutual TLS: only with a CA-signed certificate, and only then a
    // row. (The executor binary over mutual TLS: `mutual_tls_between_every_process`.)
    let register = v1::RegisterRequest {
        executor_id: "ex-tls".into(),
        address: "https://127.0.0.1:1".into(),
        jobs: vec![CANCEL_EXPIRED.into()],
        version: "0.0.0".into(),
        ..Default::default()
    };
    let refused = match channel(https.clone(), Some(grpc_tls(&ca.pem(), Some(&stranger)))).await {
        Ok(ch) => ExecutorRegistryClient::new(ch)
            .register(register.clone())
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
        Err(e) => Err(format!("{e:?}")),
    };
    assert!(refused.is_err(), "registered with a foreign certificate");
    let rows = || async {
        scalar::<i64>(
            app.control_db(),
            "SELECT count(*) FROM executors WHERE id = 'ex-tls'",
        )
        .await
    };
    assert_eq!(rows().await, 0);
    let ch = channel(https.clone(), Some(grpc_tls(&ca.pem(), Some(&client))))
        .await
        .expect("mTLS connect");
    ExecutorRegistryClient::new(ch)
        .register(register)
        .await
        .expect("Register over mutual TLS");
    assert_eq!(rows().await, 1);
    // The private keys are not logged either.
    app.kill_all().await;
    for p in app.procs() {
        let log = p.log();
        for secret in [&server.1, &client.1] {
            let body = secret.lines().nth(1).unwrap_or("-");
            assert!(!log.contains(body), "{} logs a private key", p.name());
        }
    }
}

/// The production shape of README "Security" with mutual TLS and no shared executor secret: the control
/// plane, an executor and ticketmaxctl each hold a certificate from one internal CA, and each
/// server pins the names the other's certificate must carry. The executor registers over
/// mutual TLS and is dialed back over mutual TLS; executors with a foreign certificate, with
/// none, or in plaintext never register, nor does the operator's certificate; RunJob straight
/// at the executor without the control plane's certificate is refused and changes nothing; the
/// HTTP port asks for the same client certificate and `/metrics` for a viewer token.
#[tokio::test]
async fn mutual_tls_between_every_process() {
    let mut app = security_app().await;
    let ca = make_ca("TicketMax internal CA");
    let other = make_ca("Some other CA");
    let names = ["localhost", "127.0.0.1"];
    let cp = leaf(
        &ca,
        &["localhost", "127.0.0.1", "control-plane.internal"],
        "control-plane",
    );
    let ex = leaf(
        &ca,
        &["localhost", "127.0.0.1", "executor.internal"],
        "executor",
    );
    let ctl = leaf(&ca, &["ticketmaxctl"], "ticketmaxctl");
    let stranger = leaf(&other, &names, "stranger");
    let dir = app.log_dir.clone();
    let write = |name: &str, text: &str| write_pem(&dir, name, text);
    let ca_file = write("ca.pem", &ca.pem());
    let other_ca_file = write("other-ca.pem", &other.pem());
    let identity = |who: &str, (cert, key): &(String, String)| {
        vec![
            ("TICKETMAX_TLS_CERT", write(&format!("{who}.pem"), cert)),
            ("TICKETMAX_TLS_KEY", write(&format!("{who}.key"), key)),
        ]
    };
    let cp_env = identity("control-plane", &cp);
    let ex_env = identity("executor", &ex);
    let ctl_files = identity("ticketmaxctl", &ctl);
    let stranger_env = identity("stranger", &stranger);

    app.set_readiness_tls(Some(https_client(&ca.pem(), Some(&ctl))));
    let mut env = cp_env;
    env.extend([
        ("TICKETMAX_TLS_CLIENT_CA", ca_file.clone()),
        ("TICKETMAX_TLS_CA", ca_file.clone()),
        ("TICKETMAX_API_TOKENS", api_tokens()),
        // ticketmaxctl's certificate is from the same CA: pinned names keep it out.
        ("TICKETMAX_TLS_EXECUTOR_NAMES", "executor.internal".into()),
    ]);
    let (grpc, http) = app.start_control_plane("cp-1", &env).await;
    let cp_url = format!("https://{grpc}");
    // No scheduled run may touch the ticketing data while the test compares snapshots.
    let mut api = JobServiceClient::with_interceptor(
        channel(cp_url.clone(), Some(grpc_tls(&ca.pem(), Some(&ctl))))
            .await
            .expect("mTLS connect"),
        ticketmax_e2e::HarnessToken,
    );
    pause_everything(&mut api, OPERATOR_SECRET).await;
    let trusting = |mut env: Vec<(&'static str, String)>, ca: &str| {
        env.extend([
            ("TICKETMAX_TLS_CLIENT_CA", ca.to_string()),
            ("TICKETMAX_TLS_CA", ca.to_string()),
            ("TICKETMAX_CONTROL_PLANE_URL", cp_url.clone()),
        ]);
        env
    };
    let mut ex_env = trusting(ex_env, &ca_file);
    ex_env.push((
        "TICKETMAX_TLS_CLIENT_NAMES",
        "control-plane.internal".into(),
    ));
    let ex_addr = app.start_executor("ex-1", grpc, &ex_env, true).await;
    let advertised: String = scalar(
        app.control_db(),
        "SELECT address FROM executors WHERE id = 'ex-1'",
    )
    .await;
    assert_eq!(advertised, format!("https://{ex_addr}"));

    // Would-be executors: a certificate from another CA, no certificate, plaintext.
    app.start_executor(
        "ex-stranger",
        grpc,
        &trusting(stranger_env, &other_ca_file),
        false,
    )
    .await;
    app.start_executor(
        "ex-anonymous",
        grpc,
        &[
            ("TICKETMAX_TLS_CA", ca_file.clone()),
            ("TICKETMAX_CONTROL_PLANE_URL", cp_url.clone()),
        ],
        false,
    )
    .await;
    app.start_executor("ex-plaintext", grpc, &[], false).await;
    for name in ["ex-stranger", "ex-anonymous", "ex-plaintext"] {
        wait_for_log(&app, name, "cannot register with the control plane").await;
    }
    let ids: String = scalar(
        app.control_db(),
        "SELECT string_agg(id, ',' ORDER BY id) FROM executors",
    )
    .await;
    assert_eq!(
        ids, "ex-1",
        "only the executor with a CA-signed certificate"
    );
    // An operator's certificate from the same CA passes the handshake but is not an executor's.
    let register = v1::RegisterRequest {
        executor_id: "ex-operator".into(),
        address: format!("https://{ex_addr}"),
        jobs: vec![CANCEL_EXPIRED.into()],
        version: "0.0.0".into(),
        ..Default::default()
    };
    let r = ExecutorRegistryClient::new(
        channel(cp_url.clone(), Some(grpc_tls(&ca.pem(), Some(&ctl))))
            .await
            .expect("mTLS connect"),
    )
    .register(register)
    .await;
    assert_eq!(code_of(&r), Code::PermissionDenied, "{r:?}");
    let n: i64 = scalar(
        app.control_db(),
        "SELECT count(*) FROM executors WHERE id = 'ex-operator'",
    )
    .await;
    assert_eq!(n, 0);

    // RunJob straight at the executor without the control plane's trust: nothing runs.
    one_expired_booking(&app).await;
    let tk_before = ticketing_snapshot(&app).await;
    let ex_url = format!("https://{ex_addr}");
    for (what, url, tls) in [
        ("plaintext", format!("http://{ex_addr}"), None),
        (
            "no client certificate",
            ex_url.clone(),
            Some(grpc_tls(&ca.pem(), None)),
        ),
        (
            "a foreign client certificate",
            ex_url.clone(),
            Some(grpc_tls(&ca.pem(), Some(&stranger))),
        ),
        (
            "an operator's certificate from the same CA",
            ex_url.clone(),
            Some(grpc_tls(&ca.pem(), Some(&ctl))),
        ),
    ] {
        let r = run_job_over(url, tls).await;
        assert!(r.is_err(), "RunJob with {what} ran: {r:?}");
        if what.starts_with("an operator") {
            assert!(
                r.as_ref().is_err_and(|e| e.contains("PermissionDenied")),
                "{r:?}"
            );
        }
    }
    assert_same(
        &tk_before,
        &ticketing_snapshot(&app).await,
        "RunJob without the control plane's certificate",
    );

    // ticketmaxctl over mutual TLS: refused without its certificate, then the real trigger runs
    // on ex-1, which the control plane dialed over mutual TLS.
    let ctl_cmd = |with_cert: bool| {
        let mut cmd = tokio::process::Command::new(binary("ticketmaxctl"));
        cmd.env_clear()
            .env("TICKETMAX_CONTROL_PLANE_URL", &cp_url)
            .env("TICKETMAX_CA_FILE", &ca_file)
            .env("TICKETMAX_TOKEN", OPERATOR_SECRET)
            .args(["trigger", CANCEL_EXPIRED, "--wait", "--timeout", "60"])
            .kill_on_drop(true);
        if with_cert {
            cmd.args([
                "--client-cert",
                &ctl_files[0].1,
                "--client-key",
                &ctl_files[1].1,
            ]);
        }
        cmd
    };
    let out = tokio::time::timeout(Duration::from_secs(60), ctl_cmd(false).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !out.status.success(),
        "ticketmaxctl without a client certificate: {out:?}"
    );
    assert_same(
        &tk_before,
        &ticketing_snapshot(&app).await,
        "ticketmaxctl without a client certificate",
    );
    let out = tokio::time::timeout(Duration::from_secs(120), ctl_cmd(true).output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ticketmaxctl trigger --wait: {text}");
    let (state, executor, who): (String, String, String) = (
        scalar(
            app.control_db(),
            "SELECT state FROM runs WHERE trigger = 'manual'",
        )
        .await,
        scalar(
            app.control_db(),
            "SELECT executor_id FROM runs WHERE trigger = 'manual'",
        )
        .await,
        scalar(
            app.control_db(),
            "SELECT triggered_by FROM runs WHERE trigger = 'manual'",
        )
        .await,
    );
    assert_eq!(
        (state.as_str(), executor.as_str(), who.as_str()),
        ("succeeded", "ex-1", "alice"),
        "{text}"
    );
    let booking: String = scalar(
        app.ticketing(),
        "SELECT status::text FROM bookings WHERE id = 1",
    )
    .await;
    assert_eq!(booking, "cancelled");

    // The HTTP port over mutual TLS: /healthz for anyone holding a certificate, /metrics only
    // with a viewer token.
    let https = https_client(&ca.pem(), Some(&ctl));
    let code = |r: std::io::Result<(u16, String)>| r.map(|r| r.0).map_err(|e| e.to_string());
    assert_eq!(
        code(https_call(http, &https, "GET", "/healthz", None).await),
        Ok(200)
    );
    assert_eq!(
        code(https_call(http, &https, "GET", "/metrics", None).await),
        Ok(401)
    );
    let (status, body) = https_call(http, &https, "GET", "/metrics", Some(VIEWER_SECRET))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ticketmax_runs{"), "{body}");

    app.kill_all().await;
    for p in app.procs() {
        let log = p.log();
        for (_, key) in [&cp, &ex, &ctl, &stranger] {
            let body = key.lines().nth(1).unwrap_or("-");
            assert!(!log.contains(body), "{} logs a private key", p.name());
        }
    }
    app.stop_and_assert_no_secret_in_logs(&secrets()).await;
}

/// What an operator checks from outside the repo: the real grpcurl, by reflection, against a
/// control plane with mutual TLS and tokens. No, wrong and right credentials, then a table of
/// bad inputs; each refused with its status, and the database unchanged.
#[tokio::test]
async fn grpcurl_credentials_and_bad_inputs_over_mutual_tls() {
    let mut app = security_app().await;
    let ca = make_ca("TicketMax internal CA");
    let cp = leaf(&ca, &["localhost", "127.0.0.1"], "control-plane");
    let ctl = leaf(&ca, &["operator"], "operator");
    let dir = app.log_dir.clone();
    let write = |name: &str, text: &str| write_pem(&dir, name, text);
    let ca_file = write("ca.pem", &ca.pem());
    let (ctl_cert, ctl_key) = (write("me.pem", &ctl.0), write("me.key", &ctl.1));
    app.set_readiness_tls(Some(https_client(&ca.pem(), Some(&ctl))));
    let (grpc, _) = app
        .start_control_plane(
            "cp-1",
            &[
                ("TICKETMAX_TLS_CERT", write("cp.pem", &cp.0)),
                ("TICKETMAX_TLS_KEY", write("cp.key", &cp.1)),
                ("TICKETMAX_TLS_CLIENT_CA", ca_file.clone()),
                ("TICKETMAX_API_TOKENS", api_tokens()),
            ],
        )
        .await;
    let target = format!("localhost:{}", grpc.port());
    let mtls = [
        "-cacert",
        ca_file.as_str(),
        "-cert",
        ctl_cert.as_str(),
        "-key",
        ctl_key.as_str(),
    ];
    // (exit success, stdout + stderr)
    let grpcurl = |flags: &[&str], token: Option<&str>, method: &str, body: &str| {
        let mut cmd = tokio::process::Command::new(ticketmax_e2e::grpcurl_path());
        cmd.args(flags);
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        cmd.args(["-d", body, &target])
            .arg(format!("ticketmax.jobs.v1.JobService/{method}"))
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("grpcurl did not finish in 30 s")
                .expect("run grpcurl");
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    };
    let (ok, text) = grpcurl(&mtls, Some(OPERATOR_SECRET), "GetStatus", "{}").await;
    assert!(ok, "GetStatus over mutual TLS: {text}");
    let before = control_snapshot(&app).await;

    // Transport: without the client certificate, or in plaintext, nothing gets through.
    for (what, flags) in [
        ("no client certificate", vec!["-cacert", ca_file.as_str()]),
        ("plaintext", vec!["-plaintext"]),
    ] {
        let (ok, text) = grpcurl(&flags, Some(OPERATOR_SECRET), "GetStatus", "{}").await;
        assert!(!ok, "GetStatus with {what}: {text}");
    }
    // Credentials and roles.
    let job = CANCEL_EXPIRED;
    let trigger = format!(r#"{{"job": "{job}"}}"#);
    let pause = format!(r#"{{"name": "{job}"}}"#);
    let update = |field: &str| format!(r#"{{"name": "{job}", {field}}}"#);
    let unknown_run = format!(r#"{{"runId": "{}"}}"#, uuid::Uuid::new_v4());
    let long_key = format!(
        r#"{{"job": "{job}", "idempotencyKey": "{}"}}"#,
        "k".repeat(201)
    );
    let long_name = format!(r#"{{"name": "{}"}}"#, "x".repeat(10 * 1024));
    let cases: Vec<(&str, Option<&str>, &str, String, &str)> = vec![
        (
            "no token",
            None,
            "GetStatus",
            "{}".into(),
            "Unauthenticated",
        ),
        (
            "wrong token",
            Some(WRONG_SECRETS[0]),
            "GetStatus",
            "{}".into(),
            "Unauthenticated",
        ),
        (
            "no token",
            None,
            "TriggerJob",
            trigger.clone(),
            "Unauthenticated",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "TriggerJob",
            trigger.clone(),
            "PermissionDenied",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "PauseJob",
            pause.clone(),
            "PermissionDenied",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "UpdateJob",
            update(r#""schedule": "* * * * *""#),
            "PermissionDenied",
        ),
        (
            "viewer",
            Some(VIEWER_SECRET),
            "CancelRun",
            unknown_run.clone(),
            "PermissionDenied",
        ),
        // Bad inputs, with the operator's token.
        (
            "empty name",
            Some(OPERATOR_SECRET),
            "GetJob",
            r#"{"name": ""}"#.into(),
            "InvalidArgument",
        ),
        (
            "10 KB name",
            Some(OPERATOR_SECRET),
            "PauseJob",
            long_name,
            "InvalidArgument",
        ),
        (
            "unknown job",
            Some(OPERATOR_SECRET),
            "TriggerJob",
            r#"{"job": "nope/no-such-job"}"#.into(),
            "NotFound",
        ),
        (
            "201-char idempotency key",
            Some(OPERATOR_SECRET),
            "TriggerJob",
            long_key,
            "InvalidArgument",
        ),
        (
            "bad cron",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""schedule": "not a cron""#),
            "InvalidArgument",
        ),
        (
            "minute 61",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""schedule": "61 * * * *""#),
            "InvalidArgument",
        ),
        (
            "never fires (30 Feb)",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""schedule": "0 0 30 2 *""#),
            "InvalidArgument",
        ),
        (
            "bad timezone",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""timezone": "Mars/Olympus""#),
            "InvalidArgument",
        ),
        (
            "max_retries 101",
            Some(OPERATOR_SECRET),
            "UpdateJob",
            update(r#""maxRetries": 101"#),
            "InvalidArgument",
        ),
        (
            "bad page token",
            Some(OPERATOR_SECRET),
            "ListRuns",
            r#"{"pageToken": "not-a-token"}"#.into(),
            "InvalidArgument",
        ),
        (
            "unknown run",
            Some(OPERATOR_SECRET),
            "GetRun",
            unknown_run.clone(),
            "NotFound",
        ),
        (
            "cancel unknown run",
            Some(OPERATOR_SECRET),
            "CancelRun",
            unknown_run,
            "NotFound",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, token, method, body, code) in &cases {
        let (ok, text) = grpcurl(&mtls, *token, method, body).await;
        if ok || !text.contains(&format!("Code: {code}")) {
            wrong.push(format!("{method} ({what}): expected {code}, got: {text}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_same(
        &before,
        &control_snapshot(&app).await,
        "refused grpcurl calls",
    );

    // And the right credentials do change things.
    let (ok, text) = grpcurl(&mtls, Some(OPERATOR_SECRET), "PauseJob", &pause).await;
    assert!(ok, "PauseJob as operator: {text}");
    let updated_by: String = scalar(
        app.control_db(),
        &format!("SELECT coalesce(updated_by, '') FROM jobs WHERE name = '{job}'"),
    )
    .await;
    assert_eq!(updated_by, "alice");
    app.stop_and_assert_no_secret_in_logs(&secrets()).await;
}
