//! In-process metrics of one replica: schedule lateness, run duration, ticks recorded and
//! skipped, dispatch outcomes. Rendered on `/metrics` next to the database-derived counts, and
//! recorded through the OpenTelemetry meter (exported over OTLP when configured).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry::{KeyValue, global, metrics::Histogram as OtelHistogram};

const SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; SECONDS_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, le) in SECONDS_BUCKETS.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in SECONDS_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                self.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

pub struct Metrics {
    lateness: Mutex<Histogram>,
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
    ticks_recorded: AtomicU64,
    ticks_skipped: AtomicU64,
    otel_lateness: OtelHistogram<f64>,
    otel_duration: OtelHistogram<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let meter = global::meter("ticketmax-control-plane");
        Self {
            lateness: Mutex::default(),
            durations: Mutex::default(),
            ticks_recorded: AtomicU64::new(0),
            ticks_skipped: AtomicU64::new(0),
            otel_lateness: meter
                .f64_histogram("ticketmax.schedule.lateness")
                .with_unit("s")
                .with_description("Fire time minus scheduled time of recorded ticks")
                .build(),
            otel_duration: meter
                .f64_histogram("ticketmax.run.duration")
                .with_unit("s")
                .with_description("Run duration by job and outcome")
                .build(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    pub fn tick(&self, lateness_secs: f64, skipped: bool) {
        if skipped {
            self.ticks_skipped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ticks_recorded.fetch_add(1, Ordering::Relaxed);
            lock(&self.lateness).observe(lateness_secs.max(0.0));
            self.otel_lateness.record(lateness_secs.max(0.0), &[]);
        }
    }

    pub fn run_finished(&self, job: &str, outcome: &str, secs: f64) {
        lock(&self.durations)
            .entry((job.to_string(), outcome.to_string()))
            .or_default()
            .observe(secs);
        self.otel_duration.record(
            secs,
            &[
                KeyValue::new("job", job.to_string()),
                KeyValue::new("outcome", outcome.to_string()),
            ],
        );
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ticketmax_schedule_lateness_seconds Fire time minus scheduled time of ticks this replica recorded."
        );
        let _ = writeln!(out, "# TYPE ticketmax_schedule_lateness_seconds histogram");
        lock(&self.lateness).render(out, "ticketmax_schedule_lateness_seconds", "");
        let _ = writeln!(
            out,
            "# HELP ticketmax_ticks_recorded_total Ticks this replica recorded as runs."
        );
        let _ = writeln!(out, "# TYPE ticketmax_ticks_recorded_total counter");
        let _ = writeln!(
            out,
            "ticketmax_ticks_recorded_total {}",
            self.ticks_recorded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ticketmax_ticks_skipped_total Ticks this replica recorded as skipped (overlap or missed)."
        );
        let _ = writeln!(out, "# TYPE ticketmax_ticks_skipped_total counter");
        let _ = writeln!(
            out,
            "ticketmax_ticks_skipped_total {}",
            self.ticks_skipped.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ticketmax_run_duration_seconds Duration of runs this replica dispatched, by job and outcome."
        );
        let _ = writeln!(out, "# TYPE ticketmax_run_duration_seconds histogram");
        for ((job, outcome), h) in lock(&self.durations).iter() {
            let labels = format!(
                "job=\"{}\",outcome=\"{}\"",
                crate::http::escape_label(job),
                crate::http::escape_label(outcome)
            );
            h.render(out, "ticketmax_run_duration_seconds", &labels);
        }
    }
}
