//! W3C trace context for Cairn.
//!
//! A client request becomes one trace: the SDK puts the current span's context into the
//! `traceparent` gRPC header, the gateway's and the node's servers continue the trace from it
//! (see `cairn-telemetry`'s gRPC layer), the gateway passes it on to the shard leader, and the
//! leader writes it into the Raft log entry so that the log append, the replication to each
//! follower and the apply on every replica show up under the same request.
//!
//! Only *sampled* contexts travel: when no OpenTelemetry layer is installed, or the request was
//! not sampled, [`TraceParent::current`] is `None`, nothing is added to requests and log entries
//! carry one byte for the empty option.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use serde::{Deserialize, Serialize};
use std::fmt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The gRPC metadata key (W3C Trace Context).
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The parent of a span in another process: a W3C `traceparent` in binary form.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// The context of the current `tracing` span, when it is part of a sampled trace.
    pub fn current() -> Option<TraceParent> {
        Self::of(&tracing::Span::current())
    }

    /// The context of `span`, when it is part of a sampled trace.
    pub fn of(span: &tracing::Span) -> Option<TraceParent> {
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        let span_ref = context.span();
        let span_context = span_ref.span_context();
        if !span_context.is_valid() || !span_context.is_sampled() {
            return None;
        }
        Some(TraceParent {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            flags: span_context.trace_flags().to_u8(),
        })
    }

    /// Parses a `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`). Unknown versions
    /// are read as version 00, as the W3C specification asks; malformed values are ignored
    /// (a bad header must not fail the request it came with).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let parent = TraceParent {
            trace_id: hex_array(trace_id)?,
            span_id: hex_array(span_id)?,
            flags: hex_array::<1>(flags)?[0],
        };
        let valid = parent.trace_id != [0; 16] && parent.span_id != [0; 8];
        valid.then_some(parent)
    }

    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }

    /// Makes `span` (which must not have been entered yet) a child of this remote parent.
    /// Without an OpenTelemetry layer this does nothing.
    pub fn adopt(&self, span: &tracing::Span) {
        let context = opentelemetry::Context::new().with_remote_span_context(self.span_context());
        // Errors mean "no OpenTelemetry layer" or "span disabled": nothing to attach to.
        let _ = span.set_parent(context);
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-")?;
        for byte in self.trace_id {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "-")?;
        for byte in self.span_id {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Adds the current span's context to outgoing gRPC metadata, when it is sampled.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if let Some(parent) = TraceParent::current() {
        if let Ok(value) = parent.to_string().parse() {
            metadata.insert(TRACEPARENT_HEADER, value);
        }
    }
}

/// The remote parent an incoming request names, if any.
pub fn extract(headers: &http::HeaderMap) -> Option<TraceParent> {
    headers
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)
}

/// A tonic client interceptor that sends the caller's trace context with every request.
/// Interceptors run when the call is made, inside the caller's span.
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectTraceContext;

impl tonic::service::Interceptor for InjectTraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn header_round_trips_and_bad_headers_are_ignored() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(header).expect("valid traceparent");
        assert!(parent.is_sampled());
        assert_eq!(parent.to_string(), header);
        assert_eq!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .map(|p| p.is_sampled()),
            Some(false)
        );
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-é bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_sent() {
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
        let span = tracing::info_span!("request");
        let _entered = span.enter();
        assert_eq!(TraceParent::current(), None);
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.get(TRACEPARENT_HEADER).is_none());
    }

    #[test]
    fn a_child_in_another_process_joins_the_parents_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let caller = tracing::info_span!("caller");
        let sent = {
            let _entered = caller.enter();
            let mut metadata = tonic::metadata::MetadataMap::new();
            inject(&mut metadata);
            metadata.into_headers()
        };
        let parent = extract(&sent).expect("the caller's context was sent");
        assert_eq!(Some(parent), TraceParent::of(&caller));

        // "The other process": a new span adopting the parent shares its trace id.
        let callee = tracing::info_span!("callee");
        parent.adopt(&callee);
        let child = TraceParent::of(&callee).expect("sampled child");
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
    }
}
