//! Delivery of the e-mail outbox: claims due rows in batches and sends them over SMTP (pooled)
//! or writes them as .eml files; retries transient failures with exponential backoff.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use sea_orm::{DatabaseConnection, DbBackend, DbErr};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, SmtpSecurity};
use crate::db::{Dialect, Sql, col};

pub mod money;
pub mod pickup;
pub mod smtp;
pub mod templates;
pub mod unsubscribe;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid SMTP_FROM address '{0}': {1}")]
    From(String, String),
    #[error("cannot set up the SMTP transport to {host}: {source}")]
    Smtp {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot create the mail directory {0}: {1}")]
    MailDir(String, #[source] std::io::Error),
    #[error("cannot read SMTP_CA_FILE {0}: {1}")]
    CaFile(String, #[source] std::io::Error),
    #[error("SMTP TLS settings: {0}")]
    Tls(String),
}

enum Transport {
    /// The embedded default: one `<outbox id>.eml` file per e-mail.
    Files(PathBuf),
    /// SMTP (plaintext, STARTTLS or implicit TLS): our pool, sockets with TCP_NODELAY (see
    /// [`smtp`]).
    Smtp(smtp::SmtpPool),
}

/// Why a delivery did not succeed.
enum Failure {
    /// Worth retrying later (connection trouble, 4xx).
    Transient(String),
    /// Will never succeed (5xx, malformed address).
    Permanent(String),
}

struct Claimed {
    /// The lease this sender holds on the row: its token (a fresh one per claim, so another
    /// sender's later claim replaces it) and when it runs out.
    lease: Arc<Lease>,
    id: i64,
    dedupe_key: String,
    kind: String,
    recipient: String,
    subject: String,
    payload: String,
    attempts: i64,
    trace_parent: Option<String>,
}

struct Lease {
    token: String,
    until: chrono::DateTime<Utc>,
}

/// Deliveries of this process, reported to the control plane with each heartbeat.
#[derive(Default)]
pub struct MailStats {
    pub sent: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

pub static STATS: MailStats = MailStats {
    sent: std::sync::atomic::AtomicU64::new(0),
    failed: std::sync::atomic::AtomicU64::new(0),
};

/// The same deliveries over OTLP, by kind and outcome. Built on first use, which is after
/// telemetry has installed the meter provider.
static EMAILS: std::sync::LazyLock<opentelemetry::metrics::Counter<u64>> =
    std::sync::LazyLock::new(|| {
        opentelemetry::global::meter("ticketmax-executor")
            .u64_counter("ticketmax.emails")
            .with_description(
                "E-mails delivered (outcome sent) or given up (outcome failed), by kind",
            )
            .build()
    });

fn count_email(kind: &str, outcome: &'static str) {
    let counter = match outcome {
        "sent" => &STATS.sent,
        _ => &STATS.failed,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    EMAILS.add(
        1,
        &[
            opentelemetry::KeyValue::new("kind", kind.to_owned()),
            opentelemetry::KeyValue::new("outcome", outcome),
        ],
    );
}

pub struct Sender {
    db: DatabaseConnection,
    dialect: Dialect,
    transport: Transport,
    from: Mailbox,
    frontend_url: String,
    unsubscribe: Option<unsubscribe::Unsubscribe>,
    lease: chrono::Duration,
    max_attempts: i64,
    /// Woken by this process's tasks when they queue e-mails and, on Postgres, by
    /// [`pickup::listen`] when another process inserts outbox rows.
    wake: Arc<Notify>,
    /// How long an idle sender waits for a wake-up before it claims anyway: the fallback for
    /// rows whose notification was missed, and the only pickup of other processes' rows on
    /// SQLite.
    idle_poll: Duration,
    /// Send-rate limit: the interval between two sends, and the next free slot.
    pace: Option<Duration>,
    next_slot: tokio::sync::Mutex<tokio::time::Instant>,
}

const BATCH: i64 = 50;
const CONCURRENCY: usize = 4;
/// Sent e-mails recorded per UPDATE: the most a crash can send twice.
const MARK_EVERY: usize = 16;

impl Sender {
    pub fn new(
        config: &Config,
        db: DatabaseConnection,
        dialect: Dialect,
        mail_dir: PathBuf,
        wake: Arc<Notify>,
        unsubscribe: Option<unsubscribe::Unsubscribe>,
    ) -> Result<Self, MailError> {
        let from: Mailbox =
            config
                .smtp_from
                .parse()
                .map_err(|e: lettre::address::AddressError| {
                    MailError::From(config.smtp_from.clone(), e.to_string())
                })?;
        let transport = match &config.smtp_host {
            Some(host) if !host.trim().is_empty() => smtp_transport(config, host)?,
            _ => {
                std::fs::create_dir_all(&mail_dir)
                    .map_err(|e| MailError::MailDir(mail_dir.display().to_string(), e))?;
                Transport::Files(mail_dir)
            }
        };
        Ok(Sender {
            db,
            dialect,
            transport,
            from,
            frontend_url: config.frontend_url.clone(),
            unsubscribe,
            lease: chrono::Duration::seconds(
                i64::try_from(config.mail_lease_seconds).unwrap_or(300),
            ),
            max_attempts: i64::from(config.mail_max_attempts.max(1)),
            wake,
            idle_poll: Duration::from_millis(config.mail_poll_ms.max(1)),
            pace: (config.mail_rate_per_second > 0)
                .then(|| Duration::from_secs(1) / config.mail_rate_per_second),
            next_slot: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        })
    }

    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Files(dir) => format!(".eml files in {}", dir.display()),
            Transport::Smtp(_) => "SMTP".to_owned(),
        }
    }

    /// Delivers until `shutdown`; a batch in flight is finished first. On Postgres a
    /// [`pickup::listen`] task wakes the sender for rows other processes insert; it stops with
    /// `shutdown` and is awaited before this returns.
    pub async fn run(self, shutdown: CancellationToken) {
        // `get_postgres_connection_pool` panics on any other backend, hence the check first.
        let listener = (self.db.get_database_backend() == DbBackend::Postgres).then(|| {
            tokio::spawn(pickup::listen(
                self.db.get_postgres_connection_pool().clone(),
                self.wake.clone(),
                shutdown.child_token(),
            ))
        });
        self.deliver_until(&shutdown).await;
        if let Some(listener) = listener
            && let Err(e) = listener.await
        {
            tracing::warn!(error = %e, "the outbox listener task failed");
        }
    }

    async fn deliver_until(&self, shutdown: &CancellationToken) {
        let mut db_down = false;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.claim().await {
                Ok(batch) if !batch.is_empty() => {
                    db_down = false;
                    self.deliver_batch(batch).await;
                    continue;
                }
                Ok(_) => db_down = false,
                Err(e) => {
                    if !db_down {
                        tracing::warn!(error = %e, "cannot claim e-mails from the outbox; retrying");
                        db_down = true;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.idle_poll) => {}
            }
        }
    }

    /// Delivers a claimed batch, MARK_EVERY messages at a time, and records the sent ones of
    /// each group in one UPDATE: one commit per message was the sender's bottleneck. A crash
    /// before that UPDATE re-sends at most one group after the lease (same Message-ID).
    async fn deliver_batch(&self, batch: Vec<Claimed>) {
        let mut items = batch.into_iter().peekable();
        while items.peek().is_some() {
            let group: Vec<Claimed> = items.by_ref().take(MARK_EVERY).collect();
            let sent: Vec<(i64, Arc<Lease>)> = futures::stream::iter(group)
                .map(|item| self.deliver(item))
                .buffer_unordered(CONCURRENCY)
                .filter_map(|id| async move { id })
                .collect()
                .await;
            if sent.is_empty() {
                continue;
            }
            match self.mark_sent(&sent).await {
                Ok(marked) if marked < sent.len() as u64 => {
                    tracing::warn!(
                        sent = sent.len(),
                        marked,
                        "e-mails were sent after their lease passed to another sender; \
                         that sender records them"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    // The lease expires and the rows are retried: duplicates, never a loss.
                    tracing::warn!(count = sent.len(), error = %e, "cannot record e-mails as sent");
                }
            }
        }
    }

    /// Leases up to BATCH due rows: their next attempt moves past the lease, so another sender
    /// (or this one after a crash) only retries them once the lease has run out, and they get
    /// this claim's token, which every later UPDATE of this sender requires.
    async fn claim(&self) -> Result<Vec<Claimed>, DbErr> {
        let now = Utc::now();
        let lease = Arc::new(Lease {
            token: uuid::Uuid::new_v4().simple().to_string(),
            until: now + self.lease,
        });
        let mut q = Sql::new(self.dialect);
        let (at, until, limit) = (q.bind(now), q.bind(lease.until), q.bind(BATCH));
        let token = q.bind(lease.token.clone());
        let d = self.dialect;
        q.push(&format!(
            "{picked}UPDATE email_outbox SET attempts = attempts + 1, next_attempt_at = {until}, \
             lease_token = {token} WHERE id IN (SELECT id FROM picked) \
             AND status = 'pending' AND {due} \
             RETURNING id, dedupe_key, kind, recipient, subject, payload, attempts, trace_parent",
            due = d.cmp("next_attempt_at", "<=", &at),
            picked = self.dialect.picked(
                &format!(
                    "SELECT o.id FROM email_outbox o WHERE o.status = 'pending' \
                     AND {} ORDER BY {}, o.id LIMIT {limit}",
                    d.cmp("o.next_attempt_at", "<=", &at),
                    d.ts("o.next_attempt_at"),
                ),
                "o"
            )
        ));
        q.fetch_all(&self.db)
            .await?
            .iter()
            .map(|r| {
                Ok(Claimed {
                    lease: lease.clone(),
                    id: col(r, 0)?,
                    dedupe_key: col(r, 1)?,
                    kind: col(r, 2)?,
                    recipient: col(r, 3)?,
                    subject: col(r, 4)?,
                    payload: col(r, 5)?,
                    attempts: col(r, 6)?,
                    trace_parent: col(r, 7)?,
                })
            })
            .collect()
    }

    /// One delivery, and the recording of its outcome, under an `smtp.send` span.
    /// Waits for the next send slot when a rate limit is set.
    async fn pace(&self) {
        let Some(interval) = self.pace else {
            return;
        };
        let slot = {
            let mut next = self.next_slot.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// How much of its lease a row must have left for a send to start: a send takes up to the
    /// SMTP timeout, and one still running when the lease passes to another sender could deliver
    /// the e-mail twice.
    fn send_margin(&self) -> chrono::Duration {
        (self.lease / 2).min(chrono::Duration::seconds(60))
    }

    /// Sends one e-mail; its outbox id (and lease) when it was sent and is still to be marked
    /// `sent`. A row whose lease is about to run out is left alone: it is due again right away,
    /// for whichever sender claims it next.
    async fn deliver(&self, item: Claimed) -> Option<(i64, Arc<Lease>)> {
        self.pace().await;
        if Utc::now() + self.send_margin() > item.lease.until {
            tracing::warn!(outbox_id = item.id, kind = %item.kind, "lease of the e-mail runs out before it could be sent; left for the next claim");
            return None;
        }
        let transport = match &self.transport {
            Transport::Files(_) => "eml",
            Transport::Smtp(_) => "smtp",
        };
        let span = tracing::info_span!("smtp.send", outbox_id = item.id, kind = %item.kind, attempt = item.attempts, transport, outcome = tracing::field::Empty);
        // Delivery happens after the run, but belongs to its trace.
        if let Some(tp) = &item.trace_parent {
            ticketmax_runtime::telemetry::adopt_traceparent(&span, tp);
        }
        self.deliver_in(item, span.clone()).instrument(span).await
    }

    async fn deliver_in(&self, item: Claimed, span: tracing::Span) -> Option<(i64, Arc<Lease>)> {
        let result = match self.message(&item) {
            Ok(message) => self.send(&item, message).await,
            Err(failure) => Err(failure),
        };
        span.record(
            "outcome",
            match &result {
                Ok(()) => "sent",
                Err(Failure::Transient(_)) => "transient_error",
                Err(Failure::Permanent(_)) => "permanent_error",
            },
        );
        let outcome = match result {
            Ok(()) => {
                count_email(&item.kind, "sent");
                return Some((item.id, item.lease));
            }
            Err(Failure::Transient(error)) if item.attempts < self.max_attempts => {
                let backoff = retry_delay(item.attempts);
                tracing::warn!(outbox_id = item.id, kind = %item.kind, attempts = item.attempts, %error, retry_in_s = backoff.num_seconds(), "e-mail delivery failed; will retry");
                self.mark_retry(item.id, &item.lease, &error, backoff).await
            }
            Err(Failure::Transient(error) | Failure::Permanent(error)) => {
                tracing::error!(outbox_id = item.id, kind = %item.kind, attempts = item.attempts, %error, "e-mail delivery failed for good");
                count_email(&item.kind, "failed");
                self.mark_failed(item.id, &item.lease, &error).await
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(outbox_id = item.id, error = %e, "cannot record e-mail delivery outcome");
        }
        None
    }

    fn message(&self, item: &Claimed) -> Result<Message, Failure> {
        let to: Mailbox = item.recipient.parse().map_err(|e| {
            Failure::Permanent(format!("invalid recipient '{}': {e}", item.recipient))
        })?;
        let payload: serde_json::Value = serde_json::from_str(&item.payload)
            .map_err(|e| Failure::Permanent(format!("invalid payload JSON: {e}")))?;
        let links = self.unsubscribe_links(&payload)?;
        let body = templates::render(&item.kind, &payload, &self.frontend_url, links.as_ref())
            .map_err(|e| {
                Failure::Permanent(format!("cannot render the {} template: {e}", item.kind))
            })?;
        // A stable Message-ID per outbox row lets receivers drop a redelivered copy.
        let message_id = format!(
            "<{}.{}@ticketmax>",
            item.id,
            item.dedupe_key
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '.'
                })
                .collect::<String>()
        );
        let mut message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(templates::one_line(&item.subject))
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(body.text, body.html))
            .map_err(|e| Failure::Permanent(format!("cannot build the message: {e}")))?;
        if let Some(links) = links {
            // RFC 8058 one-click unsubscribe. The values hold only the link's and the mailto's
            // characters (checked when configured), so no user data reaches these headers.
            let headers = message.headers_mut();
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                links.list_unsubscribe,
            ));
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                links.list_unsubscribe_post.to_owned(),
            ));
        }
        Ok(message)
    }

    /// The signed unsubscribe links of a newsletter or marketing e-mail (its payload names the
    /// `unsubscribe_list` and the `user_id`); None for transactional mail.
    fn unsubscribe_links(
        &self,
        payload: &serde_json::Value,
    ) -> Result<Option<unsubscribe::Links>, Failure> {
        let Some(list) = payload.get("unsubscribe_list").and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        let list = unsubscribe::List::parse(list)
            .ok_or_else(|| Failure::Permanent(format!("unknown unsubscribe list '{list}'")))?;
        let user = payload
            .get("user_id")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .ok_or_else(|| Failure::Permanent("marketing e-mail without a user_id".into()))?;
        match &self.unsubscribe {
            Some(u) => Ok(Some(u.links(user, list))),
            // Another executor with the secret may deliver it; never without the link.
            None => Err(Failure::Transient(
                "TICKETMAX_UNSUBSCRIBE_SECRET is not set on this executor: a newsletter or \
                 marketing e-mail is never sent without its unsubscribe link"
                    .into(),
            )),
        }
    }

    async fn send(&self, item: &Claimed, message: Message) -> Result<(), Failure> {
        match &self.transport {
            Transport::Files(dir) => {
                let path = dir.join(format!("{}.eml", item.id));
                let tmp = dir.join(format!(".{}.eml.tmp", item.id));
                // Written under a temporary name and renamed: a crash never leaves half a file,
                // and a redelivery replaces the same file instead of adding a second one.
                let bytes = message.formatted();
                tokio::fs::write(&tmp, &bytes)
                    .await
                    .map_err(|e| Failure::Transient(format!("writing {}: {e}", tmp.display())))?;
                tokio::fs::rename(&tmp, &path).await.map_err(|e| {
                    Failure::Transient(format!("renaming to {}: {e}", path.display()))
                })?;
                tracing::debug!(outbox_id = item.id, path = %path.display(), "e-mail written");
                Ok(())
            }
            Transport::Smtp(pool) => {
                match pool.send(message.envelope(), &message.formatted()).await {
                    Ok(()) => {
                        tracing::info!(outbox_id = item.id, kind = %item.kind, "e-mail sent");
                        Ok(())
                    }
                    Err(smtp::SendError::Connection(e)) => Err(Failure::Transient(e)),
                    Err(smtp::SendError::Smtp(e)) if e.is_permanent() => {
                        Err(Failure::Permanent(e.to_string()))
                    }
                    Err(smtp::SendError::Smtp(e)) => Err(Failure::Transient(e.to_string())),
                }
            }
        }
    }

    /// Records the sent rows still leased to this sender. The token is the lease: it changes
    /// exactly when another sender claims the row, so a row sent after its lease passed on is
    /// left to its new holder. A lease that ran out without a new claim is still ours, and
    /// marking its row sent is what keeps it from being sent again.
    async fn mark_sent(&self, sent: &[(i64, Arc<Lease>)]) -> Result<u64, DbErr> {
        let mut by_lease: Vec<(&Arc<Lease>, Vec<i64>)> = Vec::new();
        for (id, lease) in sent {
            match by_lease.iter_mut().find(|(l, _)| Arc::ptr_eq(l, lease)) {
                Some((_, ids)) => ids.push(*id),
                None => by_lease.push((lease, vec![*id])),
            }
        }
        let mut marked = 0;
        for (lease, ids) in by_lease {
            let mut q = Sql::new(self.dialect);
            let (now, ids) = (q.bind(Utc::now()), q.bind_list(ids));
            let token = q.bind(lease.token.clone());
            q.push(&format!(
                "UPDATE email_outbox SET status = 'sent', sent_at = {now}, last_error = NULL \
                 WHERE id IN ({ids}) AND status = 'pending' AND lease_token = {token}"
            ));
            marked += q.execute(&self.db).await?;
        }
        Ok(marked)
    }

    async fn mark_retry(
        &self,
        id: i64,
        lease: &Lease,
        error: &str,
        delay: chrono::Duration,
    ) -> Result<u64, DbErr> {
        let mut q = Sql::new(self.dialect);
        let (next, error, id) = (
            q.bind(Utc::now() + delay),
            q.bind(error.to_owned()),
            q.bind(id),
        );
        let token = q.bind(lease.token.clone());
        q.push(&format!(
            "UPDATE email_outbox SET next_attempt_at = {next}, last_error = {error} \
             WHERE id = {id} AND status = 'pending' AND lease_token = {token}"
        ));
        q.execute(&self.db).await
    }

    async fn mark_failed(&self, id: i64, lease: &Lease, error: &str) -> Result<u64, DbErr> {
        let mut q = Sql::new(self.dialect);
        let (error, id) = (q.bind(error.to_owned()), q.bind(id));
        let token = q.bind(lease.token.clone());
        q.push(&format!(
            "UPDATE email_outbox SET status = 'failed', last_error = {error} \
             WHERE id = {id} AND status = 'pending' AND lease_token = {token}"
        ));
        q.execute(&self.db).await
    }
}

/// 30 s, 1 min, 2 min, ... capped at 1 h.
fn retry_delay(attempts: i64) -> chrono::Duration {
    let exp = u32::try_from(attempts.clamp(1, 8) - 1).unwrap_or(0);
    chrono::Duration::seconds((30_i64 << exp).min(3600))
}

fn smtp_transport(config: &Config, host: &str) -> Result<Transport, MailError> {
    let port = config.smtp_port.unwrap_or(587);
    let err = |source| MailError::Smtp {
        host: host.to_owned(),
        source,
    };
    let security = match config.smtp_security {
        SmtpSecurity::Auto => match port {
            465 => SmtpSecurity::Tls,
            587 => SmtpSecurity::Starttls,
            _ => SmtpSecurity::Auto,
        },
        other => other,
    };
    let credentials = config
        .smtp_user
        .as_ref()
        .map(|user| Credentials::new(user.clone(), config.smtp_pass.clone().unwrap_or_default()));
    let timeout = Duration::from_secs(30);
    let pool = |security| {
        Transport::Smtp(smtp::SmtpPool::new(
            host,
            port,
            security,
            credentials.clone(),
            timeout,
            CONCURRENCY,
        ))
    };
    let ca_pem = match &config.smtp_ca_file {
        Some(path) => Some(
            std::fs::read(path).map_err(|e| MailError::CaFile(path.display().to_string(), e))?,
        ),
        None => None,
    };
    let tls = || {
        let mut builder = TlsParameters::builder(host.to_owned());
        if let Some(pem) = &ca_pem {
            builder = builder.add_root_certificate(Certificate::from_pem(pem).map_err(err)?);
        }
        builder.build().map_err(err)
    };
    Ok(match security {
        SmtpSecurity::Starttls => pool(smtp::Security::Required(tls()?)),
        // STARTTLS when the server offers it (local relays and test servers often do not).
        SmtpSecurity::Auto => pool(smtp::Security::Opportunistic(tls()?)),
        SmtpSecurity::None => pool(smtp::Security::None),
        SmtpSecurity::Tls => pool(smtp::Security::Implicit(
            smtp::ImplicitTls::new(host, ca_pem.as_deref()).map_err(MailError::Tls)?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clap::Parser as _;
    use sea_orm_migration::MigratorTrait as _;

    use super::Sender;
    use crate::db::{self, Dialect, Sql, col};

    async fn outbox_db(dir: &std::path::Path) -> sea_orm::DatabaseConnection {
        let db = db::connect(&format!("sqlite://{}?mode=rwc", dir.join("t.db").display()))
            .await
            .expect("sqlite");
        crate::schema::Migrator::up(&db, None)
            .await
            .expect("migrations");
        for i in 1..=2 {
            let mut q = Sql::new(Dialect::Sqlite);
            let past = q.bind(chrono::Utc::now() - chrono::Duration::minutes(1));
            q.push(&format!(
                "INSERT INTO email_outbox (dedupe_key, kind, recipient, subject, payload, \
                 next_attempt_at) VALUES ('k{i}', 'booking-confirmation', 'u{i}@example.com', \
                 'Hi', '{{}}', {past})"
            ));
            q.execute(&db).await.expect("insert");
        }
        db
    }

    fn sender(db: &sea_orm::DatabaseConnection, mail: &std::path::Path, lease: &str) -> Sender {
        let cli = crate::config::Cli::try_parse_from([
            "ticketmax-executor",
            "--mail-lease-seconds",
            lease,
        ])
        .expect("config");
        Sender::new(
            &cli.config,
            db.clone(),
            Dialect::Sqlite,
            mail.to_path_buf(),
            Arc::new(tokio::sync::Notify::new()),
            None,
        )
        .expect("sender")
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                    .count()
            })
            .unwrap_or(0)
    }

    async fn column(db: &sea_orm::DatabaseConnection, sql: &str) -> Vec<String> {
        let mut q = Sql::new(Dialect::Sqlite);
        q.push(sql);
        q.fetch_all(db)
            .await
            .expect("query")
            .iter()
            .map(|r| col::<String>(r, 0).expect("text"))
            .collect()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tm_mail_{name}_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// A batch that outlived its lease is not delivered by the sender that claimed it once
    /// another sender has claimed the rows: each e-mail goes out once, from the new holder.
    #[tokio::test]
    async fn a_batch_that_outlives_its_lease_is_sent_once_by_the_new_holder() {
        let dir = scratch("lease");
        let db = outbox_db(&dir).await;
        let (mail_a, mail_b) = (dir.join("a"), dir.join("b"));
        let a = sender(&db, &mail_a, "2");
        let b = sender(&db, &mail_b, "2");
        let stale = a.claim().await.expect("claim");
        assert_eq!(stale.len(), 2);
        tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
        let fresh = b
            .claim()
            .await
            .expect("second claim once the lease ran out");
        assert_eq!(fresh.len(), 2);
        a.deliver_batch(stale).await;
        assert_eq!(files(&mail_a), 0, "the old holder sent after its lease");
        b.deliver_batch(fresh).await;
        assert_eq!(files(&mail_b), 2);
        assert_eq!(
            column(&db, "SELECT status FROM email_outbox ORDER BY id").await,
            ["sent", "sent"]
        );
    }

    /// Outcomes are recorded only where the row still holds this sender's lease token: a sender
    /// whose rows were claimed again cannot mark them sent or failed under the new holder.
    #[tokio::test]
    async fn outcomes_need_the_lease_token() {
        let dir = scratch("token");
        let db = outbox_db(&dir).await;
        let a = sender(&db, &dir.join("a"), "300");
        let batch = a.claim().await.expect("claim");
        let lease = batch[0].lease.clone();
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        // Another sender took row 1 over (its lease ran out meanwhile).
        let mut q = Sql::new(Dialect::Sqlite);
        let id = q.bind(ids[0]);
        q.push(&format!(
            "UPDATE email_outbox SET lease_token = 'other', attempts = attempts + 1 WHERE id = {id}"
        ));
        q.execute(&db).await.expect("takeover");
        assert_eq!(
            a.mark_failed(ids[0], &lease, "boom").await.expect("mark"),
            0
        );
        assert_eq!(
            a.mark_retry(ids[0], &lease, "boom", chrono::Duration::seconds(30))
                .await
                .expect("mark"),
            0
        );
        let sent: Vec<(i64, Arc<super::Lease>)> =
            ids.iter().map(|id| (*id, lease.clone())).collect();
        assert_eq!(
            a.mark_sent(&sent).await.expect("mark"),
            1,
            "only row 2 is still ours"
        );
        assert_eq!(
            column(&db, "SELECT status FROM email_outbox ORDER BY id").await,
            ["pending", "sent"]
        );
        assert_eq!(
            column(
                &db,
                "SELECT COALESCE(last_error, '-') FROM email_outbox ORDER BY id"
            )
            .await,
            ["-", "-"]
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(super::retry_delay(1).num_seconds(), 30);
        assert_eq!(super::retry_delay(2).num_seconds(), 60);
        assert_eq!(super::retry_delay(20).num_seconds(), 3600);
    }
}
