//! Kubernetes service-account token validation for Sigil's Sentry CA.
//!
//! This is the Rust counterpart of Dapr Sentry's `kubernetes` validator. A
//! workload presents its Kubernetes service-account token (a JWT) together with
//! the app `id` and `namespace` it wants a certificate for. The caller has
//! already done Sentry's common checks (id non-empty, no dot, at most 64
//! characters, CSR present, namespace non-empty); [`KubeValidator::validate`]
//! then:
//!
//! 1. creates a `TokenReview` (`POST /apis/authentication.k8s.io/v1/tokenreviews`)
//!    with the audiences `dapr.io/sentry` and Sentry's own SPIFFE ID, using
//!    Sentry's own service-account token as bearer (re-read from its file for
//!    every HTTP request, since projected tokens rotate). The review must say
//!    `status.authenticated: true`; if it returns `status.audiences`, one of
//!    them must be one of ours;
//! 2. requires `status.user.username` to be `system:serviceaccount:<ns>:<sa>`;
//! 3. decodes the token's payload *without* verifying it (the API server just
//!    did) and reads the pod name from the `kubernetes.io.pod.name` claim;
//! 4. fetches the pod (`GET /api/v1/namespaces/<ns>/pods/<pod>`);
//! 5. requires `<ns>` to equal the request namespace;
//! 6. requires the pod's `spec.serviceAccountName` to equal `<sa>`;
//! 7. works out the expected app ID: for a pod annotated
//!    `dapr.io/control-plane: operator|placement|injector|sentry|scheduler`
//!    the pod must live in Sentry's namespace, must not also carry
//!    `dapr.io/app-id`, and the expected ID is `dapr-<value>`; otherwise it is
//!    the non-empty `dapr.io/app-id` annotation, else the pod name. The request
//!    ID must equal it;
//! 8. works out the trust domain: Sentry's own for control-plane pods;
//!    otherwise, if the pod has a `dapr.io/config` annotation, the
//!    `spec.accessControl.trustDomain` of that dapr `Configuration` in the pod's
//!    namespace, falling back to `public` when the annotation is absent, the
//!    Configuration does not exist (404) or the field is empty. Any other
//!    failure fetching it refuses the request;
//! 9. returns that trust domain.
//!
//! Transport: every HTTP call opens a fresh HTTP/1.1 connection, bounded by a
//! timeout on the whole call (10 s by default), with a 1 MiB limit on the
//! response body; non-2xx answers become errors naming the status and path.
//! `https://` API servers are verified against the configured CA bundle with
//! the usual host-name check, using rustls' `ring` provider explicitly.
//! `http://` API servers (e.g. a local `kubectl proxy`) are spoken to in plain
//! text; the CA bundle is then ignored. Use that only on loopback.
//!
//! Refusal reasons are meant to be returned to the client (as gRPC
//! `PermissionDenied`): they are precise and never contain the presented token
//! (any occurrence is redacted as a last line of defence) nor Sentry's own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Default time limit for one HTTP call to the API server (connect, TLS,
/// request and full response body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body accepted from the API server.
const MAX_BODY: usize = 1 << 20;
/// Largest token accepted from a workload (real ones are ~1-2 KiB).
const MAX_TOKEN_LEN: usize = 64 * 1024;
/// First TokenReview audience, the one Dapr sidecars request their token for.
const SENTRY_AUDIENCE: &str = "dapr.io/sentry";
/// Trust domain of workloads whose Configuration does not name one.
const PUBLIC_TRUST_DOMAIN: &str = "public";
const ANNOTATION_APP_ID: &str = "dapr.io/app-id";
const ANNOTATION_CONFIG: &str = "dapr.io/config";
const ANNOTATION_CONTROL_PLANE: &str = "dapr.io/control-plane";
const CONTROL_PLANE_SERVICES: [&str; 5] =
    ["operator", "placement", "injector", "sentry", "scheduler"];
const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How Sentry reaches the Kubernetes API.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// Base URL of the API server: `https://host[:port][/prefix]`, or
    /// `http://...` for a plain-text local `kubectl proxy`.
    pub api_server: String,
    /// PEM bundle of the roots that verify the API server's certificate.
    /// Required for `https://`; ignored for `http://`.
    pub ca_pem: Option<String>,
    /// Sentry's own service-account token file, re-read for every request.
    pub token_file: PathBuf,
    /// Namespace Sentry (and so the Dapr control plane) runs in.
    pub sentry_namespace: String,
    /// Sentry's trust domain, given to control-plane workloads.
    pub sentry_trust_domain: String,
    /// Sentry's SPIFFE ID (`spiffe://<td>/ns/<ns>/dapr-sentry`), the second
    /// TokenReview audience.
    pub sentry_id: String,
}

impl KubeConfig {
    /// In-cluster defaults: the API server from `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, the CA bundle and token from
    /// `/var/run/secrets/kubernetes.io/serviceaccount/{ca.crt,token}`. The CA
    /// file is read now; the token file on every request.
    pub fn in_cluster(
        sentry_namespace: String,
        sentry_trust_domain: String,
        sentry_id: String,
    ) -> Result<Self, KubeError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        Self::in_cluster_from(
            host,
            port,
            Path::new(IN_CLUSTER_DIR),
            sentry_namespace,
            sentry_trust_domain,
            sentry_id,
        )
    }

    fn in_cluster_from(
        host: Option<String>,
        port: Option<String>,
        dir: &Path,
        sentry_namespace: String,
        sentry_trust_domain: String,
        sentry_id: String,
    ) -> Result<Self, KubeError> {
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or(KubeError::MissingEnv("KUBERNETES_SERVICE_HOST"))?;
        let port = port
            .filter(|p| !p.is_empty())
            .ok_or(KubeError::MissingEnv("KUBERNETES_SERVICE_PORT"))?;
        let api_server = if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        let ca_path = dir.join("ca.crt");
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(|source| KubeError::ReadCa {
            path: ca_path.clone(),
            source,
        })?;
        Ok(Self {
            api_server,
            ca_pem: Some(ca_pem),
            token_file: dir.join("token"),
            sentry_namespace,
            sentry_trust_domain,
            sentry_id,
        })
    }
}

/// Configuration errors from [`KubeConfig::in_cluster`] and [`KubeValidator::new`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// The API server URL is malformed or has an unsupported scheme.
    #[error("invalid Kubernetes API server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https://` API server was configured without a CA bundle.
    #[error("a CA bundle is required for an https Kubernetes API server")]
    MissingCa,
    /// The CA bundle could not be parsed or holds no usable certificate.
    #[error("invalid Kubernetes API server CA bundle: {0}")]
    InvalidCa(String),
    /// The in-cluster CA file could not be read.
    #[error("cannot read Kubernetes CA bundle {path}: {source}")]
    ReadCa {
        /// Path of the CA file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A required environment variable is unset or empty.
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    /// Another configuration field is empty or invalid.
    #[error("invalid Kubernetes validator configuration: {0}")]
    InvalidConfig(String),
    /// The TLS client configuration could not be built.
    #[error("cannot build TLS client configuration: {0}")]
    Tls(String),
}

/// Parsed API server location.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    /// Host without IPv6 brackets (used for the TLS server name).
    host: String,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// `host:port` with IPv6 brackets, for connecting.
    connect_addr: String,
    /// Path prefix without a trailing slash (usually empty).
    base_path: String,
    /// Whether the scheme is `https`.
    tls: bool,
}

fn parse_api_server(url: &str) -> Result<Endpoint, KubeError> {
    let bad = |reason: &str| KubeError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let lower = url.to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("https://") {
        (true, url.get("https://".len()..).unwrap_or(""))
    } else if lower.starts_with("http://") {
        (false, url.get("http://".len()..).unwrap_or(""))
    } else {
        return Err(bad("scheme must be https:// or http://"));
    };
    if rest
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\'))
    {
        return Err(bad(
            "must not contain whitespace, a query, a fragment or user info",
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
        None => (rest, ""),
    };
    let (host, port) = if let Some(after_bracket) = authority.strip_prefix('[') {
        let (host, after) = after_bracket
            .split_once(']')
            .ok_or_else(|| bad("unterminated IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("unexpected text after IPv6 address"))?,
            ),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad("invalid host"));
    }
    let port: u16 = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad("invalid port")),
        },
    };
    let connect_addr = if authority.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let base_path = path.trim_end_matches('/').to_string();
    Ok(Endpoint {
        host: host.to_string(),
        authority: authority.to_string(),
        connect_addr,
        base_path,
        tls,
    })
}

/// Error from one HTTP call to the API server.
#[derive(Debug)]
enum CallError {
    /// The API server answered with a non-2xx status.
    Status {
        status: StatusCode,
        method: Method,
        path: String,
        message: Option<String>,
    },
    /// Transport, timeout, size or decoding failure.
    Other(String),
}

impl CallError {
    fn is_not_found(&self) -> bool {
        matches!(self, CallError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status {
                status,
                method,
                path,
                message,
            } => {
                write!(f, "kubernetes API returned {status} for {method} {path}")?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            CallError::Other(s) => f.write_str(s),
        }
    }
}

/// Validates Kubernetes service-account tokens for Sentry (see the module docs).
pub struct KubeValidator {
    endpoint: Endpoint,
    /// TLS connector (holding an `Arc<rustls::ClientConfig>`) and server name;
    /// `None` for `http://`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    token_file: PathBuf,
    sentry_namespace: String,
    sentry_trust_domain: String,
    sentry_id: String,
    timeout: Duration,
}

impl std::fmt::Debug for KubeValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeValidator")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .field("token_file", &self.token_file)
            .field("sentry_namespace", &self.sentry_namespace)
            .field("sentry_trust_domain", &self.sentry_trust_domain)
            .field("sentry_id", &self.sentry_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KubeValidator {
    /// Builds a validator: parses the API server URL and, for `https://`, the
    /// CA bundle into a rustls client configuration (ring provider). Does no
    /// I/O; the token file is read per request.
    pub fn new(config: KubeConfig) -> Result<Self, KubeError> {
        let endpoint = parse_api_server(&config.api_server)?;
        for (name, value) in [
            ("sentry_namespace", &config.sentry_namespace),
            ("sentry_trust_domain", &config.sentry_trust_domain),
            ("sentry_id", &config.sentry_id),
        ] {
            if value.trim().is_empty() {
                return Err(KubeError::InvalidConfig(format!("{name} is empty")));
            }
        }
        if config.token_file.as_os_str().is_empty() {
            return Err(KubeError::InvalidConfig("token_file is empty".into()));
        }
        let tls = if endpoint.tls {
            let pem = config.ca_pem.as_deref().ok_or(KubeError::MissingCa)?;
            let tls_config = client_tls_config(pem)?;
            let server_name =
                ServerName::try_from(endpoint.host.clone()).map_err(|e| KubeError::InvalidUrl {
                    url: config.api_server.clone(),
                    reason: format!("host is not a valid TLS server name: {e}"),
                })?;
            Some((TlsConnector::from(tls_config), server_name))
        } else {
            None
        };
        Ok(Self {
            endpoint,
            tls,
            token_file: config.token_file,
            sentry_namespace: config.sentry_namespace,
            sentry_trust_domain: config.sentry_trust_domain,
            sentry_id: config.sentry_id,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Replaces the per-call time limit ([`DEFAULT_TIMEOUT`], 10 s). Meant for
    /// tests; a zero duration is ignored.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        if !timeout.is_zero() {
            self.timeout = timeout;
        }
        self
    }

    /// Validates a workload's Kubernetes token for app `id` in `namespace`.
    /// Returns the trust domain for its certificate, or a refusal reason that
    /// the caller maps to gRPC `PermissionDenied`. The reason never contains
    /// the token.
    pub async fn validate(&self, id: &str, namespace: &str, token: &str) -> Result<String, String> {
        match self.check(id, namespace, token).await {
            Ok(td) => {
                tracing::debug!(id, namespace, trust_domain = ?td, "kubernetes token validated");
                Ok(td)
            }
            Err(reason) => {
                let reason = if token.is_empty() {
                    reason
                } else {
                    reason.replace(token, "<redacted>")
                };
                // `?`: the reason quotes the token's claims and the API server's answer.
                tracing::debug!(id, namespace, ?reason, "kubernetes token refused");
                Err(reason)
            }
        }
    }

    async fn check(&self, id: &str, namespace: &str, token: &str) -> Result<String, String> {
        if token.is_empty() {
            return Err("token is empty".into());
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(format!("token is larger than {MAX_TOKEN_LEN} bytes"));
        }

        // 1. TokenReview.
        let review_body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {
                "token": token,
                "audiences": [SENTRY_AUDIENCE, self.sentry_id],
            }
        });
        let review_body = serde_json::to_vec(&review_body)
            .map_err(|e| format!("cannot encode token review: {e}"))?;
        let review = self
            .call(
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews".into(),
                Some(review_body),
            )
            .await
            .map_err(|e| format!("token review failed: {e}"))?;
        let status = review.get("status");
        let authenticated = status
            .and_then(|s| s.get("authenticated"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !authenticated {
            let error = status
                .and_then(|s| s.get("error"))
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty());
            return Err(match error {
                Some(e) => format!("token not authenticated: {e}"),
                None => "token not authenticated".into(),
            });
        }
        if let Some(auds) = status
            .and_then(|s| s.get("audiences"))
            .and_then(Value::as_array)
        {
            let ours = auds
                .iter()
                .filter_map(Value::as_str)
                .any(|a| a == SENTRY_AUDIENCE || a == self.sentry_id);
            if !ours {
                return Err("token review returned none of the requested audiences".into());
            }
        }

        // 2. Username.
        let username = status
            .and_then(|s| s.pointer("/user/username"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let (sa_namespace, sa_name) = parse_service_account_username(username)?;

        // 3. Pod name claim.
        let pod_name = pod_name_claim(token)?;

        // 4. Pod.
        let pod_path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            path_segment("service account namespace", sa_namespace)?,
            path_segment("pod name", &pod_name)?
        );
        let pod = self
            .call(Method::GET, pod_path, None)
            .await
            .map_err(|e| format!("failed to get pod {sa_namespace}/{pod_name}: {e}"))?;

        // 5. Namespace.
        if sa_namespace != namespace {
            return Err(format!(
                "namespace mismatch: token is for namespace {sa_namespace}, request is for {namespace}"
            ));
        }

        // 6. Service account.
        let pod_sa = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if pod_sa != sa_name {
            return Err(format!(
                "service account mismatch: token is for service account {sa_name}, pod {sa_namespace}/{pod_name} runs as {pod_sa:?}"
            ));
        }

        // 7. Expected app ID.
        let annotations = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object);
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
        let control_plane =
            annotation(ANNOTATION_CONTROL_PLANE).filter(|v| CONTROL_PLANE_SERVICES.contains(v));
        let app_id = annotation(ANNOTATION_APP_ID);
        let expected_id = if let Some(service) = control_plane {
            if sa_namespace != self.sentry_namespace {
                return Err(format!(
                    "control plane pod {sa_namespace}/{pod_name} ({ANNOTATION_CONTROL_PLANE}={service}) is not in the control plane namespace {}",
                    self.sentry_namespace
                ));
            }
            if app_id.is_some() {
                return Err(format!(
                    "pod {sa_namespace}/{pod_name} has both {ANNOTATION_CONTROL_PLANE} and {ANNOTATION_APP_ID} annotations"
                ));
            }
            format!("dapr-{service}")
        } else {
            app_id
                .filter(|a| !a.is_empty())
                .unwrap_or(&pod_name)
                .to_string()
        };
        if id != expected_id {
            return Err(format!(
                "app-id mismatch. expected: {expected_id}, received: {id}"
            ));
        }

        // 8. Trust domain.
        if control_plane.is_some() {
            return Ok(self.sentry_trust_domain.clone());
        }
        let Some(config_name) = annotation(ANNOTATION_CONFIG).filter(|c| !c.is_empty()) else {
            return Ok(PUBLIC_TRUST_DOMAIN.into());
        };
        let config_path = format!(
            "/apis/dapr.io/v1alpha1/namespaces/{}/configurations/{}",
            path_segment("namespace", sa_namespace)?,
            path_segment("configuration name", config_name)?
        );
        let config = match self.call(Method::GET, config_path, None).await {
            Ok(config) => config,
            Err(e) if e.is_not_found() => return Ok(PUBLIC_TRUST_DOMAIN.into()),
            Err(e) => {
                return Err(format!(
                    "failed to get configuration {sa_namespace}/{config_name}: {e}"
                ));
            }
        };
        let trust_domain = config
            .pointer("/spec/accessControl/trustDomain")
            .and_then(Value::as_str)
            .unwrap_or("");
        if trust_domain.is_empty() {
            return Ok(PUBLIC_TRUST_DOMAIN.into());
        }
        if !is_valid_trust_domain(trust_domain) {
            return Err(format!(
                "configuration {sa_namespace}/{config_name} has an invalid trust domain {trust_domain:?}"
            ));
        }
        // 9.
        Ok(trust_domain.to_string())
    }

    /// One HTTP call, bounded by the timeout, returning the JSON body of a
    /// 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<Value, CallError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.call_inner(method.clone(), &path, body)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Other(format!(
                "{method} {path} timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, CallError> {
        let bearer = self.bearer_header()?;
        let full_path = format!("{}{path}", self.endpoint.base_path);
        let host = HeaderValue::from_str(&self.endpoint.authority)
            .map_err(|_| CallError::Other("invalid API server host".into()))?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(full_path.as_str())
            .header(header::HOST, host)
            .header(header::AUTHORIZATION, bearer)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "sigil-sentry");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::Other(format!("cannot build request for {path}: {e}")))?;

        let tcp = TcpStream::connect(&self.endpoint.connect_addr)
            .await
            .map_err(|e| {
                CallError::Other(format!(
                    "cannot connect to {}: {e}",
                    self.endpoint.connect_addr
                ))
            })?;
        let _ = tcp.set_nodelay(true);
        let (status, bytes) = match &self.tls {
            Some((connector, server_name)) => {
                let stream = connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| {
                        CallError::Other(format!(
                            "TLS handshake with {} failed: {e}",
                            self.endpoint.authority
                        ))
                    })?;
                exchange(stream, request).await
            }
            None => exchange(tcp, request).await,
        }
        .map_err(|e| CallError::Other(format!("{method} {path}: {e}")))?;

        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(truncate));
            return Err(CallError::Status {
                status,
                method,
                path: path.to_string(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Other(format!("invalid JSON in response to {method} {path}: {e}"))
        })
    }

    /// Reads Sentry's own token (fresh on every request) into a sensitive
    /// `Authorization` header value.
    fn bearer_header(&self) -> Result<HeaderValue, CallError> {
        let raw = std::fs::read_to_string(&self.token_file).map_err(|e| {
            CallError::Other(format!(
                "cannot read sentry service account token {}: {e}",
                self.token_file.display()
            ))
        })?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(CallError::Other(format!(
                "sentry service account token {} is empty",
                self.token_file.display()
            )));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            CallError::Other(format!(
                "sentry service account token {} contains invalid characters",
                self.token_file.display()
            ))
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Sends one request on a fresh HTTP/1.1 connection and reads the whole
/// (size-limited) response body. The connection is driven in place (no
/// spawned task), so dropping this future closes it.
async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("response body exceeds {MAX_BODY} bytes")
                } else {
                    format!("reading response body failed: {e}")
                }
            })?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let mut conn = std::pin::pin!(conn);
    let mut exchange = std::pin::pin!(exchange);
    let mut conn_done = false;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            result = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = result {
                    return Err(format!("connection failed: {e}"));
                }
            }
        }
    }
}

fn client_tls_config(pem: &str) -> Result<Arc<rustls::ClientConfig>, KubeError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        certs.push(cert.map_err(|e| KubeError::InvalidCa(e.to_string()))?);
    }
    if certs.is_empty() {
        return Err(KubeError::InvalidCa("no CERTIFICATE block found".into()));
    }
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "ignored unparsable certificates in the Kubernetes CA bundle"
        );
    }
    if added == 0 {
        return Err(KubeError::InvalidCa("no usable root certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Splits `system:serviceaccount:<ns>:<sa>` into `(ns, sa)`.
fn parse_service_account_username(username: &str) -> Result<(&str, &str), String> {
    let refuse = || {
        Err(format!(
            "token is not a service account token: username {username:?} is not system:serviceaccount:<namespace>:<name>"
        ))
    };
    let parts: Vec<&str> = username.split(':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => Ok((ns, sa)),
        _ => refuse(),
    }
}

/// Reads the `kubernetes.io.pod.name` claim of an (already verified) JWT
/// without checking its signature.
fn pod_name_claim(token: &str) -> Result<String, String> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token is not a JWT".into());
    };
    let bytes = Base64UrlUnpadded::decode_vec(payload.trim_end_matches('='))
        .map_err(|_| "token payload is not valid base64url".to_string())?;
    let claims: Value = serde_json::from_slice(&bytes)
        .map_err(|_| "token payload is not valid JSON".to_string())?;
    claims
        .get("kubernetes.io")
        .and_then(|k| k.get("pod"))
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "token has no pod name claim".to_string())
}

/// Checks and percent-encodes one URL path segment. Names are DNS-1123 in
/// practice; anything with `/`, `?`, `#`, `%`, whitespace or control
/// characters is refused rather than encoded.
fn path_segment(what: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(format!("invalid {what} {value:?}"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%'))
    {
        return Err(format!("invalid {what} {value:?}"));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// SPIFFE trust domain name: lowercase letters, digits, `.`, `-`, `_`.
fn is_valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn truncate(s: &str) -> String {
    const MAX: usize = 256;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::Response;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    const SENTRY_NS: &str = "dapr-system";
    const SENTRY_TD: &str = "cluster.local";
    const SENTRY_ID: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";
    const SENTRY_TOKEN: &str = "sentry-token-1";
    const SA_USER: &str = "system:serviceaccount:default:mysa";

    // ---- PKI -------------------------------------------------------------

    struct Pki {
        ca_pem: String,
        server: Arc<rustls::ServerConfig>,
    }

    fn pki() -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("fake kube CA {n}"));
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
            )
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Pki {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }

    // ---- fake API server -------------------------------------------------

    #[derive(Clone, Debug)]
    struct Recorded {
        method: String,
        path: String,
        bearer: String,
        content_type: String,
        body: Value,
    }

    #[derive(Default)]
    struct FakeState {
        /// Sentry tokens the server accepts.
        bearers: Vec<String>,
        /// Workload token -> TokenReview status.
        reviews: HashMap<String, Value>,
        /// "ns/name" -> Pod.
        pods: HashMap<String, Value>,
        /// "ns/name" -> dapr Configuration.
        configs: HashMap<String, Value>,
        /// Force this status for every Configuration GET.
        config_status: Option<u16>,
        /// Answer every Pod GET with this raw 200 body.
        raw_pod_body: Option<String>,
        requests: Vec<Recorded>,
    }

    type State = Arc<Mutex<FakeState>>;

    fn k8s_status(code: u16, reason: &str, message: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code})
    }

    fn route(st: &mut FakeState, method: &str, path: &str, rec: &Recorded) -> (u16, String) {
        if !st.bearers.contains(&rec.bearer) {
            return (
                401,
                k8s_status(401, "Unauthorized", "Unauthorized").to_string(),
            );
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (code, body) = match (method, segs.as_slice()) {
            ("POST", ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
                let b = &rec.body;
                let shape_ok = b["apiVersion"] == "authentication.k8s.io/v1"
                    && b["kind"] == "TokenReview"
                    && rec.content_type == "application/json"
                    && b["spec"]["audiences"] == json!(["dapr.io/sentry", SENTRY_ID]);
                if !shape_ok {
                    (
                        400,
                        k8s_status(400, "BadRequest", "unexpected token review"),
                    )
                } else {
                    let token = b["spec"]["token"].as_str().unwrap_or("");
                    let status = st.reviews.get(token).cloned().unwrap_or_else(
                        || json!({"authenticated": false, "error": "invalid bearer token"}),
                    );
                    (
                        201,
                        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                               "metadata": {"creationTimestamp": null}, "spec": b["spec"], "status": status}),
                    )
                }
            }
            ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
                if let Some(raw) = &st.raw_pod_body {
                    return (200, raw.clone());
                }
                match st.pods.get(&format!("{ns}/{name}")) {
                    Some(p) => (200, p.clone()),
                    None => (
                        404,
                        k8s_status(404, "NotFound", &format!("pods \"{name}\" not found")),
                    ),
                }
            }
            ("GET", ["apis", "dapr.io", "v1alpha1", "namespaces", ns, "configurations", name]) => {
                match (st.config_status, st.configs.get(&format!("{ns}/{name}"))) {
                    (Some(code), _) => {
                        (code, k8s_status(code, "InternalError", "etcd unavailable"))
                    }
                    (None, Some(c)) => (200, c.clone()),
                    (None, None) => (
                        404,
                        k8s_status(
                            404,
                            "NotFound",
                            &format!("configurations.dapr.io \"{name}\" not found"),
                        ),
                    ),
                }
            }
            _ => (
                404,
                k8s_status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
        };
        (code, body.to_string())
    }

    async fn handle(
        state: State,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let header_str = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let bearer = header_str(header::AUTHORIZATION)
            .strip_prefix("Bearer ")
            .unwrap_or("")
            .to_string();
        let content_type = header_str(header::CONTENT_TYPE);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let rec = Recorded {
            method: method.clone(),
            path: path.clone(),
            bearer,
            content_type,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        };
        let (code, body) = {
            let mut st = state.lock().unwrap();
            st.requests.push(rec.clone());
            route(&mut st, &method, &path, &rec)
        };
        Ok(Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap())
    }

    async fn serve_conn<IO>(io: IO, state: State)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req| handle(state.clone(), req));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }

    /// Starts the fake API server on 127.0.0.1:0; returns its port.
    async fn start_server(state: State, tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.map(TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acc) => {
                            if let Ok(tls) = acc.accept(tcp).await {
                                serve_conn(tls, state).await;
                            }
                        }
                        None => serve_conn(tcp, state).await,
                    }
                });
            }
        });
        port
    }

    // ---- fixture ---------------------------------------------------------

    fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sigil-kube-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    struct Fixture {
        state: State,
        validator: KubeValidator,
        token_file: PathBuf,
        port: u16,
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn config(api_server: String, ca_pem: Option<String>, token_file: PathBuf) -> KubeConfig {
        KubeConfig {
            api_server,
            ca_pem,
            token_file,
            sentry_namespace: SENTRY_NS.into(),
            sentry_trust_domain: SENTRY_TD.into(),
            sentry_id: SENTRY_ID.into(),
        }
    }

    impl Fixture {
        async fn new() -> Self {
            Self::with_pkis(pki(), None).await
        }

        /// `client_ca`: CA given to the validator instead of the server's.
        async fn with_pkis(server_pki: Pki, client_ca: Option<String>) -> Self {
            let state: State = Arc::new(Mutex::new(FakeState {
                bearers: vec![SENTRY_TOKEN.into()],
                ..FakeState::default()
            }));
            let port = start_server(state.clone(), Some(server_pki.server.clone())).await;
            let dir = temp_dir();
            let token_file = dir.join("token");
            std::fs::write(&token_file, format!("{SENTRY_TOKEN}\n")).unwrap();
            let ca = client_ca.unwrap_or(server_pki.ca_pem);
            let validator = KubeValidator::new(config(
                format!("https://localhost:{port}"),
                Some(ca),
                token_file.clone(),
            ))
            .unwrap();
            Self {
                state,
                validator,
                token_file,
                port,
                dir,
            }
        }

        fn authenticate(&self, token: &str, username: &str) {
            self.state.lock().unwrap().reviews.insert(
                token.into(),
                json!({"authenticated": true,
                       "user": {"username": username, "uid": "1234",
                                "groups": ["system:serviceaccounts", "system:authenticated"]},
                       "audiences": ["dapr.io/sentry"]}),
            );
        }

        fn add_pod(&self, ns: &str, name: &str, sa: &str, annotations: &[(&str, &str)]) {
            let ann: serde_json::Map<String, Value> = annotations
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            self.state.lock().unwrap().pods.insert(
                format!("{ns}/{name}"),
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": ns, "uid": "pod-uid", "annotations": ann},
                       "spec": {"serviceAccountName": sa, "containers": []},
                       "status": {"phase": "Running"}}),
            );
        }

        fn add_config(&self, ns: &str, name: &str, trust_domain: &str) {
            self.state.lock().unwrap().configs.insert(
                format!("{ns}/{name}"),
                json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
                       "metadata": {"name": name, "namespace": ns},
                       "spec": {"accessControl": {"defaultAction": "allow", "trustDomain": trust_domain}}}),
            );
        }

        fn requests(&self) -> Vec<Recorded> {
            self.state.lock().unwrap().requests.clone()
        }

        fn paths(&self) -> Vec<String> {
            self.requests()
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect()
        }

        /// Standard workload: token for default/mysa, pod default/mypod.
        fn standard(&self, annotations: &[(&str, &str)]) -> String {
            let token = jwt(&claims("default", Some("mypod"), "mysa"));
            self.authenticate(&token, SA_USER);
            self.add_pod("default", "mypod", "mysa", annotations);
            token
        }
    }

    fn claims(ns: &str, pod: Option<&str>, sa: &str) -> Value {
        let mut k = json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": "sa-uid"}});
        if let Some(pod) = pod {
            k["pod"] = json!({"name": pod, "uid": "pod-uid"});
        }
        json!({"aud": ["dapr.io/sentry"], "iss": "https://kubernetes.default.svc.cluster.local",
               "sub": format!("system:serviceaccount:{ns}:{sa}"), "exp": 4102444800u64,
               "kubernetes.io": k})
    }

    fn jwt(claims: &Value) -> String {
        let header = json!({"alg": "RS256", "kid": "test"});
        format!(
            "{}.{}.c2lnbmF0dXJl",
            Base64UrlUnpadded::encode_string(header.to_string().as_bytes()),
            Base64UrlUnpadded::encode_string(claims.to_string().as_bytes())
        )
    }

    const REVIEW: &str = "POST /apis/authentication.k8s.io/v1/tokenreviews";
    const GET_POD: &str = "GET /api/v1/namespaces/default/pods/mypod";

    // ---- tests -----------------------------------------------------------

    #[tokio::test]
    async fn happy_path_app_id_annotation() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[(ANNOTATION_APP_ID, "myapp")]);
        assert_eq!(
            fx.validator.validate("myapp", "default", &token).await,
            Ok("public".to_string())
        );
        let reqs = fx.requests();
        assert_eq!(fx.paths(), vec![REVIEW, GET_POD]);
        for r in &reqs {
            assert_eq!(r.bearer, SENTRY_TOKEN);
        }
        assert_eq!(reqs[0].content_type, "application/json");
        assert_eq!(
            reqs[0].body,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                   "spec": {"token": token, "audiences": ["dapr.io/sentry", SENTRY_ID]}})
        );
    }

    #[tokio::test]
    async fn pod_name_fallback_without_app_id() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[]);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Ok("public".to_string())
        );
        assert_eq!(
            fx.validator.validate("myapp", "default", &token).await,
            Err("app-id mismatch. expected: mypod, received: myapp".to_string())
        );
    }

    #[tokio::test]
    async fn empty_app_id_annotation_falls_back_to_pod_name() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[(ANNOTATION_APP_ID, "")]);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Ok("public".to_string())
        );
    }

    #[tokio::test]
    async fn trust_domain_from_configuration() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[
            (ANNOTATION_APP_ID, "myapp"),
            (ANNOTATION_CONFIG, "myconfig"),
        ]);
        fx.add_config("default", "myconfig", "example.org");
        assert_eq!(
            fx.validator.validate("myapp", "default", &token).await,
            Ok("example.org".to_string())
        );
        assert_eq!(
            fx.paths(),
            vec![
                REVIEW,
                GET_POD,
                "GET /apis/dapr.io/v1alpha1/namespaces/default/configurations/myconfig"
            ]
        );
        assert!(fx.requests().iter().all(|r| r.bearer == SENTRY_TOKEN));

        // Empty field -> public.
        fx.add_config("default", "myconfig", "");
        assert_eq!(
            fx.validator.validate("myapp", "default", &token).await,
            Ok("public".to_string())
        );
    }

    #[tokio::test]
    async fn configuration_404_is_public() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[(ANNOTATION_APP_ID, "myapp"), (ANNOTATION_CONFIG, "missing")]);
        assert_eq!(
            fx.validator.validate("myapp", "default", &token).await,
            Ok("public".to_string())
        );
        assert_eq!(fx.paths().len(), 3);
    }

    #[tokio::test]
    async fn configuration_server_error_refuses() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[
            (ANNOTATION_APP_ID, "myapp"),
            (ANNOTATION_CONFIG, "myconfig"),
        ]);
        fx.add_config("default", "myconfig", "example.org");
        fx.state.lock().unwrap().config_status = Some(500);
        assert_eq!(
            fx.validator.validate("myapp", "default", &token).await,
            Err("failed to get configuration default/myconfig: kubernetes API returned 500 Internal Server Error for GET /apis/dapr.io/v1alpha1/namespaces/default/configurations/myconfig: etcd unavailable".to_string())
        );
    }

    #[tokio::test]
    async fn configuration_invalid_trust_domain_refuses() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[
            (ANNOTATION_APP_ID, "myapp"),
            (ANNOTATION_CONFIG, "myconfig"),
        ]);
        fx.add_config("default", "myconfig", "Bad/TD");
        assert_eq!(
            fx.validator.validate("myapp", "default", &token).await,
            Err(
                "configuration default/myconfig has an invalid trust domain \"Bad/TD\"".to_string()
            )
        );
    }

    #[tokio::test]
    async fn unauthenticated_token() {
        let fx = Fixture::new().await;
        fx.add_pod("default", "mypod", "mysa", &[]);
        let token = jwt(&claims("default", Some("mypod"), "mysa"));
        // Unknown to the fake server -> authenticated: false with an error.
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("token not authenticated: invalid bearer token".to_string())
        );
        assert_eq!(fx.paths(), vec![REVIEW]);

        // No error text.
        fx.state
            .lock()
            .unwrap()
            .reviews
            .insert(token.clone(), json!({"authenticated": false}));
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("token not authenticated".to_string())
        );

        // An error that echoes the token is redacted.
        fx.state.lock().unwrap().reviews.insert(
            token.clone(),
            json!({"authenticated": false, "error": format!("bad token {token}")}),
        );
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("token not authenticated: bad token <redacted>".to_string())
        );
    }

    #[tokio::test]
    async fn empty_token_refused_without_calls() {
        let fx = Fixture::new().await;
        assert_eq!(
            fx.validator.validate("mypod", "default", "").await,
            Err("token is empty".to_string())
        );
        assert!(fx.requests().is_empty());
    }

    #[tokio::test]
    async fn review_audiences_must_include_ours() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[]);
        fx.state.lock().unwrap().reviews.insert(
            token.clone(),
            json!({"authenticated": true, "user": {"username": SA_USER}, "audiences": ["other"]}),
        );
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("token review returned none of the requested audiences".to_string())
        );
    }

    #[tokio::test]
    async fn username_not_a_service_account() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[]);
        for username in [
            "system:serviceaccount:default",
            "system:serviceaccount:default:mysa:extra",
            "system:node:default:mysa",
            "system:serviceaccount::mysa",
            "",
        ] {
            fx.authenticate(&token, username);
            assert_eq!(
                fx.validator.validate("mypod", "default", &token).await,
                Err(format!(
                    "token is not a service account token: username {username:?} is not system:serviceaccount:<namespace>:<name>"
                ))
            );
        }
        assert!(fx.paths().iter().all(|p| p == REVIEW));
    }

    #[tokio::test]
    async fn namespace_mismatch() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[]);
        assert_eq!(
            fx.validator.validate("mypod", "other", &token).await,
            Err(
                "namespace mismatch: token is for namespace default, request is for other"
                    .to_string()
            )
        );
    }

    #[tokio::test]
    async fn service_account_mismatch() {
        let fx = Fixture::new().await;
        let token = jwt(&claims("default", Some("mypod"), "mysa"));
        fx.authenticate(&token, SA_USER);
        fx.add_pod("default", "mypod", "othersa", &[]);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("service account mismatch: token is for service account mysa, pod default/mypod runs as \"othersa\"".to_string())
        );
    }

    #[tokio::test]
    async fn app_id_mismatch() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[(ANNOTATION_APP_ID, "myapp")]);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("app-id mismatch. expected: myapp, received: mypod".to_string())
        );
    }

    #[tokio::test]
    async fn missing_pod_name_claim() {
        let fx = Fixture::new().await;
        let token = jwt(&claims("default", None, "mysa"));
        fx.authenticate(&token, SA_USER);
        fx.add_pod("default", "mypod", "mysa", &[]);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("token has no pod name claim".to_string())
        );
        assert_eq!(fx.paths(), vec![REVIEW]);
    }

    #[tokio::test]
    async fn pod_name_with_slash_refused_without_request() {
        let fx = Fixture::new().await;
        let token = jwt(&claims("default", Some("a/../b"), "mysa"));
        fx.authenticate(&token, SA_USER);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("invalid pod name \"a/../b\"".to_string())
        );
        assert_eq!(fx.paths(), vec![REVIEW]);
    }

    #[tokio::test]
    async fn pod_not_found() {
        let fx = Fixture::new().await;
        let token = jwt(&claims("default", Some("mypod"), "mysa"));
        fx.authenticate(&token, SA_USER);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("failed to get pod default/mypod: kubernetes API returned 404 Not Found for GET /api/v1/namespaces/default/pods/mypod: pods \"mypod\" not found".to_string())
        );
    }

    #[tokio::test]
    async fn response_body_limit() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[]);
        fx.state.lock().unwrap().raw_pod_body =
            Some(format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY + 10)));
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("failed to get pod default/mypod: GET /api/v1/namespaces/default/pods/mypod: response body exceeds 1048576 bytes".to_string())
        );
    }

    fn control_plane_token(fx: &Fixture, ns: &str, pod: &str, sa: &str) -> String {
        let token = jwt(&claims(ns, Some(pod), sa));
        fx.authenticate(&token, &format!("system:serviceaccount:{ns}:{sa}"));
        token
    }

    #[tokio::test]
    async fn control_plane_in_sentry_namespace() {
        let fx = Fixture::new().await;
        let token = control_plane_token(&fx, SENTRY_NS, "dapr-operator-7d9f", "dapr-operator");
        fx.add_pod(
            SENTRY_NS,
            "dapr-operator-7d9f",
            "dapr-operator",
            &[
                (ANNOTATION_CONTROL_PLANE, "operator"),
                (ANNOTATION_CONFIG, "daprsystem"),
            ],
        );
        assert_eq!(
            fx.validator
                .validate("dapr-operator", SENTRY_NS, &token)
                .await,
            Ok(SENTRY_TD.to_string())
        );
        // The Configuration is not consulted for control-plane pods.
        assert_eq!(
            fx.paths(),
            vec![
                REVIEW.to_string(),
                "GET /api/v1/namespaces/dapr-system/pods/dapr-operator-7d9f".to_string()
            ]
        );
        assert_eq!(
            fx.validator
                .validate("dapr-operator-7d9f", SENTRY_NS, &token)
                .await,
            Err(
                "app-id mismatch. expected: dapr-operator, received: dapr-operator-7d9f"
                    .to_string()
            )
        );
    }

    #[tokio::test]
    async fn control_plane_outside_sentry_namespace() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[(ANNOTATION_CONTROL_PLANE, "operator")]);
        assert_eq!(
            fx.validator.validate("dapr-operator", "default", &token).await,
            Err("control plane pod default/mypod (dapr.io/control-plane=operator) is not in the control plane namespace dapr-system".to_string())
        );
    }

    #[tokio::test]
    async fn control_plane_with_app_id() {
        let fx = Fixture::new().await;
        let token = control_plane_token(&fx, SENTRY_NS, "dapr-sentry-1", "dapr-sentry");
        fx.add_pod(
            SENTRY_NS,
            "dapr-sentry-1",
            "dapr-sentry",
            &[
                (ANNOTATION_CONTROL_PLANE, "sentry"),
                (ANNOTATION_APP_ID, "dapr-sentry"),
            ],
        );
        assert_eq!(
            fx.validator.validate("dapr-sentry", SENTRY_NS, &token).await,
            Err("pod dapr-system/dapr-sentry-1 has both dapr.io/control-plane and dapr.io/app-id annotations".to_string())
        );
    }

    #[tokio::test]
    async fn unknown_control_plane_value_is_a_normal_pod() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[(ANNOTATION_CONTROL_PLANE, "dashboard")]);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Ok("public".to_string())
        );
    }

    #[tokio::test]
    async fn server_certificate_from_another_ca() {
        let other = pki();
        let fx = Fixture::with_pkis(pki(), Some(other.ca_pem)).await;
        let token = fx.standard(&[]);
        let err = fx
            .validator
            .validate("mypod", "default", &token)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!(
                "token review failed: TLS handshake with localhost:{} failed: invalid peer certificate: UnknownIssuer",
                fx.port
            )
        );
        assert!(fx.requests().is_empty());
    }

    #[tokio::test]
    async fn server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let dir = temp_dir();
        let token_file = dir.join("token");
        std::fs::write(&token_file, SENTRY_TOKEN).unwrap();
        let validator = KubeValidator::new(config(
            format!("https://localhost:{port}"),
            Some(pki().ca_pem),
            token_file,
        ))
        .unwrap()
        .with_timeout(Duration::from_secs(1));
        let start = Instant::now();
        let result = validator
            .validate(
                "mypod",
                "default",
                &jwt(&claims("default", Some("mypod"), "mysa")),
            )
            .await;
        let elapsed = start.elapsed();
        assert_eq!(
            result,
            Err("token review failed: POST /apis/authentication.k8s.io/v1/tokenreviews timed out after 1000 ms".to_string())
        );
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        holder.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn sentry_token_file_is_reread() {
        let fx = Fixture::new().await;
        let token = fx.standard(&[]);
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Ok("public".to_string())
        );
        // Rotate: the server now accepts only the new token.
        std::fs::write(&fx.token_file, "sentry-token-2\n").unwrap();
        fx.state.lock().unwrap().bearers = vec!["sentry-token-2".into()];
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Ok("public".to_string())
        );
        let bearers: Vec<String> = fx.requests().into_iter().map(|r| r.bearer).collect();
        assert_eq!(
            bearers,
            vec![
                SENTRY_TOKEN,
                SENTRY_TOKEN,
                "sentry-token-2",
                "sentry-token-2"
            ]
        );

        // A rejected Sentry token is reported with status and path.
        std::fs::write(&fx.token_file, "stale").unwrap();
        assert_eq!(
            fx.validator.validate("mypod", "default", &token).await,
            Err("token review failed: kubernetes API returned 401 Unauthorized for POST /apis/authentication.k8s.io/v1/tokenreviews: Unauthorized".to_string())
        );

        // A missing token file is reported without panicking.
        std::fs::remove_file(&fx.token_file).unwrap();
        let err = fx
            .validator
            .validate("mypod", "default", &token)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("token review failed: cannot read sentry service account token "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn plain_http_api_server() {
        let state: State = Arc::new(Mutex::new(FakeState {
            bearers: vec![SENTRY_TOKEN.into()],
            ..FakeState::default()
        }));
        let port = start_server(state.clone(), None).await;
        let dir = temp_dir();
        let token_file = dir.join("token");
        std::fs::write(&token_file, SENTRY_TOKEN).unwrap();
        let validator = KubeValidator::new(config(
            format!("http://127.0.0.1:{port}/"),
            None,
            token_file,
        ))
        .unwrap();
        let token = jwt(&claims("default", Some("mypod"), "mysa"));
        state.lock().unwrap().reviews.insert(
            token.clone(),
            json!({"authenticated": true, "user": {"username": SA_USER}}),
        );
        state.lock().unwrap().pods.insert(
            "default/mypod".into(),
            json!({"metadata": {"name": "mypod", "namespace": "default"},
                   "spec": {"serviceAccountName": "mysa"}}),
        );
        assert_eq!(
            validator.validate("mypod", "default", &token).await,
            Ok("public".to_string())
        );
        assert_eq!(state.lock().unwrap().requests.len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn validate_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let validator = KubeValidator::new(config(
            "http://127.0.0.1:1".into(),
            None,
            PathBuf::from("/nonexistent"),
        ))
        .unwrap();
        let fut = validator.validate("a", "b", "c");
        assert_send(&fut);
    }

    #[test]
    fn api_server_url_parsing() {
        let e = parse_api_server("https://10.96.0.1:443").unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "10.96.0.1".into(),
                authority: "10.96.0.1:443".into(),
                connect_addr: "10.96.0.1:443".into(),
                base_path: String::new(),
                tls: true,
            }
        );
        let e = parse_api_server("https://[fd00::1]:6443").unwrap();
        assert_eq!(e.host, "fd00::1");
        assert_eq!(e.connect_addr, "[fd00::1]:6443");
        let e = parse_api_server("http://localhost/prefix/").unwrap();
        assert_eq!(e.connect_addr, "localhost:80");
        assert_eq!(e.base_path, "/prefix");
        assert!(!e.tls);
        assert_eq!(
            parse_api_server("HTTPS://kube.example")
                .unwrap()
                .connect_addr,
            "kube.example:443"
        );
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https://:443",
            "https://host:0",
            "https://host:x",
            "https://host:+1",
            "https://user@host",
            "https://host/?q",
            "https://host#f",
            "https://ho st",
            "https://fd00::1:6443",
            "https://[fd00::1",
            "https://[nope]:1",
        ] {
            assert!(
                matches!(parse_api_server(bad), Err(KubeError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn configuration_errors() {
        let dir = PathBuf::from("unused-token-file");
        assert!(matches!(
            KubeValidator::new(config("https://localhost".into(), None, dir.clone())),
            Err(KubeError::MissingCa)
        ));
        assert!(matches!(
            KubeValidator::new(config(
                "https://localhost".into(),
                Some("not pem".into()),
                dir.clone()
            )),
            Err(KubeError::InvalidCa(_))
        ));
        assert!(matches!(
            KubeValidator::new(config(
                "https://localhost".into(),
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()),
                dir.clone()
            )),
            Err(KubeError::InvalidCa(_))
        ));
        let mut c = config("http://localhost".into(), None, dir);
        c.sentry_id = String::new();
        assert!(matches!(
            KubeValidator::new(c),
            Err(KubeError::InvalidConfig(_))
        ));
    }

    #[test]
    fn in_cluster_config() {
        let dir = temp_dir();
        let ca = pki().ca_pem;
        std::fs::write(dir.join("ca.crt"), &ca).unwrap();
        let c = KubeConfig::in_cluster_from(
            Some("fd00::1".into()),
            Some("443".into()),
            &dir,
            SENTRY_NS.into(),
            SENTRY_TD.into(),
            SENTRY_ID.into(),
        )
        .unwrap();
        assert_eq!(c.api_server, "https://[fd00::1]:443");
        assert_eq!(c.ca_pem.as_deref(), Some(ca.as_str()));
        assert_eq!(c.token_file, dir.join("token"));
        assert!(KubeValidator::new(c).is_ok());
        assert!(matches!(
            KubeConfig::in_cluster_from(
                None,
                Some("443".into()),
                &dir,
                String::new(),
                String::new(),
                String::new()
            ),
            Err(KubeError::MissingEnv("KUBERNETES_SERVICE_HOST"))
        ));
        std::fs::remove_file(dir.join("ca.crt")).unwrap();
        assert!(matches!(
            KubeConfig::in_cluster_from(
                Some("10.0.0.1".into()),
                Some("443".into()),
                &dir,
                String::new(),
                String::new(),
                String::new()
            ),
            Err(KubeError::ReadCa { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn path_segments_and_claims() {
        assert_eq!(path_segment("x", "my-pod.1").unwrap(), "my-pod.1");
        assert_eq!(path_segment("x", "a:b").unwrap(), "a%3Ab");
        for bad in ["", ".", "..", "a/b", "a?b", "a#b", "a%2F", "a b", "a\nb"] {
            assert!(path_segment("x", bad).is_err(), "{bad:?}");
        }
        assert_eq!(pod_name_claim("abc"), Err("token is not a JWT".into()));
        assert_eq!(pod_name_claim("a.b.c.d"), Err("token is not a JWT".into()));
        assert_eq!(
            pod_name_claim("a.!!!.c"),
            Err("token payload is not valid base64url".into())
        );
        assert_eq!(
            pod_name_claim(&format!("a.{}.c", Base64UrlUnpadded::encode_string(b"[1]"))),
            Err("token has no pod name claim".into())
        );
        // String-form pod claim is not the object form.
        let t = jwt(&json!({"kubernetes.io": {"pod": "mypod"}}));
        assert_eq!(
            pod_name_claim(&t),
            Err("token has no pod name claim".into())
        );
        assert_eq!(
            pod_name_claim(&jwt(&claims("default", Some("mypod"), "mysa"))),
            Ok("mypod".into())
        );
    }
}
