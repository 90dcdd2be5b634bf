//! The opsbuffer service without its HTTP layer: everything one site's
//! process does with PostgreSQL and Redis.
//!
//! - [`config`]: the site's settings.
//! - [`engine`]: shared state and start-up.
//! - [`cache`]: the in-process copy of each table's overlays.
//! - [`read`]: merged pages, single records and consistency modes.
//! - [`write`]: checks against the data, then buffering or write-through.
//! - [`drain`]: the drainer that applies the queue to main.
//! - [`watch`]: the LSN watcher that evicts replicated overlays.
//! - [`health`]: the health report.
//! - [`metrics`]: the Prometheus metrics of one engine.
//! - [`tokens`]: API tokens: creation, listing, revocation, verification.
//! - [`dead`]: dead-letter operations.

pub mod cache;
pub mod config;
pub mod dead;
pub mod drain;
pub mod engine;
pub mod error;
pub mod guards;
pub mod health;
pub mod metrics;
pub mod read;
pub mod tokens;
pub mod watch;
pub mod write;

pub use config::{AuthSettings, DrainSettings, OpenEndpoint, SiteConfig, SiteType};
pub use engine::Engine;
pub use error::EngineError;
pub use read::Consistency;
