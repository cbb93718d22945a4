//! In-process metrics of one replica: schedule lateness, run duration, ticks recorded and
//! skipped, dispatch outcomes. Rendered on `/metrics` next to the database-derived counts, and
//! recorded through the OpenTelemetry meter (exported over OTLP when configured): lateness,
//! duration by job and outcome (its count is the runs by job and outcome), ticks by outcome,
//! and, from the leader only so replicas do not add up, the queued and running runs.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram as OtelHistogram, ObservableGauge},
};

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
    otel_ticks: Counter<u64>,
    /// Queued and running runs as the leader last counted them; -1 when this replica is not
    /// the leader (its gauges then report nothing).
    queued: Arc<AtomicI64>,
    running: Arc<AtomicI64>,
    _gauges: [ObservableGauge<i64>; 2],
}

/// A gauge that reports `value` while it is not negative.
fn leader_gauge(
    meter: &opentelemetry::metrics::Meter,
    name: &'static str,
    description: &'static str,
    value: &Arc<AtomicI64>,
) -> ObservableGauge<i64> {
    let value = value.clone();
    meter
        .i64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |observer| {
            let v = value.load(Ordering::Relaxed);
            if v >= 0 {
                observer.observe(v, &[]);
            }
        })
        .build()
}

impl Default for Metrics {
    fn default() -> Self {
        let meter = global::meter("ticketmax-control-plane");
        let queued = Arc::new(AtomicI64::new(-1));
        let running = Arc::new(AtomicI64::new(-1));
        Self {
            otel_ticks: meter
                .u64_counter("ticketmax.ticks")
                .with_description(
                    "Schedule ticks recorded by this replica, by job and outcome (run or skipped)",
                )
                .build(),
            _gauges: [
                leader_gauge(
                    &meter,
                    "ticketmax.runs.queued",
                    "Runs waiting for an executor (reported by the leader)",
                    &queued,
                ),
                leader_gauge(
                    &meter,
                    "ticketmax.runs.running",
                    "Runs on an executor now (reported by the leader)",
                    &running,
                ),
            ],
            queued,
            running,
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

/// The HELP and TYPE lines of a Prometheus metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// The leader's latest count of queued and running runs; `None` when not the leader.
    pub fn set_run_gauges(&self, counts: Option<(u64, u64)>) {
        let (queued, running) = counts.map_or((-1, -1), |(q, r)| {
            (
                i64::try_from(q).unwrap_or(i64::MAX),
                i64::try_from(r).unwrap_or(i64::MAX),
            )
        });
        self.queued.store(queued, Ordering::Relaxed);
        self.running.store(running, Ordering::Relaxed);
    }

    /// The queued and running counts the gauges report; `None` when not the leader.
    pub fn run_gauges(&self) -> Option<(i64, i64)> {
        let (q, r) = (
            self.queued.load(Ordering::Relaxed),
            self.running.load(Ordering::Relaxed),
        );
        (q >= 0 && r >= 0).then_some((q, r))
    }

    pub fn tick(&self, job: &str, lateness_secs: f64, skipped: bool) {
        self.otel_ticks.add(
            1,
            &[
                KeyValue::new("job", job.to_string()),
                KeyValue::new("outcome", if skipped { "skipped" } else { "run" }),
            ],
        );
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
        family(
            out,
            "ticketmax_schedule_lateness_seconds",
            "histogram",
            "Fire time minus scheduled time of ticks this replica recorded.",
        );
        lock(&self.lateness).render(out, "ticketmax_schedule_lateness_seconds", "");
        for (name, help, n) in [
            (
                "ticketmax_ticks_recorded_total",
                "Ticks this replica recorded as runs.",
                &self.ticks_recorded,
            ),
            (
                "ticketmax_ticks_skipped_total",
                "Ticks this replica recorded as skipped (overlap or missed).",
                &self.ticks_skipped,
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", n.load(Ordering::Relaxed));
        }
        family(
            out,
            "ticketmax_run_duration_seconds",
            "histogram",
            "Duration of runs this replica dispatched, by job and outcome.",
        );
        for ((job, outcome), h) in lock(&self.durations).iter() {
            let labels = format!(
                "job=\"{}\",outcome=\"{}\"",
                escape_label(job),
                escape_label(outcome)
            );
            h.render(out, "ticketmax_run_duration_seconds", &labels);
        }
    }
}
