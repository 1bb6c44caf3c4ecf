//! Kafka ingest (DESIGN §5): the topic's JSON events become the live tables
//! `transactions` and `transactions_rejects`, and the view `transactions_latest`.
//!
//! - [`decode`]: records → Arrow, bad records → rejects with the reason.
//! - [`live`]: the in-memory tables queries read.
//! - [`latest`]: `transactions_latest`, maintained as events arrive.
//! - [`consumer`]: the rdkafka consumer (manual assignment of every partition
//!   with periodic discovery of new ones, or a consumer group shared by several
//!   servers; small batches for sub-second freshness, flushes, resume after the
//!   checkpoint).
//! - [`group`]: how far the live tables reach per partition, and the consumer
//!   group's rebalance callback.
//! - [`segments`]: Parquet segments + checkpoint, committed exactly once.
//! - [`status`]: the `ingest_status` table.

pub mod consumer;
pub mod decode;
pub mod group;
pub mod latest;
pub mod live;
pub mod segments;
pub mod status;

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::prelude::SessionContext;

use self::decode::{REJECTS_SCHEMA, TRANSACTIONS_SCHEMA};
use self::latest::LatestTable;
use self::live::LiveTable;
use self::segments::Loaded;
use self::status::IngestStatus;

/// The ingest tables of one server.
#[derive(Debug, Clone)]
pub struct IngestTables {
    /// Every decoded event.
    pub transactions: Arc<LiveTable>,
    /// Every record that could not be decoded.
    pub rejects: Arc<LiveTable>,
    /// The latest event of each transaction.
    pub latest: Arc<LatestTable>,
    /// Where ingest stands, per partition.
    pub status: IngestStatus,
}

impl IngestTables {
    /// Adds segments read back from the warehouse (persisted already) to
    /// `transactions` and `transactions_rejects`; returns the events added.
    pub fn append_persisted(&self, loaded: Loaded) -> usize {
        let rows = loaded.transactions.iter().map(|b| b.num_rows()).sum();
        self.transactions.append_flushed(loaded.transactions);
        self.rejects.append_flushed(loaded.rejects);
        rows
    }
}

/// Registers `transactions`, `transactions_rejects` and `transactions_latest`
/// (empty until ingest runs).
pub async fn register(ctx: &SessionContext) -> Result<IngestTables> {
    let transactions = Arc::new(LiveTable::new(Arc::clone(&TRANSACTIONS_SCHEMA)));
    let tables = IngestTables {
        latest: Arc::new(LatestTable::new(Arc::clone(&transactions))),
        transactions,
        rejects: Arc::new(LiveTable::new(Arc::clone(&REJECTS_SCHEMA))),
        status: IngestStatus::default(),
    };
    ctx.register_table(
        "ingest_status",
        Arc::new(status::table(tables.status.clone())),
    )?;
    ctx.register_table("transactions", Arc::clone(&tables.transactions) as _)?;
    ctx.register_table("transactions_rejects", Arc::clone(&tables.rejects) as _)?;
    ctx.register_table("transactions_latest", Arc::clone(&tables.latest) as _)?;
    Ok(tables)
}
