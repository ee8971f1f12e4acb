//! The `sigil` command line. Only argument parsing lives here; the work is in
//! `sigil_host::commands`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sigil_core::chain::Usage;
use sigil_core::UnixTime;
use sigil_host::ca::rotation::StepOptions;
use sigil_host::commands::{self, ExpectedName, VerifyArgs, VerifyOutcome};
use sigil_host::pb::sign_certificate_request::TokenValidator;
use sigil_host::sentry::app::{KubeOptions, SentryOptions};

/// Sigil: workload identity and mutual TLS, Dapr Sentry-compatible, from MCU to server.
#[derive(Parser)]
#[command(name = "sigil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certificate signing requests.
    #[command(subcommand)]
    Csr(CsrCommand),
    /// Certificates: validate and inspect.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run Sentry, the certificate authority (Dapr's gRPC API and flags). With no arguments it
    /// runs on a fresh machine: credentials generated in a data directory it creates, trust
    /// domain `localhost`, the insecure validator; it prints where everything is.
    Sentry(Box<SentryCli>),
    /// The demo: Sentry, two sidecars and two apps on loopback; identities, rotations, calls
    /// over mutual TLS and Sentry rotating its own root, live. Ctrl-C stops it.
    Demo {
        /// Run the script once (about 45 s) and exit 0 only if every step held.
        #[arg(long)]
        once: bool,
    },
    /// Run a sidecar: its workload identity from Sentry, renewed by the rotation machine, with
    /// trust anchors from DAPR_TRUST_ANCHORS or a watched file; health on the app-facing
    /// loopback port (/v1.0/healthz), metrics with Dapr's runtime names.
    Sidecar(Box<SidecarCli>),
    /// Get a workload certificate from Sentry: make a P-256 key and CSR, send it, validate the
    /// answer, and write key.pem (0600), cert.pem (chain) and ca.pem to a directory.
    Sign(SignCli),
    /// Operate a credentials directory (ca.crt, issuer.crt, issuer.key), stopped or in use by
    /// a running Sentry: make one, explain it, check its expiry, export its trust bundle.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Bridge an edge device's UART (a TCP socket, as QEMU's -serial tcp:...) to the host:
    /// its sign requests go to Sentry, its TLS bytes to a sidecar's mTLS port. Exits 0 when
    /// the serial connection ends or on SIGTERM/Ctrl-C.
    Relay(RelayCli),
}

#[derive(Args)]
struct RelayCli {
    /// The device's UART socket, host:port (retried for 30 s).
    #[arg(long)]
    serial: String,
    /// Sentry's address, host:port.
    #[arg(long)]
    sentry: String,
    /// PEM trust anchors (Sentry's ca.crt) to check Sentry and the issued chains against.
    #[arg(long)]
    anchors: PathBuf,
    /// Where the device's TLS sessions go, host:port: a sidecar's mTLS (internal) port, or any
    /// TLS server. Repeat it to spread sessions over several, each new session to the next.
    #[arg(long, required = true)]
    peer: Vec<String>,
    /// Sentry's SPIFFE ID [default: spiffe://CONTROL_PLANE_TRUST_DOMAIN/ns/
    /// CONTROL_PLANE_NAMESPACE/dapr-sentry, from the two flags below].
    #[arg(long)]
    sentry_id: Option<String>,
    /// Sentry's trust domain (as the sidecar's flag).
    #[arg(long, default_value = "localhost")]
    control_plane_trust_domain: String,
    /// Sentry's namespace (as the sidecar's flag).
    #[arg(long, default_value = "default")]
    control_plane_namespace: String,
    /// The device's trust domain, sent in its sign requests: Dapr's workload default
    /// (`spec.accessControl.trustDomain`) is `public`.
    #[arg(long, default_value = "public")]
    trust_domain: String,
    /// Sign only for this app ID (other requests are refused with PERMISSION_DENIED).
    #[arg(long)]
    app_id: Option<String>,
    /// Sign only in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Token for requests whose token is empty (read for each request, trimmed).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Log level (error, warn, info, debug).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Args)]
struct SentryCli {
    /// Dapr Configuration file (spec.mtls.workloadCertTTL, allowedClockSkew, tokenValidators).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of ca.crt, issuer.crt and issuer.key [default: a data directory of Sigil's].
    #[arg(long)]
    issuer_credentials: Option<PathBuf>,
    /// Trust anchors file name (absolute: used as is).
    #[arg(long, default_value = "ca.crt")]
    issuer_ca_filename: String,
    /// Issuer certificate file name.
    #[arg(long, default_value = "issuer.crt")]
    issuer_certificate_filename: String,
    /// Issuer key file name.
    #[arg(long, default_value = "issuer.key")]
    issuer_key_filename: String,
    /// Sentry's trust domain.
    #[arg(long, default_value = "localhost")]
    trust_domain: String,
    /// Lifetime of a root Sentry generates (Go duration syntax).
    #[arg(long, default_value = "8760h", value_parser = ca_ttl)]
    root_ttl: Duration,
    /// Lifetime of an issuer Sentry generates (Go duration; never past the root's notAfter).
    #[arg(long, default_value = "8760h", value_parser = ca_ttl)]
    issuer_ttl: Duration,
    /// Key type of a root and issuer Sentry generates (at first start and at each automatic
    /// rotation): P-256, or Ed25519 as Dapr 1.18 makes them.
    #[arg(long, default_value = "p256", value_parser = ["p256", "ed25519"])]
    key_algorithm: String,
    /// gRPC port (0: any free port).
    #[arg(long, default_value_t = 50001)]
    port: u16,
    /// gRPC listen address (empty: all interfaces).
    #[arg(long, default_value = "")]
    listen_address: String,
    /// Health port (/healthz).
    #[arg(long, default_value_t = 8080)]
    healthz_port: u16,
    /// Health listen address.
    #[arg(long, default_value = "")]
    healthz_listen_address: String,
    /// Metrics port (/metrics, Prometheus text).
    #[arg(long, default_value_t = 9090)]
    metrics_port: u16,
    /// Metrics listen address: loopback unless you ask otherwise (metrics name workloads and
    /// their rates; Dapr's default is all interfaces).
    #[arg(long, default_value = "127.0.0.1")]
    metrics_listen_address: String,
    /// Serve metrics.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    enable_metrics: bool,
    /// Most gRPC connections at once (lowered to fit the open-file limit); when nearly full,
    /// the connections idle the longest are closed for new ones.
    #[arg(long, default_value_t = sigil_host::sentry::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most gRPC connections from one client address (IPv4 address or IPv6 /64).
    #[arg(long, default_value_t = sigil_host::sentry::MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_ip: usize,
    /// A gRPC connection with no request in flight for this long is closed (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    connection_idle_timeout: Duration,
    /// standalone, or kubernetes (the kubernetes token validator on, and the default).
    #[arg(long, default_value = "standalone", value_parser = ["standalone", "kubernetes"])]
    mode: String,
    /// Kubernetes API server URL (kubernetes mode; default: in-cluster).
    #[arg(long)]
    kube_api_server: Option<String>,
    /// PEM roots for the Kubernetes API server.
    #[arg(long)]
    kube_ca_file: Option<PathBuf>,
    /// Sentry's own service-account token file (re-read on every TokenReview).
    #[arg(long)]
    kube_token_file: Option<PathBuf>,
    /// Issue JWT-SVIDs beside the certificates (the answer's jwt and per_audience_jwts).
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    jwt_enabled: bool,
    /// The JWT signing key's file (generated when absent; relative: in the credentials
    /// directory).
    #[arg(long, default_value = "jwt.key")]
    jwt_key_filename: String,
    /// The published JWT key set's file (relative: in the credentials directory).
    #[arg(long, default_value = "jwks.json")]
    jwks_filename: String,
    /// The JWTs' iss claim (and the OIDC issuer); needs --jwt-enabled.
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA (daprd reads RS, PS
    /// and ES only).
    #[arg(long, default_value = "RS256")]
    jwt_signing_algorithm: String,
    /// The JWTs' kid [default: the set's kid for the key, else its RFC 7638 thumbprint].
    #[arg(long)]
    jwt_key_id: Option<String>,
    /// JWT lifetime (Go duration).
    #[arg(long, default_value = "24h", value_parser = jwt_ttl)]
    jwt_ttl: Duration,
    /// Serve OIDC discovery (/.well-known/openid-configuration, /jwks.json); needs
    /// --jwt-enabled.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    oidc_enabled: bool,
    /// OIDC server port (0: any free port).
    #[arg(long, default_value_t = 9080)]
    oidc_server_listen_port: u16,
    /// OIDC server listen address.
    #[arg(long, default_value = "localhost")]
    oidc_server_listen_address: String,
    /// Serve OIDC over TLS (needs the certificate and key files); false: plain HTTP.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    oidc_server_tls_enabled: bool,
    /// The OIDC server's certificate chain (PEM).
    #[arg(long)]
    oidc_server_tls_cert_file: Option<PathBuf>,
    /// The OIDC server's private key (PEM).
    #[arg(long)]
    oidc_server_tls_key_file: Option<PathBuf>,
    /// The jwks_uri the discovery document gives [default: the issuer's origin, the prefix,
    /// /jwks.json].
    #[arg(long)]
    oidc_jwks_uri: Option<String>,
    /// A path prefix for the OIDC routes.
    #[arg(long, default_value = "")]
    oidc_path_prefix: String,
    /// Hosts the OIDC server answers for (comma-separated; * for any). Without it and without
    /// --jwt-issuer only loopback hosts may shape the issuer.
    #[arg(long, value_delimiter = ',')]
    oidc_allowed_hosts: Vec<String>,
    /// Log as JSON.
    #[arg(long)]
    log_as_json: bool,
    /// Log level (error, warn, info, debug).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Args)]
struct SidecarCli {
    #[command(flatten)]
    flags: sigil_host::sidecar::Flags,
    /// App-facing HTTP port (Dapr's HTTP API: invocation, health).
    #[arg(long, default_value_t = 3500)]
    dapr_http_port: u16,
    /// Address the app-facing ports bind: loopback unless you explicitly ask otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    dapr_listen_address: String,
    /// App-facing gRPC port (gRPC invocation in Dapr's proxy form: the dapr-app-id metadata
    /// names the app to call).
    #[arg(long, default_value_t = 50001)]
    dapr_grpc_port: u16,
    /// Port other sidecars call (mutual TLS unless spec.mtls.enabled is false).
    #[arg(long, default_value_t = 50002)]
    dapr_internal_port: u16,
    /// Address the internal port binds.
    #[arg(long, default_value = "0.0.0.0")]
    dapr_internal_address: String,
    /// Metrics port.
    #[arg(long, default_value_t = 9090)]
    metrics_port: u16,
    /// Metrics listen address: loopback unless you ask otherwise (metrics name workloads and
    /// their rates).
    #[arg(long, default_value = "127.0.0.1")]
    metrics_listen_address: String,
    /// Log as JSON.
    #[arg(long)]
    log_as_json: bool,
    /// Log level.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Args)]
struct SignCli {
    /// Sentry's address, host:port.
    #[arg(long)]
    sentry: String,
    /// PEM trust anchors to check Sentry and the issued chain against.
    #[arg(long)]
    anchors: PathBuf,
    /// App ID.
    #[arg(long)]
    id: String,
    /// Namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// File holding the token for the validator (selects the jwks validator, as daprd does,
    /// unless --token-validator says otherwise).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The validator to ask for: jwks, kubernetes (a service-account token, as daprd on
    /// Kubernetes), insecure, or default (Sentry's). Default: jwks with a token file, else
    /// Sentry's default.
    #[arg(long, value_parser = ["default", "insecure", "kubernetes", "jwks"])]
    token_validator: Option<String>,
    /// Trust domain to ask for (control-plane services only).
    #[arg(long, default_value = "")]
    trust_domain: String,
    /// Sentry's trust domain (its SPIFFE ID is checked).
    #[arg(long, default_value = "localhost")]
    control_plane_trust_domain: String,
    /// Sentry's namespace.
    #[arg(long, default_value = "default")]
    control_plane_namespace: String,
    /// Where to write key.pem, cert.pem and ca.pem.
    #[arg(long)]
    out_dir: PathBuf,
    /// Replace an existing key.pem.
    #[arg(long)]
    force: bool,
    /// Ask for a JWT-SVID for this audience too (repeatable; Sentry adds its trust domain):
    /// written to jwt.txt (0600), one token per audience to jwt-audiences.json.
    #[arg(long = "jwt-audience")]
    jwt_audience: Vec<String>,
}

/// Where the credentials are (as `sigil sentry` reads them).
#[derive(Args)]
struct CaDir {
    /// Directory of ca.crt, issuer.crt and issuer.key [default: Sentry's data directory].
    #[arg(long)]
    issuer_credentials: Option<PathBuf>,
}

impl CaDir {
    fn paths(&self) -> sigil_host::ca::store::StorePaths {
        let dir = self
            .issuer_credentials
            .clone()
            .unwrap_or_else(sigil_host::sentry::app::default_credentials_dir);
        sigil_host::ca::store::StorePaths::in_dir(&dir)
    }
}

#[derive(Subcommand)]
enum CaCommand {
    /// Make a root and an issuer (never over existing files).
    Init {
        #[command(flatten)]
        dir: CaDir,
        /// Let Sentry rotate them automatically, as credentials it generates itself (without
        /// it they are the operator's: `sigil ca rotate`).
        #[arg(long)]
        auto_rotate: bool,
        /// The trust domain (the root's O=).
        #[arg(long, default_value = "localhost")]
        trust_domain: String,
        /// Sentry's namespace (the issuer is named for Sentry's ID in it).
        #[arg(long, default_value = "default")]
        sentry_namespace: String,
        #[command(flatten)]
        pair: NewPair,
    },
    /// Explain what is there: each root and its slot (active, prepared, old), the issuer,
    /// whether Sentry would load the set, who rotates it, and the next step and when.
    Inspect {
        #[command(flatten)]
        dir: CaDir,
        #[command(flatten)]
        policy: HolderPolicy,
    },
    /// When the issuer and the root expire: one line, and exit 0 (more than 30 days left), 1
    /// (less), 2 (expired or unreadable).
    Expiry {
        #[command(flatten)]
        dir: CaDir,
    },
    /// Print the trust bundle (ca.crt's certificates) as PEM, to give to the holders.
    Export {
        #[command(flatten)]
        dir: CaDir,
    },
    /// Replace the root and issuer by hand, in three steps a running Sentry and its holders
    /// follow live: prepare (publish a new root), activate (its issuer signs), retire (the old
    /// root leaves). Each refuses when it would break a holder, unless --force.
    Rotate {
        #[command(subcommand)]
        step: RotateStep,
    },
}

/// What holders need for the timing of a rotation step.
#[derive(Args)]
struct HolderTimes {
    #[command(flatten)]
    policy: HolderPolicy,
    /// Take the step even if a holder could refuse what follows.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum RotateStep {
    /// Make the next root and issuer, stage them, and publish the new root in ca.crt.
    Prepare {
        #[command(flatten)]
        dir: CaDir,
        #[command(flatten)]
        pair: NewPair,
        #[command(flatten)]
        policy: HolderPolicy,
    },
    /// The staged issuer signs from now on (refused before one TTL plus skew after prepare).
    Activate {
        #[command(flatten)]
        dir: CaDir,
        #[command(flatten)]
        times: HolderTimes,
    },
    /// The old root leaves ca.crt (refused before one TTL plus skew after activate).
    Retire {
        #[command(flatten)]
        dir: CaDir,
        #[command(flatten)]
        times: HolderTimes,
    },
}

impl HolderTimes {
    fn options(&self, generation: sigil_host::ca::Generation) -> StepOptions {
        StepOptions {
            policy: self.policy.policy(),
            generation,
            force: self.force,
            crash: None,
            jwt: None,
        }
    }
}

/// The holders' timing (what `inspect` plans with and rotation steps wait for).
#[derive(Args)]
struct HolderPolicy {
    /// The workload certificate TTL in force (spec.mtls.workloadCertTTL).
    #[arg(long, default_value = "24h", value_parser = go_duration_arg)]
    workload_ttl: Duration,
    /// The clock skew allowed (spec.mtls.allowedClockSkew).
    #[arg(long, default_value = "15m", value_parser = go_duration_arg)]
    skew: Duration,
}

impl HolderPolicy {
    const fn policy(&self) -> sigil_host::ca::schedule::Policy {
        sigil_host::ca::schedule::Policy {
            workload_ttl: self.workload_ttl,
            skew: self.skew,
        }
    }
}

fn go_duration_arg(s: &str) -> Result<Duration, String> {
    sigil_host::dapr::config::go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration (Go syntax: 24h, 15m, 90s)"))
}

/// `p256` or `ed25519` (clap has checked it is one of them).
fn key_algorithm(name: &str) -> sigil_host::key::KeyAlgorithm {
    if name == "ed25519" {
        sigil_host::key::KeyAlgorithm::Ed25519
    } else {
        sigil_host::key::KeyAlgorithm::P256
    }
}

/// The root and issuer `sigil ca init` and `rotate prepare` make.
#[derive(Args)]
struct NewPair {
    /// The root's lifetime (Go duration).
    #[arg(long, default_value = "8760h", value_parser = ca_ttl)]
    root_ttl: Duration,
    /// The issuer's lifetime (Go duration; never past the root's).
    #[arg(long, default_value = "8760h", value_parser = ca_ttl)]
    issuer_ttl: Duration,
    /// The keys' type.
    #[arg(long, default_value = "p256", value_parser = ["p256", "ed25519"])]
    key_algorithm: String,
}

impl NewPair {
    fn generation(&self) -> sigil_host::ca::Generation {
        sigil_host::ca::Generation {
            root: self.root_ttl,
            issuer: self.issuer_ttl,
            algorithm: key_algorithm(&self.key_algorithm),
        }
    }
}

#[derive(Subcommand)]
enum CsrCommand {
    /// Make a new ECDSA P-256 key (PKCS#8 PEM, mode 0600) and a CSR for it, with an empty
    /// subject as Dapr sends and optionally a SPIFFE ID as URI SAN.
    New {
        /// Where to write the private key (refused if it exists, unless --force).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the CSR, PEM (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        /// SPIFFE ID to request, e.g. spiffe://example.org/ns/default/app.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Validate a certificate path (RFC 5280). Exit 0: valid (the path is printed);
    /// 1: invalid (the reason is printed); 2: unusable input.
    Verify(VerifyCli),
    /// Describe every certificate in a PEM file.
    Inspect {
        /// PEM file with one or more certificates.
        file: PathBuf,
    },
}

#[derive(Args)]
struct VerifyCli {
    /// PEM file with one or more trust anchors.
    #[arg(long)]
    anchors: PathBuf,
    /// PEM file with untrusted intermediates, in any order.
    #[arg(long)]
    intermediates: Option<PathBuf>,
    /// PEM file whose first certificate is the leaf.
    #[arg(long)]
    leaf: PathBuf,
    /// Validate at this time (RFC 3339, e.g. 2026-11-22T12:00:00Z) instead of now.
    #[arg(long, value_parser = parse_time)]
    at: Option<UnixTime>,
    /// Allowed clock skew, e.g. 15m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    skew: Duration,
    /// What the leaf is for.
    #[arg(long, value_enum, default_value_t = UsageArg::Any)]
    usage: UsageArg,
    /// The leaf's SPIFFE ID must be exactly this.
    #[arg(long, group = "name")]
    spiffe_id: Option<String>,
    /// The leaf's SPIFFE ID must be in this trust domain.
    #[arg(long, group = "name")]
    trust_domain: Option<String>,
    /// The leaf must carry this DNS name (RFC 6125 wildcards).
    #[arg(long, group = "name")]
    dns: Option<String>,
    /// The leaf must carry this IP address.
    #[arg(long, group = "name")]
    ip: Option<std::net::IpAddr>,
    /// Most intermediates in a path.
    #[arg(long, default_value_t = sigil_core::chain::DEFAULT_MAX_DEPTH)]
    max_depth: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum UsageArg {
    Server,
    Client,
    Any,
}

/// A root or issuer lifetime: a Go duration of at least a minute.
fn jwt_ttl(s: &str) -> Result<Duration, String> {
    let d = sigil_host::dapr::config::go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration (Go syntax: 24h, 90m)"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is shorter than a second"));
    }
    Ok(d)
}

/// `--jwt-*` and `--oidc-*` as Sentry's options, or what is wrong with them.
fn jwt_and_oidc(
    args: &SentryCli,
) -> Result<
    (
        Option<sigil_host::sentry::app::JwtOptions>,
        Option<sigil_host::sentry::app::OidcOptions>,
    ),
    String,
> {
    if !args.jwt_enabled && args.jwt_issuer.is_some() {
        return Err("--jwt-issuer needs --jwt-enabled".into());
    }
    let jwt = if args.jwt_enabled {
        Some(sigil_host::sentry::app::JwtOptions {
            key_filename: args.jwt_key_filename.clone(),
            jwks_filename: args.jwks_filename.clone(),
            issuer: args.jwt_issuer.clone(),
            algorithm: args
                .jwt_signing_algorithm
                .parse()
                .map_err(|e| format!("--jwt-signing-algorithm: {e}"))?,
            key_id: args.jwt_key_id.clone().filter(|k| !k.is_empty()),
            ttl: args.jwt_ttl,
        })
    } else {
        None
    };
    if !args.oidc_enabled {
        return Ok((jwt, None));
    }
    let tls = match (
        args.oidc_server_tls_enabled,
        &args.oidc_server_tls_cert_file,
        &args.oidc_server_tls_key_file,
    ) {
        (true, Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (true, _, _) => {
            return Err("the OIDC server serves TLS by default: give \
                        --oidc-server-tls-cert-file and --oidc-server-tls-key-file, or \
                        --oidc-server-tls-enabled=false for plain HTTP"
                .into())
        }
        (false, None, None) => None,
        (false, _, _) => {
            return Err(
                "--oidc-server-tls-enabled=false and a TLS certificate or key file \
                        contradict each other"
                    .into(),
            )
        }
    };
    let oidc = sigil_host::sentry::app::OidcOptions {
        listen_address: args.oidc_server_listen_address.clone(),
        port: args.oidc_server_listen_port,
        tls,
        jwks_uri: args.oidc_jwks_uri.clone().filter(|u| !u.is_empty()),
        path_prefix: args.oidc_path_prefix.clone(),
        allowed_hosts: args
            .oidc_allowed_hosts
            .iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
    };
    Ok((jwt, Some(oidc)))
}

fn ca_ttl(s: &str) -> Result<Duration, String> {
    let d = sigil_host::dapr::config::go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration (Go syntax: 8760h, 720h, 90m)"))?;
    if d < Duration::from_secs(60) {
        return Err(format!("{s:?} is shorter than a minute"));
    }
    Ok(d)
}

fn parse_time(s: &str) -> Result<UnixTime, String> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("not an RFC 3339 time: {e}"))?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "times before 1970 are not supported".to_owned())?
        .as_secs();
    Ok(UnixTime::from_secs(secs))
}

fn now() -> UnixTime {
    UnixTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Sentry(args) => sentry(*args),
        Command::Sign(args) => sign(args),
        Command::Relay(args) => relay(args),
        Command::Sidecar(args) => sidecar(*args),
        Command::Demo { once } => demo(once),
        Command::Csr(CsrCommand::New {
            key,
            out,
            spiffe_id,
            force,
        }) => match commands::csr_new(&key, &out, spiffe_id.as_deref(), force) {
            Ok(_) => {
                println!(
                    "wrote key {} (mode 0600) and CSR {}",
                    key.display(),
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Cert(CertCommand::Verify(v)) => {
            let name = match (v.spiffe_id, v.trust_domain, v.dns, v.ip) {
                (Some(id), ..) => ExpectedName::SpiffeId(id),
                (_, Some(td), ..) => ExpectedName::TrustDomain(td),
                (_, _, Some(dns), _) => ExpectedName::Dns(dns),
                (_, _, _, Some(ip)) => ExpectedName::Ip(ip),
                _ => ExpectedName::None,
            };
            let args = VerifyArgs {
                anchors: v.anchors,
                intermediates: v.intermediates,
                leaf: v.leaf,
                at: v.at.unwrap_or_else(now),
                skew: v.skew,
                usage: match v.usage {
                    UsageArg::Server => Usage::ServerAuth,
                    UsageArg::Client => Usage::ClientAuth,
                    UsageArg::Any => Usage::Any,
                },
                name,
                max_depth: v.max_depth,
            };
            match commands::cert_verify(&args) {
                Ok(VerifyOutcome::Valid(text)) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Ok(VerifyOutcome::Invalid(reason)) => {
                    println!("{reason}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Ca(command) => ca(command),
        Command::Cert(CertCommand::Inspect { file }) => match commands::cert_inspect(&file) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn ca(command: CaCommand) -> ExitCode {
    use sigil_host::ca::schedule::Step;
    use sigil_host::commands::ca as admin;
    let now = std::time::SystemTime::now();
    let text = match command {
        CaCommand::Init {
            dir,
            auto_rotate,
            trust_domain,
            sentry_namespace,
            pair,
        } => admin::init(
            &dir.paths(),
            &trust_domain,
            &sigil_host::dapr::sentry_id(&trust_domain, &sentry_namespace),
            pair.generation(),
            if auto_rotate {
                sigil_host::ca::store::Rotation::Automatic
            } else {
                sigil_host::ca::store::Rotation::Manual
            },
            now,
        ),
        CaCommand::Rotate { step } => {
            let (dir, step, opts) = match step {
                RotateStep::Prepare { dir, pair, policy } => (
                    dir,
                    Step::Prepare,
                    // Nothing to force: preparing never breaks a holder.
                    StepOptions {
                        policy: policy.policy(),
                        generation: pair.generation(),
                        force: false,
                        crash: None,
                        jwt: None,
                    },
                ),
                RotateStep::Activate { dir, times } => {
                    (dir, Step::Activate, times.options(Default::default()))
                }
                RotateStep::Retire { dir, times } => {
                    (dir, Step::Retire, times.options(Default::default()))
                }
            };
            admin::rotate(&dir.paths(), step, &opts, now)
        }
        CaCommand::Inspect { dir, policy } => {
            admin::inspect(&dir.paths(), Some(policy.policy()), now)
        }
        CaCommand::Export { dir } => admin::export(&dir.paths()),
        CaCommand::Expiry { dir } => {
            return match admin::expiry(&dir.paths(), now) {
                Ok(e) => {
                    println!("{}", e.line);
                    ExitCode::from(e.status)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match text {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_logs(level: &str, json: bool) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // kube logs a response it cannot decode at warn, and a TokenReview's response echoes the
    // workload's token: its errors reach Sentry as values instead.
    if let Ok(quiet) = "kube_client=error".parse() {
        filter = filter.add_directive(quiet);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

fn sidecar(args: SidecarCli) -> ExitCode {
    init_logs(&args.log_level, args.log_as_json);
    let workload_socket = args.flags.workload_api_socket.clone();
    let workload_group = match args.flags.workload_api_socket_group.as_deref() {
        Some(g) => match sigil_host::sidecar::workload_api::group_id(g) {
            Ok(gid) => Some(gid),
            Err(e) => {
                eprintln!("error: --workload-api-socket-group: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let jwt_bundle = args.flags.jwt_bundle_file.clone();
    let settings = match args.flags.resolve(|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(async move {
        let bind = |host: String, port: u16| async move {
            tokio::net::TcpListener::bind((host.as_str(), port))
                .await
                .map_err(|e| anyhow::anyhow!("binding {host}:{port}: {e}"))
        };
        let http = bind(args.dapr_listen_address.clone(), args.dapr_http_port).await?;
        let grpc = bind(args.dapr_listen_address, args.dapr_grpc_port).await?;
        let internal = bind(args.dapr_internal_address, args.dapr_internal_port).await?;
        let metrics = bind(args.metrics_listen_address, args.metrics_port).await?;
        let workload_api = match &workload_socket {
            Some(p) => Some(
                sigil_host::sidecar::workload_api::bind(p, workload_group)
                    .map_err(|e| anyhow::anyhow!("the Workload API socket {}: {e}", p.display()))?,
            ),
            None => None,
        };
        println!(
            "sidecar: app {} listening http={} grpc={} internal={} metrics={} mtls={}",
            settings.identity.app_id,
            http.local_addr()?,
            grpc.local_addr()?,
            internal.local_addr()?,
            metrics.local_addr()?,
            if settings.invoke.mtls { "on" } else { "off" },
        );
        let listeners = sigil_host::sidecar::Listeners {
            http,
            grpc: Some(grpc),
            internal,
            metrics: Some(metrics),
            workload_api,
            jwt_bundle,
        };
        let state = std::sync::Arc::new(sigil_host::sidecar::identity::IdentityState::default());
        let sigil_host::sidecar::Settings { identity, invoke } = settings;
        sigil_host::sidecar::run(identity, invoke, listeners, state, shutdown_signal()).await?;
        anyhow::Ok(())
    }) {
        Ok(()) => {
            println!("sidecar: stopped");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn demo(once: bool) -> ExitCode {
    init_logs("error", false);
    match run(sigil_host::demo::run(once, shutdown_signal())) {
        Ok(true) => {
            println!("demo: all steps held");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("demo: FAILED");
            ExitCode::FAILURE
        }
        Err(code) => code,
    }
}

/// Runs `work` to completion on a new runtime ([`runtime`]); a failure to start the runtime
/// or an error from `work` is printed, and the exit code for it returned.
fn run<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> Result<T, ExitCode> {
    let rt = runtime().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })?;
    rt.block_on(work).map_err(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// The tokio runtime: one thread per core this process may run on; on a single core (a
/// container limited to one CPU, or `taskset -c 0`) a current-thread runtime, which skips the
/// work-stealing scheduler's cross-thread wake-ups (measured: about 10 % more signed
/// certificates per second for Sentry on one core).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
}

fn sentry(args: SentryCli) -> ExitCode {
    init_logs(&args.log_level, args.log_as_json);
    // Crash tests only: abort at a point of a CA rotation step, as kill -9 would.
    let crash_at = match std::env::var("SIGIL_CRASH_AT") {
        Ok(v) => match v.parse() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: SIGIL_CRASH_AT: {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => None,
    };
    let (jwt, oidc) = match jwt_and_oidc(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = SentryOptions {
        crash_at,
        jwt,
        oidc,
        config: args.config,
        issuer_credentials: args.issuer_credentials,
        ca_filename: args.issuer_ca_filename,
        cert_filename: args.issuer_certificate_filename,
        key_filename: args.issuer_key_filename,
        trust_domain: args.trust_domain,
        listen_address: args.listen_address,
        port: args.port,
        healthz: Some((args.healthz_listen_address, args.healthz_port)),
        metrics: args
            .enable_metrics
            .then_some((args.metrics_listen_address, args.metrics_port)),
        limits: sigil_host::net::admission::Limits {
            max_connections: args.max_connections,
            per_address: args.max_connections_per_ip,
            idle: args.connection_idle_timeout,
            ..sigil_host::sentry::default_limits()
        },
        generation: sigil_host::ca::Generation {
            root: args.root_ttl,
            issuer: args.issuer_ttl,
            algorithm: key_algorithm(&args.key_algorithm),
        },
        kubernetes: (args.mode == "kubernetes").then_some(KubeOptions {
            api_server: args.kube_api_server,
            ca_file: args.kube_ca_file,
            token_file: args.kube_token_file,
        }),
        ..SentryOptions::default()
    };
    match run(async {
        let started = sigil_host::sentry::app::start(&opts).await?;
        for line in &started.report {
            println!("sentry: {line}");
        }
        sigil_host::sentry::run(
            started.sentry,
            started.listeners,
            Some(started.store),
            shutdown_signal(),
        )
        .await?;
        anyhow::Ok(())
    }) {
        Ok(()) => {
            println!("sentry: stopped");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn relay(args: RelayCli) -> ExitCode {
    use sigil_host::relay::{self, RelayOptions};
    init_logs(&args.log_level, false);
    let opts = RelayOptions {
        sentry_id: args.sentry_id.unwrap_or_else(|| {
            sigil_host::dapr::sentry_id(
                &args.control_plane_trust_domain,
                &args.control_plane_namespace,
            )
        }),
        sentry: args.sentry,
        anchors_file: args.anchors,
        trust_domain: args.trust_domain,
        peers: args.peer,
        token_file: args.token_file,
        app_id: args.app_id,
        namespace: args.namespace,
    };
    if let Err(e) = opts.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(async move {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let serial = tokio::select! {
            // The relay's errors name their cause already: printed once, not as a chain.
            s = relay::connect_serial(&args.serial, Duration::from_secs(30)) => {
                s.map_err(|e| anyhow::anyhow!("{e}"))?
            }
            () = &mut shutdown => return Ok(()),
        };
        println!(
            "relay: connected serial={} sentry={} peer={}",
            args.serial,
            opts.sentry,
            opts.peers.join(",")
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        relay::run(serial, opts, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }) {
        Ok(()) => {
            println!("relay: stopped");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn sign(args: SignCli) -> ExitCode {
    let req = commands::SignArgs {
        sentry: args.sentry,
        anchors: args.anchors,
        id: args.id,
        namespace: args.namespace,
        token_validator: args.token_validator.as_deref().map(|v| match v {
            "insecure" => TokenValidator::Insecure,
            "kubernetes" => TokenValidator::Kubernetes,
            "jwks" => TokenValidator::Jwks,
            _ => TokenValidator::Unknown,
        }),
        token_file: args.token_file,
        trust_domain: args.trust_domain,
        sentry_id: sigil_host::dapr::sentry_id(
            &args.control_plane_trust_domain,
            &args.control_plane_namespace,
        ),
        out_dir: args.out_dir,
        force: args.force,
        jwt_audiences: args.jwt_audience,
    };
    match run(commands::sign(&req)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
