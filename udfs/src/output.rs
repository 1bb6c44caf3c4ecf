//! Building results: the non-nullable return field every function declares (the
//! seed's functions never return NULL), and turning a computed array back into a
//! scalar when every argument was a scalar.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

/// The return field: never NULL, whatever the inputs.
pub(crate) fn non_null_field(name: &str, data_type: DataType) -> FieldRef {
    Arc::new(Field::new(name, data_type, false))
}

/// Wraps a kernel's result: a scalar when every argument was a scalar.
pub(crate) fn finish(result: ArrayRef, all_scalar: bool) -> Result<ColumnarValue> {
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &result, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(result))
    }
}
