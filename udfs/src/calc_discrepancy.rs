//! `calc_discrepancy(amount, amount_posted)`: what the bank posted minus what we
//! expected, rounded to cents.
//!
//! Seed: `0.0 if amount is None or amount_posted is None else round(amount_posted - amount, 2)`.
//! Floats follow Python bit for bit (see [`crate::round`]). When both arguments are
//! Decimal128 the arithmetic is exact and the result is a Decimal128 with scale 2,
//! rounded half to even; NULL gives 0.00.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Float64Array};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{DECIMAL128_MAX_PRECISION, DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{check_arity, coerce_float};
use crate::output::{finish, non_null_field};
use crate::round::{div_pow10_half_even, py_round2};

const NAME: &str = "calc_discrepancy";
const ARGS: [&str; 2] = ["amount", "amount_posted"];

/// The `calc_discrepancy` scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CalcDiscrepancy {
    signature: Signature,
}

impl Default for CalcDiscrepancy {
    fn default() -> Self {
        Self::new()
    }
}

impl CalcDiscrepancy {
    /// Creates the function (it has no configurable rules).
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        crate::DOC_SECTION,
        "Difference between the amount the bank posted and the amount of the transaction, \
         rounded to 2 decimals like Python's round (ties to even). Either argument NULL gives 0.0. \
         Float64 in general; Decimal128 with scale 2 (exact, half-even) when both arguments are decimals.",
        "calc_discrepancy(amount, amount_posted)",
    )
    .with_sql_example("SELECT calc_discrepancy(100.00, 99.555);  -- -0.44")
    .with_argument("amount", "Expected amount (the transaction's), numeric.")
    .with_argument("amount_posted", "Amount on the bank/aggregator statement, numeric.")
    .with_related_udf("kpi_calculation")
    .build()
});

/// The result type for two Decimal128 arguments: scale 2, enough integer digits
/// for the difference.
fn decimal_result(p1: u8, s1: i8, p2: u8, s2: i8) -> DataType {
    let int_digits = |p: u8, s: i8| i16::from(p) - i16::from(s);
    let digits = int_digits(p1, s1).max(int_digits(p2, s2)).max(1) + 1 + 2;
    let precision = digits.clamp(3, i16::from(DECIMAL128_MAX_PRECISION)) as u8;
    DataType::Decimal128(precision, 2)
}

impl ScalarUDFImpl for CalcDiscrepancy {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(NAME, &ARGS, arg_types)?;
        if let [a @ DataType::Decimal128(..), b @ DataType::Decimal128(..)] = arg_types {
            return Ok(vec![a.clone(), b.clone()]);
        }
        ARGS.iter()
            .zip(arg_types)
            .map(|(name, t)| coerce_float(NAME, name, t))
            .collect()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)] => {
                Ok(decimal_result(*p1, *s1, *p2, *s2))
            }
            _ => Ok(DataType::Float64),
        }
    }

    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(non_null_field(NAME, self.return_type(&types)?))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [amount, posted] = args.args.as_slice() else {
            return exec_err!("{NAME} takes 2 arguments");
        };
        let all_scalar = matches!(
            (amount, posted),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let result = match args.return_field.data_type() {
            DataType::Float64 => float_kernel(amount, posted, rows)?,
            DataType::Decimal128(p, s) => {
                let a = amount.to_array(rows)?;
                let b = posted.to_array(rows)?;
                decimal_kernel(a.as_primitive(), b.as_primitive(), *p, *s)?
            }
            other => return internal_err!("{NAME}: unexpected return type {other}"),
        };
        finish(result, all_scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The Python rule for one pair of non-NULL floats.
#[inline]
fn discrepancy(amount: f64, posted: f64) -> f64 {
    py_round2(posted - amount)
}

fn float_kernel(amount: &ColumnarValue, posted: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    let values: ScalarBuffer<f64> = match (amount, posted) {
        (ColumnarValue::Array(a), ColumnarValue::Array(b)) => {
            let (a, b) = (
                a.as_primitive::<Float64Type>(),
                b.as_primitive::<Float64Type>(),
            );
            let mut out: Vec<f64> = a
                .values()
                .iter()
                .zip(b.values())
                .map(|(&x, &y)| discrepancy(x, y))
                .collect();
            zero_nulls(&mut out, a.nulls());
            zero_nulls(&mut out, b.nulls());
            out.into()
        }
        (ColumnarValue::Array(a), ColumnarValue::Scalar(b)) => {
            let a = a.as_primitive::<Float64Type>();
            match scalar_f64(b)? {
                None => vec![0.0; rows].into(),
                Some(y) => {
                    let mut out: Vec<f64> = a.values().iter().map(|&x| discrepancy(x, y)).collect();
                    zero_nulls(&mut out, a.nulls());
                    out.into()
                }
            }
        }
        (ColumnarValue::Scalar(a), ColumnarValue::Array(b)) => {
            let b = b.as_primitive::<Float64Type>();
            match scalar_f64(a)? {
                None => vec![0.0; rows].into(),
                Some(x) => {
                    let mut out: Vec<f64> = b.values().iter().map(|&y| discrepancy(x, y)).collect();
                    zero_nulls(&mut out, b.nulls());
                    out.into()
                }
            }
        }
        (ColumnarValue::Scalar(a), ColumnarValue::Scalar(b)) => {
            let v = match (scalar_f64(a)?, scalar_f64(b)?) {
                (Some(x), Some(y)) => discrepancy(x, y),
                _ => 0.0,
            };
            vec![v; rows.max(1)].into()
        }
    };
    Ok(Arc::new(Float64Array::new(values, None)))
}

/// Sets the slots that are NULL in `nulls` to the seed's 0.0.
pub(crate) fn zero_nulls(out: &mut [f64], nulls: Option<&datafusion::arrow::buffer::NullBuffer>) {
    if let Some(nulls) = nulls.filter(|n| n.null_count() > 0) {
        for i in nulls
            .iter()
            .enumerate()
            .filter(|(_, valid)| !valid)
            .map(|(i, _)| i)
        {
            out[i] = 0.0;
        }
    }
}

/// The value of a Float64 (or NULL) scalar.
pub(crate) fn scalar_f64(value: &ScalarValue) -> Result<Option<f64>> {
    match value {
        ScalarValue::Float64(v) => Ok(*v),
        ScalarValue::Null => Ok(None),
        other => exec_err!("expected a Float64 argument, got {}", other.data_type()),
    }
}

fn decimal_kernel(
    amount: &Decimal128Array,
    posted: &Decimal128Array,
    precision: u8,
    scale: i8,
) -> Result<ArrayRef> {
    let (DataType::Decimal128(_, s1), DataType::Decimal128(_, s2)) =
        (amount.data_type(), posted.data_type())
    else {
        return internal_err!("{NAME}: decimal kernel called with non-decimal arrays");
    };
    let common = (*s1).max(*s2);
    let lift = |v: i128, s: i8| v.checked_mul(10i128.checked_pow((common - s) as u32)?);
    let overflow = || exec_err!("{NAME}: decimal overflow");
    let mut out = Vec::with_capacity(amount.len());
    for i in 0..amount.len() {
        if amount.is_null(i) || posted.is_null(i) {
            out.push(0);
            continue;
        }
        let (Some(a), Some(b)) = (lift(amount.value(i), *s1), lift(posted.value(i), *s2)) else {
            return overflow();
        };
        let Some(diff) = b.checked_sub(a) else {
            return overflow();
        };
        let rescaled = if common >= scale {
            div_pow10_half_even(diff, (common - scale) as u32)
        } else {
            10i128
                .checked_pow((scale - common) as u32)
                .and_then(|f| diff.checked_mul(f))
        };
        match rescaled {
            Some(v) => out.push(v),
            None => return overflow(),
        }
    }
    let array =
        Decimal128Array::new(out.into(), None).with_precision_and_scale(precision, scale)?;
    Ok(Arc::new(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{eval, f64_array, f64s};
    use datafusion::arrow::datatypes::Decimal128Type;

    #[test]
    fn arrays_with_nulls() {
        let udf = CalcDiscrepancy::new();
        let a = f64_array(&[Some(100.0), None, Some(1.0), Some(f64::INFINITY), Some(0.0)]);
        let b = f64_array(&[
            Some(99.555),
            Some(5.0),
            None,
            Some(f64::INFINITY),
            Some(2.675),
        ]);
        let out = eval(&udf, vec![a, b], 5);
        let got = f64s(&out);
        assert_eq!(got[0].to_bits(), (-0.44f64).to_bits());
        assert_eq!(got[1], 0.0);
        assert_eq!(got[2], 0.0);
        assert!(got[3].is_nan());
        assert_eq!(got[4], 2.67);
        assert_eq!(out.null_count(), 0);
    }

    #[test]
    fn scalar_arguments() {
        let udf = CalcDiscrepancy::new();
        let a = f64_array(&[Some(1.0), None]);
        let s = ColumnarValue::Scalar(ScalarValue::Float64(Some(0.125)));
        let out = eval(&udf, vec![s.clone(), a.clone()], 2);
        assert_eq!(f64s(&out), vec![0.88, 0.0]);
        let out = eval(&udf, vec![a, s.clone()], 2);
        assert_eq!(f64s(&out), vec![-0.88, 0.0]);
        let null = ColumnarValue::Scalar(ScalarValue::Float64(None));
        let out = eval(&udf, vec![null, s], 1);
        assert_eq!(f64s(&out), vec![0.0]);
    }

    #[test]
    fn decimals_are_exact_and_half_even() {
        let udf = CalcDiscrepancy::new();
        let a = Decimal128Array::from(vec![Some(10000), Some(100), None, Some(-5)])
            .with_precision_and_scale(10, 2)
            .unwrap();
        let b = Decimal128Array::from(vec![Some(99555), Some(1125), Some(1), Some(-10)])
            .with_precision_and_scale(10, 3)
            .unwrap();
        let ret = udf
            .return_type(&[a.data_type().clone(), b.data_type().clone()])
            .unwrap();
        assert_eq!(ret, DataType::Decimal128(11, 2));
        let out = crate::test_util::eval_arrays(&udf, vec![Arc::new(a), Arc::new(b)]);
        let out = out.as_primitive::<Decimal128Type>();
        // 99.555 - 100.00 = -0.445 → -0.44; 1.125 - 1.00 = 0.125 → 0.12; NULL → 0;
        // -0.010 - -0.05 = 0.040 → 0.04
        assert_eq!(out.values().to_vec(), vec![-44, 12, 0, 4]);
    }

    #[test]
    fn planning_errors() {
        let udf = CalcDiscrepancy::new();
        assert!(udf.coerce_types(&[DataType::Float64]).is_err());
        let err = udf
            .coerce_types(&[DataType::Utf8, DataType::Float64])
            .unwrap_err();
        assert!(
            err.to_string().contains("`amount` must be numeric"),
            "{err}"
        );
        assert_eq!(
            udf.coerce_types(&[DataType::Int32, DataType::Decimal128(10, 2)])
                .unwrap(),
            vec![DataType::Float64, DataType::Float64]
        );
    }
}
