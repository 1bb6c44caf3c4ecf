//! Argument plumbing shared by the five functions: type coercion at planning
//! time, and uniform row access to string arguments at execution time.
//!
//! Planning: each function checks its argument count and types in
//! `coerce_types`, turning anything unusable into a `plan_err!` that names the
//! function and the argument. Execution: a string argument can be a Utf8,
//! LargeUtf8 or Utf8View array or a scalar; [`StrSource`] gives all of them the
//! same `get(row)` and [`with_str_source!`] monomorphises a kernel per case.

use datafusion::arrow::array::{Array, GenericStringArray, OffsetSizeTrait, StringViewArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};

/// Fails planning unless exactly `names.len()` arguments were given.
pub(crate) fn check_arity(function: &str, names: &[&str], types: &[DataType]) -> Result<()> {
    if types.len() != names.len() {
        return plan_err!(
            "{function}({}) takes {} argument(s), got {}",
            names.join(", "),
            names.len(),
            types.len()
        );
    }
    Ok(())
}

/// The string type an argument is coerced to, or a planning error.
pub(crate) fn coerce_string(function: &str, arg: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(t.clone()),
        DataType::Null => Ok(DataType::Utf8),
        DataType::Dictionary(_, value) if is_string(value) => Ok(value.as_ref().clone()),
        other => plan_err!("{function}: argument `{arg}` must be a string, got {other}"),
    }
}

/// Coerces a numeric argument to Float64, or fails planning.
pub(crate) fn coerce_float(function: &str, arg: &str, t: &DataType) -> Result<DataType> {
    if t.is_numeric() || *t == DataType::Null {
        Ok(DataType::Float64)
    } else {
        plan_err!("{function}: argument `{arg}` must be numeric, got {t}")
    }
}

pub(crate) fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Row access to a string argument, whatever its physical form.
pub(crate) trait StrSource {
    /// The value at `row`, `None` for NULL.
    fn get(&self, row: usize) -> Option<&str>;
}

impl<O: OffsetSizeTrait> StrSource for &GenericStringArray<O> {
    #[inline]
    fn get(&self, row: usize) -> Option<&str> {
        if self.is_null(row) {
            None
        } else {
            Some(self.value(row))
        }
    }
}

impl StrSource for &StringViewArray {
    #[inline]
    fn get(&self, row: usize) -> Option<&str> {
        if self.is_null(row) {
            None
        } else {
            Some(self.value(row))
        }
    }
}

/// A scalar argument: the same value for every row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConstStr<'a>(pub(crate) Option<&'a str>);

impl StrSource for ConstStr<'_> {
    #[inline]
    fn get(&self, _row: usize) -> Option<&str> {
        self.0
    }
}

/// The string inside a scalar argument, or an execution error for other scalars.
pub(crate) fn scalar_str<'a>(function: &str, value: &'a ScalarValue) -> Result<ConstStr<'a>> {
    match value {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            Ok(ConstStr(v.as_deref()))
        }
        ScalarValue::Null => Ok(ConstStr(None)),
        other => exec_err!(
            "{function}: expected a string argument, got {}",
            other.data_type()
        ),
    }
}

/// Binds `$src` to a [`StrSource`] for the `ColumnarValue` `$arg` and evaluates
/// `$body` once per physical form (so the kernel is compiled per form).
macro_rules! with_str_source {
    ($function:expr, $arg:expr, |$src:ident| $body:expr) => {{
        use datafusion::arrow::array::AsArray as _;
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::ColumnarValue;
        match $arg {
            ColumnarValue::Scalar(value) => {
                let $src = $crate::args::scalar_str($function, value)?;
                $body
            }
            ColumnarValue::Array(array) => match array.data_type() {
                DataType::Utf8 => {
                    let $src = array.as_string::<i32>();
                    $body
                }
                DataType::LargeUtf8 => {
                    let $src = array.as_string::<i64>();
                    $body
                }
                DataType::Utf8View => {
                    let $src = array.as_string_view();
                    $body
                }
                other => {
                    return datafusion::common::exec_err!(
                        "{}: expected a string array, got {other}",
                        $function
                    );
                }
            },
        }
    }};
}
pub(crate) use with_str_source;

/// Upper-cases like Python's `str.upper()` (full Unicode mapping, e.g. `ß` → `SS`)
/// into `buf`, with a fast path for ASCII.
#[inline]
pub(crate) fn upper_into<'b>(s: &str, buf: &'b mut String) -> &'b str {
    buf.clear();
    if s.is_ascii() {
        buf.push_str(s);
        buf.make_ascii_uppercase();
    } else {
        for c in s.chars() {
            buf.extend(c.to_uppercase());
        }
    }
    buf.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_matches_python() {
        let mut buf = String::new();
        assert_eq!(upper_into("kyc", &mut buf), "KYC");
        assert_eq!(upper_into("straße", &mut buf), "STRASSE");
        assert_eq!(upper_into("blacklıst", &mut buf), "BLACKLIST");
        assert_eq!(upper_into("ﬁle", &mut buf), "FILE");
        assert_eq!(upper_into("", &mut buf), "");
    }

    #[test]
    fn coercion_errors_name_the_argument() {
        let err = coerce_string("mask_sensitive", "user_id", &DataType::Int32).unwrap_err();
        assert!(
            err.to_string()
                .contains("mask_sensitive: argument `user_id` must be a string")
        );
        let err = coerce_float("kpi_calculation", "daily_value", &DataType::Utf8).unwrap_err();
        assert!(err.to_string().contains("must be numeric"));
        let err = check_arity("f", &["a", "b"], &[DataType::Utf8]).unwrap_err();
        assert!(err.to_string().contains("takes 2 argument(s), got 1"));
    }
}
