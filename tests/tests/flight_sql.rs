//! The Flight SQL surface through arrow-flight's Rust clients against a real
//! server on loopback: tables, functions, prepared statements, catalog calls,
//! errors and their codes, auth, limits, cancellation.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetDbSchemas, CommandGetTables, CommandPreparedStatementQuery, CommandStatementQuery,
    ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightInfo, Ticket,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use recon_integration_tests::{
    TestServer, fetch, query, rows, sample_signals, table, write_parquet,
};
use tonic::Code;

fn descriptor(cmd: impl ProstMessageExt) -> FlightDescriptor {
    FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec())
}

fn statement(sql: &str) -> CommandStatementQuery {
    CommandStatementQuery {
        query: sql.to_owned(),
        transaction_id: None,
    }
}

#[tokio::test]
async fn batch_tables_read_every_layout_and_pick_up_new_files() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let counts = query(
        &mut client,
        "SELECT (SELECT count(*) FROM aggregator_statements) AS s, \
                (SELECT count(*) FROM merchants) AS m, \
                (SELECT count(*) FROM policy_data WHERE merchant_id IS NULL) AS p, \
                (SELECT count(*) FROM ml_fraud_signals) AS f",
    )
    .await
    .unwrap();
    assert_eq!(
        table(&counts),
        "+---+---+---+---+\n| s | m | p | f |\n+---+---+---+---+\n| 4 | 3 | 2 | 0 |\n+---+---+---+---+"
    );
    // The missing table fills in when its file arrives, without a restart.
    write_parquet(
        &server
            .warehouse
            .path()
            .join("batch_parquet_data/ml_fraud_signals.parquet"),
        &sample_signals(),
    );
    let signals = query(&mut client, "SELECT * FROM ml_fraud_signals")
        .await
        .unwrap();
    assert_eq!(rows(&signals), 2);
    server.stop().await;
}

/// Whether `table` is currently read from its in-memory copy.
async fn served_from_memory(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    table_name: &str,
) -> bool {
    let plan = query(client, &format!("EXPLAIN SELECT * FROM {table_name}"))
        .await
        .unwrap();
    table(&plan).contains("partition_sizes=") // how EXPLAIN shows an in-memory scan
}

async fn wait_for_memory(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    table_name: &str,
) {
    for _ in 0..100 {
        if served_from_memory(client, table_name).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{table_name} was not cached within 10 s");
}

#[tokio::test]
async fn cached_tables_follow_file_changes() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let count = "SELECT count(*) AS n FROM merchants";
    wait_for_memory(&mut client, "merchants").await;
    assert!(table(&query(&mut client, count).await.unwrap()).contains("| 3 |"));
    // A new part file: the very next query reads Parquet and sees it...
    write_parquet(
        &server
            .warehouse
            .path()
            .join("batch_parquet_data/merchants.parquet/part-00002-b.snappy.parquet"),
        &recon_integration_tests::batch(vec![(
            "merchant_id",
            recon_integration_tests::strings(&[Some("MCH-D004")]),
        )]),
    );
    assert!(!served_from_memory(&mut client, "merchants").await);
    assert!(table(&query(&mut client, count).await.unwrap()).contains("| 4 |"));
    // ...and the copy is rebuilt from the new file set.
    wait_for_memory(&mut client, "merchants").await;
    assert!(table(&query(&mut client, count).await.unwrap()).contains("| 4 |"));
    server.stop().await;
}

#[tokio::test]
async fn no_cache_when_its_budget_is_zero() {
    let server = TestServer::start(|c| c.tables.cache_mb = 0).await;
    let mut client = server.sql_client().await;
    for _ in 0..5 {
        assert!(!served_from_memory(&mut client, "merchants").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn one_query_calls_all_five_functions() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let batches = query(
        &mut client,
        "SELECT s.statement_id, \
                calc_discrepancy(s.fee_charged, s.amount_posted) AS discrepancy, \
                flag_compliance(CASE WHEN s.statement_id = 'STMT-1' THEN 0.9 END, p.policy_type) AS compliance, \
                mask_sensitive(s.transaction_id) AS masked, \
                derive_status(NULL, CASE WHEN s.transaction_id IS NULL THEN 'UNMATCHED' ELSE 'MATCHED' END) AS status, \
                kpi_calculation(m.merchant_id, s.amount_posted) AS kpi \
         FROM aggregator_statements s \
         LEFT JOIN policy_data p ON p.policy_id = 'POL-1' \
         LEFT JOIN merchants m ON m.merchant_id = 'MCH-A001' \
         ORDER BY s.statement_id",
    )
    .await
    .unwrap();
    let expected = "\
+--------------+-------------+--------------+--------+-------------+-------+
| statement_id | discrepancy | compliance   | masked | status      | kpi   |
+--------------+-------------+--------------+--------+-------------+-------+
| STMT-1       | 98.5        | HIGH_RISK    | T-*    | MATCHED     | 110.0 |
| STMT-2       | 2.62        | REQUIRES_KYC | T-*    | MATCHED     | 2.94  |
| STMT-3       | 0.0         | REQUIRES_KYC | T-*    | MATCHED     | 0.0   |
| STMT-4       | 0.0         | REQUIRES_KYC |        | DISCREPANCY | -0.0  |
+--------------+-------------+--------------+--------+-------------+-------+";
    assert_eq!(table(&batches), expected);
    server.stop().await;
}

#[tokio::test]
async fn prepared_statement_binds_question_mark_parameters() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let mut prepared = client
        .prepare(
            "SELECT statement_id FROM aggregator_statements WHERE amount_posted > ? ORDER BY 1"
                .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.dataset_schema().unwrap().fields().len(), 1);
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    for (threshold, expected) in [(50.0, 1), (0.0, 2), (-1.0, 3)] {
        let params = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("p", DataType::Float64, true)])),
            vec![Arc::new(Float64Array::from(vec![threshold]))],
        )
        .unwrap();
        prepared.set_parameters(params).unwrap();
        let info = prepared.execute().await.unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        assert_eq!(rows(&batches), expected, "amount_posted > {threshold}");
    }
    prepared.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn doget_schema_is_the_flightinfo_schema() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    for sql in [
        "SELECT * FROM merchants",
        "SELECT count(*) AS n, max(amount_posted) FROM aggregator_statements",
        "SELECT arrow_cast('x', 'Dictionary(Int32, Utf8)') AS d, now() AS t",
        "SELECT * FROM ml_fraud_signals",
    ] {
        let info = client.execute(sql.into(), None).await.unwrap();
        let promised = info.clone().try_decode_schema().unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let mut stream = client.do_get(ticket).await.unwrap();
        while stream.next().await.transpose().unwrap().is_some() {}
        let got = stream.schema().expect("schema received").clone();
        assert_eq!(*got, promised, "{sql}");
    }
    server.stop().await;
}

#[tokio::test]
async fn create_view_is_an_update_and_then_queryable() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let n = client
        .execute_update(
            "CREATE VIEW big_statements AS SELECT * FROM aggregator_statements WHERE amount_posted > 50"
                .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    let batches = query(&mut client, "SELECT statement_id FROM big_statements")
        .await
        .unwrap();
    assert_eq!(rows(&batches), 1);
    server.stop().await;
}

#[tokio::test]
async fn prepared_update_creates_a_view() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let mut prepared = client
        .prepare(
            "CREATE VIEW kyc AS SELECT * FROM policy_data WHERE policy_type = 'KYC'".into(),
            None,
        )
        .await
        .unwrap();
    assert!(prepared.dataset_schema().unwrap().fields().is_empty());
    assert_eq!(prepared.execute_update().await.unwrap(), 0);
    prepared.close().await.unwrap();
    let batches = query(&mut client, "SELECT policy_id FROM kyc")
        .await
        .unwrap();
    assert_eq!(
        table(&batches),
        "+-----------+\n| policy_id |\n+-----------+\n| POL-1     |\n+-----------+"
    );
    // A query is not an update, and an update is not a query.
    let err = client
        .execute_update("SELECT 1".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("returns rows"), "{err}");
    let err = client
        .execute("DROP VIEW kyc".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("update"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn catalog_calls_describe_the_tables() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let catalogs = client.get_catalogs().await.unwrap();
    assert!(table(&fetch(&mut client, catalogs).await.unwrap()).contains("recon"));
    let schemas = client
        .get_db_schemas(CommandGetDbSchemas::default())
        .await
        .unwrap();
    let schemas = table(&fetch(&mut client, schemas).await.unwrap());
    assert!(
        schemas.contains("public") && schemas.contains("information_schema"),
        "{schemas}"
    );
    let tables = client
        .get_tables(CommandGetTables {
            catalog: Some("recon".into()),
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("merchant_".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut client, tables).await.unwrap();
    assert_eq!(rows(&batches), 1);
    let bytes = batches[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap()
        .value(0)
        .to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&bytes).unwrap();
    let field = schema.field_with_name("merchant_name").unwrap();
    assert_eq!(field.metadata()["ARROW:FLIGHT:SQL:TYPE_NAME"], "VARCHAR");
    assert_eq!(field.metadata()["ARROW:FLIGHT:SQL:TABLE_NAME"], "merchants");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_code_and_the_server_keeps_serving() {
    let server = TestServer::start(|_| {}).await;
    let mut raw = server.flight_client().await;

    let err = raw
        .get_flight_info(descriptor(statement("SELEC oops")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("SELEC"), "{err}");

    let err = raw
        .get_flight_info(descriptor(statement("SELECT * FROM no_such_table")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("no_such_table"), "{err}");

    let err = raw
        .do_get(Ticket::new(b"\xff\xfe not a ticket".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let forged = TicketStatementQuery {
        statement_handle: b"{not json".to_vec().into(),
    };
    let err = raw
        .do_get(Ticket::new(forged.as_any().encode_to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let unknown = Any {
        type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandNoSuchThing".into(),
        value: vec![1, 2, 3].into(),
    };
    let err = raw
        .get_flight_info(FlightDescriptor::new_cmd(unknown.encode_to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");

    // Oversized parameters for a prepared statement.
    let handle = create_prepared(&mut raw, "SELECT ? AS x")
        .await
        .prepared_statement_handle;
    let big = "x".repeat(3 << 20);
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("p", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec![big.as_str()]))],
    )
    .unwrap();
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let data: Vec<_> = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor(cmd)))
        .build(futures::stream::iter([Ok(params)]))
        .try_collect()
        .await
        .unwrap();
    let err = match raw.do_put(futures::stream::iter(data)).await {
        Ok(response) => response.into_inner().message().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("too large"), "{err}");

    // Still serving.
    let mut client = server.sql_client().await;
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    server.stop().await;
}

async fn create_prepared(
    raw: &mut arrow_flight::flight_service_client::FlightServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> ActionCreatePreparedStatementResult {
    let request = ActionCreatePreparedStatementRequest {
        query: sql.into(),
        transaction_id: None,
    };
    let action = Action::new("CreatePreparedStatement", request.as_any().encode_to_vec());
    let mut results = raw.do_action(action).await.unwrap().into_inner();
    let body = results.message().await.unwrap().unwrap().body;
    Any::decode(body).unwrap().unpack().unwrap().unwrap()
}

#[tokio::test]
async fn auth_when_configured() {
    let server = TestServer::start(|c| {
        c.auth.user = Some("analyst".into());
        c.auth.password = Some("pa55".into());
    })
    .await;
    let mut client = server.sql_client().await;
    let err = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(
        err.to_string().contains("authentication credentials"),
        "{err}"
    );
    let err = client.handshake("analyst", "wrong").await.unwrap_err();
    assert!(
        err.to_string().contains("authentication credentials"),
        "{err}"
    );
    client.handshake("analyst", "pa55").await.unwrap();
    assert!(client.token().is_some());
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    client.set_token("forged".into());
    let err = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(
        err.to_string().contains("authentication credentials"),
        "{err}"
    );
    server.stop().await;
}

const ENDLESS: &str = "SELECT value FROM generate_series(1, 100000000000)";

#[tokio::test]
async fn cancel_flight_info_stops_a_running_query() {
    let server = TestServer::start(|_| {}).await;
    let mut client = server.sql_client().await;
    let info: FlightInfo = client.execute(ENDLESS.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let request = CancelFlightInfoRequest::new(info);
    let action = Action::new("CancelFlightInfo", request.encode_to_vec());
    let mut raw = server.flight_client().await;
    let mut results = raw.do_action(action).await.unwrap().into_inner();
    let result =
        CancelFlightInfoResult::decode(results.message().await.unwrap().unwrap().body).unwrap();
    assert_eq!(result.status, CancelStatus::Cancelled as i32);
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e.to_string()),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ends soon after the cancel");
    assert!(outcome.unwrap_or_default().contains("cancelled"));
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_stream_frees_its_query_slot() {
    let server = TestServer::start(|c| c.limits.max_concurrent_queries = 1).await;
    let mut client = server.sql_client().await;
    let info = client.execute(ENDLESS.into(), None).await.unwrap();
    let mut stream = client
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    // The slot is taken while the stream is open...
    let err = query(&mut client, "SELECT 1").await.unwrap_err();
    assert!(err.to_string().contains("too many queries"), "{err}");
    drop(stream);
    // ...and free again once the client went away and the query stopped.
    let mut freed = false;
    for _ in 0..50 {
        if query(&mut client, "SELECT 1").await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the dropped query still holds its slot");
    server.stop().await;
}

#[tokio::test]
async fn queries_time_out() {
    let server = TestServer::start(|c| c.limits.query_timeout_secs = 1).await;
    let mut client = server.sql_client().await;
    let err = query(
        &mut client,
        "SELECT count(*) FROM generate_series(1, 100000000000)",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    server.stop().await;
}
