//! In-memory, append-only tables fed by ingest (`transactions`,
//! `transactions_rejects`): a query sees every batch appended before it was planned.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// How many partitions a scan of a live table is split into.
const SCAN_PARTITIONS: usize = 2;

/// An append-only table held in memory.
#[derive(Debug)]
pub struct LiveTable {
    schema: SchemaRef,
    batches: RwLock<Vec<RecordBatch>>,
}

impl LiveTable {
    /// An empty table with `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: RwLock::default(),
        }
    }

    /// Appends a batch (ignored when empty); visible to the next query.
    pub fn append(&self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(batch);
        }
    }

    /// Rows held.
    pub fn num_rows(&self) -> usize {
        self.snapshot().iter().map(RecordBatch::num_rows).sum()
    }

    /// The batches appended so far.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.batches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut partitions = vec![Vec::new(); SCAN_PARTITIONS];
        for (i, batch) in self.snapshot().into_iter().enumerate() {
            partitions[i % SCAN_PARTITIONS].push(batch);
        }
        Ok(MemorySourceConfig::try_new_exec(
            &partitions,
            self.schema(),
            projection.cloned(),
        )?)
    }
}
