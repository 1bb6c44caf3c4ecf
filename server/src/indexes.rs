//! The reconciliation indexes of DESIGN §4 as live views: `batch_index`,
//! `final_index`, `merchant_daily_kpi`, defined by the SQL files in
//! `server/sql/` (compiled in), each replaceable by a file of the user's
//! (`[indexes]` in the config). A view that does not plan stops the start with
//! the file and DataFusion's message (which carries the line and column for
//! syntax errors). Materialisation to Parquet snapshots is the next step.

use std::path::Path;

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

use crate::config::Indexes;

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

/// Creates the index views from the defaults or the configured files; an
/// error names the file it came from.
pub async fn register(ctx: &SessionContext, config: &Indexes) -> Result<()> {
    let overrides = [
        &config.batch_index_sql,
        &config.final_index_sql,
        &config.merchant_daily_kpi_sql,
    ];
    for ((view, file, default_sql), custom) in DEFAULT_VIEWS.into_iter().zip(overrides) {
        let (origin, sql) = match custom {
            Some(path) => (path.display().to_string(), read(path)?),
            None => (format!("built-in {file}"), default_sql.to_owned()),
        };
        create(ctx, view, &origin, &sql).await?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        DataFusionError::Context(
            format!("cannot read {}", path.display()),
            Box::new(e.into()),
        )
    })
}

async fn create(ctx: &SessionContext, view: &str, origin: &str, sql: &str) -> Result<()> {
    let wrap = |e: DataFusionError| {
        DataFusionError::Context(format!("view {view} from {origin}"), Box::new(e))
    };
    let statement = ctx
        .state()
        .sql_to_statement(sql, &ctx.state().config().options().sql_parser.dialect)
        .map_err(wrap)?;
    let text = statement.to_string();
    if !text.to_ascii_uppercase().starts_with("CREATE VIEW")
        || !text.to_ascii_lowercase().contains(&format!("view {view} "))
    {
        return Err(wrap(DataFusionError::Plan(format!(
            "expected one `CREATE VIEW {view} AS ...` statement"
        ))));
    }
    ctx.sql(sql).await.map_err(wrap)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn context() -> SessionContext {
        let ctx = crate::session_context(&recon_udfs::Rules::default()).unwrap();
        crate::ingest::register(&ctx).await.unwrap();
        for t in crate::tables::BATCH_TABLES {
            let schema = crate::tables::batch_schema(t).unwrap();
            ctx.register_table(
                t,
                std::sync::Arc::new(datafusion::datasource::empty::EmptyTable::new(schema)),
            )
            .unwrap();
        }
        ctx
    }

    #[tokio::test]
    async fn defaults_plan() {
        register(&context().await, &Indexes::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_bad_user_file_is_reported_with_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("final.sql");
        std::fs::write(
            &file,
            "CREATE VIEW final_index AS\nSELECT transaction_id FROM batch_index WHERE AND 1",
        )
        .unwrap();
        let config = Indexes {
            final_index_sql: Some(file.clone()),
            ..Indexes::default()
        };
        let err = register(&context().await, &config)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("final.sql"), "{err}");
        assert!(err.contains("Line: 2"), "{err}");

        std::fs::write(
            &file,
            "CREATE VIEW final_index AS SELECT transaction_id, 1 AS one FROM batch_index",
        )
        .unwrap();
        let ctx = context().await;
        register(&ctx, &config).await.unwrap();
        let cols = ctx
            .table("final_index")
            .await
            .unwrap()
            .schema()
            .fields()
            .len();
        assert_eq!(cols, 2);

        std::fs::write(&file, "SELECT 1").unwrap();
        let err = register(&context().await, &config)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected one `CREATE VIEW final_index"),
            "{err}"
        );
    }
}
