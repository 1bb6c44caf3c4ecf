//! The HTTP side against a running server: `POST /ml_signals` (one object, an
//! array; bad JSON, wrong types, missing fields, empty array → 400 with the
//! reason and nothing stored), `GET /ml_signals`, `/healthz`, `/metrics`, and
//! Basic auth when authentication is on.

use recon_integration_tests::{TestServer, http_request, query, table};

async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> (u16, String) {
    let url = server.http_url.clone();
    let (method, path) = (method.to_owned(), path.to_owned());
    let (body, auth) = (body.map(str::to_owned), auth.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        http_request(&url, &method, &path, body.as_deref(), auth.as_deref())
    })
    .await
    .expect("join")
    .expect("http")
}

fn signal(id: &str, tx: &str, score: &str) -> String {
    format!(
        r#"{{"fraud_signal_id":"{id}","transaction_id":"{tx}","fraud_score":{score},"model_version":"v9","inference_time":"2026-11-03T10:00:00"}}"#
    )
}

#[tokio::test]
async fn signals_are_validated_stored_and_listed() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let count_sql = "SELECT count(*) AS n FROM ml_fraud_signals";
    let before = table(&query(&mut client, count_sql).await.unwrap());

    let bad: [(&str, &str); 6] = [
        ("{\"fraud_signal_id\": ", "invalid JSON"),
        ("[]", "empty array"),
        (
            r#"{"fraud_signal_id":"FS-9","transaction_id":"TX-1","fraud_score":"0.3"}"#,
            "invalid type: string",
        ),
        (
            r#"{"fraud_signal_id":"FS-9","fraud_score":0.3}"#,
            "missing field `transaction_id`",
        ),
        (
            r#"{"fraud_signal_id":"FS-9","transaction_id":"TX-1","fraud_score":7}"#,
            "outside [0, 1]",
        ),
        ("\"just a string\"", "expected a JSON object"),
    ];
    for (body, reason) in bad {
        let (status, text) = http(&server, "POST", "/ml_signals", Some(body), None).await;
        assert_eq!(status, 400, "{body} -> {text}");
        assert!(text.contains(reason), "{body} -> {text}");
    }
    // One bad signal in an array refuses the whole request, naming it.
    let mixed = format!(
        "[{},{}]",
        signal("FS-10", "TX-1", "0.1"),
        signal("FS-11", "TX-2", "-1")
    );
    let (status, text) = http(&server, "POST", "/ml_signals", Some(&mixed), None).await;
    assert_eq!((status, text.contains("signal 1:")), (400, true), "{text}");
    assert_eq!(
        table(&query(&mut client, count_sql).await.unwrap()),
        before,
        "nothing stored"
    );

    // One object, then an array: 201 with the count, visible to SQL at once.
    let (status, text) = http(
        &server,
        "POST",
        "/ml_signals",
        Some(&signal("FS-20", "TX-1", "0.95")),
        None,
    )
    .await;
    assert_eq!((status, text.as_str()), (201, r#"{"count":1}"#));
    let array = format!(
        "[{},{}]",
        signal("FS-21", "TX-2", "0.2"),
        signal("FS-22", "TX-404", "0")
    );
    let (status, text) = http(&server, "POST", "/ml_signals", Some(&array), None).await;
    assert_eq!((status, text.as_str()), (201, r#"{"count":2}"#));
    let stored = table(
        &query(&mut client, "SELECT fraud_signal_id, transaction_id, fraud_score, model_version FROM ml_fraud_signals WHERE fraud_signal_id >= 'FS-20' ORDER BY 1")
            .await
            .unwrap(),
    );
    assert_eq!(
        stored,
        "+-----------------+----------------+-------------+---------------+\n\
         | fraud_signal_id | transaction_id | fraud_score | model_version |\n\
         +-----------------+----------------+-------------+---------------+\n\
         | FS-20           | TX-1           | 0.95        | v9            |\n\
         | FS-21           | TX-2           | 0.2         | v9            |\n\
         | FS-22           | TX-404         | 0.0         | v9            |\n\
         +-----------------+----------------+-------------+---------------+"
    );
    // On disk as Parquet files in the table's folder.
    let folder = server
        .warehouse
        .path()
        .join("batch_parquet_data/ml_fraud_signals.parquet");
    let parts = std::fs::read_dir(&folder).unwrap().count();
    assert!(parts >= 2, "{parts} files in {}", folder.display());

    // GET: the seed's JSON array, nulls explicit.
    let (status, text) = http(&server, "GET", "/ml_signals", None, None).await;
    assert_eq!(status, 200);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON array");
    let fs20 = listed
        .iter()
        .find(|s| s["fraud_signal_id"] == "FS-20")
        .expect("FS-20 listed");
    assert_eq!(fs20["transaction_id"], "TX-1");
    assert_eq!(fs20["fraud_score"], 0.95);
    assert_eq!(fs20["inference_time"], "2026-11-03T10:00:00");
    assert!(listed.iter().all(|s| s.as_object().unwrap().len() == 5));

    // Health and metrics.
    assert_eq!(http(&server, "GET", "/healthz", None, None).await.0, 200);
    let (status, metrics) = http(&server, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("recon_ml_signals_accepted_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE recon_query_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recon_query_duration_seconds_bucket{le=\"+Inf\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("recon_refresh_runs_total 0"), "{metrics}");
    assert_eq!(http(&server, "GET", "/nope", None, None).await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn signals_need_credentials_when_auth_is_on() {
    let server = TestServer::start(|c| {
        c.auth.user = Some("analyst".into());
        c.auth.password = Some("s3cret".into());
    })
    .await;
    let body = signal("FS-30", "TX-1", "0.5");
    let (status, text) = http(&server, "POST", "/ml_signals", Some(&body), None).await;
    assert_eq!(status, 401, "{text}");
    let wrong = "Basic YW5hbHlzdDp3cm9uZw=="; // analyst:wrong
    assert_eq!(
        http(&server, "GET", "/ml_signals", None, Some(wrong))
            .await
            .0,
        401
    );
    let right = "Basic YW5hbHlzdDpzM2NyZXQ="; // analyst:s3cret
    let (status, text) = http(&server, "POST", "/ml_signals", Some(&body), Some(right)).await;
    assert_eq!(status, 201, "{text}");
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(http(&server, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(http(&server, "GET", "/metrics", None, None).await.0, 200);
    server.stop().await;
}
