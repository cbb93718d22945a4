//! One spawned binary: its command line, environment and log file, and the live child process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Variables of the products that must never leak from the test's own environment into a child:
/// every child gets exactly what the harness gives it.
const SCRUBBED_VARS: &[&str] = &[
    "DATABASE_URL",
    "TICKETING_DATABASE_URL",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USER",
    "SMTP_PASS",
    "SMTP_FROM",
    "FRONTEND_URL",
    "ADMIN_EMAILS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LOG_FORMAT",
];

/// A process of the system under test. The child is killed (SIGKILL) when this is dropped, so no
/// orphan outlives a failed test.
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Start from an empty environment (only `PATH` kept) instead of the test's, scrubbed.
    clean_env: bool,
}

impl Proc {
    pub(crate) fn new(
        name: impl Into<String>,
        program: PathBuf,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log_path: PathBuf,
    ) -> Self {
        Self {
            name: name.into(),
            program,
            args,
            envs,
            log_path,
            child: None,
            starts: 0,
            clean_env: false,
        }
    }

    /// Starts from an empty environment from now on: only `PATH` and what the harness sets.
    pub(crate) fn with_clean_env(mut self, clean: bool) -> Self {
        self.clean_env = clean;
        self
    }

    /// "cp-1", "ex-2", ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that receives this process's stdout and stderr (all of its starts, appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The value the harness gave an environment variable of this process.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.envs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_owned(), value.to_owned()));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Starts the process. Panics if it is already running.
    pub fn start(&mut self) {
        assert!(
            !self.is_running(),
            "{} is already running (pid {:?})",
            self.name,
            self.pid()
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        writeln!(
            log,
            "===== e2e harness: start #{} of {} at {} =====",
            self.starts,
            self.name,
            chrono::Utc::now().to_rfc3339()
        )
        .ok();
        let stderr = log.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        if self.clean_env {
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        } else {
            for (k, _) in std::env::vars() {
                if k.starts_with("TICKETMAX_") || SCRUBBED_VARS.contains(&k.as_str()) {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot spawn {} ({}): {e}; build the binaries first (./scripts/test.sh does)",
                self.name,
                self.program.display()
            )
        });
        self.child = Some(child);
    }

    /// Whether the child is alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// The exit status if the process has exited; `None` while it runs or if it never started.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, then reap. No-op if not running.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            self.note("killed (SIGKILL)");
        }
    }

    /// SIGTERM, then wait up to `grace` for the process to exit by itself; SIGKILL after that.
    /// Returns the exit status when it exited within the grace period.
    pub async fn terminate_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on the pid of our own child, which has not been reaped yet
            // (tokio reaps it only in `wait`), so the pid cannot have been reused.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => {
                self.note(&format!("terminated (SIGTERM): {status}"));
                Some(status)
            }
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                self.note("did not exit within the grace period after SIGTERM: killed");
                None
            }
        }
    }

    /// SIGTERM with a 15 s grace period.
    pub async fn terminate(&mut self) -> Option<ExitStatus> {
        self.terminate_within(Duration::from_secs(15)).await
    }

    /// SIGKILL (if running), then start again with the same command line and environment.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start();
    }

    /// Sends SIGKILL without waiting (used on drop).
    pub(crate) fn start_kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }

    /// The whole log file.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    /// The last `lines` lines of the log file (reads at most the last 256 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut f) = File::open(&self.log_path) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = len.saturating_sub(256 * 1024);
        let _ = f.seek(SeekFrom::Start(from));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn note(&self, what: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(
                f,
                "===== e2e harness: {} {what} at {} =====",
                self.name,
                chrono::Utc::now().to_rfc3339()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.start_kill();
    }
}
