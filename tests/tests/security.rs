//! Query isolation and security hardening against the `recon` binary: no
//! statement from any client may crash, freeze or reconfigure the server, or
//! touch its files.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use futures::StreamExt;
use prost::Message;
use recon_integration_tests::{
    ReconProcess, free_port, http_request, query, recon_binary, rows, serve_args, status_of,
    write_sample_warehouse,
};
use tonic::Code;
use tonic::transport::Channel;

/// A `recon serve` over a fresh sample warehouse with `extra` flags.
struct Server {
    process: ReconProcess,
    http: String,
    warehouse: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &[&str]) -> (Self, FlightSqlServiceClient<Channel>) {
        Self::start_with(extra, None).await
    }

    /// Like [`Server::start`]; with `max_files`, the server may open at most
    /// that many file descriptors (the shell's ulimit, then exec).
    async fn start_with(
        extra: &[&str],
        max_files: Option<u32>,
    ) -> (Self, FlightSqlServiceClient<Channel>) {
        let warehouse = tempfile::tempdir().expect("tempdir");
        write_sample_warehouse(warehouse.path());
        let port = free_port();
        let http_port = free_port();
        let mut command = match max_files {
            None => std::process::Command::new(recon_binary()),
            Some(n) => {
                let mut shell = std::process::Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(recon_binary());
                shell
            }
        };
        command
            .args(serve_args(warehouse.path(), port, http_port))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        let mut process = ReconProcess::spawn(&mut command, port);
        let client = process.client().await;
        let server = Self {
            process,
            http: format!("http://127.0.0.1:{http_port}"),
            warehouse,
        };
        (server, client)
    }

    /// CPU time (user + system) the server has used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.pid()))
            .expect("read /proc stat");
        // Fields after the command name (which is in parentheses): utime is
        // the 14th field of the line, stime the 15th.
        let after = stat.rsplit_once(')').expect("stat format").1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / 100.0
    }

    /// Cores the server keeps busy over `window`.
    async fn cores_busy(&self, window: Duration) -> f64 {
        let before = self.cpu_seconds();
        tokio::time::sleep(window).await;
        (self.cpu_seconds() - before) / window.as_secs_f64()
    }
}

async fn refused(raw: &mut FlightServiceClient<Channel>, sql: &str) -> (Code, String) {
    match status_of(raw, sql).await {
        Ok(_) => panic!("{sql}: expected an error"),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

async fn raw_client(url: &str) -> FlightServiceClient<Channel> {
    FlightServiceClient::new(
        Channel::from_shared(url.to_owned())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    )
}

fn chain(op: &str, terms: usize) -> String {
    vec!["1"; terms].join(op)
}

#[tokio::test]
async fn deep_and_huge_expressions_never_crash_the_server() {
    let (mut server, mut client) = Server::start(&[]).await;
    let mut raw = raw_client(&server.process.url).await;

    // What BI tools write for a multi-select filter: it runs.
    let ors: Vec<String> = (0..2000)
        .map(|i| format!("merchant_id = 'MCH-{i}'"))
        .collect();
    let sql = format!("SELECT count(*) FROM merchants WHERE {}", ors.join(" OR "));
    query(&mut client, &sql)
        .await
        .expect("2,000 OR-ed conditions run");
    let sql = format!("SELECT {}", chain("+", 2000));
    query(&mut client, &sql)
        .await
        .expect("a 2,000-term chain runs");
    // Deep plans as prepared statements too: bound, planned and run.
    let sql = format!(
        "SELECT 1 AS x WHERE ? = 1 OR {}",
        chain(" = 2 OR ", 4900) + " = 2"
    );
    let mut prepared = client
        .prepare(sql, None)
        .await
        .expect("prepare a deep statement");
    let one: arrow::array::ArrayRef = std::sync::Arc::new(arrow::array::Int64Array::from(vec![1]));
    prepared
        .set_parameters(
            arrow::record_batch::RecordBatch::try_from_iter([("$1", one)]).expect("row"),
        )
        .expect("bind");
    let info = prepared.execute().await.expect("execute a deep statement");
    let batches = recon_integration_tests::fetch(&mut client, info)
        .await
        .expect("fetch a deep statement");
    assert_eq!(rows(&batches), 1);

    // Past the limit: a clear refusal naming it, and the server answers on.
    for sql in [
        format!("SELECT {}", chain("+", 20_000)),
        format!("SELECT 1 WHERE {}", chain(" = 1 OR ", 20_000) + " = 1"),
    ] {
        let (code, message) = refused(&mut raw, &sql).await;
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains("max_expression_depth"), "{message}");
    }
    let list: Vec<String> = (0..20_000).map(|i| format!("'MCH-{i}'")).collect();
    let sql = format!(
        "SELECT count(*) FROM merchants WHERE merchant_id IN ({})",
        list.join(", ")
    );
    query(&mut client, &sql)
        .await
        .expect("a 20,000-value IN list runs");

    // A huge value is stopped by the value limit, not grown into memory.
    let (code, message) = refused(&mut raw, "SELECT length(repeat('x', 300000000))").await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("max_value_mb"), "{message}");

    assert!(server.process.is_running(), "the server died");
    query(&mut client, "SELECT 1")
        .await
        .expect("still answering");
}

/// A CPU-bound nested-loop join and a hash join with a huge output.
const HEAVY: [&str; 2] = [
    "SELECT count(*) FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b WHERE a.value + b.value = 7",
    "SELECT count(*) FROM generate_series(1, 3000000) a JOIN generate_series(1, 3000000) b ON a.value % 10 = b.value % 10",
];

#[tokio::test]
async fn cpu_bound_queries_neither_freeze_the_server_nor_outlive_their_timeout() {
    let (server, client) = Server::start(&["--query-timeout-secs", "6"]).await;
    let started = Instant::now();
    let mut heavy = Vec::new();
    for i in 0..4 {
        let mut c = client.clone();
        heavy.push(tokio::spawn(async move {
            query(&mut c, HEAVY[i % 2]).await.map(|b| rows(&b))
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        server.cores_busy(Duration::from_millis(500)).await > 0.5,
        "the heavy queries should keep the query threads busy"
    );

    // While they run: HTTP, a small query and a metadata call answer quickly.
    let mut c = client.clone();
    let t = Instant::now();
    query(&mut c, "SELECT 1").await.expect("SELECT 1");
    let select_1 = t.elapsed();
    let t = Instant::now();
    let tables = c
        .get_tables(arrow_flight::sql::CommandGetTables::default())
        .await
        .expect("GetTables");
    drop(tables);
    let metadata = t.elapsed();
    let http = server.http.clone();
    let t = Instant::now();
    let (code, _) =
        tokio::task::spawn_blocking(move || http_request(&http, "GET", "/healthz", None, None))
            .await
            .expect("join")
            .expect("GET /healthz");
    let healthz = t.elapsed();
    assert_eq!(code, 200);
    for (what, took) in [
        ("SELECT 1", select_1),
        ("GetTables", metadata),
        ("/healthz", healthz),
    ] {
        // Frozen, they took until the heavy queries' timeout; the bound
        // leaves room for a loaded machine.
        assert!(
            took < Duration::from_secs(5),
            "{what} took {took:?} while queries ran"
        );
    }

    // Each heavy query ends with DEADLINE_EXCEEDED at its timeout ...
    for task in heavy {
        let err = task.await.expect("join").expect_err("timed out");
        assert!(format!("{err:#}").contains("timed out"), "{err:#}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // ... and stops using CPU.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = server.cores_busy(Duration::from_secs(1)).await;
    assert!(busy < 0.3, "{busy:.2} cores still busy after the timeouts");

    // A client that goes away stops its query too.
    let mut c = client.clone();
    let info = c.execute(HEAVY[0].to_owned(), None).await.expect("plan");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let stream = c.do_get(ticket).await.expect("DoGet");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(stream);
    drop(c);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = server.cores_busy(Duration::from_secs(1)).await;
    assert!(
        busy < 0.3,
        "{busy:.2} cores still busy after the client left"
    );
}

#[tokio::test]
async fn a_stalled_reader_gives_its_slot_back_at_the_timeout() {
    let (server, client) =
        Server::start(&["--query-timeout-secs", "2", "--max-concurrent-queries", "1"]).await;
    // A big result the client never reads past the first message.
    let mut c = client.clone();
    let info = c
        .execute(
            "SELECT value, repeat('x', 100) AS pad FROM generate_series(1, 20000000)".to_owned(),
            None,
        )
        .await
        .expect("plan");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stalled = c.do_get(ticket).await.expect("DoGet");
    let _first = stalled.next().await;
    // The only slot is taken now ...
    let mut other = client.clone();
    let mut raw_other = raw_client(&server.process.url).await;
    let (code, _) = refused(&mut raw_other, "SELECT 1").await;
    assert_eq!(code, Code::ResourceExhausted);
    // ... and free again once the timeout has passed, while the reader stalls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    query(&mut other, "SELECT 1")
        .await
        .expect("the slot was freed");
    drop(stalled);
}

#[tokio::test]
async fn no_statement_writes_files_or_redefines_built_in_views() {
    let (server, mut client) = Server::start(&[]).await;
    let mut raw = raw_client(&server.process.url).await;
    let signals = server
        .warehouse
        .path()
        .join("batch_parquet_data/ml_fraud_signals.parquet");
    let planted = signals.join("planted.parquet");
    let copy = format!(
        "EXPLAIN ANALYZE COPY (SELECT 'SIG-X' AS fraud_signal_id) TO '{}' STORED AS PARQUET",
        planted.display()
    );
    let (code, message) = refused(&mut raw, &copy).await;
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("COPY"), "{message}");
    let err = client
        .execute_update(copy.clone(), None)
        .await
        .expect_err("refused as an update");
    assert!(err.to_string().contains("COPY"), "{err}");
    let err = client
        .prepare(copy.clone(), None)
        .await
        .expect_err("refused as a prepared statement");
    assert!(err.to_string().contains("COPY"), "{err}");
    for sql in [
        format!("COPY (SELECT 1) TO '{}'", planted.display()),
        "INSERT INTO merchants SELECT * FROM merchants".to_owned(),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/'".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
    ] {
        let (code, message) = refused(&mut raw, &sql).await;
        assert_eq!(code, Code::InvalidArgument, "{sql}: {message}");
    }
    let (code, _) = refused(&mut raw, "SELECT * FROM '/etc/passwd'").await;
    assert_ne!(code, Code::Ok);
    assert!(!planted.exists(), "a file was written into the warehouse");
    assert!(!Path::new(&planted).with_extension("").exists());

    for sql in [
        "CREATE OR REPLACE VIEW merchants AS SELECT 1 AS merchant_id",
        "CREATE VIEW final_index AS SELECT 1 AS x",
        "DROP VIEW final_index",
        "DROP VIEW merchants",
        "CREATE OR REPLACE VIEW recon.public.transactions_latest AS SELECT 1 AS x",
    ] {
        let err = client
            .execute_update(sql.to_owned(), None)
            .await
            .expect_err(sql);
        assert!(err.to_string().contains("built-in"), "{sql}: {err}");
    }
    let merchants = query(&mut client, "SELECT * FROM merchants")
        .await
        .expect("merchants");
    assert!(rows(&merchants) > 0, "merchants still has its rows");
    query(&mut client, "SELECT * FROM final_index")
        .await
        .expect("final_index is still there");

    // Views of one's own still work.
    client
        .execute_update(
            "CREATE VIEW my_merchants AS SELECT * FROM merchants".to_owned(),
            None,
        )
        .await
        .expect("own view");
    let mine = query(&mut client, "SELECT * FROM my_merchants")
        .await
        .expect("own view");
    assert_eq!(rows(&mine), rows(&merchants));
    client
        .execute_update("DROP VIEW my_merchants".to_owned(), None)
        .await
        .expect("drop own view");
}

/// `recon hash-password`, the password on stdin.
fn hash(password: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(recon_binary())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("recon hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("hash-password output");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(hash.starts_with("$argon2"), "{hash}");
    hash
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn ingest_command(table: &str) -> arrow_flight::sql::CommandStatementIngest {
    arrow_flight::sql::CommandStatementIngest {
        table: table.to_owned(),
        ..Default::default()
    }
}

fn signal_batch(
    id: Option<&str>,
    tx: Option<&str>,
    score: Option<f64>,
    time: Option<&str>,
) -> arrow::record_batch::RecordBatch {
    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use std::sync::Arc;
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    arrow::record_batch::RecordBatch::try_from_iter([
        ("fraud_signal_id", text(id)),
        ("transaction_id", text(tx)),
        (
            "fraud_score",
            Arc::new(Float64Array::from(vec![score])) as ArrayRef,
        ),
        ("inference_time", text(time)),
    ])
    .expect("signal batch")
}

async fn ingest(
    client: &mut FlightSqlServiceClient<Channel>,
    batch: arrow::record_batch::RecordBatch,
) -> Result<i64, arrow_flight::error::FlightError> {
    client
        .execute_ingest(
            ingest_command("ml_fraud_signals"),
            futures::stream::iter([Ok(batch)]),
        )
        .await
}

async fn count_signals(client: &mut FlightSqlServiceClient<Channel>) -> i64 {
    let batches = query(client, "SELECT count(*) AS n FROM ml_fraud_signals")
        .await
        .expect("count signals");
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("count")
        .value(0)
}

#[tokio::test]
async fn roles_limit_what_each_user_may_do() {
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("recon.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nuser = \"boss\"\npassword = \"boss-pw\"\n\n\
             [[auth.users]]\nname = \"reader\"\npassword_hash = \"{}\"\nrole = \"read\"\n\n\
             [[auth.users]]\nname = \"writer\"\npassword_hash = \"{}\"\nrole = \"write\"\n",
            hash("reader-pw"),
            hash("writer-pw")
        ),
    )
    .expect("write config");
    let config = config.display().to_string();
    let (server, anonymous) = Server::start(&["--config", &config]).await;

    // No credentials, wrong credentials: Unauthenticated, counted.
    let mut raw = raw_client(&server.process.url).await;
    let (code, _) = refused(&mut raw, "SELECT 1").await;
    assert_eq!(code, Code::Unauthenticated);
    let mut wrong = anonymous.clone();
    assert!(wrong.handshake("reader", "nope").await.is_err());

    let mut reader = anonymous.clone();
    reader
        .handshake("reader", "reader-pw")
        .await
        .expect("reader logs in");
    query(&mut reader, "SELECT * FROM merchants")
        .await
        .expect("reader queries");
    for sql in ["REFRESH INDEX final_index", "CREATE VIEW mine AS SELECT 1"] {
        let err = reader
            .execute_update(sql.to_owned(), None)
            .await
            .expect_err(sql);
        assert!(
            err.to_string().contains("PermissionDenied") || err.to_string().contains("role"),
            "{sql}: {err}"
        );
    }
    let err = reader
        .execute("REFRESH INDEX final_index".to_owned(), None)
        .await
        .expect_err("refresh as a query");
    assert!(err.to_string().contains("role"), "{err}");
    let good = signal_batch(Some("SIG-R1"), Some("TX-1"), Some(0.4), None);
    let err = ingest(&mut reader, good.clone())
        .await
        .expect_err("reader cannot ingest");
    assert!(err.to_string().contains("role"), "{err}");

    let mut writer = anonymous.clone();
    writer
        .handshake("writer", "writer-pw")
        .await
        .expect("writer logs in");
    assert_eq!(ingest(&mut writer, good).await.expect("writer ingests"), 1);
    let err = writer
        .execute_update("REFRESH INDEX final_index".to_owned(), None)
        .await
        .expect_err("writer cannot refresh");
    assert!(err.to_string().contains("role"), "{err}");

    let mut boss = anonymous.clone();
    boss.handshake("boss", "boss-pw")
        .await
        .expect("admin logs in");
    boss.execute_update("REFRESH INDEX final_index".to_owned(), None)
        .await
        .expect("admin refreshes");
    boss.execute_update("CREATE VIEW shared_view AS SELECT 1 AS x".to_owned(), None)
        .await
        .expect("admin creates a view");
    let err = boss
        .execute_update("DROP VIEW final_index".to_owned(), None)
        .await
        .expect_err("not even an admin drops a built-in view");
    assert!(err.to_string().contains("built-in"), "{err}");

    // No role may replace or drop a built-in view.
    for (who, client) in [
        ("reader", &mut reader),
        ("writer", &mut writer),
        ("boss", &mut boss),
    ] {
        for sql in [
            "CREATE OR REPLACE VIEW merchants AS SELECT 1 AS x",
            "DROP VIEW final_index",
        ] {
            let err = client
                .execute_update(sql.to_owned(), None)
                .await
                .expect_err(sql);
            let text = err.to_string();
            assert!(
                text.contains("role") || text.contains("built-in"),
                "{who}: {sql}: {text}"
            );
        }
    }
    query(&mut reader, "SELECT * FROM final_index")
        .await
        .expect("final_index is still there");

    // HTTP: the same users and roles.
    let http = server.http.clone();
    let body = r#"{"fraud_signal_id":"SIG-H1","transaction_id":"TX-1","fraud_score":0.2}"#;
    let (reader_post, writer_post, anonymous_post, failures) =
        tokio::task::spawn_blocking(move || {
            let post = |auth: Option<&str>| {
                http_request(&http, "POST", "/ml_signals", Some(body), auth)
                    .expect("POST")
                    .0
            };
            let metrics = http_request(&http, "GET", "/metrics", None, None)
                .expect("metrics")
                .1;
            (
                post(Some(&basic("reader", "reader-pw"))),
                post(Some(&basic("writer", "writer-pw"))),
                post(None),
                metrics,
            )
        })
        .await
        .expect("join");
    assert_eq!(reader_post, 403);
    assert_eq!(writer_post, 201);
    assert_eq!(anonymous_post, 401);
    let line = failures
        .lines()
        .find(|l| l.starts_with("recon_auth_failures_total "))
        .expect("failure counter");
    let n: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("count");
    assert!(n >= 1, "{line}");
}

#[tokio::test]
async fn bulk_ingest_refuses_what_http_refuses() {
    let (server, mut client) = Server::start(&[]).await;
    let before = count_signals(&mut client).await;
    // id, transaction id, score, inference time, the reason given.
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<f64>,
        Option<&'a str>,
        &'a str,
    );
    let cases: [Case; 7] = [
        (Some("S"), Some("T"), Some(1.5), None, "outside [0, 1]"),
        (Some("S"), Some("T"), Some(-0.5), None, "outside [0, 1]"),
        (Some("S"), Some("T"), Some(f64::NAN), None, "outside [0, 1]"),
        (Some("S"), Some("T"), None, None, "fraud_score"),
        (
            Some(" "),
            Some("T"),
            Some(0.5),
            None,
            "fraud_signal_id is empty",
        ),
        (None, Some("T"), Some(0.5), None, "fraud_signal_id"),
        (
            Some("S"),
            Some("T"),
            Some(0.5),
            Some("yesterday"),
            "ISO-8601",
        ),
    ];
    for (id, tx, score, time, reason) in cases {
        let err = ingest(&mut client, signal_batch(id, tx, score, time))
            .await
            .expect_err(reason);
        match &err {
            arrow_flight::error::FlightError::Tonic(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status}");
                assert!(status.message().contains(reason), "{reason}: {status}");
            }
            other => panic!("{reason}: {other}"),
        }
        // The same signal over HTTP (where JSON can say it) is a 400 too.
        if score.is_some_and(f64::is_finite) && id.is_some() {
            let json = serde_json::json!({
                "fraud_signal_id": id, "transaction_id": tx, "fraud_score": score,
                "inference_time": time,
            })
            .to_string();
            let json = json.replace(",\"inference_time\":null", "");
            let http = server.http.clone();
            let (code, text) = tokio::task::spawn_blocking(move || {
                http_request(&http, "POST", "/ml_signals", Some(&json), None).expect("POST")
            })
            .await
            .expect("join");
            assert_eq!(code, 400, "{text}");
            assert!(text.contains(reason), "{reason}: {text}");
        }
    }
    assert_eq!(
        count_signals(&mut client).await,
        before,
        "nothing was stored"
    );
    // A good signal without a time gets the time of receipt, as over HTTP.
    let good = signal_batch(Some("SIG-OK"), Some("TX-1"), Some(0.5), None);
    assert_eq!(ingest(&mut client, good).await.expect("good signal"), 1);
    let times = query(
        &mut client,
        "SELECT count(*) FROM ml_fraud_signals WHERE fraud_signal_id = 'SIG-OK' AND inference_time IS NOT NULL",
    )
    .await
    .expect("time filled");
    assert_eq!(
        recon_integration_tests::table(&times)
            .matches("| 1 ")
            .count(),
        1
    );
}

#[tokio::test]
async fn stalled_http_connections_are_closed_within_the_header_timeout() {
    use std::io::{Read, Write};
    let (server, _client) = Server::start(&[]).await;
    let host = server.http.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        // One connection stops in the middle of its headers, one never sends.
        let mut partial = std::net::TcpStream::connect(&host).expect("connect");
        partial
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .expect("partial headers");
        let mut silent = std::net::TcpStream::connect(&host).expect("connect");
        let mut closed_after = Vec::new();
        for stream in [&mut partial, &mut silent] {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
            let mut buf = [0u8; 256];
            // EOF (or a reset, or a 408 then EOF) once the server gives up.
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            closed_after.push(started.elapsed());
        }
        closed_after
    })
    .await
    .expect("join");
    for after in closed {
        // The header timeout is 10 s; a read that errs at the 30 s read
        // timeout would mean the connection was never closed.
        assert!(
            after < Duration::from_secs(15),
            "closed only after {after:?}"
        );
    }
    // The server still answers new connections.
    let http = server.http.clone();
    let (code, _) = tokio::task::spawn_blocking(move || {
        http_request(&http, "GET", "/healthz", None, None).expect("healthz")
    })
    .await
    .expect("join");
    assert_eq!(code, 200);
}

#[tokio::test]
async fn malformed_commands_and_arrow_data_are_invalid_argument() {
    use arrow_flight::FlightData;
    use arrow_flight::sql::{Any, CommandStatementIngest};
    let (mut server, _client) = Server::start(&[]).await;
    let mut raw = raw_client(&server.process.url).await;
    let statement_url = "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery";
    let garbage = |value: Vec<u8>| {
        Any {
            type_url: statement_url.into(),
            value: value.into(),
        }
        .encode_to_vec()
    };
    let sql = CommandStatementQuery {
        query: "SELECT 1".to_owned(),
        transaction_id: None,
    }
    .encode_to_vec();
    // A non-UTF-8 string field: tag 1, length 2, invalid bytes.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    for (what, cmd) in [
        ("truncated protobuf", garbage(sql[..sql.len() - 2].to_vec())),
        ("garbage Any payload", garbage(vec![0xff; 16])),
        ("non-UTF-8 SQL", garbage(not_utf8)),
        ("truncated Any", garbage(sql.clone())[..10].to_vec()),
    ] {
        let err = raw
            .get_flight_info(FlightDescriptor::new_cmd(cmd.clone()))
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
        let err = raw
            .do_get(arrow_flight::Ticket::new(cmd))
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
    }

    // DoPut of bulk ingest whose Arrow data has been cut short.
    let batch = signal_batch(Some("SIG-1"), Some("TX-1"), Some(0.5), None);
    let command = CommandStatementIngest {
        table: "ml_fraud_signals".to_owned(),
        ..Default::default()
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let mut messages: Vec<FlightData> = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]))
        .map(|m| m.expect("encode"))
        .collect()
        .await;
    let last = messages.last_mut().expect("a batch message");
    last.data_body = last.data_body.slice(..last.data_body.len() / 3);
    let result = raw.do_put(futures::stream::iter(messages)).await;
    let status = match result {
        Err(status) => status,
        Ok(response) => {
            let mut results = response.into_inner();
            loop {
                match results.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(status)) => break status,
                    None => panic!("malformed Arrow data was accepted"),
                }
            }
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(server.process.is_running());
    status_of(&mut raw, "SELECT 1")
        .await
        .expect("still answering");
}

#[tokio::test]
async fn out_of_file_descriptors_the_server_waits_instead_of_spinning() {
    // Few file descriptors: a few hundred connections use them all up.
    let (server, client) = Server::start_with(&[], Some(128)).await;
    drop(client);
    let port_of = |url: &str| -> u16 {
        url.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    };
    let (port, http_port) = (port_of(&server.process.url), port_of(&server.http));
    // Connections the server cannot accept wait in the listen backlog; a
    // full backlog makes connect wait, hence the connect timeout.
    let mut held = Vec::new();
    for _ in 0..200 {
        for p in [port, http_port] {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], p));
            if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                held.push(s);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = server.cores_busy(Duration::from_secs(2)).await;
    assert!(
        busy < 0.3,
        "{busy:.2} cores busy while out of file descriptors"
    );
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut raw = raw_client(&server.process.url).await;
    status_of(&mut raw, "SELECT 1")
        .await
        .expect("answers again");
}
