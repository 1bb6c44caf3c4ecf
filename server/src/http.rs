//! The HTTP side (DESIGN §7), one port, axum: the seed's ML-signals service
//! built in (`POST /ml_signals`, `GET /ml_signals`), `GET /healthz` and
//! `GET /metrics`.
//!
//! `POST /ml_signals` takes one JSON signal or an array of them. Every signal is
//! checked (required `fraud_signal_id` and `transaction_id`, `fraud_score` a
//! number in [0, 1], optional `model_version`, optional ISO-8601
//! `inference_time` that defaults to the time of receipt, no other fields); one
//! bad signal refuses the whole request with 400 and the reason, naming the
//! signal by its position. Accepted signals are written as one Parquet file
//! into `batch_parquet_data/ml_fraud_signals.parquet/` before 201 is returned.
//! When authentication is on, the ML-signal routes take the same Basic
//! credentials (or a Flight Bearer token) as Flight SQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::appends;
use crate::flight::auth::Authenticator;
use crate::flight::queries::QueryEngine;
use crate::ingest::status::IngestStatus;
use crate::snapshots::Materializer;
use crate::tables::batch_schema;
use crate::warehouse::Warehouse;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 << 20;

const SIGNALS_TABLE: &str = "ml_fraud_signals";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Runs `GET /ml_signals` and counts queries for `/metrics`.
    pub engine: QueryEngine,
    /// Where signals are written.
    pub warehouse: Warehouse,
    /// Credentials, when authentication is on.
    pub auth: Arc<Authenticator>,
    /// Ingest figures, when Kafka ingest runs.
    pub ingest: Option<IngestStatus>,
    /// Snapshot refresh figures.
    pub materializer: Arc<Materializer>,
    /// ML signals accepted since start (HTTP and bulk ingest).
    pub signals_accepted: Arc<AtomicU64>,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/ml_signals", get(get_signals).post(post_signals))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Binds `addr` and serves the routes until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(http_addr = %bound, "HTTP listening");
    let task = tokio::spawn(
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    Ok((bound, task))
}

/// A JSON error body `{"error": "..."}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

fn authorize(state: &HttpState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.auth.check(header).map_err(|status| {
        let mut response = error(StatusCode::UNAUTHORIZED, status.message());
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"recon\""),
        );
        Box::new(response)
    })
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let text = crate::metrics::render(&crate::metrics::Sources {
        queries: state.engine.stats(),
        ingest: state.ingest.as_ref(),
        materializer: &state.materializer,
        signals_accepted: state.signals_accepted.load(Ordering::Relaxed),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// One signal as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalIn {
    fraud_signal_id: String,
    transaction_id: String,
    fraud_score: f64,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    inference_time: Option<String>,
}

async fn post_signals(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = authorize(&state, &headers) {
        return *denied;
    }
    let batch = match decode_signals(&body, chrono::Utc::now()) {
        Ok(batch) => batch,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    match appends::append(&state.warehouse, SIGNALS_TABLE, &batch).await {
        Ok(count) => {
            state
                .signals_accepted
                .fetch_add(count as u64, Ordering::Relaxed);
            info!(count, "ML signals stored");
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "count": count })),
            )
                .into_response()
        }
        Err(e) => {
            warn!(error = %e, "cannot store ML signals");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// Parses and checks a POST body into a batch in the table's contract schema.
pub fn decode_signals(
    body: &[u8],
    received: chrono::DateTime<chrono::Utc>,
) -> Result<RecordBatch, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match value {
        serde_json::Value::Array(items) if items.is_empty() => {
            return Err("empty array: send at least one signal".into());
        }
        serde_json::Value::Array(items) => items,
        object @ serde_json::Value::Object(_) => vec![object],
        _ => return Err("expected a JSON object or an array of objects".into()),
    };
    let single = items.len() == 1;
    let default_time = received.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let mut signals = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |reason: String| {
            if single {
                reason
            } else {
                format!("signal {i}: {reason}")
            }
        };
        let signal: SignalIn = serde_json::from_value(item).map_err(|e| at(e.to_string()))?;
        check(&signal).map_err(at)?;
        signals.push(signal);
    }
    let text = |f: &dyn Fn(&SignalIn) -> Option<&str>| -> ArrayRef {
        Arc::new(signals.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|s| Some(&s.fraud_signal_id)),
        text(&|s| Some(&s.transaction_id)),
        Arc::new(Float64Array::from_iter_values(
            signals.iter().map(|s| s.fraud_score),
        )),
        text(&|s| s.model_version.as_deref()),
        Arc::new(
            signals
                .iter()
                .map(|s| Some(s.inference_time.as_deref().unwrap_or(&default_time)))
                .collect::<StringArray>(),
        ),
    ];
    let schema = batch_schema(SIGNALS_TABLE).ok_or("no contract schema for ml_fraud_signals")?;
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

fn check(signal: &SignalIn) -> Result<(), String> {
    for (name, value) in [
        ("fraud_signal_id", &signal.fraud_signal_id),
        ("transaction_id", &signal.transaction_id),
    ] {
        if value.trim().is_empty() {
            return Err(format!("{name} is empty"));
        }
    }
    if !(0.0..=1.0).contains(&signal.fraud_score) {
        return Err(format!(
            "fraud_score {} is outside [0, 1]",
            signal.fraud_score
        ));
    }
    if let Some(time) = signal.inference_time.as_ref().filter(|t| !is_iso_8601(t)) {
        return Err(format!(
            "inference_time {time:?} is not an ISO-8601 date-time"
        ));
    }
    Ok(())
}

fn is_iso_8601(text: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(text).is_ok()
        || text.parse::<chrono::NaiveDateTime>().is_ok()
}

async fn get_signals(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers) {
        return *denied;
    }
    match signals_json(&state.engine).await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            let status = crate::flight::error::status_from_datafusion(&e);
            warn!(error = %e, "GET /ml_signals failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, status.message())
        }
    }
}

/// Every stored signal as a JSON array of objects, NULLs written as `null`.
async fn signals_json(engine: &QueryEngine) -> datafusion::error::Result<Vec<u8>> {
    let batches = engine
        .context()
        .sql("SELECT fraud_signal_id, transaction_id, fraud_score, model_version, inference_time FROM ml_fraud_signals")
        .await?
        .collect()
        .await?;
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs)?;
    writer.finish()?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn one_object_or_an_array() {
        let one = br#"{"fraud_signal_id":"FS-1","transaction_id":"TX-1","fraud_score":0.5}"#;
        let b = decode_signals(one, now()).unwrap();
        assert_eq!(b.num_rows(), 1);
        let times = b.column(4).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(times.value(0), "2023-11-14T22:13:20.000000");
        let many = br#"[{"fraud_signal_id":"FS-1","transaction_id":"TX-1","fraud_score":1,"model_version":"v2","inference_time":"2024-01-01T00:00:00.5"},
                        {"fraud_signal_id":"FS-2","transaction_id":"TX-2","fraud_score":0,"model_version":null,"inference_time":"2024-01-01T00:00:00Z"}]"#;
        let b = decode_signals(many, now()).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(3).null_count(), 1);
    }

    #[test]
    fn bad_bodies_say_why() {
        let cases: [(&[u8], &str); 8] = [
            (b"{not json", "invalid JSON"),
            (b"[]", "empty array"),
            (b"42", "expected a JSON object"),
            (br#"{"fraud_signal_id":"FS-1","fraud_score":0.5}"#, "missing field `transaction_id`"),
            (br#"{"fraud_signal_id":"FS-1","transaction_id":"T","fraud_score":"high"}"#, "invalid type"),
            (br#"{"fraud_signal_id":"FS-1","transaction_id":"T","fraud_score":1.5}"#, "outside [0, 1]"),
            (br#"[{"fraud_signal_id":"FS-1","transaction_id":"T","fraud_score":0.1},{"fraud_signal_id":"","transaction_id":"T","fraud_score":0.1}]"#, "signal 1: fraud_signal_id is empty"),
            (br#"{"fraud_signal_id":"FS-1","transaction_id":"T","fraud_score":0.1,"colour":"red"}"#, "unknown field `colour`"),
        ];
        for (body, expected) in cases {
            let err = decode_signals(body, now()).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        let err = decode_signals(
            br#"{"fraud_signal_id":"F","transaction_id":"T","fraud_score":0.1,"inference_time":"yesterday"}"#,
            now(),
        )
        .unwrap_err();
        assert!(err.contains("ISO-8601"), "{err}");
    }
}
