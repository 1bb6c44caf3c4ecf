//! The Arrow Flight SQL endpoint (DESIGN §6).
//!
//! - [`service`]: the `FlightSqlService` implementation (message translation).
//! - [`queries`]: planning, prepared statements, limits, streaming, cancellation.
//! - [`catalog_info`]: GetCatalogs / GetDbSchemas / GetTables / GetTableTypes.
//! - [`sql_info`]: GetSqlInfo and GetXdbcTypeInfo tables.
//! - [`auth`]: Basic → Bearer handshake and the token check on every call.
//! - [`error`]: DataFusion errors → gRPC status codes.
//! - [`guard`]: the router as clients reach it (undecodable commands are
//!   InvalidArgument).

pub mod auth;
pub mod catalog_info;
pub mod error;
pub mod guard;
pub mod queries;
pub mod service;
pub mod sql_info;

pub use service::ReconFlightSql;

/// `n` random bytes as lowercase hex: query ids, prepared-statement handles and
/// tokens, unguessable by other clients.
pub(crate) fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
