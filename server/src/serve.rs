//! `recon serve`: opens the warehouse, builds the catalog, and runs the Flight
//! SQL endpoint until SIGINT/SIGTERM, then drains in-flight calls and exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::config::{Assignment, Config};
use crate::flight::auth::{AuthLayer, Authenticator};
use crate::flight::queries::QueryEngine;
use crate::flight::service::BulkIngest;
use crate::flight::{ReconFlightSql, sql_info};
use crate::http::HttpState;
use crate::ingest::IngestTables;
use crate::ingest::segments::SegmentStore;
use crate::snapshots::Materializer;
use crate::table_cache::CacheBudget;
use crate::warehouse::Warehouse;

/// How long shutdown waits for running calls (e.g. a client reading a long
/// result) before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Largest gRPC message the server accepts (bulk ingest batches, parameters).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A server that is listening: its address and a handle to stop it.
#[derive(Debug)]
pub struct RunningServer {
    /// The Flight SQL address actually bound (useful with port 0).
    pub flight_addr: SocketAddr,
    /// The HTTP address actually bound.
    pub http_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting calls, lets running ones finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await?
    }

    /// Waits until the server stops by itself (it only does on error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// What [`build_engine`] assembles.
#[derive(Debug)]
pub struct Engine {
    /// Plans and runs SQL.
    pub queries: QueryEngine,
    /// The live tables Kafka ingest appends to.
    pub ingest_tables: IngestTables,
    /// The warehouse every table lives in.
    pub warehouse: Warehouse,
    /// The index snapshots.
    pub materializer: Arc<Materializer>,
}

/// Builds the session (warehouse, batch tables, ingest tables, functions, index
/// views and their snapshots) and the query engine, and starts loading the
/// batch tables into memory in the background.
pub async fn build_engine(config: &Config) -> anyhow::Result<Engine> {
    let warehouse = Warehouse::open(&config.warehouse)?;
    let budget = CacheBudget::new(
        usize::try_from(config.tables.cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
    );
    let (ctx, tables) = crate::catalog_context(&config.rules, &warehouse, &budget)?;
    info!(warehouse = %warehouse.root(), "warehouse opened");
    let state = ctx.state();
    for table in tables {
        if let Err(e) = table.warm(&state).await {
            warn!(error = %e, "cannot list a batch table; it is read from Parquet");
        }
    }
    let ingest_tables = crate::ingest::register(&ctx).await?;
    crate::indexes::register(&ctx, &config.indexes).await?;
    let materializer = Materializer::open(
        &ctx,
        Arc::clone(&ingest_tables.transactions),
        &warehouse,
        config.indexes.snapshot_retention,
        config.indexes.uses_builtin_views(),
    )
    .await?;
    Ok(Engine {
        queries: QueryEngine::new(ctx, config.limits.clone())?
            .with_materializer(Arc::clone(&materializer)),
        ingest_tables,
        warehouse,
        materializer,
    })
}

/// Binds the Flight SQL address and starts serving in the background.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    // rustls is linked with both ring and aws-lc-rs (delta-rs brings the
    // latter), so it cannot pick a process-wide provider itself: ring, as
    // every config built here names explicitly. A second call is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Engine {
        queries: engine,
        ingest_tables,
        warehouse,
        materializer,
    } = build_engine(config).await?;
    let auth = Arc::new(Authenticator::new(&config.auth));
    let query_runtime = Arc::clone(engine.runtime());
    let signals_accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let http_state = HttpState {
        engine: engine.clone(),
        warehouse: warehouse.clone(),
        auth: Arc::clone(&auth),
        ingest: config
            .kafka
            .brokers
            .as_ref()
            .map(|_| ingest_tables.status.clone()),
        materializer: Arc::clone(&materializer),
        signals_accepted: Arc::clone(&signals_accepted),
    };
    let service = ReconFlightSql::new(
        engine,
        Arc::clone(&auth),
        sql_info::sql_info(config.limits.query_timeout_secs)?,
        sql_info::xdbc_type_info()?,
    )
    .with_bulk_ingest(BulkIngest {
        warehouse: warehouse.clone(),
        signals_accepted: Arc::clone(&signals_accepted),
    });
    let flight = FlightServiceServer::new(crate::flight::guard::Guarded(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let listener = TcpListener::bind(config.flight_addr).await?;
    let flight_addr = listener.local_addr()?;
    let incoming = incoming(listener);
    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        let identity = Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let router = builder
        .layer(AuthLayer::new(Arc::clone(&auth)))
        .add_service(flight);
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let mut segments = SegmentStore::new(&warehouse, &config.kafka.topic)?;
    if config.kafka.assignment == Assignment::Group {
        let member = config
            .kafka
            .member
            .clone()
            .unwrap_or_else(|| default_member(flight_addr.port()));
        info!(member, group = %config.kafka.group_id, "Kafka ingest shares the topic with its consumer group");
        segments = segments.for_member(&member)?;
    }
    let ingest = match &config.kafka.brokers {
        Some(_) => Some(tokio::spawn(crate::ingest::consumer::run(
            config.kafka.clone(),
            ingest_tables,
            segments,
            shutdown.subscribe(),
        ))),
        None => {
            // No Kafka: still show what earlier runs persisted.
            crate::ingest::consumer::recover(&segments, &ingest_tables, false).await?;
            // Index the recovered events now rather than in the first query.
            let latest = Arc::clone(&ingest_tables.latest);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = latest.batches() {
                    warn!(error = %e, "cannot index transactions_latest");
                }
            });
            None
        }
    };
    let (http_addr, http) = crate::http::serve(
        config.http_addr,
        http_state,
        http_tls(config)?,
        shutdown.subscribe(),
    )
    .await?;
    if config.indexes.refresh_interval_secs > 0 {
        let every = Duration::from_secs(config.indexes.refresh_interval_secs);
        // Refreshes are queries: they run on the query runtime.
        query_runtime
            .handle()
            .spawn(Arc::clone(&materializer).run_schedule(every, shutdown.subscribe()));
    }
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await?;
        http.await??;
        if let Some(ingest) = ingest {
            ingest.await?;
        }
        Ok(())
    });
    info!(
        %flight_addr,
        tls = config.tls.cert.is_some(),
        auth = auth.enabled(),
        "Flight SQL listening"
    );
    Ok(RunningServer {
        flight_addr,
        http_addr,
        shutdown,
        task,
    })
}

/// Accepted Flight SQL connections. Accepting fails when the process is out of
/// file descriptors; then the loop waits (backing off) instead of retrying at
/// once and spinning a core.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(
        (listener, AcceptBackoff::default()),
        |(listener, mut backoff)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        backoff.reset();
                        // No Nagle: small replies (FlightInfo, first batches) go
                        // out at once instead of waiting for the peer's delayed
                        // ACK (~40 ms).
                        let _ = stream.set_nodelay(true);
                        return Some((Ok(stream), (listener, backoff)));
                    }
                    Err(e) => backoff.wait("Flight SQL", &e).await,
                }
            }
        },
    )
}

/// The wait after a failed accept: 5 ms, doubling up to 1 s, reset by a
/// successful one.
#[derive(Debug)]
pub struct AcceptBackoff {
    delay: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self { delay: Self::FIRST }
    }
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const LONGEST: Duration = Duration::from_secs(1);

    /// After a successful accept.
    pub fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    /// Logs the failure and waits before the next attempt.
    pub async fn wait(&mut self, listener: &str, error: &std::io::Error) {
        warn!(listener, %error, delay_ms = self.delay.as_millis() as u64, "accepting a connection failed (out of file descriptors?); waiting");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::LONGEST);
    }
}

/// The rustls configuration of the HTTP port: the Flight certificate and key,
/// when TLS is configured.
fn http_tls(config: &Config) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("tls.cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let RunningServer {
        shutdown, mut task, ..
    } = start(&config).await?;
    tokio::select! {
        result = shutdown_signal() => {
            result?;
            info!("shutting down: finishing running calls (at most {} s)", SHUTDOWN_GRACE.as_secs());
            let _ = shutdown.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
                Ok(result) => result??,
                Err(_) => {
                    warn!("calls still running after the grace period; stopping them");
                    task.abort();
                }
            }
        }
        result = &mut task => result??,
    }
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// A group member's name when none is configured: the host name and the Flight
/// SQL port (stable across restarts, so a restarted server reuses its
/// checkpoint file).
fn default_member(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let host = if host.is_empty() {
        "recon".to_owned()
    } else {
        host
    };
    format!("{host}-{port}")
}
