//! Distributed tracing: one trace per order, across every service, exported to Zipkin.
//!
//! Each service has its own [`Tracer`], with its own OpenTelemetry provider named after the
//! service, instead of one per process: services that share a process (the end-to-end tests)
//! still show up in Zipkin as themselves.
//!
//! Spans are made where work crosses a boundary, all in the shared plumbing:
//! - every HTTP request a service serves ([`crate::server::standard`]), a child of the caller's
//!   `traceparent` (W3C) or B3 headers;
//! - every event the outbox relay publishes, a child of the span that wrote it;
//! - every delivery a consumer handles, a child of the publishing span.
//!
//! The context travels as a W3C `traceparent`: in HTTP headers, in the outbox row, and in the
//! event's headers. Each span hands its own `traceparent` on (a request's replaces the incoming
//! header before the handler sees it; a delivery's replaces the event's before the handler
//! derives events from it), so the parent chain follows the saga hop by hop.
//!
//! With no Zipkin endpoint configured, spans still get ids, so logs carry trace ids and the
//! context still propagates; nothing is exported.

use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, LazyLock},
    time::Duration,
};

use axum::http;

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator},
    trace::{Span as _, SpanContext, SpanKind, Status, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    export::trace::{SpanData, SpanExporter},
    propagation::TraceContextPropagator,
    trace::{SpanProcessor, TracerProvider},
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, event::header::TRACEPARENT};

/// Where spans go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// Zipkin's span intake (`http://zipkin:9411/api/v2/spans`); unset, nothing is exported.
    pub zipkin_endpoint: Option<String>,
    /// How long finished spans wait to be sent in one batch.
    #[serde(with = "humantime_serde")]
    pub export_delay: Duration,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            zipkin_endpoint: None,
            export_delay: Duration::from_secs(2),
        }
    }
}

/// Hands finished spans to a task that sends them in batches. The SDK's own batch processor
/// blocks the thread that flushes or shuts it down until its task answers, which on a runtime
/// thread can wait forever; this one never blocks: a span that finds the queue full is dropped,
/// and when the last tracer goes the task sends what is left and ends.
#[derive(Debug)]
struct Exporting {
    queue: tokio::sync::mpsc::Sender<SpanData>,
}

/// Finished spans waiting to be sent, at most; beyond, they are dropped.
const EXPORT_QUEUE: usize = 4096;

/// Spans sent in one request, at most.
const EXPORT_BATCH: usize = 512;

impl Exporting {
    fn start(mut exporter: impl SpanExporter + 'static, delay: Duration) -> Self {
        let (queue, mut finished) = tokio::sync::mpsc::channel(EXPORT_QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(EXPORT_BATCH);
            loop {
                let open = finished.recv_many(&mut batch, EXPORT_BATCH).await > 0;
                if !batch.is_empty()
                    && let Err(e) = exporter.export(std::mem::take(&mut batch)).await
                {
                    tracing::debug!(error = %e, "exporting spans failed");
                }
                if !open {
                    return;
                }
                tokio::time::sleep(delay).await;
            }
        });
        Self { queue }
    }
}

impl SpanProcessor for Exporting {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        let _ = self.queue.try_send(span);
    }

    fn force_flush(&self) -> opentelemetry::trace::TraceResult<()> {
        Ok(())
    }

    fn shutdown(&self) -> opentelemetry::trace::TraceResult<()> {
        Ok(())
    }
}

/// A service's tracer. Cheap to clone.
#[derive(Clone)]
pub struct Tracer(Arc<Inner>);

struct Inner {
    service: Cow<'static, str>,
    /// Holds its provider, and with it the exporting task's queue, for as long as it lives.
    tracer: opentelemetry_sdk::trace::Tracer,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("service", &self.0.service)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// The tracer of `service`, exporting to the configured Zipkin endpoint if there is one.
    /// Must be called inside the Tokio runtime, which runs the exporter.
    pub fn new(service: impl Into<Cow<'static, str>>, config: &TraceConfig) -> Result<Self> {
        let service = service.into();
        let resource = Resource::new([KeyValue::new("service.name", service.clone())]);
        let mut provider = TracerProvider::builder().with_resource(resource);
        if let Some(endpoint) = &config.zipkin_endpoint {
            let exporter = opentelemetry_zipkin::new_pipeline()
                .with_service_name(service.clone())
                .with_collector_endpoint(endpoint)
                .init_exporter()
                .map_err(|e| Error::Config(format!("trace.zipkin_endpoint: {e}")))?;
            provider =
                provider.with_span_processor(Exporting::start(exporter, config.export_delay));
        }
        let provider = provider.build();
        let tracer = provider.tracer(service.clone());
        Ok(Self(Arc::new(Inner { service, tracer })))
    }

    /// A tracer that exports nothing: for tools and tests that do not look at traces.
    pub fn silent(service: impl Into<Cow<'static, str>>) -> Self {
        Self::new(service, &TraceConfig::default()).expect("no exporter to configure")
    }

    /// The service the spans belong to.
    pub fn service(&self) -> &str {
        &self.0.service
    }

    /// Starts a span whose parent is described by `headers` (`traceparent`, or B3); a new trace
    /// if they describe none.
    pub fn start_from_headers(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        headers: &http::HeaderMap,
    ) -> Span {
        let parent = PROPAGATOR.extract(&HeaderExtractor(headers));
        self.start_in(name, kind, &parent)
    }

    /// Starts a span whose parent is `traceparent`; a new trace if there is none or it is
    /// malformed.
    pub fn start(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        traceparent: Option<&str>,
    ) -> Span {
        let parent = match traceparent {
            Some(tp) => TraceContextPropagator::new().extract(&Traceparent(tp)),
            None => Context::new(),
        };
        self.start_in(name, kind, &parent)
    }

    fn start_in(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
    ) -> Span {
        let tracer = &self.0.tracer;
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, parent);
        let context = span.span_context().clone();
        Span { span, context }
    }
}

/// W3C trace context first, then B3: the first that finds a parent wins, and W3C is tried last
/// so that it wins when a caller sends both. Made once: every request a service serves asks it.
static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(opentelemetry_zipkin::Propagator::new()),
        Box::new(TraceContextPropagator::new()),
    ])
});

/// A lone `traceparent`, as an outbox row or an event carries it.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A span in progress; it ends when dropped.
#[derive(Debug)]
pub struct Span {
    span: opentelemetry_sdk::trace::Span,
    context: SpanContext,
}

impl Span {
    /// This span as a W3C `traceparent`, for what it causes to carry.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.context.trace_id(),
            self.context.span_id(),
            self.context.trace_flags().to_u8()
        )
    }

    /// The trace id, in the hex log lines and Zipkin show.
    pub fn trace_id(&self) -> String {
        self.context.trace_id().to_string()
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.span.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed, with why.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        self.span.set_status(Status::error(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_span_continues_the_trace_it_is_given_and_names_itself_as_the_next_parent() {
        let tracer = Tracer::silent("test");
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracer.start("child", SpanKind::Consumer, Some(incoming));
        assert_eq!(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let own = span.traceparent();
        assert!(crate::event::is_traceparent(&own), "{own}");
        assert!(own.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(own, incoming, "the span has an id of its own");
        assert!(own.ends_with("-01"), "sampled as its parent");
    }

    #[tokio::test]
    async fn b3_headers_are_accepted_and_traceparent_wins_over_them() {
        let tracer = Tracer::silent("test");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-b3-traceid",
            "463ac35c9f6413ad48485a3953bb6124".parse().expect("header"),
        );
        headers.insert("x-b3-spanid", "a2fb4a1d1a96d312".parse().expect("header"));
        headers.insert("x-b3-sampled", "1".parse().expect("header"));
        let span = tracer.start_from_headers("b3", SpanKind::Server, &headers);
        assert_eq!(span.trace_id(), "463ac35c9f6413ad48485a3953bb6124");

        headers.insert(
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .expect("header"),
        );
        let span = tracer.start_from_headers("both", SpanKind::Server, &headers);
        assert_eq!(span.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    }

    #[tokio::test]
    async fn without_a_parent_a_span_starts_a_trace() {
        let tracer = Tracer::silent("test");
        let a = tracer.start("a", SpanKind::Server, None);
        let b = tracer.start("b", SpanKind::Server, Some("garbage"));
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.trace_id(), "00000000000000000000000000000000");
    }
}
