//! The client's TLS (CA file) and bearer token against an in-process TLS gRPC server, through
//! the library and through `ticketmaxctl` (exit codes 0, 6 and 5). No Postgres needed.

use std::pin::Pin;

use futures::Stream;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

use ticketmax_client::proto::{self, job_service_server::JobService};
use ticketmax_client::{Client, Error};

const GOOD_TOKEN: &str = "operator-token.123";

/// Answers GetStatus when the call carries `authorization: Bearer GOOD_TOKEN`, echoing the
/// header in `replica_id`; everything else is UNIMPLEMENTED.
struct Mock;

fn check_token<T>(req: &Request<T>) -> Result<String, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match header.strip_prefix("Bearer ") {
        None => Err(Status::unauthenticated("missing bearer token")),
        Some(t) if t == GOOD_TOKEN => Ok(header),
        Some(_) => Err(Status::permission_denied("token not allowed")),
    }
}

fn nope<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("mock"))
}

#[tonic::async_trait]
impl JobService for Mock {
    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::GetStatusResponse>, Status> {
        let header = check_token(&req)?;
        Ok(Response::new(proto::GetStatusResponse {
            status: "active".into(),
            role: "leader".into(),
            replica_id: header,
            ..Default::default()
        }))
    }
    async fn list_jobs(
        &self,
        _: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        nope()
    }
    async fn get_job(
        &self,
        _: Request<proto::GetJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        nope()
    }
    async fn trigger_job(
        &self,
        _: Request<proto::TriggerJobRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        nope()
    }
    async fn get_run(
        &self,
        _: Request<proto::GetRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        nope()
    }
    async fn list_runs(
        &self,
        _: Request<proto::ListRunsRequest>,
    ) -> Result<Response<proto::ListRunsResponse>, Status> {
        nope()
    }
    type WatchRunStream =
        Pin<Box<dyn Stream<Item = Result<proto::RunEvent, Status>> + Send + 'static>>;
    async fn watch_run(
        &self,
        _: Request<proto::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        nope()
    }
    async fn cancel_run(
        &self,
        _: Request<proto::CancelRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        nope()
    }
    async fn cancel_runs(
        &self,
        _: Request<proto::CancelRunsRequest>,
    ) -> Result<Response<proto::CancelRunsResponse>, Status> {
        nope()
    }
    async fn pause_job(
        &self,
        _: Request<proto::PauseJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        nope()
    }
    async fn resume_job(
        &self,
        _: Request<proto::ResumeJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        nope()
    }
    async fn update_job(
        &self,
        _: Request<proto::UpdateJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        nope()
    }
    async fn list_reports(
        &self,
        _: Request<proto::ListReportsRequest>,
    ) -> Result<Response<proto::ListReportsResponse>, Status> {
        nope()
    }
    async fn get_report(
        &self,
        _: Request<proto::GetReportRequest>,
    ) -> Result<Response<proto::Report>, Status> {
        nope()
    }
}

struct Pki {
    dir: std::path::PathBuf,
    ca_file: std::path::PathBuf,
    other_ca_file: std::path::PathBuf,
    cert_pem: String,
    key_pem: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "TicketMax test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A CA, a server certificate for "localhost" signed by it, and an unrelated CA.
fn pki(name: &str) -> Pki {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tm-client-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let other_ca_file = dir.join("other-ca.pem");
    std::fs::write(&other_ca_file, ca_other_pem()).unwrap();
    Pki {
        dir,
        ca_file,
        other_ca_file,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn ca_other_pem() -> String {
    ca().pem()
}

/// Serves the mock over TLS on a free port; returns the port.
async fn serve_tls(pki: &Pki) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert_pem, &pki.key_pem));
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(proto::job_service_server::JobServiceServer::new(Mock));
    tokio::spawn(async move {
        server
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    port
}

#[tokio::test]
async fn tls_with_a_ca_file_and_a_bearer_token() {
    let pki = pki("lib");
    let port = serve_tls(&pki).await;
    let url = format!("https://localhost:{port}");

    // Right CA, right token: the server sees the header.
    let client = Client::builder(&url)
        .ca_file(&pki.ca_file)
        .token(GOOD_TOKEN)
        .connect()
        .await
        .expect("TLS connect with the CA file");
    let status = client.status().await.expect("GetStatus");
    assert_eq!(status.replica_id, format!("Bearer {GOOD_TOKEN}"));

    // No token / wrong token: the server's codes come through.
    let anonymous = Client::builder(&url)
        .ca_file(&pki.ca_file)
        .connect()
        .await
        .unwrap();
    let err = anonymous.status().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert_eq!(
        err.to_string(),
        "GetStatus: missing bearer token (UNAUTHENTICATED)"
    );
    let wrong = Client::builder(&url)
        .ca_file(&pki.ca_file)
        .token("nope")
        .connect()
        .await
        .unwrap();
    let err = wrong.status().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");

    // A CA that did not sign the server certificate: the handshake fails.
    let err = Client::builder(&url)
        .ca_file(&pki.other_ca_file)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    // Web PKI roots do not know the test CA either.
    let err = Client::connect(url.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");

    // A CA file that does not exist.
    let err = Client::builder(&url)
        .ca_file(pki.dir.join("missing.pem"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[tokio::test]
async fn ticketmaxctl_over_tls_exit_codes_for_tokens() {
    let pki = pki("ctl");
    let port = serve_tls(&pki).await;
    let url = format!("https://localhost:{port}");
    let ca = pki.ca_file.to_string_lossy().into_owned();

    let run = |args: Vec<String>, token: Option<&'static str>| async move {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketmaxctl"));
        cmd.args(&args)
            .env_remove("TICKETMAX_CONTROL_PLANE_URL")
            .env_remove("TICKETMAX_TOKEN")
            .env_remove("TICKETMAX_OUTPUT")
            .env_remove("TICKETMAX_CA_FILE")
            .kill_on_drop(true);
        if let Some(t) = token {
            cmd.env("TICKETMAX_TOKEN", t);
        }
        let out = cmd.output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--url".into(), url.clone(), "--ca-file".into(), ca.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let (code, stdout, stderr) = run(args(&["-o", "json", "status"]), Some(GOOD_TOKEN)).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["replica_id"], format!("Bearer {GOOD_TOKEN}"));

    // Token from the flag beats the environment.
    let (code, _, stderr) = run(args(&["--token", "nope", "status"]), Some(GOOD_TOKEN)).await;
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    let (code, _, stderr) = run(args(&["status"]), None).await;
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // TLS without the CA (web PKI roots do not know it): the handshake fails, exit 5.
    let (code, _, stderr) = run(
        vec![
            "--url".into(),
            format!("https://localhost:{port}"),
            "status".into(),
        ],
        Some(GOOD_TOKEN),
    )
    .await;
    assert_eq!(code, 5, "{stderr}");
    // An unreadable CA file is a usage error.
    let (code, _, stderr) = run(
        vec![
            "--url".into(),
            url.clone(),
            "--ca-file".into(),
            "/nonexistent/ca.pem".into(),
            "status".into(),
        ],
        None,
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}
