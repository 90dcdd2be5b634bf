//! The engine's error type. The HTTP layer maps each variant to a status
//! in one place.

use opsbuffer_core::query::QueryError;
use opsbuffer_core::tx::WriteError;
use opsbuffer_pg::PgError;
use opsbuffer_redis::BufferError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A write was rejected; nothing was queued.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A read request could not be understood.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The named record, table or transaction does not exist.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// A dependency is unavailable or the buffer is full; the client should
    /// retry after `retry_after_s` seconds.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after_s: u64 },
    /// A wait the client asked for ran out of time.
    #[error("{message}")]
    Timeout { code: &'static str, message: String },
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A state that should not occur, such as an unreadable overlay entry.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    pub fn not_found(code: &'static str, message: impl Into<String>) -> EngineError {
        EngineError::NotFound { code, message: message.into() }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after_s: u64) -> EngineError {
        EngineError::Unavailable { code, message: message.into(), retry_after_s }
    }
}
