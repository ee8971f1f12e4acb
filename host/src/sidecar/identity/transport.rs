//! The driver's two inputs from outside: where identity requests go ([`Transport`]) and what
//! time it is on the wall ([`WallClock`]). Production uses [`SentryTransport`] and
//! [`SystemWall`]; the virtual-time tests put a CA in their own process and a clock that
//! follows tokio's paused one.

use std::sync::Arc;
use std::time::SystemTime;

use crate::client::{ClientError, SentryClient, SentryTarget, SignRequest};
use crate::trust::Anchors;

/// The answer to one identity request: the chain (DER, leaf first), not judged yet.
pub type Answer = Result<Vec<Vec<u8>>, ClientError>;

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
#[derive(Clone, Debug)]
pub struct SentryTransport {
    /// `host:port`.
    pub address: String,
    /// Sentry's SPIFFE ID.
    pub sentry_id: String,
}

impl Transport for SentryTransport {
    fn sign(
        &self,
        req: SignRequest,
        anchors: Arc<Anchors>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>> {
        let target = SentryTarget {
            address: self.address.clone(),
            anchors,
            sentry_id: self.sentry_id.clone(),
        };
        Box::pin(async move {
            let mut client = SentryClient::connect(target).await?;
            Ok(client.request(&req).await?.chain)
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
