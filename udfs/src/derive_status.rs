//! `derive_status(cur_status, bank_status)`: the final status of a transaction,
//! blending its real-time status with what the bank statement says.
//!
//! Seed (with "cur or X" = `cur` unless it is NULL or ''):
//! bank NULL/'' → cur or `UNKNOWN`; `upper(bank) == 'MATCHED'` → cur or `MATCHED`;
//! `upper(bank) == 'UNMATCHED'` → `DISCREPANCY`; otherwise cur or bank (as given).
//! The recognised bank words and the labels come from [`Rules`].

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::args::{StrSource, check_arity, coerce_string, upper_into, with_str_source};
use crate::output::{finish, non_null_field};
use crate::rules::Rules;

const NAME: &str = "derive_status";
const ARGS: [&str; 2] = ["cur_status", "bank_status"];

/// The `derive_status` scalar function with its rules.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DeriveStatus {
    signature: Signature,
    /// Upper-cased bank word meaning "matched"; also the label when cur is empty.
    matched: String,
    /// Upper-cased bank word meaning "unmatched".
    unmatched: String,
    discrepancy: String,
    unknown: String,
}

/// What the bank status says, once compared upper-cased.
enum Bank<'a> {
    Missing,
    Matched,
    Unmatched,
    Other(&'a str),
}

impl DeriveStatus {
    /// Creates the function with the rules' labels.
    pub fn new(rules: &Rules) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            matched: rules.labels.matched.to_uppercase(),
            unmatched: rules.labels.unmatched.to_uppercase(),
            discrepancy: rules.labels.discrepancy.clone(),
            unknown: rules.labels.unknown.clone(),
        }
    }

    #[inline]
    fn read_bank<'a>(&self, bank: Option<&'a str>, buf: &mut String) -> Bank<'a> {
        let Some(b) = bank.filter(|b| !b.is_empty()) else {
            return Bank::Missing;
        };
        let is = |word: &str, buf: &mut String| {
            if b.is_ascii() {
                b.len() == word.len() && b.eq_ignore_ascii_case(word)
            } else {
                upper_into(b, buf) == word
            }
        };
        if is(&self.matched, buf) {
            Bank::Matched
        } else if is(&self.unmatched, buf) {
            Bank::Unmatched
        } else {
            Bank::Other(b)
        }
    }

    #[inline]
    fn derive<'a>(&'a self, cur: Option<&'a str>, bank: Bank<'a>) -> &'a str {
        let cur = cur.filter(|c| !c.is_empty());
        match bank {
            Bank::Missing => cur.unwrap_or(&self.unknown),
            Bank::Matched => cur.unwrap_or(&self.matched),
            Bank::Unmatched => &self.discrepancy,
            Bank::Other(b) => cur.unwrap_or(b),
        }
    }

    fn run<C: StrSource, B: StrSource>(&self, cur: C, bank: B, rows: usize) -> ArrayRef {
        let mut out = StringBuilder::with_capacity(rows, rows * 10);
        let mut buf = String::new();
        for row in 0..rows {
            let b = self.read_bank(bank.get(row), &mut buf);
            out.append_value(self.derive(cur.get(row), b));
        }
        Arc::new(out.finish())
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        crate::DOC_SECTION,
        "Final transaction status from the real-time status and the bank/reconciliation status. \
         Bank status NULL or '' → cur_status, or 'UNKNOWN' if that is NULL/''; 'MATCHED' \
         (any case) → cur_status, or 'MATCHED'; 'UNMATCHED' (any case) → 'DISCREPANCY'; \
         anything else → cur_status, or the bank status. Labels are configurable under [rules.labels].",
        "derive_status(cur_status, bank_status)",
    )
    .with_sql_example("SELECT derive_status('APPROVED', 'unmatched');  -- DISCREPANCY")
    .with_argument("cur_status", "The transaction's current status, a string.")
    .with_argument("bank_status", "The bank or reconciliation status, a string.")
    .build()
});

impl ScalarUDFImpl for DeriveStatus {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(NAME, &ARGS, arg_types)?;
        ARGS.iter()
            .zip(arg_types)
            .map(|(name, t)| coerce_string(NAME, name, t))
            .collect()
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
        let [cur, bank] = args.args.as_slice() else {
            return exec_err!("{NAME} takes 2 arguments");
        };
        let all_scalar = matches!(
            (cur, bank),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let result = with_str_source!(NAME, cur, |c| with_str_source!(NAME, bank, |b| self
            .run(c, b, rows)));
        finish(result, all_scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{eval, str_array, strs};
    use datafusion::arrow::array::{LargeStringArray, StringViewArray};
    use datafusion::common::ScalarValue;

    #[test]
    fn every_branch() {
        let f = DeriveStatus::new(&Rules::default());
        let cur = str_array(&[
            Some("APPROVED"),
            None,
            Some(""),
            Some("REFUNDED"),
            None,
            Some("PENDING"),
            None,
            Some("X"),
            None,
        ]);
        let bank = str_array(&[
            None,
            Some(""),
            Some("matched"),
            Some("MATCHED"),
            Some("Matched"),
            Some("unmatched"),
            Some("weird"),
            Some("weird"),
            Some("UNMATCHED"),
        ]);
        let out = eval(&f, vec![cur, bank], 9);
        assert_eq!(
            strs(&out),
            [
                "APPROVED",
                "UNKNOWN",
                "MATCHED",
                "REFUNDED",
                "MATCHED",
                "DISCREPANCY",
                "weird",
                "X",
                "DISCREPANCY"
            ]
        );
    }

    #[test]
    fn unicode_upper_and_mixed_types() {
        let f = DeriveStatus::new(&Rules::default());
        let cur: ArrayRef = Arc::new(LargeStringArray::from(vec![None::<&str>, None]));
        // U+0131 (dotless i) and U+017F (long s) are not in MATCHED; "ﬁ" upper-cases to "FI".
        let bank: ArrayRef = Arc::new(StringViewArray::from(vec![Some("unmatcheď"), Some("ﬁ")]));
        let out = eval(
            &f,
            vec![ColumnarValue::Array(cur), ColumnarValue::Array(bank)],
            2,
        );
        assert_eq!(strs(&out), ["unmatcheď", "ﬁ"]);
        let s = ColumnarValue::Scalar(ScalarValue::Utf8(Some("APPROVED".into())));
        let b = ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some("MATCHED".into())));
        assert_eq!(strs(&eval(&f, vec![s, b], 1)), ["APPROVED"]);
    }

    #[test]
    fn planning_errors() {
        let f = DeriveStatus::new(&Rules::default());
        assert!(f.coerce_types(&[DataType::Utf8, DataType::Int8]).is_err());
        assert!(
            f.coerce_types(&[DataType::Utf8, DataType::Utf8, DataType::Utf8])
                .is_err()
        );
    }
}
