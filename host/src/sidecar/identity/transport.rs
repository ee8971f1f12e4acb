//! The driver's two inputs from outside: where identity requests go ([`Transport`]) and what
//! time it is on the wall ([`WallClock`]). Production uses [`SentryTransport`] and
//! [`SystemWall`]; the virtual-time tests put a CA in their own process and a clock that
//! follows tokio's paused one.

use std::sync::Arc;
use std::time::SystemTime;

use crate::client::{ClientError, SentryClient, SentryTarget, SignRequest, Signed};
use crate::trust::Anchors;

/// The answer to one identity request: the chain (DER, leaf first, not judged yet) and the
/// trust bundle Sentry sent.
pub type Answer = Result<Signed, ClientError>;

/// Where the driver's identity requests go: Sentry over gRPC ([`SentryTransport`]) in
/// production, a CA in the test's own process in virtual-time tests.
pub trait Transport: Send + Sync + 'static {
    /// One signing round for `req`, trusting Sentry through `anchors` (the anchors in force).
    fn sign(
        &self,
        req: SignRequest,
        anchors: Arc<Anchors>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;
}

/// Sentry over gRPC: a new connection per request, as daprd (Sentry's chain and SPIFFE ID
/// checked by the client); the answer is returned unjudged.
///
/// Sentry may be several replicas: `addresses` lists one or more `host:port`, and each name is
/// resolved to all its addresses (a headless Service's name gives every replica). A request
/// tries them in turn, starting one further along each time (so load spreads and a dead
/// replica is not always tried first), and moves on when one cannot be reached or its
/// connection fails under the request (`UNAVAILABLE` and the like); an answer from Sentry
/// (a certificate, or a refusal such as `PERMISSION_DENIED`) ends the round.
#[derive(Debug)]
pub struct SentryTransport {
    /// One or more `host:port`.
    pub addresses: Vec<String>,
    /// Sentry's SPIFFE ID.
    pub sentry_id: String,
    /// Where the next round starts.
    next: std::sync::atomic::AtomicUsize,
}

impl SentryTransport {
    /// A transport to the Sentry replicas at `addresses`, serving as `sentry_id`.
    pub fn new(addresses: Vec<String>, sentry_id: String) -> Self {
        Self {
            addresses,
            sentry_id,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Every address `addresses` name (each name resolved to all of its addresses, in order); a
/// name that does not resolve stays as it is, so the attempt reports why.
async fn resolve_all(addresses: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for a in addresses {
        match tokio::net::lookup_host(a.as_str()).await {
            Ok(found) => {
                let before = out.len();
                out.extend(found.map(|s| s.to_string()));
                if out.len() == before {
                    out.push(a.clone());
                }
            }
            Err(_) => out.push(a.clone()),
        }
    }
    out.dedup();
    out
}

/// Whether `e` says this replica could not serve the request, so another may.
fn try_another(e: &ClientError) -> bool {
    use tonic::Code;
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Refused { code, .. } => matches!(
            code,
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        ),
        _ => false,
    }
}

impl Transport for SentryTransport {
    fn sign(
        &self,
        req: SignRequest,
        anchors: Arc<Anchors>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>> {
        let addresses = self.addresses.clone();
        let sentry_id = self.sentry_id.clone();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            let mut candidates = resolve_all(&addresses).await;
            if candidates.is_empty() {
                return Err(ClientError::Config("no Sentry address".to_owned()));
            }
            let n = candidates.len();
            candidates.rotate_left(start % n);
            let mut last = None;
            for address in candidates {
                let target = SentryTarget {
                    address: address.clone(),
                    anchors: anchors.clone(),
                    sentry_id: sentry_id.clone(),
                };
                let answer = match SentryClient::connect(target).await {
                    Ok(mut client) => client.request(&req).await,
                    Err(e) => Err(e),
                };
                match answer {
                    Err(e) if try_another(&e) && n > 1 => {
                        tracing::warn!(%address, error = %e, "Sentry replica unusable; trying the next");
                        last = Some(e);
                    }
                    other => return other,
                }
            }
            Err(last.unwrap_or_else(|| ClientError::Config("no Sentry address".to_owned())))
        })
    }
}

/// The wall clock certificates are validated at.
pub trait WallClock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWall;

impl WallClock for SystemWall {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
