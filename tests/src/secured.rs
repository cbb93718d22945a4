//! A control plane that requires bearer tokens (TICKETMAX_API_TOKENS) and, on request, TLS, on
//! SQLite: the harness's readiness check sends no token, so these are started here. Shared by
//! the ticketmaxctl and grpcurl-script tests.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::*;

pub const VIEWER_TOKEN: &str = "viewer-token-7d3a9c";
pub const OPERATOR_TOKEN: &str = "operator-token-52b8f0";

pub struct SecuredControlPlane {
    _child: tokio::process::Child,
    pub addr: String,
    pub dir: PathBuf,
}

impl SecuredControlPlane {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("cp.log")).unwrap_or_default()
    }
}

impl Drop for SecuredControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- control plane log -----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `printf %s TOKEN | ticketmax-control-plane hash-token`.
pub async fn hash_token(token: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(binary(CONTROL_PLANE_BIN))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run ticketmax-control-plane hash-token");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(token.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "hash-token failed: {out:?}");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(hash.len(), 64, "hash-token printed {hash:?}");
    hash
}

pub async fn spawn_secured_control_plane(name: &str) -> SecuredControlPlane {
    let cp = start_control_plane(name, true, false).await;
    // Ready when GetStatus answers (UNAUTHENTICATED without a token).
    let url = cp.url();
    eventually("the secured control plane to answer", secs(60), || {
        let url = url.clone();
        async move {
            let mut api = JobServiceClient::connect(url).await.ok()?;
            match api.get_status(GetStatusRequest {}).await {
                Ok(_) => Some(()),
                Err(s) if s.code() == tonic::Code::Unauthenticated => Some(()),
                Err(_) => None,
            }
        }
    })
    .await;
    cp
}

/// A CA (`ca.pem`) and a server certificate for localhost / 127.0.0.1 signed by it
/// (`server.pem`, `server.key`), written to `dir`.
pub fn make_pki(dir: &Path) {
    let ca = crate::pki::make_ca("TicketMax test CA");
    let (cert, key) = crate::pki::leaf(&ca, &["localhost", "127.0.0.1"], "localhost");
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("server.pem", cert),
        ("server.key", key),
    ] {
        std::fs::write(dir.join(name), text).expect("write a PEM file");
    }
}

/// Starts a control plane on SQLite in a temp dir; with `tokens`, TICKETMAX_API_TOKENS holds
/// the viewer and operator tokens; with `tls`, it serves TLS with a certificate from
/// [`make_pki`] (CA in `<dir>/ca.pem`). Does not wait for it.
pub async fn start_control_plane(name: &str, tokens: bool, tls: bool) -> SecuredControlPlane {
    let dir = std::env::temp_dir().join(format!("tm-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("cp.log")).unwrap();
    let mut cmd = tokio::process::Command::new(binary(CONTROL_PLANE_BIN));
    for var in [
        "DATABASE_URL",
        "TICKETMAX_EXECUTOR_TOKEN",
        "TICKETMAX_TLS_CERT",
        "TICKETMAX_TLS_KEY",
        "TICKETMAX_TLS_CLIENT_CA",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    if tokens {
        let tokens = format!(
            "dashboard:viewer:{},ops:operator:{}",
            hash_token(VIEWER_TOKEN).await,
            hash_token(OPERATOR_TOKEN).await
        );
        cmd.env("TICKETMAX_API_TOKENS", tokens);
    } else {
        cmd.env_remove("TICKETMAX_API_TOKENS");
    }
    if tls {
        make_pki(&dir);
        cmd.env("TICKETMAX_TLS_CERT", dir.join("server.pem"))
            .env("TICKETMAX_TLS_KEY", dir.join("server.key"));
    }
    let child = cmd
        .env("TICKETMAX_DATA_DIR", dir.join("data"))
        .env("TICKETMAX_GRPC_ADDR", &addr)
        .env("TICKETMAX_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start ticketmax-control-plane");
    SecuredControlPlane {
        _child: child,
        addr,
        dir,
    }
}
