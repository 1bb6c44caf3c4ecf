//! `flag_compliance(fraud_score, policy_flags)`: a risk label from the ML fraud
//! score and the policy flags that apply to the transaction.
//!
//! Seed: NULL score counts as 0.0; `flags = upper(policy_flags or '')`;
//! `score > 0.8 or 'BLACKLIST' in flags` → `HIGH_RISK`; elif `'KYC' in flags` →
//! `REQUIRES_KYC`; else `OK`. Threshold, words and labels come from [`Rules`].
//! `policy_flags` may also be a `List<Utf8>`: a row then behaves like its non-NULL
//! elements joined with `,` (words never contain `,`, see [`Rules::validate`]).

use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, ListArray, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::args::{StrSource, check_arity, coerce_float, is_string, upper_into, with_str_source};
use crate::calc_discrepancy::scalar_f64;
use crate::output::{finish, non_null_field};
use crate::rules::Rules;

const NAME: &str = "flag_compliance";
const ARGS: [&str; 2] = ["fraud_score", "policy_flags"];

/// The `flag_compliance` scalar function with its rules.
#[derive(Debug)]
pub struct FlagCompliance {
    signature: Signature,
    threshold: f64,
    high_risk_words: Vec<String>,
    kyc_words: Vec<String>,
    labels: [String; 3],
    /// Prebuilt substring searchers for the two word lists (derived from the words).
    high_risk_finders: Vec<Finder<'static>>,
    kyc_finders: Vec<Finder<'static>>,
}

impl PartialEq for FlagCompliance {
    fn eq(&self, other: &Self) -> bool {
        self.threshold.to_bits() == other.threshold.to_bits()
            && self.high_risk_words == other.high_risk_words
            && self.kyc_words == other.kyc_words
            && self.labels == other.labels
    }
}

impl Eq for FlagCompliance {}

impl Hash for FlagCompliance {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.threshold.to_bits().hash(state);
        self.high_risk_words.hash(state);
        self.kyc_words.hash(state);
        self.labels.hash(state);
    }
}

/// The three outcomes, indexing `labels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Risk {
    High = 0,
    Kyc = 1,
    Ok = 2,
}

impl FlagCompliance {
    /// Creates the function with the given rules (words are compared upper-cased).
    pub fn new(rules: &Rules) -> Self {
        let upper =
            |words: &[String]| -> Vec<String> { words.iter().map(|w| w.to_uppercase()).collect() };
        let finders = |words: &[String]| {
            words
                .iter()
                .map(|w| Finder::new(w.as_bytes()).into_owned())
                .collect()
        };
        let high_risk_words = upper(&rules.high_risk_words);
        let kyc_words = upper(&rules.kyc_words);
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            threshold: rules.risk_threshold,
            high_risk_finders: finders(&high_risk_words),
            kyc_finders: finders(&kyc_words),
            high_risk_words,
            kyc_words,
            labels: [
                rules.labels.high_risk.clone(),
                rules.labels.requires_kyc.clone(),
                rules.labels.ok.clone(),
            ],
        }
    }

    /// Classifies one row from its score and the pieces of its flags.
    #[inline]
    fn classify<'a>(
        &self,
        score: Option<f64>,
        pieces: impl Iterator<Item = &'a str>,
        buf: &mut String,
    ) -> Risk {
        if score.unwrap_or(0.0) > self.threshold {
            return Risk::High;
        }
        let mut kyc = false;
        for piece in pieces {
            if piece.is_empty() {
                continue;
            }
            let upper = upper_into(piece, buf).as_bytes();
            if self
                .high_risk_finders
                .iter()
                .any(|f| f.find(upper).is_some())
            {
                return Risk::High;
            }
            kyc = kyc || self.kyc_finders.iter().any(|f| f.find(upper).is_some());
        }
        if kyc { Risk::Kyc } else { Risk::Ok }
    }

    fn run<S: Scores, F: Flags>(&self, scores: S, flags: F, rows: usize) -> ArrayRef {
        let longest = self.labels.iter().map(String::len).max().unwrap_or(0);
        let mut out = StringBuilder::with_capacity(rows, rows * longest);
        let mut buf = String::new();
        for row in 0..rows {
            let risk = self.classify(scores.get(row), flags.pieces(row), &mut buf);
            out.append_value(&self.labels[risk as usize]);
        }
        Arc::new(out.finish())
    }

    fn run_flags<S: Scores>(
        &self,
        scores: S,
        flags: &ColumnarValue,
        rows: usize,
    ) -> Result<ArrayRef> {
        let list_of = |t: &DataType| matches!(t, DataType::List(_));
        match flags {
            ColumnarValue::Array(a) if list_of(a.data_type()) => {
                Ok(self.run(scores, ListFlags::new(a.as_list::<i32>(), false)?, rows))
            }
            ColumnarValue::Scalar(s) if list_of(&s.data_type()) => {
                let a = s.to_array()?;
                Ok(self.run(scores, ListFlags::new(a.as_list::<i32>(), true)?, rows))
            }
            _ => with_str_source!(NAME, flags, |src| Ok(self.run(scores, src, rows))),
        }
    }
}

/// Row access to the fraud score.
trait Scores {
    fn get(&self, row: usize) -> Option<f64>;
}

impl Scores for &Float64Array {
    #[inline]
    fn get(&self, row: usize) -> Option<f64> {
        if self.is_null(row) {
            None
        } else {
            Some(self.value(row))
        }
    }
}

impl Scores for Option<f64> {
    #[inline]
    fn get(&self, _row: usize) -> Option<f64> {
        *self
    }
}

/// Row access to the policy flags as pieces of text.
trait Flags {
    fn pieces(&self, row: usize) -> impl Iterator<Item = &str>;
}

impl<T: StrSource> Flags for T {
    #[inline]
    fn pieces(&self, row: usize) -> impl Iterator<Item = &str> {
        self.get(row).into_iter()
    }
}

/// `List<Utf8>` flags; `constant` when the argument was a scalar list.
struct ListFlags<'a> {
    list: &'a ListArray,
    values: &'a StringArray,
    constant: bool,
}

impl<'a> ListFlags<'a> {
    fn new(list: &'a ListArray, constant: bool) -> Result<Self> {
        match list.values().as_string_opt::<i32>() {
            Some(values) => Ok(Self {
                list,
                values,
                constant,
            }),
            None => exec_err!("{NAME}: policy_flags list must hold Utf8 values"),
        }
    }
}

impl Flags for ListFlags<'_> {
    fn pieces(&self, row: usize) -> impl Iterator<Item = &str> {
        let row = if self.constant { 0 } else { row };
        let range = if self.list.is_null(row) {
            0..0
        } else {
            let offsets = self.list.value_offsets();
            offsets[row] as usize..offsets[row + 1] as usize
        };
        range.filter_map(|j| self.values.get(j))
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        crate::DOC_SECTION,
        "Risk label from a fraud score and policy flags. With the default rules: a score above 0.8, \
         or flags containing BLACKLIST (case-insensitive), gives 'HIGH_RISK'; else flags containing \
         KYC give 'REQUIRES_KYC'; else 'OK'. A NULL score counts as 0.0, NULL flags as ''. \
         Threshold, words and labels are configurable under [rules].",
        "flag_compliance(fraud_score, policy_flags)",
    )
    .with_sql_example("SELECT flag_compliance(0.3, 'kyc,aml');  -- REQUIRES_KYC")
    .with_argument("fraud_score", "ML fraud score, numeric (NULL = 0.0).")
    .with_argument(
        "policy_flags",
        "Policy flags: a string (e.g. comma-separated) or a list of strings.",
    )
    .build()
});

impl ScalarUDFImpl for FlagCompliance {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(NAME, &ARGS, arg_types)?;
        let score = coerce_float(NAME, ARGS[0], &arg_types[0])?;
        let flags = match &arg_types[1] {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
                if is_string(f.data_type()) || *f.data_type() == DataType::Null =>
            {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
            t => crate::args::coerce_string(NAME, ARGS[1], t).or_else(|_| {
                plan_err!(
                    "{NAME}: argument `policy_flags` must be a string or a list of strings, got {t}"
                )
            })?,
        };
        Ok(vec![score, flags])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(
        &self,
        _args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        Ok(non_null_field(NAME, DataType::Utf8))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [score, flags] = args.args.as_slice() else {
            return exec_err!("{NAME} takes 2 arguments");
        };
        let all_scalar = matches!(
            (score, flags),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let result = match score {
            ColumnarValue::Array(a) => {
                self.run_flags(a.as_primitive::<Float64Type>(), flags, rows)?
            }
            ColumnarValue::Scalar(s) => self.run_flags(scalar_f64(s)?, flags, rows)?,
        };
        finish(result, all_scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{eval, f64_array, str_array, strs};
    use datafusion::arrow::array::{LargeStringArray, ListBuilder, StringViewArray};
    use datafusion::common::ScalarValue;

    fn udf() -> FlagCompliance {
        FlagCompliance::new(&Rules::default())
    }

    #[test]
    fn every_branch() {
        let scores = f64_array(&[
            Some(0.9),
            Some(0.8),
            None,
            Some(0.1),
            Some(f64::NAN),
            Some(0.5),
            Some(0.2),
        ]);
        let flags = str_array(&[
            None,
            Some("AML"),
            Some("kyc"),
            Some("x,blacklist"),
            Some(""),
            Some("Straße,KYC"),
            Some("blacklıst"),
        ]);
        let out = eval(&udf(), vec![scores, flags], 7);
        assert_eq!(
            strs(&out),
            [
                "HIGH_RISK",
                "OK",
                "REQUIRES_KYC",
                "HIGH_RISK",
                "OK",
                "REQUIRES_KYC",
                "HIGH_RISK"
            ]
        );
    }

    #[test]
    fn all_string_types_and_scalars() {
        let scores = f64_array(&[Some(0.0), None]);
        let large: ArrayRef = Arc::new(LargeStringArray::from(vec![Some("kyc"), None]));
        let view: ArrayRef = Arc::new(StringViewArray::from(vec![Some("BLACKLIST"), Some("kyc")]));
        let out = eval(&udf(), vec![scores.clone(), ColumnarValue::Array(large)], 2);
        assert_eq!(strs(&out), ["REQUIRES_KYC", "OK"]);
        let out = eval(&udf(), vec![scores.clone(), ColumnarValue::Array(view)], 2);
        assert_eq!(strs(&out), ["HIGH_RISK", "REQUIRES_KYC"]);
        let scalar_flags = ColumnarValue::Scalar(ScalarValue::Utf8(Some("KYC".into())));
        let out = eval(&udf(), vec![scores, scalar_flags.clone()], 2);
        assert_eq!(strs(&out), ["REQUIRES_KYC", "REQUIRES_KYC"]);
        let high = ColumnarValue::Scalar(ScalarValue::Float64(Some(0.95)));
        let out = eval(&udf(), vec![high, scalar_flags], 1);
        assert_eq!(strs(&out), ["HIGH_RISK"]);
    }

    #[test]
    fn list_flags() {
        let mut b = ListBuilder::new(StringBuilder::new());
        b.append_value([Some("aml"), Some("kyc")]);
        b.append_value([None, Some("blacklist")]);
        b.append(false);
        b.append_value::<[Option<&str>; 0], _>([]);
        let list: ArrayRef = Arc::new(b.finish());
        let scores = f64_array(&[Some(0.1), Some(0.1), Some(0.1), Some(0.81)]);
        let out = eval(&udf(), vec![scores, ColumnarValue::Array(list)], 4);
        assert_eq!(strs(&out), ["REQUIRES_KYC", "HIGH_RISK", "OK", "HIGH_RISK"]);
    }

    #[test]
    fn configured_rules() {
        let mut rules = Rules {
            risk_threshold: 0.5,
            kyc_words: vec!["aml".into()],
            ..Rules::default()
        };
        rules.labels.ok = "FINE".into();
        let f = FlagCompliance::new(&rules);
        let out = eval(
            &f,
            vec![
                f64_array(&[Some(0.6), Some(0.1), Some(0.1)]),
                str_array(&[None, Some("AML"), Some("kyc")]),
            ],
            3,
        );
        assert_eq!(strs(&out), ["HIGH_RISK", "REQUIRES_KYC", "FINE"]);
    }

    #[test]
    fn planning_errors() {
        let err = udf()
            .coerce_types(&[DataType::Float64, DataType::Int64])
            .unwrap_err();
        assert!(err.to_string().contains("policy_flags"), "{err}");
        assert!(udf().coerce_types(&[DataType::Float64]).is_err());
    }
}
