//! The sidecar's workload identity: one tokio task drives the core rotation machine
//! ([`sigil_core::rotation::Rotation`]) with one timer armed at its `poll_timeout`, carries out
//! its actions through the Sentry client, and publishes each installed identity for the TLS
//! stack (and, optionally, as files for the app).
//!
//! - **Requests**: on `Action::Request` a fresh P-256 key (ring) and an empty CSR, as daprd
//!   sends, through a [`Transport`]: in production [`SentryTransport`], one new connection to
//!   Sentry per request (as daprd), checked against the trust anchors in force and Sentry's
//!   SPIFFE ID. The answer goes to the machine unjudged: the machine is the only judge (the
//!   path against its bundle, the workload profile, the key, and Dapr's
//!   `/ns/<namespace>/<app-id>` in any trust domain), so a bad answer is the same refusal, with
//!   the same backoff and metric (`invalid_cert`), on a sidecar and on a device.
//! - **Time is injected**: the monotonic clock is tokio's (so tests run under paused time) and
//!   the wall clock a [`WallClock`]; [`drive_with`] takes both the transport and the clock, and
//!   the rotation, outage and backoff tests run in virtual time.
//! - **A failed first fetch is not fatal**: the machine retries with backoff; readiness says
//!   whether an identity is held ([`IdentityState::is_ready`]).
//! - **Trust anchors at run time**: from `DAPR_TRUST_ANCHORS` (PEM in the environment) or a
//!   file that is watched and applied without a restart (Dapr needs one); an identity that no
//!   longer chains is renewed at once by the machine.
//! - **Metrics** with Dapr's runtime names: `dapr_runtime_mtls_init_total`,
//!   `dapr_runtime_mtls_init_fail_total{reason}`, `dapr_runtime_mtls_workload_cert_rotated_total`
//!   (which Dapr never increments; this does), `..._rotated_fail_total{reason}`, and the
//!   certificate's expiry.
//!
//! This file is the driver; [`anchors`] reads and watches the trust anchors, [`transport`] is
//! where requests go and what time it is, `files` writes the identity for the app, and
//! [`metrics`] counts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::profile::Expected;
use sigil_core::rotation::{Action, Clock, Policy, Rejection, RequestId, Rotation};
use sigil_core::{Instant, UnixTime};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::client::{ClientError, SignRequest};
use crate::key::P256Key;
use crate::trust::Anchors;

pub mod anchors;
mod files;
pub mod metrics;
pub mod transport;

pub use anchors::AnchorSource;
use anchors::{read_anchors, watch_file};
use files::write_files;
pub use metrics::RuntimeMetrics;
pub use transport::{Answer, SentryTransport, SystemWall, Transport, WallClock};

/// Bytes of certificate DER an identity's chain may hold.
pub const CHAIN_BYTES: usize = 8 * 1024;
/// Trust anchors the bundle may hold: the host's one capacity.
pub const ANCHORS: usize = crate::trust::CAPACITY;
/// Bytes of anchor DER the bundle may hold.
pub const ANCHOR_BYTES: usize = 64 * 1024;

type Machine<'c> = Rotation<'c, P256Key, CHAIN_BYTES, ANCHORS, ANCHOR_BYTES>;

/// What the identity driver needs.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// `--app-id` (or `SENTRY_LOCAL_IDENTITY`).
    pub app_id: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `--sentry-address`: one or more `host:port`, comma-separated (Sentry's replicas; a
    /// name is resolved to all its addresses), tried in turn ([`SentryTransport`]).
    pub sentry_address: String,
    /// Sentry's SPIFFE ID (`--control-plane-trust-domain`, `--control-plane-namespace`).
    pub sentry_id: String,
    /// The token sent with each request, re-read for each (`DAPR_SENTRY_TOKEN_FILE`; on
    /// Kubernetes the projected service-account token).
    pub token_file: Option<PathBuf>,
    /// The validator asked for, as daprd chooses it ([`crate::sidecar::Flags::resolve`]):
    /// `KUBERNETES` on Kubernetes, `JWKS` with a token file elsewhere, else Sentry's default.
    pub token_validator: crate::pb::sign_certificate_request::TokenValidator,
    /// The trust anchors.
    pub anchors: AnchorSource,
    /// Where to write `key.pem` (0600), `cert.pem` and `ca.pem` for the app, if anywhere.
    pub output_dir: Option<PathBuf>,
    /// The rotation policy.
    pub policy: Policy,
    /// `--sentry-request-jwt-audiences`: JWT-SVID audiences asked for with every certificate.
    pub jwt_audiences: Vec<String>,
}

/// The JWT-SVIDs that came with the identity in use (Sentry's `jwt` and `per_audience_jwts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSvids {
    /// The token for the trust domain and every audience asked for.
    pub jwt: String,
    /// Its audiences.
    pub audiences: Vec<String>,
    /// One token per audience.
    pub per_audience: std::collections::BTreeMap<String, String>,
    /// The main token's `exp`.
    pub expires: SystemTime,
    /// The main token's lifetime, `exp - iat` (both Sentry's clock).
    pub lifetime: Duration,
}

impl JwtSvids {
    /// The token for exactly `audiences`: the per-audience one for a single audience, else the
    /// main token when it holds them all.
    pub fn for_audiences(&self, audiences: &[String]) -> Option<&str> {
        if let [one] = audiences {
            if let Some(t) = self.per_audience.get(one) {
                return Some(t);
            }
        }
        audiences
            .iter()
            .all(|a| self.audiences.contains(a))
            .then_some(self.jwt.as_str())
    }

    /// From an answer already checked with [`crate::client::check_jwt_svids`]; `None` without a
    /// main token.
    fn from_signed(signed: &crate::client::Signed) -> Option<Self> {
        let jwt = signed.jwt.clone()?;
        let claims = crate::sentry::jwt::decode_unverified(&jwt).ok()?;
        let audiences = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let exp = claims.get("exp").and_then(serde_json::Value::as_u64)?;
        let iat = claims
            .get("iat")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(exp);
        Some(Self {
            lifetime: Duration::from_secs(exp.saturating_sub(iat)),
            jwt,
            audiences,
            per_audience: signed.per_audience_jwts.clone(),
            expires: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }
}

/// An installed identity, as the TLS stack uses it.
#[derive(Debug)]
pub struct Current {
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The key, PKCS#8 DER.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
    /// Counts installs from 1.
    pub generation: u32,
}

/// The identity a sidecar holds, shared with its TLS stack, health and metrics.
#[derive(Debug, Default)]
pub struct IdentityState {
    current: ArcSwapOption<Current>,
    anchors: ArcSwapOption<Anchors>,
    ready: AtomicBool,
    ever_installed: AtomicBool,
    metrics: RuntimeMetrics,
    last_rejection: Mutex<Option<Rejection>>,
    /// Wakes the driver to renew before the planned point ([`IdentityState::renew_early`]).
    renew_soon: tokio::sync::Notify,
    /// When an early renewal was last asked for.
    last_early: Mutex<Option<std::time::Instant>>,
    /// Bumped at every change of the identity or the anchors ([`IdentityState::subscribe`]).
    changed: tokio::sync::watch::Sender<u64>,
    /// The JWT-SVIDs that came with the identity in use.
    jwt: ArcSwapOption<JwtSvids>,
    /// What a signing round of its own needs (set by the driver).
    minter: std::sync::OnceLock<Minter>,
    /// JWT-SVIDs minted on demand, by SPIFFE ID and sorted audiences (at most
    /// [`ON_DEMAND_CACHE`]), each with when it is to be minted again (the sidecar's monotonic
    /// clock: half the tokens' own `exp - iat` after they came).
    on_demand: Mutex<OnDemand>,
    /// One minting round at a time, and how many more may start at once ([`MINT_BURST`]).
    minting: tokio::sync::Mutex<MintBudget>,
}

type OnDemand =
    std::collections::BTreeMap<(String, Vec<String>), (Arc<JwtSvids>, std::time::Instant)>;

/// How many sets of audiences the on-demand JWT-SVIDs are cached for.
pub const ON_DEMAND_CACHE: usize = 64;
/// How many minting rounds may run back to back; then one per [`MINT_EVERY`] (a local client
/// cycling through audiences cannot make the sidecar hammer Sentry).
pub const MINT_BURST: u32 = 16;
/// How often a minting round is allowed once the burst is spent.
pub const MINT_EVERY: Duration = Duration::from_secs(1);
/// The longest a minting round may take (every Sentry replica tried included).
pub const MINT_TIMEOUT: Duration = Duration::from_secs(15);

/// The minting rounds allowed now: a token bucket of [`MINT_BURST`] refilled every
/// [`MINT_EVERY`].
#[derive(Debug)]
struct MintBudget {
    tokens: u32,
    since: std::time::Instant,
}

impl Default for MintBudget {
    fn default() -> Self {
        Self {
            tokens: MINT_BURST,
            since: std::time::Instant::now(),
        }
    }
}

impl MintBudget {
    fn take(&mut self) -> bool {
        let earned = self.since.elapsed().as_secs() / MINT_EVERY.as_secs().max(1);
        if earned > 0 {
            self.tokens = self
                .tokens
                .saturating_add(u32::try_from(earned).unwrap_or(u32::MAX))
                .min(MINT_BURST);
            self.since = std::time::Instant::now();
        }
        let ok = self.tokens > 0;
        self.tokens = self.tokens.saturating_sub(1);
        ok
    }
}

/// The audiences a JWT-SVID may be asked for (Sentry's limits: 1 to 16, each 1 to 512 bytes),
/// sorted and without repeats; why not otherwise.
fn audience_key(audiences: &[String]) -> Result<Vec<String>, String> {
    let mut key: Vec<String> = audiences.to_vec();
    key.sort();
    key.dedup();
    if key.is_empty() || key.len() > 16 {
        return Err(format!("1 to 16 audiences, not {}", key.len()));
    }
    if let Some(a) = key
        .iter()
        .find(|a| a.is_empty() || a.len() > 512 || a.chars().any(char::is_control))
    {
        let shown: String = a.chars().take(40).collect();
        return Err(format!(
            "an audience must be 1 to 512 bytes without control characters: {shown:?}"
        ));
    }
    Ok(key)
}

/// A signing round of the sidecar's own, for JWT-SVIDs ([`IdentityState::jwt_for`]).
struct Minter {
    transport: Arc<dyn Transport>,
    app_id: String,
    namespace: String,
    token_file: Option<PathBuf>,
    token_validator: i32,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("app_id", &self.app_id)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The workload token to send Sentry (empty without a token file).
fn read_token(token_file: Option<&std::path::Path>) -> Result<String, ClientError> {
    match token_file {
        Some(f) => std::fs::read_to_string(f)
            .map(|t| t.trim().to_owned())
            .map_err(|e| ClientError::Config(format!("token file {}: {e}", f.display()))),
        None => Ok(String::new()),
    }
}

/// Why [`IdentityState::jwt_for`] has no token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtForError {
    /// The audiences cannot be asked for (Sentry's limits: 1 to 16, each 1 to 512 bytes).
    #[error("{0}")]
    Invalid(String),
    /// Too many minting rounds lately ([`MINT_BURST`], then one per [`MINT_EVERY`]).
    #[error("too many JWT-SVIDs for new audiences lately; try again in a second")]
    Busy,
    /// No identity yet, or Sentry could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Sentry issues no JWT-SVIDs, or refused the audiences.
    #[error("{0}")]
    NotIssued(String),
}

/// Early renewals are asked for at most this often.
pub const EARLY_RENEWAL_EVERY: Duration = Duration::from_secs(30);

impl IdentityState {
    /// Asks the driver to renew now (at most once per [`EARLY_RENEWAL_EVERY`]): a peer showed
    /// a certificate from an issuer this sidecar does not hold, which after Sentry activates a
    /// new issuer means this sidecar's own chain is the old one, and a peer that sends only
    /// its leaf (an embedded-tls device) cannot be validated until it renews. Returns whether
    /// it was asked now.
    pub fn renew_early(&self) -> bool {
        let Ok(mut last) = self.last_early.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < EARLY_RENEWAL_EVERY) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        self.renew_soon.notify_one();
        true
    }

    /// A state holding a fixed identity and anchors (no rotation): for tools and tests that
    /// present an identity made elsewhere.
    pub fn fixed(current: Current, anchors: Anchors) -> Self {
        Self {
            current: ArcSwapOption::from_pointee(current),
            anchors: ArcSwapOption::from_pointee(anchors),
            ready: AtomicBool::new(true),
            ever_installed: AtomicBool::new(true),
            metrics: RuntimeMetrics::default(),
            last_rejection: Mutex::new(None),
            renew_soon: tokio::sync::Notify::new(),
            last_early: Mutex::new(None),
            changed: tokio::sync::watch::Sender::default(),
            jwt: ArcSwapOption::empty(),
            minter: std::sync::OnceLock::new(),
            on_demand: Mutex::default(),
            minting: tokio::sync::Mutex::default(),
        }
    }

    /// A JWT-SVID for exactly `audiences`: the one Sentry issued with the certificate when it
    /// fits (`--sentry-request-jwt-audiences`), else one minted on demand, as SPIRE's agent
    /// does: a signing round of its own (a fresh key and CSR; the certificate that comes back
    /// is dropped, the identity in use stays), its tokens checked as daprd checks them and
    /// kept until half their life has passed (for at most [`ON_DEMAND_CACHE`] sets of
    /// audiences; one round at a time).
    ///
    /// # Errors
    ///
    /// [`JwtForError`]: no identity yet, Sentry unreachable, or no token for these audiences.
    pub async fn jwt_for(&self, audiences: &[String]) -> Result<String, JwtForError> {
        let key = audience_key(audiences).map_err(JwtForError::Invalid)?;
        if let Some(t) = self
            .jwt_svids()
            .as_ref()
            .and_then(|j| j.for_audiences(&key).map(str::to_owned))
        {
            return Ok(t);
        }
        if let Some(t) = self.cached_jwt(&key) {
            return Ok(t);
        }
        let mut budget = self.minting.lock().await;
        // Minted meanwhile by the round this call waited for?
        if let Some(t) = self.cached_jwt(&key) {
            return Ok(t);
        }
        if !budget.take() {
            return Err(JwtForError::Busy);
        }
        let minted = tokio::time::timeout(MINT_TIMEOUT, self.mint_jwt(&key))
            .await
            .map_err(|_| {
                JwtForError::Unavailable(format!(
                    "Sentry did not answer within {}",
                    humantime::format_duration(MINT_TIMEOUT)
                ))
            })??;
        drop(budget);
        let token = minted
            .0
            .for_audiences(&key)
            .map(str::to_owned)
            .ok_or_else(|| JwtForError::NotIssued("no token for these audiences".into()))?;
        if let Ok(mut cache) = self.on_demand.lock() {
            let now = std::time::Instant::now();
            cache.retain(|_, (_, refresh)| *refresh > now);
            if cache.len() >= ON_DEMAND_CACHE {
                // The one due soonest goes.
                if let Some(k) = cache
                    .iter()
                    .min_by_key(|(_, (_, refresh))| *refresh)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&k);
                }
            }
            cache.insert((minted.1, key), (minted.0, minted.2));
        }
        Ok(token)
    }

    /// A cached on-demand token for `key` and the identity in use, while fresh.
    fn cached_jwt(&self, key: &[String]) -> Option<String> {
        let id = self.current()?.spiffe_id.clone();
        let cache = self.on_demand.lock().ok()?;
        let (jwts, refresh) = cache.get(&(id, key.to_vec()))?;
        if *refresh <= std::time::Instant::now() {
            return None;
        }
        jwts.for_audiences(key).map(str::to_owned)
    }

    /// One minting round: a fresh key and CSR, Sentry's answer checked; the tokens, the SPIFFE
    /// ID they are for, and when to mint again.
    async fn mint_jwt(
        &self,
        key: &[String],
    ) -> Result<(Arc<JwtSvids>, String, std::time::Instant), JwtForError> {
        let Some(current) = self.current() else {
            return Err(JwtForError::Unavailable("no identity issued yet".into()));
        };
        let (Some(minter), Some(anchors)) = (self.minter.get(), self.anchors()) else {
            return Err(JwtForError::Unavailable(
                "the identity driver is not running".into(),
            ));
        };
        let mut signer = P256Key::generate()
            .map_err(|e| JwtForError::Unavailable(format!("no key for the request: {e}")))?;
        let mut buf = [0u8; 1024];
        let csr = sigil_core::csr::Builder::new()
            .build(&mut signer, &mut buf)
            .map_err(|e| JwtForError::Unavailable(format!("building the CSR: {e:?}")))?
            .to_vec();
        let token = read_token(minter.token_file.as_deref())
            .map_err(|e| JwtForError::Unavailable(e.to_string()))?;
        let req = SignRequest {
            id: minter.app_id.clone(),
            namespace: minter.namespace.clone(),
            token,
            trust_domain: String::new(),
            token_validator: minter.token_validator,
            csr_der: csr,
            jwt_audiences: key.to_vec(),
        };
        let signed = minter
            .transport
            .sign(req, anchors)
            .await
            .map_err(|e| match e {
                ClientError::Refused {
                    code: tonic::Code::InvalidArgument,
                    message,
                } => JwtForError::Invalid(format!("Sentry refused the audiences: {message}")),
                ClientError::Refused { code, message } => {
                    JwtForError::NotIssued(format!("Sentry refused: {code:?}: {message}"))
                }
                e => JwtForError::Unavailable(format!("asking Sentry: {e}")),
            })?;
        crate::client::check_jwt_svids(&signed, key, SystemTime::now(), Duration::from_secs(300))
            .map_err(|e| JwtForError::NotIssued(format!("Sentry's JWT-SVIDs refused: {e}")))?;
        let jwts = JwtSvids::from_signed(&signed).ok_or_else(|| {
            JwtForError::NotIssued(
                "Sentry issued no JWT-SVID (it issues them with --jwt-enabled)".into(),
            )
        })?;
        let subject = crate::sentry::jwt::decode_unverified(&jwts.jwt)
            .ok()
            .and_then(|c| c.get("sub").and_then(|s| s.as_str().map(str::to_owned)));
        if subject.as_deref() != Some(current.spiffe_id.as_str()) {
            return Err(JwtForError::NotIssued(format!(
                "Sentry's JWT-SVID is for {subject:?}, not {}",
                current.spiffe_id
            )));
        }
        // Half the tokens' own life from now (Sentry's clock sets exp - iat; the sidecar's
        // wall clock plays no part).
        let refresh = std::time::Instant::now() + jwts.lifetime / 2;
        Ok((Arc::new(jwts), current.spiffe_id.clone(), refresh))
    }

    /// The JWT-SVIDs that came with the identity in use, if Sentry issued any.
    pub fn jwt_svids(&self) -> Option<Arc<JwtSvids>> {
        self.jwt.load_full()
    }

    /// A receiver that sees every change of the identity or the anchors.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Why the machine refused Sentry's last refused answer, if it refused one.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.last_rejection.lock().ok().and_then(|r| *r)
    }

    /// The identity in use, if any.
    pub fn current(&self) -> Option<Arc<Current>> {
        self.current.load_full()
    }

    /// The trust anchors in force (none before the driver has loaded them).
    pub fn anchors(&self) -> Option<Arc<Anchors>> {
        self.anchors.load_full()
    }

    /// Whether a valid identity is held (readiness).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics.
    pub const fn metrics(&self) -> &RuntimeMetrics {
        &self.metrics
    }
}

/// Why the driver could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The trust anchors are unusable.
    #[error("trust anchors: {0}")]
    Anchors(String),
}

/// What a signing round ended with.
enum Outcome {
    Signed(RequestId, crate::client::Signed),
    Failed(RequestId, ClientError),
}

/// Drives the identity until `shutdown` resolves (see the module doc).
///
/// # Errors
///
/// [`IdentityError`] if the trust anchors cannot be read at start.
pub async fn drive(
    config: IdentityConfig,
    state: Arc<IdentityState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), IdentityError> {
    let addresses = config
        .sentry_address
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    let transport: Arc<dyn Transport> =
        Arc::new(SentryTransport::new(addresses, config.sentry_id.clone()));
    drive_with(config, state, transport, Arc::new(SystemWall), shutdown).await
}

/// [`drive`] with the transport and the wall clock given (the monotonic clock is tokio's).
///
/// # Errors
///
/// [`IdentityError`] if the trust anchors cannot be read at start.
pub async fn drive_with(
    config: IdentityConfig,
    state: Arc<IdentityState>,
    transport: Arc<dyn Transport>,
    wall_clock: Arc<dyn WallClock>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), IdentityError> {
    tokio::pin!(shutdown);
    let _ = state.minter.set(Minter {
        transport: transport.clone(),
        app_id: config.app_id.clone(),
        namespace: config.namespace.clone(),
        token_file: config.token_file.clone(),
        token_validator: i32::from(config.token_validator),
    });
    // The set in force is the configured anchors (file or environment) plus the bundle the
    // last authenticated Sentry answer carried (replaced whole by each answer that has one).
    let mut configured = read_anchors(&config.anchors)?;
    let mut from_sentry: Vec<Vec<u8>> = Vec::new();
    let anchors = configured.clone();
    let mut bundle = OwnedTrustBundle::new();
    let refs: Vec<&[u8]> = anchors.ders().iter().map(Vec::as_slice).collect();
    bundle
        .replace(&refs)
        .map_err(|e| IdentityError::Anchors(e.to_string()))?;
    state.anchors.store(Some(Arc::new(anchors)));
    state.bump();
    let seed = u64::from_le_bytes(ring_seed());
    // The only judge of Sentry's answers: Dapr's ID for this workload, in any trust domain.
    let mut machine: Machine<'_> = Rotation::new(config.policy, Clock::Wall, seed, None, bundle)
        .expecting(Expected::DaprWorkload {
            namespace: &config.namespace,
            app_id: &config.app_id,
        });

    let origin = tokio::time::Instant::now();
    let now = move || {
        Instant::from_millis(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    };
    let wall = || {
        UnixTime::from_secs(
            wall_clock
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    };
    let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(4);
    let (anchors_tx, mut anchors_rx) = mpsc::unbounded_channel::<()>();
    let _watcher = match &config.anchors {
        AnchorSource::File(f) => watch_file(f.clone(), anchors_tx),
        AnchorSource::Pem(_) => None,
    };

    // The JWT-SVIDs of the answer being judged, installed with its identity; and when the
    // identity is renewed for its JWTs (half their life, as daprd) if that comes first.
    let mut pending_jwts: Option<JwtSvids> = None;
    let mut jwt_renewal: Option<tokio::time::Instant> = None;
    loop {
        while let Some(action) = machine.poll_action() {
            if matches!(action, Action::Installed { .. }) {
                let jwts = pending_jwts.take();
                // Half the tokens' life from now, from their own `exp - iat` (Sentry's clock:
                // a sidecar clock off from Sentry's does not make every token look expired and
                // renew in a loop); none without `iat`, at least a second away.
                jwt_renewal = jwts.as_ref().filter(|j| !j.lifetime.is_zero()).map(|j| {
                    tokio::time::Instant::now() + (j.lifetime / 2).max(Duration::from_secs(1))
                });
                if let (Some(dir), Some(j)) = (&config.output_dir, &jwts) {
                    if let Err(e) = files::write_jwt(dir, &j.jwt) {
                        tracing::error!(dir = %dir.display(), error = %e, "writing the JWT-SVID");
                    }
                }
                state.jwt.store(jwts.map(Arc::new));
            }
            handle_action(action, &mut machine, &config, &state, &transport, &done_tx);
        }
        let deadline = machine
            .poll_timeout()
            .map(|at| origin + Duration::from_millis(at.as_millis()));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let jwt_due = async {
            match jwt_renewal {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = jwt_due => {
                jwt_renewal = None;
                let t = now();
                machine.handle_wall_time(t, wall());
                machine.renew_now(t);
                machine.handle_timeout(t);
            }
            () = state.renew_soon.notified() => {
                let t = now();
                machine.handle_wall_time(t, wall());
                machine.renew_now(t);
                machine.handle_timeout(t);
            }
            () = sleep => {
                let t = now();
                machine.handle_wall_time(t, wall());
                machine.handle_timeout(t);
            }
            Some(outcome) = done_rx.recv() => {
                let t = now();
                machine.handle_wall_time(t, wall());
                match outcome {
                    Outcome::Signed(id, signed) => {
                        pending_jwts = JwtSvids::from_signed(&signed);
                        // Sentry's bundle first (it was authenticated by the anchors held: its
                        // serving chain validated against them), so a chain from a root it has
                        // just published is judged against the set that holds it.
                        if !signed.trust_bundle.is_empty() && signed.trust_bundle != from_sentry {
                            match combined(&configured, &signed.trust_bundle) {
                                Ok(new) => {
                                    if apply_anchors(&mut machine, &state, &config, t, new, "Sentry's answer") {
                                        from_sentry = signed.trust_bundle;
                                    }
                                }
                                Err(e) => tracing::error!(error = %e, "Sentry's trust bundle refused; the anchors held stay"),
                            }
                        }
                        let refs: Vec<&[u8]> = signed.chain.iter().map(Vec::as_slice).collect();
                        machine.handle_response(t, id, &refs, crate::signature::shared());
                    }
                    Outcome::Failed(id, e) if machine.is_in_flight(id) => {
                        tracing::warn!(error = %e, "identity request failed");
                        let installed_before = state.ever_installed.load(Ordering::Relaxed);
                        state.metrics.failed(installed_before, e.reason());
                        machine.handle_failure(t, id, e.failure());
                    }
                    Outcome::Failed(..) => {}
                }
            }
            Some(()) = anchors_rx.recv() => {
                // Debounce a little: editors write in steps.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while anchors_rx.try_recv().is_ok() {}
                match read_anchors(&config.anchors).and_then(|file| {
                    let set = combined(&file, &from_sentry)?;
                    Ok((file, set))
                }) {
                    Ok((file, new)) => {
                        let t = now();
                        machine.handle_wall_time(t, wall());
                        if apply_anchors(&mut machine, &state, &config, t, new, "the anchors file") {
                            configured = file;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "new trust anchors refused; the old ones stay"),
                }
            }
        }
    }
}

/// The configured anchors plus Sentry's bundle, each certificate once.
fn combined(configured: &Anchors, from_sentry: &[Vec<u8>]) -> Result<Anchors, IdentityError> {
    configured
        .with_sentry_roots(from_sentry)
        .map_err(|e| IdentityError::Anchors(e.to_string()))
}

/// Puts `new` in force if it differs from the set held: the machine's bundle (an identity that
/// no longer chains is renewed at once), the TLS verifiers' set, the app's `ca.pem`. Returns
/// whether it is in force (unchanged counts); a set the machine refuses leaves the old one.
fn apply_anchors(
    machine: &mut Machine<'_>,
    state: &IdentityState,
    config: &IdentityConfig,
    t: Instant,
    new: Anchors,
    from: &str,
) -> bool {
    if state.anchors().is_some_and(|a| a.ders() == new.ders()) {
        return true;
    }
    let refs: Vec<&[u8]> = new.ders().iter().map(Vec::as_slice).collect();
    if let Err(e) = machine.handle_trust_bundle(t, &refs, crate::signature::shared()) {
        tracing::error!(error = ?e, from, "new trust anchors refused; the old ones stay");
        return false;
    }
    tracing::info!(anchors = new.ders().len(), from, "trust anchors replaced");
    let new = Arc::new(new);
    state.anchors.store(Some(new.clone()));
    state.bump();
    // The app's copy follows at once, not at the next rotation.
    if let (Some(dir), Some(current)) = (&config.output_dir, state.current()) {
        if let Err(e) = write_files(dir, &current.chain, &current.key_pkcs8, new.ders()) {
            tracing::error!(dir = %dir.display(), error = %e, "writing the identity files");
        }
    }
    true
}

fn ring_seed() -> [u8; 8] {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

fn handle_action(
    action: Action,
    machine: &mut Machine<'_>,
    config: &IdentityConfig,
    state: &Arc<IdentityState>,
    transport: &Arc<dyn Transport>,
    done: &mpsc::Sender<Outcome>,
) {
    match action {
        Action::Request => {
            let key = match P256Key::generate() {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(error = %e, "no key for the identity request");
                    return;
                }
            };
            let mut buf = [0u8; 1024];
            let (id, csr) = match machine.start_request(key, &mut buf) {
                Ok((id, csr)) => (id, csr.to_vec()),
                Err(e) => {
                    tracing::error!(error = ?e, "building the CSR");
                    return;
                }
            };
            let token = read_token(config.token_file.as_deref());
            let done = done.clone();
            let token = match token {
                Ok(t) => t,
                Err(e) => {
                    tokio::spawn(async move {
                        let _ = done.send(Outcome::Failed(id, e)).await;
                    });
                    return;
                }
            };
            let req = SignRequest {
                id: config.app_id.clone(),
                namespace: config.namespace.clone(),
                token,
                trust_domain: String::new(),
                token_validator: i32::from(config.token_validator),
                csr_der: csr,
                jwt_audiences: config.jwt_audiences.clone(),
            };
            // The driver loads the anchors before the machine asks for anything.
            let Some(anchors) = state.anchors() else {
                tracing::error!("no trust anchors loaded; identity request not sent");
                return;
            };
            let answer = transport.sign(req, anchors);
            let asked = config.jwt_audiences.clone();
            tokio::spawn(async move {
                let outcome = match answer.await {
                    // The JWT-SVIDs are checked as daprd checks them (`jwt_parse`, `jwt_aud`);
                    // a refused answer leaves the identity in use serving.
                    Ok(signed) => match crate::client::check_jwt_svids(
                        &signed,
                        &asked,
                        SystemTime::now(),
                        Duration::from_secs(300),
                    ) {
                        Ok(()) => Outcome::Signed(id, signed),
                        Err(e) => Outcome::Failed(id, ClientError::Jwt(e)),
                    },
                    Err(e) => Outcome::Failed(id, e),
                };
                let _ = done.send(outcome).await;
            });
        }
        Action::Installed {
            generation,
            not_after,
        } => install(machine, config, state, generation, not_after),
        Action::Rejected(Rejection::Stale) => tracing::debug!("late answer ignored"),
        Action::Rejected(r) => {
            tracing::warn!(reason = %r, "Sentry's answer refused; the identity in use keeps serving");
            if let Ok(mut last) = state.last_rejection.lock() {
                *last = Some(r);
            }
            let installed_before = state.ever_installed.load(Ordering::Relaxed);
            state.metrics.failed(installed_before, "invalid_cert");
        }
        Action::Expired => {
            tracing::error!("the identity expired before a new one could be installed");
            state.current.store(None);
            state.bump();
            state.ready.store(false, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn install(
    machine: &Machine<'_>,
    config: &IdentityConfig,
    state: &IdentityState,
    generation: u32,
    not_after: UnixTime,
) {
    let Some(identity) = machine.identity() else {
        return;
    };
    let chain: Vec<Vec<u8>> = identity.chain().map(<[u8]>::to_vec).collect();
    let spiffe_id = sigil_core::cert::Certificate::parse(identity.leaf())
        .ok()
        .and_then(|c| c.spiffe_ids().next().map(|i| i.as_str().to_owned()))
        .unwrap_or_default();
    let not_after = UNIX_EPOCH + Duration::from_secs(not_after.as_secs());
    let key_pkcs8 = Zeroizing::new(identity.key().pkcs8_der().to_vec());
    if let Some(dir) = &config.output_dir {
        let anchors = state
            .anchors()
            .map(|a| a.ders().to_vec())
            .unwrap_or_default();
        if let Err(e) = write_files(dir, &chain, &key_pkcs8, &anchors) {
            tracing::error!(dir = %dir.display(), error = %e, "writing the identity files");
        }
    }
    let first = !state.ever_installed.swap(true, Ordering::Relaxed);
    state.current.store(Some(Arc::new(Current {
        chain,
        key_pkcs8,
        spiffe_id: spiffe_id.clone(),
        not_after,
        generation,
    })));
    state.ready.store(true, Ordering::Relaxed);
    state.bump();
    state.metrics.installed(first, not_after);
    tracing::info!(
        %spiffe_id,
        generation,
        not_after = %humantime::format_rfc3339_seconds(not_after),
        "identity installed"
    );
}

#[cfg(test)]
mod tests {
    //! The driver in virtual time: tokio's paused clock, a wall clock that follows it, and a CA
    //! in this process that really signs (the host's issuance code) behind the transport, with
    //! faults on demand. Days of rotations run in milliseconds.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::ca::Credentials;
    use sigil_core::crypto::PublicKey;
    use std::sync::atomic::AtomicUsize;

    /// Follows tokio's (paused) clock from a fixed start.
    struct VirtualWall {
        start: SystemTime,
        origin: tokio::time::Instant,
    }

    impl WallClock for VirtualWall {
        fn now(&self) -> SystemTime {
            self.start + self.origin.elapsed()
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mode {
        Serve,
        Down,
        WrongId,
        ForeignRoot,
    }

    /// A CA in the test's process: issues for what the CSR's key asks, at the virtual time.
    struct TestCa {
        creds: Credentials,
        foreign: Credentials,
        wall: Arc<VirtualWall>,
        ttl: Duration,
        mode: Mutex<Mode>,
        requests: AtomicUsize,
    }

    impl TestCa {
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }

        fn answer(&self, req: &SignRequest) -> Answer {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mode = *self.mode.lock().unwrap();
            if mode == Mode::Down {
                return Err(ClientError::Connect {
                    address: "test".into(),
                    reason: "down".into(),
                });
            }
            let csr = sigil_core::csr::Csr::parse(&req.csr_der).unwrap();
            let PublicKey::EcP256(point) = csr.public_key() else {
                panic!("P-256 CSR expected");
            };
            let (creds, app) = match mode {
                Mode::WrongId => (&self.creds, "someone-else"),
                Mode::ForeignRoot => (&self.foreign, req.id.as_str()),
                _ => (&self.creds, req.id.as_str()),
            };
            let id = format!("spiffe://public/ns/{}/{app}", req.namespace);
            let issued = creds
                .issue_workload(
                    PublicKey::EcP256(point),
                    &id,
                    &[],
                    self.wall.now(),
                    self.ttl,
                    Duration::ZERO,
                )
                .unwrap();
            let mut chain = vec![issued.der];
            chain.extend(creds.issuer_chain().iter().cloned());
            // No bundle: these tests drive the anchors through the file.
            Ok(crate::client::Signed {
                chain,
                trust_bundle: Vec::new(),
                valid_until: issued.not_after,
                jwt: None,
                per_audience_jwts: Default::default(),
            })
        }
    }

    struct Transported(Arc<TestCa>);

    impl Transport for Transported {
        fn sign(
            &self,
            req: SignRequest,
            _anchors: Arc<Anchors>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>> {
            let answer = self.0.answer(&req);
            Box::pin(async move { answer })
        }
    }

    struct Running {
        ca: Arc<TestCa>,
        state: Arc<IdentityState>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), IdentityError>>,
    }

    impl Running {
        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.task.await.unwrap().unwrap();
        }

        fn generation(&self) -> u32 {
            self.state.current().map_or(0, |c| c.generation)
        }
    }

    fn start(ttl: Duration, mode: Mode) -> Running {
        let start = SystemTime::now();
        let wall = Arc::new(VirtualWall {
            start,
            origin: tokio::time::Instant::now(),
        });
        let sentry = "spiffe://public/ns/default/dapr-sentry";
        let (creds, files) =
            Credentials::generate("public", sentry, start, Duration::ZERO).unwrap();
        let (foreign, _) = Credentials::generate("public", sentry, start, Duration::ZERO).unwrap();
        let ca = Arc::new(TestCa {
            creds,
            foreign,
            wall: wall.clone(),
            ttl,
            mode: Mutex::new(mode),
            requests: AtomicUsize::new(0),
        });
        let config = IdentityConfig {
            app_id: "cart".into(),
            namespace: "shop".into(),
            sentry_address: "unused".into(),
            sentry_id: sentry.into(),
            token_file: None,
            token_validator: crate::pb::sign_certificate_request::TokenValidator::Unknown,
            anchors: AnchorSource::Pem(files.ca),
            output_dir: None,
            policy: Policy::default(),
            jwt_audiences: Vec::new(),
        };
        let state = Arc::new(IdentityState::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(drive_with(
            config,
            state.clone(),
            Arc::new(Transported(ca.clone())),
            wall,
            async move {
                let _ = rx.await;
            },
        ));
        Running {
            ca,
            state,
            stop: Some(tx),
            task,
        }
    }

    fn failures(state: &IdentityState, reason: &str) -> u64 {
        let text = state.metrics().render();
        text.lines()
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    #[tokio::test(start_paused = true)]
    async fn a_day_of_hourly_certificates_rotates_without_a_gap() {
        let r = start(Duration::from_secs(3600), Mode::Serve);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(r.state.is_ready());
        let mut last = r.generation();
        for _ in 0..(24 * 60) {
            tokio::time::sleep(Duration::from_secs(60)).await;
            // Never without a valid identity, and never two installs in a minute.
            let current = r.state.current().expect("an identity at every minute");
            assert!(current.not_after > r.ca.wall.now());
            assert!(current.generation <= last + 1);
            last = current.generation;
        }
        // Renewal at 50 % ± 20 % of an hour: between 24 and 80 rotations in a day.
        let rotations = r.state.metrics().rotations();
        assert!((24..=80).contains(&rotations), "{rotations} rotations");
        assert_eq!(failures(&r.state, "invalid_cert"), 0);
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_renewal_renews_at_once_and_at_most_every_30_s() {
        let r = start(Duration::from_secs(3600), Mode::Serve);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.generation(), 1);
        assert!(r.state.renew_early());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            r.generation(),
            2,
            "renewed at once, not at 30-70 % of the hour"
        );
        // Asked again within 30 s (of real time): not asked.
        assert!(!r.state.renew_early());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.generation(), 2);
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_backs_off_keeps_the_identity_and_renewal_resumes() {
        let r = start(Duration::from_secs(24 * 3600), Mode::Serve);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.generation(), 1);
        // Sentry goes down before the first renewal (30 % of the life at the earliest) and
        // stays down past the latest one (70 %), until 20 h: short of the urgent last 10 %.
        tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
        r.ca.set(Mode::Down);
        let before = r.ca.requests.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(14 * 3600)).await;
        let during = r.ca.requests.load(Ordering::Relaxed) - before;
        // The first identity keeps serving; retries back off to waits of 2.5-5 minutes (the
        // cap's upper half): at most 24 an hour, where Dapr's fixed 10 s would make 5,040.
        assert_eq!(r.generation(), 1);
        assert!(r.state.is_ready());
        assert!(during <= 14 * 24 + 12, "{during} requests in the outage");
        assert_eq!(
            failures(&r.state, "sentry_conn"),
            u64::try_from(during).unwrap()
        );
        // Back: the renewal lands within the backoff cap.
        r.ca.set(Mode::Serve);
        tokio::time::sleep(Duration::from_secs(5 * 60 + 1)).await;
        assert_eq!(r.generation(), 2);
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_fetch_that_fails_is_retried_and_readiness_follows() {
        let r = start(Duration::from_secs(3600), Mode::Down);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!r.state.is_ready());
        let tries = r.ca.requests.load(Ordering::Relaxed);
        // Backoff from 1 s, capped at 10 s while there is no identity (urgent).
        assert!((3..=12).contains(&tries), "{tries} tries in 30 s");
        assert_eq!(
            failures(&r.state, "sentry_conn"),
            u64::try_from(tries).unwrap()
        );
        r.ca.set(Mode::Serve);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(r.state.is_ready());
        r.stop().await;
    }

    /// The machine is the only judge: a certificate for another app, or from a foreign root,
    /// is refused by the core with its reason, counted as `invalid_cert`, and retried with
    /// backoff; nothing is installed.
    #[tokio::test(start_paused = true)]
    async fn bad_answers_are_refused_by_the_machine_with_its_reason() {
        for (mode, expected) in [
            (
                Mode::WrongId,
                Rejection::Profile(sigil_core::profile::Error::UnexpectedId),
            ),
            (
                Mode::ForeignRoot,
                Rejection::Path(sigil_core::chain::Error {
                    cert: sigil_core::chain::Position::Intermediate(0),
                    kind: sigil_core::chain::ErrorKind::AuthorityKeyIdMismatch,
                }),
            ),
        ] {
            let r = start(Duration::from_secs(3600), mode);
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert!(!r.state.is_ready(), "{mode:?}");
            assert_eq!(r.state.last_rejection(), Some(expected), "{mode:?}");
            let tries = r.ca.requests.load(Ordering::Relaxed);
            assert!((3..=12).contains(&tries), "{mode:?}: {tries} tries in 30 s");
            assert_eq!(
                failures(&r.state, "invalid_cert"),
                u64::try_from(tries).unwrap()
            );
            r.stop().await;
        }
    }

    #[test]
    fn on_demand_audiences_follow_sentrys_limits_and_minting_is_budgeted() {
        let a = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            audience_key(&a(&["b", "a", "b"])).unwrap(),
            a(&["a", "b"]),
            "sorted, once each"
        );
        assert!(audience_key(&[]).is_err());
        assert!(audience_key(&a(&[""])).is_err());
        assert!(audience_key(&a(&["x\n"])).is_err());
        assert!(audience_key(&["x".repeat(513)]).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("a{i}")).collect();
        assert!(audience_key(&many).is_err());
        assert!(audience_key(&many[..16]).is_ok());
        let mut budget = MintBudget::default();
        for _ in 0..MINT_BURST {
            assert!(budget.take());
        }
        assert!(!budget.take(), "the burst is spent");
        budget.since -= MINT_EVERY * 2;
        assert!(
            budget.take() && budget.take() && !budget.take(),
            "two earned back"
        );
    }
}
