//! # recon-client
//!
//! The Flight SQL client library behind `recon-cli` (DESIGN §8): connect (with
//! optional TLS and Basic login), run a query and collect its batches, refresh
//! an index snapshot, and print batches as a table, CSV or JSON. The REPL,
//! `generate` and `status` are not built yet.

use std::time::Duration;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

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
    pub async fn connect(&self) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
        let scheme = if self.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}:{}", self.host, self.port);
        let mut endpoint =
            Endpoint::from_shared(url.clone())?.connect_timeout(Duration::from_secs(5));
        if self.tls {
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

/// Runs `sql` and collects every batch of its result.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> anyhow::Result<Vec<RecordBatch>> {
    let info = client
        .execute(sql.to_owned(), None)
        .await
        .map_err(server_error)?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .context("the server sent an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await.map_err(server_error)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(server_error)?);
    }
    Ok(batches)
}

/// The server's own message, without the client library's wrapping.
fn server_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Writes `batches` to `out` in `format`.
pub fn write(
    batches: &[RecordBatch],
    format: Format,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    match format {
        Format::Table => writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(batches)?
        )?,
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
        }
    }
    Ok(())
}
