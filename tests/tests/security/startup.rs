//! What the binaries say, or refuse, at start: exposed listeners without protection, token
//! configurations that cannot be meant.

use super::*;

/// Plaintext and open doors are fine on loopback, a mistake anywhere else: both binaries say
/// so at start when they listen on 0.0.0.0 without TLS or credentials, and say nothing once
/// TLS and credentials are configured.
#[tokio::test]
async fn exposed_listeners_without_protection_are_called_out_at_start() {
    let mut app = security_app().await;
    let ca = make_ca("TicketMax internal CA");
    let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"], "ticketmax");
    let protected = [
        (
            "TICKETMAX_TLS_CERT",
            write_pem(&app.log_dir, "cert.pem", &cert),
        ),
        (
            "TICKETMAX_TLS_KEY",
            write_pem(&app.log_dir, "cert.key", &key),
        ),
        ("TICKETMAX_EXECUTOR_TOKEN", EXECUTOR_SECRET.to_string()),
    ];
    let cp_warnings = [
        "gRPC listens on a non-loopback address without TLS",
        "HTTP listens on a non-loopback address without TLS",
        "without API tokens",
        "executors are not authenticated",
    ];
    let ex_warnings = [
        "accepts RunJob from anyone",
        "serves plaintext gRPC on a non-loopback address",
    ];

    for (round, guarded) in [("open", false), ("guarded", true)] {
        let grpc = free_port();
        let mut env = vec![
            ("TICKETMAX_GRPC_ADDR", format!("0.0.0.0:{grpc}")),
            ("TICKETMAX_HTTP_ADDR", format!("0.0.0.0:{}", free_port())),
            ("DATABASE_URL", app.cp_database_url.clone()),
        ];
        let mut ex_env = vec![
            (
                "TICKETMAX_EXECUTOR_ADDR",
                format!("0.0.0.0:{}", free_port()),
            ),
            ("TICKETING_DATABASE_URL", app.tk_database_url.clone()),
            (
                "TICKETMAX_CONTROL_PLANE_URL",
                format!("http://127.0.0.1:{grpc}"),
            ),
        ];
        if guarded {
            env.extend(protected.iter().cloned());
            env.push(("TICKETMAX_API_TOKENS", api_tokens()));
            ex_env.extend(protected.iter().cloned());
        }
        let (cp, ex) = (format!("cp-{round}"), format!("ex-{round}"));
        app.start_process(&cp, CONTROL_PLANE_BIN, &env);
        app.start_process(&ex, EXECUTOR_BIN, &ex_env);
        wait_for_log(&app, &cp, "control plane listening").await;
        wait_for_log(&app, &ex, "executor serving").await;
        for (name, warnings) in [(&cp, &cp_warnings[..]), (&ex, &ex_warnings[..])] {
            let log = app.proc(name).log();
            for w in warnings {
                assert_eq!(
                    log.contains(w),
                    !guarded,
                    "{name}: warning {w:?} expected: {}\n{log}",
                    !guarded
                );
            }
        }
        app.kill_all().await;
    }
    app.stop_and_assert_no_secret_in_logs(&secrets()).await;
}

/// A token configuration that cannot be meant stops the control plane at start-up, with a
/// message that names the entry but not the hash.
#[tokio::test]
async fn misconfigured_tokens_stop_the_control_plane_with_a_clear_message() {
    let h = hash_token(VIEWER_SECRET);
    for (tokens, expect) in [
        (
            format!("dash:viewer:{h},ops:operator:{h}"),
            "'dash' and 'ops' the same token",
        ),
        (
            format!("dash:root:{h}"),
            "entry 1 is not NAME:ROLE:SHA256HEX",
        ),
        (
            format!(
                "dash:viewer:{h},dash:operator:{}",
                hash_token(OPERATOR_SECRET)
            ),
            "names 'dash' twice",
        ),
        (
            "dash:viewer:abc".to_string(),
            "entry 1 is not NAME:ROLE:SHA256HEX",
        ),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(binary(CONTROL_PLANE_BIN))
                .env_clear()
                .env("TICKETMAX_API_TOKENS", &tokens)
                .env("TICKETMAX_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
                .env("TICKETMAX_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the control plane should refuse to start, not hang")
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{tokens}: started: {text}");
        assert!(text.contains(expect), "{tokens}: {text}");
        assert!(!text.contains(&h), "{tokens}: the hash is echoed: {text}");
    }
}
