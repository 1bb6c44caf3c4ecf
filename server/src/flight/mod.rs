//! The Arrow Flight SQL endpoint (DESIGN §6).
//!
//! - [`service`]: the `FlightSqlService` implementation (message translation).
//! - [`queries`]: planning, prepared statements, limits, streaming, cancellation.
//! - [`catalog_info`]: GetCatalogs / GetDbSchemas / GetTables / GetTableTypes.
//! - [`sql_info`]: GetSqlInfo and GetXdbcTypeInfo tables.
//! - [`auth`]: Basic → Bearer handshake and the token check on every call.
//! - [`error`]: DataFusion errors → gRPC status codes.

pub mod auth;
pub mod catalog_info;
pub mod error;
pub mod queries;
pub mod service;
pub mod sql_info;

pub use service::ReconFlightSql;
