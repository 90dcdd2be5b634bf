//! The Lua scripts, each prefixed with the shared helpers.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/common.lua"), include_str!(concat!("lua/", $file)))))
    };
}

/// Checks preconditions and writes a transaction with all its overlay
/// entries at once.
pub static ACKNOWLEDGE: LazyLock<Script> = script!("acknowledge.lua");
/// Reads the overlays of some tables, and their epochs, at one instant.
pub static SNAPSHOT: LazyLock<Script> = script!("snapshot.lua");
/// Picks the next batch for the lease holder and bumps drain epochs.
pub static SELECT_BATCH: LazyLock<Script> = script!("select_batch.lua");
/// Marks transactions applied with their commit LSN.
pub static MARK_APPLIED: LazyLock<Script> = script!("mark_applied.lua");
/// Moves a rejected transaction to the dead letters.
pub static DEAD_LETTER: LazyLock<Script> = script!("dead_letter.lua");
/// Evicts replicated transactions; idempotent.
pub static EVICT: LazyLock<Script> = script!("evict.lua");
/// Requeues a dead letter and releases blocked transactions.
pub static RETRY_DEAD: LazyLock<Script> = script!("retry_dead.lua");
/// Discards a dead letter with its overlays.
pub static DISCARD_DEAD: LazyLock<Script> = script!("discard_dead.lua");
/// Acquires, renews and releases the drainer lease.
pub static LEASE: LazyLock<Script> = script!("lease.lua");
