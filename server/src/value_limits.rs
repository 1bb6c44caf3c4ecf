//! A ceiling on the values functions build. DataFusion's memory pool counts what
//! operators hold (hash tables, sorts) but not what a scalar function returns,
//! so `repeat('x', 300000000)` would allocate 300 MB per row whatever the
//! per-query limit says. The functions that grow their output from a count
//! argument are replaced by wrappers that work out the output size first and
//! refuse with ResourcesExhausted when one value would exceed
//! `limits.max_value_mb`, or one call (a batch of rows) the per-query memory
//! limit.
//!
//! Wrapped: `repeat`, `lpad`, `rpad` (bytes: string length × count, or the
//! target length) and `array_repeat` (8 bytes per element at least). Every
//! other function's output is bounded by its inputs.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// How a wrapped function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: len(s) × n bytes.
    StringTimesCount,
    /// `lpad(s, n, …)` / `rpad`: n characters, at least n bytes.
    TargetLength,
    /// `array_repeat(x, n)`: n elements of at least 8 bytes.
    Elements,
}

/// Replaces the growing functions in `ctx` with size-checked wrappers.
pub fn register(ctx: &SessionContext, max_value_bytes: usize, max_call_bytes: usize) {
    let state = ctx.state();
    for (name, growth) in [
        ("repeat", Growth::StringTimesCount),
        ("lpad", Growth::TargetLength),
        ("rpad", Growth::TargetLength),
        ("array_repeat", Growth::Elements),
    ] {
        if let Some(inner) = state.scalar_functions().get(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: Arc::clone(inner),
                growth,
                max_value_bytes,
                max_call_bytes,
            }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_value_bytes: usize,
    max_call_bytes: usize,
}

impl Bounded {
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let (Some(first), Some(count)) = (args.args.first(), args.args.get(1)) else {
            return Ok(());
        };
        let rows = args.number_rows.max(1);
        let counts = as_int64(&count.to_array(rows)?)?;
        let lengths = match self.growth {
            Growth::StringTimesCount => Some(as_int64(&length(&first.to_array(rows)?)?)?),
            Growth::TargetLength | Growth::Elements => None,
        };
        let mut largest: u64 = 0;
        let mut total: u64 = 0;
        for row in 0..counts.len() {
            if counts.is_null(row) {
                continue;
            }
            let n = u64::try_from(counts.value(row)).unwrap_or(0);
            let bytes = match (&lengths, self.growth) {
                (Some(lengths), _) if lengths.is_valid(row) => {
                    n.saturating_mul(u64::try_from(lengths.value(row)).unwrap_or(0))
                }
                (Some(_), _) => 0,
                (None, Growth::Elements) => n.saturating_mul(8),
                (None, _) => n,
            };
            largest = largest.max(bytes);
            total = total.saturating_add(bytes);
        }
        let name = self.inner.name();
        if largest > self.max_value_bytes as u64 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{name} would build a value of {largest} bytes; the largest allowed is {} bytes (limits.max_value_mb)",
                self.max_value_bytes
            )));
        }
        if total > self.max_call_bytes as u64 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{name} would build {total} bytes for one batch of rows; a query may use {} bytes (limits.query_memory_mb)",
                self.max_call_bytes
            )));
        }
        Ok(())
    }
}

fn as_int64(array: &ArrayRef) -> Result<Int64Array> {
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    let cast = cast_with_options(array, &DataType::Int64, &options)?;
    Ok(cast
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .unwrap_or_else(|| Int64Array::new_null(array.len())))
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sql: &str) -> Result<usize> {
        let ctx = SessionContext::new();
        register(&ctx, 1 << 20, 4 << 20);
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn small_values_pass_and_huge_ones_are_refused() {
        assert_eq!(
            run("SELECT repeat('ab', 1000), lpad('x', 10)")
                .await
                .unwrap(),
            1
        );
        for sql in [
            "SELECT length(repeat('x', 300000000))",
            "SELECT lpad('x', 300000000)",
            "SELECT rpad('x', 300000000, 'yz')",
            "SELECT array_repeat(1, 300000000)",
            "SELECT length(repeat('x', 1000 + value)) FROM generate_series(1, 8000)",
        ] {
            let err = run(sql).await.unwrap_err();
            assert!(
                matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)),
                "{sql}: {err}"
            );
        }
    }
}
