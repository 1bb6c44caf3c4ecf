//! `mask_sensitive(user_id)`: hides a user id behind its first characters.
//!
//! Seed: `'' if not user_id else user_id[:2] + '*' * (len(user_id) - 2)`, where
//! lengths count characters (code points), not bytes. Keep-length and mask
//! character come from [`Rules`].

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::args::{StrSource, check_arity, coerce_string, with_str_source};
use crate::output::{finish, non_null_field};
use crate::rules::Rules;

const NAME: &str = "mask_sensitive";
const ARGS: [&str; 1] = ["user_id"];
/// Mask characters are written in runs of this many.
const RUN: usize = 64;

/// The `mask_sensitive` scalar function with its rules.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MaskSensitive {
    signature: Signature,
    keep: usize,
    /// `RUN` copies of the mask character.
    mask_run: String,
}

impl MaskSensitive {
    /// Creates the function with the rules' keep-length and mask character.
    pub fn new(rules: &Rules) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            keep: rules.mask_keep,
            mask_run: std::iter::repeat_n(rules.mask_char, RUN).collect(),
        }
    }

    /// Appends `count` mask characters to the current value of `out`.
    fn write_mask(&self, out: &mut StringBuilder, mut count: usize) -> std::fmt::Result {
        let width = self.mask_run.len() / RUN;
        while count > 0 {
            let n = count.min(RUN);
            out.write_str(&self.mask_run[..n * width])?;
            count -= n;
        }
        Ok(())
    }

    /// Appends the masked form of one value (or '' for NULL/'') as the next row.
    #[inline]
    fn mask_into(&self, value: Option<&str>, out: &mut StringBuilder) -> std::fmt::Result {
        let s = value.unwrap_or("");
        let (kept, hidden) = if s.is_ascii() {
            let k = self.keep.min(s.len());
            (&s[..k], s.len() - k)
        } else {
            match s.char_indices().nth(self.keep) {
                Some((cut, _)) => (&s[..cut], s[cut..].chars().count()),
                None => (s, 0),
            }
        };
        out.write_str(kept)?;
        self.write_mask(out, hidden)?;
        out.append_value("");
        Ok(())
    }

    fn run<S: StrSource>(&self, src: S, rows: usize, bytes_hint: usize) -> Result<ArrayRef> {
        let mut out = StringBuilder::with_capacity(rows, bytes_hint);
        for row in 0..rows {
            self.mask_into(src.get(row), &mut out)
                .map_err(|e| DataFusionError::Execution(format!("{NAME}: {e}")))?;
        }
        Ok(Arc::new(out.finish()))
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        crate::DOC_SECTION,
        "Masks a user id for display: keeps the first 2 characters and replaces every further \
         character with '*' (lengths in characters, not bytes). NULL or '' gives ''. \
         Keep-length and mask character are configurable under [rules].",
        "mask_sensitive(user_id)",
    )
    .with_sql_example("SELECT mask_sensitive('USR-1234');  -- US******")
    .with_argument("user_id", "The identifier to mask, a string.")
    .build()
});

impl ScalarUDFImpl for MaskSensitive {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(NAME, &ARGS, arg_types)?;
        Ok(vec![coerce_string(NAME, ARGS[0], &arg_types[0])?])
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
        let [user_id] = args.args.as_slice() else {
            return exec_err!("{NAME} takes 1 argument");
        };
        let (all_scalar, hint) = match user_id {
            ColumnarValue::Scalar(_) => (true, 16),
            ColumnarValue::Array(a) => (false, a.get_buffer_memory_size().min(rows * 32)),
        };
        let result = with_str_source!(NAME, user_id, |src| self.run(src, rows, hint)?);
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
    fn seed_examples_and_edges() {
        let f = MaskSensitive::new(&Rules::default());
        let input = str_array(&[
            Some("USR-1234"),
            None,
            Some(""),
            Some("A"),
            Some("AB"),
            Some("ABC"),
            Some("żółw🦀x"),
            Some("é"),
        ]);
        let out = eval(&f, vec![input], 8);
        assert_eq!(
            strs(&out),
            ["US******", "", "", "A", "AB", "AB*", "żó****", "é"]
        );
    }

    #[test]
    fn string_types_and_scalar() {
        let f = MaskSensitive::new(&Rules::default());
        let large: ArrayRef = Arc::new(LargeStringArray::from(vec![Some("abcd"), None]));
        assert_eq!(
            strs(&eval(&f, vec![ColumnarValue::Array(large)], 2)),
            ["ab**", ""]
        );
        let view: ArrayRef = Arc::new(StringViewArray::from(vec![Some(
            "a-very-long-user-identifier-0001",
        )]));
        assert_eq!(
            strs(&eval(&f, vec![ColumnarValue::Array(view)], 1)),
            [format!("a-{}", "*".repeat(30))]
        );
        let s = ColumnarValue::Scalar(ScalarValue::Utf8View(Some("xyz".into())));
        assert_eq!(strs(&eval(&f, vec![s], 1)), ["xy*"]);
    }

    #[test]
    fn configured_mask_and_long_runs() {
        let rules = Rules {
            mask_keep: 0,
            mask_char: '•',
            ..Rules::default()
        };
        let f = MaskSensitive::new(&rules);
        let long = "x".repeat(200);
        let out = eval(&f, vec![str_array(&[Some(&long), Some("ab")])], 2);
        assert_eq!(strs(&out), ["•".repeat(200), "••".to_owned()]);
    }
}
