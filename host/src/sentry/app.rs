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
    /// `--jwt-enabled` and the `--jwt-*` flags: JWT-SVIDs beside the certificates.
    pub jwt: Option<JwtOptions>,
    /// `--oidc-enabled` and the `--oidc-*` flags (needs `jwt`).
    pub oidc: Option<OidcOptions>,
}

/// Sentry's JWT-SVIDs (Dapr's flags and defaults).
#[derive(Clone, Debug)]
pub struct JwtOptions {
    /// `--jwt-key-filename` (`jwt.key`; a relative name is in the credentials directory).
    pub key_filename: String,
    /// `--jwks-filename` (`jwks.json`, likewise).
    pub jwks_filename: String,
    /// `--jwt-issuer`.
    pub issuer: Option<String>,
    /// `--jwt-signing-algorithm` (RS256).
    pub algorithm: crate::ca::jwt::JwtAlgorithm,
    /// `--jwt-key-id`.
    pub key_id: Option<String>,
    /// `--jwt-ttl` (24 h).
    pub ttl: std::time::Duration,
}

impl Default for JwtOptions {
    fn default() -> Self {
        Self {
            key_filename: "jwt.key".into(),
            jwks_filename: "jwks.json".into(),
            issuer: None,
            algorithm: crate::ca::jwt::JwtAlgorithm::default(),
            key_id: None,
            ttl: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// Sentry's OIDC discovery server (Dapr's flags and defaults).
#[derive(Clone, Debug)]
pub struct OidcOptions {
    /// `--oidc-server-listen-address` (`localhost`).
    pub listen_address: String,
    /// `--oidc-server-listen-port` (9080; 0: a free port).
    pub port: u16,
    /// `--oidc-server-tls-cert-file` and `--oidc-server-tls-key-file`; `None` only with
    /// `--oidc-server-tls-enabled=false` (plain HTTP).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--oidc-jwks-uri`.
    pub jwks_uri: Option<String>,
    /// `--oidc-path-prefix`.
    pub path_prefix: String,
    /// `--oidc-allowed-hosts`.
    pub allowed_hosts: Vec<String>,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            listen_address: "localhost".into(),
            port: 9080,
            tls: None,
            jwks_uri: None,
            path_prefix: String::new(),
            allowed_hosts: Vec::new(),
        }
    }
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
            jwt: None,
            oidc: None,
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
        jwt: opts.jwt.as_ref().map(|j| super::JwtSettings {
            ttl: j.ttl,
            issuer: j.issuer.clone(),
            files: None,
            secret: None,
        }),
    };
    if opts.oidc.is_some() && opts.jwt.is_none() {
        anyhow::bail!(
            "--oidc-enabled needs --jwt-enabled (the OIDC server publishes the JWT keys)"
        );
    }
    sigil_core::spiffe::SpiffeId::parse(&settings.sentry_id())
        .map_err(|e| anyhow::anyhow!("trust domain {:?}: {e}", opts.trust_domain))?;
    let kube = match &opts.kubernetes {
        Some(k) => Some(kube_config(k, &settings)?),
        None => None,
    };
    // Kubernetes mode keeps the credentials in the Secret, as Dapr does, unless the operator
    // points Sentry at files (a mounted Secret, say) with --issuer-credentials.
    let policy = settings.holders_policy(opts.jwt.as_ref().is_some_and(|j| j.key_id.is_none()));
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
    let mut jwt_keys = None;
    let mut jwt_report = None;
    let mut settings = settings;
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
            if let Some(j) = &opts.jwt {
                let (keys, generated, loaded) = secrets
                    .jwt_load_or_generate(j.algorithm, j.key_id.as_deref())
                    .await?;
                jwt_report = Some(format!(
                    "JWT-SVIDs: {} key {} ({}), Secret {ns}/{name} keys jwt.key and jwks.json \
                     (ConfigMap {ns}/{name} publishes jwks.json), valid {}{}",
                    keys.algorithm().as_str(),
                    keys.kid(),
                    if generated { "generated" } else { "loaded" },
                    humantime::format_duration(j.ttl),
                    j.issuer
                        .as_ref()
                        .map_or_else(String::new, |i| format!(", issuer {i}")),
                    ns = settings.namespace,
                    name = secret_store::TRUST_BUNDLE,
                ));
                jwt_keys = Some(keys);
                if let Some(js) = settings.jwt.as_mut() {
                    js.secret = Some((j.algorithm, j.key_id.clone(), loaded));
                }
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
            let paths = match &opts.jwt {
                Some(j) => paths.with_jwt(&j.key_filename, &j.jwks_filename),
                None => paths,
            };
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
            if let Some(j) = &opts.jwt {
                let (keys, generated, loaded) = load_jwt_keys(&paths, j).await?;
                jwt_report = Some(format!(
                    "JWT-SVIDs: {} key {} ({}), {} valid {}{}",
                    keys.algorithm().as_str(),
                    keys.kid(),
                    if generated { "generated" } else { "loaded" },
                    jwt_paths(&paths).key.display(),
                    humantime::format_duration(j.ttl),
                    j.issuer
                        .as_ref()
                        .map_or_else(String::new, |i| format!(", issuer {i}")),
                ));
                jwt_keys = Some(keys);
                if let Some(js) = settings.jwt.as_mut() {
                    let jp = jwt_paths(&paths);
                    js.files = Some(super::JwtFiles {
                        loaded,
                        paths: jp,
                        algorithm: j.algorithm,
                        key_id: j.key_id.clone(),
                    });
                }
            }
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
    report.extend(jwt_report);
    let sentry = Sentry::new(settings, creds, validators)?;
    if origin == Origin::Generated {
        sentry.metrics().issuer_changed();
    }
    if let Some(keys) = jwt_keys {
        sentry.set_jwt_keys(keys);
    }
    let oidc = match &opts.oidc {
        Some(o) => {
            let acceptor = match &o.tls {
                Some((cert, key)) => Some(oidc_tls(cert, key)?),
                None => None,
            };
            let settings = super::oidc::OidcSettings {
                prefix: super::oidc::OidcSettings::normalise_prefix(&o.path_prefix),
                jwks_uri: o.jwks_uri.clone(),
                allowed_hosts: o.allowed_hosts.clone(),
                issuer: opts.jwt.as_ref().and_then(|j| j.issuer.clone()),
                tls: acceptor.is_some(),
            };
            Some(super::oidc::OidcListener {
                listener: bind(&o.listen_address, o.port).await?,
                tls: acceptor,
                settings,
            })
        }
        None => None,
    };
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
        "listening grpc={} healthz={} metrics={} oidc={}",
        local(&grpc),
        healthz.as_ref().map_or("off".into(), local),
        metrics.as_ref().map_or("off".into(), local),
        oidc.as_ref().map_or("off".into(), |o| format!(
            "{}://{}",
            if o.tls.is_some() { "https" } else { "http" },
            local(&o.listener)
        )),
    ));
    Ok(Started {
        sentry,
        listeners: Listeners {
            grpc,
            healthz,
            metrics,
            oidc,
        },
        store,
        report,
    })
}

/// Where the JWT key and its set are: a relative name is in the credentials directory (Dapr
/// ignores a relative name and uses its default silently).
pub fn jwt_paths(paths: &StorePaths) -> crate::ca::jwt::JwtKeyPaths {
    crate::ca::jwt::JwtKeyPaths {
        key: paths.jwt_key.clone(),
        jwks: paths.jwks.clone(),
    }
}

/// Loads (or generates) the JWT key under the credential store's lock.
async fn load_jwt_keys(
    paths: &StorePaths,
    j: &JwtOptions,
) -> anyhow::Result<(crate::ca::jwt::JwtKeys, bool, Vec<u8>)> {
    let (paths, j) = (paths.clone(), j.clone());
    tokio::task::spawn_blocking(move || {
        let _lock = store::StoreLock::acquire(&paths)?;
        let keys = crate::ca::jwt::load_or_generate(
            &jwt_paths(&paths),
            j.algorithm,
            j.key_id.as_deref(),
            Some(&paths.jwt_marker()),
        )?;
        anyhow::Ok(keys)
    })
    .await?
    .context("the JWT signing key")
}

/// The OIDC server's TLS from its certificate chain and key files (PEM).
fn oidc_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let chain = crate::pki::pem_certificates(&read(cert)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no CERTIFICATE", cert.display());
    }
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    use rustls::pki_types::pem::PemObject as _;
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(crate::rustls_glue::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            chain
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from)
                .collect(),
            key_der,
        )
        .context("the OIDC server's certificate and key")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
