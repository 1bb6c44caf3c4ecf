//! How a DataFusion error becomes a gRPC status (DESIGN §6): the code tells the
//! client what kind of failure it was, the message is DataFusion's own text.
//!
//! | error | code |
//! |---|---|
//! | SQL syntax, planning, schema (unknown column), bad configuration, Arrow compute errors (casts, division by zero) | `InvalidArgument` |
//! | unknown table, missing object | `NotFound` |
//! | memory limit | `ResourceExhausted` |
//! | feature not supported | `Unimplemented` |
//! | object store / I/O trouble | `Unavailable` |
//! | everything else | `Internal` |

use datafusion::error::DataFusionError;
use tonic::Status;

/// Maps a DataFusion error to the gRPC status a client should see.
pub fn status_from_datafusion(err: &DataFusionError) -> Status {
    let message = err.to_string();
    let root = root_cause(err);
    match root {
        DataFusionError::External(inner) => {
            if let Some(status) = inner.downcast_ref::<Status>() {
                return status.clone();
            }
            Status::internal(message)
        }
        DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_)
        | DataFusionError::ArrowError(..) => Status::invalid_argument(message),
        DataFusionError::Plan(text) if is_table_not_found(text) => Status::not_found(message),
        DataFusionError::Plan(_) => Status::invalid_argument(message),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ObjectStore(e) if matches!(**e, object_store::Error::NotFound { .. }) => {
            Status::not_found(message)
        }
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => {
            Status::unavailable(message)
        }
        _ => Status::internal(message),
    }
}

/// The innermost error, looking through context, diagnostics and shared wrappers.
fn root_cause(err: &DataFusionError) -> &DataFusionError {
    match err {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            root_cause(inner)
        }
        DataFusionError::Shared(inner) => root_cause(inner),
        DataFusionError::Collection(errors) => errors.first().map_or(err, root_cause),
        other => other,
    }
}

/// DataFusion reports an unknown table as a planning error `table 'x' not found`.
fn is_table_not_found(text: &str) -> bool {
    text.starts_with("table '") && text.ends_with("' not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;
    use tonic::Code;

    async fn code_of(sql: &str) -> Code {
        let ctx = SessionContext::new();
        let result = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        status_from_datafusion(&result.unwrap_err()).code()
    }

    #[tokio::test]
    async fn codes_follow_the_kind_of_error() {
        assert_eq!(code_of("SELEC 1").await, Code::InvalidArgument);
        assert_eq!(code_of("SELECT * FROM no_such_table").await, Code::NotFound);
        assert_eq!(
            code_of("SELECT no_such_column").await,
            Code::InvalidArgument
        );
        assert_eq!(code_of("SELECT 1/0").await, Code::InvalidArgument);
        let exhausted = DataFusionError::ResourcesExhausted("pool full".into());
        let wrapped = DataFusionError::Context("while sorting".into(), Box::new(exhausted));
        assert_eq!(
            status_from_datafusion(&wrapped).code(),
            Code::ResourceExhausted
        );
        let status = Status::cancelled("stop");
        let external = DataFusionError::External(Box::new(status));
        assert_eq!(status_from_datafusion(&external).code(), Code::Cancelled);
    }
}
