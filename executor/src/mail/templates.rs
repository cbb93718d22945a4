//! E-mail bodies, plain text and HTML, built from an outbox row's kind and payload.
//!
//! Each kind fills one [`Letter`]; two minijinja templates (`templates/letter.txt`,
//! `templates/letter.html`) turn it into text and escaped HTML, so the versions never drift
//! apart and user-supplied text (names, event titles) is escaped once.
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment};
use serde_json::{Map, Value};

use super::money::format_amount;

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
    footer: Option<String>,
}

struct Payload<'a>(&'a Map<String, Value>);

impl Payload<'_> {
    fn str(&self, key: &str) -> String {
        match self.0.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    fn int(&self, key: &str) -> i64 {
        match self.0.get(key) {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        }
    }

    fn money(&self, key: &str) -> String {
        format_amount(self.int(key), &self.str("currency"))
    }

    fn name(&self) -> String {
        let first = self.str("first_name");
        if first.trim().is_empty() {
            "there".to_owned()
        } else {
            first
        }
    }

    fn time(&self, key: &str) -> String {
        format_time(&self.str(key))
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

/// Times arrive as RFC 3339 (Postgres JSON or SQLite text); shown as "Sat 28 Nov 2026, 19:00 UTC".
fn format_time(raw: &str) -> String {
    let parsed = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc())
        });
    match parsed {
        Ok(t) => t.format("%a %-d %b %Y, %H:%M UTC").to_string(),
        Err(_) => raw.to_owned(),
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
    if p.0.contains_key("total_amount") {
        details.push(("Total".into(), p.money("total_amount")));
    }
    details
}

fn letter(kind: &str, p: &Payload<'_>, frontend_url: &str) -> Letter {
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
            let what = if kind == "payment-failed" {
                format!(
                    "Your payment of {} could not be completed{}.",
                    p.money("amount"),
                    match p.str("failure_reason").as_str() {
                        "" => String::new(),
                        r => format!(" ({r})"),
                    }
                )
            } else {
                format!(
                    "Your payment of {} was not completed in time and has been closed.",
                    p.money("amount")
                )
            };
            l.paragraphs.push(what);
            l.paragraphs.push(format!(
                "Your booking for {} has been released; no money was taken for it.",
                p.event()
            ));
            l.details = vec![
                ("Payment".into(), format!("#{}", p.int("payment_id"))),
                ("Booking".into(), format!("#{}", p.int("booking_id"))),
                ("Amount".into(), p.money("amount")),
            ];
            l.action = Some(("Try again".into(), format!("{base}/bookings")));
        }
        "refund-approved" => {
            l.paragraphs.push(format!(
                "Your refund for {} has been approved: {} will be returned to your original \
                 payment method.",
                p.event(),
                p.money("refund_amount")
            ));
            l.details = booking_details(p);
            l.details.push(("Refund".into(), p.money("refund_amount")));
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
            if let Some(Value::Array(events)) = p.0.get("events") {
                for e in events {
                    if let Value::Object(e) = e {
                        let e = Payload(e);
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
            l.footer = Some(format!("Unsubscribe: {}", p.str("unsubscribe_url")));
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
            l.footer = Some(format!(
                "Stop promotional e-mails: {base}/account/preferences"
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
        }
        "re-engagement" => {
            l.paragraphs
                .push("We miss you! A lot has happened on TicketMax since your last visit.".into());
            l.paragraphs.push(format!(
                "Come back with the code {} for a discount on your next booking.",
                p.str("offer_code")
            ));
            l.action = Some(("See what's on".into(), format!("{base}/events")));
        }
        "organizer-analytics" => {
            l.paragraphs
                .push(format!("Your results for {}:", p.str("period")));
            l.details = vec![
                ("Events".into(), p.int("events").to_string()),
                ("Tickets sold".into(), p.int("tickets_sold").to_string()),
                ("Bookings".into(), p.int("bookings").to_string()),
            ];
            if let Some(Value::Object(revenue)) = p.0.get("revenue") {
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
            if let Some(Value::Array(warnings)) = p.0.get("warnings") {
                l.list = warnings
                    .iter()
                    .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_owned))
                    .collect();
            }
            let body = p.0.get("body").cloned().unwrap_or(Value::Null);
            if let Ok(pretty) = serde_json::to_string_pretty(&body)
                && body != Value::Null
            {
                l.footer = Some(pretty);
            }
        }
        _ => {
            l.paragraphs
                .push("You have a new message from TicketMax.".into());
            l.details =
                p.0.iter()
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

pub fn render(
    kind: &str,
    payload: &Value,
    frontend_url: &str,
) -> Result<Rendered, minijinja::Error> {
    let empty = Map::new();
    let map = payload.as_object().unwrap_or(&empty);
    let l = letter(kind, &Payload(map), frontend_url);
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

    #[test]
    fn escapes_user_text_and_formats_money() {
        let payload = serde_json::json!({
            "first_name": "<b>Ada</b>", "booking_id": 7, "event_title": "Rock & Roll",
            "quantity": 2, "total_amount": 123450, "currency": "NGN",
            "starts_at": "2026-12-01T19:00:00+00:00"
        });
        let r = render("booking-cancelled", &payload, "https://tm.example").unwrap();
        assert!(r.html.starts_with("<!DOCTYPE html>") && r.html.ends_with("</html>"));
        assert!(r.text.ends_with("— The TicketMax team\n"), "{:?}", r.text);
        assert!(r.html.contains("&lt;b&gt;Ada&lt;/b&gt;"));
        assert!(r.html.contains("Rock &amp; Roll"));
        assert!(!r.html.contains("<b>Ada"));
        assert!(r.text.contains("₦1,234.50"));
        assert!(r.text.contains("Tue 1 Dec 2026, 19:00 UTC"));
    }
}
