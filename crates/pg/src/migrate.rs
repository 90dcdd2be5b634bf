//! Schema migrations for main, embedded in the binary. The replica follows
//! main by streaming replication, so migrations only ever run on main.

use crate::connect::{PgError, PgSettings, connect};

/// The history table; its `opsbuffer_` prefix keeps it out of the registry.
const MIGRATION_TABLE: &str = "opsbuffer_schema_history";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Applies every migration main does not have yet and returns the names of
/// those applied now.
pub async fn run(settings: &PgSettings) -> Result<Vec<String>, PgError> {
    let (mut client, driver) = connect(settings).await?;
    let report = embedded::migrations::runner()
        .set_migration_table_name(MIGRATION_TABLE)
        .run_async(&mut client)
        .await
        .map_err(|e| PgError::Decode { label: settings.label, message: format!("migration failed: {e}") });
    driver.abort();
    Ok(report?.applied_migrations().iter().map(|m| m.to_string()).collect())
}
