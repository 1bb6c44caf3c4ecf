//! # recon-client
//!
//! The Flight SQL client library behind `recon-cli` (DESIGN §8): connect (with
//! optional TLS and Basic login), run a query and collect its result, append
//! Arrow batches to a batch table (bulk ingest), and the pieces of the command
//! line — result printing ([`output`]), the interactive shell ([`repl`]), the
//! server overview ([`status`]) and the seeded data generator ([`generate`]).

pub mod generate;
pub mod output;
pub mod repl;
pub mod status;

use std::time::Duration;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use futures::TryStreamExt;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

pub use output::{Format, write};

/// A logged-in Flight SQL client.
pub type Client = FlightSqlServiceClient<Channel>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Server host name or address.
    pub host: String,
    /// Flight SQL port.
    pub port: u16,
    /// User for Basic login (with `password`); none = no login.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// Use TLS (system roots).
    pub tls: bool,
}

impl Connection {
    /// A logged-in Flight SQL client.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let scheme = if self.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}:{}", self.host, self.port);
        let mut endpoint =
            Endpoint::from_shared(url.clone())?.connect_timeout(Duration::from_secs(5));
        if self.tls {
            // Built together with the server, rustls has both ring and
            // aws-lc-rs (delta-rs brings the latter): name one, once.
            let _ = rustls::crypto::ring::default_provider().install_default();
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_enabled_roots())?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to the recon server at {url}"))?;
        let mut client = FlightSqlServiceClient::new(channel);
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            client
                .handshake(user, password)
                .await
                .context("login failed")?;
        }
        Ok(client)
    }
}

/// A query's result: its schema and every batch.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The result's columns (also when there are no rows).
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs `sql` and collects its result.
pub async fn query(client: &mut Client, sql: &str) -> anyhow::Result<QueryResult> {
    let info = client
        .execute(sql.to_owned(), None)
        .await
        .map_err(server_error)?;
    let schema = SchemaRef::new(info.clone().try_decode_schema().map_err(server_error)?);
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .context("the server sent an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await.map_err(server_error)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(server_error)?);
    }
    Ok(QueryResult { schema, batches })
}

/// Appends `batches` to the batch table `table` (Flight SQL bulk ingest); the
/// server has them on disk when this returns. Returns the rows appended.
pub async fn append(
    client: &mut Client,
    table: &str,
    batches: Vec<RecordBatch>,
) -> anyhow::Result<i64> {
    let command = CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Fail.into(),
            if_exists: TableExistsOption::Append.into(),
        }),
        table: table.to_owned(),
        ..Default::default()
    };
    let stream = futures::stream::iter(batches.into_iter().map(Ok));
    client
        .execute_ingest(command, stream)
        .await
        .map_err(server_error)
        .with_context(|| format!("appending to {table}"))
}

/// The server's own message, without the client library's wrapping.
fn server_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
