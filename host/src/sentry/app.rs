//! Sentry as a process: options with Dapr's flag names and defaults, start-up (credentials,
//! configuration, validators, listeners), and the lines that tell a person (and a test) where
//! everything is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use tokio::net::TcpListener;

use super::kube::{KubeConfig, KubeValidator};
use super::validator::Validators;
use super::{jwt, CredentialStore, Listeners, Sentry, Settings};
use crate::ca::secret_store::{self, Published, SecretStore};
use crate::ca::store::{self, Origin, StorePaths};
use crate::dapr::config::SentryConfig;

/// Sentry's options (the CLI fills them; see `sigil sentry --help`).
#[derive(Clone, Debug)]
pub struct SentryOptions {
    /// Dapr Configuration file (`--config`); defaults apply without one.
    pub config: Option<PathBuf>,
    /// `--issuer-credentials`; `None`: a data directory Sigil creates.
    pub issuer_credentials: Option<PathBuf>,
    /// `--issuer-ca-filename`.
    pub ca_filename: String,
    /// `--issuer-certificate-filename`.
    pub cert_filename: String,
    /// `--issuer-key-filename`.
    pub key_filename: String,
    /// `--trust-domain`.
    pub trust_domain: String,
    /// Sentry's namespace (`NAMESPACE`).
    pub namespace: String,
    /// `--listen-address` (empty: all interfaces).
    pub listen_address: String,
    /// `--port`.
    pub port: u16,
    /// `--healthz-listen-address` and `--healthz-port` (0: a free port).
    pub healthz: Option<(String, u16)>,
    /// `--metrics-listen-address` and `--metrics-port`. The address defaults to loopback, not
    /// Dapr's all interfaces: metrics name workloads and their rates, so exposing them is the
    /// operator's choice.
    pub metrics: Option<(String, u16)>,
    /// `--max-connections`, `--max-connections-per-ip`, `--connection-idle-timeout` (and the
    /// fixed handshake and first-request deadlines): the gRPC port's connection table. The
    /// table is made smaller if the open-file limit would not hold it.
    pub limits: crate::net::admission::Limits,
    /// `--mode kubernetes`: the kubernetes validator on, and the default.
    pub kubernetes: Option<KubeOptions>,
    /// `--root-ttl`, `--issuer-ttl`: the lifetimes (and key type) of credentials Sentry
    /// generates, and of the pairs its automatic rotation makes.
    pub generation: crate::ca::Generation,
    /// Crash tests only (`SIGIL_CRASH_AT`): abort at this point of a rotation step.
    pub crash_at: Option<crate::ca::rotation::CrashPoint>,
}

/// How Sentry reaches the Kubernetes API in `--mode kubernetes`.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// `--kube-api-server` (default: in-cluster, from `KUBERNETES_SERVICE_HOST`).
    pub api_server: Option<String>,
    /// `--kube-ca-file`: PEM roots for the API server.
    pub ca_file: Option<PathBuf>,
    /// `--kube-token-file`: Sentry's own service-account token.
    pub token_file: Option<PathBuf>,
}

impl Default for SentryOptions {
    fn default() -> Self {
        Self {
            config: None,
            issuer_credentials: None,
            ca_filename: "ca.crt".into(),
            cert_filename: "issuer.crt".into(),
            key_filename: "issuer.key".into(),
            trust_domain: "localhost".into(),
            namespace: std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into()),
            listen_address: String::new(),
            port: 50001,
            healthz: Some((String::new(), 8080)),
            metrics: Some(("127.0.0.1".into(), 9090)),
            limits: super::default_limits(),
            kubernetes: None,
            generation: crate::ca::Generation::default(),
            crash_at: None,
        }
    }
}

/// The data directory used when `--issuer-credentials` is not given.
pub fn default_credentials_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("sigil/sentry/credentials")
}

/// A Sentry ready to [`super::run`].
#[derive(Debug)]
pub struct Started {
    /// The state.
    pub sentry: Arc<Sentry>,
    /// Its bound sockets.
    pub listeners: Listeners,
    /// The credential store (to watch).
    pub store: CredentialStore,
    /// Lines for the log: where things are.
    pub report: Vec<String>,
}

async fn bind(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

fn local(l: &TcpListener) -> String {
    l.local_addr()
        .map_or_else(|e| format!("? ({e})"), |a: SocketAddr| a.to_string())
}

fn kube_config(k: &KubeOptions, s: &Settings) -> anyhow::Result<KubeConfig> {
    let Some(api_server) = &k.api_server else {
        return KubeConfig::in_cluster(s.namespace.clone(), s.trust_domain.clone(), s.sentry_id())
            .context("kubernetes mode outside a cluster needs --kube-api-server");
    };
    let ca_pem = match &k.ca_file {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let token_file = k
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"));
    Ok(KubeConfig {
        api_server: api_server.clone(),
        ca_pem,
        token_file,
        sentry_namespace: s.namespace.clone(),
        sentry_trust_domain: s.trust_domain.clone(),
        sentry_id: s.sentry_id(),
    })
}

/// File descriptors kept for everything but gRPC connections: the listeners, the health and
/// metrics ports' connections ([`crate::net::HTTP_LIMITS`], two ports), the credential
/// watcher, the Kubernetes API client, logs.
const OTHER_FILES: u64 = 128;

/// Raises the open-file limit as far as allowed and lowers `limits.max_connections` to fit in
/// it (a table bigger than the descriptors would run out of sockets before it fills, and its
/// shedding would never start). Returns the limits and the open-file limit.
fn fit_to_open_files(
    limits: crate::net::admission::Limits,
) -> (crate::net::admission::Limits, u64) {
    let open_files = crate::net::raise_open_files_limit();
    let fits =
        usize::try_from(open_files.saturating_sub(OTHER_FILES).max(16)).unwrap_or(usize::MAX);
    let max = limits.max_connections.min(fits).max(1);
    let fitted = crate::net::admission::Limits {
        max_connections: max,
        per_address: limits.per_address.clamp(1, max),
        ..limits
    };
    (fitted, open_files)
}

/// Loads (or generates) the credentials, reads the configuration and binds the listeners.
///
/// # Errors
///
/// Anything that stops Sentry from starting, with the file and rule that failed.
pub async fn start(opts: &SentryOptions) -> anyhow::Result<Started> {
    let config = match &opts.config {
        Some(p) => SentryConfig::load(p)?,
        None => SentryConfig::default(),
    };
    let (limits, open_files) = fit_to_open_files(opts.limits);
    let settings = Settings {
        trust_domain: opts.trust_domain.clone(),
        namespace: opts.namespace.clone(),
        ttl: config.workload_cert_ttl,
        skew: config.allowed_clock_skew,
        limits,
        generation: opts.generation,
        crash_at: opts.crash_at,
    };
    sigil_core::spiffe::SpiffeId::parse(&settings.sentry_id())
        .map_err(|e| anyhow::anyhow!("trust domain {:?}: {e}", opts.trust_domain))?;
    let kube = match &opts.kubernetes {
        Some(k) => Some(kube_config(k, &settings)?),
        None => None,
    };
    // Kubernetes mode keeps the credentials in the Secret, as Dapr does, unless the operator
    // points Sentry at files (a mounted Secret, say) with --issuer-credentials.
    let policy = crate::ca::schedule::Policy {
        workload_ttl: settings.ttl,
        skew: settings.skew,
    };
    let rotatable = |life: std::time::Duration| {
        crate::ca::schedule::check(life, &policy)
            .map_err(|e| anyhow::anyhow!("automatic CA rotation: {e}"))
    };
    let generation_life = opts.generation.issuer.min(opts.generation.root);
    // A set Sentry rotates must live long enough to be rotated safely.
    let rotatable_set = |journal: &crate::ca::rotation::Journal| {
        if journal.automatic == crate::ca::rotation::Automatic::Yes {
            let pair = journal.active.pair;
            let life = pair
                .not_after
                .duration_since(pair.not_before)
                .unwrap_or_default();
            rotatable(life.min(generation_life))?;
        }
        anyhow::Ok(())
    };
    let (store, creds, origin, where_) = match (&kube, &opts.issuer_credentials) {
        (Some(k), None) => {
            let client = secret_store::client(&k.api_server, k.ca_pem.as_deref(), &k.token_file)
                .map_err(anyhow::Error::msg)?;
            let secrets = SecretStore::new(client, &settings.namespace);
            // What Sentry would generate (and then rotate) is checked before anything is
            // written: when the Secret holds no set, Sentry generates one at once.
            if secrets.journal().await?.is_none() {
                rotatable(generation_life)?;
            }
            let (creds, origin) = secrets
                .load_or_generate(
                    &settings.trust_domain,
                    &settings.sentry_id(),
                    settings.skew,
                    opts.generation,
                )
                .await?;
            match secrets.publish_anchors(creds.anchors_pem()).await? {
                Published::Corrected => tracing::warn!(
                    namespace = %settings.namespace,
                    "the trust-bundle ConfigMap held other anchors than the Secret; corrected \
                     (the Secret's set is kept, never regenerated)"
                ),
                Published::Created | Published::InStep => {}
            }
            if let Some(journal) = secrets.journal().await? {
                rotatable_set(&journal)?;
            }
            let where_ = format!(
                "Secret {ns}/{name} (ConfigMap {ns}/{name} publishes ca.crt)",
                ns = settings.namespace,
                name = secret_store::TRUST_BUNDLE
            );
            (
                CredentialStore::Secret(Box::new(secrets)),
                creds,
                origin,
                where_,
            )
        }
        (_, dir) => {
            let dir = dir.clone().unwrap_or_else(default_credentials_dir);
            let paths = StorePaths::new(
                &dir,
                &opts.ca_filename,
                &opts.cert_filename,
                &opts.key_filename,
            );
            // What Sentry would generate (and then rotate) is checked before anything is
            // written.
            if [&paths.ca, &paths.issuer_cert, &paths.issuer_key]
                .iter()
                .all(|p| std::fs::symlink_metadata(p).is_err())
            {
                rotatable(generation_life)?;
            }
            let (creds, origin) = {
                let generation = opts.generation;
                let (p, td, id, skew) = (
                    paths.clone(),
                    settings.trust_domain.clone(),
                    settings.sentry_id(),
                    settings.skew,
                );
                tokio::task::spawn_blocking(move || {
                    store::load_or_generate(
                        &p,
                        &td,
                        &id,
                        skew,
                        generation,
                        store::Rotation::Automatic,
                        SystemTime::now(),
                    )
                })
                .await??
            };
            rotatable_set(&crate::ca::rotation::read(&paths)?)?;
            let where_ = format!(
                "{}: ca {}, issuer {}, key {}",
                dir.display(),
                paths.ca.display(),
                paths.issuer_cert.display(),
                paths.issuer_key.display()
            );
            (CredentialStore::Files(paths), creds, origin, where_)
        }
    };
    let jwks = match &config.jwks_source {
        Some(source) => {
            Some(jwt::Jwks::load(source).with_context(|| "loading the jwks validator's key set")?)
        }
        None => None,
    };
    let validators = match (kube, jwks) {
        (Some(kube), jwks) => {
            let validator = KubeValidator::new(kube).context("kubernetes validator")?;
            Validators::kubernetes(validator, jwks.map(|j| (j, settings.sentry_id())))
        }
        (None, Some(jwks)) => Validators::with_jwks(jwks, settings.sentry_id()),
        (None, None) => Validators::insecure(),
    };
    let validator_names = match (&opts.kubernetes, &config.jwks_source) {
        (Some(_), Some(_)) => "kubernetes (default), jwks",
        (Some(_), None) => "kubernetes (default)",
        (None, Some(_)) => "jwks (no default)",
        (None, None) => "insecure (default)",
    };
    let mut report = vec![format!(
        "credentials: {} ({})",
        where_,
        match origin {
            Origin::Generated => format!(
                "generated a new root valid {} and an issuer valid {}",
                humantime::format_duration(opts.generation.root),
                humantime::format_duration(opts.generation.issuer.min(opts.generation.root)),
            ),
            Origin::Loaded => "loaded and validated".to_owned(),
        },
    )];
    report.push(format!(
        "trust domain {}; Sentry's ID {}; workload certificates {} back-dated {}; validators: {}",
        settings.trust_domain,
        settings.sentry_id(),
        humantime::format_duration(settings.ttl),
        humantime::format_duration(settings.skew),
        validator_names,
    ));
    let sentry = Sentry::new(settings, creds, validators)?;
    if origin == Origin::Generated {
        sentry.metrics().issuer_changed();
    }
    let grpc = bind(&opts.listen_address, opts.port).await?;
    let healthz = match &opts.healthz {
        Some((h, p)) => Some(bind(h, *p).await?),
        None => None,
    };
    let metrics = match &opts.metrics {
        Some((h, p)) => Some(bind(h, *p).await?),
        None => None,
    };
    report.push(format!(
        "connections: at most {} ({} per address{}), idle ones closed after {} (TLS handshake {}, \
         first request {})",
        limits.max_connections,
        limits.per_address,
        if limits.max_connections < opts.limits.max_connections {
            format!(
                "; lowered from {} to fit {open_files} open files",
                opts.limits.max_connections
            )
        } else {
            String::new()
        },
        humantime::format_duration(limits.idle),
        humantime::format_duration(limits.handshake),
        humantime::format_duration(limits.first_request),
    ));
    report.push(format!(
        "listening grpc={} healthz={} metrics={}",
        local(&grpc),
        healthz.as_ref().map_or("off".into(), local),
        metrics.as_ref().map_or("off".into(), local),
    ));
    Ok(Started {
        sentry,
        listeners: Listeners {
            grpc,
            healthz,
            metrics,
        },
        store,
        report,
    })
}
