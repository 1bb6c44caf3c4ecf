//! A set of transaction ids as one filter expression, and the scans that look
//! rows up by id.
//!
//! An incremental refresh recomputes the rows of the transactions that changed
//! (often 10,000 of them). Written as `transaction_id IN (<10,000 literals>)`,
//! that filter cost more to plan than to run: filter push-down copies it into
//! every scan the id reaches (five in `final_index`) and each optimizer pass
//! walks and rewrites every literal. [`IdSet::filter`] is one small expression
//! instead — a function of the column that holds the set behind an `Arc`, so
//! copies are cheap and the planner never looks inside. It is not registered
//! by name: only recon builds it, clients cannot call it.
//!
//! [`wanted_ids`] is how a scan that can look rows up by id
//! (`transactions_latest`, [`crate::ingest::latest`]; the batch tables'
//! in-memory copies, [`crate::table_cache`]) recognises such a filter, or a
//! plain `transaction_id = 'x'` / `IN ('x', …)`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{InList, ScalarFunction};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::prelude::col;

/// The column rows are looked up by: what [`wanted_ids`] recognises, what the
/// cached batch tables are ordered by, what identifies a changed transaction.
pub const KEY: &str = "transaction_id";

/// Distinct ids, sorted; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct IdSet {
    ids: Arc<[String]>,
}

impl IdSet {
    /// The distinct ids among `ids`.
    pub fn new(ids: impl IntoIterator<Item = String>) -> Self {
        let mut ids: Vec<String> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        Self { ids: ids.into() }
    }

    /// The ids, sorted.
    pub fn as_slice(&self) -> &[String] {
        &self.ids
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is one of them.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.binary_search_by(|x| x.as_str().cmp(id)).is_ok()
    }

    /// `column`'s value is one of the ids (NULL for a NULL value, as `IN` gives).
    pub fn filter(&self, column: &str) -> Expr {
        ScalarUDF::new_from_impl(InIdSet {
            ids: self.clone(),
            signature: Signature::any(1, Volatility::Immutable),
        })
        .call(vec![col(column)])
    }
}

/// The function behind [`IdSet::filter`].
#[derive(Debug)]
struct InIdSet {
    ids: IdSet,
    signature: Signature,
}

// Two filters are the same when they hold the same set (the planner compares
// and hashes expressions; the ids themselves are never walked).
impl PartialEq for InIdSet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ids.ids, &other.ids.ids)
    }
}

impl Eq for InIdSet {}

impl Hash for InIdSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.ids.ids).cast::<u8>().hash(state);
    }
}

impl ScalarUDFImpl for InIdSet {
    fn name(&self) -> &str {
        "recon_in_id_set"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("recon_in_id_set takes one argument");
        };
        let array = value.to_array(args.number_rows)?;
        let member = |id: Option<&str>| id.map(|id| self.ids.contains(id));
        let out: BooleanArray = match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().iter().map(member).collect(),
            DataType::LargeUtf8 => array.as_string::<i64>().iter().map(member).collect(),
            DataType::Utf8View => array.as_string_view().iter().map(member).collect(),
            // What the optimizer evaluates to see whether the filter drops NULLs.
            DataType::Null => BooleanArray::new_null(array.len()),
            _ => {
                let strings: ArrayRef = cast(&array, &DataType::Utf8)?;
                strings.as_string::<i32>().iter().map(member).collect()
            }
        };
        Ok(match value {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
        })
    }
}

/// The ids a filter asks for: [`IdSet::filter`] of `transaction_id`,
/// `transaction_id = 'x'` or `transaction_id IN ('x', …)`.
pub fn wanted_ids(filter: &Expr) -> Option<Vec<&str>> {
    let is_id = |e: &Expr| matches!(e, Expr::Column(c) if c.name == KEY);
    match filter {
        Expr::ScalarFunction(ScalarFunction { func, args }) => match args.as_slice() {
            [arg] if is_id(arg) => {
                let set = func.inner().downcast_ref::<InIdSet>()?;
                Some(set.ids.as_slice().iter().map(String::as_str).collect())
            }
            _ => None,
        },
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_id(expr) => list.iter().map(string_literal).collect(),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) if is_id(left) => Some(vec![string_literal(right)?]),
        _ => None,
    }
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::{SessionContext, lit};

    #[test]
    fn filters_name_their_ids() {
        let set = IdSet::new(["T2", "T1", "T2"].map(String::from));
        assert_eq!(set.as_slice(), ["T1", "T2"]);
        assert_eq!(wanted_ids(&set.filter(KEY)), Some(vec!["T1", "T2"]));
        assert_eq!(wanted_ids(&set.filter("other")), None);
        let id = col(KEY);
        assert_eq!(
            wanted_ids(&id.clone().in_list(vec![lit("T1")], false)),
            Some(vec!["T1"])
        );
        assert_eq!(wanted_ids(&id.clone().eq(lit("T2"))), Some(vec!["T2"]));
        assert_eq!(wanted_ids(&id.clone().in_list(vec![lit(1)], false)), None);
        assert_eq!(wanted_ids(&id.in_list(vec![lit("T1")], true)), None);
    }

    /// The filter keeps what `IN` keeps, and the planner pushes it into both
    /// sides of a join on the id (a `Utf8View` id here; `Utf8` in
    /// `ingest::latest`'s test).
    #[tokio::test]
    async fn the_filter_keeps_what_in_keeps() {
        let ctx = SessionContext::new();
        let ids: Vec<Option<&str>> = vec![Some("T1"), None, Some("T3"), Some("T4")];
        let a = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new(KEY, DataType::Utf8View, true),
                Field::new("v", DataType::Int64, false),
            ])),
            vec![
                Arc::new(StringViewArray::from(ids.clone())),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "id",
                DataType::Utf8View,
                true,
            )])),
            vec![Arc::new(StringViewArray::from(ids))],
        )
        .unwrap();
        ctx.register_batch("a", a).unwrap();
        ctx.register_batch("b", b).unwrap();
        let run = |filter: Expr| {
            let ctx = ctx.clone();
            async move {
                let frame = ctx
                    .sql("SELECT a.transaction_id, a.v, b.id FROM a LEFT JOIN b ON a.transaction_id = b.id")
                    .await
                    .unwrap()
                    .filter(filter)
                    .unwrap()
                    .sort(vec![col("v").sort(true, true)])
                    .unwrap();
                let plan = frame
                    .clone()
                    .into_optimized_plan()
                    .unwrap()
                    .display_indent()
                    .to_string();
                let rows = datafusion::arrow::util::pretty::pretty_format_batches(
                    &frame.collect().await.unwrap(),
                )
                .unwrap()
                .to_string();
                (rows, plan)
            }
        };
        let set = IdSet::new(["T3", "T1", "T9"].map(String::from));
        let list = || col(KEY).in_list(vec![lit("T1"), lit("T3"), lit("T9")], false);
        let (with_set, plan) = run(set.filter(KEY)).await;
        assert_eq!(with_set, run(list()).await.0);
        assert!(with_set.contains("T1") && with_set.contains("T3") && !with_set.contains("T4"));
        // Pushed below the join into both inputs (the Utf8View side too).
        assert_eq!(plan.matches("recon_in_id_set").count(), 2, "{plan}");
        // IS NOT TRUE keeps the other rows and the NULL id, as with IN.
        let (not_true, _) = run(set.filter(KEY).is_not_true()).await;
        assert_eq!(not_true, run(list().is_not_true()).await.0);
        assert!(
            not_true.contains("T4") && not_true.contains("| 2 "),
            "{not_true}"
        );
    }
}
