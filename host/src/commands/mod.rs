//! What each `sigil` subcommand does. The binary parses arguments into these types and maps
//! the outcome to an exit code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_core::cert::Certificate;
use sigil_core::chain::{self, PeerName, Usage};
use sigil_core::csr;
use sigil_core::key::{SoftwareKey, PKCS8_DER_LEN};
use sigil_core::pem::Label;
use sigil_core::spiffe::{SpiffeId, TrustDomain};
use sigil_core::UnixTime;

use crate::pki::{self, InputError};
use crate::signature::RingSignatureVerifier;

pub mod ca;

/// Errors of `sigil csr new`.
#[derive(Debug, thiserror::Error)]
pub enum CsrNewError {
    /// A file problem.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The SPIFFE ID given is not valid.
    #[error("--spiffe-id: {0}")]
    SpiffeId(sigil_core::spiffe::Error),
    /// Building the request failed.
    #[error("building the CSR: {0}")]
    Csr(csr::Error),
}

/// Makes a new P-256 key (PKCS#8 PEM, mode 0600) at `key_path` and its CSR (PEM) at
/// `csr_path`. Neither file is replaced unless `force`; both are checked before anything is
/// written. Returns the CSR's PEM.
///
/// # Errors
///
/// [`CsrNewError`]; on error no file has been replaced.
pub fn csr_new(
    key_path: &Path,
    csr_path: &Path,
    spiffe_id: Option<&str>,
    force: bool,
) -> Result<String, CsrNewError> {
    let id = spiffe_id
        .map(SpiffeId::parse)
        .transpose()
        .map_err(CsrNewError::SpiffeId)?;
    if !force {
        for p in [key_path, csr_path] {
            if p.exists() {
                return Err(InputError::Exists(p.to_owned()).into());
            }
        }
    }
    let mut key = SoftwareKey::generate(&mut rand_core::OsRng);
    let builder = id.map_or_else(csr::Builder::new, |id| {
        csr::Builder::new().with_spiffe_id(id)
    });
    let mut buf = vec![0u8; builder.buffer_len(sigil_core::crypto::Signer::public_key(&key))];
    let der = builder
        .build(&mut key, &mut buf)
        .map_err(CsrNewError::Csr)?;
    let csr_pem = pki::to_pem(Label::CertificateRequest, der);

    let mut key_der = [0u8; PKCS8_DER_LEN];
    let key_der = key.to_pkcs8_der(&mut key_der).map_err(|_| {
        CsrNewError::Csr(csr::Error::BufferTooSmall {
            needed: PKCS8_DER_LEN,
        })
    })?;
    let key_pem = Zeroizing(pki::to_pem(Label::PrivateKey, key_der));
    pki::write_atomic(key_path, key_pem.as_bytes(), 0o600, force)?;
    pki::write_atomic(csr_path, csr_pem.as_bytes(), 0o644, force)?;
    Ok(csr_pem)
}

/// Holds secret text; overwritten with zeros when dropped.
struct Zeroizing(String);

impl std::ops::Deref for Zeroizing {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl Drop for Zeroizing {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        // Keep the writes from being optimised away as dead stores.
        std::hint::black_box(&bytes);
    }
}

/// The name `sigil cert verify` checks the leaf for.
#[derive(Clone, Debug)]
pub enum ExpectedName {
    /// No name check.
    None,
    /// Exactly this SPIFFE ID.
    SpiffeId(String),
    /// Any SPIFFE ID in this trust domain.
    TrustDomain(String),
    /// This DNS name.
    Dns(String),
    /// This IP address.
    Ip(std::net::IpAddr),
}

/// Arguments of `sigil cert verify`.
#[derive(Clone, Debug)]
pub struct VerifyArgs {
    /// PEM file of trust anchors.
    pub anchors: PathBuf,
    /// PEM file of untrusted intermediates.
    pub intermediates: Option<PathBuf>,
    /// PEM file whose first certificate is the leaf.
    pub leaf: PathBuf,
    /// Time to validate at.
    pub at: UnixTime,
    /// Allowed clock skew.
    pub skew: Duration,
    /// Usage asked for.
    pub usage: Usage,
    /// Name asked for.
    pub name: ExpectedName,
    /// Most intermediates in a path.
    pub max_depth: usize,
}

/// The outcome of `sigil cert verify`.
#[derive(Debug)]
pub enum VerifyOutcome {
    /// Valid: the path, described.
    Valid(String),
    /// Invalid: the reason.
    Invalid(String),
}

/// Errors that make `sigil cert verify` unable to decide.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file problem.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The trust anchors are unusable.
    #[error(transparent)]
    Anchors(#[from] crate::trust::TrustError),
    /// The expected name given is not valid.
    #[error("{0}")]
    BadName(String),
    /// Too many intermediates.
    #[error("{0}")]
    TooMany(String),
}

/// Validates the leaf in `args.leaf` as `sigil cert verify` does.
///
/// # Errors
///
/// [`VerifyError`] when the input is unusable; an invalid chain is `Ok(Invalid)`.
pub fn cert_verify(args: &VerifyArgs) -> Result<VerifyOutcome, VerifyError> {
    // Anchors the core cannot use are skipped with a warning (the host's one owner of trust,
    // trust::Anchors); a file with none usable, or more than it holds, is unusable input. Intermediates that do
    // not parse are left to path building, which skips them. A leaf whose DER is garbage is
    // unusable; one that parses as DER but breaks a rule of X.509 (an unknown critical
    // extension, say) is invalid, and path validation says so.
    let anchors = crate::trust::Anchors::read(&args.anchors)?;
    let intermediates_der = match &args.intermediates {
        Some(p) => pki::read_pem_blocks(p, Label::Certificate)?,
        None => Vec::new(),
    };
    let leaf_der = pki::read_pem_blocks(&args.leaf, Label::Certificate)?.swap_remove(0);
    if let Err(source @ sigil_core::cert::Error::Der(_)) = Certificate::parse(&leaf_der) {
        return Err(InputError::Certificate {
            path: args.leaf.clone(),
            index: 0,
            source,
        }
        .into());
    }

    let warnings: String = anchors
        .skipped()
        .iter()
        .map(|s| format!("warning: {}: {s}\n", args.anchors.display()))
        .collect();
    let ints: Vec<&[u8]> = intermediates_der.iter().map(Vec::as_slice).collect();
    if ints.len() > chain::MAX_INTERMEDIATES {
        return Err(VerifyError::TooMany(format!(
            "at most {} intermediates are accepted, {} given",
            chain::MAX_INTERMEDIATES,
            ints.len()
        )));
    }

    let ip_bytes;
    let peer = match &args.name {
        ExpectedName::None => PeerName::Unchecked,
        ExpectedName::SpiffeId(id) => PeerName::SpiffeId(
            SpiffeId::parse(id).map_err(|e| VerifyError::BadName(format!("--spiffe-id: {e}")))?,
        ),
        ExpectedName::TrustDomain(td) => PeerName::TrustDomain(
            TrustDomain::parse(td)
                .map_err(|e| VerifyError::BadName(format!("--trust-domain: {e}")))?,
        ),
        ExpectedName::Dns(name) => {
            if !sigil_core::names::is_valid_reference_dns(name.strip_suffix('.').unwrap_or(name)) {
                return Err(VerifyError::BadName(format!(
                    "--dns: {name:?} is not a valid DNS name"
                )));
            }
            PeerName::Dns(name)
        }
        ExpectedName::Ip(ip) => {
            ip_bytes = match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            PeerName::Ip(&ip_bytes)
        }
    };
    let policy = crate::trust::Policy {
        skew: args.skew,
        peer,
        max_depth: args.max_depth,
        ..crate::trust::Policy::new(
            args.usage,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(args.at.as_secs()),
        )
    };
    match anchors.verify(&leaf_der, &ints, &policy, &RingSignatureVerifier) {
        Ok(found) => {
            let mut s = format!(
                "{warnings}valid at {} (usage {}, skew {}s)\n",
                args.at,
                args.usage,
                args.skew.as_secs()
            );
            let leaf = Certificate::parse(&leaf_der)
                .map(|c| pki::summary(&c))
                .unwrap_or_default();
            let _ = writeln!(s, "  leaf: {leaf}");
            for &j in found.intermediates() {
                let c = ints.get(j).and_then(|d| Certificate::parse(d).ok());
                let _ = writeln!(
                    s,
                    "  intermediate #{j}: {}",
                    c.map(|c| pki::summary(&c)).unwrap_or_default()
                );
            }
            // Numbered as in the file, skipped anchors included.
            let summary = anchors
                .ders()
                .get(found.anchor())
                .and_then(|d| Certificate::parse(d).ok())
                .map(|c| pki::summary(&c))
                .unwrap_or_default();
            let index = anchors.index_given(found.anchor());
            let _ = writeln!(s, "  trust anchor #{index}: {summary}");
            Ok(VerifyOutcome::Valid(s))
        }
        Err(e) => {
            let mut reason = format!("{warnings}invalid: {e}");
            if let chain::ErrorKind::PeerNameMismatch(_) = e.kind {
                // Say what the leaf carries, next to what was asked for.
                if let Ok(leaf) = Certificate::parse(&leaf_der) {
                    let names = leaf
                        .subject_alt_names()
                        .map(|n| pki::describe_names(n.iter()));
                    let _ = write!(
                        reason,
                        "\n  expected: {}\n  leaf has: {}",
                        describe_expected(&args.name),
                        names.map_or_else(|| "(no subjectAltName)".to_owned(), |n| n.join(", "))
                    );
                }
            }
            Ok(VerifyOutcome::Invalid(reason))
        }
    }
}

fn describe_expected(name: &ExpectedName) -> String {
    match name {
        ExpectedName::None => "(nothing)".to_owned(),
        ExpectedName::SpiffeId(id) => format!("URI:{id}"),
        ExpectedName::TrustDomain(td) => format!("a SPIFFE ID in trust domain {td}"),
        ExpectedName::Dns(d) => format!("DNS:{d}"),
        ExpectedName::Ip(ip) => format!("IP:{ip}"),
    }
}

/// Describes every certificate in the PEM file at `path`.
///
/// # Errors
///
/// [`InputError`] if the file cannot be read or holds no certificate. Certificates that do not
/// parse are described as such.
pub fn cert_inspect(path: &Path) -> Result<String, InputError> {
    let certs = pki::read_pem_blocks(path, Label::Certificate)?;
    let mut s = String::new();
    for (i, der) in certs.iter().enumerate() {
        let _ = writeln!(s, "certificate #{i} ({} bytes DER)", der.len());
        s.push_str(&pki::describe(der));
    }
    Ok(s)
}

/// What `sigil sign` needs.
#[derive(Clone, Debug)]
pub struct SignArgs {
    /// Sentry's `host:port`.
    pub sentry: String,
    /// PEM trust anchors.
    pub anchors: PathBuf,
    /// App ID.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Token file (selects the jwks validator unless `token_validator` says otherwise).
    pub token_file: Option<PathBuf>,
    /// The validator asked for (`None`: jwks with a token file, else Sentry's default).
    pub token_validator: Option<crate::pb::sign_certificate_request::TokenValidator>,
    /// Trust domain to ask for ("" for workloads).
    pub trust_domain: String,
    /// Sentry's expected SPIFFE ID.
    pub sentry_id: String,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Replace an existing key.pem.
    pub force: bool,
    /// JWT-SVID audiences to ask for (`--jwt-audience`): the token goes to `jwt.txt`.
    pub jwt_audiences: Vec<String>,
}

/// `sigil sign`: a fresh P-256 key and an empty CSR (as Dapr's sidecar sends), signed by
/// Sentry, validated, and written as `key.pem` (0600), `cert.pem` (leaf and issuer chain) and
/// `ca.pem` (the trust anchors the chain validated against). Returns a summary.
///
/// # Errors
///
/// Why nothing (or, for an existing key without `force`, nothing new) was written.
pub async fn sign(args: &SignArgs) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use sigil_core::crypto::Signer as _;
    let anchors = crate::trust::Anchors::read(&args.anchors)?;
    let skipped = anchors.skipped().to_vec();
    let key_path = args.out_dir.join("key.pem");
    if key_path.exists() && !args.force {
        anyhow::bail!("{} exists; pass --force to replace it", key_path.display());
    }
    let token = match &args.token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading token file {}", p.display()))?
            .trim()
            .to_owned(),
        None => String::new(),
    };
    let mut key = SoftwareKey::generate(&mut rand_core::OsRng);
    let mut buf = [0u8; 512];
    let csr = sigil_core::csr::Builder::new()
        .build(&mut key, &mut buf)
        .map_err(|e| anyhow::anyhow!("building the CSR: {e}"))?
        .to_vec();
    let target = crate::client::SentryTarget {
        address: args.sentry.clone(),
        anchors: std::sync::Arc::new(anchors.clone()),
        sentry_id: args.sentry_id.clone(),
    };
    let mut client = crate::client::SentryClient::connect(target).await?;
    let req = crate::client::SignRequest {
        id: args.id.clone(),
        namespace: args.namespace.clone(),
        token,
        trust_domain: args.trust_domain.clone(),
        token_validator: args.token_validator.map_or_else(
            || crate::client::token_validator(args.token_file.is_some()),
            i32::from,
        ),
        csr_der: csr,
        jwt_audiences: args.jwt_audiences.clone(),
    };
    let signed = client.sign(&req, key.public_key()).await?;
    // The anchors written are the ones the chain validated against: Sentry's current bundle
    // when the chain also validates against it, else the configured ones.
    let bundle = if !signed.trust_bundle.is_empty()
        && crate::client::validate_identity(
            &signed.chain,
            &signed.trust_bundle,
            key.public_key(),
            std::time::SystemTime::now(),
        )
        .is_ok()
    {
        signed.trust_bundle.clone()
    } else {
        anchors.ders().to_vec()
    };
    crate::client::check_jwt_svids(
        &signed,
        &args.jwt_audiences,
        std::time::SystemTime::now(),
        std::time::Duration::from_secs(300),
    )?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut der = [0u8; sigil_core::key::PKCS8_DER_LEN];
    let pkcs8 = key
        .to_pkcs8_der(&mut der)
        .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
    let key_pem = zeroize::Zeroizing::new(pki::to_pem(Label::PrivateKey, pkcs8));
    let pem_of = |ders: &[Vec<u8>]| -> String {
        ders.iter()
            .map(|d| pki::to_pem(Label::Certificate, d))
            .collect()
    };
    // The key first: it is the only write that can be refused, and a refusal then leaves
    // the old key, certificate and anchors together.
    pki::write_atomic(&key_path, key_pem.as_bytes(), 0o600, args.force)?;
    pki::write_atomic(
        &args.out_dir.join("cert.pem"),
        pem_of(&signed.chain).as_bytes(),
        0o644,
        true,
    )?;
    pki::write_atomic(
        &args.out_dir.join("ca.pem"),
        pem_of(&bundle).as_bytes(),
        0o644,
        true,
    )?;
    // Bearer tokens: 0600, as the key. Tokens of an earlier run that this answer does not
    // replace are removed, so no stale token sits beside the new key.
    let mut jwt_note = String::new();
    for (name, now_present) in [
        ("jwt.txt", signed.jwt.is_some()),
        (
            "jwt-audiences.json",
            signed.jwt.is_some() && !signed.per_audience_jwts.is_empty(),
        ),
    ] {
        let path = args.out_dir.join(name);
        if !now_present && path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
    }
    if let Some(jwt) = &signed.jwt {
        pki::write_atomic(&args.out_dir.join("jwt.txt"), jwt.as_bytes(), 0o600, true)?;
        jwt_note = ", jwt.txt (0600)".to_owned();
        if !signed.per_audience_jwts.is_empty() {
            let map = serde_json::to_string_pretty(&signed.per_audience_jwts)
                .context("encoding the per-audience JWTs")?;
            pki::write_atomic(
                &args.out_dir.join("jwt-audiences.json"),
                map.as_bytes(),
                0o600,
                true,
            )?;
            jwt_note.push_str(", jwt-audiences.json (0600)");
        }
    }
    let leaf = signed
        .chain
        .first()
        .map(|d| Certificate::parse(d))
        .ok_or_else(|| anyhow::anyhow!("empty chain"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = leaf
        .spiffe_ids()
        .next()
        .map_or_else(String::new, |i| i.as_str().to_owned());
    let warnings: String = skipped
        .iter()
        .map(|s| format!("\nwarning: {}: {s}", args.anchors.display()))
        .collect();
    Ok(format!(
        "{id}: valid until {}; wrote {} (0600), cert.pem ({} certificates), ca.pem ({} anchors){jwt_note}{warnings}",
        humantime::format_rfc3339_seconds(signed.valid_until),
        key_path.display(),
        signed.chain.len(),
        bundle.len()
    ))
}
