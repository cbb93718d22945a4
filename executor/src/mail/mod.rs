//! Delivery of the e-mail outbox: claims due rows in batches and sends them over SMTP (pooled)
//! or writes them as .eml files; retries transient failures with exponential backoff.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, SmtpSecurity};
use crate::db::{Dialect, Sql, col};

pub mod money;
pub mod smtp;
pub mod templates;

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
    id: i64,
    dedupe_key: String,
    kind: String,
    recipient: String,
    subject: String,
    payload: String,
    attempts: i64,
    trace_parent: Option<String>,
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
    lease: chrono::Duration,
    max_attempts: i64,
    wake: Arc<Notify>,
    /// Send-rate limit: the interval between two sends, and the next free slot.
    pace: Option<Duration>,
    next_slot: tokio::sync::Mutex<tokio::time::Instant>,
}

const BATCH: i64 = 50;
const CONCURRENCY: usize = 4;
/// Sent e-mails recorded per UPDATE: the most a crash can send twice.
const MARK_EVERY: usize = 16;
const IDLE_POLL: Duration = Duration::from_secs(2);

impl Sender {
    pub fn new(
        config: &Config,
        db: DatabaseConnection,
        dialect: Dialect,
        mail_dir: PathBuf,
        wake: Arc<Notify>,
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
            lease: chrono::Duration::seconds(
                i64::try_from(config.mail_lease_seconds).unwrap_or(300),
            ),
            max_attempts: i64::from(config.mail_max_attempts.max(1)),
            wake,
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

    /// Delivers until `shutdown`; a batch in flight is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
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
                () = tokio::time::sleep(IDLE_POLL) => {}
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
            let sent: Vec<i64> = futures::stream::iter(group)
                .map(|item| self.deliver(item))
                .buffer_unordered(CONCURRENCY)
                .filter_map(|id| async move { id })
                .collect()
                .await;
            if sent.is_empty() {
                continue;
            }
            if let Err(e) = self.mark_sent(&sent).await {
                // The lease expires and the rows are retried: duplicates, never a loss.
                tracing::warn!(count = sent.len(), error = %e, "cannot record e-mails as sent");
            }
        }
    }

    /// Leases up to BATCH due rows: their next attempt moves past the lease, so another sender
    /// (or this one after a crash) only retries them once the lease has run out.
    async fn claim(&self) -> Result<Vec<Claimed>, DbErr> {
        let now = Utc::now();
        let mut q = Sql::new(self.dialect);
        let (at, until, limit) = (q.bind(now), q.bind(now + self.lease), q.bind(BATCH));
        q.push(&format!(
            "{picked}UPDATE email_outbox SET attempts = attempts + 1, next_attempt_at = {until} \
             WHERE id IN (SELECT id FROM picked) \
             AND status = 'pending' AND next_attempt_at <= {at} \
             RETURNING id, dedupe_key, kind, recipient, subject, payload, attempts, trace_parent",
            picked = self.dialect.picked(
                &format!(
                    "SELECT o.id FROM email_outbox o WHERE o.status = 'pending' \
                     AND o.next_attempt_at <= {at} ORDER BY o.next_attempt_at, o.id LIMIT {limit}"
                ),
                "o"
            )
        ));
        q.fetch_all(&self.db)
            .await?
            .iter()
            .map(|r| {
                Ok(Claimed {
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

    /// Sends one e-mail; its outbox id when it was sent and is still to be marked `sent`.
    async fn deliver(&self, item: Claimed) -> Option<i64> {
        self.pace().await;
        let transport = match &self.transport {
            Transport::Files(_) => "eml",
            Transport::Smtp(_) => "smtp",
        };
        let span = tracing::info_span!("smtp.send", outbox_id = item.id, kind = %item.kind, attempt = item.attempts, transport, outcome = tracing::field::Empty);
        // Delivery happens after the run, but belongs to its trace.
        if let Some(tp) = &item.trace_parent {
            ticketmax_proto::telemetry::adopt_traceparent(&span, tp);
        }
        self.deliver_in(item, span.clone()).instrument(span).await
    }

    async fn deliver_in(&self, item: Claimed, span: tracing::Span) -> Option<i64> {
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
                return Some(item.id);
            }
            Err(Failure::Transient(error)) if item.attempts < self.max_attempts => {
                let backoff = retry_delay(item.attempts);
                tracing::warn!(outbox_id = item.id, kind = %item.kind, attempts = item.attempts, %error, retry_in_s = backoff.num_seconds(), "e-mail delivery failed; will retry");
                self.mark_retry(item.id, &error, backoff).await
            }
            Err(Failure::Transient(error) | Failure::Permanent(error)) => {
                tracing::error!(outbox_id = item.id, kind = %item.kind, attempts = item.attempts, %error, "e-mail delivery failed for good");
                count_email(&item.kind, "failed");
                self.mark_failed(item.id, &error).await
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
        let body = templates::render(&item.kind, &payload, &self.frontend_url).map_err(|e| {
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
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(item.subject.clone())
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(body.text, body.html))
            .map_err(|e| Failure::Permanent(format!("cannot build the message: {e}")))
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

    async fn mark_sent(&self, ids: &[i64]) -> Result<u64, DbErr> {
        let mut q = Sql::new(self.dialect);
        let (now, ids) = (q.bind(Utc::now()), q.bind_list(ids.iter().copied()));
        q.push(&format!(
            "UPDATE email_outbox SET status = 'sent', sent_at = {now}, last_error = NULL \
             WHERE id IN ({ids})"
        ));
        q.execute(&self.db).await
    }

    async fn mark_retry(
        &self,
        id: i64,
        error: &str,
        delay: chrono::Duration,
    ) -> Result<u64, DbErr> {
        let mut q = Sql::new(self.dialect);
        let (next, error, id) = (
            q.bind(Utc::now() + delay),
            q.bind(error.to_owned()),
            q.bind(id),
        );
        q.push(&format!(
            "UPDATE email_outbox SET next_attempt_at = {next}, last_error = {error} WHERE id = {id}"
        ));
        q.execute(&self.db).await
    }

    async fn mark_failed(&self, id: i64, error: &str) -> Result<u64, DbErr> {
        let mut q = Sql::new(self.dialect);
        let (error, id) = (q.bind(error.to_owned()), q.bind(id));
        q.push(&format!(
            "UPDATE email_outbox SET status = 'failed', last_error = {error} WHERE id = {id}"
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
    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(super::retry_delay(1).num_seconds(), 30);
        assert_eq!(super::retry_delay(2).num_seconds(), 60);
        assert_eq!(super::retry_delay(20).num_seconds(), 3600);
    }
}
