//! E-mail delivery against a real SMTP server.
//!
//! Every test starts its own `python3 -m aiosmtpd` (handler `Mailbox`: one file per message in
//! a Maildir; [`ticketmax_e2e::smtp`]) on a free loopback port and runs the real executor with
//! `SMTP_HOST`/`SMTP_PORT` pointing at it. Messages are read back from the Maildir and parsed by Python's `email` package
//! (no mocks, no Rust MIME parser to trust), and matched to their outbox rows through the
//! Message-ID the sender derives from the outbox id (`<ID.dedupe-key@ticketmax>`).
//!
//! - `every_kind_arrives_once_and_a_second_run_sends_nothing`: one dataset makes every job that
//!   mails send its message; each arrives with its recipient, subject, a text/plain and a
//!   text/html part, money formatted per currency and user text HTML-escaped; then every job runs
//!   again and the Maildir does not grow.
//! - `sigkill_between_outbox_write_and_send_delivers_each_message_once`: the executor is SIGKILLed
//!   while its SMTP sessions hang (the e-mails are written and leased, not sent); after a restart
//!   against a working server each dedupe key arrives exactly once.
//! - `smtp_outage_loses_nothing_and_delivers_when_the_server_returns`: the server is down when
//!   the e-mails are queued; attempts fail transiently (recorded, not failed for good), and once
//!   the server is up the retry with backoff delivers each message once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ticketmax_e2e::smtp::{BlackHole, Mail, SmtpServer};
use ticketmax_e2e::*;

const FRONTEND: &str = "https://tickets.example.test";
const ADMINS: [&str; 2] = ["ops@example.test", "cfo@example.test"];
const XSS_TITLE: &str = r#"<script>alert("x")</script> Rock & Roll"#;
const XSS_TITLE_ESCAPED: &str = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Rock &amp; Roll";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The unsubscribe token of README "E-mail" (`v1.<user>.<list>.<base64url HMAC-SHA256>`),
/// computed by Python's `hmac`, not by the executor's code.
fn unsubscribe_token(secret: &str, user: i64, list: &str) -> String {
    const SIGN: &str = r#"
import base64, hashlib, hmac, sys
message = "v1.%s.%s" % (sys.argv[2], sys.argv[3])
tag = hmac.new(sys.argv[1].encode(), message.encode(), hashlib.sha256).digest()
print(message + "." + base64.urlsafe_b64encode(tag).rstrip(b"=").decode())
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SIGN)
        .args([secret, &user.to_string(), list])
        .output()
        .expect("python3 for the HMAC");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A per-test scratch dir inside the app's log dir.
fn scratch(app: &TestApp, name: &str) -> PathBuf {
    let dir = app.log_dir.join(name);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[derive(Debug, Clone)]
struct OutboxRow {
    id: i64,
    dedupe_key: String,
    kind: String,
    recipient: String,
    subject: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
}

async fn outbox(app: &TestApp) -> Vec<OutboxRow> {
    app.ticketing_rows(
        "SELECT id, dedupe_key, kind, recipient, subject, status, attempts, last_error \
         FROM email_outbox ORDER BY id",
    )
    .await
    .into_iter()
    .map(|r| OutboxRow {
        id: r["id"].as_i64().expect("id"),
        dedupe_key: r["dedupe_key"].as_str().unwrap_or_default().to_owned(),
        kind: r["kind"].as_str().unwrap_or_default().to_owned(),
        recipient: r["recipient"].as_str().unwrap_or_default().to_owned(),
        subject: r["subject"].as_str().unwrap_or_default().to_owned(),
        status: r["status"].as_str().unwrap_or_default().to_owned(),
        attempts: r["attempts"].as_i64().unwrap_or_default(),
        last_error: r["last_error"].as_str().map(str::to_owned),
    })
    .collect()
}

/// The reference time the e-mail scenarios build their data around and run their jobs at
/// (`params.as_of`): the 1st of a month, so "yesterday" and "last month" are another month. A
/// fixed time in the past, never the wall clock: the tests pass on every day of the year.
const REF: &str = "2026-03-01T09:30:00Z";

/// REF as a Postgres expression.
fn ref_sql(reference: &str) -> String {
    format!("(TIMESTAMPTZ '{reference}')")
}

fn ref_time(reference: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(reference)
        .expect("reference time")
        .with_timezone(&chrono::Utc)
}

/// Triggers `job` with `params.as_of = REF` and waits for it to succeed.
async fn run_ok(app: &TestApp, job: &str) -> Run {
    run_ok_at(app, job, REF).await
}

async fn run_ok_at(app: &TestApp, job: &str, reference: &str) -> Run {
    let run = app
        .try_trigger(job, "", Some(serde_json::json!({ "as_of": reference })))
        .await
        .unwrap_or_else(|s| panic!("TriggerJob({job}) failed: {s}"));
    let run = app.wait_for_run(&run.id, terminal, secs(90)).await;
    assert_eq!(
        run.state(),
        RunState::Succeeded,
        "{job} did not succeed: {run:#?}"
    );
    run
}

/// Waits until every outbox row is `sent` and the server holds as many files.
async fn wait_all_delivered(app: &TestApp, smtp: &SmtpServer, timeout: Duration) -> Vec<OutboxRow> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = outbox(app).await;
        let sent = rows.iter().filter(|r| r.status == "sent").count();
        if sent == rows.len() && smtp.count() >= rows.len() {
            return rows;
        }
        if Instant::now() >= deadline {
            panic!(
                "after {timeout:?}: {sent}/{} outbox rows sent, {} files in the Maildir; \
                 not sent: {:#?}\n{}",
                rows.len(),
                smtp.count(),
                rows.iter()
                    .filter(|r| r.status != "sent")
                    .collect::<Vec<_>>(),
                app.logs_tail(30)
            );
        }
        tokio::time::sleep(millis(200)).await;
    }
}

/// Each outbox row's message, asserting that each arrived exactly once and nothing else did.
fn by_outbox_row<'a>(rows: &[OutboxRow], mails: &'a [Mail]) -> HashMap<String, &'a Mail> {
    let mut per_id: BTreeMap<i64, Vec<&Mail>> = BTreeMap::new();
    for m in mails {
        let id = m
            .outbox_id()
            .unwrap_or_else(|| panic!("message without an outbox Message-ID: {m:?}"));
        per_id.entry(id).or_default().push(m);
    }
    let dups: Vec<_> = per_id
        .iter()
        .filter(|(_, ms)| ms.len() > 1)
        .map(|(id, ms)| (id, ms.iter().map(|m| &m.file).collect::<Vec<_>>()))
        .collect();
    assert!(
        dups.is_empty(),
        "messages delivered more than once: {dups:?}"
    );
    let unknown: Vec<_> = per_id
        .keys()
        .filter(|id| !rows.iter().any(|r| r.id == **id))
        .collect();
    assert!(
        unknown.is_empty(),
        "messages for no outbox row: {unknown:?}"
    );
    let mut out = HashMap::new();
    for r in rows {
        let m = per_id
            .get(&r.id)
            .and_then(|v| v.first())
            .unwrap_or_else(|| panic!("no message for outbox row {r:?}"));
        out.insert(r.dedupe_key.clone(), *m);
    }
    out
}

/// The envelope and structure every message must have.
fn assert_well_formed(row: &OutboxRow, m: &Mail) {
    assert_eq!(m.to, row.recipient, "To of {}", row.dedupe_key);
    assert!(
        m.rcpt.contains(&row.recipient),
        "envelope recipient of {} is {:?}",
        row.dedupe_key,
        m.rcpt
    );
    // The sender puts a subject on one line (CR/LF from user data becomes a space).
    let one_line = row.subject.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(m.subject, one_line, "Subject of {}", row.dedupe_key);
    assert!(
        m.from.contains("noreply@ticketmax.local"),
        "From of {}: {}",
        row.dedupe_key,
        m.from
    );
    assert_eq!(
        m.content_type, "multipart/alternative",
        "{} must be multipart/alternative",
        row.dedupe_key
    );
    assert_eq!(m.parts.len(), 2, "{}: parts {:?}", row.dedupe_key, m.parts);
    assert!(
        !m.text().trim().is_empty(),
        "{}: empty text part",
        row.dedupe_key
    );
    let html = m.html();
    assert!(
        html.contains("<html") && html.contains("</html>"),
        "{}: html part is not HTML: {html}",
        row.dedupe_key
    );
    // No user-supplied markup survives into the HTML.
    assert!(
        !html.contains("<script"),
        "{}: raw <script> in the HTML part: {html}",
        row.dedupe_key
    );
}

fn assert_contains(what: &str, haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            haystack.contains(n),
            "{what} lacks {n:?}; it is:\n{haystack}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every kind
// ---------------------------------------------------------------------------------------------

/// One row for every kind of e-mail, built around REF (UTC): `{r}` is REF, `{t}` its midnight.
/// Every account is old (created 400 days before REF); users 12 to 14 agreed to marketing mail,
/// and 13 and 14 booked the promoted event long ago, so only user 12 gets the promotion.
fn every_kind_dataset() -> String {
    let r = ref_sql(REF);
    let t = ref_sql("2026-03-01T00:00:00Z");
    format!(
        "INSERT INTO users (id, email, first_name, last_name, role, email_verified, date_of_birth, \
            newsletter_subscribed, promotional_emails, reengagement_sent, created_at) VALUES \
           (1, 'ada@example.test', 'Ada', 'A', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (2, 'bola@example.test', 'Bola', 'B', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (3, 'chi@example.test', 'Chi', 'C', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (4, 'dayo@example.test', 'Dayo', 'D', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (5, 'efe@example.test', 'Efe', 'E', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (6, 'femi@example.test', 'Femi', 'F', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (7, 'gozie@example.test', 'Gozie', 'G', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (8, 'hauwa@example.test', 'Hauwa', 'H', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (9, 'ike@example.test', 'Ike', 'I', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (10, 'jide@example.test', 'Jide', 'J', 'customer', true, NULL, false, false, true, {r} - interval '400 days'), \
           (11, 'kemi@example.test', 'Kemi', 'K', 'customer', true, NULL, true, false, true, {r} - interval '400 days'), \
           (12, 'lola@example.test', 'Lola', 'L', 'customer', true, NULL, false, true, true, {r} - interval '400 days'), \
           (13, 'musa@example.test', 'Musa', 'M', 'customer', true, '1992-03-01', false, true, true, {r} - interval '400 days'), \
           (14, 'ngozi@example.test', 'Ngozi', 'N', 'customer', true, NULL, false, true, false, {r} - interval '400 days'), \
           (15, 'olu@example.test', 'Olu', 'O', 'organizer', true, NULL, false, false, true, {r} - interval '400 days'); \
         INSERT INTO events (id, organizer_id, title, venue, starts_at, ends_at, total_tickets, \
            available_tickets, price, currency, status) VALUES \
           (100, 15, $x${XSS_TITLE}$x$, 'Eko Hotel', {r} + interval '10 days', NULL, 100, 90, 500000, 'NGN', 'upcoming'), \
           (101, 15, 'Lagos Jazz Night', 'Terra Kulture', {r} + interval '12 hours', NULL, 100, 10, 300000, 'NGN', 'upcoming'), \
           (102, 15, 'Past Gala', 'Civic Centre', {r} - interval '2 hours', NULL, 100, 10, 200000, 'NGN', 'live'), \
           (103, 15, 'Tomorrow Fest', 'Freedom Park', {t} + interval '1 day 12 hours', NULL, 100, 10, 100000, 'NGN', 'upcoming'), \
           (104, 15, 'Next Week Expo', 'Landmark Centre', {t} + interval '7 days 12 hours', NULL, 100, 10, 100000, 'NGN', 'upcoming'), \
           (105, 15, 'Yesterday Concert', 'Muri Okunola Park', {t} - interval '14 hours', {t} - interval '10 hours', 100, 10, 100, 'USD', 'completed'), \
           (106, 15, 'Promo Party', 'Quilox', {r} + interval '3 days', NULL, 100, 95, 750000, 'NGN', 'upcoming'), \
           (900, 15, 'Last Month Show', 'National Theatre', \
               {r} - interval '10 days 9 hours 30 minutes', \
               NULL, 100, 10, 83333350, 'NGN', 'completed'); \
         INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, currency, status, \
            created_at, confirmed_at, cancelled_at, confirmation_email_sent, refund_requested, \
            refund_requested_at) VALUES \
           (1001, 1, 100, 2, 1234550, 'NGN', 'pending', {r} - interval '11 minutes', NULL, NULL, false, false, NULL), \
           (1002, 2, 100, 1, 4999, 'USD', 'pending', {r} - interval '5 minutes', NULL, NULL, false, false, NULL), \
           (1003, 3, 100, 1, 150000, 'GHS', 'pending', {r} - interval '5 minutes', NULL, NULL, false, false, NULL), \
           (1004, 4, 100, 1, 500000, 'NGN', 'confirmed', {r} - interval '1 hour', {r} - interval '1 hour', NULL, false, false, NULL), \
           (1005, 5, 100, 2, 1000000, 'NGN', 'cancelled', {r} - interval '2 days', NULL, {r} - interval '1 hour', false, true, {r} - interval '1 hour'), \
           (1006, 6, 101, 1, 333333, 'NGN', 'cancelled', {r} - interval '2 days', NULL, {r} - interval '1 hour', false, true, {r} - interval '1 hour'), \
           (1007, 7, 102, 1, 200000, 'NGN', 'cancelled', {r} - interval '2 days', NULL, {r} - interval '1 minute', false, true, {r} - interval '1 minute'), \
           (1008, 8, 103, 1, 100000, 'NGN', 'confirmed', {r} - interval '2 days', {r} - interval '2 days', NULL, true, false, NULL), \
           (1009, 9, 104, 1, 100000, 'NGN', 'confirmed', {r} - interval '2 days', {r} - interval '2 days', NULL, true, false, NULL), \
           (1010, 10, 105, 1, 100, 'USD', 'confirmed', {r} - interval '5 days', {r} - interval '5 days', NULL, true, false, NULL), \
           (1011, 11, 100, 1, 500000, 'NGN', 'confirmed', {r} - interval '3 days', {r} - interval '3 days', NULL, true, false, NULL), \
           (1012, 11, 900, 3, 250000050, 'NGN', 'confirmed', {r} - interval '40 days', {r} - interval '40 days', NULL, true, false, NULL), \
           (1013, 13, 106, 1, 750000, 'NGN', 'cancelled', {r} - interval '200 days', NULL, {r} - interval '200 days', true, false, NULL), \
           (1014, 14, 106, 1, 750000, 'NGN', 'cancelled', {r} - interval '200 days', NULL, {r} - interval '200 days', true, false, NULL); \
         INSERT INTO payments (id, booking_id, user_id, amount, currency, status, created_at, paid_at) VALUES \
           (2002, 1002, 2, 4999, 'USD', 'processing', {r} - interval '11 minutes', NULL), \
           (2003, 1003, 3, 150000, 'GHS', 'pending', {r} - interval '16 minutes', NULL), \
           (2005, 1005, 5, 1000000, 'NGN', 'success', {r} - interval '2 days', {r} - interval '2 days'), \
           (2006, 1006, 6, 333333, 'NGN', 'success', {r} - interval '2 days', {r} - interval '2 days'), \
           (2007, 1007, 7, 200000, 'NGN', 'success', {r} - interval '2 days', {r} - interval '2 days');"
    )
}

/// Every job that sends e-mail, in an order where no job takes another's rows.
const MAILING_JOBS: &[&str] = &[
    "payment-cleanup/handle-payment-timeouts",
    "payment-cleanup/cleanup-abandoned-payments",
    "booking-cleanup/cancel-expired-bookings",
    "booking-cleanup/send-pending-booking-confirmations",
    "booking-cleanup/process-refund-requests",
    "event-management/send-event-reminders",
    "event-management/send-early-bird-reminders",
    "notifications/send-weekly-newsletter",
    "notifications/send-promotional-notifications",
    "notifications/send-birthday-wishes",
    "notifications/send-event-follow-ups",
    "notifications/send-re-engagement-emails",
    "notifications/send-organizer-analytics",
    "booking-cleanup/generate-daily-report",
    "payment-cleanup/generate-payment-analytics",
    "data-cleanup/generate-system-health-report",
];

#[tokio::test]
async fn every_kind_arrives_once_and_a_second_run_sends_nothing() {
    let port = free_port();
    // SMTP_SECURITY is left at its default (auto): on a port other than 465/587 that is
    // opportunistic STARTTLS, and aiosmtpd offers none, so the session stays plaintext.
    let app = TestApp::builder()
        .executor_env("SMTP_HOST", "127.0.0.1")
        .executor_env("SMTP_PORT", &port.to_string())
        .executor_env("FRONTEND_URL", &format!("{FRONTEND}/"))
        .executor_env("ADMIN_EMAILS", &ADMINS.join(","))
        // Makes the health report raise an alert (a second admin message kind).
        .executor_env("TICKETMAX_MEMORY_ALERT_MB", "1")
        .spawn()
        .await;
    let mut smtp = SmtpServer::new(port, &scratch(&app, "smtp"));
    smtp.start().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("email_outbox").await;
    app.ticketing_exec(&every_kind_dataset()).await;

    for job in MAILING_JOBS {
        run_ok(&app, job).await;
    }
    let rows = wait_all_delivered(&app, &smtp, secs(90)).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), rows.len(), "one message per outbox row");
    let by_key = by_outbox_row(&rows, &mails);
    for row in &rows {
        assert_well_formed(row, by_key[&row.dedupe_key]);
    }
    let row = |key: &str| -> (&OutboxRow, &Mail) {
        let r = rows
            .iter()
            .find(|r| r.dedupe_key == key)
            .unwrap_or_else(|| {
                panic!(
                    "no e-mail with dedupe key {key}; queued: {:?}",
                    rows.iter().map(|r| &r.dedupe_key).collect::<Vec<_>>()
                )
            });
        (r, by_key[key])
    };
    // (dedupe key, recipient, subject, text must contain, html must contain)
    let today = ref_time(REF).date_naive();
    let year = today.format("%Y").to_string();
    let last_month = {
        use chrono::Datelike;
        let first = today.with_day(1).expect("first of month");
        (first - chrono::Duration::days(1))
            .format("%Y-%m")
            .to_string()
    };
    let birthday_code = format!("BDAY{year}-13");
    let birthday_key = format!("birthday:13:{year}");
    let organizer_key = format!("organizer-analytics:15:{last_month}");
    let organizer_subject = format!("Your TicketMax results for {last_month}");
    let week = {
        use chrono::Datelike;
        let w = today.iso_week();
        format!("{}-W{:02}", w.year(), w.week())
    };
    let newsletter_key = rows
        .iter()
        .find(|r| r.kind == "newsletter")
        .map(|r| r.dedupe_key.clone())
        .expect("a newsletter was queued");
    assert!(
        newsletter_key.starts_with("newsletter:11:"),
        "newsletter key {newsletter_key} (week {week})"
    );
    let unsubscribe = format!(
        "{FRONTEND}/unsubscribe?token={}",
        unsubscribe_token(UNSUBSCRIBE_SECRET, 11, "newsletter")
    );
    let feedback = format!("{FRONTEND}/events/105/feedback?booking=1010");
    let cancelled_subject = format!("Your booking for {XSS_TITLE} was cancelled");
    let confirmed_subject = format!("Booking confirmed: {XSS_TITLE}");
    // (dedupe key, recipient, subject, text in the plain part, text in the HTML part)
    type Expected<'a> = (&'a str, &'a str, &'a str, Vec<&'a str>, Vec<&'a str>);
    let expected: Vec<Expected> = vec![
        (
            "booking-cancelled:1001",
            "ada@example.test",
            &cancelled_subject,
            vec![
                "Hi Ada",
                XSS_TITLE,
                "₦12,345.50",
                "not paid in time",
                "Tickets: 2",
            ],
            vec![XSS_TITLE_ESCAPED, "₦12,345.50", "Eko Hotel"],
        ),
        (
            "payment-failed:2002",
            "bola@example.test",
            "Payment failed",
            vec!["Hi Bola", "$49.99", "Payment gateway timeout", "#2002"],
            vec!["$49.99", "Payment gateway timeout", XSS_TITLE_ESCAPED],
        ),
        (
            "payment-abandoned:2003",
            "chi@example.test",
            "Your payment was not completed",
            vec!["Hi Chi", "GH₵1,500.00", "#2003"],
            vec!["GH₵1,500.00"],
        ),
        (
            "booking-confirmation:1004",
            "dayo@example.test",
            &confirmed_subject,
            vec!["is confirmed", "₦5,000.00", "/bookings/1004"],
            vec![
                XSS_TITLE_ESCAPED,
                "₦5,000.00",
                "tickets.example.test/bookings/1004",
            ],
        ),
        (
            "refund:1005",
            "efe@example.test",
            "Your refund has been approved",
            vec!["approved", "₦10,000.00 will be returned"],
            vec!["₦10,000.00", XSS_TITLE_ESCAPED],
        ),
        (
            "refund:1006",
            "femi@example.test",
            "Your refund has been approved",
            // 50 % of 333,333 kobo, rounded down.
            vec![
                "₦1,666.66 will be returned",
                "Lagos Jazz Night",
                "₦3,333.33",
            ],
            vec!["₦1,666.66"],
        ),
        (
            "refund:1007",
            "gozie@example.test",
            "About your refund request",
            vec![
                "declined",
                "Refunds are not available once the event has started",
            ],
            vec!["declined", "Past Gala"],
        ),
        (
            "event-reminder:1008",
            "hauwa@example.test",
            "Reminder: Tomorrow Fest is tomorrow",
            vec!["Tomorrow Fest is tomorrow", "Freedom Park"],
            vec!["Tomorrow Fest is tomorrow"],
        ),
        (
            "early-bird-reminder:1009",
            "ike@example.test",
            "Reminder: Next Week Expo is in one week",
            vec!["Next Week Expo is in one week", "Landmark Centre"],
            vec!["Next Week Expo is in one week"],
        ),
        (
            &newsletter_key,
            "kemi@example.test",
            "This week on TicketMax",
            vec![&unsubscribe, "Promo Party", XSS_TITLE, "₦7,500.00"],
            vec![&unsubscribe, "Promo Party", XSS_TITLE_ESCAPED, "₦7,500.00"],
        ),
        (
            "promotion:12:106",
            "lola@example.test",
            "Still available: Promo Party",
            vec![
                "Promo Party",
                "₦7,500.00",
                "Tickets left: 95",
                "/events/106",
            ],
            vec!["Quilox", "₦7,500.00"],
        ),
        (
            &birthday_key,
            "musa@example.test",
            "Happy birthday from TicketMax!",
            vec!["Hi Musa", &birthday_code],
            vec![&birthday_code],
        ),
        (
            "event-follow-up:1010",
            "jide@example.test",
            "How was Yesterday Concert?",
            vec!["Yesterday Concert", &feedback],
            vec![&feedback],
        ),
        (
            "re-engagement:14",
            "ngozi@example.test",
            "We miss you at TicketMax",
            vec!["Hi Ngozi", "COMEBACK-14"],
            vec!["COMEBACK-14"],
        ),
        (
            &organizer_key,
            "olu@example.test",
            &organizer_subject,
            // February (REF is 1 March): the show of the 19th and the concert of the 28th,
            // "yesterday", which is last month too.
            vec![
                "Hi Olu",
                "Events: 2",
                "₦2,500,000.50",
                "$1.00",
                "Tickets sold: 4",
            ],
            vec!["₦2,500,000.50", "$1.00"],
        ),
    ];
    for (key, to, subject, text, html) in &expected {
        let (r, m) = row(key);
        assert_eq!(&r.recipient, to, "recipient of {key}");
        assert_eq!(m.to, *to, "To of {key}");
        assert_eq!(m.subject, *subject, "Subject of {key}");
        assert_contains(&format!("text part of {key}"), m.text(), text);
        assert_contains(&format!("html part of {key}"), m.html(), html);
    }
    // Newsletter and marketing mail carry RFC 8058 one-click unsubscribe headers with a
    // signed per-user token (checked against the README's format with Python's hmac);
    // transactional mail carries none. Nowhere a guessable `?user=<id>` link.
    for r in &rows {
        let m = by_key[&r.dedupe_key];
        let list = match r.kind.as_str() {
            "newsletter" => Some("newsletter"),
            "promotion" | "birthday" | "re-engagement" => Some("marketing"),
            _ => None,
        };
        match list {
            Some(list) => {
                let user: i64 = r
                    .dedupe_key
                    .split(':')
                    .nth(1)
                    .and_then(|u| u.parse().ok())
                    .expect("user id in the dedupe key");
                let url = format!(
                    "{FRONTEND}/unsubscribe?token={}",
                    unsubscribe_token(UNSUBSCRIBE_SECRET, user, list)
                );
                assert_eq!(m.list_unsubscribe, format!("<{url}>"), "{}", r.dedupe_key);
                assert_eq!(
                    m.list_unsubscribe_post, "List-Unsubscribe=One-Click",
                    "{}",
                    r.dedupe_key
                );
                assert_contains(&r.dedupe_key, m.text(), &[&url]);
                assert_contains(&r.dedupe_key, m.html(), &[&format!("href=\"{url}\"")]);
            }
            None => {
                assert!(m.list_unsubscribe.is_empty(), "{}: {m:?}", r.dedupe_key);
                assert!(m.list_unsubscribe_post.is_empty(), "{}", r.dedupe_key);
            }
        }
        assert!(
            !m.text().contains("unsubscribe?user=") && !m.html().contains("unsubscribe?user="),
            "{}",
            r.dedupe_key
        );
    }
    // User text is escaped once, not twice.
    let (_, cancelled) = row("booking-cancelled:1001");
    assert!(
        !cancelled.html().contains("&amp;lt;"),
        "double-escaped: {}",
        cancelled.html()
    );

    // Admin reports (and the health alert): one message per admin per report.
    for kind in [
        "daily-bookings",
        "payment-analytics",
        "organizer-analytics",
        "system-health",
    ] {
        for admin in ADMINS {
            let found: Vec<_> = rows
                .iter()
                .filter(|r| {
                    r.kind == "report"
                        && r.recipient == admin
                        && r.dedupe_key.starts_with(&format!("report:{kind}:"))
                })
                .collect();
            assert_eq!(
                found.len(),
                1,
                "report {kind} to {admin}: {:?}",
                rows.iter()
                    .filter(|r| r.kind == "report")
                    .map(|r| &r.dedupe_key)
                    .collect::<Vec<_>>()
            );
            let m = by_key[&found[0].dedupe_key];
            assert!(
                m.subject.starts_with(&format!("TicketMax report: {kind} ")),
                "{}",
                m.subject
            );
            assert_contains(
                &format!("report {kind}"),
                m.text(),
                &["Hello,", &format!("Report {kind} for")],
            );
        }
    }
    for admin in ADMINS {
        let alert = rows
            .iter()
            .find(|r| r.kind == "alert" && r.recipient == admin)
            .unwrap_or_else(|| panic!("no system health alert to {admin}"));
        let m = by_key[&alert.dedupe_key];
        assert_eq!(m.subject, "TicketMax alert: system health");
        assert_contains("health alert", m.text(), &["system health", "memory"]);
    }
    assert_eq!(
        rows.iter()
            .filter(|r| !["report", "alert"].contains(&r.kind.as_str()))
            .count(),
        expected.len(),
        "exactly the expected customer e-mails: {:?}",
        rows.iter().map(|r| &r.dedupe_key).collect::<Vec<_>>()
    );

    // Second run of every job: nothing new is queued and nothing new arrives.
    let before = smtp.count();
    for job in MAILING_JOBS {
        let run = run_ok(&app, job).await;
        if let Some(n) = summary_count(&run, "emails_queued") {
            assert_eq!(
                n,
                0,
                "{job} queued e-mails on its second run: {}",
                summary(&run)
            );
        }
    }
    // Longer than the sender's idle poll (2 s), so anything queued would have gone out.
    tokio::time::sleep(secs(5)).await;
    let again = outbox(&app).await;
    assert_eq!(
        again.len(),
        rows.len(),
        "second runs queued: {:?}",
        again
            .iter()
            .skip(rows.len())
            .map(|r| &r.dedupe_key)
            .collect::<Vec<_>>()
    );
    assert_eq!(smtp.count(), before, "second runs sent e-mail");
}

// ---------------------------------------------------------------------------------------------
// Consent, unsubscribe, local times, true words, safe headers
// ---------------------------------------------------------------------------------------------

/// 00:30 on 1 December 2026 in Lagos (WAT, UTC+1), still 30 November in UTC.
const LAGOS_REF: &str = "2026-11-30T23:30:00Z";
const MAILTO: &str = "unsubscribe@tickets.example.test";
const INJECTED_NAME: &str =
    "Femi\r\nBcc: evil@attacker.example\r\n\r\n<img src=x onerror=alert(1)>";
const INJECTED_TITLE: &str = "Gala\r\nBcc: evil@attacker.example";

fn consent_dataset() -> String {
    let r = ref_sql(LAGOS_REF);
    format!(
        "INSERT INTO users (id, email, first_name, email_verified, promotional_emails, \
            newsletter_subscribed, date_of_birth, reengagement_sent, created_at) VALUES \
           (1, 'ada@example.test', 'Ada', true, true, true, '1990-12-01', false, {r} - interval '400 days'), \
           (2, 'bola@example.test', 'Bola', true, false, false, '1990-12-01', false, {r} - interval '400 days'), \
           (3, 'chi@example.test', 'Chi', false, true, true, '1990-12-01', false, {r} - interval '400 days'), \
           (4, 'dayo@example.test', 'Dayo', true, true, false, NULL, false, {r} - interval '1 day'), \
           (5, 'efe@example.test', 'Efe', true, true, false, NULL, false, {r} - interval '400 days'), \
           (6, 'femi@example.test', $n${INJECTED_NAME}$n$, true, false, false, NULL, true, {r} - interval '400 days'), \
           (7, 'gozie@example.test', 'Gozie', true, false, false, NULL, true, {r} - interval '400 days'), \
           (8, 'hauwa@example.test', 'Hauwa', true, false, false, NULL, true, {r} - interval '400 days'); \
         INSERT INTO events (id, title, venue, starts_at, total_tickets, available_tickets, price, currency, created_at) VALUES \
           (200, 'Lagos Live', 'Eko Hotel', {r} + interval '20 days', 100, 99, 500000, 'NGN', {r} - interval '60 days'), \
           (201, $t${INJECTED_TITLE}$t$, 'Civic Centre', {r} + interval '15 days', 100, 98, 100000, 'NGN', {r} - interval '60 days'), \
           (202, 'Promo Night', 'Quilox', {r} + interval '3 days', 100, 100, 750000, 'NGN', {r} - interval '60 days'), \
           (203, 'Tomorrow Fest', 'Freedom Park', TIMESTAMPTZ '2026-12-02T18:00:00Z', 1, 0, 100000, 'NGN', {r} - interval '60 days'); \
         INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, currency, status, \
            created_at, confirmation_email_sent) VALUES \
           (1, 1, 200, 1, 500000, 'NGN', 'confirmed', {r} - interval '5 days', true), \
           (2, 2, 203, 1, 100000, 'NGN', 'confirmed', {r} - interval '5 days', true), \
           (3, 6, 201, 1, 100000, 'NGN', 'confirmed', {r} - interval '1 hour', false), \
           (4, 7, 201, 1, 100000, 'NGN', 'pending', {r} - interval '30 minutes', true); \
         INSERT INTO payments (id, booking_id, user_id, amount, currency, status, created_at, paid_at) VALUES \
           (3001, 4, 7, 100000, 'NGN', 'success', {r} - interval '2 minutes', {r} - interval '2 minutes'), \
           (3002, 4, 8, 100000, 'NGN', 'processing', {r} - interval '20 minutes', NULL);"
    )
}

const CONSENT_JOBS: &[&str] = &[
    "notifications/send-birthday-wishes",
    "notifications/send-promotional-notifications",
    "notifications/send-re-engagement-emails",
    "notifications/send-weekly-newsletter",
    "booking-cleanup/send-pending-booking-confirmations",
    "payment-cleanup/handle-payment-timeouts",
    "event-management/send-event-reminders",
];

/// Marketing mail only with consent (verified and opted in; win-back only for old, inactive
/// accounts), each with RFC 8058 one-click unsubscribe headers whose signed token verifies with
/// the secret and whose mailto is the configured address; times in the job's timezone (Lagos)
/// with its abbreviation; the payment e-mail of a booking paid by another payment says it
/// stands and goes to the booking's customer; CR/LF and markup in user data reach neither the
/// headers nor the HTML. A second run sends nothing.
#[tokio::test]
async fn consent_unsubscribe_local_times_true_words_and_safe_headers() {
    let port = free_port();
    let app = TestApp::builder()
        .env("TICKETMAX_TIMEZONE", "Africa/Lagos")
        .executor_env("SMTP_HOST", "127.0.0.1")
        .executor_env("SMTP_PORT", &port.to_string())
        .executor_env("FRONTEND_URL", FRONTEND)
        .executor_env("TICKETMAX_UNSUBSCRIBE_MAILTO", MAILTO)
        .spawn()
        .await;
    let mut smtp = SmtpServer::new(port, &scratch(&app, "smtp"));
    smtp.start().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("email_outbox").await;
    app.ticketing_exec(&consent_dataset()).await;
    for job in CONSENT_JOBS {
        run_ok_at(&app, job, LAGOS_REF).await;
    }
    let rows = wait_all_delivered(&app, &smtp, secs(60)).await;
    let mails = smtp.messages();
    let by_key = by_outbox_row(&rows, &mails);
    let mut keys: Vec<&str> = rows.iter().map(|r| r.dedupe_key.as_str()).collect();
    keys.sort_unstable();
    // Birthday: 1 December in Lagos; Bola did not opt in, Chi is unverified. Promotion: Dayo
    // and Efe too; Ada booked nothing of Promo Night. Win-back: Efe only (Dayo signed up
    // yesterday, Ada booked 5 days ago). Newsletter: Ada (verified, subscribed, booked).
    assert_eq!(
        keys,
        [
            "birthday:1:2026",
            "booking-confirmation:3",
            "event-reminder:2",
            "newsletter:1:2026-W49",
            "payment-failed:3002",
            "promotion:1:202",
            "promotion:4:202",
            "promotion:5:202",
            "re-engagement:5",
        ],
        "queued: {rows:#?}"
    );
    for r in &rows {
        let m = by_key[&r.dedupe_key];
        assert_well_formed(r, m);
        let list = match r.kind.as_str() {
            "newsletter" => Some("newsletter"),
            "promotion" | "birthday" | "re-engagement" => Some("marketing"),
            _ => None,
        };
        let Some(list) = list else {
            assert!(m.list_unsubscribe.is_empty(), "{}: {m:?}", r.dedupe_key);
            continue;
        };
        let user: i64 = r
            .dedupe_key
            .split(':')
            .nth(1)
            .and_then(|u| u.parse().ok())
            .expect("user");
        let token = unsubscribe_token(UNSUBSCRIBE_SECRET, user, list);
        let url = format!("{FRONTEND}/unsubscribe?token={token}");
        assert_eq!(
            m.list_unsubscribe,
            format!("<{url}>, <mailto:{MAILTO}?subject={token}>"),
            "{}",
            r.dedupe_key
        );
        assert_eq!(m.list_unsubscribe_post, "List-Unsubscribe=One-Click");
        // Somebody else's token is not this one: the link names one user.
        assert_ne!(token, unsubscribe_token(UNSUBSCRIBE_SECRET, user + 1, list));
        assert_ne!(
            token,
            unsubscribe_token("another secret of forty characters......", user, list)
        );
        assert_contains(&r.dedupe_key, m.text(), &[&url]);
    }
    // Times in the job's timezone, with its abbreviation.
    let reminder = by_key["event-reminder:2"];
    assert_contains("reminder", reminder.text(), &["Wed 2 Dec 2026, 19:00 WAT"]);
    assert_contains("reminder", reminder.html(), &["Wed 2 Dec 2026, 19:00 WAT"]);
    assert!(!reminder.text().contains("UTC"), "{}", reminder.text());
    // The extra payment attempt of a paid booking: not completed, the booking stands; to the
    // booking's customer (Gozie), not to whoever made the attempt (Hauwa).
    let failed = rows
        .iter()
        .find(|r| r.dedupe_key == "payment-failed:3002")
        .expect("row");
    assert_eq!(failed.recipient, "gozie@example.test");
    let m = by_key["payment-failed:3002"];
    assert_eq!(m.subject, "A payment attempt failed; your booking stands");
    assert_contains("payment-failed", m.text(), &["was not completed", "stands"]);
    assert!(!m.text().contains("released"), "{}", m.text());
    assert_eq!(
        app.ticketing_scalar::<String>("SELECT status FROM bookings WHERE id = 4")
            .await,
        "pending"
    );
    // CR/LF in a name and a title: no forged header, one recipient, one-line subject; markup
    // escaped in the HTML.
    let confirmation = by_key["booking-confirmation:3"];
    assert!(
        !confirmation
            .headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("bcc")),
        "{:?}",
        confirmation.headers
    );
    assert_eq!(
        confirmation.rcpt.trim(),
        "femi@example.test",
        "{confirmation:?}"
    );
    assert_eq!(
        confirmation.subject,
        "Booking confirmed: Gala Bcc: evil@attacker.example"
    );
    assert!(
        !confirmation.html().contains("<img"),
        "{}",
        confirmation.html()
    );
    assert_contains(
        "confirmation",
        confirmation.html(),
        &["&lt;img src=x onerror=alert(1)&gt;"],
    );
    for line in confirmation.text().lines() {
        assert!(!line.starts_with("Bcc:"), "{}", confirmation.text());
    }

    // A second run of every job sends nothing.
    let before = smtp.count();
    for job in CONSENT_JOBS {
        let run = run_ok_at(&app, job, LAGOS_REF).await;
        assert_eq!(
            summary_count(&run, "emails_queued").unwrap_or(0),
            0,
            "{job}: {}",
            summary(&run)
        );
    }
    tokio::time::sleep(secs(4)).await;
    assert_eq!(smtp.count(), before, "second runs sent e-mail");
}

/// A re-run of a report whose figures changed mails the admins the updated report once, marked
/// "[updated]"; a re-run with the same figures mails nothing.
#[tokio::test]
async fn a_re_run_with_changed_figures_mails_the_updated_report_once() {
    use ticketmax_e2e::jobs::DAILY_REPORT as DAILY;
    let port = free_port();
    let app = TestApp::builder()
        .executor_env("SMTP_HOST", "127.0.0.1")
        .executor_env("SMTP_PORT", &port.to_string())
        .executor_env("ADMIN_EMAILS", &ADMINS.join(","))
        .spawn()
        .await;
    let mut smtp = SmtpServer::new(port, &scratch(&app, "smtp"));
    smtp.start().await;
    app.silence_schedules(&[]).await;
    app.wait_for_ticketing_table("email_outbox").await;
    let r = ref_sql(REF);
    let booking = |id: i64| {
        format!(
            "INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, status, created_at) \
             VALUES ({id}, 1, 1, 1, 250000, 'confirmed', {r} - interval '{id} hours')"
        )
    };
    app.ticketing_exec(&format!(
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.test'); \
         INSERT INTO events (id, title, total_tickets, available_tickets) VALUES (1, 'x', 10, 8); {}",
        booking(1)
    ))
    .await;
    let queued = |run: &Run| summary_count(run, "emails_queued").unwrap_or(-1);
    assert_eq!(queued(&run_ok(&app, DAILY).await), 2);
    assert_eq!(queued(&run_ok(&app, DAILY).await), 0, "same figures");
    app.ticketing_exec(&booking(2)).await;
    assert_eq!(queued(&run_ok(&app, DAILY).await), 2, "changed figures");
    assert_eq!(
        queued(&run_ok(&app, DAILY).await),
        0,
        "same changed figures"
    );
    let rows = wait_all_delivered(&app, &smtp, secs(60)).await;
    let mails = smtp.messages();
    let by_key = by_outbox_row(&rows, &mails);
    for admin in ADMINS {
        let first = by_key[&format!("report:daily-bookings:2026-03-01:{admin}")];
        assert_eq!(first.subject, "TicketMax report: daily-bookings 2026-03-01");
        let updated = by_key[&format!("report:daily-bookings:2026-03-01:{admin}:v2")];
        assert_eq!(
            updated.subject,
            "TicketMax report: daily-bookings 2026-03-01 [updated]"
        );
        assert_contains(
            "updated report",
            updated.text(),
            &["Updated:", "\"total\": 2"],
        );
    }
    assert_eq!(
        mails.len(),
        4,
        "{:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Crash and outage
// ---------------------------------------------------------------------------------------------

use ticketmax_e2e::jobs::CONFIRMATIONS;
const N: usize = 6;

/// `N` confirmed bookings whose confirmation e-mail is not sent yet.
async fn confirmations_dataset(app: &TestApp) {
    app.wait_for_ticketing_table("email_outbox").await;
    let users: Vec<String> = (1..=N)
        .map(|i| format!("({i}, 'user{i}@example.test', 'User{i}', true)"))
        .collect();
    let bookings: Vec<String> = (1..=N)
        .map(|i| format!("({i}, {i}, 1, 1, 250000, 'NGN', 'confirmed', now(), false)"))
        .collect();
    app.ticketing_exec(&format!(
        "INSERT INTO users (id, email, first_name, email_verified) VALUES {}; \
         INSERT INTO events (id, title, starts_at, total_tickets, available_tickets, price) VALUES \
           (1, 'Crash Test Live', now() + interval '5 days', 100, {}, 250000); \
         INSERT INTO bookings (id, user_id, event_id, quantity, total_amount, currency, status, \
            confirmed_at, confirmation_email_sent) VALUES {};",
        users.join(", "),
        100 - N,
        bookings.join(", ")
    ))
    .await;
}

/// With schedules silenced, the confirmations dataset and a run of the confirmation job that
/// queues its `N` e-mails.
async fn queue_confirmations(app: &TestApp) {
    app.silence_schedules(&[]).await;
    confirmations_dataset(app).await;
    let run = run_ok(app, CONFIRMATIONS).await;
    assert_eq!(
        summary_count(&run, "emails_queued"),
        Some(N as i64),
        "{}",
        summary(&run)
    );
}

/// Asserts the Maildir holds exactly one message per outbox row (`N` of them), to the right user.
fn assert_each_once(rows: &[OutboxRow], smtp: &SmtpServer) {
    assert_eq!(rows.len(), N, "outbox rows: {rows:#?}");
    let mails = smtp.messages();
    assert_eq!(
        mails.len(),
        N,
        "messages: {:?}",
        mails
            .iter()
            .map(|m| (&m.to, &m.message_id))
            .collect::<Vec<_>>()
    );
    let by_key = by_outbox_row(rows, &mails);
    for r in rows {
        assert_well_formed(r, by_key[&r.dedupe_key]);
        assert_contains(
            &r.dedupe_key,
            by_key[&r.dedupe_key].text(),
            &["₦2,500.00", "is confirmed"],
        );
    }
}

/// Waits until each of the `N` e-mails has been tried and failed at least once; its rows.
async fn every_email_tried_once(app: &TestApp, against: &str) -> Vec<OutboxRow> {
    eventually(
        &format!("every e-mail tried once against {against}"),
        secs(30),
        || async move {
            let rows = outbox(app).await;
            (rows.len() == N
                && rows
                    .iter()
                    .all(|r| r.attempts >= 1 && r.last_error.is_some()))
            .then_some(rows)
        },
    )
    .await
}

#[tokio::test]
async fn sigkill_between_outbox_write_and_send_delivers_each_message_once() {
    let port = free_port();
    let black_hole = BlackHole::start(port).await;
    let mut app = TestApp::builder()
        .executor_env("SMTP_HOST", "127.0.0.1")
        .executor_env("SMTP_PORT", &port.to_string())
        .executor_env("SMTP_SECURITY", "none")
        // A crashed sender's lease runs out quickly, so the restarted one retries within seconds.
        .executor_env("TICKETMAX_MAIL_LEASE_SECONDS", "5")
        .spawn()
        .await;
    queue_confirmations(&app).await;
    // The sender has leased every e-mail and its SMTP sessions hang on the greeting.
    eventually(
        "every e-mail leased and an SMTP session open",
        secs(30),
        || {
            let accepted = black_hole.accepted.load(Ordering::SeqCst);
            let app = &app;
            async move {
                let rows = outbox(app).await;
                (accepted > 0 && rows.len() == N && rows.iter().all(|r| r.attempts >= 1))
                    .then_some(())
            }
        },
    )
    .await;
    app.executor().kill().await;
    let rows = outbox(&app).await;
    assert!(
        rows.iter().all(|r| r.status == "pending"),
        "before the restart every e-mail is still pending: {rows:#?}"
    );
    black_hole.stop().await;

    let mut smtp = SmtpServer::new(port, &scratch(&app, "smtp"));
    smtp.start().await;
    app.executor().start().await;
    let rows = wait_all_delivered(&app, &smtp, secs(60)).await;
    assert_each_once(&rows, &smtp);
    // Nothing arrives late: wait past another lease and a poll.
    tokio::time::sleep(secs(8)).await;
    assert_eq!(smtp.count(), N, "a message arrived twice after the restart");
    let rows = outbox(&app).await;
    assert!(
        rows.iter().all(|r| r.status == "sent" && r.attempts == 2),
        "each e-mail sent on its second attempt: {rows:#?}"
    );
}

#[tokio::test]
async fn smtp_outage_loses_nothing_and_delivers_when_the_server_returns() {
    // Nobody listens on the port yet: connections are refused.
    let port = free_port();
    let app = TestApp::builder()
        .executor_env("SMTP_HOST", "127.0.0.1")
        .executor_env("SMTP_PORT", &port.to_string())
        .executor_env("SMTP_SECURITY", "none")
        .spawn()
        .await;
    queue_confirmations(&app).await;

    // Every e-mail is tried, fails transiently and stays pending with its error recorded.
    every_email_tried_once(&app, "the dead server").await;
    // Down "for a while".
    tokio::time::sleep(secs(3)).await;
    let rows = outbox(&app).await;
    assert!(
        rows.iter()
            .all(|r| r.status == "pending" && r.attempts == 1),
        "during the outage e-mails stay pending (one attempt, backing off): {rows:#?}"
    );

    let mut smtp = SmtpServer::new(port, &scratch(&app, "smtp"));
    smtp.start().await;
    assert_eq!(smtp.count(), 0);
    // The first retry is due 30 s after the failed attempt.
    let rows = wait_all_delivered(&app, &smtp, secs(75)).await;
    assert_each_once(&rows, &smtp);
    assert!(
        rows.iter()
            .all(|r| r.last_error.is_none() && r.attempts == 2),
        "delivered on the retry, error cleared: {rows:#?}"
    );
    tokio::time::sleep(secs(3)).await;
    assert_eq!(smtp.count(), N, "a message arrived twice");
}

// ---------------------------------------------------------------------------------------------
// TLS to the SMTP server
// ---------------------------------------------------------------------------------------------

/// The relay has a certificate from an internal CA (SMTP_CA_FILE). STARTTLS (aiosmtpd refuses
/// mail before it) and implicit TLS each deliver every message once; an executor that does not
/// trust the relay's CA delivers nothing, keeps every e-mail pending and says why.
#[tokio::test]
async fn smtp_over_starttls_and_implicit_tls_with_an_internal_ca() {
    use ticketmax_e2e::pki::{leaf, make_ca, write_pem};
    let ca = make_ca("Mail relay CA");
    let other = make_ca("Some other CA");
    let relay = leaf(&ca, &["localhost", "127.0.0.1"], "relay");

    for (security, trusted) in [("starttls", true), ("tls", true), ("tls", false)] {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tm-smtp-tls-{}-{security}-{trusted}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, key) = (
            write_pem(&dir, "relay.pem", &relay.0),
            write_pem(&dir, "relay.key", &relay.1),
        );
        let ca_file = write_pem(
            &dir,
            "ca.pem",
            &if trusted { ca.pem() } else { other.pem() },
        );
        let app = TestApp::builder()
            .executor_env("SMTP_HOST", "127.0.0.1")
            .executor_env("SMTP_PORT", &port.to_string())
            .executor_env("SMTP_SECURITY", security)
            .executor_env("SMTP_CA_FILE", &ca_file)
            .spawn()
            .await;
        let smtp = SmtpServer::new(port, &scratch(&app, "smtp"));
        let mut smtp = if security == "tls" {
            smtp.with_implicit_tls(&cert, &key)
        } else {
            smtp.with_starttls(&cert, &key)
        };
        smtp.start().await;
        queue_confirmations(&app).await;

        if trusted {
            let rows = wait_all_delivered(&app, &smtp, secs(60)).await;
            assert_each_once(&rows, &smtp);
            continue;
        }
        let rows = every_email_tried_once(&app, "a relay this executor does not trust").await;
        for r in &rows {
            assert_eq!(r.status, "pending", "retried later, not given up: {r:#?}");
            let error = r.last_error.as_deref().unwrap_or_default();
            assert!(
                error.contains("TLS handshake") && error.to_lowercase().contains("certificate"),
                "the error says why: {error}"
            );
        }
        assert_eq!(smtp.count(), 0, "a message reached an untrusted relay");
    }
}
