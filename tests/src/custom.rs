//! Processes a test starts one by one, each with the environment it chooses: control planes
//! with their own TLS identities and tokens, executors that must be refused, processes that
//! are expected to exit at start. They join the [`TestApp`] they were started from, so their
//! logs land in its log directory, are printed when the test fails and are killed with it.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_rustls::TlsConnector;

use crate::{
    CONTROL_PLANE_BIN, ControlPlane, EXECUTOR_BIN, Executor, Proc, Readiness, Registered, TestApp,
    binary, free_addr,
};

impl TestApp {
    /// A control plane `replica_id` on fresh ports with the harness's variables (ports, store,
    /// data directory, replica id) followed by `env`, not started.
    pub(crate) fn new_control_plane(
        &self,
        replica_id: &str,
        env: Vec<(String, String)>,
        readiness: Readiness,
    ) -> ControlPlane {
        let grpc_addr = free_addr();
        let http_addr = free_addr();
        let mut all = vec![
            ("TICKETMAX_GRPC_ADDR".to_owned(), grpc_addr.to_string()),
            ("TICKETMAX_HTTP_ADDR".to_owned(), http_addr.to_string()),
            (
                "TICKETMAX_DATA_DIR".to_owned(),
                self.data_dir(replica_id).display().to_string(),
            ),
            ("TICKETMAX_REPLICA_ID".to_owned(), replica_id.to_owned()),
        ];
        // Without a Postgres store the control plane keeps it in SQLite in its data directory.
        if !self.cp_database_url.is_empty() {
            all.push(("DATABASE_URL".to_owned(), self.cp_database_url.clone()));
        }
        all.extend(env);
        let proc = self.new_proc(replica_id, CONTROL_PLANE_BIN, all);
        ControlPlane {
            proc,
            replica_id: replica_id.to_owned(),
            grpc_addr,
            http_addr,
            client: None,
            readiness,
        }
    }

    /// An executor `executor_id` registering with `control_plane_url`, on a fresh port, with
    /// the harness's variables followed by `env`, not started.
    pub(crate) fn new_executor(
        &self,
        executor_id: &str,
        control_plane_url: String,
        env: Vec<(String, String)>,
        registered: Registered,
    ) -> Executor {
        let addr = free_addr();
        let mut all = vec![
            ("TICKETMAX_EXECUTOR_ADDR".to_owned(), addr.to_string()),
            (
                "TICKETMAX_CONTROL_PLANE_URL".to_owned(),
                control_plane_url.clone(),
            ),
            (
                "TICKETING_DATABASE_URL".to_owned(),
                self.tk_database_url.clone(),
            ),
            (
                "TICKETMAX_DATA_DIR".to_owned(),
                self.data_dir(executor_id).display().to_string(),
            ),
            ("TICKETMAX_EXECUTOR_ID".to_owned(), executor_id.to_owned()),
        ];
        all.extend(env);
        let proc = self.new_proc(executor_id, EXECUTOR_BIN, all);
        Executor {
            proc,
            executor_id: executor_id.to_owned(),
            addr,
            control_plane_url,
            registered,
        }
    }

    fn new_proc(&self, name: &str, bin: &str, env: Vec<(String, String)>) -> Proc {
        Proc::new(
            name,
            binary(bin),
            Vec::new(),
            env,
            self.log_dir.join(format!("{name}.log")),
        )
        .with_clean_env(self.clean_env)
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        let dir = self.log_dir.join("data").join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }

    /// How readiness checks of control planes started from now on reach `/healthz`: plaintext
    /// (`None`) or over TLS with this client (the one their certificates and client-CA want).
    pub fn set_readiness_tls(&mut self, tls: Option<TlsConnector>) {
        self.readiness_tls = tls;
    }

    /// Starts control plane `name` with `env` (after the harness's ports, store and data
    /// directory, a 3 s executor timeout and `RUST_LOG=info`) and waits until `/healthz`
    /// answers 200; returns its gRPC and HTTP addresses.
    pub async fn start_control_plane(
        &mut self,
        name: &str,
        env: &[(&str, String)],
    ) -> (SocketAddr, SocketAddr) {
        let mut all = vec![
            (
                "TICKETMAX_EXECUTOR_TIMEOUT_MS".to_owned(),
                "3000".to_owned(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let readiness = Readiness::Healthz(self.readiness_tls.clone());
        let mut cp = self.new_control_plane(name, all, readiness);
        cp.start_on_free_ports().await;
        let addrs = (cp.grpc_addr, cp.http_addr);
        self.control_planes.push(cp);
        addrs
    }

    /// Starts executor `name` registering with the control plane at `cp` (plaintext unless
    /// `env` sets `TICKETMAX_CONTROL_PLANE_URL`), with `env`; when `wait`, waits until the store
    /// lists it as registered. Returns its address.
    pub async fn start_executor(
        &mut self,
        name: &str,
        cp: SocketAddr,
        env: &[(&str, String)],
        wait: bool,
    ) -> SocketAddr {
        let mut all = vec![("RUST_LOG".to_owned(), "info".to_owned())];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let registered = Registered::InStore(self.control_db().clone());
        let mut ex = self.new_executor(name, format!("http://{cp}"), all, registered);
        if wait {
            ex.start_on_free_port().await;
        } else {
            ex.proc.start();
        }
        let addr = ex.addr;
        self.executors.push(ex);
        addr
    }

    /// Starts `bin` as process `name` with its data directory, `RUST_LOG=info` and `env`, and
    /// does not wait for anything (for processes expected to warn or exit at start).
    pub fn start_process(&mut self, name: &str, bin: &str, env: &[(&str, String)]) -> &mut Proc {
        let mut all = vec![
            ("RUST_LOG".to_owned(), "info".to_owned()),
            (
                "TICKETMAX_DATA_DIR".to_owned(),
                self.data_dir(name).display().to_string(),
            ),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut proc = self.new_proc(name, bin, all);
        proc.start();
        self.others.push(proc);
        self.others.last_mut().expect("just pushed")
    }

    /// The process named `name` (a replica id, an executor id, or a name given to
    /// [`Self::start_process`]).
    pub fn proc(&self, name: &str) -> &Proc {
        self.procs()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("no process named {name}"))
    }

    /// SIGKILLs every process of the app.
    pub async fn kill_all(&mut self) {
        for p in self.procs_mut() {
            p.kill().await;
        }
    }

    /// Stops every process, then checks that each wrote a log and that no log file under the
    /// app's directory contains any of `secrets`.
    pub async fn stop_and_assert_no_secret_in_logs(&mut self, secrets: &[&str]) {
        self.kill_all().await;
        let files: Vec<PathBuf> = files_under(&self.log_dir)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
            .collect();
        assert!(files.len() >= self.procs().count(), "{files:?}");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            // The harness's own start and stop lines do not count as the process's output.
            let own = text.lines().filter(|l| !l.starts_with("===== e2e harness"));
            assert!(
                own.clone().any(|l| !l.trim().is_empty()),
                "{} is empty",
                f.display()
            );
            for s in secrets {
                assert!(!text.contains(s), "{} contains the secret {s}", f.display());
            }
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
