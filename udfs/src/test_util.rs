//! Helpers for the unit tests: invoke a UDF directly on arrays or scalars.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use datafusion::arrow::datatypes::{Field, Float64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl};

/// Evaluates `udf` over `args` (after its own coercion has been applied by the caller).
pub(crate) fn eval(udf: &dyn ScalarUDFImpl, args: Vec<ColumnarValue>, rows: usize) -> ArrayRef {
    let arg_fields: Vec<_> = args
        .iter()
        .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
        .collect();
    let scalars: Vec<_> = args
        .iter()
        .map(|a| match a {
            ColumnarValue::Scalar(s) => Some(s),
            ColumnarValue::Array(_) => None,
        })
        .collect();
    let return_field = udf
        .return_field_from_args(ReturnFieldArgs {
            arg_fields: &arg_fields,
            scalar_arguments: &scalars,
        })
        .unwrap();
    let out = udf
        .invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: rows,
            return_field,
            config_options: Arc::new(ConfigOptions::default()),
        })
        .unwrap();
    out.to_array(rows).unwrap()
}

pub(crate) fn eval_arrays(udf: &dyn ScalarUDFImpl, arrays: Vec<ArrayRef>) -> ArrayRef {
    let rows = arrays[0].len();
    eval(
        udf,
        arrays.into_iter().map(ColumnarValue::Array).collect(),
        rows,
    )
}

pub(crate) fn f64_array(values: &[Option<f64>]) -> ColumnarValue {
    ColumnarValue::Array(Arc::new(Float64Array::from(values.to_vec())))
}

pub(crate) fn str_array(values: &[Option<&str>]) -> ColumnarValue {
    ColumnarValue::Array(Arc::new(StringArray::from(values.to_vec())))
}

pub(crate) fn f64s(array: &ArrayRef) -> Vec<f64> {
    array.as_primitive::<Float64Type>().values().to_vec()
}

pub(crate) fn strs(array: &ArrayRef) -> Vec<String> {
    assert_eq!(array.null_count(), 0);
    array
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or_default().to_owned())
        .collect()
}
