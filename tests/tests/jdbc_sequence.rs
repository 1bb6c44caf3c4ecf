//! Replays, at the gRPC level, the calls the Arrow Flight SQL JDBC driver makes
//! when DBeaver connects, browses the tree and runs a SELECT: Basic handshake →
//! Bearer token on every later call, GetSqlInfo, GetCatalogs, GetDbSchemas with a
//! NULL catalog, GetTables without and with schemas, every SELECT as
//! CreatePreparedStatement → GetFlightInfo(PreparedStatementQuery) → DoGet →
//! ClosePreparedStatement, and the primary/foreign key calls.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use arrow::array::{Array, AsArray, ListArray, RecordBatch, StringArray, UnionArray};
use arrow::datatypes::UInt32Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTables, CommandPreparedStatementQuery, ProstMessageExt, SqlInfo,
};
use arrow_flight::{Action, FlightDescriptor, HandshakeRequest};
use base64::Engine;
use futures::TryStreamExt;
use prost::Message;
use recon_integration_tests::{TestServer, rows};
use tonic::transport::Channel;
use tonic::{Code, Request};

struct Jdbc {
    raw: FlightServiceClient<Channel>,
    token: String,
}

impl Jdbc {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        request
    }

    /// GetFlightInfo for a command, then DoGet of its one endpoint.
    async fn call(&mut self, cmd: impl ProstMessageExt) -> Vec<RecordBatch> {
        let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        let info = self
            .raw
            .get_flight_info(self.request(descriptor))
            .await
            .unwrap()
            .into_inner();
        let promised = info.clone().try_decode_schema().unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let stream = self
            .raw
            .do_get(self.request(ticket))
            .await
            .unwrap()
            .into_inner();
        let mut decoded = FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into));
        let mut batches = Vec::new();
        while let Some(batch) = decoded.try_next().await.unwrap() {
            batches.push(batch);
        }
        assert_eq!(
            **decoded.schema().unwrap(),
            promised,
            "DoGet schema = FlightInfo schema"
        );
        batches
    }

    async fn action(&mut self, kind: &str, body: impl ProstMessageExt) -> Option<bytes::Bytes> {
        let action = Action::new(kind, body.as_any().encode_to_vec());
        let mut results = self
            .raw
            .do_action(self.request(action))
            .await
            .unwrap()
            .into_inner();
        results.message().await.unwrap().map(|r| r.body)
    }

    /// What JDBC does for every SELECT.
    async fn select(&mut self, sql: &str) -> Vec<RecordBatch> {
        let request = ActionCreatePreparedStatementRequest {
            query: sql.into(),
            transaction_id: None,
        };
        let body = self
            .action("CreatePreparedStatement", request)
            .await
            .unwrap();
        let created: ActionCreatePreparedStatementResult =
            Any::decode(body).unwrap().unpack().unwrap().unwrap();
        let schema =
            arrow::ipc::convert::try_schema_from_ipc_buffer(&created.dataset_schema).unwrap();
        assert!(
            !schema.fields().is_empty(),
            "a SELECT's dataset schema is never empty"
        );
        let batches = self
            .call(CommandPreparedStatementQuery {
                prepared_statement_handle: created.prepared_statement_handle.clone(),
            })
            .await;
        let close = ActionClosePreparedStatementRequest {
            prepared_statement_handle: created.prepared_statement_handle,
        };
        self.action("ClosePreparedStatement", close).await;
        batches
    }
}

fn keywords(batch: &RecordBatch) -> Vec<String> {
    let names = batch.column(0).as_primitive::<UInt32Type>();
    let row = (0..names.len())
        .find(|&i| names.value(i) == SqlInfo::SqlKeywords as u32)
        .expect("SqlKeywords present");
    let union = batch
        .column(1)
        .as_any()
        .downcast_ref::<UnionArray>()
        .unwrap();
    let value = union.value(row);
    let list = value.as_any().downcast_ref::<ListArray>().unwrap();
    let words = list.value(0);
    let words = words.as_any().downcast_ref::<StringArray>().unwrap();
    words.iter().flatten().map(str::to_owned).collect()
}

#[tokio::test]
async fn dbeaver_session_through_the_jdbc_driver_calls() {
    let server = TestServer::start(|c| {
        c.auth.user = Some("dbeaver".into());
        c.auth.password = Some("secret".into());
    })
    .await;
    let mut raw = server.flight_client().await;

    // Handshake: Basic credentials in the header, Bearer token back.
    let mut hello = Request::new(futures::stream::iter([HandshakeRequest::default()]));
    let basic = base64::engine::general_purpose::STANDARD.encode("dbeaver:secret");
    hello
        .metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    let response = raw.handshake(hello).await.unwrap();
    let bearer = response
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    let token = bearer.strip_prefix("Bearer ").unwrap().to_owned();
    let mut jdbc = Jdbc { raw, token };

    // Without the token nothing but the handshake works.
    let denied = jdbc
        .raw
        .get_flight_info(FlightDescriptor::new_cmd(
            CommandGetCatalogs {}.as_any().encode_to_vec(),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);

    let info = jdbc.call(CommandGetSqlInfo { info: vec![] }).await;
    let words = keywords(&info[0]);
    assert!(
        words.iter().any(|w| w == "SELECT"),
        "{} keywords",
        words.len()
    );

    let catalogs = jdbc.call(CommandGetCatalogs {}).await;
    assert_eq!(rows(&catalogs), 1);
    let schemas = jdbc
        .call(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await;
    assert!(rows(&schemas) >= 2);
    for include_schema in [false, true] {
        let tables = jdbc
            .call(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: None,
                table_name_filter_pattern: None,
                table_types: vec![],
                include_schema,
            })
            .await;
        assert!(rows(&tables) >= 4, "the batch tables are listed");
        assert_eq!(
            tables[0].column_by_name("table_schema").is_some(),
            include_schema
        );
    }

    let statements = jdbc.select("SELECT * FROM aggregator_statements").await;
    assert_eq!(rows(&statements), 4);
    let masked = jdbc
        .select("SELECT mask_sensitive(merchant_name) AS m FROM merchants ORDER BY 1")
        .await;
    assert_eq!(rows(&masked), 3);

    let pk = jdbc
        .call(CommandGetPrimaryKeys {
            catalog: Some("recon".into()),
            db_schema: Some("public".into()),
            table: "merchants".into(),
        })
        .await;
    assert_eq!(rows(&pk), 0);
    let imported = jdbc
        .call(CommandGetImportedKeys {
            catalog: Some("recon".into()),
            db_schema: Some("public".into()),
            table: "aggregator_statements".into(),
        })
        .await;
    assert_eq!(rows(&imported), 0);
    let exported = jdbc
        .call(CommandGetExportedKeys {
            catalog: Some("recon".into()),
            db_schema: Some("public".into()),
            table: "merchants".into(),
        })
        .await;
    assert_eq!(rows(&exported), 0);
    server.stop().await;
}
