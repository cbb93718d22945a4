//! The follow view of `trigger --wait` and `watch`: reads a run's events until the run ends
//! (resuming after the last event seen when the stream drops), shows them as a progress bar on
//! stderr and log lines on stdout (or as JSON lines, or not at all), and turns a deadline or
//! Ctrl-C into a [`Failure`] that says how to pick the run up again.

use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use ticketmax_client::proto::{Run, RunEvent, run_event::Kind};
use ticketmax_client::{Client, Error, from_timestamp, json};

use crate::exit::Failure;
use crate::render::{one_line, out, short_state};

#[derive(Copy, Clone, PartialEq, Eq)]
pub enum FollowOutput {
    /// Progress bar on stderr (text lines when stderr is not a terminal), log on stdout.
    Human,
    /// One JSON object per event on stdout.
    JsonLines,
    /// Nothing per event.
    Quiet,
}

/// Follows the run's events from `after_seq` until the run ends; survives dropped streams.
pub async fn follow(
    client: &Client,
    run_id: &str,
    after_seq: u64,
    mode: FollowOutput,
    timeout: Option<Duration>,
) -> Result<Run, Failure> {
    let bar = if mode == FollowOutput::Human && std::io::stderr().is_terminal() {
        // A spinner until the first progress event tells how much there is to do.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(spinner_style());
        bar.set_message("waiting for the run to start");
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let print = |line: String| match &bar {
        Some(b) => b.suspend(|| out(&line)),
        None => out(&line),
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut after = after_seq;
    // Ctrl-C stops following, not the run: say how to pick it up again.
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let result = 'follow: loop {
        let mut events = client.watch(run_id, after);
        let mut stream_error = None;
        loop {
            let next_event = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, events.next()).await.ok(),
                    None => Some(events.next().await),
                }
            };
            let next = tokio::select! {
                next = next_event => match next {
                    Some(n) => n,
                    None => break, // deadline
                },
                _ = &mut interrupt => break 'follow Err(Failure::Interrupted {
                    run_id: run_id.to_string(),
                    after,
                }),
            };
            match next {
                None => break,
                Some(Ok(event)) => {
                    after = after.max(event.seq);
                    match mode {
                        FollowOutput::JsonLines => out(json::event(&event).to_string()),
                        FollowOutput::Quiet => {}
                        FollowOutput::Human => show_event(&event, bar.as_ref(), &print),
                    }
                }
                Some(Err(e)) => {
                    stream_error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = stream_error.filter(|e| !e.is_unavailable()) {
            break Err(Failure::Client(e));
        }
        match client.run(run_id).await {
            Ok(run) if run.state().is_terminal() => break Ok(run),
            Ok(_) => {}
            Err(e) if e.is_unavailable() => {}
            Err(e) => break Err(Failure::Client(e)),
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let last_state = match client.run(run_id).await {
                Ok(run) => run.state().as_str_name().to_string(),
                Err(e) => format!("unknown: {e}"),
            };
            break Err(Failure::Client(Error::Timeout {
                run_id: run_id.into(),
                timeout: timeout.unwrap_or_default(),
                last_state,
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:32.cyan/blue} {pos}/{len} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn show_event(event: &RunEvent, bar: Option<&ProgressBar>, print: &dyn Fn(String)) {
    let at = event
        .time
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into());
    match &event.kind {
        Some(Kind::State(s)) => {
            let mut line = format!("{at} state {}", short_state(s.state()));
            if s.attempt > 1 {
                line.push_str(&format!(" (attempt {})", s.attempt));
            }
            if !s.message.is_empty() {
                line.push_str(&format!(": {}", one_line(&s.message)));
            }
            print(line);
            if let Some(bar) = bar.filter(|b| b.length().is_none()) {
                bar.set_message(short_state(s.state()).to_lowercase());
            }
        }
        Some(Kind::Progress(p)) => match bar {
            Some(bar) => {
                if p.total > 0 && bar.length().is_none() {
                    bar.set_style(bar_style());
                }
                if p.total > 0 {
                    bar.set_length(p.total.max(p.done));
                }
                bar.set_position(p.done);
                bar.set_message(one_line(&p.message));
            }
            None => {
                let mut line = format!("{at} progress {}/{}", p.done, p.total);
                if !p.message.is_empty() {
                    line.push_str(&format!(" {}", one_line(&p.message)));
                }
                print(line);
            }
        },
        Some(Kind::Log(l)) => print(format!(
            "{at} {:<5} {}",
            l.level.to_uppercase(),
            one_line(&l.message)
        )),
        None => {}
    }
}
