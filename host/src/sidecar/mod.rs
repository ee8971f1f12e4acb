//! The sidecar: the workload identity it holds (from Sentry, rotated by the core machine) and,
//! in later steps, mutual TLS between sidecars and the app's localhost API.

pub mod identity;

use std::sync::Arc;

use tokio::net::TcpListener;

use identity::IdentityState;

/// Serves the sidecar's health (`/v1.0/healthz`: 204 with an identity, 500 without, as daprd
/// answers) on the app-facing listener, and its metrics on another, until `shutdown`.
///
/// # Errors
///
/// An I/O error of a listener.
pub async fn serve_health_and_metrics(
    state: Arc<IdentityState>,
    http: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let health = axum::Router::new()
        .route("/v1.0/healthz", axum::routing::get(healthz))
        .route("/v1.0/healthz/outbound", axum::routing::get(healthz))
        .with_state(state.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let stop = stopped();
    tasks.spawn(async move { axum::serve(http, health).with_graceful_shutdown(stop).await });
    if let Some(l) = metrics {
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics_text))
            .route("/", axum::routing::get(metrics_text))
            .with_state(state);
        let stop = stopped();
        tasks.spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await });
    }
    shutdown.await;
    let _ = tx.send(true);
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            result = Err(e);
        }
    }
    result
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<Arc<IdentityState>>,
) -> axum::http::StatusCode {
    if state.is_ready() {
        axum::http::StatusCode::NO_CONTENT
    } else {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    }
}

async fn metrics_text(
    axum::extract::State(state): axum::extract::State<Arc<IdentityState>>,
) -> String {
    state.metrics().render()
}
