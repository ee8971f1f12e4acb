//! The sidecar: the workload identity it holds (from Sentry, rotated by the core machine),
//! mutual TLS between sidecars ([`mtls`]), and service invocation through the app's loopback
//! API ([`invoke`]).

pub mod identity;
pub mod invoke;
pub mod mtls;

use std::sync::Arc;

use tokio::net::TcpListener;

use identity::IdentityState;

/// Serves the sidecar's metrics (Dapr's runtime names) on `listener` until `stopped`.
///
/// # Errors
///
/// The listener's I/O error.
pub async fn serve_metrics(
    state: Arc<IdentityState>,
    listener: TcpListener,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_text))
        .route("/", axum::routing::get(metrics_text))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
}

async fn metrics_text(
    axum::extract::State(state): axum::extract::State<Arc<IdentityState>>,
) -> String {
    state.metrics().render()
}
