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
//!    Sentry's own service-account token as bearer (kube re-reads its file at
//!    least once a minute, since projected tokens rotate). The review must say
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
//!    `spec.accessControl.trustDomain` of that dapr `Configuration`
//!    (`dapr.io/v1alpha1`, `configurations`) in the pod's namespace, falling
//!    back to `public` when the annotation is absent, the Configuration does
//!    not exist (404) or the field is empty. Any other failure fetching it
//!    refuses the request;
//! 9. returns that trust domain.
//!
//! The rules (steps 1-3 and 5-8) are pure functions over the typed objects in
//! `rules.rs`; this module makes the three API calls with `kube` (typed
//! `TokenReview` and `Pod` from `k8s-openapi`, the Configuration as a
//! `DynamicObject`) on the client [`crate::ca::secret_store::client`] builds.
//!
//! Transport: one time limit bounds the whole validation (10 s by default);
//! a refusal for it names the call that was cut. kube reuses its connections,
//! retries 429, 503 and 504 answers with backoff (within that limit) and reads
//! Sentry's token from its file when the validator is built, then again once
//! it is 50 s old (a file that has become unreadable keeps the last token).
//! `https://` API servers are verified against the configured CA bundle
//! (required) with the usual host-name check.
//! `http://` API servers (e.g. a local `kubectl proxy`) are spoken to in plain
//! text; the CA bundle is then ignored. Use that only on loopback.
//!
//! Refusal reasons are meant to be returned to the client (as gRPC
//! `PermissionDenied`): they are precise and never contain the presented token
//! (any occurrence is redacted as a last line of defence) nor Sentry's own.

mod rules;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

use rules::{path_segment, TrustDomainFrom, PUBLIC_TRUST_DOMAIN};

/// Default time limit for one validation (all its calls to the API server).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// First TokenReview audience, the one Dapr sidecars request their token for.
const SENTRY_AUDIENCE: &str = "dapr.io/sentry";
const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The TokenReview call, as refusals name it.
const REVIEW_CALL: &str = "POST /apis/authentication.k8s.io/v1/tokenreviews";
/// The reason kube gives a non-JSON error answer (its message is then the raw
/// body, which refusals leave out).
const KUBE_UNPARSED_ERROR: &str = "Failed to parse error data";

/// How Sentry reaches the Kubernetes API.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// Base URL of the API server: `https://host[:port][/prefix]`, or
    /// `http://...` for a plain-text local `kubectl proxy`.
    pub api_server: String,
    /// PEM bundle of the roots that verify the API server's certificate.
    /// Required for `https://`; ignored for `http://`.
    pub ca_pem: Option<String>,
    /// Sentry's own service-account token file: read when the validator is
    /// built, then re-read by kube at least once a minute (projected tokens
    /// rotate).
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
    /// file is read now; the token file when the validator is built.
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
    /// The API server URL has an unsupported scheme.
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
    /// kube could not build its client: a malformed URL or CA bundle, an
    /// unreadable token file.
    #[error("{0}")]
    Client(String),
}

/// Validates Kubernetes service-account tokens for Sentry (see the module docs).
#[derive(Clone)]
pub struct KubeValidator {
    client: kube::Client,
    api_server: String,
    /// The dapr `Configuration` resource.
    configurations: ApiResource,
    sentry_namespace: String,
    sentry_trust_domain: String,
    sentry_id: String,
    timeout: Duration,
}

impl std::fmt::Debug for KubeValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeValidator")
            .field("api_server", &self.api_server)
            .field("sentry_namespace", &self.sentry_namespace)
            .field("sentry_trust_domain", &self.sentry_trust_domain)
            .field("sentry_id", &self.sentry_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The API call a validation is in, to name it if the time limit cuts it.
#[derive(Default)]
struct Step {
    /// What failed (`token review failed`, `failed to get pod ns/name`, ...).
    context: String,
    /// `METHOD /path`.
    call: String,
}

impl KubeValidator {
    /// Builds a validator and its kube client (the token file is read now, then
    /// by kube at least once a minute). Must be called within a Tokio runtime
    /// (the client spawns its worker there); makes no API call.
    pub fn new(config: KubeConfig) -> Result<Self, KubeError> {
        let lower = config.api_server.to_ascii_lowercase();
        let tls = if lower.starts_with("https://") {
            true
        } else if lower.starts_with("http://") {
            false
        } else {
            return Err(KubeError::InvalidUrl {
                url: config.api_server,
                reason: "scheme must be https:// or http://".into(),
            });
        };
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
        let ca_pem = if tls {
            Some(config.ca_pem.as_deref().ok_or(KubeError::MissingCa)?)
        } else {
            None
        };
        let client =
            crate::ca::secret_store::client(&config.api_server, ca_pem, &config.token_file)
                .map_err(KubeError::Client)?;
        Ok(Self {
            client,
            api_server: config.api_server,
            configurations: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration"),
                "configurations",
            ),
            sentry_namespace: config.sentry_namespace,
            sentry_trust_domain: config.sentry_trust_domain,
            sentry_id: config.sentry_id,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Replaces the time limit of one validation ([`DEFAULT_TIMEOUT`], 10 s).
    /// Meant for tests; a zero duration is ignored.
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
        let mut step = Step::default();
        let result =
            match tokio::time::timeout(self.timeout, self.check(id, namespace, token, &mut step))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "{}: {} timed out after {} ms",
                    step.context,
                    step.call,
                    self.timeout.as_millis()
                )),
            };
        match result {
            Ok(td) => {
                tracing::debug!(id, namespace, trust_domain = ?td, "kubernetes token validated");
                Ok(td)
            }
            Err(reason) => {
                let reason = rules::redact(reason, token);
                // `?`: the reason quotes the token's claims and the API server's answer.
                tracing::debug!(id, namespace, ?reason, "kubernetes token refused");
                Err(reason)
            }
        }
    }

    async fn check(
        &self,
        id: &str,
        namespace: &str,
        token: &str,
        step: &mut Step,
    ) -> Result<String, String> {
        rules::check_token_size(token)?;

        // 1, 2. TokenReview.
        *step = Step {
            context: "token review failed".into(),
            call: REVIEW_CALL.into(),
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![SENTRY_AUDIENCE.into(), self.sentry_id.clone()]),
            },
            ..TokenReview::default()
        };
        let review = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| step.refusal(&e))?;
        let sa = rules::check_review(review.status.as_ref(), &[SENTRY_AUDIENCE, &self.sentry_id])?;

        // 3. Pod name claim.
        let pod_name = rules::pod_name_claim(token)?;

        // 4. Pod.
        let ns = path_segment("service account namespace", &sa.namespace)?;
        let name = path_segment("pod name", &pod_name)?;
        *step = Step {
            context: format!("failed to get pod {}/{pod_name}", sa.namespace),
            call: format!("GET /api/v1/namespaces/{ns}/pods/{name}"),
        };
        // `get`, not `get_opt`: a missing pod refuses like any other error, with
        // the API server's message.
        let pod = Api::<Pod>::namespaced(self.client.clone(), &ns)
            .get(&name)
            .await
            .map_err(|e| step.refusal(&e))?;

        // 5-7. Namespace, service account, app ID.
        let expected = rules::expected(&pod, &pod_name, &sa, namespace, &self.sentry_namespace)?;
        rules::check_app_id(&expected, id)?;

        // 8, 9. Trust domain.
        let config_name = match expected.trust_domain {
            TrustDomainFrom::Sentry => return Ok(self.sentry_trust_domain.clone()),
            TrustDomainFrom::Public => return Ok(PUBLIC_TRUST_DOMAIN.into()),
            TrustDomainFrom::Configuration(name) => name,
        };
        let ns = path_segment("namespace", &sa.namespace)?;
        let name = path_segment("configuration name", &config_name)?;
        *step = Step {
            context: format!("failed to get configuration {}/{config_name}", sa.namespace),
            call: format!("GET /apis/dapr.io/v1alpha1/namespaces/{ns}/configurations/{name}"),
        };
        // Not `get_opt`: kube's "not found" needs the reason `NotFound`, and the
        // API server answers a plain-text 404 when the dapr.io group is not
        // served (client-go, and so Dapr, count any 404 as not found).
        let config =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &self.configurations)
                .get(&name)
                .await;
        let config = match config {
            Ok(config) => Some(config),
            Err(kube::Error::Api(s)) if s.code == 404 || s.is_not_found() => None,
            Err(e) => return Err(step.refusal(&e)),
        };
        rules::trust_domain(config.as_ref(), &sa.namespace, &config_name)
    }
}

impl Step {
    /// The refusal for kube's error `e` in this step: an API error names the
    /// status, the call and the API server's message; anything else the call
    /// and kube's error chain.
    fn refusal(&self, e: &kube::Error) -> String {
        let Step { context, call } = self;
        if let kube::Error::Api(s) = e {
            let status = http::StatusCode::from_u16(s.code)
                .map_or_else(|_| s.code.to_string(), |c| c.to_string());
            let mut out = format!("{context}: kubernetes API returned {status} for {call}");
            if !s.message.is_empty() && s.reason != KUBE_UNPARSED_ERROR {
                out.push_str(": ");
                out.push_str(&truncate(&s.message));
            }
            return out;
        }
        let mut chain: Vec<String> = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(e);
        while let Some(err) = source {
            let text = err.to_string();
            if !chain.last().is_some_and(|last| last.contains(&text)) {
                chain.push(text);
            }
            source = err.source();
        }
        format!("{context}: {call}: {}", truncate(&chain.join(": ")))
    }
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

/// The validator against a fake API server, only for what a real one cannot be
/// made to do: never answer, answer garbage or 5xx, present a certificate from
/// another CA; and kube's re-reading of Sentry's token file. The rules are
/// tested in [`rules`]; the calls against a real API server elsewhere.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::rules::tests::{claims, jwt};
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::net::TcpListener;

    const SENTRY_NS: &str = "dapr-system";
    const SENTRY_TD: &str = "cluster.local";
    const SENTRY_ID: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";
    const SENTRY_TOKEN: &str = "sentry-token-1";
    const CONFIG_CALL: &str =
        "GET /apis/dapr.io/v1alpha1/namespaces/default/configurations/myconfig";

    /// A CA's PEM and a server certificate for `localhost` it issued.
    fn pki() -> (String, Arc<rustls::ServerConfig>) {
        let ca = rcgen::CertifiedIssuer::self_signed(
            {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, format!("fake kube CA {n}"));
                p
            },
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        (ca.pem(), Arc::new(server))
    }

    /// What the fake answers for the Configuration: status, content type, body.
    type Answer = (u16, &'static str, String);

    #[derive(Default)]
    struct Seen {
        /// `METHOD /path` and the bearer token of every request.
        requests: Vec<(String, String)>,
    }

    /// A fake API server for one workload: any token is authenticated as
    /// `default/mysa`; the pod `default/mypod` has app ID `myapp` and config
    /// `myconfig`, which is answered with `config`.
    struct Fake {
        url: String,
        seen: Arc<Mutex<Seen>>,
        config: Arc<Mutex<Answer>>,
    }

    impl Fake {
        async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let seen = Arc::new(Mutex::new(Seen::default()));
            let config = Arc::new(Mutex::new((200, "application/json", String::new())));
            let url = match tls {
                Some(_) => format!("https://localhost:{port}"),
                None => format!("http://127.0.0.1:{port}"),
            };
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            let (s, c) = (seen.clone(), config.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (seen, config, acceptor) = (s.clone(), c.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let answer = Self::answer(&req, &seen, &config);
                            async move {
                                let (status, content_type, body) = answer;
                                Response::builder()
                                    .status(status)
                                    .header("content-type", content_type)
                                    .body(Full::new(Bytes::from(body)))
                            }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        let _ = match acceptor {
                            Some(acceptor) => match acceptor.accept(tcp).await {
                                Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
                                Err(_) => return,
                            },
                            None => http.serve_connection(TokioIo::new(tcp), service).await,
                        };
                    });
                }
            });
            Self { url, seen, config }
        }

        fn answer(req: &Request<Incoming>, seen: &Mutex<Seen>, config: &Mutex<Answer>) -> Answer {
            let call = format!("{} {}", req.method(), req.uri().path());
            let bearer = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap().requests.push((call.clone(), bearer));
            let json = |status, v: serde_json::Value| (status, "application/json", v.to_string());
            match call.as_str() {
                REVIEW_CALL => json(
                    201,
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                           "metadata": {}, "spec": {},
                           "status": {"authenticated": true, "audiences": ["dapr.io/sentry"],
                                      "user": {"username": "system:serviceaccount:default:mysa"}}}),
                ),
                "GET /api/v1/namespaces/default/pods/mypod" => json(
                    200,
                    json!({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "mypod", "namespace": "default",
                                        "annotations": {"dapr.io/app-id": "myapp",
                                                        "dapr.io/config": "myconfig"}},
                           "spec": {"serviceAccountName": "mysa", "containers": []}}),
                ),
                CONFIG_CALL => config.lock().unwrap().clone(),
                _ => json(
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            }
        }

        fn set_config(&self, status: u16, content_type: &'static str, body: &str) {
            *self.config.lock().unwrap() = (status, content_type, body.to_string());
        }

        fn requests(&self) -> Vec<(String, String)> {
            self.seen.lock().unwrap().requests.clone()
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

    /// A directory with Sentry's token file.
    fn token_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, SENTRY_TOKEN).unwrap();
        (dir, file)
    }

    fn workload_token() -> String {
        jwt(&claims("default", Some("mypod"), "mysa"))
    }

    #[tokio::test]
    async fn configuration_answered_with_garbage_or_5xx_refuses() {
        // Plain http:// (kubectl proxy) is spoken too.
        let fake = Fake::start(None).await;
        let (_dir, token_file) = token_dir();
        let validator = KubeValidator::new(config(fake.url.clone(), None, token_file)).unwrap();
        let token = workload_token();
        let validate = || validator.validate("myapp", "default", &token);
        let refusal = |rest: &str| {
            Err(format!(
                "failed to get configuration default/myconfig: {rest}"
            ))
        };

        // The control: a Configuration with a trust domain.
        fake.set_config(
            200,
            "application/json",
            &json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
                    "metadata": {"name": "myconfig", "namespace": "default"},
                    "spec": {"accessControl": {"trustDomain": "example.org"}}})
            .to_string(),
        );
        assert_eq!(validate().await, Ok("example.org".to_string()));
        let calls: Vec<String> = fake.requests().into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            calls,
            [
                REVIEW_CALL,
                "GET /api/v1/namespaces/default/pods/mypod",
                CONFIG_CALL
            ]
        );

        fake.set_config(
            500,
            "application/json",
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "InternalError", "code": 500, "message": "etcd unavailable"})
            .to_string(),
        );
        assert_eq!(
            validate().await,
            refusal(&format!("kubernetes API returned 500 Internal Server Error for {CONFIG_CALL}: etcd unavailable"))
        );
        // A proxy's page instead of a Status: the status, not the page.
        fake.set_config(502, "text/html", "<html>bad gateway</html>");
        assert_eq!(
            validate().await,
            refusal(&format!(
                "kubernetes API returned 502 Bad Gateway for {CONFIG_CALL}"
            ))
        );
        // 503 (like 429 and 504) is retried by kube with backoff, until the time limit.
        fake.set_config(503, "text/html", "<html>unavailable</html>");
        let before = fake.requests().len();
        let quick = validator.clone().with_timeout(Duration::from_secs(1));
        assert_eq!(
            quick.validate("myapp", "default", &token).await,
            refusal(&format!("{CONFIG_CALL} timed out after 1000 ms"))
        );
        assert!(fake.requests().len() > before + 3, "{:?}", fake.requests());
        // 200 with something that is not an object.
        fake.set_config(200, "application/json", "{\"spec\": ");
        let err = validate().await.unwrap_err();
        assert!(
            err.starts_with(&format!(
                "failed to get configuration default/myconfig: {CONFIG_CALL}: Error deserializing response"
            )),
            "{err}"
        );
        // 404 without a Status (no such resource type: the CRD is not installed) is public.
        fake.set_config(404, "text/plain", "404 page not found");
        assert_eq!(validate().await, Ok("public".to_string()));
    }

    #[tokio::test]
    async fn server_certificate_from_another_ca() {
        let (_, server) = pki();
        let (other_ca, _) = pki();
        let fake = Fake::start(Some(server)).await;
        let (_dir, token_file) = token_dir();
        let validator =
            KubeValidator::new(config(fake.url.clone(), Some(other_ca), token_file)).unwrap();
        let err = validator
            .validate("myapp", "default", &workload_token())
            .await
            .unwrap_err();
        assert!(
            err.starts_with(&format!("token review failed: {REVIEW_CALL}: ")),
            "{err}"
        );
        assert!(
            err.contains("invalid peer certificate: UnknownIssuer"),
            "{err}"
        );
        assert!(fake.requests().is_empty());
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
        let (ca, _) = pki();
        let (_dir, token_file) = token_dir();
        let validator = KubeValidator::new(config(
            format!("https://localhost:{port}"),
            Some(ca),
            token_file,
        ))
        .unwrap()
        .with_timeout(Duration::from_secs(1));
        let start = Instant::now();
        let result = validator
            .validate("myapp", "default", &workload_token())
            .await;
        let elapsed = start.elapsed();
        assert_eq!(
            result,
            Err(format!(
                "token review failed: {REVIEW_CALL} timed out after 1000 ms"
            ))
        );
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        holder.abort();
    }

    /// kube reads the token file when the client is built and again once the
    /// token is 50 s old (a minute, less ten seconds of margin); a file that
    /// cannot be read then keeps the last token.
    #[tokio::test]
    async fn sentry_token_file_is_reread() {
        let (ca, server) = pki();
        let fake = Fake::start(Some(server)).await;
        let (_dir, token_file) = token_dir();
        let validator =
            KubeValidator::new(config(fake.url.clone(), Some(ca), token_file.clone())).unwrap();
        let token = workload_token();
        let validate = || validator.validate("myapp", "default", &token);
        fake.set_config(404, "text/plain", "");
        let bearers = || -> Vec<String> { fake.requests().into_iter().map(|(_, b)| b).collect() };

        assert_eq!(validate().await, Ok("public".to_string()));
        std::fs::write(&token_file, "sentry-token-2").unwrap();
        assert_eq!(validate().await, Ok("public".to_string()));
        assert_eq!(bearers(), vec![SENTRY_TOKEN; 6]);

        tokio::time::sleep(Duration::from_secs(51)).await;
        assert_eq!(validate().await, Ok("public".to_string()));
        assert_eq!(bearers()[6..], ["sentry-token-2"; 3]);
    }

    #[tokio::test]
    async fn validate_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (_dir, token_file) = token_dir();
        let validator =
            KubeValidator::new(config("http://127.0.0.1:1".into(), None, token_file)).unwrap();
        let fut = validator.validate("a", "b", "c");
        assert_send(&fut);
    }

    #[tokio::test]
    async fn configuration_errors() {
        let (_dir, token_file) = token_dir();
        let new = |url: &str, ca: Option<&str>| {
            KubeValidator::new(config(
                url.into(),
                ca.map(str::to_string),
                token_file.clone(),
            ))
        };
        assert!(matches!(
            new("ftp://localhost", None),
            Err(KubeError::InvalidUrl { .. })
        ));
        assert!(matches!(
            new("https://localhost", None),
            Err(KubeError::MissingCa)
        ));
        for bad_ca in [
            "not pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(
                    new("https://localhost", Some(bad_ca)),
                    Err(KubeError::Client(_))
                ),
                "{bad_ca}"
            );
        }
        assert!(matches!(
            new("https://ho st", Some(&pki().0)),
            Err(KubeError::Client(_))
        ));
        // The CA bundle is not used for http://.
        assert!(new("http://localhost", Some("not pem")).is_ok());
        // Sentry's token file must be readable when the client is built.
        let missing = KubeValidator::new(config(
            "http://localhost".into(),
            None,
            PathBuf::from("/nonexistent/token"),
        ));
        assert!(matches!(missing, Err(KubeError::Client(_))), "{missing:?}");
        let mut c = config("http://localhost".into(), None, token_file.clone());
        c.sentry_id = String::new();
        assert!(matches!(
            KubeValidator::new(c),
            Err(KubeError::InvalidConfig(_))
        ));
    }

    #[tokio::test]
    async fn in_cluster_config() {
        let (dir, _) = token_dir();
        let dir = dir.path();
        let (ca, _) = pki();
        std::fs::write(dir.join("ca.crt"), &ca).unwrap();
        let c = KubeConfig::in_cluster_from(
            Some("fd00::1".into()),
            Some("443".into()),
            dir,
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
                dir,
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
                dir,
                String::new(),
                String::new(),
                String::new()
            ),
            Err(KubeError::ReadCa { .. })
        ));
    }
}
