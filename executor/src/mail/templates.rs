//! E-mail bodies, plain text and HTML, built from an outbox row's kind and payload.
//!
//! Each kind fills one [`Letter`]; two minijinja templates (`templates/letter.txt`,
//! `templates/letter.html`) turn it into text and escaped HTML, so the versions never drift
//! apart and user-supplied text (names, event titles) is escaped once. Every text taken from the
//! payload is made a single line first ([`one_line`]): a name or title holding CR/LF cannot
//! forge header-like lines in the text part. Times are shown in the job's timezone (the
//! payload's `timezone`, UTC when absent) with its abbreviation.
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::{AutoEscape, Environment};
use serde_json::{Map, Value};

use super::money::format_amount;
use super::unsubscribe::Links;

pub struct Rendered {
    pub text: String,
    pub html: String,
}

/// The content of an e-mail, independent of its format.
#[derive(Default, serde::Serialize)]
struct Letter {
    greeting: String,
    paragraphs: Vec<String>,
    details: Vec<(String, String)>,
    /// Rows of a table (e.g. events in a newsletter, figures of a report).
    list: Vec<String>,
    action: Option<(String, String)>,
    /// Why the recipient gets this e-mail and the signed one-click unsubscribe link.
    unsubscribe: Option<(String, String)>,
    footer: Option<String>,
}

/// `s` on one line: control characters (CR, LF, tabs, ...) and Unicode line separators become
/// spaces, runs of spaces one. For subjects and every payload text shown in a letter.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            ' '
        } else {
            c
        };
        if c.is_whitespace() {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

struct Payload<'a> {
    map: &'a Map<String, Value>,
    tz: Tz,
}

impl<'a> Payload<'a> {
    fn new(map: &'a Map<String, Value>, tz: Tz) -> Self {
        Payload { map, tz }
    }

    fn str(&self, key: &str) -> String {
        match self.map.get(key) {
            Some(Value::String(s)) => one_line(s),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    fn int(&self, key: &str) -> i64 {
        match self.map.get(key) {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        }
    }

    fn flag(&self, key: &str) -> bool {
        match self.map.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
            Some(Value::String(s)) => s == "true" || s == "1",
            _ => false,
        }
    }

    fn money(&self, key: &str) -> String {
        format_amount(self.int(key), &self.str("currency"))
    }

    fn name(&self) -> String {
        let first = self.str("first_name");
        if first.is_empty() {
            "there".to_owned()
        } else {
            first
        }
    }

    fn time(&self, key: &str) -> String {
        format_time(&self.str(key), self.tz)
    }

    fn event(&self) -> String {
        let title = self.str("event_title");
        if title.is_empty() {
            "your event".to_owned()
        } else {
            title
        }
    }
}

/// The job's timezone named in a payload; UTC for rows queued before payloads carried one.
fn payload_tz(map: &Map<String, Value>) -> Tz {
    map.get("timezone")
        .and_then(Value::as_str)
        .and_then(|name| name.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// A time as the database gave it: RFC 3339 (Postgres JSON, the executor's own SQLite text) or
/// another SQLite shape (`2026-11-28 10:00:00`, with or without `Z` or an offset).
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(raw, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let naive = raw.trim_end_matches('Z');
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(naive, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Shown in `tz` with its abbreviation: "Wed 2 Dec 2026, 19:00 WAT".
pub fn format_time(raw: &str, tz: Tz) -> String {
    match parse_time(raw) {
        Some(t) => t
            .with_timezone(&tz)
            .format("%a %-d %b %Y, %H:%M %Z")
            .to_string(),
        None => raw.to_owned(),
    }
}

fn booking_details(p: &Payload<'_>) -> Vec<(String, String)> {
    let mut details = vec![
        ("Booking".to_owned(), format!("#{}", p.int("booking_id"))),
        ("Event".to_owned(), p.event()),
    ];
    if !p.str("starts_at").is_empty() {
        details.push(("Date".into(), p.time("starts_at")));
    }
    if !p.str("venue").is_empty() {
        details.push(("Venue".into(), p.str("venue")));
    }
    details.push(("Tickets".into(), p.int("quantity").to_string()));
    if p.map.contains_key("total_amount") {
        details.push(("Total".into(), p.money("total_amount")));
    }
    details
}

/// What a failed or abandoned payment did to its booking (the payload's `booking_outcome`).
fn payment_outcome(p: &Payload<'_>) -> String {
    let event = p.event();
    match p.str("booking_outcome").as_str() {
        "released" => format!(
            "Your booking for {event} has been cancelled and its tickets released; no money was \
             taken for this payment."
        ),
        "stands" => format!(
            "Your booking for {event} is already paid by another payment and stands: nothing \
             changes for you, and no money was taken for this attempt."
        ),
        "already_cancelled" => format!(
            "Your booking for {event} had already been cancelled; no money was taken for this \
             payment."
        ),
        _ => "No money was taken for this payment.".to_owned(),
    }
}

/// The signed unsubscribe link of newsletter and marketing mail, with why it was sent.
fn unsubscribe_line(kind: &str, links: Option<&Links>) -> Option<(String, String)> {
    let links = links?;
    let why = if kind == "newsletter" {
        "You receive the TicketMax newsletter because you subscribed to it. Unsubscribe with one \
         click"
    } else {
        "You receive TicketMax offers because you agreed to promotional e-mails. Unsubscribe \
         from offers with one click"
    };
    Some((why.to_owned(), links.url.clone()))
}

fn letter(kind: &str, p: &Payload<'_>, frontend_url: &str, links: Option<&Links>) -> Letter {
    let mut l = Letter {
        greeting: format!("Hi {},", p.name()),
        ..Letter::default()
    };
    let base = frontend_url.trim_end_matches('/');
    match kind {
        "booking-cancelled" => {
            l.paragraphs.push(format!(
                "Your booking for {} was cancelled because it was not paid in time. \
                 The tickets have been released.",
                p.event()
            ));
            let reason = p.str("cancellation_reason");
            if !reason.is_empty() {
                l.paragraphs.push(format!("Reason: {reason}"));
            }
            l.details = booking_details(p);
            l.action = Some((
                "Book again".into(),
                format!("{base}/events/{}", p.int("event_id")),
            ));
        }
        "payment-abandoned" | "payment-failed" => {
            let stands = p.str("booking_outcome") == "stands";
            let reason = match p.str("failure_reason").as_str() {
                "" => String::new(),
                r => format!(" ({r})"),
            };
            let what = match (kind, stands) {
                ("payment-failed", true) => format!(
                    "An extra payment attempt of {} for your booking was not completed{reason}.",
                    p.money("amount")
                ),
                ("payment-failed", false) => format!(
                    "Your payment of {} could not be completed{reason}.",
                    p.money("amount")
                ),
                (_, true) => format!(
                    "An extra payment attempt of {} for your booking was not completed in time \
                     and has been closed.",
                    p.money("amount")
                ),
                (_, false) => format!(
                    "Your payment of {} was not completed in time and has been closed.",
                    p.money("amount")
                ),
            };
            l.paragraphs.push(what);
            l.paragraphs.push(payment_outcome(p));
            l.details = vec![
                ("Payment".into(), format!("#{}", p.int("payment_id"))),
                ("Booking".into(), format!("#{}", p.int("booking_id"))),
                ("Amount".into(), p.money("amount")),
            ];
            if !p.str("starts_at").is_empty() {
                l.details.push(("Event date".into(), p.time("starts_at")));
            }
            l.action = Some(if stands {
                (
                    "View your booking".into(),
                    format!("{base}/bookings/{}", p.int("booking_id")),
                )
            } else {
                ("Try again".into(), format!("{base}/bookings"))
            });
        }
        "refund-approved" => {
            let amount = p.money("refund_amount");
            let event = p.event();
            l.paragraphs.push(match p.str("refund_policy").as_str() {
                "event_cancelled" => format!(
                    "{event} was cancelled by its organizer, so you get a full refund: {amount} \
                     will be returned to your original payment method."
                ),
                "partial" => format!(
                    "Your refund for {event} has been approved: {amount} will be returned to \
                     your original payment method. This is 50 % of what you paid, as the \
                     request came less than 24 hours before the event."
                ),
                _ => format!(
                    "Your refund for {event} has been approved: {amount} will be returned to \
                     your original payment method."
                ),
            });
            l.details = booking_details(p);
            l.details.push(("Refund".into(), amount));
        }
        "refund-denied" => {
            l.paragraphs.push(format!(
                "We are sorry: your refund request for {} was declined.",
                p.event()
            ));
            l.paragraphs
                .push(format!("Reason: {}", p.str("refund_denial_reason")));
            l.details = booking_details(p);
        }
        "booking-confirmation" => {
            l.paragraphs
                .push(format!("Your booking for {} is confirmed.", p.event()));
            l.details = booking_details(p);
            l.action = Some((
                "View your tickets".into(),
                format!("{base}/bookings/{}", p.int("booking_id")),
            ));
        }
        "event-reminder" | "early-bird-reminder" => {
            let when = if kind == "event-reminder" {
                "tomorrow"
            } else {
                "in one week"
            };
            l.paragraphs
                .push(format!("A reminder: {} is {when}.", p.event()));
            l.details = booking_details(p);
            l.action = Some((
                "View your tickets".into(),
                format!("{base}/bookings/{}", p.int("booking_id")),
            ));
        }
        "event-follow-up" => {
            l.paragraphs.push(format!(
                "Thank you for attending {}! We would love to hear how it went.",
                p.event()
            ));
            l.action = Some((
                "Leave feedback".into(),
                format!(
                    "{base}/events/{}/feedback?booking={}",
                    p.int("event_id"),
                    p.int("booking_id")
                ),
            ));
        }
        "newsletter" => {
            l.paragraphs
                .push("Here are the next events on TicketMax:".into());
            if let Some(Value::Array(events)) = p.map.get("events") {
                for e in events {
                    if let Value::Object(e) = e {
                        let e = Payload::new(e, p.tz);
                        l.list.push(format!(
                            "{} — {} — {} — {}",
                            e.str("title"),
                            e.time("starts_at"),
                            e.str("venue"),
                            e.money("price")
                        ));
                    }
                }
            }
            l.action = Some(("Browse events".into(), format!("{base}/events")));
            l.unsubscribe = unsubscribe_line(kind, links);
        }
        "promotion" => {
            l.paragraphs.push(format!(
                "Tickets are still available for {} on {}.",
                p.event(),
                p.time("starts_at")
            ));
            l.details = vec![
                ("Venue".into(), p.str("venue")),
                ("Price".into(), p.money("price")),
                (
                    "Tickets left".into(),
                    p.int("available_tickets").to_string(),
                ),
            ];
            l.action = Some((
                "Get tickets".into(),
                format!("{base}/events/{}", p.int("event_id")),
            ));
            l.unsubscribe = unsubscribe_line(kind, links);
            l.footer = Some(format!(
                "Manage your e-mail preferences: {base}/account/preferences"
            ));
        }
        "birthday" => {
            l.paragraphs
                .push("Happy birthday from all of us at TicketMax!".into());
            l.paragraphs.push(format!(
                "Here is a gift: use the code {} for a discount on your next booking.",
                p.str("offer_code")
            ));
            l.action = Some(("Find an event".into(), format!("{base}/events")));
            l.unsubscribe = unsubscribe_line(kind, links);
        }
        "re-engagement" => {
            l.paragraphs
                .push("We miss you! A lot has happened on TicketMax since your last visit.".into());
            l.paragraphs.push(format!(
                "Come back with the code {} for a discount on your next booking.",
                p.str("offer_code")
            ));
            l.action = Some(("See what's on".into(), format!("{base}/events")));
            l.unsubscribe = unsubscribe_line(kind, links);
        }
        "organizer-analytics" => {
            l.paragraphs
                .push(format!("Your results for {}:", p.str("period")));
            l.details = vec![
                ("Events".into(), p.int("events").to_string()),
                ("Tickets sold".into(), p.int("tickets_sold").to_string()),
                ("Bookings".into(), p.int("bookings").to_string()),
            ];
            if let Some(Value::Object(revenue)) = p.map.get("revenue") {
                for (currency, amount) in revenue {
                    l.details.push((
                        format!("Revenue ({currency})"),
                        format_amount(amount.as_i64().unwrap_or(0), currency),
                    ));
                }
            }
            l.action = Some(("Open your dashboard".into(), format!("{base}/organizer")));
        }
        "report" | "alert" => {
            l.greeting = "Hello,".into();
            let title = if kind == "alert" {
                p.str("title")
            } else {
                format!("Report {} for {}", p.str("report_kind"), p.str("period"))
            };
            l.paragraphs.push(title);
            if p.flag("updated") {
                l.paragraphs.push(
                    "Updated: a re-run changed the figures of this period since the report was \
                     last sent; these are the current ones."
                        .into(),
                );
            }
            let window = p.map.get("body").and_then(|b| b.get("window"));
            if let Some((Some(start), Some(end))) = window.map(|w| {
                (
                    w.get("start").and_then(Value::as_str),
                    w.get("end").and_then(Value::as_str),
                )
            }) {
                l.paragraphs.push(format!(
                    "Covers {} to {}.",
                    format_time(start, p.tz),
                    format_time(end, p.tz)
                ));
            }
            if let Some(Value::Array(warnings)) = p.map.get("warnings") {
                l.list = warnings
                    .iter()
                    .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_owned))
                    .collect();
            }
            let body = p.map.get("body").cloned().unwrap_or(Value::Null);
            if let Ok(pretty) = serde_json::to_string_pretty(&body)
                && body != Value::Null
            {
                l.footer = Some(pretty);
            }
        }
        _ => {
            l.paragraphs
                .push("You have a new message from TicketMax.".into());
            l.details = p
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
        }
    }
    l
}

/// The two layouts, rendered by minijinja. HTML auto-escaping (by the `.html` name) goes through
/// [`escape`], so user-supplied text is escaped exactly once and URLs stay readable.
static TEMPLATES: LazyLock<Result<Environment<'static>, minijinja::Error>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_template("letter.txt", include_str!("templates/letter.txt"))?;
    env.add_template("letter.html", include_str!("templates/letter.html"))?;
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == AutoEscape::Html && !value.is_safe() {
            out.write_str(&escape(&value.to_string())).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    Ok(env)
});

/// Renders an outbox row; `links` are the signed unsubscribe links of newsletter and marketing
/// mail (None for transactional mail).
pub fn render(
    kind: &str,
    payload: &Value,
    frontend_url: &str,
    links: Option<&Links>,
) -> Result<Rendered, minijinja::Error> {
    let empty = Map::new();
    let map = payload.as_object().unwrap_or(&empty);
    let l = letter(
        kind,
        &Payload::new(map, payload_tz(map)),
        frontend_url,
        links,
    );
    let env = TEMPLATES.as_ref().map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
    })?;
    Ok(Rendered {
        text: env.get_template("letter.txt")?.render(&l)?,
        html: env.get_template("letter.html")?.render(&l)?,
    })
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_and_html(kind: &str, payload: Value) -> Rendered {
        render(kind, &payload, "https://tm.example", None).expect("render")
    }

    #[test]
    fn escapes_user_text_and_formats_money() {
        let payload = serde_json::json!({
            "first_name": "<b>Ada</b>", "booking_id": 7, "event_title": "Rock & Roll",
            "quantity": 2, "total_amount": 123450, "currency": "NGN",
            "starts_at": "2026-12-01T19:00:00+00:00"
        });
        let r = text_and_html("booking-cancelled", payload);
        assert!(r.html.starts_with("<!DOCTYPE html>") && r.html.ends_with("</html>"));
        assert!(r.text.ends_with("— The TicketMax team\n"), "{:?}", r.text);
        assert!(r.html.contains("&lt;b&gt;Ada&lt;/b&gt;"));
        assert!(r.html.contains("Rock &amp; Roll"));
        assert!(!r.html.contains("<b>Ada"));
        assert!(r.text.contains("₦1,234.50"));
        // No timezone in the payload (rows queued before it was recorded): UTC.
        assert!(r.text.contains("Tue 1 Dec 2026, 19:00 UTC"));
    }

    #[test]
    fn times_in_the_jobs_timezone_with_its_abbreviation() {
        for (tz, raw, shown) in [
            (
                "Africa/Lagos",
                "2026-12-02T18:00:00+00:00",
                "Wed 2 Dec 2026, 19:00 WAT",
            ),
            // SQLite text written by other software: no T, no offset; or Z; or an offset.
            (
                "Africa/Lagos",
                "2026-12-02 18:00:00",
                "Wed 2 Dec 2026, 19:00 WAT",
            ),
            (
                "Africa/Lagos",
                "2026-12-02T18:00:00Z",
                "Wed 2 Dec 2026, 19:00 WAT",
            ),
            (
                "Africa/Lagos",
                "2026-12-02 19:00:00+01:00",
                "Wed 2 Dec 2026, 19:00 WAT",
            ),
            (
                "Europe/London",
                "2026-07-01T18:00:00Z",
                "Wed 1 Jul 2026, 19:00 BST",
            ),
            (
                "Europe/London",
                "2026-12-02T18:00:00Z",
                "Wed 2 Dec 2026, 18:00 GMT",
            ),
            (
                "America/New_York",
                "2026-12-03T00:30:00Z",
                "Wed 2 Dec 2026, 19:30 EST",
            ),
        ] {
            let r = text_and_html(
                "event-reminder",
                serde_json::json!({"event_title": "Gala", "starts_at": raw, "timezone": tz}),
            );
            assert!(r.text.contains(shown), "{tz} {raw}: {}", r.text);
            assert!(r.html.contains(shown), "{tz} {raw}: {}", r.html);
            assert!(!r.text.contains("UTC"), "{}", r.text);
        }
    }

    /// CR/LF in user data never starts a line of its own: a name cannot forge header-like lines
    /// ("Bcc: ...") in the text part, nor markup in the HTML part.
    #[test]
    fn user_text_is_one_line_and_escaped() {
        let r = text_and_html(
            "booking-confirmation",
            serde_json::json!({
                "first_name": "Ada\r\nBcc: victim@evil.example\r\n\r\n<img src=x onerror=alert(1)>",
                "event_title": "Gala\nX-Injected: yes", "booking_id": 3,
                "venue": "Hall\u{2028}Two",
            }),
        );
        for line in r.text.lines() {
            assert!(
                !line.starts_with("Bcc:") && !line.starts_with("X-Injected:"),
                "forged line {line:?} in {}",
                r.text
            );
        }
        assert!(
            r.text.contains("Hi Ada Bcc: victim@evil.example <img"),
            "{}",
            r.text
        );
        assert!(r.text.contains("Venue: Hall Two"), "{}", r.text);
        assert!(!r.html.contains("<img"), "{}", r.html);
        assert!(
            r.html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{}",
            r.html
        );
        assert_eq!(one_line(" a\r\n\tb  c\u{0085}"), "a b c");
        assert_eq!(one_line("Rock & Roll"), "Rock & Roll");
    }

    #[test]
    fn payment_mails_say_what_happened_to_the_booking() {
        let payload = |outcome: &str| {
            serde_json::json!({
                "first_name": "Bola", "payment_id": 2, "booking_id": 1, "amount": 4999,
                "currency": "USD", "event_title": "Gala", "booking_outcome": outcome,
                "failure_reason": "Payment gateway timeout",
            })
        };
        for kind in ["payment-failed", "payment-abandoned"] {
            let stands = text_and_html(kind, payload("stands"));
            assert!(stands.text.contains("not completed"), "{}", stands.text);
            assert!(
                stands
                    .text
                    .contains("Gala is already paid by another payment and stands")
            );
            assert!(!stands.text.contains("released"), "{}", stands.text);
            assert!(!stands.text.contains("cancelled"), "{}", stands.text);
            assert!(!stands.text.contains("Try again"), "{}", stands.text);
            let released = text_and_html(kind, payload("released"));
            assert!(released.text.contains("cancelled and its tickets released"));
            let before = text_and_html(kind, payload("already_cancelled"));
            assert!(
                before.text.contains("had already been cancelled"),
                "{}",
                before.text
            );
            assert!(!before.text.contains("released"), "{}", before.text);
        }
    }

    #[test]
    fn refund_mails_name_the_policy_applied() {
        let r = |policy: &str| {
            text_and_html(
                "refund-approved",
                serde_json::json!({"event_title": "Gala", "refund_amount": 50000,
                                   "currency": "NGN", "refund_policy": policy}),
            )
            .text
        };
        assert!(r("partial").contains("₦500.00 will be returned"));
        assert!(r("partial").contains("50 %"));
        assert!(
            r("event_cancelled").contains("cancelled by its organizer, so you get a full refund")
        );
        assert!(!r("full").contains("50 %"));
    }

    #[test]
    fn marketing_mail_carries_the_signed_link_transactional_mail_none() {
        let u = super::super::unsubscribe::Unsubscribe::new(
            "0123456789abcdef0123456789abcdef",
            "https://tm.example",
            None,
        )
        .expect("unsubscribe");
        let links = u.links(12, super::super::unsubscribe::List::Marketing);
        for kind in ["promotion", "birthday", "re-engagement", "newsletter"] {
            let r = render(
                kind,
                &serde_json::json!({}),
                "https://tm.example",
                Some(&links),
            )
            .expect("render");
            assert!(r.text.contains(&links.url), "{kind}: {}", r.text);
            assert!(
                r.html.contains(&format!("href=\"{}\"", links.url)),
                "{kind}: {}",
                r.html
            );
        }
        let r = text_and_html("booking-confirmation", serde_json::json!({}));
        assert!(!r.text.contains("unsubscribe"), "{}", r.text);
    }

    #[test]
    fn updated_reports_say_so_and_name_their_window_locally() {
        let r = text_and_html(
            "report",
            serde_json::json!({"report_kind": "daily-bookings", "period": "2026-11-28",
                "updated": true, "timezone": "Africa/Lagos",
                "body": {"window": {"start": "2026-11-27T23:00:00Z", "end": "2026-11-28T23:00:00Z"}}}),
        );
        assert!(
            r.text.contains("Updated: a re-run changed the figures"),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("Covers Sat 28 Nov 2026, 00:00 WAT to Sun 29 Nov 2026, 00:00 WAT."),
            "{}",
            r.text
        );
        let first = text_and_html(
            "report",
            serde_json::json!({"report_kind": "daily-bookings", "period": "2026-11-28"}),
        );
        assert!(!first.text.contains("Updated"), "{}", first.text);
    }
}
