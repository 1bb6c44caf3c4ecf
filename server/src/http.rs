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
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::appends::{self, SIGNALS_TABLE};
use crate::flight::auth::{Authenticator, Role};
use crate::flight::queries::QueryEngine;
use crate::ingest::status::IngestStatus;
use crate::snapshots::Materializer;
use crate::tables::batch_schema;
use crate::warehouse::Warehouse;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 << 20;

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
        .with_state(state)
}

/// How long a connection may take to send a request's headers; it is also how
/// long an idle keep-alive connection stays open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 512;

/// Binds `addr` and serves the routes (over TLS when `tls` is set) until
/// `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(http_addr = %bound, tls = tls.is_some(), "HTTP listening");
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(accept_loop(listener, router(state), tls, stop));
    Ok((bound, task))
}

/// Accepts connections while there is room, backing off when accepting fails
/// (out of file descriptors), and lets running requests finish at shutdown.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = crate::serve::AcceptBackoff::default();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = until_stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(e) => {
                    backoff.wait("HTTP", &e).await;
                    continue;
                }
            },
            () = until_stopped(&mut stop) => break,
        };
        let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, peer, app, stop).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "HTTP TLS handshake failed"),
                        Err(_) => debug!(%peer, "HTTP TLS handshake timed out"),
                    }
                }
                None => serve_connection(stream, peer, app, stop).await,
            }
        });
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one HTTP/1.1 connection with the header timeout; at shutdown it
/// finishes the request in flight and closes.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut app = app.clone();
            async move { tower::Service::call(&mut app, request.map(axum::body::Body::new)).await }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        () = until_stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn until_stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The caller's address, when the connection recorded it.
#[derive(Debug, Clone, Copy)]
struct Peer(Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A JSON error body `{"error": "..."}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

/// Checks the caller's credentials and that their role is at least `role`.
async fn authorize(
    state: &HttpState,
    peer: Peer,
    headers: &HeaderMap,
    role: Role,
    what: &str,
) -> Result<(), Box<Response>> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = state.auth.check(peer.0, header).await.map_err(|status| {
        let mut response = error(StatusCode::UNAUTHORIZED, status.message());
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"recon\""),
        );
        Box::new(response)
    })?;
    identity
        .require(role, what)
        .map_err(|status| Box::new(error(StatusCode::FORBIDDEN, status.message())))
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
        failed_logins: state.auth.failed_logins(),
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

async fn post_signals(
    State(state): State<HttpState>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Err(denied) = authorize(&state, peer, &headers, Role::Write, "POST /ml_signals").await {
        return *denied;
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body (at most {MAX_BODY_BYTES} bytes): {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            );
        }
    };
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
        text(&|s| s.inference_time.as_deref()),
    ];
    let schema = batch_schema(SIGNALS_TABLE).ok_or("no contract schema for ml_fraud_signals")?;
    let batch = RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())?;
    // The same rules as bulk ingest.
    appends::check_signals(&batch, received).map_err(|e| e.to_string())
}

async fn get_signals(State(state): State<HttpState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, peer, &headers, Role::Read, "GET /ml_signals").await {
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
    let ctx = engine.context().clone();
    let batches = engine
        .runtime()
        .run(async move {
            ctx.sql("SELECT fraud_signal_id, transaction_id, fraud_score, model_version, inference_time FROM ml_fraud_signals")
                .await?
                .collect()
                .await
        })
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
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
