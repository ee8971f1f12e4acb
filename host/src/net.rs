//! Socket helpers shared by the servers: accepting connections without spinning or flooding
//! the log, admission control ([`admission`]), and the small HTTP/1 ports (health, metrics).

pub mod admission;
pub mod h2_authority;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use admission::{Admission, Limits};

/// Pause after a failed accept before the next try.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// At most one "accept failed" line per this interval; the line says how many were held back.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Failed accepts of the whole process, throttled: out of file descriptors, every listener
/// fails at once and each would log every [`ACCEPT_RETRY`].
static ACCEPT_ERRORS: crate::logs::Throttle = crate::logs::Throttle::new(ACCEPT_LOG_INTERVAL);

/// The next connection on `listener`, with `TCP_NODELAY` set. A failed accept (out of file
/// descriptors, say) is logged (at most one line per [`ACCEPT_LOG_INTERVAL`]) and retried
/// after a short pause instead of spinning.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    accept_or(listener, || {}).await
}

/// [`accept`], calling `failed` after each failed accept (to free descriptors, say).
pub async fn accept_or(
    listener: &TcpListener,
    mut failed: impl FnMut(),
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) => {
                if let Some(held_back) = ACCEPT_ERRORS.admit(Instant::now()) {
                    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                    tracing::warn!(port, error = %e, held_back, "accept failed; retrying");
                }
                failed();
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// The limits of the small HTTP/1 ports (Sentry's health and metrics, the sidecar's metrics):
/// a few clients (probes, a scraper) and short answers, so a few connections each, and no
/// reason to wait long for a request.
pub const HTTP_LIMITS: Limits = Limits {
    max_connections: 32,
    per_address: 8,
    // No handshake on plain TCP: the connection is established at accept.
    handshake: HTTP_HEADER_READ_TIMEOUT,
    first_request: HTTP_HEADER_READ_TIMEOUT,
    idle: HTTP_HEADER_READ_TIMEOUT,
};
/// How long a client of [`serve_http1`] has to send a request's headers (and, between
/// requests on a kept-alive connection, to start the next one).
pub const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest life of a connection to [`serve_http1`], however busy: then it is asked to
/// close (after the answer in progress) and cut [`HTTP_CLOSE_GRACE`] later.
pub const HTTP_MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// Time a connection gets to finish after it is asked to close.
pub const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` over HTTP/1.1 on `listener` until `stopped`, for the small ports: at most
/// [`HTTP_LIMITS`] connections (a full port closes its idlest connection for a newcomer, see
/// [`admission`]), request headers within [`HTTP_HEADER_READ_TIMEOUT`], each connection at
/// most [`HTTP_MAX_CONNECTION_AGE`]. A flood of half-sent requests therefore holds at most a
/// few descriptors for a few seconds, and a scrape in the middle of it is still answered.
/// Connections still open at `stopped` are closed.
pub async fn serve_http1(
    listener: TcpListener,
    router: axum::Router,
    stopped: impl Future<Output = ()>,
) {
    serve_http1_maybe_tls(listener, None, router, stopped).await;
}

/// [`serve_http1`] over TLS with `acceptor` (the handshake within
/// [`HTTP_HEADER_READ_TIMEOUT`]); `None`: plain TCP.
pub async fn serve_http1_maybe_tls(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    stopped: impl Future<Output = ()>,
) {
    let table = Admission::new(HTTP_LIMITS);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => return,
            c = accept_or(&listener, || table.accept_failed()) => c,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(slot) = table.admit(peer) else {
            continue;
        };
        slot.established();
        let router = router.clone();
        match &acceptor {
            None => {
                conns.spawn(serve_http1_connection(tcp, slot, router));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HTTP_HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        serve_http1_connection(tls, slot, router).await;
                    }
                });
            }
        }
    }
}

async fn serve_http1_connection<T>(tcp: T, slot: admission::Slot, router: axum::Router)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt as _;
    let state = slot.state().clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let busy = state.begin();
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await;
            drop(busy);
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let mut expiry = admission::Expiry::new(slot);
    let age = tokio::time::sleep(HTTP_MAX_CONNECTION_AGE);
    tokio::pin!(age);
    tokio::select! {
        _ = &mut conn => return,
        _ = expiry.expired() => return,
        () = &mut age => conn.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(HTTP_CLOSE_GRACE, conn).await;
}

/// Raises this process's soft limit on open files to its hard limit (as Go programs, Dapr's
/// among them, do at start) and returns the limit now in force (`u64::MAX`: unlimited).
/// Servers size their connection tables from it.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` means unlimited.
    let (Some(current), maximum) = (limit.current, limit.maximum) else {
        return u64::MAX;
    };
    if maximum.is_none_or(|m| m > current) {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return maximum.unwrap_or(u64::MAX);
        }
    }
    current
}
