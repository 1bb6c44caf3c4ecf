//! What a client statement may do, checked before anything runs (DESIGN §6:
//! every client is untrusted).
//!
//! - **Depth.** A parsed statement whose expressions nest deeper than
//!   `limits.max_expression_depth` (a `1+1+…+1` chain, thousands of OR-ed
//!   conditions) is refused with InvalidArgument naming the limit; planning
//!   recurses once per level, and unbounded depth would end in a stack
//!   overflow that takes the whole process down.
//! - **The whole plan tree**, subqueries included, not just its root: no file
//!   writes (COPY, INSERT/UPDATE/DELETE, also under EXPLAIN ANALYZE, which
//!   executes its input), no DDL other than CREATE VIEW / DROP VIEW at the top,
//!   no SET or other session statements (they could widen the limits).
//!   External tables and URL tables are DDL or disabled, so no statement can
//!   reach a path outside the warehouse's stores.
//! - **Built-in names.** The tables and views the server registers (batch
//!   tables, `transactions*`, the index views and snapshots, system tables)
//!   are reserved: no client may replace or drop them. Views clients create are
//!   shared by every session and may be dropped again.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};

/// Catalog and schema of the server's tables.
const CATALOG: &str = "recon";
const SCHEMA: &str = "public";

/// Whether a statement reads (a query) or changes the catalog (an update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT, VALUES, SHOW, EXPLAIN, …: returns rows.
    Query,
    /// CREATE VIEW / DROP VIEW: returns a row count.
    Update,
    /// REFRESH INDEX: runs as an update (row count = rows written) or as a
    /// query (one row describing the new snapshot).
    Refresh,
}

/// Why a statement was refused (all are the client's doing: InvalidArgument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Expressions nest deeper than the limit.
    #[error(
        "expression nesting deeper than {limit} levels (limits.max_expression_depth); \
         use IN (…) instead of long OR chains, or raise the limit"
    )]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// COPY, INSERT, UPDATE, DELETE anywhere in the plan.
    #[error(
        "{0} is not allowed: tables are read-only over SQL and the server writes no files for clients \
         (data arrives through Kafka, the HTTP API or bulk ingest)"
    )]
    Write(String),
    /// DDL other than CREATE VIEW / DROP VIEW, or DDL below the top of a plan.
    #[error(
        "{0} is not supported: the catalog is managed by the server (CREATE VIEW and DROP VIEW are)"
    )]
    Ddl(String),
    /// SET, PREPARE, transactions and other session statements.
    #[error("{0} statements are not supported")]
    Statement(String),
    /// CREATE/DROP of a built-in table or view.
    #[error("{0} is a built-in table or view of recon and cannot be replaced or dropped")]
    Reserved(String),
    /// A view outside `recon.public`.
    #[error("views can only be created in recon.public, not {0}")]
    OtherSchema(String),
}

/// The rules applied to every client statement.
#[derive(Debug, Clone)]
pub struct StatementPolicy {
    max_depth: usize,
    reserved: BTreeSet<String>,
}

impl StatementPolicy {
    /// A policy reserving every table registered in `ctx` now (call it once
    /// the server's tables and views are in place).
    pub fn new(ctx: &SessionContext, max_depth: usize) -> Self {
        let reserved = ctx
            .catalog(CATALOG)
            .and_then(|c| c.schema(SCHEMA))
            .map(|s| s.table_names().into_iter().collect())
            .unwrap_or_default();
        Self {
            max_depth,
            reserved,
        }
    }

    /// Refuses a parsed statement whose expressions nest too deep. The walk
    /// stops at the first level past the limit.
    pub fn check_depth(&self, statement: &DfStatement) -> Result<(), Refused> {
        let DfStatement::Statement(inner) = statement else {
            return Ok(());
        };
        let mut depth = Depth {
            current: 0,
            limit: self.max_depth,
        };
        match inner.visit(&mut depth) {
            ControlFlow::Break(()) => Err(Refused::TooDeep {
                limit: self.max_depth,
            }),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    /// Checks every node of a planned statement and says what kind it is.
    pub fn check_plan(&self, plan: &LogicalPlan) -> Result<StatementKind, Refused> {
        let kind = match plan {
            LogicalPlan::Ddl(DdlStatement::CreateView(create)) => {
                self.check_view_name(&create.name)?;
                check_below_top(&create.input)?;
                return Ok(StatementKind::Update);
            }
            LogicalPlan::Ddl(DdlStatement::DropView(drop)) => {
                self.check_view_name(&drop.name)?;
                return Ok(StatementKind::Update);
            }
            _ => StatementKind::Query,
        };
        check_below_top(plan)?;
        Ok(kind)
    }

    fn check_view_name(&self, name: &TableReference) -> Result<(), Refused> {
        let catalog_ok = name.catalog().is_none_or(|c| c == CATALOG);
        let schema_ok = name.schema().is_none_or(|s| s == SCHEMA);
        if !(catalog_ok && schema_ok) {
            return Err(Refused::OtherSchema(name.to_string()));
        }
        if self.reserved.contains(name.table()) {
            return Err(Refused::Reserved(name.table().to_owned()));
        }
        Ok(())
    }
}

/// Refuses writes, DDL and session statements anywhere in `plan`.
fn check_below_top(plan: &LogicalPlan) -> Result<(), Refused> {
    let mut refused = None;
    let _ = plan.apply_with_subqueries(|node| {
        let problem = match node {
            LogicalPlan::Copy(_) => Some(Refused::Write("COPY".to_owned())),
            LogicalPlan::Dml(dml) => Some(Refused::Write(dml.op.to_string())),
            LogicalPlan::Ddl(ddl) => Some(Refused::Ddl(ddl.name().to_owned())),
            LogicalPlan::Statement(s) => Some(Refused::Statement(s.name().to_owned())),
            _ => None,
        };
        match problem {
            Some(p) => {
                refused = Some(p);
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    });
    refused.map_or(Ok(()), Err)
}

/// Tracks how deep the expression walk is.
struct Depth {
    current: usize,
    limit: usize,
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.current += 1;
        if self.current > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.current -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn policy() -> (SessionContext, StatementPolicy) {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new()
                .with_default_catalog_and_schema(CATALOG, SCHEMA),
        );
        ctx.sql("CREATE TABLE merchants(a INT) AS VALUES (1)")
            .await
            .unwrap();
        let policy = StatementPolicy::new(&ctx, 100);
        (ctx, policy)
    }

    async fn check(sql: &str) -> Result<StatementKind, Refused> {
        let (ctx, policy) = policy().await;
        let state = ctx.state();
        let statement = state
            .sql_to_statement(sql, &datafusion::config::Dialect::Generic)
            .unwrap();
        policy.check_depth(&statement)?;
        let plan = state.statement_to_plan(statement).await.unwrap();
        policy.check_plan(&plan)
    }

    fn chain(terms: usize) -> String {
        format!("SELECT {}", vec!["1"; terms].join("+"))
    }

    #[tokio::test]
    async fn depth_is_limited() {
        assert_eq!(check(&chain(50)).await, Ok(StatementKind::Query));
        assert_eq!(
            check(&chain(500)).await,
            Err(Refused::TooDeep { limit: 100 })
        );
    }

    #[tokio::test]
    async fn writes_are_refused_anywhere_in_the_plan() {
        for sql in [
            "COPY (SELECT 1) TO '/tmp/recon-policy-test.csv'",
            "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/recon-policy-test.csv'",
            "EXPLAIN ANALYZE INSERT INTO merchants VALUES (2)",
        ] {
            let err = check(sql).await.unwrap_err();
            assert!(matches!(err, Refused::Write(_)), "{sql}: {err}");
        }
        assert!(!std::path::Path::new("/tmp/recon-policy-test.csv").exists());
        let err = check("EXPLAIN ANALYZE CREATE VIEW v AS SELECT 1")
            .await
            .unwrap_err();
        assert!(matches!(err, Refused::Ddl(_)), "{err}");
    }

    #[tokio::test]
    async fn built_in_names_are_reserved() {
        for sql in [
            "CREATE OR REPLACE VIEW merchants AS SELECT 1 AS a",
            "CREATE VIEW recon.public.merchants AS SELECT 1 AS a",
            "DROP VIEW merchants",
        ] {
            assert_eq!(
                check(sql).await,
                Err(Refused::Reserved("merchants".into())),
                "{sql}"
            );
        }
        assert_eq!(
            check("CREATE VIEW mine AS SELECT 1").await,
            Ok(StatementKind::Update)
        );
        assert!(matches!(
            check("CREATE VIEW information_schema.x AS SELECT 1").await,
            Err(Refused::OtherSchema(_))
        ));
    }
}
