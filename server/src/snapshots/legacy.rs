//! The snapshot layout before Delta Lake, read only to upgrade a warehouse
//! written by an older recon: `output/<view>/_manifest.json` named the kept
//! snapshots, newest first, each a `snapshot-<run id>/` folder of Parquet
//! files; an incremental one was a layer of recomputed rows over the layers of
//! the snapshot before it, read as each layer's rows whose key no later layer
//! has. Until a view's first Delta commit its newest old snapshot is still
//! served; after it, the old folders and the manifest are removed.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Column, JoinType};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{TableProvider, ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Deserialize;
use tracing::info;

use crate::warehouse::Warehouse;

/// One snapshot as the manifest recorded it.
#[derive(Debug, Clone, Deserialize)]
pub struct LegacySnapshot {
    /// The refresh run's id.
    pub run_id: String,
    /// Its folder, relative to the warehouse root (ends in `/`).
    pub location: String,
    /// Its Parquet files, names inside `location`.
    pub files: Vec<String>,
    /// Rows written.
    pub rows: u64,
    /// Earlier layers it builds on, oldest first; empty for a full snapshot.
    #[serde(default)]
    pub base: Vec<Layer>,
}

impl LegacySnapshot {
    /// Every layer, oldest first.
    fn layers(&self) -> Vec<Layer> {
        let mut layers = self.base.clone();
        layers.push(Layer {
            location: self.location.clone(),
            files: self.files.clone(),
            rows: self.rows,
        });
        layers
    }

    /// A table over exactly this snapshot's files.
    pub fn table(
        &self,
        warehouse: &Warehouse,
        key: &[&str],
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        layered_table(warehouse, &self.layers(), key, schema)
    }
}

#[derive(Debug, Default, Deserialize)]
struct Manifest {
    snapshots: Vec<LegacySnapshot>,
}

fn manifest_location(view: &str) -> String {
    format!("output/{view}/_manifest.json")
}

/// The newest snapshot `view`'s old manifest names, if there is one.
pub async fn newest(warehouse: &Warehouse, view: &str) -> Result<Option<LegacySnapshot>> {
    let path = warehouse.path(&manifest_location(view))?;
    let manifest: Manifest = crate::warehouse::read_json_or_default(
        warehouse.store().as_ref(),
        &path,
        "invalid snapshot manifest",
    )
    .await?;
    Ok(manifest.snapshots.into_iter().next())
}

/// Removes the old layout of `view`: every `snapshot-*` folder and the manifest.
pub async fn remove(warehouse: &Warehouse, view: &str) -> Result<()> {
    let store = warehouse.store();
    let root = warehouse.path(&format!("output/{view}/"))?;
    let listing = store.list_with_delimiter(Some(&root)).await?;
    for dir in listing.common_prefixes {
        let Some(name) = dir.filename() else { continue };
        if !name.starts_with("snapshot-") {
            continue;
        }
        let objects: Vec<_> = store.list(Some(&dir)).try_collect().await?;
        for object in objects {
            store.delete(&object.location).await?;
        }
        // A local store leaves the emptied folder behind.
        if let Some(folder) = warehouse.local_path(&format!("output/{view}/{name}/")) {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
    let manifest = warehouse.path(&manifest_location(view))?;
    match store.delete(&manifest).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    info!(view, "snapshots of the layout before Delta Lake removed");
    Ok(())
}

/// One layer of a snapshot: Parquet files in one folder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
fn layered_table(
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
