//! Tracing over the wire: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a small OTLP/gRPC
//! trace receiver started here, one command's spans (HTTP request, command, aggregate load,
//! event commit) arrive as one trace, child of the caller's `traceparent`, and the
//! `traceparent` stored in event metadata is the request span's own. JSON logs of the
//! command carry its trace id and correlation id.
//!
//! The tracing subscriber is global to a process, so this file is its own test binary with a
//! single test that initialises telemetry once.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use support::{email, TestApp};
use tokio::sync::mpsc;

/// Forwards every export request to the test.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Appends log output to a shared buffer the test reads back.
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spans_of(request: &ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let service = rs.resource.as_ref().and_then(|r| {
            r.attributes.iter().find_map(|kv| {
                (kv.key == "service.name").then(|| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })?
            })
        });
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(ExportedSpan {
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_exports_one_trace_over_otlp_grpc_and_logs_carry_its_ids() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let logs: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = logs.clone();
    let t = TestApp::spawn_with(|s| {
        s.otlp_endpoint = Some(format!("http://{addr}"));
        s.log_format = service_kit::config::LogFormat::Json;
        service_kit::telemetry::init_with_writer(command_service::SERVICE, s, move || {
            LogSink(sink.clone())
        });
    })
    .await;

    let parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let response = t
        .post("/v1/messages")
        .header("traceparent", format!("00-{parent_trace}-{parent_span}-01"))
        .header("x-request-id", "otlp-req-1")
        // With a key the stream is loaded (a keyless submit has no stream to load).
        .header("idempotency-key", "otlp-order-1")
        .json(&email())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    service_kit::telemetry::flush().await;

    // Collect exported spans of the caller's trace until the commit span arrived.
    let mut spans: Vec<ExportedSpan> = Vec::new();
    let started = Instant::now();
    while !spans
        .iter()
        .any(|s| s.name == "event_store.commit" && s.trace_id == parent_trace)
    {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(request)) => spans.extend(spans_of(&request)),
            _ => panic!("no commit span exported within 15 s; got {spans:#?}"),
        }
    }
    let trace: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == parent_trace)
        .collect();
    let by_name: HashMap<&str, &ExportedSpan> =
        trace.iter().map(|s| (s.name.as_str(), *s)).collect();
    let request = by_name
        .get("POST /v1/messages")
        .unwrap_or_else(|| panic!("request span exported: {trace:#?}"));
    assert_eq!(
        request.parent_span_id, parent_span,
        "the request span continues the caller's"
    );
    assert_eq!(request.service.as_deref(), Some(command_service::SERVICE));
    let command = by_name.get("command.submit").expect("command span");
    assert_eq!(command.parent_span_id, request.span_id);
    for child in ["aggregate.load", "event_store.commit"] {
        let span = by_name
            .get(child)
            .unwrap_or_else(|| panic!("{child} exported: {trace:#?}"));
        assert_eq!(span.parent_span_id, command.span_id, "{child}");
    }

    // The traceparent in event metadata names the real request span.
    let stream = t.stream(&id).await;
    let stored = stream[0].3["traceparent"].as_str().unwrap().to_string();
    assert_eq!(
        stored,
        format!("00-{parent_trace}-{}-01", request.span_id),
        "stored traceparent is the request span's"
    );

    // JSON logs: the command's line carries its trace id and correlation id.
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let line: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "command executed")
        .unwrap_or_else(|| panic!("no 'command executed' line in:\n{text}"));
    let request_fields: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(line["spans"][0].clone()).unwrap();
    assert_eq!(request_fields["name"], "request", "{line}");
    assert_eq!(request_fields["trace_id"], parent_trace, "{line}");
    assert_eq!(request_fields["correlation_id"], "otlp-req-1", "{line}");
    assert_eq!(line["level"], "INFO");

    t.app.stop().await;
    service_kit::telemetry::shutdown().await;
    server.abort();
}
