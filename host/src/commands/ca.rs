//! `sigil ca`: an operator's tools for a credentials directory (`ca.crt`, `issuer.crt`,
//! `issuer.key`), stopped or in use by a running Sentry (which picks changes up by hot
//! reload): `init` makes a root and an issuer, `inspect` explains what is there, `expiry`
//! answers for scripts (as `dapr mtls expiry`), `export` prints the trust bundle to distribute,
//! and `rotate prepare | activate | retire` replaces the root and issuer by hand in the three
//! steps of [`crate::ca::schedule`], each refusing (unless forced) when it would break a
//! holder. The steps, their journal and their crash safety are [`crate::ca::rotation`]'s, the
//! same Sentry takes automatically for credentials it generated:
//!
//! - **prepare**: a new root and issuer are made and staged in `<dir>/.sigil-next/` (key 0600)
//!   and the new root is appended to `ca.crt` (published: Sentry sends it in every answer and
//!   sidecars adopt it) while the old issuer still signs;
//! - **activate**: refused until one workload TTL plus the skew after publishing (so every
//!   holder has renewed and holds the new root) and while an old root is still retiring; the
//!   staged issuer and key replace the live ones and `ca.crt` lists the new root first; the
//!   root the old issuer chains to is recorded in `<dir>/.sigil-old/` (other roots the
//!   operator keeps in `ca.crt` stay);
//! - **retire**: refused until one workload TTL plus the skew after activation (no
//!   certificate from the old issuer outlives that); the old root leaves `ca.crt`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sigil_core::cert::Certificate;

use crate::ca::rotation::{self, Automatic, RotationError, StepOptions};
use crate::ca::schedule::{Policy, Step};
use crate::ca::store::{self, StorePaths};
use crate::ca::{rfc3339, system_time, Credentials, Generation};
use crate::pki;

pub use crate::ca::rotation::WARN_BEFORE;

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
    /// A rotation step failed or was refused (out of order, or too early without `--force`).
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

/// A rotation step by hand: `prepare` makes the next root and issuer (lifetimes and key type
/// from `opts.generation`) and publishes the new root; `activate` makes the prepared issuer
/// sign; `retire` takes the old root out of `ca.crt`. See [`crate::ca::rotation`].
///
/// # Errors
///
/// [`CaError::Rotation`]: out of order, too early (unless `opts.force`), or the store's error.
pub fn rotate(
    paths: &StorePaths,
    step: Step,
    opts: &StepOptions,
    now: SystemTime,
) -> Result<String, CaError> {
    let mut text = rotation::rotate(paths, step, opts, || now)?;
    text.push('\n');
    Ok(text)
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
    automatic: store::Rotation,
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
        automatic,
        now,
    )?;
    inspect(paths, None, now)
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

/// `inspect`: what is in `paths` and what it means: each root (and which slot of the
/// rotation journal it belongs to), the issuer that signs now, the prepared and the retiring
/// pair, whether the set validates as Sentry would load it, whether Sentry rotates it, and
/// what the journal does next and when (`policy`: the holders' workload TTL and skew; the
/// defaults, 24 h and 15 min, when `None`).
///
/// # Errors
///
/// [`CaError::Input`] if a file cannot be read or holds no certificate.
pub fn inspect(
    paths: &StorePaths,
    policy: Option<Policy>,
    now: SystemTime,
) -> Result<String, CaError> {
    let policy = policy.unwrap_or(Policy {
        workload_ttl: Duration::from_secs(24 * 3600),
        skew: Duration::from_secs(15 * 60),
    });
    let anchors = pki::read_pem_blocks(&paths.ca, sigil_core::pem::Label::Certificate)?;
    let issuer = pki::read_pem_blocks(&paths.issuer_cert, sigil_core::pem::Label::Certificate)?;
    let journal = rotation::read(paths)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| pki::InputError::Read {
            path: p.to_owned(),
            source,
        })
    };
    // Which slot a root belongs to: the one whose issuer chains to it.
    let slots = [
        Some(("active", &journal.active)),
        journal.prepared.as_ref().map(|s| ("prepared", s)),
        journal.old.as_ref().map(|s| ("old", s)),
    ];
    let role_of = |der: &Vec<u8>| {
        slots
            .iter()
            .flatten()
            .find(|(_, slot)| rotation::roots_of(&slot.issuer, &anchors, &[]).contains(der))
            .map(|(role, _)| *role)
    };
    let mut out = String::new();
    let _ = writeln!(out, "credentials in {}", paths.dir.display());
    let _ = writeln!(out, "  roots ({}, {}):", paths.ca.display(), anchors.len());
    for (i, der) in anchors.iter().enumerate() {
        let role = role_of(der).map_or_else(
            || "kept by the operator".to_owned(),
            |r| format!("{r} pair"),
        );
        let _ = writeln!(out, "  root #{} ({role})", i + 1);
        describe(&mut out, der, now);
    }
    let _ = writeln!(
        out,
        "  issuer ({}; active: signs every workload certificate now):",
        paths.issuer_cert.display()
    );
    if let Some(first) = issuer.first() {
        describe(&mut out, first, now);
    }
    let sentry_id = rotation::sentry_id_of(issuer.first().map_or(&[][..], Vec::as_slice), &anchors);
    let _ = writeln!(out, "    for Sentry: {sentry_id}");
    for (name, slot, what) in [
        (
            "prepared",
            journal.prepared.as_ref(),
            "root published, issuer not signing yet",
        ),
        (
            "old",
            journal.old.as_ref(),
            "root still in the bundle, issuer no longer signing",
        ),
    ] {
        if let Some(slot) = slot {
            let since = slot.since.map_or_else(|| "?".to_owned(), rfc3339);
            let _ = writeln!(out, "  {name} issuer ({what}; since {since}):");
            describe(&mut out, &slot.issuer, now);
        }
    }
    let state = Credentials::from_pem(
        &read(&paths.ca)?,
        &read(&paths.issuer_cert)?,
        &zeroize::Zeroizing::new(read(&paths.issuer_key)?),
        now,
        &sentry_id,
    );
    match &state {
        Ok(_) => {
            let _ = writeln!(out, "  state: valid (Sentry loads this set)");
        }
        Err(e) => {
            let _ = writeln!(out, "  state: INVALID: {e}");
        }
    }
    let _ = writeln!(
        out,
        "  rotation: {}",
        match journal.automatic {
            Automatic::Yes => "automatic (Sigil generated these; Sentry takes each step when due)",
            Automatic::No => "by hand (credentials the user brought; `sigil ca rotate`)",
            Automatic::Replaced =>
                "by hand (Sigil generated a set, but the issuer was replaced since; `sigil ca rotate`)",
        }
    );
    if let Some((step, at)) = journal.next(&policy) {
        let verb = match step {
            Step::Prepare => "prepare (make the next root and issuer, publish the new root)",
            Step::Activate => "activate (the prepared issuer signs)",
            Step::Retire => "retire (the old root leaves the bundle)",
        };
        let when = if at <= now {
            "due now".to_owned()
        } else {
            format!("at {} ({})", rfc3339(at), left(at, now))
        };
        let _ = writeln!(
            out,
            "  next: {verb}, {when}; for workload certificates of {} and a skew of {}",
            humantime::format_duration(policy.workload_ttl),
            humantime::format_duration(policy.skew)
        );
    }
    if journal.automatic != Automatic::Yes {
        let na = journal.active.pair.not_after;
        let warn_from = na.checked_sub(WARN_BEFORE).unwrap_or(na);
        let _ = writeln!(
            out,
            "  expiry: replace the root and issuer before {} (Sentry warns from {}; \
             `sigil ca expiry` says when)",
            rfc3339(na),
            rfc3339(warn_from)
        );
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
    Ok(crate::ca::pem_of(&anchors))
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
        let text = init(
            &paths,
            "cluster.local",
            &id,
            generation,
            store::Rotation::Manual,
            now,
        )
        .unwrap();
        assert!(text.contains("state: valid"), "{text}");
        assert!(text.contains("Ed25519"), "{text}");
        assert!(text.contains(&id), "{text}");
        assert!(matches!(
            init(
                &paths,
                "cluster.local",
                &id,
                generation,
                store::Rotation::Manual,
                now
            ),
            Err(CaError::Exists(_))
        ));
        // The issuer has 20 days: within the 30-day warning.
        let e = expiry(&paths, now).unwrap();
        assert_eq!(e.status, 1, "{}", e.line);
        assert!(e.line.contains("renew within 30 days"), "{}", e.line);
        let later = now + Duration::from_secs(21 * 86_400);
        assert_eq!(expiry(&paths, later).unwrap().status, 2);
        assert!(inspect(&paths, None, later).unwrap().contains("INVALID"));
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
        init(
            &paths,
            "localhost",
            &id,
            Generation::default(),
            store::Rotation::Manual,
            now,
        )
        .unwrap();
        // Keep an unrelated root beside the CA's: retiring must not drop it.
        let (_, other) = Credentials::generate("other", &id, now, Duration::ZERO).unwrap();
        let text = |p: &Path| std::fs::read_to_string(p).unwrap();
        let ders = |p: &Path| pki::pem_certificates(text(p).as_bytes()).unwrap();
        std::fs::write(&paths.ca, format!("{}{}", text(&paths.ca), other.ca)).unwrap();
        let first = ders(&paths.ca);
        let mut opts = StepOptions {
            policy: Policy {
                workload_ttl: Duration::from_secs(3600),
                skew: Duration::from_secs(900),
            },
            generation: Generation::default(),
            force: false,
            crash: None,
            jwt: None,
        };
        let refused = |r: Result<String, CaError>| {
            matches!(r, Err(CaError::Rotation(RotationError::Refused(_))))
        };
        assert!(refused(rotate(&paths, Step::Activate, &opts, now)));
        assert!(refused(rotate(&paths, Step::Retire, &opts, now)));
        rotate(&paths, Step::Prepare, &opts, now).unwrap();
        assert!(refused(rotate(&paths, Step::Prepare, &opts, now)));
        assert_eq!(ders(&paths.ca).len(), 3, "published beside");
        let shown = inspect(&paths, Some(opts.policy), now).unwrap();
        assert!(shown.contains("prepared issuer"), "{shown}");
        assert!(shown.contains("next: activate"), "{shown}");
        assert!(shown.contains("by hand"), "{shown}");
        assert!(refused(rotate(&paths, Step::Activate, &opts, now)));
        // Stamps are whole seconds, rounded up.
        let later = now + Duration::from_secs(3600 + 900 + 1);
        rotate(&paths, Step::Activate, &opts, later).unwrap();
        // The new issuer loads with the bundle (new root first).
        store::load(&paths, later, &id).unwrap();
        let shown = inspect(&paths, Some(opts.policy), later).unwrap();
        assert!(shown.contains("old issuer"), "{shown}");
        assert!(shown.contains("next: retire"), "{shown}");
        assert!(refused(rotate(&paths, Step::Retire, &opts, later)));
        opts.force = true;
        rotate(&paths, Step::Retire, &opts, later).unwrap();
        let left = ders(&paths.ca);
        assert_eq!(left.len(), 2, "the old root went, the unrelated one stayed");
        assert!(left.contains(&first[1]));
        assert!(!left.contains(&first[0]));
        store::load(&paths, later, &id).unwrap();
        assert!(inspect(&paths, None, later)
            .unwrap()
            .contains("next: prepare"));
    }
}
