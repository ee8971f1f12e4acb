//! `sigil ca`: an operator's tools for a credentials directory (`ca.crt`, `issuer.crt`,
//! `issuer.key`), stopped or in use by a running Sentry (which picks changes up by hot
//! reload): `init` makes a root and an issuer, `inspect` explains what is there, `expiry`
//! answers for scripts (as `dapr mtls expiry`), `export` prints the trust bundle to distribute,
//! and `rotate prepare | activate | retire` replaces the root and issuer by hand in the three
//! steps of [`crate::ca::schedule`], each refusing (unless forced) when it would break a
//! holder:
//!
//! - **prepare**: a new root and issuer are made and staged in `<dir>/.sigil-next/` (key 0600)
//!   and the new root is appended to `ca.crt` (published: Sentry sends it in every answer and
//!   sidecars adopt it) while the old issuer still signs;
//! - **activate**: refused until one workload TTL plus the skew after publishing (so every
//!   holder has renewed and holds the new root); the staged issuer and key replace the live
//!   ones and `ca.crt` lists the new root first; the root the old issuer chains to is recorded
//!   in `<dir>/.sigil-old/` (other roots the operator keeps in `ca.crt` stay);
//! - **retire**: refused until one workload TTL plus the skew after activation (no
//!   certificate from the old issuer outlives that); the old root leaves `ca.crt`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sigil_core::cert::Certificate;

use crate::ca::store::{self, StorePaths};
use crate::ca::{Credentials, Generation};
use crate::pki;

const NEXT: &str = ".sigil-next";
const OLD: &str = ".sigil-old";
const STAMP: &str = "since";

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
    /// A rotation step is out of order or too early (say `--force` to do it anyway).
    #[error("{0}")]
    Refused(String),
    /// Making the new pair failed.
    #[error(transparent)]
    Credentials(#[from] crate::ca::CredentialsError),
}

/// When a rotation step was taken (seconds since the epoch in `<dir>/<step dir>/since`).
fn stamped(dir: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(dir.join(STAMP)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(text.trim().parse().ok()?))
}

fn stamp(dir: &Path, at: SystemTime) -> Result<(), CaError> {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    pki::write_atomic(&dir.join(STAMP), secs.to_string().as_bytes(), 0o644, true)?;
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|source| {
        CaError::Input(pki::InputError::Write {
            path: dir.to_owned(),
            source,
        })
    })
}

fn remove_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::remove_dir_all(dir).map_err(|source| {
        CaError::Input(pki::InputError::Write {
            path: dir.to_owned(),
            source,
        })
    })
}

/// Refuses a step taken before one workload TTL plus the skew after `since` (the step it
/// waits for), unless `force`; `why(ready)` says what a holder would suffer.
fn due(
    since: SystemTime,
    holders: Holders,
    force: bool,
    now: SystemTime,
    why: impl FnOnce(SystemTime) -> String,
) -> Result<(), CaError> {
    let ready = since + holders.workload_ttl + holders.skew;
    if now < ready && !force {
        return Err(CaError::Refused(format!(
            "too early: {} (--force to do it anyway)",
            why(ready)
        )));
    }
    Ok(())
}

fn read_text(p: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(p).map_err(|source| {
        CaError::Input(pki::InputError::Read {
            path: p.to_owned(),
            source,
        })
    })
}

/// The certificates of a PEM text, DER.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    pki::pem_certificates(pem.as_bytes()).unwrap_or_default()
}

fn pem_of(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| pki::to_pem(sigil_core::pem::Label::Certificate, d))
        .collect()
}

/// What holders need for the timing of `activate` and `retire`.
#[derive(Clone, Copy, Debug)]
pub struct Holders {
    /// The workload certificate TTL (every holder renews within it).
    pub workload_ttl: Duration,
    /// The clock skew allowed.
    pub skew: Duration,
}

/// `rotate prepare`: makes the next root and issuer (lifetimes and key type from
/// `generation`, the trust domain and Sentry's ID of the current set), stages them and
/// publishes the new root in `ca.crt`.
///
/// # Errors
///
/// [`CaError::Refused`] if a rotation is already under way.
pub fn rotate_prepare(
    paths: &StorePaths,
    generation: Generation,
    now: SystemTime,
) -> Result<String, CaError> {
    let (next, old) = (paths.dir.join(NEXT), paths.dir.join(OLD));
    if next.exists() || old.exists() {
        return Err(CaError::Refused(format!(
            "a rotation is under way ({} or {} exists): activate or retire it first",
            next.display(),
            old.display()
        )));
    }
    let ca = read_text(&paths.ca)?;
    let issuer = pki::read_pem_blocks(&paths.issuer_cert, sigil_core::pem::Label::Certificate)?;
    let anchors = ders(&ca);
    let sentry_id = sentry_id_of(issuer.first().map_or(&[][..], Vec::as_slice), &anchors);
    let trust_domain = sentry_id
        .strip_prefix("spiffe://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("localhost")
        .to_owned();
    let (_, pem) =
        Credentials::generate_with(&trust_domain, &sentry_id, now, Duration::ZERO, generation)?;
    mkdir(&next)?;
    pki::write_atomic(&next.join("issuer.key"), pem.key.as_bytes(), 0o600, true)?;
    pki::write_atomic(&next.join("issuer.crt"), pem.issuer.as_bytes(), 0o644, true)?;
    pki::write_atomic(&next.join("ca.crt"), pem.ca.as_bytes(), 0o644, true)?;
    stamp(&next, now)?;
    // Published last: Sentry's reload sees the old issuer under both roots.
    pki::write_atomic(
        &paths.ca,
        format!("{}{}", pem_of(&anchors), pem.ca).as_bytes(),
        0o644,
        true,
    )?;
    Ok(format!(
        "prepared: a new root is published in {} beside the old one; the old issuer still signs. \
         Activate once every holder has renewed (one workload TTL plus the skew from now).\n",
        paths.ca.display()
    ))
}

/// `rotate activate`: the staged issuer signs from now on. Refused (unless `force`) before one
/// workload TTL plus the skew has passed since the new root was published.
///
/// # Errors
///
/// [`CaError::Refused`] if nothing is prepared or it is too early.
pub fn rotate_activate(
    paths: &StorePaths,
    holders: Holders,
    force: bool,
    now: SystemTime,
) -> Result<String, CaError> {
    let next = paths.dir.join(NEXT);
    let published = stamped(&next).ok_or_else(|| {
        CaError::Refused("nothing is prepared: run `sigil ca rotate prepare` first".to_owned())
    })?;
    due(published, holders, force, now, |ready| {
        format!(
            "the new root was published at {}; holders that have not renewed since would \
             refuse certificates from the new issuer until {}",
            rfc3339(published),
            rfc3339(ready)
        )
    })?;
    let new_root = ders(&read_text(&next.join("ca.crt"))?);
    let current = ders(&read_text(&paths.ca)?);
    // The root the outgoing issuer chains to (by name): the one to retire later. Other roots
    // the operator keeps in ca.crt stay.
    let outgoing = pki::read_pem_blocks(&paths.issuer_cert, sigil_core::pem::Label::Certificate)?;
    let top = outgoing
        .last()
        .and_then(|d| Certificate::parse(d).ok())
        .map(|c| c.issuer().to_vec())
        .unwrap_or_default();
    let retiring: Vec<Vec<u8>> = current
        .iter()
        .filter(|d| !new_root.contains(d))
        .filter(|d| Certificate::parse(d).is_ok_and(|c| c.subject() == top.as_slice()))
        .cloned()
        .collect();
    let others: Vec<Vec<u8>> = current
        .iter()
        .filter(|d| !new_root.contains(d) && !retiring.contains(d))
        .cloned()
        .collect();
    let old = paths.dir.join(OLD);
    mkdir(&old)?;
    pki::write_atomic(
        &old.join("ca.crt"),
        pem_of(&retiring).as_bytes(),
        0o644,
        true,
    )?;
    stamp(&old, now)?;
    // The key, then the certificate that matches it, then the bundle with the new root first:
    // a reload in between sees a mismatched set, refuses it and keeps the old one serving.
    let key = zeroize::Zeroizing::new(read_text(&next.join("issuer.key"))?);
    pki::write_atomic(&paths.issuer_key, key.as_bytes(), 0o600, true)?;
    let issuer = read_text(&next.join("issuer.crt"))?;
    pki::write_atomic(&paths.issuer_cert, issuer.as_bytes(), 0o644, true)?;
    let bundle = [new_root, retiring, others].concat();
    pki::write_atomic(&paths.ca, pem_of(&bundle).as_bytes(), 0o644, true)?;
    remove_dir(&next)?;
    Ok(
        "activated: the new issuer signs; retire the old root once no certificate from the old \
        issuer is left (one workload TTL plus the skew from now).\n"
            .to_owned(),
    )
}

/// `rotate retire`: the old root leaves `ca.crt`. Refused (unless `force`) before one workload
/// TTL plus the skew has passed since activation.
///
/// # Errors
///
/// [`CaError::Refused`] if nothing was activated or it is too early.
pub fn rotate_retire(
    paths: &StorePaths,
    holders: Holders,
    force: bool,
    now: SystemTime,
) -> Result<String, CaError> {
    let old = paths.dir.join(OLD);
    let activated = stamped(&old).ok_or_else(|| {
        CaError::Refused("nothing to retire: run `sigil ca rotate activate` first".to_owned())
    })?;
    due(activated, holders, force, now, |ready| {
        format!(
            "certificates from the old issuer may be valid until {}",
            rfc3339(ready)
        )
    })?;
    let retiring = ders(&read_text(&old.join("ca.crt"))?);
    let kept: Vec<Vec<u8>> = ders(&read_text(&paths.ca)?)
        .into_iter()
        .filter(|d| !retiring.contains(d))
        .collect();
    pki::write_atomic(&paths.ca, pem_of(&kept).as_bytes(), 0o644, true)?;
    remove_dir(&old)?;
    Ok(format!(
        "retired: {} root(s) left {}.\n",
        retiring.len(),
        paths.ca.display()
    ))
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

    #[test]
    fn rotation_steps_in_order_and_never_too_early_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StorePaths::in_dir(dir.path());
        let id = crate::dapr::sentry_id("localhost", "default");
        let now = SystemTime::now();
        init(&paths, "localhost", &id, Generation::default(), now).unwrap();
        // Keep an unrelated root beside the CA's: retiring must not drop it.
        let (_, other) = Credentials::generate("other", &id, now, Duration::ZERO).unwrap();
        let ca = read_text(&paths.ca).unwrap();
        std::fs::write(&paths.ca, format!("{ca}{}", other.ca)).unwrap();
        let first = ders(&read_text(&paths.ca).unwrap());
        let holders = Holders {
            workload_ttl: Duration::from_secs(3600),
            skew: Duration::from_secs(900),
        };
        let refused = |r: Result<String, CaError>| matches!(r, Err(CaError::Refused(_)));
        assert!(refused(rotate_activate(&paths, holders, false, now)));
        assert!(refused(rotate_retire(&paths, holders, false, now)));
        rotate_prepare(&paths, Generation::default(), now).unwrap();
        assert!(refused(rotate_prepare(&paths, Generation::default(), now)));
        assert_eq!(
            ders(&read_text(&paths.ca).unwrap()).len(),
            3,
            "published beside"
        );
        assert!(refused(rotate_activate(&paths, holders, false, now)));
        let later = now + Duration::from_secs(3600 + 900);
        rotate_activate(&paths, holders, false, later).unwrap();
        // The new issuer loads with the bundle (new root first).
        store::load(&paths, later, &id).unwrap();
        assert!(refused(rotate_retire(&paths, holders, false, later)));
        rotate_retire(&paths, holders, true, later).unwrap();
        let left = ders(&read_text(&paths.ca).unwrap());
        assert_eq!(left.len(), 2, "the old root went, the unrelated one stayed");
        assert!(left.contains(&first[1]));
        assert!(!left.contains(&first[0]));
        store::load(&paths, later, &id).unwrap();
    }
}
