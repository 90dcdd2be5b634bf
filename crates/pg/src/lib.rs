//! PostgreSQL adapter of opsbuffer. It owns every SQL statement the service
//! sends and runs each under a timeout; it decides nothing about merging.
//!
//! - [`connect`]: connection settings, pools and the error type.
//! - [`catalog`]: the schema registry read from the catalog.
//! - [`reader`]: rows, server status and constraint checks.
//! - [`writer`]: applying batches of transactions to main, exactly once.
//! - [`migrate`]: the embedded schema migrations.

pub mod catalog;
pub mod connect;
pub mod migrate;
pub mod reader;
pub mod writer;

pub use connect::{PgError, PgSettings};
