//! An optimizer rule that removes a join of a table on its unique key with a
//! plan that already holds that table's rows: the columns the join fetched are
//! carried up from the plan's own scan of the table instead.
//!
//! The index views need it because they are layered the way the seed layers
//! them: `final_index` joins `batch_index` (which scanned `transactions_latest`)
//! with `transactions_latest` again for `processed_at`, and `merchant_daily_kpi`
//! joins its per-transaction aggregate of `batch_index` with
//! `transactions_latest` for `event_time`. Each of those joins hashes 5 M ids
//! on both sides to find, for every row, the row it came from. Writing the
//! views flat would avoid it but would stop them from following a user's own
//! `batch_index.sql`; so the views stay as written and the plan is fixed here.
//!
//! The rule applies to `T t JOIN r ON t.k = r.c` (inner, or outer keeping `r`'s
//! rows) when `k` is a declared primary or unique key of `T`, `t` is an
//! unfiltered scan of `T`, and `r.c` is `k` of a scan of the same table inside
//! `r`, passed up unchanged through projections, aliases, filters, sorts,
//! limits, joins (either side, any type: where that scan's row is missing, the
//! carried columns are NULL like the key) and aggregates grouped by it (the
//! carried columns join the group keys: they depend on the key, so the groups
//! stay the same). Every non-NULL `r.c` then names a row of `T` that the join
//! would find, the one `r` came from, so `t`'s columns are that row's. Where
//! anything does not fit, the plan is left as it is.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Constraint, DataFusionError, NullEquality, Result};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::logical_plan::{
    Aggregate, Filter, Join, JoinType, Projection, SubqueryAlias, TableScan, TableScanBuilder,
};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use tracing::debug;

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct EliminateKeyedSelfJoin;

impl OptimizerRule for EliminateKeyedSelfJoin {
    fn name(&self) -> &str {
        "recon_eliminate_keyed_self_join"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match eliminate(join, config) {
            Ok(Some(rewritten)) => Ok(Transformed::yes(rewritten)),
            Ok(None) => Ok(Transformed::no(plan)),
            Err(e) => {
                // A shape this rule did not foresee: the join stays.
                debug!(error = %e, "keyed self-join left in the plan");
                Ok(Transformed::no(plan))
            }
        }
    }
}

/// A join side (`plan`) that is a scan (`scan`) under aliases.
struct KeyedSide<'a> {
    plan: &'a LogicalPlan,
    scan: &'a TableScan,
}

/// What to carry: columns of the table behind `identity`, by source index
/// (the key's own column, which the path carries anyway, left out).
struct Wanted {
    identity: *const (),
    key: usize,
    columns: Vec<usize>,
}

/// A rewritten plan that outputs, besides its own columns, `columns` (one per
/// wanted source column); `key` is the key column in its output.
struct Carried {
    plan: LogicalPlan,
    key: Column,
    columns: Vec<Column>,
}

fn eliminate(join: &Join, config: &dyn OptimizerConfig) -> Result<Option<LogicalPlan>> {
    let ([(left_key, right_key)], None, NullEquality::NullEqualsNothing) =
        (join.on.as_slice(), &join.filter, join.null_equality)
    else {
        return Ok(None);
    };
    let sides = [
        (true, &join.left, left_key, &join.right, right_key),
        (false, &join.right, right_key, &join.left, left_key),
    ];
    for (keyed_is_left, keyed, keyed_key, other, other_key) in sides {
        let keeps_other = match join.join_type {
            JoinType::Inner => true,
            JoinType::Right => keyed_is_left,
            JoinType::Left => !keyed_is_left,
            _ => false,
        };
        let (true, Expr::Column(keyed_key), Expr::Column(other_key)) =
            (keeps_other, keyed_key, other_key)
        else {
            continue;
        };
        let Some(side) = keyed_side(keyed) else {
            continue;
        };
        let Some(wanted) = wanted(&side, keyed_key)? else {
            continue;
        };
        let Some(carried) = carry(other, other_key, &wanted, config)? else {
            continue;
        };
        return Ok(Some(replace(
            join,
            keyed_is_left,
            side.plan,
            keyed_key,
            other,
            carried,
        )?));
    }
    Ok(None)
}

/// `plan` as an unfiltered, unlimited scan under aliases, if it is one.
fn keyed_side(plan: &LogicalPlan) -> Option<KeyedSide<'_>> {
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::SubqueryAlias(alias) => node = &alias.input,
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                return Some(KeyedSide { plan, scan });
            }
            _ => return None,
        }
    }
}

/// The table's identity, the key's source index (if it is the table's unique
/// key) and the source indices of the side's columns.
fn wanted(side: &KeyedSide<'_>, key: &Column) -> Result<Option<Wanted>> {
    let scan = side.scan;
    let key_index = side.plan.schema().index_of_column(key)?;
    let key = source_index(scan, key_index);
    let unique = scan.source.constraints().is_some_and(|constraints| {
        constraints.iter().any(|c| match c {
            Constraint::PrimaryKey(columns) | Constraint::Unique(columns) => {
                columns.as_slice() == [key]
            }
        })
    });
    let (true, Some(identity)) = (unique, identity(scan)) else {
        return Ok(None);
    };
    Ok(Some(Wanted {
        identity,
        key,
        columns: (0..side.plan.schema().fields().len())
            .filter(|&i| i != key_index)
            .map(|i| source_index(scan, i))
            .collect(),
    }))
}

/// The index in the table's schema of `scan`'s output column `i`.
fn source_index(scan: &TableScan, i: usize) -> usize {
    scan.projection.as_ref().map_or(i, |p| p[i])
}

/// The provider `scan` reads, as an address: two scans of one table share it.
fn identity(scan: &TableScan) -> Option<*const ()> {
    let provider = source_as_provider(&scan.source).ok()?;
    Some(Arc::as_ptr(&provider).cast::<()>())
}

/// `plan` rewritten to output the wanted columns of the scan its column `key`
/// comes from, or `None` where the key's path is not one this rule follows.
fn carry(
    plan: &LogicalPlan,
    key: &Column,
    wanted: &Wanted,
    config: &dyn OptimizerConfig,
) -> Result<Option<Carried>> {
    let index = plan.schema().index_of_column(key)?;
    match plan {
        LogicalPlan::TableScan(scan) => carry_scan(scan, index, wanted),
        LogicalPlan::SubqueryAlias(alias) => {
            let inner = Column::from(alias.input.schema().qualified_field(index));
            let Some(below) = carry(&alias.input, &inner, wanted, config)? else {
                return Ok(None);
            };
            let rewritten = SubqueryAlias::try_new(Arc::new(below.plan), alias.alias.clone())?;
            let requalify = |c: &Column| Column::new(Some(alias.alias.clone()), c.name.clone());
            Ok(Some(Carried {
                key: requalify(&below.key),
                columns: below.columns.iter().map(requalify).collect(),
                plan: LogicalPlan::SubqueryAlias(rewritten),
            }))
        }
        LogicalPlan::Projection(projection) => {
            let Expr::Column(inner) = projection.expr[index].clone().unalias() else {
                return Ok(None);
            };
            let Some(below) = carry(&projection.input, &inner, wanted, config)? else {
                return Ok(None);
            };
            let mut exprs = projection.expr.clone();
            let mut columns = Vec::with_capacity(below.columns.len());
            for column in below.columns {
                let name = config.alias_generator().next("__recon_carried");
                exprs.push(Expr::Column(column).alias(&name));
                columns.push(Column::from_name(name));
            }
            let rewritten = Projection::try_new(exprs, Arc::new(below.plan))?;
            Ok(Some(Carried {
                key: key.clone(),
                columns,
                plan: LogicalPlan::Projection(rewritten),
            }))
        }
        LogicalPlan::Aggregate(aggregate) => {
            let Some(Expr::Column(inner)) = aggregate.group_expr.get(index) else {
                return Ok(None);
            };
            let Some(below) = carry(&aggregate.input, inner, wanted, config)? else {
                return Ok(None);
            };
            let mut group = aggregate.group_expr.clone();
            group.extend(below.columns.iter().cloned().map(Expr::Column));
            let rewritten =
                Aggregate::try_new(Arc::new(below.plan), group, aggregate.aggr_expr.clone())?;
            Ok(Some(Carried {
                key: key.clone(),
                columns: below.columns,
                plan: LogicalPlan::Aggregate(rewritten),
            }))
        }
        // Rows dropped or reordered, columns as their input's.
        LogicalPlan::Filter(_) | LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
            let input = plan.inputs()[0];
            let Some(below) = carry(input, key, wanted, config)? else {
                return Ok(None);
            };
            let rewritten = plan.with_new_exprs(plan.expressions(), vec![below.plan])?;
            Ok(Some(Carried {
                plan: rewritten,
                ..below
            }))
        }
        LogicalPlan::Join(join) => {
            let in_left = join.left.schema().has_column(key);
            let side = if in_left { &join.left } else { &join.right };
            if !side.schema().has_column(key) {
                return Ok(None);
            }
            let Some(below) = carry(side, key, wanted, config)? else {
                return Ok(None);
            };
            let mut rewritten = join.clone();
            if in_left {
                rewritten.left = Arc::new(below.plan);
            } else {
                rewritten.right = Arc::new(below.plan);
            }
            Ok(Some(Carried {
                plan: LogicalPlan::Join(rewritten).recompute_schema()?,
                ..below
            }))
        }
        _ => Ok(None),
    }
}

/// A scan of the wanted table whose output column `index` is the key: the
/// same scan, reading the wanted columns too.
fn carry_scan(scan: &TableScan, index: usize, wanted: &Wanted) -> Result<Option<Carried>> {
    if identity(scan) != Some(wanted.identity) || source_index(scan, index) != wanted.key {
        return Ok(None);
    }
    let projection = scan.projection.clone().map(|mut projection| {
        for column in &wanted.columns {
            if !projection.contains(column) {
                projection.push(*column);
            }
        }
        projection
    });
    let rewritten = TableScanBuilder::from(scan.clone())
        .with_projection(projection)
        .build()?;
    let schema = scan.source.schema();
    let columns = wanted
        .columns
        .iter()
        .map(|&i| Column::new(Some(scan.table_name.clone()), schema.field(i).name()))
        .collect();
    Ok(Some(Carried {
        key: Column::from(scan.projected_schema.qualified_field(index)),
        columns,
        plan: LogicalPlan::TableScan(rewritten),
    }))
}

/// The join replaced by a projection of `other` (now carrying the keyed
/// side's columns) with the join's output columns, in its order and names.
fn replace(
    join: &Join,
    keyed_is_left: bool,
    keyed: &LogicalPlan,
    keyed_key: &Column,
    other: &LogicalPlan,
    carried: Carried,
) -> Result<LogicalPlan> {
    let key_index = keyed.schema().index_of_column(keyed_key)?;
    let mut others = carried.columns.iter();
    let mut keyed_exprs = Vec::with_capacity(keyed.schema().fields().len());
    for (i, (qualifier, field)) in keyed.schema().iter().enumerate() {
        let source = if i == key_index {
            &carried.key
        } else {
            others
                .next()
                .ok_or_else(|| DataFusionError::Internal("a carried column went missing".into()))?
        };
        keyed_exprs
            .push(Expr::Column(source.clone()).alias_qualified(qualifier.cloned(), field.name()));
    }
    let keyed_exprs = keyed_exprs.into_iter();
    let other_exprs = other.schema().columns().into_iter().map(Expr::Column);
    let exprs: Vec<Expr> = if keyed_is_left {
        keyed_exprs.chain(other_exprs).collect()
    } else {
        other_exprs.chain(keyed_exprs).collect()
    };
    let mut input = carried.plan;
    if join.join_type == JoinType::Inner {
        // The inner join dropped the rows without a key.
        input = LogicalPlan::Filter(Filter::try_new(
            Expr::Column(carried.key.clone()).is_not_null(),
            Arc::new(input),
        )?);
    }
    // The join's schema: its outer side's columns stay nullable.
    Ok(LogicalPlan::Projection(Projection::try_new_with_schema(
        exprs,
        Arc::new(input),
        Arc::clone(&join.schema),
    )?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::common::{Constraint, Constraints};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use recon_udfs::Rules;

    /// `tx` (id primary key, or not), `st` (statements: several per id, one
    /// for an id `tx` does not have) in `ctx`.
    fn register(ctx: &SessionContext, keyed: bool) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("merchant", DataType::Utf8, false),
            Field::new("seen", DataType::Int64, false),
        ]));
        let tx = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                Arc::new(StringArray::from(vec!["m1", "m1", "m2", "m2"])),
                Arc::new(Int64Array::from(vec![10, 20, 30, 40])),
            ],
        )
        .unwrap();
        let mut table = MemTable::try_new(schema, vec![vec![tx]]).unwrap();
        if keyed {
            table =
                table.with_constraints(Constraints::new_unverified(vec![Constraint::PrimaryKey(
                    vec![0],
                )]));
        }
        ctx.register_table("tx", Arc::new(table)).unwrap();
        let st_schema = Arc::new(Schema::new(vec![
            Field::new("tx_id", DataType::Utf8, true),
            Field::new("posted", DataType::Float64, false),
        ]));
        let st = RecordBatch::try_new(
            Arc::clone(&st_schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("a"),
                    Some("c"),
                    Some("x"),
                    None,
                ])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
            ],
        )
        .unwrap();
        let st = MemTable::try_new(st_schema, vec![vec![st]]).unwrap();
        ctx.register_table("st", Arc::new(st)).unwrap();
    }

    /// Rows (sorted) of `sql` and how many scans of `tx` its plan has, in a
    /// recon session or a plain DataFusion one.
    async fn run(sql: &str, recon: bool, keyed: bool) -> (String, usize) {
        let ctx = if recon {
            crate::session_context(&Rules::default()).unwrap()
        } else {
            SessionContext::new()
        };
        register(&ctx, keyed);
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().into_optimized_plan().unwrap();
        let scans = format!("{}", plan.display_indent())
            .matches("TableScan: tx")
            .count();
        let mut rows: Vec<String> = pretty_format_batches(&frame.collect().await.unwrap())
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect();
        rows.sort();
        (rows.join("\n"), scans)
    }

    /// `sql` gives the same rows with the rule as without, and its plan scans
    /// `tx` `without` times without the rule, `with` times with it.
    async fn check(sql: &str, without: usize, with: usize) {
        let (expected, scans) = run(sql, false, true).await;
        assert_eq!(scans, without, "{sql}");
        let (rows, scans) = run(sql, true, true).await;
        assert_eq!(rows, expected, "{sql}");
        assert_eq!(scans, with, "{sql}");
    }

    const BATCH: &str = "SELECT t.id, t.merchant, s.posted \
        FROM tx t LEFT JOIN st s ON s.tx_id = t.id";

    #[tokio::test]
    async fn a_join_back_to_the_rows_a_plan_came_from_is_not_run() {
        // The shape of final_index: batch rows joined back for a column.
        check(
            &format!(
                "SELECT b.id, b.posted, t.seen, t.id AS tid FROM tx t \
                 RIGHT JOIN ({BATCH}) b ON t.id = b.id"
            ),
            2,
            1,
        )
        .await;
        check(
            &format!("SELECT * FROM ({BATCH}) b LEFT JOIN tx t ON b.id = t.id"),
            2,
            1,
        )
        .await;
    }

    #[tokio::test]
    async fn an_aggregate_by_the_key_carries_the_columns_as_group_keys() {
        // The shape of merchant_daily_kpi.
        check(
            &format!(
                "SELECT t.merchant, count(*), sum(t.seen), sum(p.total) FROM tx t \
                 JOIN (SELECT id, sum(posted) AS total FROM ({BATCH}) GROUP BY id) p \
                 ON p.id = t.id GROUP BY t.merchant"
            ),
            2,
            1,
        )
        .await;
    }

    #[tokio::test]
    async fn rows_from_another_table_keep_null_columns() {
        // The key comes from the statements, not from a scan of tx: the join
        // stays and finds nothing for "x" and NULL.
        check(
            "SELECT s.tx_id, s.posted, t.seen FROM tx t RIGHT JOIN st s ON t.id = s.tx_id",
            1,
            1,
        )
        .await;
    }

    #[tokio::test]
    async fn a_filtered_side_or_a_key_that_is_not_unique_keeps_the_join() {
        check(
            &format!(
                "SELECT b.id, t.seen FROM (SELECT * FROM tx WHERE seen > 15) t \
                 RIGHT JOIN ({BATCH}) b ON t.id = b.id"
            ),
            2,
            2,
        )
        .await;
        let sql = format!("SELECT b.id, t.seen FROM tx t RIGHT JOIN ({BATCH}) b ON t.id = b.id");
        let (rows, scans) = run(&sql, true, false).await;
        assert_eq!(scans, 2);
        assert_eq!(rows, run(&sql, false, false).await.0);
    }
}
