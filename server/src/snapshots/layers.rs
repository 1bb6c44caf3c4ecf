//! Layered snapshots. A full refresh writes one layer: the whole view. An
//! incremental refresh writes a new layer holding the recomputed rows of the
//! keys (transaction ids) that changed since the previous snapshot, and names
//! the previous snapshot's layers as its base. Reading a layered snapshot
//! takes, from each layer, the rows whose key no later layer has — so a key's
//! rows always come from the newest layer that recomputed it. The manifest
//! lists every layer, so a snapshot stays a set of plain Parquet files.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Column, JoinType};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{TableProvider, ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use serde::{Deserialize, Serialize};

use crate::warehouse::Warehouse;

/// One layer of a snapshot: Parquet files in one folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Its folder, relative to the warehouse root (ends in `/`).
    pub location: String,
    /// Its Parquet files, names inside `location`.
    pub files: Vec<String>,
    /// Rows in the files.
    pub rows: u64,
}

/// A table over exactly the files of one layer.
fn listing(
    warehouse: &Warehouse,
    layer: &Layer,
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    if layer.files.is_empty() {
        return Ok(Arc::new(EmptyTable::new(schema)));
    }
    let urls = layer
        .files
        .iter()
        .map(|f| ListingTableUrl::parse(warehouse.url(&format!("{}{f}", layer.location))?))
        .collect::<Result<Vec<_>>>()?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(crate::tables::parquet_listing_options())
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The table a snapshot made of `layers` (oldest first) reads as: each
/// layer's rows whose `key` columns no later layer has.
pub fn layered_table(
    warehouse: &Warehouse,
    layers: &[Layer],
    key: &[&str],
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    let layers: Vec<&Layer> = layers.iter().filter(|l| !l.files.is_empty()).collect();
    match layers.as_slice() {
        [] => Ok(Arc::new(EmptyTable::new(schema))),
        [only] => listing(warehouse, only, schema),
        _ => {
            let mut plans = Vec::with_capacity(layers.len());
            for (i, layer) in layers.iter().enumerate() {
                let name = format!("layer{i}");
                let mut plan = scan(&name, listing(warehouse, layer, Arc::clone(&schema))?)?;
                let later = &layers[i + 1..];
                if !later.is_empty() {
                    let keys = later_keys(warehouse, later, key, &schema)?;
                    let left = key.iter().map(|k| Column::new(Some(name.as_str()), *k));
                    let right = key.iter().map(|k| Column::new(Some("later"), *k));
                    plan = plan.join(
                        keys.build()?,
                        JoinType::LeftAnti,
                        (left.collect::<Vec<_>>(), right.collect::<Vec<_>>()),
                        None,
                    )?;
                }
                plans.push(plan);
            }
            let plan = union_all(plans)?.build()?;
            Ok(Arc::new(ViewTable::new(plan, None)))
        }
    }
}

fn scan(name: &str, table: Arc<dyn TableProvider>) -> Result<LogicalPlanBuilder> {
    LogicalPlanBuilder::scan(name, provider_as_source(table), None)
}

/// `plans` one after the other (UNION ALL); at least one plan.
fn union_all(plans: Vec<LogicalPlanBuilder>) -> Result<LogicalPlanBuilder> {
    let mut plans = plans.into_iter();
    let first = plans
        .next()
        .ok_or_else(|| DataFusionError::Internal("a union of no plans".into()))?;
    plans.try_fold(first, |union, plan| union.union(plan.build()?))
}

/// The key columns of every layer in `later`, as one plan aliased `later`.
fn later_keys(
    warehouse: &Warehouse,
    later: &[&Layer],
    key: &[&str],
    schema: &SchemaRef,
) -> Result<LogicalPlanBuilder> {
    let mut plans = Vec::with_capacity(later.len());
    for (j, layer) in later.iter().enumerate() {
        let name = format!("keys{j}");
        let columns = key
            .iter()
            .map(|k| Expr::Column(Column::new(Some(name.as_str()), *k)));
        plans.push(scan(&name, listing(warehouse, layer, Arc::clone(schema))?)?.project(columns)?);
    }
    union_all(plans)?.alias("later")
}
