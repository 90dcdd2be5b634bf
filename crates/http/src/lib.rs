//! The HTTP interface of opsbuffer. Handlers are small: they parse the
//! request, call the engine, and render the answer; [`error::ApiError`]
//! maps every failure to a response in one place.

pub mod error;
pub mod observatory;
pub mod ops;
pub mod params;
pub mod records;
pub mod writes;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tower_http::trace::TraceLayer;

pub use records::AppState;

/// Largest request body accepted: a bulk registration of 10 000 files fits.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Longest any request may take, including a `consistency=replicated` wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    Router::new()
        // Generic merged reads and writes.
        .route("/transactions", post(writes::transaction))
        .route("/transactions/{id}", get(ops::transaction))
        .route("/records/{table}", get(records::list))
        .route("/records/{table}/{id}", get(records::get))
        .route("/records/{table}/{id}/{child_table}", get(records::children))
        // Observatory endpoints of the existing API.
        .route("/executed_obs_units/start", post(writes::start_executed_obs_unit))
        .route("/executed_obs_units/{id}/finish", put(writes::finish_executed_obs_unit))
        .route("/executed_obs_units/{obs_unit_id}", get(observatory::executed_obs_units_of))
        .route("/raw_data_files", post(writes::create_raw_data_file))
        .route("/raw_data_files/", post(writes::create_raw_data_file))
        .route("/raw_data_files/bulk", post(writes::create_raw_data_files))
        .route("/raw_data_files/{id}", get(observatory::raw_data_file))
        .route("/raw_data_package", post(writes::create_raw_data_package))
        .route("/raw_data_package/", post(writes::create_raw_data_package))
        .route("/raw_data_package/{id}", get(observatory::raw_data_package))
        .route("/raw_data_package/{id}/finalize", put(writes::finalize_raw_data_package))
        // Operations.
        .route("/health", get(ops::health))
        .route("/buffer/dead", get(ops::dead_letters))
        .route("/buffer/blocked", get(ops::blocked))
        .route("/buffer/dead/{id}/retry", post(ops::retry_dead_letter))
        .route("/buffer/dead/{id}", axum::routing::delete(ops::discard_dead_letter))
        .route("/schema", get(ops::schema))
        .route("/schema/reload", post(ops::reload_schema))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found("no_route", format!("no endpoint at {}; see /openapi.json for the list", uri.path()))
}
