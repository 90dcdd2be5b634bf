//! Operator actions on dead letters: list, show, retry, discard. Each
//! action is logged with the transaction id.

use opsbuffer_redis::TransactionRecord;
use uuid::Uuid;

use crate::engine::{Engine, now_ms};
use crate::error::EngineError;

impl Engine {
    /// Dead-lettered transactions, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<TransactionRecord>, EngineError> {
        Ok(self.buffer.dead_letters().await?)
    }

    /// Transactions held back by dead letters, oldest first.
    pub async fn blocked_transactions(&self) -> Result<Vec<TransactionRecord>, EngineError> {
        Ok(self.buffer.blocked().await?)
    }

    /// One transaction's state.
    pub async fn transaction(&self, id: Uuid) -> Result<TransactionRecord, EngineError> {
        self.buffer.transaction(id).await?.ok_or_else(|| {
            EngineError::not_found(
                "transaction_not_found",
                format!("transaction {id} is unknown: it was never buffered here, or it replicated longer ago than the retention period"),
            )
        })
    }

    /// Requeues a dead letter ahead of every later transaction.
    pub async fn retry_dead_letter(&self, id: Uuid) -> Result<u64, EngineError> {
        match self.buffer.retry_dead(id, now_ms()).await? {
            Some(released) => {
                tracing::info!(transaction_id = %id, released_blocked = released, "operator requeued a dead-lettered transaction");
                self.queued.notify_one();
                Ok(released)
            }
            None => Err(self.not_dead(id).await),
        }
    }

    /// Discards a dead letter and its overlays.
    pub async fn discard_dead_letter(&self, id: Uuid) -> Result<u64, EngineError> {
        match self.buffer.discard_dead(id, now_ms()).await? {
            Some(released) => {
                tracing::warn!(transaction_id = %id, released_blocked = released, "operator discarded a dead-lettered transaction and its overlays");
                self.queued.notify_one();
                Ok(released)
            }
            None => Err(self.not_dead(id).await),
        }
    }

    async fn not_dead(&self, id: Uuid) -> EngineError {
        match self.buffer.transaction(id).await {
            Ok(Some(record)) => EngineError::not_found(
                "not_dead_lettered",
                format!(
                    "transaction {id} is {}, not dead-lettered; only dead letters can be retried or discarded",
                    record.state
                ),
            ),
            _ => EngineError::not_found("transaction_not_found", format!("transaction {id} is unknown")),
        }
    }
}
