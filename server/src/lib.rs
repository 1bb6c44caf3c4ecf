//! # recon-server
//!
//! The `recon` server: configuration, catalog, Kafka ingest, batch tables, index
//! views and their materialisation, the Flight SQL service, the HTTP API and
//! metrics (DESIGN §1).
//!
//! - [`config`]: defaults → TOML file → `RECON_*` env → flags.
//! - [`warehouse`]: the object-store root every table lives under.
//! - [`tables`]: the batch tables' contract schemas and listing tables.
//! - [`table_cache`]: in-memory copies of batch tables, refreshed when files change.
//! - [`flight`]: the Arrow Flight SQL service.
//! - [`policy`]: what a client statement may do (depth, no writes, reserved names).
//! - [`query_runtime`]: the thread pool queries run on, apart from gRPC/HTTP.
//! - [`value_limits`]: a ceiling on the values functions build.
//! - [`ingest`]: Kafka → the live `transactions` tables.
//! - [`keyed_join`]: an optimizer rule that drops a join back to a plan's own rows.
//! - [`id_set`]: a set of transaction ids as one filter (incremental refreshes).
//! - [`indexes`]: the `batch_index`, `final_index`, `merchant_daily_kpi` views.
//! - [`snapshots`]: their materialised Parquet snapshots (`<view>_snapshot`).
//! - [`appends`]: durable appends to batch tables (HTTP signals, bulk ingest).
//! - [`http`]: `/ml_signals`, `/healthz`, `/metrics`.
//! - [`metrics`]: the Prometheus text.
//! - [`serve`]: `recon serve` — start, run, shut down.

pub mod appends;
pub mod config;
pub mod flight;
pub mod http;
pub mod id_set;
pub mod indexes;
pub mod ingest;
pub mod keyed_join;
pub mod metrics;
pub mod policy;
pub mod query_runtime;
pub mod serve;
pub mod snapshots;
pub mod table_cache;
pub mod tables;
pub mod value_limits;
pub mod warehouse;

use std::sync::Arc;

use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use recon_udfs::{InvalidRules, Rules};

use crate::warehouse::Warehouse;

/// A DataFusion session for recon: catalog `recon`, schema `public`, the
/// information schema on (SHOW FUNCTIONS, SHOW TABLES), and the five functions
/// configured with `rules`.
pub fn session_context(rules: &Rules) -> Result<SessionContext, InvalidRules> {
    rules.validate()?;
    let ctx = new_context(Arc::new(RuntimeEnv::default()));
    recon_udfs::register_all(&ctx, rules);
    Ok(ctx)
}

/// DataFusion's defaults, catalog `recon.public`, the information schema,
/// joins that yield to the scheduler ([`query_runtime::YieldingJoins`]) and
/// no join of a table with rows already holding it ([`keyed_join`]).
fn new_context(runtime: Arc<RuntimeEnv>) -> SessionContext {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema("recon", "public")
        .with_information_schema(true);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rule(Arc::new(keyed_join::EliminateKeyedSelfJoin))
        .with_physical_optimizer_rule(Arc::new(query_runtime::YieldingJoins))
        .build();
    SessionContext::new_with_state(state)
}

/// The server's session: [`session_context`]'s functions, plus the warehouse's
/// object store and the batch tables (with their in-memory copies, returned for
/// warming). File listings are not cached, so files that arrive are seen by the
/// next query.
pub fn catalog_context(
    rules: &Rules,
    warehouse: &Warehouse,
    cache: &table_cache::CacheBudget,
) -> datafusion::error::Result<(SessionContext, Vec<Arc<table_cache::CachedTable>>)> {
    rules
        .validate()
        .map_err(|e| datafusion::error::DataFusionError::Configuration(e.to_string()))?;
    let runtime = RuntimeEnvBuilder::new()
        .with_object_list_cache_limit(0)
        .build_arc()?;
    warehouse.register(&runtime);
    let ctx = new_context(runtime);
    recon_udfs::register_all(&ctx, rules);
    let tables = tables::register_batch_tables(&ctx, warehouse, cache)?;
    Ok((ctx, tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn session_has_the_functions_under_recon_public() {
        let ctx = session_context(&Rules::default()).unwrap();
        ctx.sql("CREATE TABLE t(user_id VARCHAR) AS VALUES ('USR-1')")
            .await
            .unwrap();
        let batches = ctx
            .sql("SELECT mask_sensitive(user_id) FROM recon.public.t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("US***"), "{text}");
    }

    #[test]
    fn invalid_rules_are_refused() {
        let rules = Rules {
            kyc_words: vec![String::new()],
            ..Rules::default()
        };
        assert!(session_context(&rules).is_err());
    }
}
