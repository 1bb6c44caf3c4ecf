//! # recon-server
//!
//! The `recon` server: configuration, catalog, Kafka ingest, batch tables, index
//! views and their materialisation, the Flight SQL service, the HTTP API and
//! metrics (DESIGN §1). Today it holds the piece every later part shares: the
//! DataFusion session with the five reconciliation functions registered.
//! The Flight SQL server, ingest and indexes arrive with their issues.

use datafusion::prelude::{SessionConfig, SessionContext};
use recon_udfs::{InvalidRules, Rules};

/// A DataFusion session for recon: catalog `recon`, schema `public`, the
/// information schema on (SHOW FUNCTIONS, SHOW TABLES), and the five functions
/// configured with `rules`.
pub fn session_context(rules: &Rules) -> Result<SessionContext, InvalidRules> {
    rules.validate()?;
    let config = SessionConfig::new()
        .with_default_catalog_and_schema("recon", "public")
        .with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    recon_udfs::register_all(&ctx, rules);
    Ok(ctx)
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
