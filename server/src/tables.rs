//! The batch tables of DESIGN §2: their contract schemas and their registration
//! as DataFusion listing tables over `<warehouse>/batch_parquet_data/<table>.parquet`.
//!
//! Each location may be one Parquet file or a folder of part files (what Spark
//! writes). Files are listed on every query, so a table that is missing at start
//! is simply empty and fills in when files arrive — no restart. Every file is read
//! through the contract schema: columns a file lacks (e.g. `policy_data.merchant_id`
//! in seed files) read as NULL, compatible types (Float32 amounts) are cast.
//! Decoded data is kept in memory while the files stay the same
//! ([`crate::table_cache`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::error::Result;
use datafusion::prelude::SessionContext;

use datafusion::datasource::TableProvider;

use crate::table_cache::{CacheBudget, CachedTable};
use crate::warehouse::Warehouse;

/// Folder of the batch tables under the warehouse root.
pub const BATCH_DIR: &str = "batch_parquet_data";

/// The batch tables, in the order they are listed.
pub const BATCH_TABLES: [&str; 4] = [
    "aggregator_statements",
    "merchants",
    "policy_data",
    "ml_fraud_signals",
];

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn float64(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

/// The contract schema of a batch table (the seed's columns, DESIGN §2), or
/// `None` for a name that is not a batch table.
pub fn batch_schema(table: &str) -> Option<SchemaRef> {
    let fields = match table {
        "aggregator_statements" => vec![
            utf8("statement_id"),
            utf8("transaction_id"),
            utf8("posting_date"),
            float64("amount_posted"),
            float64("fee_charged"),
        ],
        "merchants" => vec![
            utf8("merchant_id"),
            utf8("merchant_name"),
            utf8("risk_level"),
            utf8("onboarding_date"),
        ],
        "policy_data" => vec![
            utf8("policy_id"),
            utf8("policy_type"),
            utf8("rule_description"),
            Field::new("active_flag", DataType::Boolean, true),
            utf8("merchant_id"),
        ],
        "ml_fraud_signals" => vec![
            utf8("fraud_signal_id"),
            utf8("transaction_id"),
            float64("fraud_score"),
            utf8("model_version"),
            utf8("inference_time"),
        ],
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

/// Where a batch table's files live, relative to the warehouse root.
pub fn batch_location(table: &str) -> String {
    format!("{BATCH_DIR}/{table}.parquet")
}

/// Registers the four batch tables in `ctx` (the warehouse's store must already
/// be registered with the context's runtime), each with an in-memory copy
/// drawing on `budget` (see [`crate::table_cache`]). Returns them for warming.
pub fn register_batch_tables(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    budget: &CacheBudget,
) -> Result<Vec<Arc<CachedTable>>> {
    let mut tables = Vec::new();
    for table in BATCH_TABLES {
        let schema = batch_schema(table).expect("every BATCH_TABLES entry has a schema");
        let location = batch_location(table);
        let listing = parquet_table(warehouse, &location, schema)?;
        let cached = Arc::new(CachedTable::new(
            table,
            listing,
            warehouse.store(),
            warehouse.path(&location)?,
            budget.clone(),
        ));
        ctx.register_table(table, Arc::clone(&cached) as Arc<dyn TableProvider>)?;
        tables.push(cached);
    }
    Ok(tables)
}

/// How recon lists Parquet tables: `.parquet` files, read with the default
/// Parquet options (batch tables and index snapshots alike).
pub fn parquet_listing_options() -> ListingOptions {
    ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet")
}

/// A listing table over one Parquet file or a folder of them, read as `schema`.
pub fn parquet_table(
    warehouse: &Warehouse,
    location: &str,
    schema: SchemaRef,
) -> Result<Arc<ListingTable>> {
    let config = ListingTableConfig::new(warehouse.listing_url(location)?)
        .with_listing_options(parquet_listing_options())
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}
