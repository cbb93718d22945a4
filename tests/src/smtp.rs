//! A real SMTP server for the e-mail tests: `python3 -m aiosmtpd` writing a Maildir (plain,
//! STARTTLS or implicit TLS), the delivered messages parsed back by Python's `email` package (no
//! Rust MIME parser to trust), and a black hole that accepts connections and never answers.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{millis, secs};

pub struct SmtpServer {
    child: Option<tokio::process::Child>,
    pub port: u16,
    pub maildir: PathBuf,
    pub log: PathBuf,
    /// aiosmtpd's TLS flags: `--tlscert/--tlskey` (STARTTLS, then required) or
    /// `--smtpscert/--smtpskey` (implicit TLS).
    tls_args: Vec<String>,
}

impl SmtpServer {
    pub fn new(port: u16, dir: &Path) -> Self {
        SmtpServer {
            child: None,
            port,
            maildir: dir.join("maildir"),
            log: dir.join("aiosmtpd.log"),
            tls_args: Vec::new(),
        }
    }

    /// Serves STARTTLS (and refuses mail without it) with this certificate and key file.
    pub fn with_starttls(mut self, cert: &str, key: &str) -> Self {
        self.tls_args = vec![
            "--tlscert".into(),
            cert.into(),
            "--tlskey".into(),
            key.into(),
        ];
        self
    }

    /// Serves implicit TLS (SMTPS) with this certificate and key file.
    pub fn with_implicit_tls(mut self, cert: &str, key: &str) -> Self {
        self.tls_args = vec![
            "--smtpscert".into(),
            cert.into(),
            "--smtpskey".into(),
            key.into(),
        ];
        self
    }

    pub fn implicit_tls(&self) -> bool {
        self.tls_args.first().is_some_and(|a| a == "--smtpscert")
    }

    /// Starts aiosmtpd and waits until it greets with 220.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "aiosmtpd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open aiosmtpd log");
        let child = tokio::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.tls_args)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn `python3 -m aiosmtpd` (pip install aiosmtpd)");
        self.child = Some(child);
        let deadline = Instant::now() + secs(20);
        loop {
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(secs(2), TcpStream::connect(("127.0.0.1", self.port))).await
            {
                // Behind implicit TLS the greeting comes after a handshake: listening will do.
                if self.implicit_tls() {
                    return;
                }
                let mut buf = [0u8; 64];
                if let Ok(Ok(n)) = tokio::time::timeout(secs(2), s.read(&mut buf)).await
                    && buf[..n].starts_with(b"220")
                {
                    let _ = s.write_all(b"QUIT\r\n").await;
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "aiosmtpd exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd on port {} did not greet within 20 s: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(millis(100)).await;
        }
    }

    /// Files delivered so far (Maildir `new/` and `cur/`).
    pub fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.maildir.join(d)).ok())
            .map(|entries| entries.filter_map(Result::ok).count())
            .sum()
    }

    /// Every delivered message, parsed by Python's `email` package.
    pub fn messages(&self) -> Vec<Mail> {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(PARSE_MAILDIR)
            .arg(&self.maildir)
            .output()
            .expect("run python3 to parse the Maildir");
        assert!(
            out.status.success(),
            "parsing the Maildir failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Vec<Json> = serde_json::from_slice(&out.stdout).expect("Maildir JSON");
        parsed.into_iter().map(Mail::from).collect()
    }
}

/// Decodes headers (RFC 2047) and bodies (base64 / quoted-printable / charset) with the standard
/// library's e-mail parser and prints one JSON object per message file.
const PARSE_MAILDIR: &str = r#"
import email, json, os, sys
from email import policy
root = sys.argv[1]
out = []
for sub in ("new", "cur"):
    d = os.path.join(root, sub)
    if not os.path.isdir(d):
        continue
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            m = email.message_from_binary_file(f, policy=policy.default)
        parts = []
        for p in m.walk():
            if p.is_multipart():
                continue
            parts.append({"type": p.get_content_type(), "body": p.get_content()})
        out.append({
            "file": name,
            "headers": [k for k in m.keys()],
            "list_unsubscribe": str(m.get("List-Unsubscribe", "")),
            "list_unsubscribe_post": str(m.get("List-Unsubscribe-Post", "")),
            "to": str(m.get("To", "")),
            "rcpt": str(m.get("X-RcptTo", "")),
            "from": str(m.get("From", "")),
            "subject": str(m.get("Subject", "")),
            "message_id": str(m.get("Message-ID", "")),
            "content_type": m.get_content_type(),
            "parts": parts,
        })
print(json.dumps(out))
"#;

#[derive(Debug, Clone)]
pub struct Mail {
    pub file: String,
    /// Header names, in order.
    pub headers: Vec<String>,
    pub list_unsubscribe: String,
    pub list_unsubscribe_post: String,
    pub to: String,
    pub rcpt: String,
    pub from: String,
    pub subject: String,
    pub message_id: String,
    pub content_type: String,
    pub parts: Vec<(String, String)>,
}

impl From<Json> for Mail {
    fn from(v: Json) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Mail {
            file: s("file"),
            headers: v["headers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            list_unsubscribe: s("list_unsubscribe"),
            list_unsubscribe_post: s("list_unsubscribe_post"),
            to: s("to"),
            rcpt: s("rcpt"),
            from: s("from"),
            subject: s("subject"),
            message_id: s("message_id"),
            content_type: s("content_type"),
            parts: v["parts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (
                                p["type"].as_str().unwrap_or_default().to_owned(),
                                p["body"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl Mail {
    /// The outbox id in the Message-ID `<ID.dedupe-key@ticketmax>`.
    pub fn outbox_id(&self) -> Option<i64> {
        self.message_id
            .trim()
            .trim_start_matches('<')
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    pub fn part(&self, content_type: &str) -> &str {
        let found: Vec<_> = self
            .parts
            .iter()
            .filter(|(t, _)| t == content_type)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "message {} ({}) must have exactly one {content_type} part; parts: {:?}",
            self.file,
            self.subject,
            self.parts.iter().map(|(t, _)| t).collect::<Vec<_>>()
        );
        &found[0].1
    }

    pub fn text(&self) -> &str {
        self.part("text/plain")
    }

    pub fn html(&self) -> &str {
        self.part("text/html")
    }
}

/// A TCP server that accepts connections and never says a word: an SMTP session to it hangs
/// (the client waits for the 220 greeting), which pins the sender between claim and send.
pub struct BlackHole {
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the black hole");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        BlackHole { accepted, task }
    }

    /// Closes the listener and every held connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
