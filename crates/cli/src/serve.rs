//! `opsbuffer serve`: the site API with its drainer and LSN watcher.

use std::net::SocketAddr;

use anyhow::Context;
use opsbuffer_engine::config::redact_url;
use opsbuffer_engine::{Engine, drain::Drainer, watch};
use tokio::net::TcpListener;

use crate::settings::ServiceSettings;

/// Runs the service until SIGTERM or Ctrl-C, then stops accepting
/// requests, lets the drainer finish its batch, releases the lease and
/// returns.
pub async fn run(settings: ServiceSettings, listen: SocketAddr) -> anyhow::Result<()> {
    let config = settings.site_config();
    tracing::info!(
        site = %config.site_name,
        site_type = %config.site_type,
        auth_required = config.auth.required,
        open_endpoints = ?config.auth.open_endpoints.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        main = %redact_url(&config.main.url),
        local = %redact_url(&config.local.url),
        redis = %redact_url(&config.redis.url),
        "starting opsbuffer"
    );
    // Listen for signals before anything starts, so a SIGTERM that arrives
    // during start-up shuts down cleanly instead of killing the process.
    let shutdown_requested = shutdown_signal()?;
    let engine = Engine::start(config).await.context("start-up failed")?;

    let mut background = Vec::new();
    if engine.is_secondary() {
        background.push(Drainer::new(engine.clone()).spawn());
        background.push(watch::spawn(engine.clone()));
    }

    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let app = opsbuffer_http::router(engine.clone());
    let shutdown_engine = engine.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_requested.await;
            tracing::info!("shutting down: no new requests; finishing the batch in flight");
            shutdown_engine.shut_down();
        })
        .await
        .context("the HTTP server failed")?;

    engine.shut_down();
    for task in background {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Registers for SIGTERM and Ctrl-C now and returns a future that
/// completes when either arrives.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let interrupt = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        let terminated = terminate.recv();
        #[cfg(not(unix))]
        let terminated = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = interrupt => {}
            _ = terminated => {}
        }
    })
}
