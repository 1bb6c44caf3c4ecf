//! `kpi_calculation(merchant_id, daily_value)`: a merchant's KPI from its daily value.
//!
//! Seed: NULL value counts as 0.0; merchant ids starting with `MCH-A` get
//! `round(value * 1.1, 2)`, every other merchant `round(value, 2)` (Python's
//! round, see [`crate::round`]). The prefix → multiplier list comes from [`Rules`];
//! the first matching prefix wins.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::args::{StrSource, check_arity, coerce_float, coerce_string, with_str_source};
use crate::calc_discrepancy::scalar_f64;
use crate::output::{finish, non_null_field};
use crate::round::py_round2;
use crate::rules::Rules;

const NAME: &str = "kpi_calculation";
const ARGS: [&str; 2] = ["merchant_id", "daily_value"];

/// The `kpi_calculation` scalar function with its rules.
#[derive(Debug)]
pub struct KpiCalculation {
    signature: Signature,
    multipliers: Vec<(String, f64)>,
}

impl PartialEq for KpiCalculation {
    fn eq(&self, other: &Self) -> bool {
        self.multipliers.len() == other.multipliers.len()
            && self
                .multipliers
                .iter()
                .zip(&other.multipliers)
                .all(|((p, m), (q, n))| p == q && m.to_bits() == n.to_bits())
    }
}

impl Eq for KpiCalculation {}

impl Hash for KpiCalculation {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (prefix, m) in &self.multipliers {
            prefix.hash(state);
            m.to_bits().hash(state);
        }
    }
}

impl KpiCalculation {
    /// Creates the function with the rules' prefix → multiplier list.
    pub fn new(rules: &Rules) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            multipliers: rules
                .kpi_multipliers
                .iter()
                .map(|m| (m.prefix.clone(), m.multiplier))
                .collect(),
        }
    }

    /// The seed's rule for one row.
    #[inline]
    fn kpi(&self, merchant: Option<&str>, value: Option<f64>) -> f64 {
        let value = value.unwrap_or(0.0);
        let multiplier = merchant.filter(|m| !m.is_empty()).and_then(|m| {
            self.multipliers
                .iter()
                .find(|(prefix, _)| m.starts_with(prefix.as_str()))
                .map(|(_, f)| *f)
        });
        match multiplier {
            Some(f) => py_round2(value * f),
            None => py_round2(value),
        }
    }

    fn run<S: StrSource>(
        &self,
        merchants: S,
        values: &ColumnarValue,
        rows: usize,
    ) -> Result<ArrayRef> {
        let out: Vec<f64> = match values {
            ColumnarValue::Array(a) => {
                let a: &Float64Array = a.as_primitive::<Float64Type>();
                let raw = a.values();
                match a.nulls().filter(|n| n.null_count() > 0) {
                    None => (0..rows)
                        .map(|i| self.kpi(merchants.get(i), Some(raw[i])))
                        .collect(),
                    Some(nulls) => (0..rows)
                        .map(|i| self.kpi(merchants.get(i), nulls.is_valid(i).then(|| raw[i])))
                        .collect(),
                }
            }
            ColumnarValue::Scalar(s) => {
                let v = scalar_f64(s)?;
                (0..rows).map(|i| self.kpi(merchants.get(i), v)).collect()
            }
        };
        Ok(Arc::new(Float64Array::new(out.into(), None)))
    }
}

static DOC: LazyLock<Documentation> =
    LazyLock::new(|| {
        Documentation::builder(
        crate::DOC_SECTION,
        "Merchant KPI from a daily value: with the default rules, merchants whose id starts with \
         'MCH-A' get round(daily_value * 1.1, 2), all others round(daily_value, 2) (Python's \
         round, ties to even). A NULL value counts as 0.0. Prefixes and multipliers are \
         configurable under [[rules.kpi_multipliers]].",
        "kpi_calculation(merchant_id, daily_value)",
    )
    .with_sql_example("SELECT kpi_calculation('MCH-A001', 100.0);  -- 110.0")
    .with_argument("merchant_id", "The merchant id, a string.")
    .with_argument("daily_value", "The merchant's daily value (e.g. sum of amounts), numeric.")
    .with_related_udf("calc_discrepancy")
    .build()
    });

impl ScalarUDFImpl for KpiCalculation {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(NAME, &ARGS, arg_types)?;
        Ok(vec![
            coerce_string(NAME, ARGS[0], &arg_types[0])?,
            coerce_float(NAME, ARGS[1], &arg_types[1])?,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn return_field_from_args(
        &self,
        _args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        Ok(non_null_field(NAME, DataType::Float64))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [merchant, value] = args.args.as_slice() else {
            return exec_err!("{NAME} takes 2 arguments");
        };
        let all_scalar = matches!(
            (merchant, value),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let result = with_str_source!(NAME, merchant, |m| self.run(m, value, rows)?);
        finish(result, all_scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::KpiMultiplier;
    use crate::test_util::{eval, f64_array, f64s, str_array};
    use datafusion::arrow::array::StringViewArray;
    use datafusion::common::ScalarValue;

    #[test]
    fn seed_rule() {
        let f = KpiCalculation::new(&Rules::default());
        let m = str_array(&[
            Some("MCH-A001"),
            Some("MCH-B001"),
            None,
            Some("MCH-A9"),
            Some(""),
            Some("mch-a1"),
        ]);
        let v = f64_array(&[
            Some(100.0),
            Some(2.675),
            Some(3.0),
            None,
            Some(1.005),
            Some(10.0),
        ]);
        let out = f64s(&eval(&f, vec![m, v], 6));
        assert_eq!(out, vec![110.0, 2.67, 3.0, 0.0, 1.0, 10.0]);
    }

    #[test]
    fn scalars_views_and_rules() {
        let rules = Rules {
            kpi_multipliers: vec![
                KpiMultiplier {
                    prefix: "X".into(),
                    multiplier: 2.0,
                },
                KpiMultiplier {
                    prefix: "XY".into(),
                    multiplier: 3.0,
                },
            ],
            ..Rules::default()
        };
        let f = KpiCalculation::new(&rules);
        let m: ArrayRef = Arc::new(StringViewArray::from(vec![Some("XY1"), Some("Z")]));
        let v = ColumnarValue::Scalar(ScalarValue::Float64(Some(1.25)));
        assert_eq!(
            f64s(&eval(&f, vec![ColumnarValue::Array(m), v], 2)),
            vec![2.5, 1.25]
        );
        let m = ColumnarValue::Scalar(ScalarValue::Utf8(Some("X".into())));
        let v = ColumnarValue::Scalar(ScalarValue::Float64(None));
        assert_eq!(f64s(&eval(&f, vec![m, v], 1)), vec![0.0]);
    }
}
