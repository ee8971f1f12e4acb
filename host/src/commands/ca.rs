//! `sigil ca`: an operator's tools for a credentials directory (`ca.crt`, `issuer.crt`,
//! `issuer.key`), stopped or in use by a running Sentry (which picks changes up by hot
//! reload): `init` makes a root and an issuer, `inspect` explains what is there, `expiry`
//! answers for scripts (as `dapr mtls expiry`), `export` prints the trust bundle to distribute.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sigil_core::cert::Certificate;

use crate::ca::store::{self, StorePaths};
use crate::ca::{Credentials, Generation};
use crate::pki;

/// How long before a notAfter `expiry` starts warning (Dapr's Sentry warns from 30 days).
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a `sigil ca` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// `init` found credentials already there; it never writes over them.
    #[error("{0}: credentials already exist; `sigil ca init` never writes over them")]
    Exists(String),
    /// The store refused (I/O, a partial set, invalid credentials).
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A file could not be read.
    #[error(transparent)]
    Input(#[from] pki::InputError),
}

fn system_time(t: sigil_core::UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `in 29d 3h` or `expired 2h ago`, to the hour.
fn left(until: SystemTime, now: SystemTime) -> String {
    let round = |d: Duration| Duration::from_secs(d.as_secs() / 3600 * 3600);
    match until.duration_since(now) {
        Ok(d) if d.as_secs() < 3600 => format!("in {}s", d.as_secs()),
        Ok(d) => format!("in {}", humantime::format_duration(round(d))),
        Err(e) => format!(
            "expired {} ago",
            humantime::format_duration(round(e.duration()))
        ),
    }
}

/// `init`: makes a root and an issuer in `paths` (trust domain `trust_domain`, the issuer named
/// for Sentry's ID `sentry_id`), as Sentry would on first start, crash-safe and under the
/// store's lock. Returns the `inspect` text of what it made.
///
/// # Errors
///
/// [`CaError::Exists`] if any of the three files is there (nothing is written), or the
/// store's error.
pub fn init(
    paths: &StorePaths,
    trust_domain: &str,
    sentry_id: &str,
    generation: Generation,
    now: SystemTime,
) -> Result<String, CaError> {
    if let Some(p) = [&paths.ca, &paths.issuer_cert, &paths.issuer_key]
        .into_iter()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
    {
        return Err(CaError::Exists(p.display().to_string()));
    }
    store::load_or_generate(
        paths,
        trust_domain,
        sentry_id,
        Duration::ZERO,
        generation,
        now,
    )?;
    inspect(paths, now)
}

/// The SPIFFE ID an issuer was made for: its subject's `O=` when that is a SPIFFE ID (Dapr's
/// and Sigil's issuers), else Sentry's ID in the root's trust domain.
fn sentry_id_of(issuer: &[u8], anchors: &[Vec<u8>]) -> String {
    let from_issuer = Certificate::parse(issuer)
        .ok()
        .map(|c| pki::name_to_string(c.subject()))
        .and_then(|n| n.strip_prefix("O=").map(str::to_owned))
        .filter(|o| o.starts_with("spiffe://"));
    from_issuer.unwrap_or_else(|| {
        let td = anchors
            .first()
            .and_then(|a| Certificate::parse(a).ok())
            .map(|c| pki::name_to_string(c.subject()))
            .and_then(|n| n.strip_prefix("O=").map(str::to_owned))
            .unwrap_or_else(|| "localhost".to_owned());
        crate::dapr::sentry_id(&td, "default")
    })
}

/// One certificate's lines: subject, key, validity and time left.
fn describe(out: &mut String, der: &[u8], now: SystemTime) {
    let Ok(c) = Certificate::parse(der) else {
        let _ = writeln!(out, "    (does not parse)");
        return;
    };
    let (nb, na) = (system_time(c.not_before()), system_time(c.not_after()));
    let _ = writeln!(out, "    subject:    {}", pki::name_to_string(c.subject()));
    let _ = writeln!(
        out,
        "    key:        {}",
        c.public_key()
            .map_or_else(|e| format!("unsupported ({e})"), |k| k.kind().to_owned())
    );
    let _ = writeln!(out, "    not before: {}", rfc3339(nb));
    let _ = writeln!(out, "    not after:  {} ({})", rfc3339(na), left(na, now));
}

/// `inspect`: what is in `paths` and what it means: each root, the issuer (which signs), the
/// key, whether the set validates as Sentry would load it, and what to do when.
///
/// # Errors
///
/// [`CaError::Input`] if a file cannot be read or holds no certificate.
pub fn inspect(paths: &StorePaths, now: SystemTime) -> Result<String, CaError> {
    let anchors = pki::read_pem_blocks(&paths.ca, sigil_core::pem::Label::Certificate)?;
    let issuer = pki::read_pem_blocks(&paths.issuer_cert, sigil_core::pem::Label::Certificate)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| pki::InputError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let mut out = String::new();
    let _ = writeln!(out, "credentials in {}", paths.dir.display());
    let _ = writeln!(out, "  roots ({}, {}):", paths.ca.display(), anchors.len());
    for (i, der) in anchors.iter().enumerate() {
        let _ = writeln!(out, "  root #{}", i + 1);
        describe(&mut out, der, now);
    }
    let _ = writeln!(
        out,
        "  issuer ({}; signs every workload certificate now):",
        paths.issuer_cert.display()
    );
    if let Some(first) = issuer.first() {
        describe(&mut out, first, now);
    }
    let sentry_id = sentry_id_of(issuer.first().map_or(&[][..], Vec::as_slice), &anchors);
    let _ = writeln!(out, "    for Sentry: {sentry_id}");
    let state = Credentials::from_pem(
        &read(&paths.ca)?,
        &read(&paths.issuer_cert)?,
        &zeroize::Zeroizing::new(read(&paths.issuer_key)?),
        now,
        &sentry_id,
    );
    match &state {
        Ok(creds) => {
            let na = creds.issuer_not_after();
            let _ = writeln!(out, "  state: valid (Sentry loads this set)");
            let warn_from = na.checked_sub(WARN_BEFORE).unwrap_or(na);
            let _ = writeln!(
                out,
                "  next: replace the root and issuer before {} (Sentry warns from {}; \
                 `sigil ca expiry` says when)",
                rfc3339(na),
                rfc3339(warn_from)
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  state: INVALID: {e}");
        }
    }
    Ok(out)
}

/// What `expiry` found: one line for people and scripts, and the exit status (0: more than
/// [`WARN_BEFORE`] left on both the issuer and the first root; 1: less; 2: expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The line.
    pub line: String,
    /// The exit status.
    pub status: u8,
}

/// `expiry`: when the issuer and the root expire, as `dapr mtls expiry` reports the root.
///
/// # Errors
///
/// [`CaError::Input`] if a file cannot be read.
pub fn expiry(paths: &StorePaths, now: SystemTime) -> Result<Expiry, CaError> {
    let first = |p: &Path| -> Result<SystemTime, CaError> {
        let ders = pki::read_pem_blocks(p, sigil_core::pem::Label::Certificate)?;
        let end = ders
            .first()
            .and_then(|d| Certificate::parse(d).ok())
            .map(|c| system_time(c.not_after()))
            .ok_or_else(|| pki::InputError::NoBlock {
                path: p.to_owned(),
                label: "CERTIFICATE (parsable)",
            })?;
        Ok(end)
    };
    let (issuer, root) = (first(&paths.issuer_cert)?, first(&paths.ca)?);
    let soonest = issuer.min(root);
    let status = if soonest <= now {
        2
    } else if soonest.duration_since(now).unwrap_or_default() < WARN_BEFORE {
        1
    } else {
        0
    };
    let line = format!(
        "expiry: issuer {} ({}), root {} ({}){}",
        rfc3339(issuer),
        left(issuer, now),
        rfc3339(root),
        left(root, now),
        match status {
            0 => "",
            1 => ": renew within 30 days",
            _ => ": EXPIRED",
        }
    );
    Ok(Expiry { line, status })
}

/// `export`: the trust bundle (`ca.crt`'s certificates) as PEM, to give to the holders.
///
/// # Errors
///
/// [`CaError::Input`] if `ca.crt` cannot be read or holds no certificate.
pub fn export(paths: &StorePaths) -> Result<String, CaError> {
    let anchors = pki::read_pem_blocks(&paths.ca, sigil_core::pem::Label::Certificate)?;
    Ok(anchors
        .iter()
        .map(|d| pki::to_pem(sigil_core::pem::Label::Certificate, d))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn init_inspect_expiry_export_on_a_fresh_directory() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StorePaths::in_dir(dir.path());
        let id = crate::dapr::sentry_id("cluster.local", "dapr-system");
        let now = SystemTime::now();
        let generation = Generation {
            root: Duration::from_secs(90 * 86_400),
            issuer: Duration::from_secs(20 * 86_400),
            algorithm: crate::key::KeyAlgorithm::Ed25519,
        };
        let text = init(&paths, "cluster.local", &id, generation, now).unwrap();
        assert!(text.contains("state: valid"), "{text}");
        assert!(text.contains("Ed25519"), "{text}");
        assert!(text.contains(&id), "{text}");
        assert!(matches!(
            init(&paths, "cluster.local", &id, generation, now),
            Err(CaError::Exists(_))
        ));
        // The issuer has 20 days: within the 30-day warning.
        let e = expiry(&paths, now).unwrap();
        assert_eq!(e.status, 1, "{}", e.line);
        assert!(e.line.contains("renew within 30 days"), "{}", e.line);
        let later = now + Duration::from_secs(21 * 86_400);
        assert_eq!(expiry(&paths, later).unwrap().status, 2);
        assert!(inspect(&paths, later).unwrap().contains("INVALID"));
        let bundle = export(&paths).unwrap();
        assert_eq!(
            crate::pki::pem_certificates(bundle.as_bytes()).unwrap(),
            crate::pki::read_pem_blocks(&paths.ca, sigil_core::pem::Label::Certificate).unwrap()
        );
    }
}
