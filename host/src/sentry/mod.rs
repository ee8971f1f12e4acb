//! Sentry, the certificate authority, wire-compatible with Dapr's
//! (`dapr.proto.sentry.v1.CA/SignCertificate`).
//!
//! - [`Sentry`] holds the live state: the validated credentials (swapped atomically on
//!   reload), Sentry's own serving certificate (renewed at half its life and on every
//!   credential change), the validators and the metrics. [`Sentry::sign`] is the whole request
//!   path, in Dapr's order: validator choice, validator, CSR checks, issuance.
//! - [`run`] serves gRPC over TLS on an already-bound listener (a handshake per connection in
//!   its own task; new connections get the current serving certificate, in-flight requests
//!   are never cut), the health and metrics endpoints, the credential watcher and the serving
//!   certificate's renewal, until `shutdown` resolves; then it drains in-flight requests.
//! - Connections go through a connection table ([`crate::net::admission`]): a handshake, a
//!   first request and the time between requests each have a deadline, a full table closes
//!   its idlest idle connections for newcomers, and one address holds at most a share of it,
//!   so connections that send nothing cannot stop issuance; `/healthz` answers 503 when the
//!   table could not take a new client. A connection gets its HTTP/2 state (about 24 KiB of
//!   buffers) only once the client's first bytes arrive, so idle TLS connections stay small.

pub mod app;
pub mod jwt;
pub mod kube;
pub mod metrics;
pub mod oidc;
pub mod reload;
pub mod rotate;
pub mod validator;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sigil_core::csr::{self, Csr};
use sigil_core::{crypto::AlgorithmError, pem};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::ca::store::StorePaths;
use crate::ca::Credentials;
use crate::dapr;
use crate::key::P256Key;
use crate::net::admission::{self, Admission, ConnState, Expiry, Limits};
use crate::pb;
use crate::signature::RingSignatureVerifier;
use metrics::Metrics;
use validator::{ValidationError, Validators};

/// Largest CSR accepted (PEM bytes); larger ones are refused as `InvalidArgument`.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Largest gRPC message accepted; larger ones are refused as `ResourceExhausted`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long in-flight requests get to finish after shutdown begins; then the remaining
/// connections are closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Most client connections at once, by default (`--max-connections`; lowered to fit the
/// process's open-file limit). When the table is nearly full, the connections idle the
/// longest are closed for newcomers; only when every connection is busy is a newcomer refused.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most connections from one client address (an IPv4 address or an IPv6 /64), by default
/// (`--max-connections-per-ip`): a sixteenth of the table, so busy connections from fewer than
/// 16 addresses cannot fill it, while hundreds of sidecars behind one NAT address still fit
/// (daprd opens one connection per request and closes it).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// A TLS handshake not finished this long after accept is cut. Real clients need a round trip
/// or two; 3 s leaves room for slow links, and a connection that sends nothing goes quickly.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that sends no request this long after its handshake is closed (daprd sends
/// its one request at once).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no request in flight for this long is closed, by default
/// (`--connection-idle-timeout`). Reusing clients reconnect; daprd dials per request anyway.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most concurrent requests on one connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 256;
/// A request not answered in this time is cancelled.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections are closed gracefully after this long, busy or not (reusing clients reconnect).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Sentry's default connection limits (see the constants above).
pub fn default_limits() -> Limits {
    Limits {
        max_connections: MAX_CONNECTIONS,
        per_address: MAX_CONNECTIONS_PER_ADDRESS,
        handshake: HANDSHAKE_TIMEOUT,
        first_request: FIRST_REQUEST_TIMEOUT,
        idle: IDLE_TIMEOUT,
    }
}

/// What a Sentry is.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--trust-domain` (Sentry's own; workloads get the one their request names).
    pub trust_domain: String,
    /// Sentry's namespace (`NAMESPACE`, default `default`).
    pub namespace: String,
    /// Workload certificate lifetime.
    pub ttl: Duration,
    /// NotBefore back-dating.
    pub skew: Duration,
    /// The gRPC port's connection limits ([`default_limits`]).
    pub limits: Limits,
    /// The lifetimes and key type of the pairs the automatic rotation makes.
    pub generation: crate::ca::Generation,
    /// Crash tests only: abort the process at this point of a rotation step (as kill -9).
    pub crash_at: Option<crate::ca::rotation::CrashPoint>,
    /// JWT-SVIDs beside the certificates (`--jwt-enabled`); `None`: none issued.
    pub jwt: Option<JwtSettings>,
}

/// How Sentry issues JWT-SVIDs (Dapr's `--jwt-*` flags; the key is [`Sentry::set_jwt_keys`]'s).
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// `--jwt-ttl` (24 h by default; independent of the certificates' lifetime, as Dapr).
    pub ttl: Duration,
    /// `--jwt-issuer`: the `iss` claim (absent when not given, as Dapr).
    pub issuer: Option<String>,
    /// The key files, re-read when they change ([`reload::watch_jwt`]).
    pub files: Option<JwtFiles>,
    /// Kubernetes mode: the key in the Secret, re-read when it changes
    /// ([`reload::watch_jwt_secret`]): the algorithm, `--jwt-key-id` and the fingerprint of
    /// what was loaded.
    pub secret: Option<(crate::ca::jwt::JwtAlgorithm, Option<String>, Vec<u8>)>,
}

/// Where Sentry's JWT key files are, what they are checked against, and the fingerprint of
/// what was loaded from them (a change made after the load, however soon, is seen).
#[derive(Clone, Debug)]
pub struct JwtFiles {
    /// The key and its set.
    pub paths: crate::ca::jwt::JwtKeyPaths,
    /// `--jwt-signing-algorithm`.
    pub algorithm: crate::ca::jwt::JwtAlgorithm,
    /// `--jwt-key-id`.
    pub key_id: Option<String>,
    /// [`crate::ca::jwt::text_fingerprint`] of the key and set the keys came from.
    pub loaded: Vec<u8>,
}

/// At most this many `jwt_audiences` in one request (each costs a signature).
pub const MAX_JWT_AUDIENCES: usize = 16;
/// The longest audience accepted.
pub const MAX_JWT_AUDIENCE_BYTES: usize = 512;

impl Settings {
    /// Sentry's SPIFFE ID: `spiffe://<td>/ns/<namespace>/dapr-sentry`.
    pub fn sentry_id(&self) -> String {
        crate::dapr::sentry_id(&self.trust_domain, &self.namespace)
    }

    /// The holders' timing the CA rotation waits for: the workload TTL and the skew, the TTL
    /// lengthened to `--jwt-ttl` when the JWT key rotates with the CA ([`Self::jwt_rotation`]:
    /// relying parties need the new key before it signs, and the old one until its last token
    /// expired).
    pub fn rotation_policy(&self) -> crate::ca::schedule::Policy {
        self.holders_policy(self.jwt_rotation().is_some())
    }

    /// [`Self::rotation_policy`] before the JWT key is loaded: `jwt_rotates` says whether it
    /// will rotate.
    pub fn holders_policy(&self, jwt_rotates: bool) -> crate::ca::schedule::Policy {
        let jwt_ttl = self
            .jwt
            .as_ref()
            .filter(|_| jwt_rotates)
            .map_or(Duration::ZERO, |j| j.ttl);
        crate::ca::schedule::Policy {
            workload_ttl: self.ttl.max(jwt_ttl),
            skew: self.skew,
        }
    }

    /// The algorithm of the JWT key Sentry rotates with the CA (a key Sigil generated is
    /// rotated only then): JWT-SVIDs on and no `--jwt-key-id` (a fixed kid cannot name two
    /// keys).
    pub fn jwt_rotation(&self) -> Option<crate::ca::jwt::JwtAlgorithm> {
        let j = self.jwt.as_ref()?;
        match (&j.files, &j.secret) {
            (Some(f), _) => f.key_id.is_none().then_some(f.algorithm),
            (None, Some((algorithm, key_id, _))) => key_id.is_none().then_some(*algorithm),
            (None, None) => None,
        }
    }

    /// DNS names on Sentry's serving certificate, beside its SPIFFE ID, for clients that check
    /// a host name (Dapr's own clients check the SPIFFE ID only).
    pub fn serving_dns(&self) -> Vec<String> {
        let ns = &self.namespace;
        vec![
            "localhost".to_owned(),
            "dapr-sentry".to_owned(),
            format!("dapr-sentry.{ns}.svc"),
            format!("dapr-sentry.{ns}.svc.cluster.local"),
        ]
    }
}

/// Why Sentry could not (re)build its serving certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServingError {
    /// Issuance failed (the issuer expired, ...).
    #[error("issuing Sentry's serving certificate: {0}")]
    Issue(#[from] crate::ca::IssueError),
    /// The key did not load.
    #[error("Sentry's serving key: {0}")]
    Key(#[from] crate::key::KeyError),
    /// rustls refused the key.
    #[error("Sentry's serving key: {0}")]
    Tls(#[from] rustls::Error),
}

/// The live state of one Sentry (see the module doc).
#[derive(Debug)]
pub struct Sentry {
    settings: Settings,
    sentry_id: String,
    creds: ArcSwap<Credentials>,
    serving: ArcSwap<CertifiedKey>,
    serving_not_after: ArcSwap<SystemTime>,
    credentials_changed: Notify,
    validators: Validators,
    metrics: Metrics,
    serving_up: AtomicBool,
    connections: Arc<Admission>,
    jwt_keys: arc_swap::ArcSwapOption<crate::ca::jwt::JwtKeys>,
}

/// A refused request: the metric reason and the gRPC status.
type Refused = (&'static str, Status);

impl Sentry {
    /// A Sentry with `creds`, issuing its first serving certificate.
    ///
    /// # Errors
    ///
    /// [`ServingError`].
    pub fn new(
        settings: Settings,
        creds: Credentials,
        validators: Validators,
    ) -> Result<Arc<Self>, ServingError> {
        let sentry_id = settings.sentry_id();
        let (serving, not_after) = issue_serving(&creds, &settings, &sentry_id)?;
        let metrics = Metrics::default();
        metrics.set_issuer_expiry(unix_secs(creds.issuer_not_after()));
        let connections = Admission::new(settings.limits);
        Ok(Arc::new(Self {
            connections,
            settings,
            sentry_id,
            creds: ArcSwap::from_pointee(creds),
            serving: ArcSwap::from_pointee(serving),
            serving_not_after: ArcSwap::from_pointee(not_after),
            credentials_changed: Notify::new(),
            validators,
            metrics,
            serving_up: AtomicBool::new(false),
            jwt_keys: arc_swap::ArcSwapOption::empty(),
        }))
    }

    /// The settings.
    pub const fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Sentry's SPIFFE ID.
    pub fn sentry_id(&self) -> &str {
        &self.sentry_id
    }

    /// The metrics.
    pub const fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Installs the JWT signing key and its published set (at start, and when the files
    /// change).
    pub fn set_jwt_keys(&self, keys: crate::ca::jwt::JwtKeys) {
        self.jwt_keys.store(Some(Arc::new(keys)));
    }

    /// The JWT signing key and its set, when JWT-SVIDs are enabled.
    pub fn jwt_keys(&self) -> Option<Arc<crate::ca::jwt::JwtKeys>> {
        self.jwt_keys.load_full()
    }

    /// The credentials in use.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.creds.load_full()
    }

    /// Swaps in a validated credential set: requests from now on are signed with it (requests
    /// in flight finish with the set they started with), and the serving certificate is
    /// re-issued from it.
    pub fn swap_credentials(&self, creds: Credentials) {
        self.metrics
            .set_issuer_expiry(unix_secs(creds.issuer_not_after()));
        // The serving certificate from the new set goes in with it, so no handshake after the
        // swap sees a certificate from the old issuer.
        let serving = issue_serving(&creds, &self.settings, &self.sentry_id);
        self.creds.store(Arc::new(creds));
        match serving {
            Ok((key, not_after)) => {
                self.serving.store(Arc::new(key));
                self.serving_not_after.store(Arc::new(not_after));
            }
            Err(e) => tracing::error!(error = %e, "serving certificate not re-issued; retrying"),
        }
        self.credentials_changed.notify_one();
    }

    /// Re-issues the serving certificate from the current credentials.
    ///
    /// # Errors
    ///
    /// [`ServingError`]; the old certificate keeps serving then.
    pub fn renew_serving(&self) -> Result<SystemTime, ServingError> {
        let creds = self.creds.load();
        let (key, not_after) = issue_serving(&creds, &self.settings, &self.sentry_id)?;
        self.serving.store(Arc::new(key));
        self.serving_not_after.store(Arc::new(not_after));
        Ok(not_after)
    }

    /// Whether Sentry can do its job (for `/healthz`): the gRPC server is serving, the issuer
    /// has not expired, and a new client would get a connection (the table has room or an idle
    /// connection to close, and accepting has not just failed).
    pub fn is_ready(&self) -> bool {
        self.serving_up.load(Ordering::Relaxed)
            && SystemTime::now() < self.creds.load().issuer_not_after()
            && self.connections.has_room()
    }

    /// The gRPC port's connection table counters.
    pub fn connection_stats(&self) -> admission::Stats {
        self.connections.stats()
    }

    /// Handles one SignCertificate request at `now`.
    ///
    /// # Errors
    ///
    /// The metric reason and Dapr's status code: `InvalidArgument` for the validator choice
    /// and the CSR, `PermissionDenied` for the validator, `Internal` for issuance.
    pub async fn sign(
        &self,
        req: &pb::SignCertificateRequest,
        now: SystemTime,
    ) -> Result<pb::SignCertificateResponse, Refused> {
        let refused = |reason, r: ValidationError| match r {
            ValidationError::Selection(m) => (reason, Status::invalid_argument(m)),
            ValidationError::Denied(m) => (reason, Status::permission_denied(m)),
        };
        let kind = self
            .validators
            .select(req.token_validator)
            .map_err(|r| refused("validator", r))?;
        // Malformed names are refused before any validator sees them (the kubernetes validator
        // would put them in API paths) and before they could fail issuance as INTERNAL.
        dapr::check_names(&req.id, &req.namespace)
            .map_err(|m| ("request", Status::invalid_argument(m)))?;
        let vreq = validator::Request {
            id: &req.id,
            token: &req.token,
            trust_domain: &req.trust_domain,
            namespace: &req.namespace,
            has_csr: !req.certificate_signing_request.is_empty(),
        };
        let trust_domain = self
            .validators
            .validate(kind, &vreq, now)
            .await
            .map_err(|r| refused("validator", r))?;
        // Whatever the validator: Sentry's own ID is never issued, and the other control-plane
        // IDs only in Sentry's namespace and trust domain.
        dapr::check_control_plane(
            &req.id,
            &req.namespace,
            &trust_domain,
            &self.settings.namespace,
            &self.settings.trust_domain,
        )
        .map_err(|m| refused("validator", ValidationError::Denied(m)))?;

        if req.jwt_audiences.len() > MAX_JWT_AUDIENCES {
            return Err((
                "request",
                Status::invalid_argument(format!(
                    "too many jwt_audiences: {} (at most {MAX_JWT_AUDIENCES})",
                    req.jwt_audiences.len()
                )),
            ));
        }
        if let Some(a) = req.jwt_audiences.iter().find(|a| {
            a.is_empty() || a.len() > MAX_JWT_AUDIENCE_BYTES || a.chars().any(char::is_control)
        }) {
            return Err((
                "request",
                Status::invalid_argument(format!(
                    "invalid jwt audience {:?}: empty, longer than {MAX_JWT_AUDIENCE_BYTES} bytes \
                     or with control characters",
                    a.chars().take(64).collect::<String>()
                )),
            ));
        }
        let csr_der = decode_csr(&req.certificate_signing_request).map_err(|s| ("csr", s))?;
        let csr = Csr::parse(&csr_der).map_err(|e| {
            let why = match e {
                csr::Error::Algorithm(AlgorithmError::Unsupported) => {
                    "unsupported key or signature algorithm (accepted: ECDSA P-256 with SHA-256, Ed25519)"
                        .to_owned()
                }
                other => other.to_string(),
            };
            (
                "csr",
                Status::invalid_argument(format!(
                    "failed to parse certificate signing request: {why}"
                )),
            )
        })?;
        csr.verify_signature(&RingSignatureVerifier)
            .map_err(|_| ("csr", Status::invalid_argument("invalid signature")))?;

        let id = dapr::workload_id(&trust_domain, &req.namespace, &req.id).map_err(|e| {
            (
                "sign",
                Status::internal(format!("failed to sign certificate: {e}")),
            )
        })?;
        let dns = dapr::control_plane_dns(
            &req.id,
            &req.namespace,
            &self.settings.namespace,
            &self.settings.trust_domain,
        );
        let creds = self.creds.load();
        let issued = creds
            .issue_workload(
                csr.public_key(),
                &id,
                &dns,
                now,
                self.settings.ttl,
                self.settings.skew,
            )
            .map_err(|e| {
                (
                    "sign",
                    Status::internal(format!("failed to sign certificate: {e}")),
                )
            })?;
        let mut chain = crate::pki::to_pem(pem::Label::Certificate, &issued.der);
        chain.push_str(creds.issuer_chain_pem());
        let (jwt, per_audience_jwts) = self
            .jwt_svids(&trust_domain, id.as_str(), &req.jwt_audiences, now)
            .map_err(|m| ("sign", Status::internal(m)))?;
        Ok(pb::SignCertificateResponse {
            workload_certificate: chain.into_bytes(),
            trust_chain_certificates: vec![creds.anchors_pem().as_bytes().to_vec()],
            valid_until: Some(prost_types::Timestamp {
                seconds: i64::try_from(unix_secs(issued.not_after)).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            jwt,
            per_audience_jwts,
        })
    }

    /// The JWT-SVIDs for `subject`, as Dapr makes them: one token for the workload's trust
    /// domain and every requested audience (`jwt`), and one per distinct audience of that list
    /// (`per_audience_jwts`, Dapr 1.18). None when JWTs are not enabled.
    fn jwt_svids(
        &self,
        trust_domain: &str,
        subject: &str,
        requested: &[String],
        now: SystemTime,
    ) -> Result<(Option<String>, std::collections::HashMap<String, String>), String> {
        let (Some(settings), Some(keys)) = (&self.settings.jwt, self.jwt_keys.load_full()) else {
            return Ok((None, std::collections::HashMap::new()));
        };
        let mut audiences = vec![trust_domain.to_owned()];
        audiences.extend(requested.iter().cloned());
        let claims = |aud| crate::ca::jwt::Claims {
            subject,
            audiences: aud,
            issuer: settings.issuer.as_deref(),
            issued_at: now,
            skew: self.settings.skew,
            ttl: settings.ttl,
        };
        let jwt = keys
            .issue(&claims(&audiences))
            .map_err(|e| format!("failed to generate JWT: {e}"))?;
        let mut per_audience = std::collections::HashMap::new();
        for a in &audiences {
            if per_audience.contains_key(a) {
                continue;
            }
            let token = keys
                .issue(&claims(std::slice::from_ref(a)))
                .map_err(|e| format!("failed to generate JWT for audience {a}: {e}"))?;
            per_audience.insert(a.clone(), token);
        }
        Ok((Some(jwt), per_audience))
    }
}

/// PEM `CERTIFICATE REQUEST` (or `CERTIFICATE`, which pre-1.12 daprd sent) to DER.
fn decode_csr(bytes: &[u8]) -> Result<Vec<u8>, Status> {
    let bad = || Status::invalid_argument("invalid certificate signing request");
    if bytes.len() > MAX_CSR_BYTES {
        return Err(Status::invalid_argument(format!(
            "invalid certificate signing request: {} bytes (limit {MAX_CSR_BYTES})",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    let block = pem::blocks(text)
        .next()
        .and_then(Result::ok)
        .filter(|b| matches!(b.label_str(), "CERTIFICATE REQUEST" | "CERTIFICATE"))
        .ok_or_else(bad)?;
    let mut buf = vec![0u8; block.decoded_len_max()];
    let der = block.decode(&mut buf).map_err(|_| bad())?;
    Ok(der.to_vec())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn issue_serving(
    creds: &Credentials,
    settings: &Settings,
    sentry_id: &str,
) -> Result<(CertifiedKey, SystemTime), ServingError> {
    let key = P256Key::generate()?;
    let issued = creds.issue_workload(
        sigil_core::crypto::PublicKey::EcP256(key.public_point()),
        sentry_id,
        &settings.serving_dns(),
        SystemTime::now(),
        settings.ttl,
        settings.skew,
    )?;
    let mut chain = vec![issued.der];
    chain.extend(creds.issuer_chain().iter().cloned());
    Ok((
        crate::rustls_glue::certified_key(chain, key.pkcs8_der())?,
        issued.not_after,
    ))
}

/// The TLS server's certificate: whatever Sentry holds now.
#[derive(Debug)]
struct ServingResolver(Arc<Sentry>);

impl ResolvesServerCert for ServingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.serving.load_full())
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
struct Service(Arc<Sentry>);

#[tonic::async_trait]
impl pb::ca_server::Ca for Service {
    async fn sign_certificate(
        &self,
        request: Request<pb::SignCertificateRequest>,
    ) -> Result<Response<pb::SignCertificateResponse>, Status> {
        let started = Instant::now();
        let sentry = &self.0;
        sentry.metrics.received();
        match sentry.sign(request.get_ref(), SystemTime::now()).await {
            Ok(resp) => {
                sentry.metrics.success(started.elapsed());
                Ok(Response::new(resp))
            }
            Err((reason, status)) => {
                sentry.metrics.failure(reason);
                // The message quotes the request: `clip` escapes its control characters, so
                // what a peer chose cannot start a log line of its own.
                tracing::info!(
                    code = ?status.code(),
                    reason,
                    message = ?crate::logs::clip(status.message()),
                    "sign request refused"
                );
                Err(status)
            }
        }
    }
}

/// A client connection handed to the gRPC server: the TLS stream, the bytes already read from
/// it (the start of the client's HTTP/2 preface, read before the server existed, see [`open`]),
/// and its place in the connection table. Every read and write first asks the table whether
/// the connection must close (shed, or idle past its deadline): then it fails, and the server
/// drops the connection. Nothing is cut while a request is in flight.
struct Conn {
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    early: Vec<u8>,
    early_at: usize,
    expiry: Expiry,
    peer: Option<SocketAddr>,
}

/// What the gRPC server knows of a connection; [`Track`] marks its requests busy with it.
#[derive(Clone, Debug)]
struct ConnInfo {
    state: Arc<ConnState>,
    _peer: Option<SocketAddr>,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            state: self.expiry.slot().state().clone(),
            _peer: self.peer,
        }
    }
}

impl Conn {
    fn check(&mut self, cx: &mut std::task::Context<'_>) -> std::io::Result<()> {
        match self.expiry.poll_expired(cx) {
            std::task::Poll::Ready(why) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                why.to_string(),
            )),
            std::task::Poll::Pending => Ok(()),
        }
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        let this = &mut *self;
        if let Some(early) = this.early.get(this.early_at..).filter(|e| !e.is_empty()) {
            let n = early.len().min(buf.remaining());
            buf.put_slice(early.get(..n).unwrap_or_default());
            this.early_at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

/// Takes an admitted connection up to the point where HTTP/2 can start, each step within the
/// connection's deadline ([`Expiry`]): the client's first bytes (no TLS state is made for a
/// socket that sends nothing), the TLS handshake, and the client's first bytes after it (no
/// HTTP/2 state, whose buffers are most of an idle connection's memory, is made before
/// them). Then hands the connection to the gRPC server.
async fn open(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: admission::Slot,
    acceptor: tokio_rustls::TlsAcceptor,
    to_server: mpsc::Sender<std::io::Result<Conn>>,
) {
    use tokio::io::AsyncReadExt as _;
    let mut expiry = Expiry::new(slot);
    let readable = tokio::select! {
        r = tcp.readable() => r,
        why = expiry.expired() => {
            tracing::debug!(%peer, %why, "connection closed before its TLS handshake");
            return;
        }
    };
    if readable.is_err() {
        return;
    }
    let mut tls = tokio::select! {
        r = acceptor.accept(tcp) => match r {
            Ok(tls) => tls,
            Err(e) => {
                tracing::debug!(%peer, error = ?e.to_string(), "TLS handshake failed");
                return;
            }
        },
        why = expiry.expired() => {
            tracing::debug!(%peer, %why, "TLS handshake cut");
            return;
        }
    };
    expiry.slot().established();
    // The HTTP/2 client preface is 24 bytes; whatever part of it has come is replayed.
    let mut early = vec![0u8; 24];
    let n = tokio::select! {
        r = tls.read(&mut early) => match r {
            Ok(n) if n > 0 => n,
            _ => return,
        },
        why = expiry.expired() => {
            tracing::debug!(%peer, %why, "connection closed before its first request");
            return;
        }
    };
    early.truncate(n);
    let conn = Conn {
        tls,
        early,
        early_at: 0,
        expiry,
        peer: Some(peer),
    };
    let _ = to_server.send(Ok(conn)).await;
}

/// Marks each request busy on its connection ([`ConnState::begin`]) from its headers to its
/// answer, so the connection's idle deadlines pause while it works.
#[derive(Clone, Debug)]
struct Track<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let busy = req.extensions().get::<ConnInfo>().map(|c| c.state.begin());
        let answer = self.0.call(req);
        Box::pin(async move {
            let r = answer.await;
            drop(busy);
            r
        })
    }
}

/// Where Sentry's credentials live, and so what its reload watches.
#[derive(Debug)]
pub enum CredentialStore {
    /// `ca.crt`, `issuer.crt` and `issuer.key` in a directory (`ca::store`).
    Files(StorePaths),
    /// The Secret `dapr-trust-bundle` and its ConfigMap (`ca::secret_store`, kubernetes mode).
    Secret(Box<crate::ca::secret_store::SecretStore>),
}

impl CredentialStore {
    /// The files, in file mode.
    pub const fn paths(&self) -> Option<&StorePaths> {
        match self {
            Self::Files(p) => Some(p),
            Self::Secret(_) => None,
        }
    }
}

/// The sockets Sentry serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (TLS).
    pub grpc: TcpListener,
    /// `/healthz`.
    pub healthz: Option<TcpListener>,
    /// `/metrics`.
    pub metrics: Option<TcpListener>,
    /// OIDC discovery: its listener, TLS, settings.
    pub oidc: Option<oidc::OidcListener>,
}

/// Runs Sentry until `shutdown` resolves, then lets in-flight requests finish. `watch`, if
/// given, is the credential store to follow (hot reload).
///
/// # Errors
///
/// An I/O error of a listener.
pub async fn run(
    sentry: Arc<Sentry>,
    listeners: Listeners,
    store: Option<CredentialStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();

    match store {
        Some(CredentialStore::Files(paths)) => {
            tasks.spawn(reload::watch(sentry.clone(), paths.clone(), stopped()));
            tasks.spawn(rotate::rotate(
                sentry.clone(),
                rotate::Journaled::Files(paths),
                stopped(),
            ));
        }
        Some(CredentialStore::Secret(secrets)) => {
            tasks.spawn(rotate::rotate(
                sentry.clone(),
                rotate::Journaled::Secret(secrets.clone()),
                stopped(),
            ));
            if let Some((algorithm, key_id, loaded)) =
                sentry.settings.jwt.as_ref().and_then(|j| j.secret.clone())
            {
                tasks.spawn(reload::watch_jwt_secret(
                    sentry.clone(),
                    (*secrets).clone(),
                    (algorithm, key_id, loaded),
                    stopped(),
                ));
            }
            tasks.spawn(reload::watch_secret(sentry.clone(), *secrets, stopped()));
        }
        None => {}
    }
    tasks.spawn(renew_serving_loop(sentry.clone(), stopped()));
    if let Some(files) = sentry.settings.jwt.as_ref().and_then(|j| j.files.clone()) {
        tasks.spawn(reload::watch_jwt(sentry.clone(), files, stopped()));
    }
    // The gRPC listener is bound: from here on, clients are queued and served.
    sentry.serving_up.store(true, Ordering::Relaxed);
    if let Some(l) = listeners.healthz {
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(healthz))
            .with_state(sentry.clone());
        tasks.spawn(crate::net::serve_http1(l, app, stopped()));
    }
    if let Some(l) = listeners.metrics {
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics_text))
            .route("/", axum::routing::get(metrics_text))
            .with_state(sentry.clone());
        tasks.spawn(crate::net::serve_http1(l, app, stopped()));
    }
    if let Some(o) = listeners.oidc {
        let app = oidc::router(sentry.clone(), o.settings);
        tasks.spawn(crate::net::serve_http1_maybe_tls(
            o.listener,
            o.tls,
            app,
            stopped(),
        ));
    }

    let mut config = rustls::ServerConfig::builder_with_provider(crate::rustls_glue::provider())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ServingResolver(sentry.clone())));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (conn_tx, conn_rx) = mpsc::channel(256);
    let grpc = listeners.grpc;
    let accept_stop = stopped();
    let table = sentry.connections.clone();
    tasks.spawn(async move {
        tokio::pin!(accept_stop);
        let refusals = crate::logs::Throttle::new(Duration::from_secs(10));
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut accept_stop => break,
                c = crate::net::accept_or(&grpc, || table.accept_failed()) => c,
            };
            match table.admit(peer) {
                Ok(slot) => {
                    tokio::spawn(open(tcp, peer, slot, acceptor.clone(), conn_tx.clone()));
                }
                Err(why) => {
                    if let Some(held_back) = refusals.admit(std::time::Instant::now()) {
                        tracing::warn!(%peer, %why, held_back, "connection refused");
                    }
                }
            }
        }
    });

    let (tx_stop, serve_stop) = (stop_tx.clone(), stopped());
    let signal = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = tx_stop.send(true);
    });
    let service = pb::ca_server::CaServer::new(Service(sentry.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let serve = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION)
        .max_concurrent_streams(u32::try_from(MAX_STREAMS_PER_CONNECTION).ok())
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(SHUTDOWN_GRACE)
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted,
        ))
        .layer(tower::layer::layer_fn(Track))
        .add_service(service)
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), serve_stop);
    let grace = stopped();
    let served = tokio::select! {
        r = serve => r,
        () = async move {
            grace.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("shutdown grace period over: closing the remaining connections");
            Ok(())
        }
    };
    sentry.serving_up.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    signal.abort();
    while tasks.join_next().await.is_some() {}
    served.map_err(std::io::Error::other)
}

/// tonic reports a request over the size limit as `OUT_OF_RANGE`; gRPC's status table (and
/// Go, so Dapr) say `RESOURCE_EXHAUSTED`. This rewrites that one status on the way out.
fn oversize_is_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers();
    let oversize = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("too large") || m.contains("too%20large"));
    if oversize {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}

async fn healthz(
    axum::extract::State(sentry): axum::extract::State<Arc<Sentry>>,
) -> (axum::http::StatusCode, &'static str) {
    if sentry.is_ready() {
        (axum::http::StatusCode::OK, "ok\n")
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(
    axum::extract::State(sentry): axum::extract::State<Arc<Sentry>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        sentry.metrics.render(&sentry.connections.stats()),
    )
}

/// Renews the serving certificate at half its life and whenever the credentials change.
async fn renew_serving_loop(sentry: Arc<Sentry>, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        let not_after = **sentry.serving_not_after.load();
        let left = not_after
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let wait = (left / 2).max(Duration::from_secs(1));
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(wait) => {}
            // The swap re-issued it already: only the next deadline changed.
            () = sentry.credentials_changed.notified() => continue,
        }
        match sentry.renew_serving() {
            Ok(na) => {
                tracing::info!(not_after = %humantime::format_rfc3339_seconds(na), "serving certificate renewed")
            }
            Err(e) => {
                tracing::error!(error = %e, "serving certificate not renewed; retrying in 10 s");
                tokio::select! {
                    () = &mut stopped => return,
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        }
    }
}

/// Where Sentry listens, for the ready line.
pub fn describe(addr: std::io::Result<SocketAddr>) -> String {
    addr.map_or_else(|e| format!("? ({e})"), |a| a.to_string())
}
