//! Shared pieces of the end-to-end tests: a warehouse with a small, hand-checked
//! data set in the layouts the seed's Spark script writes, a recon server started
//! on a free loopback port, and Flight SQL clients connected to it.

pub mod delta;
pub mod scale;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use recon_server::config::Config;
use recon_server::serve::RunningServer;
use tonic::transport::Channel;

/// A Utf8 column.
pub fn strings(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

/// A Float64 column.
pub fn floats(values: &[Option<f64>]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

/// A batch from named columns (every column nullable).
pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("valid test batch")
}

/// Writes `batch` as one Parquet file at `path` (parents created).
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
    let file = std::fs::File::create(path).expect("create parquet file");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write batch");
    writer.close().expect("close parquet");
}

/// The statements of the sample warehouse: 4 rows, one per discrepancy case.
pub fn sample_statements() -> RecordBatch {
    batch(vec![
        (
            "statement_id",
            strings(&[
                Some("STMT-1"),
                Some("STMT-2"),
                Some("STMT-3"),
                Some("STMT-4"),
            ]),
        ),
        (
            "transaction_id",
            strings(&[Some("T-1"), Some("T-2"), Some("T-3"), None]),
        ),
        (
            "posting_date",
            strings(&[
                Some("2026-11-01"),
                Some("2026-11-02"),
                Some("2026-11-02"),
                Some("2026-11-03"),
            ]),
        ),
        (
            "amount_posted",
            floats(&[Some(100.0), Some(2.675), None, Some(-0.001)]),
        ),
        (
            "fee_charged",
            floats(&[Some(1.5), Some(0.05), Some(0.0), None]),
        ),
    ])
}

/// Lays out the sample warehouse under `root`:
/// - `aggregator_statements.parquet`: a single file (4 rows);
/// - `merchants.parquet/`: a Spark-style folder of two part files plus `_SUCCESS`
///   (3 rows, columns in Spark's alphabetical order);
/// - `policy_data.parquet`: seed columns only, no `merchant_id` (reads as NULL);
/// - `ml_fraud_signals`: missing (an empty table until files arrive).
pub fn write_sample_warehouse(root: &Path) {
    let dir = root.join("batch_parquet_data");
    write_parquet(
        &dir.join("aggregator_statements.parquet"),
        &sample_statements(),
    );
    let merchants = dir.join("merchants.parquet");
    write_parquet(
        &merchants.join("part-00000-a.snappy.parquet"),
        &batch(vec![
            (
                "merchant_id",
                strings(&[Some("MCH-A001"), Some("MCH-B002")]),
            ),
            (
                "merchant_name",
                strings(&[Some("Acme"), Some("Bügel GmbH")]),
            ),
            ("onboarding_date", strings(&[Some("2025-01-01"), None])),
            ("risk_level", strings(&[Some("LOW"), Some("HIGH")])),
        ]),
    );
    write_parquet(
        &merchants.join("part-00001-a.snappy.parquet"),
        &batch(vec![
            ("merchant_id", strings(&[Some("MCH-C003")])),
            ("merchant_name", strings(&[Some("Cobalt")])),
            ("onboarding_date", strings(&[Some("2024-06-30")])),
            ("risk_level", strings(&[Some("MEDIUM")])),
        ]),
    );
    std::fs::write(merchants.join("_SUCCESS"), b"").expect("write _SUCCESS");
    write_parquet(
        &dir.join("policy_data.parquet"),
        &batch(vec![
            (
                "active_flag",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false)])),
            ),
            ("policy_id", strings(&[Some("POL-1"), Some("POL-2")])),
            ("policy_type", strings(&[Some("KYC"), Some("BLACKLIST")])),
            (
                "rule_description",
                strings(&[Some("know your customer"), None]),
            ),
        ]),
    );
}

/// The sample ML signals file (written by tests that add it while running).
pub fn sample_signals() -> RecordBatch {
    batch(vec![
        ("fraud_signal_id", strings(&[Some("F-1"), Some("F-2")])),
        ("transaction_id", strings(&[Some("T-1"), Some("T-404")])),
        ("fraud_score", floats(&[Some(0.81), Some(0.2)])),
        (
            "model_version",
            strings(&[Some("model_v1"), Some("model_v2")]),
        ),
        (
            "inference_time",
            strings(&[Some("2026-11-01T10:00:00"), Some("2026-11-01T10:00:01")]),
        ),
    ])
}

/// A recon server on a free loopback port over a temporary sample warehouse.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT` of the Flight SQL endpoint.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the HTTP API.
    pub http_url: String,
    /// The warehouse folder.
    pub warehouse: tempfile::TempDir,
    server: RunningServer,
}

impl TestServer {
    /// Starts a server over a new sample warehouse; `adjust` may change the
    /// configuration first.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let warehouse = tempfile::tempdir().expect("tempdir");
        write_sample_warehouse(warehouse.path());
        Self::start_in(warehouse, adjust).await
    }

    /// Starts a server over an existing warehouse folder (e.g. after a restart).
    pub async fn start_in(warehouse: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            warehouse: warehouse.path().display().to_string(),
            flight_addr: "127.0.0.1:0".parse().expect("addr"),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            ..Config::default()
        };
        adjust(&mut config);
        config.validate().expect("valid test config");
        let server = recon_server::serve::start(&config)
            .await
            .expect("server starts");
        let url = format!("http://{}", server.flight_addr);
        let http_url = format!("http://{}", server.http_addr);
        Self {
            url,
            http_url,
            warehouse,
            server,
        }
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    /// arrow-flight's Flight SQL client (not logged in).
    pub async fn sql_client(&self) -> FlightSqlServiceClient<Channel> {
        FlightSqlServiceClient::new(self.channel().await)
    }

    /// The plain Flight client, for calls that must see raw gRPC statuses.
    pub async fn flight_client(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel().await)
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.server.stop().await.expect("clean stop");
    }

    /// Stops the server and hands back its warehouse, for a restart.
    pub async fn stop_keeping_warehouse(self) -> tempfile::TempDir {
        self.server.stop().await.expect("clean stop");
        self.warehouse
    }
}

/// The gRPC status `sql` ends with (planning or streaming), or Ok with the row count.
pub async fn status_of(
    raw: &mut FlightServiceClient<Channel>,
    sql: &str,
) -> Result<usize, tonic::Status> {
    use arrow_flight::sql::ProstMessageExt;
    use futures::StreamExt;
    use prost::Message;
    let cmd = arrow_flight::sql::CommandStatementQuery {
        query: sql.to_owned(),
        transaction_id: None,
    };
    let info = raw
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            cmd.as_any().encode_to_vec(),
        ))
        .await?
        .into_inner();
    let mut n = 0;
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .ok_or_else(|| tonic::Status::internal("no ticket"))?;
        let mut stream = raw.do_get(ticket).await?.into_inner();
        while let Some(data) = stream.next().await {
            n += usize::from(!data?.data_body.is_empty());
        }
    }
    Ok(n)
}

/// Runs a query through GetFlightInfo + DoGet and collects the batches.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> anyhow::Result<Vec<RecordBatch>> {
    let info = client.execute(sql.to_owned(), None).await?;
    fetch(client, info).await
}

/// Redeems every endpoint of `info` and collects the batches.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> anyhow::Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .ok_or_else(|| anyhow::anyhow!("endpoint without ticket"))?;
        let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

/// Total rows of `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The batches as a pretty table, for exact comparisons.
pub fn table(batches: &[RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .expect("printable")
        .to_string()
}

/// The first data row of a table printed by [`table`] (or `recon-cli`), its
/// cells trimmed and joined by single spaces.
pub fn first_row(printed: &str) -> String {
    printed
        .lines()
        .nth(3)
        .unwrap_or_default()
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A tansu broker (a real Kafka-protocol broker, in-memory storage) on a free
/// loopback port; killed when dropped. Needs `tansu` on PATH or in
/// `~/.cargo/bin` (`scripts/test.sh` installs it).
#[derive(Debug)]
pub struct Broker {
    /// `127.0.0.1:PORT`.
    pub address: String,
    child: std::process::Child,
}

impl Broker {
    /// Starts the broker (in-memory storage) and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_on(free_port(), "memory://tansu/", &[])
    }

    /// Starts the broker on `port` with `storage` (e.g. `s3://bucket/` with the
    /// S3 settings in `env`), so a restart on the same port and storage keeps
    /// the topics.
    pub fn start_on(port: u16, storage: &str, env: &[(String, String)]) -> Self {
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let child = std::process::Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", storage, "--silent"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu (cargo install tansu --locked --features dynostore)");
        wait_for_port(&address, "tansu");
        Self { address, child }
    }

    /// Stops the broker (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .create()
            .expect("admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .expect("create_topics");
        for r in results {
            r.expect("topic created");
        }
    }

    /// A producer that waits for every write.
    pub fn producer(&self) -> rdkafka::producer::FutureProducer {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_for_port(address: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Creates `bucket` on the S3 server at `address` (plain HTTP PUT). moto may
/// accept connections a moment before it answers them (an empty reply), so
/// this retries for up to 30 s.
fn create_bucket(address: &str, bucket: &str) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut reply = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            let request = format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_string(&mut reply);
            }
        }
        if reply.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "create bucket {bucket}: {reply:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An S3-compatible server (moto, from the test venv: `MOTO_SERVER` names its
/// `moto_server`) on a free loopback port; killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: std::process::Child,
}

impl S3Server {
    /// Starts the server and creates `buckets`.
    pub fn start(buckets: &[&str]) -> Self {
        let binary = std::env::var("MOTO_SERVER").expect(
            "MOTO_SERVER must name moto_server (scripts/test.sh installs it in the test venv)",
        );
        let port = free_port();
        let child = std::process::Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let address = format!("127.0.0.1:{port}");
        wait_for_port(&address, "moto_server");
        // Built first, so a failure below still stops moto (Drop).
        let server = Self {
            endpoint: format!("http://{address}"),
            child,
        };
        for bucket in buckets {
            create_bucket(&address, bucket);
        }
        server
    }

    /// The `AWS_*` variables that point S3 clients (object_store, tansu) here.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_binary() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin.into();
    }
    let home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .unwrap_or_default();
    let installed = home.join("bin/tansu");
    if installed.exists() {
        installed
    } else {
        "tansu".into()
    }
}

/// A transaction event in the seed's JSON shape.
pub fn event_json(id: &str, merchant: &str, amount: f64, status: &str, time: &str) -> String {
    format!(
        r#"{{"transaction_id": "{id}", "merchant_id": "{merchant}", "user_id": "USR-{id}", "amount": {amount}, "currency": "EUR", "status": "{status}", "event_time": "{time}"}}"#
    )
}

/// The `recon` binary: `RECON_BIN`, or the one beside the running test or bench
/// (`target/<profile>/deps/<test>-… → target/<profile>/recon`).
pub fn recon_binary() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("RECON_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("exe in target/<profile>/deps")
        .join("recon");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p recon-server --bin recon` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// `recon serve` over `warehouse` (a path or an object store URL) with Flight
/// SQL on loopback `port`, HTTP on any free loopback port, warnings only in the
/// log (or what `RECON_TEST_LOG` says, e.g. `warn,recon_server::snapshots=debug`
/// for each refresh's phases), stdout discarded.
pub fn recon_serve(warehouse: impl AsRef<std::ffi::OsStr>, port: u16) -> std::process::Command {
    let mut command = std::process::Command::new(recon_binary());
    command
        .args(serve_args(warehouse, port, 0))
        .env(
            "RUST_LOG",
            std::env::var("RECON_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(std::process::Stdio::null());
    command
}

/// The arguments of `recon serve` over `warehouse` with Flight SQL on loopback
/// `port` and HTTP on loopback `http_port` (0: any free port).
pub fn serve_args(
    warehouse: impl AsRef<std::ffi::OsStr>,
    port: u16,
    http_port: u16,
) -> Vec<std::ffi::OsString> {
    vec![
        "serve".into(),
        "--warehouse".into(),
        warehouse.as_ref().to_owned(),
        "--flight-addr".into(),
        format!("127.0.0.1:{port}").into(),
        "--http-addr".into(),
        format!("127.0.0.1:{http_port}").into(),
    ]
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `recon serve` binary and its Flight SQL URL; killed (SIGKILL) when
/// dropped, so a failed test leaves no server behind.
#[derive(Debug)]
pub struct ReconProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ReconProcess {
    /// Starts `command` (e.g. [`recon_serve`] plus the test's flags) whose
    /// Flight SQL port is `port`.
    pub fn spawn(command: &mut std::process::Command, port: u16) -> Self {
        Self {
            child: command.spawn().expect("start recon"),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A Flight SQL client, once the server listens (within 30 s).
    pub async fn client(&mut self) -> FlightSqlServiceClient<Channel> {
        connect_when_listening(
            &self.url,
            &mut self.child,
            std::time::Duration::from_secs(30),
        )
        .await
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server with SIGKILL.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM; it must exit 0.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = self.child.wait().expect("wait for recon");
        assert!(status.success(), "recon exits 0 on SIGTERM, got {status}");
    }
}

impl Drop for ReconProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects a Flight SQL client to `url` once the server `child` listens,
/// failing if it exits first or does not listen `within`.
pub async fn connect_when_listening(
    url: &str,
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> FlightSqlServiceClient<Channel> {
    let deadline = std::time::Instant::now() + within;
    loop {
        assert!(
            child.try_wait().expect("child status").is_none(),
            "the server exited"
        );
        if let Ok(channel) = Channel::from_shared(url.to_owned())
            .expect("url")
            .connect()
            .await
        {
            return FlightSqlServiceClient::new(channel);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not listen within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls `sql` until it prints `expected`, failing after 30 s with both tables.
pub async fn eventually(client: &mut FlightSqlServiceClient<Channel>, sql: &str, expected: &str) {
    eventually_within(client, sql, expected, std::time::Duration::from_secs(30)).await;
}

/// [`eventually`] with its own time limit.
pub async fn eventually_within(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
    expected: &str,
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let got = table(&query(client, sql).await.expect("query"));
        if got == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}\nexpected:\n{expected}\ngot:\n{got}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Produces the events `T-{i}` for `i` in `ids` (seed-shaped, PENDING, 1.00 at
/// MCH-A1; the key is the id) to `topic`, event `i` to partition `partition(i)`
/// (None: the key's hash); waits for each acknowledgement and returns the
/// (partition, offset) pairs.
pub async fn produce_events(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    ids: std::ops::Range<usize>,
    partition: impl Fn(usize) -> Option<i32>,
) -> std::collections::BTreeSet<(i32, i64)> {
    use rdkafka::producer::FutureRecord;
    let mut acked = std::collections::BTreeSet::new();
    for i in ids {
        let id = format!("T-{i}");
        let payload = event_json(&id, "MCH-A1", 1.0, "PENDING", "2026-11-24T10:00:00");
        let mut record = FutureRecord::to(topic).key(&id).payload(&payload);
        if let Some(p) = partition(i) {
            record = record.partition(p);
        }
        let delivery = producer
            .send(record, std::time::Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        acked.insert((delivery.partition, delivery.offset));
    }
    acked
}

/// Produces `records` (key, payload) to `topic`, waiting for each ack.
pub async fn produce(broker: &Broker, topic: &str, records: &[(Option<&str>, Vec<u8>)]) {
    use rdkafka::producer::FutureRecord;
    let producer = broker.producer();
    for (key, payload) in records {
        let mut record = FutureRecord::<str, [u8]>::to(topic).payload(payload.as_slice());
        if let Some(key) = key {
            record = record.key(key);
        }
        producer
            .send(record, std::time::Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// One HTTP/1.1 request over a new loopback connection (blocking; call from
/// `spawn_blocking` in async tests): returns the status code and the body.
pub fn http_request(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host)?;
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = authorization {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        },
    ))
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        text = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `count(*)` and the number of distinct (partition, offset) of `transactions`;
/// [`counts`] is its expected table.
pub const COUNTS: &str =
    "SELECT count(*) AS n, count(DISTINCT (kafka_partition, kafka_offset)) AS d FROM transactions";

/// The table [`COUNTS`] prints when `transactions` holds `n` events, each once.
pub fn counts(n: usize) -> String {
    let width = n.to_string().len().max(1);
    let pad = |s: &str| format!("{s:<width$}");
    format!(
        "+{line}+{line}+\n| {n_h} | {d_h} |\n+{line}+{line}+\n| {n} | {d} |\n+{line}+{line}+",
        line = "-".repeat(width + 2),
        n_h = pad("n"),
        d_h = pad("d"),
        n = pad(&n.to_string()),
        d = pad(&n.to_string()),
    )
}
