//! Logging and OpenTelemetry set-up shared by both processes, and W3C trace context carried in
//! gRPC metadata (`traceparent`), which is how one run becomes one trace across the control
//! plane and the executor.
//!
//! Every log line is written through the process's [`Secrets`] (no configured secret reaches
//! stderr at any level), and the human-readable format escapes control characters in every
//! field, so user data with line breaks cannot forge a log line (the JSON format quotes them).
use std::collections::HashMap;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::redact::Secrets;

/// Keeps the exporters alive; `shutdown` flushes what is buffered.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    pub fn shutdown(&self) {
        if let Some(t) = &self.tracer {
            let _ = t.force_flush();
            let _ = t.shutdown();
        }
        if let Some(m) = &self.meter {
            let _ = m.force_flush();
            let _ = m.shutdown();
        }
    }

    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }
}

/// Logs to stderr (JSON with `LOG_FORMAT=json`), filtered by `RUST_LOG` (else `default_filter`),
/// with `secrets` redacted; with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans and metrics are
/// exported over OTLP/gRPC with `service.name` = `service`.
pub fn init(service: &'static str, default_filter: &str, secrets: Secrets) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let writer = RedactingStderr {
        secrets: std::sync::Arc::new(secrets),
    };
    let fmt_layer = if json {
        fmt::layer()
            .json()
            .with_writer(writer)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        use std::io::IsTerminal;
        fmt::layer()
            .fmt_fields(EscapedFields)
            .with_writer(writer)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed()
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let resource = Resource::builder().with_service_name(service).build();
    let (tracer, meter, otel_layer, error) = match endpoint {
        None => (None, None, None, None),
        Some(endpoint) => {
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build();
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build();
            match (spans, metrics) {
                (Ok(spans), Ok(metrics)) => {
                    let tracer = SdkTracerProvider::builder()
                        .with_batch_exporter(spans)
                        .with_resource(resource.clone())
                        .build();
                    let meter = SdkMeterProvider::builder()
                        .with_periodic_exporter(metrics)
                        .with_resource(resource)
                        .build();
                    opentelemetry::global::set_meter_provider(meter.clone());
                    let layer = tracing_opentelemetry::layer().with_tracer(tracer.tracer(service));
                    (Some(tracer), Some(meter), Some(layer), None)
                }
                (Err(e), _) | (_, Err(e)) => (None, None, None, Some(format!("{endpoint}: {e}"))),
            }
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .init();
    if let Some(e) = error {
        tracing::error!(error = %e, "OpenTelemetry export disabled: cannot build the OTLP exporter");
    }
    Telemetry { tracer, meter }
}

/// stderr, with every secret of the process replaced in each line.
#[derive(Clone)]
struct RedactingStderr {
    secrets: std::sync::Arc<Secrets>,
}

impl<'a> fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingLine;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine {
            secrets: self.secrets.clone(),
        }
    }
}

struct RedactingLine {
    secrets: std::sync::Arc<Secrets>,
}

impl std::io::Write for RedactingLine {
    /// The formatter hands over whole lines; each is redacted, then written at once.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.secrets.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Control characters in a field value, escaped (`\n`, `\r`, `\t`, `\u{1b}`), so one event
/// is one line whatever the data says.
pub fn escape_control(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The human format's fields (`message`, then `name=value`), with control characters escaped.
struct EscapedFields;

impl<'w> fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = EscapingVisitor {
            writer: &mut writer,
            result: Ok(()),
            empty: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'w> {
    writer: &'a mut fmt::format::Writer<'w>,
    result: std::fmt::Result,
    empty: bool,
}

impl EscapingVisitor<'_, '_> {
    fn put(&mut self, field: &tracing::field::Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.empty { "" } else { " " };
        self.empty = false;
        let value = escape_control(value);
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value}")
        } else {
            write!(self.writer, "{sep}{}={value}", field.name())
        };
    }
}

impl tracing::field::Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.put(field, value);
        } else {
            self.put(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|kv| match kv {
                KeyAndValueRef::Ascii(k, _) => Some(k.as_str()),
                KeyAndValueRef::Binary(..) => None,
            })
            .collect()
    }
}

/// Puts the trace context of `span` into outgoing gRPC metadata.
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut MetadataInjector(metadata));
}

/// Makes `span` a child of the trace context found in incoming gRPC metadata, if any.
pub fn adopt(span: &tracing::Span, metadata: &MetadataMap) {
    let cx = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    if has_remote_span(&cx) {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` of `span`, to store with a run so its dispatch continues the trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of a stored `traceparent`.
pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) {
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if has_remote_span(&cx) {
        let _ = span.set_parent(cx);
    }
}

fn has_remote_span(cx: &Context) -> bool {
    use opentelemetry::trace::TraceContextExt;
    cx.span().span_context().is_valid()
}

/// The trace id of `span` in hex, for log lines; empty when tracing is off.
pub fn trace_id(span: &tracing::Span) -> String {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(escape_control("plain text"), "plain text");
        assert_eq!(
            escape_control("evil@example.test\n2026-12-01 INFO forged line\r\x1b[31m"),
            "evil@example.test\\n2026-12-01 INFO forged line\\r\\u{1b}[31m"
        );
    }
}
