//! The sidecar: the workload identity it holds (from Sentry, rotated by the core machine),
//! mutual TLS between sidecars ([`mtls`]), and service invocation through the app's loopback
//! API ([`invoke`]).

pub mod identity;
pub mod invoke;
pub mod mtls;

use std::sync::Arc;

use tokio::net::TcpListener;

use identity::IdentityState;

/// Serves the sidecar's metrics (Dapr's runtime names) on `listener` until `stopped`, with the
/// small ports' limits ([`crate::net::serve_http1`]: a few connections, a header deadline).
pub async fn serve_metrics(
    state: Arc<IdentityState>,
    listener: TcpListener,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_text))
        .route("/", axum::routing::get(metrics_text))
        .with_state(state);
    crate::net::serve_http1(listener, app, stopped).await;
}

async fn metrics_text(
    axum::extract::State(state): axum::extract::State<Arc<IdentityState>>,
) -> String {
    state.metrics().render()
}

/// Where a sidecar listens.
#[derive(Debug)]
pub struct Listeners {
    /// The app-facing API (bind it to loopback).
    pub http: TcpListener,
    /// The port other sidecars call.
    pub internal: TcpListener,
    /// Metrics.
    pub metrics: Option<TcpListener>,
}

/// Runs a sidecar (identity, app-facing API, internal mTLS port, metrics) until `shutdown`
/// resolves; `state` is shared with the caller (to watch the identity).
///
/// # Errors
///
/// The identity driver's start-up error (unusable trust anchors).
pub async fn run(
    identity: identity::IdentityConfig,
    invoke: invoke::InvokeConfig,
    listeners: Listeners,
    state: Arc<IdentityState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), identity::IdentityError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let invoker = invoke::Invoker::new(invoke, state.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(invoke::serve_app(
        invoker.clone(),
        listeners.http,
        stopped(),
    ));
    let peers = invoke::serve_peers(invoker, listeners.internal, stopped());
    tasks.spawn(async move {
        if let Err(e) = peers.await {
            tracing::error!(error = %e, "the internal mTLS port stopped");
        }
    });
    if let Some(l) = listeners.metrics {
        tasks.spawn(serve_metrics(state.clone(), l, stopped()));
    }
    let driving = identity::drive(identity, state, stopped());
    tokio::pin!(shutdown);
    let driven = tokio::select! {
        r = driving => r,
        () = &mut shutdown => Ok(()),
    };
    // The driver returns on shutdown, or at once when it cannot start: stop the servers.
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    driven
}
