//! [`TestAppBuilder`]: what a test's system looks like (replicas, executors, store, tokens,
//! TLS, environment) and `spawn`, which creates its databases and starts it.

use crate::*;
// -------------------------------------------------------------------------------------------
// Builder
// -------------------------------------------------------------------------------------------

/// Options for [`TestApp`]: how many control planes and executors, their store, tokens, TLS and
/// extra environment.
pub struct TestAppBuilder {
    name: Option<String>,
    control_planes: usize,
    executors: usize,
    env: Vec<(String, String)>,
    cp_env: Vec<(String, String)>,
    executor_env: Vec<(String, String)>,
    wait_for_executors: bool,
    database_password: Option<String>,
    api_tokens: Vec<ApiToken>,
    harness_token: Option<String>,
    tls: bool,
    sqlite_store: bool,
    clean_env: bool,
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        Self {
            name: None,
            control_planes: 1,
            executors: 1,
            env: Vec::new(),
            cp_env: Vec::new(),
            executor_env: Vec::new(),
            wait_for_executors: true,
            database_password: None,
            api_tokens: Vec::new(),
            harness_token: None,
            tls: false,
            sqlite_store: false,
            clean_env: false,
        }
    }
}

impl TestAppBuilder {
    /// Name of the log directory (default: the test's name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// How many control-plane replicas `spawn` starts (0: the test starts its own with
    /// [`TestApp::start_control_plane`]).
    pub fn control_planes(mut self, n: usize) -> Self {
        self.control_planes = n;
        self
    }

    pub fn executors(mut self, n: usize) -> Self {
        self.executors = n;
        self
    }

    /// An environment variable for every process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// An environment variable for the control planes only.
    pub fn control_plane_env(mut self, key: &str, value: &str) -> Self {
        self.cp_env.push((key.into(), value.into()));
        self
    }

    /// An environment variable for the executors only.
    pub fn executor_env(mut self, key: &str, value: &str) -> Self {
        self.executor_env.push((key.into(), value.into()));
        self
    }

    /// An API token on the control planes (`TICKETMAX_API_TOKENS`, hashed by the control
    /// plane's own `hash-token`). The harness's own calls carry no token unless one is set
    /// with [`Self::operator_token`]; without one, readiness is read from `/healthz` and the
    /// app has no harness client.
    pub fn api_token(mut self, name: &str, role: &str, secret: &str) -> Self {
        self.api_tokens.push(ApiToken::new(name, role, secret));
        self
    }

    /// Two API tokens: `dashboard` as viewer ([`tokens::VIEWER_TOKEN`]) and `ops` as operator
    /// ([`tokens::OPERATOR_TOKEN`]), neither carried by the harness's calls.
    pub fn viewer_and_operator(self) -> Self {
        self.api_token("dashboard", "viewer", tokens::VIEWER_TOKEN)
            .api_token("ops", "operator", tokens::OPERATOR_TOKEN)
    }

    /// An operator token `name` on the control planes that the harness's own calls carry.
    pub fn operator_token(mut self, name: &str, token: &str) -> Self {
        self.harness_token = Some(token.to_owned());
        self.api_token(name, "operator", token)
    }

    /// Control planes serve TLS with a certificate for `localhost` and `127.0.0.1` from a CA
    /// the harness makes ([`TestApp::ca_file`]); readiness is read from `/healthz` over TLS.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Control planes keep their store in the embedded SQLite database of their data
    /// directory instead of Postgres (the product's default); [`TestApp::control_db`] is then
    /// not available.
    pub fn sqlite_store(mut self) -> Self {
        self.sqlite_store = true;
        self
    }

    /// Every process starts from an empty environment (only `PATH` and what the harness and
    /// the test set), as on a clean server.
    pub fn clean_env(mut self) -> Self {
        self.clean_env = true;
        self
    }

    /// A password in both processes' database URLs (the test server trusts every local
    /// connection, so it is sent nowhere, but the processes hold it as a secret).
    pub fn database_password(mut self, password: &str) -> Self {
        self.database_password = Some(password.to_owned());
        self
    }

    /// Whether `spawn` waits for the executors to be live (default true).
    pub fn wait_for_executors(mut self, wait: bool) -> Self {
        self.wait_for_executors = wait;
        self
    }

    pub async fn spawn(self) -> TestApp {
        if let Some(token) = &self.harness_token {
            let _ = HARNESS_TOKEN.set(token.clone());
        }
        let name = self.name.clone().unwrap_or_else(current_test_name);
        let log_dir = target_dir().join("e2e-logs").join(&name);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_dir.display()));
        eprintln!("[e2e] {name}: process logs in {}", log_dir.display());

        // Postgres is needed for the control planes' store unless it is SQLite, and for the
        // ticketing data whenever an executor may run.
        let needs_postgres = !self.sqlite_store || self.executors > 0;
        let server = if needs_postgres {
            server_url()
        } else {
            String::new()
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let cp_db = format!("tm_cp_{id}");
        let tk_db = format!("tm_tk_{id}");
        // Registered for dropping before anything else can fail.
        let mut app = TestApp {
            name,
            log_dir: log_dir.clone(),
            server_url: server.clone(),
            cp_database_url: String::new(),
            tk_database_url: String::new(),
            databases: Vec::new(),
            control_planes: Vec::new(),
            executors: Vec::new(),
            others: Vec::new(),
            silenced: std::sync::Mutex::new(None),
            control_db: None,
            ticketing_db: None,
            ca_pem: None,
            clean_env: self.clean_env,
            readiness_tls: None,
        };
        let mut create = Vec::new();
        if !self.sqlite_store {
            app.cp_database_url = database_url(&server, &cp_db);
            create.push(cp_db);
        }
        if needs_postgres {
            app.tk_database_url = database_url(&server, &tk_db);
            create.push(tk_db);
        }
        for db in create {
            db::create_database(&server, &db).await;
            app.databases.push(db);
        }
        if let Some(pw) = &self.database_password {
            app.cp_database_url = with_password(&app.cp_database_url, pw);
            app.tk_database_url = with_password(&app.tk_database_url, pw);
        }
        if !app.cp_database_url.is_empty() {
            app.control_db = Some(db::connect(&app.cp_database_url, 3).await);
        }
        if !app.tk_database_url.is_empty() {
            app.ticketing_db = Some(db::connect(&app.tk_database_url, 3).await);
        }

        let mut cp_env = self.cp_env.clone();
        if self.tls {
            let ca = pki::make_ca("TicketMax test CA");
            let (cert, key) = pki::leaf(&ca, &["localhost", "127.0.0.1"], "localhost");
            pki::write_pem(&log_dir, "ca.pem", &ca.pem());
            cp_env.push((
                "TICKETMAX_TLS_CERT".into(),
                pki::write_pem(&log_dir, "server.pem", &cert),
            ));
            cp_env.push((
                "TICKETMAX_TLS_KEY".into(),
                pki::write_pem(&log_dir, "server.key", &key),
            ));
            app.readiness_tls = Some(http::https_client(&ca.pem(), None));
            app.ca_pem = Some(ca.pem());
        }
        if !self.api_tokens.is_empty() {
            cp_env.push((
                "TICKETMAX_API_TOKENS".into(),
                tokens::api_tokens_env(&self.api_tokens),
            ));
        }
        // The harness calls GetStatus itself when it can: plaintext, and a token if one is
        // required.
        let callable = !self.tls && (self.api_tokens.is_empty() || self.harness_token.is_some());
        let readiness = if callable {
            Readiness::GetStatus
        } else {
            Readiness::Healthz(app.readiness_tls.clone())
        };

        let base_env = |extra: &[(String, String)]| -> Vec<(String, String)> {
            let mut v = vec![("RUST_LOG".to_owned(), "info".to_owned())];
            v.extend(self.env.iter().cloned());
            v.extend(extra.iter().cloned());
            v
        };

        for i in 1..=self.control_planes {
            let replica_id = format!("cp-{i}");
            let mut env = vec![
                (
                    "TICKETMAX_EXECUTOR_TIMEOUT_MS".to_owned(),
                    "3000".to_owned(),
                ),
                // Tests trigger jobs with a fixed past `as_of` (their data is built around it),
                // so the control plane's as_of horizon must reach back far enough.
                (
                    "TICKETMAX_AS_OF_HORIZON_DAYS".to_owned(),
                    "36500".to_owned(),
                ),
            ];
            env.extend(base_env(&cp_env));
            let cp = app.new_control_plane(&replica_id, env, readiness.clone());
            app.control_planes.push(cp);
        }
        // Start replicas one after the other: the first one runs the store's migrations.
        for cp in &mut app.control_planes {
            cp.start_on_free_ports().await;
        }

        let registered = match (&readiness, &app.control_db) {
            (Readiness::Healthz(_), Some(db)) => Registered::InStore(db.clone()),
            _ => Registered::InGetStatus,
        };
        for i in 1..=self.executors {
            let executor_id = format!("ex-{i}");
            let control_plane_url = app.control_planes[(i - 1) % app.control_planes.len()].url();
            let env = vec![
                // Newsletter and marketing jobs refuse to run without it; a test may override
                // it (an empty value is unset).
                (
                    "TICKETMAX_UNSUBSCRIBE_SECRET".to_owned(),
                    UNSUBSCRIBE_SECRET.to_owned(),
                ),
            ];
            let mut env = env;
            env.extend(base_env(&self.executor_env));
            let ex = app.new_executor(&executor_id, control_plane_url, env, registered.clone());
            app.executors.push(ex);
        }
        for ex in &mut app.executors {
            if self.wait_for_executors {
                ex.start_on_free_port().await;
            } else {
                ex.proc.start();
            }
        }
        app
    }
}

// -------------------------------------------------------------------------------------------
// TestApp
// -------------------------------------------------------------------------------------------

/// `url` with `password` in its user info (user `postgres` when it names none).
pub(crate) fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or("postgres");
            format!("{scheme}://{user}:{password}@{host}")
        }
        None => format!("{scheme}://postgres:{password}@{rest}"),
    }
}
