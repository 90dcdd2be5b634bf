//! Redis adapter of opsbuffer: the buffer of pending transactions, their
//! overlays, the replication bookkeeping and the drainer lease.
//!
//! Every change to the buffer is one Lua script (in `src/lua/`), so a crash
//! or a lost connection never leaves half a transaction. This crate stores
//! and returns what it is given; it never interprets record values.
//!
//! Layout, with `P` the site prefix `{site}:`:
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:seq` | counter | last acknowledgement sequence number |
//! | `P:queue` | sorted set | queued transaction ids by sequence number |
//! | `P:blocked` | sorted set | transactions held back by a dead letter |
//! | `P:dead` | sorted set | dead-lettered transactions |
//! | `P:applied` | sorted set | `{commit lsn}:{id}` of applied transactions waiting for replication |
//! | `P:tx:{id}` | hash | state, sequence, entries, touched records, attempts, error, commit LSN, times |
//! | `P:overlay:{table}` | hash | entry name → entry JSON |
//! | `P:rec:{table}` | hash | record key → `c,d,n` (create pending, delete pending, entry count) |
//! | `P:ver:{table}`, `P:log:{table}`, `P:logfloor:{table}` | counter, sorted set, string | overlay version and change log |
//! | `P:epoch:{table}` | counter | drain epoch, bumped before each batch that touches the table |
//! | `P:held` | hash | record → ids of dead or blocked transactions touching it |
//! | `P:drainer`, `P:fence` | string, counter | the drainer lease and its fencing tokens |
//! | `P:token_used` | hash | API token id → last use in ms since the epoch |

pub mod buffer;
pub mod scripts;

pub use buffer::*;
