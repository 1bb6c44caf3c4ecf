//! The reconciliation indexes of DESIGN §4 as live views: `batch_index`,
//! `final_index`, `merchant_daily_kpi`, defined by the SQL files in
//! `server/sql/` (compiled in). Materialisation to Parquet snapshots and
//! user-supplied replacements of the SQL are the next steps (issue 5).

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

/// The default view definitions, in dependency order: (view, file, SQL).
pub const DEFAULT_VIEWS: [(&str, &str, &str); 3] = [
    (
        "batch_index",
        "batch_index.sql",
        include_str!("../sql/batch_index.sql"),
    ),
    (
        "final_index",
        "final_index.sql",
        include_str!("../sql/final_index.sql"),
    ),
    (
        "merchant_daily_kpi",
        "merchant_daily_kpi.sql",
        include_str!("../sql/merchant_daily_kpi.sql"),
    ),
];

/// Creates the index views; an error names the file it came from.
pub async fn register(ctx: &SessionContext) -> Result<()> {
    for (view, file, sql) in DEFAULT_VIEWS {
        ctx.sql(sql)
            .await
            .map_err(|e| DataFusionError::Context(format!("view {view} ({file})"), Box::new(e)))?;
    }
    Ok(())
}
