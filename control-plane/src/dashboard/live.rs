//! A run's events as Server-Sent Events, from the same `WatchRun` the gRPC API serves: every
//! event carries its sequence number as the SSE id, so a browser that lost the connection
//! reconnects with `Last-Event-ID` and gets exactly what follows (no gap, no duplicate). A
//! finished run replays the same way. When the run has ended, an `end` event tells the page
//! to stop reconnecting.
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use ticketmax_proto::{from_timestamp, v1};

use super::html::state_name;

/// Where a (re)connecting stream resumes: after `Last-Event-ID`, else after `?after=`, else
/// from the first event.
pub fn resume_after(last_event_id: Option<&str>, after: Option<u64>) -> u64 {
    last_event_id
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(after)
        .unwrap_or(0)
}

/// One event as the page reads it.
pub fn event_json(e: &v1::RunEvent) -> (&'static str, Value) {
    let time = e
        .time
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    match &e.kind {
        Some(v1::run_event::Kind::State(s)) => (
            "state",
            json!({"seq": e.seq, "time": time, "state": state_name(s.state), "message": s.message, "attempt": s.attempt}),
        ),
        Some(v1::run_event::Kind::Progress(p)) => (
            "progress",
            json!({"seq": e.seq, "time": time, "done": p.done, "total": p.total, "message": p.message}),
        ),
        Some(v1::run_event::Kind::Log(l)) => (
            "log",
            json!({"seq": e.seq, "time": time, "level": l.level, "message": l.message}),
        ),
        None => ("unknown", json!({"seq": e.seq, "time": time})),
    }
}

/// The SSE response for the events of `watch` (a `WatchRun` stream), then `end`.
pub fn sse<S>(watch: S) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    S: Stream<Item = Result<v1::RunEvent, tonic::Status>> + Send + 'static,
{
    let events = watch
        .map(|item| {
            Ok(match item {
                Ok(e) => {
                    let (kind, data) = event_json(&e);
                    Event::default()
                        .id(e.seq.to_string())
                        .event(kind)
                        .data(data.to_string())
                }
                // The stream ends after this; the page shows it and reconnects.
                Err(status) => Event::default()
                    .event("error")
                    .data(json!({"message": status.message()}).to_string()),
            })
        })
        .chain(futures::stream::once(async {
            Ok(Event::default().event("end").data("{}"))
        }));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_resumes_after_the_last_event_it_saw() {
        assert_eq!(resume_after(Some("17"), Some(3)), 17);
        assert_eq!(resume_after(None, Some(3)), 3);
        assert_eq!(resume_after(Some("garbage"), None), 0);
        assert_eq!(resume_after(None, None), 0);
    }

    #[test]
    fn events_carry_their_kind_and_sequence() {
        let e = v1::RunEvent {
            run_id: "r".into(),
            seq: 4,
            time: None,
            kind: Some(v1::run_event::Kind::Progress(v1::Progress {
                done: 3,
                total: 10,
                message: "chunk".into(),
            })),
        };
        let (kind, data) = event_json(&e);
        assert_eq!(kind, "progress");
        assert_eq!(data["seq"], 4);
        assert_eq!(data["done"], 3);
        assert_eq!(data["total"], 10);
    }
}
