//! The HTTP interface of opsbuffer. Handlers are small: they parse the
//! request, call the engine, and render the response; [`error::ApiError`]
//! maps every failure to a response in one place.
//!
//! The routes and the OpenAPI document come from one list
//! ([`api_router`]): each handler carries its `#[utoipa::path]`, and
//! `utoipa-axum` adds it to both. Routes are grouped by the scope they
//! need, and each group has one [`auth::authorize`] layer.

pub mod auth;
pub mod docs;
pub mod error;
pub mod observatory;
pub mod observe;
pub mod ops;
pub mod params;
pub mod records;
pub mod tokens;
pub mod writes;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use opsbuffer_engine::OpenEndpoint;
use opsbuffer_engine::tokens::Scope;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::auth::Access;
pub use records::AppState;

/// Largest request body accepted: a bulk registration of 10 000 files fits.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Longest any request may take, including a `consistency=replicated` wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Path of the interactive documentation page.
pub const DOCS_PATH: &str = "/docs";

/// Every documented route, grouped by the access it needs, with the
/// document they make. The scopes:
///
/// - `read:observations`: the merged view, transaction states, the schema;
/// - `write:observations`: every write;
/// - `admin`: dead letters, blocked transactions, schema reload, tokens;
/// - open by `AUTH_OPEN_ENDPOINTS` (otherwise any valid token): `/health`,
///   `/metrics`, and the documentation added in [`router`].
pub fn api_router(engine: &AppState) -> OpenApiRouter<AppState> {
    let layer = |access: Access| from_fn_with_state((engine.clone(), access), auth::authorize);

    let reads = OpenApiRouter::new()
        .routes(routes!(records::list))
        .routes(routes!(records::get))
        .routes(routes!(records::children))
        .routes(routes!(observatory::executed_obs_units_of))
        .routes(routes!(observatory::raw_data_file))
        .routes(routes!(observatory::raw_data_package))
        .routes(routes!(ops::transaction))
        .routes(routes!(ops::schema))
        .route_layer(layer(Access::Scope(Scope::ReadObservations)));

    let writes = OpenApiRouter::new()
        .routes(routes!(writes::transaction))
        .routes(routes!(writes::start_executed_obs_unit))
        .routes(routes!(writes::finish_executed_obs_unit))
        .routes(routes!(writes::create_raw_data_file))
        .routes(routes!(writes::create_raw_data_file_without_slash))
        .routes(routes!(writes::create_raw_data_files))
        .routes(routes!(writes::create_raw_data_package))
        .routes(routes!(writes::create_raw_data_package_without_slash))
        .routes(routes!(writes::finalize_raw_data_package))
        .route_layer(layer(Access::Scope(Scope::WriteObservations)));

    let admin = OpenApiRouter::new()
        .routes(routes!(ops::dead_letters))
        .routes(routes!(ops::blocked))
        .routes(routes!(ops::retry_dead_letter))
        .routes(routes!(ops::discard_dead_letter))
        .routes(routes!(ops::reload_schema))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::get, tokens::revoke))
        .route_layer(layer(Access::Scope(Scope::Admin)));

    let health =
        OpenApiRouter::new().routes(routes!(ops::health)).route_layer(layer(Access::Open(OpenEndpoint::Health)));
    let metrics =
        OpenApiRouter::new().routes(routes!(ops::metrics)).route_layer(layer(Access::Open(OpenEndpoint::Metrics)));

    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(reads)
        .merge(writes)
        .merge(admin)
        .merge(health)
        .merge(metrics)
}

/// The OpenAPI document of every route, `/openapi.json` and `/docs`
/// included.
pub fn openapi(engine: &AppState) -> utoipa::openapi::OpenApi {
    let (_, document) = api_router(engine).split_for_parts();
    with_documentation_paths(document)
}

fn with_documentation_paths(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    document.merge(docs::DocumentationPaths::openapi());
    document
}

/// Every route of the service, with authentication, request logging and
/// metrics.
pub fn router(engine: AppState) -> Router {
    let (api, document) = api_router(&engine).split_for_parts();
    let document = with_documentation_paths(document);
    // The Swagger UI files are compiled into the binary (the `vendored`
    // feature), so the page works without internet access. Swagger UI would
    // send the document to an online validator for its badge; `none` stops
    // that.
    let swagger =
        SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, document).config(Config::new([OPENAPI_PATH]).validator_url("none"));
    let documentation: Router<AppState> = Router::from(swagger)
        .route_layer(from_fn_with_state((engine.clone(), Access::Open(OpenEndpoint::Docs)), auth::authorize));

    api.merge(documentation)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .layer(map_response(json_error_bodies))
        .layer(from_fn_with_state(engine.clone(), observe::observe))
        .with_state(engine)
}

/// Replaces the empty or plain-text responses of the router (wrong
/// method), the body limit and the request timeout with the JSON error
/// body of every other error.
async fn json_error_bodies(response: Response) -> Response {
    let is_json =
        response.headers().get(CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes; split it into smaller requests"),
        )
        .into_response(),
        StatusCode::METHOD_NOT_ALLOWED => error::ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not accept that method; the Allow header lists the methods it accepts, and /openapi.json documents them",
        )
        .into_response(),
        StatusCode::SERVICE_UNAVAILABLE => error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("the request took longer than {} s and was stopped; retry it", REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
        _ => response,
    }
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found("no_route", format!("no endpoint at {}; see /openapi.json for the list", uri.path()))
}
