//! Time travel from SQL: `index_at('<view>', <version>)` reads a kept version
//! of a view's table, `index_at('<view>', TIMESTAMP '2026-11-30 23:59:59Z')`
//! (or the same as a string) the version that was current at that moment —
//! "what did the final index say at month end". Versions older than the
//! newest `snapshot_retention` refreshes are vacuumed; asking for one is an
//! error that names the readable range.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue, plan_datafusion_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Expr};
use datafusion::physical_plan::ExecutionPlan;

use super::delta::IndexTable;
use super::{Materializer, Snapshot};

/// The function's SQL name.
pub const FUNCTION: &str = "index_at";

const USAGE: &str = "index_at('<view>', <version> | <timestamp>)";

/// The table function.
#[derive(Debug)]
pub struct IndexAt {
    materializer: Weak<Materializer>,
}

impl IndexAt {
    pub(super) fn new(materializer: Weak<Materializer>) -> Self {
        Self { materializer }
    }
}

/// An argument, evaluated as a constant.
fn constant(expr: &Expr, session: &dyn Session) -> Result<ScalarValue> {
    let empty = DFSchema::empty();
    let physical = session
        .create_physical_expr(expr.clone(), &empty)
        .map_err(|e| plan_datafusion_err!("{USAGE}: {e}"))?;
    match physical.evaluate(&RecordBatch::new_empty(Arc::new(Schema::empty())))? {
        ColumnarValue::Scalar(value) => Ok(value),
        ColumnarValue::Array(_) => plan_err!("{USAGE}: the arguments must be constants"),
    }
}

/// Milliseconds since the epoch of a timestamp or a string naming one.
fn timestamp_ms(value: &ScalarValue) -> Result<i64> {
    let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let array = value.to_array()?;
    let cast = datafusion::arrow::compute::cast(&array, &utc).map_err(|e| {
        plan_datafusion_err!("{USAGE}: {value} is not a version or a timestamp: {e}")
    })?;
    let cast = cast.as_primitive::<TimestampMillisecondType>();
    if cast.is_null(0) {
        return plan_err!("{USAGE}: the version or timestamp is NULL");
    }
    Ok(cast.value(0))
}

/// The version of `history` (newest first) current at `at_ms`.
fn version_at(view: &str, history: &[Snapshot], at_ms: i64) -> Result<u64> {
    history
        .iter()
        .filter(|s| s.kind != "maintenance")
        .find(|s| s.created_at_ms <= at_ms)
        .and_then(|s| s.version)
        .ok_or_else(|| {
            let at = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
            plan_datafusion_err!("{view} has no kept version from {at} or before")
        })
}

impl TableFunctionImpl for IndexAt {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [view, at] = args.exprs() else {
            return plan_err!("{USAGE} takes two arguments");
        };
        let view = match constant(view, args.session())? {
            ScalarValue::Utf8(Some(v))
            | ScalarValue::Utf8View(Some(v))
            | ScalarValue::LargeUtf8(Some(v)) => v,
            other => return plan_err!("{USAGE}: the view must be a string, not {other}"),
        };
        let Some(materializer) = self.materializer.upgrade() else {
            return plan_err!("the server is stopping");
        };
        let Some((history, oldest, index, schema)) = materializer.versions(&view) else {
            return plan_err!(
                "{USAGE}: unknown index {view:?}; expected one of {}",
                super::VIEWS.join(", ")
            );
        };
        let at = constant(at, args.session())?;
        let version = match at {
            ScalarValue::Int8(Some(_))
            | ScalarValue::Int16(Some(_))
            | ScalarValue::Int32(Some(_))
            | ScalarValue::Int64(Some(_))
            | ScalarValue::UInt8(Some(_))
            | ScalarValue::UInt16(Some(_))
            | ScalarValue::UInt32(Some(_))
            | ScalarValue::UInt64(Some(_)) => {
                let v = at.cast_to(&DataType::Int64)?;
                let ScalarValue::Int64(Some(v)) = v else {
                    return plan_err!("{USAGE}: bad version {at}");
                };
                u64::try_from(v).map_err(|_| plan_datafusion_err!("{USAGE}: bad version {v}"))?
            }
            other => version_at(&view, &history, timestamp_ms(&other)?)?,
        };
        let newest = history.iter().filter_map(|s| s.version).max();
        let known = history.iter().any(|s| s.version == Some(version));
        match newest {
            None => return plan_err!("{view} has no snapshot yet: run REFRESH INDEX {view}"),
            Some(newest) if !known || version < oldest => {
                return plan_err!(
                    "version {version} of {view} is not kept: readable versions are {oldest} to {newest} (see index_snapshots)"
                );
            }
            Some(_) => {}
        }
        Ok(Arc::new(PastVersion {
            index,
            version,
            schema,
        }))
    }
}

/// One kept version of a view's table, loaded when the query runs.
#[derive(Debug)]
struct PastVersion {
    index: IndexTable,
    version: u64,
    /// The current version's schema; the version read must have the same.
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for PastVersion {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.index.load_version(self.version).await?;
        let provider = IndexTable::provider(&table, state).await?;
        if provider.schema().fields() != self.schema.fields() {
            return plan_err!(
                "version {} has other columns than the current version (the view's SQL changed since)",
                self.version
            );
        }
        provider.scan(state, projection, filters, limit).await
    }
}
