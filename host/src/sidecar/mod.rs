//! The sidecar: the workload identity it holds (from Sentry, rotated by the core machine),
//! mutual TLS between sidecars ([`mtls`]), and service invocation through the app's loopback
//! API ([`invoke`]).

pub mod acl;
pub mod grpc;
pub mod identity;
pub mod invoke;
pub mod mtls;
pub mod workload_api;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use identity::{AnchorSource, IdentityConfig, IdentityState};
use invoke::InvokeConfig;

use crate::pb::sign_certificate_request::TokenValidator;

/// Where daprd finds its projected Sentry token on Kubernetes (audience: Sentry's SPIFFE ID).
pub const KUBERNETES_TOKEN: &str = "/var/run/secrets/dapr.io/sentrytoken/token";
/// The service account's own token, daprd's fallback.
pub const LEGACY_KUBERNETES_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The sidecar's settings as its command line gives them (`sigil sidecar --help` shows these
/// and the listeners'); [`Flags::resolve`] adds Dapr's environment variables and checks them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Flags {
    /// The app's ID.
    #[arg(long)]
    pub app_id: String,
    /// The app's port on 127.0.0.1 (used by service invocation).
    #[arg(long)]
    pub app_port: Option<u16>,
    /// What the app speaks on --app-port: http, or grpc (gRPC invocation reaches only a grpc
    /// app; its access-control decisions use gRPC's rules).
    #[arg(long, default_value = "http")]
    pub app_protocol: String,
    /// Sentry's address, host:port; several comma-separated (or a name resolving to several)
    /// for Sentry's replicas, tried in turn.
    #[arg(long)]
    pub sentry_address: String,
    /// standalone, or kubernetes: the token is the projected service-account token
    /// (DAPR_SENTRY_TOKEN_FILE, default /var/run/secrets/dapr.io/sentrytoken/token) and is sent
    /// for Sentry's kubernetes validator, as daprd does on Kubernetes.
    #[arg(long, default_value = "standalone", value_parser = ["standalone", "kubernetes"])]
    pub mode: String,
    /// Sentry's trust domain.
    #[arg(long, default_value = "localhost")]
    pub control_plane_trust_domain: String,
    /// Sentry's namespace.
    #[arg(long, default_value = "default")]
    pub control_plane_namespace: String,
    /// PEM trust anchors file, watched and applied at run time (else DAPR_TRUST_ANCHORS).
    #[arg(long)]
    pub trust_anchors_file: Option<PathBuf>,
    /// Where to write key.pem (0600), cert.pem and ca.pem for the app, rewritten at rotation.
    #[arg(long)]
    pub identity_dir: Option<PathBuf>,
    /// Name resolution file: app ID -> that app's sidecar internal address (YAML or JSON map).
    #[arg(long)]
    pub resolution_file: Option<PathBuf>,
    /// Dapr Configuration file (spec.mtls.enabled; mutual TLS is on without one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Accept only these caller SPIFFE IDs (repeat; default: any that chains to the anchors).
    #[arg(long = "allow-spiffe-id")]
    pub allow_spiffe_id: Vec<String>,
    /// Accept only callers in these trust domains (repeat; default: any that chains to the
    /// anchors, as Dapr).
    #[arg(long = "allow-trust-domain")]
    pub allow_trust_domain: Vec<String>,
    /// CORS: comma-separated origins, or * for all (default: none, no CORS headers).
    #[arg(long)]
    pub allowed_origins: Option<String>,
    /// Serve the SPIFFE Workload API on this Unix socket (mode 0600): the X.509-SVID, its key
    /// and the bundle, streamed at every rotation; the JWT-SVIDs Sentry issued.
    #[arg(long)]
    pub workload_api_socket: Option<PathBuf>,
    /// Give the Workload API socket to this group (a name or a numeric id), mode 0660: for
    /// workloads that run as other users of the group.
    #[arg(long, requires = "workload_api_socket")]
    pub workload_api_socket_group: Option<String>,
    /// JWT-SVID audiences to ask Sentry for with every certificate (comma-separated; Sentry
    /// needs --jwt-enabled): served on the Workload API, written to jwt_svid.token.
    #[arg(long, value_delimiter = ',')]
    pub sentry_request_jwt_audiences: Vec<String>,
    /// Sentry's JWT key set (its jwks.json; on Kubernetes the dapr-trust-bundle ConfigMap's
    /// jwks.json, mounted): the Workload API's JWT bundles and token validation.
    #[arg(long)]
    pub jwt_bundle_file: Option<PathBuf>,
}

/// What [`Flags::resolve`] makes of the flags and the environment.
#[derive(Debug)]
pub struct Settings {
    /// The identity driver's settings.
    pub identity: IdentityConfig,
    /// Service invocation's settings.
    pub invoke: InvokeConfig,
}

impl Flags {
    /// Adds Dapr's environment (`DAPR_TRUST_ANCHORS` when there is no anchors file,
    /// `DAPR_SENTRY_TOKEN_FILE`, `NAMESPACE` (default `default`), `SENTRY_LOCAL_IDENTITY` in
    /// place of the app ID) read through `env`, reads the Configuration file, and checks what
    /// the sidecar could not run with.
    ///
    /// # Errors
    ///
    /// What is missing or invalid, in words for the operator: no trust anchors, an empty
    /// token-file variable, an app ID or namespace that is not one SPIFFE path segment, an
    /// invalid caller policy, an unreadable Configuration.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let anchors = match (self.trust_anchors_file, env("DAPR_TRUST_ANCHORS")) {
            (Some(f), _) => AnchorSource::File(f),
            (None, Some(pem)) if !pem.trim().is_empty() => AnchorSource::Pem(pem),
            _ => {
                return Err(
                    "trust anchors are required: --trust-anchors-file or DAPR_TRUST_ANCHORS"
                        .to_owned(),
                )
            }
        };
        let token_file = match env("DAPR_SENTRY_TOKEN_FILE") {
            Some(f) if f.is_empty() => {
                return Err("DAPR_SENTRY_TOKEN_FILE is set but empty".to_owned())
            }
            f => f.map(PathBuf::from),
        };
        let kubernetes = self.mode == "kubernetes";
        // As daprd: on Kubernetes the projected token for Sentry's audience (the legacy
        // service-account token if that is all the pod has) and the kubernetes validator;
        // elsewhere a token file selects the jwks validator.
        let (token_file, token_validator) = if kubernetes {
            let file = token_file.unwrap_or_else(|| {
                let projected = PathBuf::from(KUBERNETES_TOKEN);
                if !projected.exists() && Path::new(LEGACY_KUBERNETES_TOKEN).exists() {
                    tracing::warn!(
                        "no projected Sentry token at {KUBERNETES_TOKEN}; using the legacy \
                         service-account token {LEGACY_KUBERNETES_TOKEN}"
                    );
                    PathBuf::from(LEGACY_KUBERNETES_TOKEN)
                } else {
                    projected
                }
            });
            (Some(file), TokenValidator::Kubernetes)
        } else if token_file.is_some() {
            (token_file, TokenValidator::Jwks)
        } else {
            (None, TokenValidator::Unknown)
        };
        let callers = mtls::CallerPolicy::new(self.allow_spiffe_id, self.allow_trust_domain)?;
        let namespace = env("NAMESPACE").unwrap_or_else(|| "default".to_owned());
        let app_id = env("SENTRY_LOCAL_IDENTITY").unwrap_or(self.app_id);
        crate::dapr::workload_id("public", &namespace, &app_id).map_err(|e| {
            format!("app ID and namespace must be single SPIFFE path segments: {e}")
        })?;
        let mtls = match &self.config {
            Some(p) => {
                crate::dapr::config::SentryConfig::load(p)
                    .map_err(|e| e.to_string())?
                    .mtls_enabled
            }
            None => true,
        };
        let acl = Arc::new(acl::Acl::load(self.config.clone())?);
        let identity = IdentityConfig {
            app_id: app_id.clone(),
            namespace: namespace.clone(),
            sentry_address: self.sentry_address,
            sentry_id: crate::dapr::sentry_id(
                &self.control_plane_trust_domain,
                &self.control_plane_namespace,
            ),
            token_file,
            token_validator,
            anchors,
            output_dir: self.identity_dir,
            policy: sigil_core::rotation::Policy::default(),
            jwt_audiences: self
                .sentry_request_jwt_audiences
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
        };
        let invoke = InvokeConfig {
            app_id,
            namespace,
            app_port: self.app_port,
            app_protocol: self.app_protocol.parse()?,
            resolution: self.resolution_file,
            mtls,
            callers,
            acl,
            allowed_origins: self
                .allowed_origins
                .filter(|o| !o.is_empty())
                .map(|o| o.split(',').map(|s| s.trim().to_owned()).collect()),
        };
        Ok(Settings { identity, invoke })
    }
}

/// Serves the sidecar's metrics (Dapr's runtime names) on `listener` until `stopped`, with the
/// small ports' limits ([`crate::net::serve_http1`]: a few connections, a header deadline).
pub async fn serve_metrics(
    state: Arc<IdentityState>,
    acl: Arc<acl::Acl>,
    listener: TcpListener,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_text))
        .route("/", axum::routing::get(metrics_text))
        .with_state((state, acl));
    crate::net::serve_http1(listener, app, stopped).await;
}

async fn metrics_text(
    axum::extract::State((state, acl)): axum::extract::State<(Arc<IdentityState>, Arc<acl::Acl>)>,
) -> String {
    let mut text = state.metrics().render();
    text.push_str(&acl.render());
    text
}

/// Where a sidecar listens.
#[derive(Debug)]
pub struct Listeners {
    /// The app-facing API (bind it to loopback).
    pub http: TcpListener,
    /// The app-facing gRPC port, for gRPC invocation (bind it to loopback).
    pub grpc: Option<TcpListener>,
    /// The port other sidecars call.
    pub internal: TcpListener,
    /// Metrics.
    pub metrics: Option<TcpListener>,
    /// The SPIFFE Workload API's Unix socket ([`workload_api::bind`]).
    pub workload_api: Option<tokio::net::UnixListener>,
    /// `--jwt-bundle-file`: Sentry's JWT key set, for the Workload API's JWT bundle calls.
    pub jwt_bundle: Option<PathBuf>,
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
    let acl = invoke.acl.clone();
    let invoker = invoke::Invoker::new(invoke, state.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(invoke::serve_app(
        invoker.clone(),
        listeners.http,
        stopped(),
    ));
    if let Some(l) = listeners.grpc {
        tasks.spawn(grpc::serve_app(invoker.clone(), l, stopped()));
    }
    let peers = invoke::serve_peers(invoker, listeners.internal, stopped());
    tasks.spawn(async move {
        if let Err(e) = peers.await {
            tracing::error!(error = %e, "the internal mTLS port stopped");
        }
    });
    if let Some(l) = listeners.metrics {
        tasks.spawn(serve_metrics(state.clone(), acl, l, stopped()));
    }
    if let Some(l) = listeners.workload_api {
        let serving =
            workload_api::serve(state.clone(), l, listeners.jwt_bundle.clone(), stopped());
        tasks.spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "the Workload API socket stopped");
            }
        });
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn flags() -> Flags {
        Flags {
            app_id: "checkout".into(),
            sentry_address: "127.0.0.1:50001".into(),
            control_plane_trust_domain: "cluster.local".into(),
            control_plane_namespace: "dapr-system".into(),
            trust_anchors_file: Some("ca.crt".into()),
            mode: "standalone".into(),
            ..Flags::default()
        }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn flags_and_daprs_environment() {
        let s = flags().resolve(env(&[])).unwrap();
        assert_eq!(s.identity.namespace, "default");
        assert_eq!(
            s.identity.sentry_id,
            "spiffe://cluster.local/ns/dapr-system/dapr-sentry"
        );
        assert!(s.invoke.mtls, "mutual TLS is on without a Configuration");
        assert!(s.identity.token_file.is_none());

        let vars = [
            ("NAMESPACE", "shop"),
            ("SENTRY_LOCAL_IDENTITY", "cart"),
            ("DAPR_SENTRY_TOKEN_FILE", "/var/run/token"),
        ];
        let s = flags().resolve(env(&vars)).unwrap();
        assert_eq!(
            (s.identity.app_id.as_str(), s.invoke.app_id.as_str()),
            ("cart", "cart")
        );
        assert_eq!(s.invoke.namespace, "shop");
        assert_eq!(s.identity.token_file, Some(PathBuf::from("/var/run/token")));
        assert_eq!(s.identity.token_validator, TokenValidator::Jwks);

        let f = Flags {
            trust_anchors_file: None,
            ..flags()
        };
        let s = f
            .resolve(env(&[("DAPR_TRUST_ANCHORS", "-----BEGIN")]))
            .unwrap();
        assert!(matches!(s.identity.anchors, AnchorSource::Pem(_)));
    }

    #[test]
    fn on_kubernetes_the_token_goes_to_the_kubernetes_validator() {
        let k = Flags {
            mode: "kubernetes".into(),
            ..flags()
        };
        let s = k.clone().resolve(env(&[])).unwrap();
        assert_eq!(s.identity.token_validator, TokenValidator::Kubernetes);
        assert!(
            s.identity.token_file.is_some(),
            "the projected token's path"
        );
        let s = k
            .resolve(env(&[("DAPR_SENTRY_TOKEN_FILE", "/run/token")]))
            .unwrap();
        assert_eq!(s.identity.token_file, Some(PathBuf::from("/run/token")));
        assert_eq!(s.identity.token_validator, TokenValidator::Kubernetes);
        let s = flags().resolve(env(&[])).unwrap();
        assert_eq!(s.identity.token_validator, TokenValidator::Unknown);
    }

    #[test]
    fn what_a_sidecar_cannot_run_with_is_refused() {
        let no_anchors = Flags {
            trust_anchors_file: None,
            ..flags()
        };
        let e = no_anchors.resolve(env(&[("DAPR_TRUST_ANCHORS", " \n")]));
        assert!(e.unwrap_err().contains("trust anchors are required"));
        let e = flags().resolve(env(&[("DAPR_SENTRY_TOKEN_FILE", "")]));
        assert!(e.unwrap_err().contains("DAPR_SENTRY_TOKEN_FILE"));
        let e = flags().resolve(env(&[("NAMESPACE", "a/b")]));
        assert!(e.unwrap_err().contains("single SPIFFE path segments"));
        let bad_caller = Flags {
            allow_trust_domain: vec!["Not A Domain".into()],
            ..flags()
        };
        assert!(bad_caller
            .resolve(env(&[]))
            .unwrap_err()
            .contains("--allow-trust-domain"));
        let missing_config = Flags {
            config: Some("/nonexistent/config.yaml".into()),
            ..flags()
        };
        assert!(missing_config.resolve(env(&[])).is_err());
    }
}
