//! The CA rotation journal in a credentials directory: the file store's side of Sentry's
//! automatic rotation (of credentials it generated) and of `sigil ca rotate` (by hand, for
//! any). When a step is due is [`super::schedule`]'s answer; what a step requires, refuses and
//! produces is [`super::journal`]'s; this module keeps the state on disk and writes each
//! step's result crash-safe under the store's lock. (The Secret store keeps the same journal
//! as keys of the Secret: [`super::secret_store`].)
//!
//! The journal is the directory itself, in Dapr's layout plus three entries:
//!
//! - `ca.crt`, `issuer.crt`, `issuer.key`: the active pair (the issuer that signs) and the
//!   published roots (the active pair's, a prepared one's, a retiring one's, and any other
//!   root the operator keeps there);
//! - `.sigil-next/` (`ca.crt`, `issuer.crt`, `issuer.key`, `since`, and the issuer it was
//!   prepared beside): the **prepared** pair and when its root was published;
//! - `.sigil-old/` (`ca.crt`, `issuer.crt`, `since`): the **old** pair's root, still in the
//!   bundle, and when its successor was activated;
//! - `.sigil-auto`: present for credentials Sigil generated, holding the SHA-256 of the issuer
//!   it made; Sentry rotates automatically only while it matches `issuer.crt` (a set replaced
//!   by hand is the user's from then on: warned about, never rotated);
//! - with Sentry's JWT key (`jwt.key`, `jwks.json`; [`super::journal::JwtSlots`]): the
//!   `.sigil-jwt-auto` marker (the thumbprint of a key Sigil generated), the prepared key with
//!   the set that publishes it and the wait in `.sigil-next/` (`jwt.key`, `jwks.json`,
//!   `jwt.wait`), the outgoing key's kid and wait in `.sigil-old/` (`jwt.kid`, `jwt.wait`).
//!   Prepare stages them before its commit and merges the set before publishing the root;
//!   activate notes the outgoing key before its commit and writes the marker, then the key,
//!   only over the key it started from; retire writes the set (if it changes) before `ca.crt`.
//!
//! Each step has a commit point; a crash (kill -9, power loss) before it leaves nothing
//! changed that matters and [`recover`] (run under the lock at every start and before every
//! step) undoes the rest; a crash after it is rolled forward:
//!
//! - **prepare**: the new pair is staged in `.sigil-next/` (key 0600), *commit*: `since` is
//!   written; then the new root is appended to `ca.crt`. Recovery: no `since`, the directory
//!   goes; `since` but the root not in `ca.crt`, it is published (and `since` restamped: the
//!   publication is what holders wait for).
//! - **activate**: the outgoing issuer and its root are noted in `.sigil-next/`, *commit*:
//!   `.sigil-next` is renamed `.sigil-activating`; then `.sigil-old/` is written, the marker
//!   follows the new issuer, the key, the certificate and `ca.crt` (new root first) are
//!   replaced, `.sigil-old/since` is stamped and `.sigil-activating` goes. Recovery:
//!   `.sigil-activating` present, the steps after the commit are done again (each is
//!   idempotent; the stamp is then the later time). Between the key and the
//!   certificate the live set does not match; Sentry's reload refuses it and keeps signing
//!   with the set it has until the certificate follows (no failed request).
//! - **retire**: the old root leaves `ca.crt`, then `.sigil-old/` goes. A crash in between is
//!   finished by [`recover`] (the old roots are no longer in `ca.crt`).
//!
//! A journal directory is removed by renaming it to a tombstone first (`.sigil-trash…`,
//! deleted by [`recover`]), so a kill never leaves a half-emptied slot. A step interrupted
//! while the operator replaced the credentials by hand is set aside, not rolled forward over
//! them: an activation only over the issuer it started from (or the one it was installing), a
//! prepared pair only for the issuer it was prepared beside.

use std::fmt;
use std::fs;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sigil_core::cert::Certificate;

use zeroize::Zeroizing;

use super::journal::{self, ders, JwtSlots, Prepared, Retiring, Set};
use super::schedule::{self, Pair, Policy, Step};
use super::store::{self, StoreError, StoreLock, StorePaths, AUTO};
use super::{pem_of, system_time, CredentialsError, Generation};
use crate::pki;

/// How long before a notAfter credentials the user brought are warned about (Dapr's Sentry
/// warns from 30 days).
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The prepared pair.
pub const NEXT: &str = ".sigil-next";
/// The prepared pair, being activated (the activation's commit point).
pub const ACTIVATING: &str = ".sigil-activating";
/// The old pair, retiring.
pub const OLD: &str = ".sigil-old";
const STAMP: &str = "since";
const OUTGOING_CA: &str = "outgoing-ca.crt";
const OUTGOING_ISSUER: &str = "outgoing-issuer.crt";
/// The issuer that was active when a pair was prepared.
const PREPARED_FOR: &str = "prepared-for.crt";
/// In `.sigil-next/`: the prepared JWT key (0600) and the set that publishes it.
const JWT_KEY: &str = "jwt.key";
const JWT_SET: &str = "jwks.json";
/// In `.sigil-next/` (noted at the activation) then `.sigil-old/`: the outgoing JWT key's kid.
const JWT_OLD_KID: &str = "jwt.kid";
/// In `.sigil-next/`: the holders' wait of the prepare; in `.sigil-old/`: of the outgoing key
/// (seconds; see [`JwtSlots`]).
const JWT_WAIT: &str = "jwt.wait";
/// In `.sigil-next/`, noted at the activation: the outgoing key's wait and thumbprint (the
/// activation replaces `jwt.key` only if it is still that key, or the prepared one).
const JWT_OUTGOING_WAIT: &str = "outgoing-jwt.wait";
const JWT_OUTGOING: &str = "outgoing-jwt.thumbprint";

/// Why a rotation step failed or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// The store failed (lock, I/O, a refused set).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error(transparent)]
    Input(#[from] pki::InputError),
    /// The step is out of order or too early (`--force` does it anyway where that is allowed).
    #[error("{0}")]
    Refused(String),
    /// Making the new pair failed.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The JWT key or its set could not be rotated.
    #[error("the JWT signing key: {0}")]
    Jwt(#[from] super::jwt::JwtKeyError),
    /// A crash test stopped the step here (see [`CrashPoint`]); the directory is as a crash
    /// would leave it.
    #[error("stopped at {0} for a crash test")]
    Interrupted(CrashPoint),
}

/// A point inside a step where a crash test stops, leaving the directory as a kill -9 there
/// would (Sentry's `SIGIL_CRASH_AT` aborts the process at it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The new pair is staged, not committed (rolls back).
    PrepareStaged,
    /// The prepared pair is committed, its root not published yet (rolls forward).
    PrepareCommitted,
    /// The activation is committed, nothing live changed (rolls forward).
    ActivateCommitted,
    /// The new key is live, the old certificate still (a mismatched set; rolls forward).
    ActivateKey,
    /// The new key and certificate are live, `ca.crt` not reordered (rolls forward).
    ActivateCertificate,
    /// The old root left `ca.crt`, `.sigil-old/` is still there (the next retire finishes).
    RetirePublished,
    /// A prepared JWT key is in the set, its root not published yet (rolls forward).
    PrepareJwks,
    /// The JWT key's marker names the prepared key, `jwt.key` is still the old one (rolls
    /// forward).
    ActivateJwtMarker,
    /// The outgoing JWT key left the set, its root is still in `ca.crt` (the next retire
    /// finishes).
    RetireJwks,
}

impl CrashPoint {
    /// Every point, in the order the steps reach them.
    pub const ALL: [Self; 9] = [
        Self::PrepareStaged,
        Self::PrepareCommitted,
        Self::PrepareJwks,
        Self::ActivateCommitted,
        Self::ActivateJwtMarker,
        Self::ActivateKey,
        Self::ActivateCertificate,
        Self::RetireJwks,
        Self::RetirePublished,
    ];

    /// The points reached only when a JWT key rotates with the CA.
    pub const JWT: [Self; 3] = [Self::PrepareJwks, Self::ActivateJwtMarker, Self::RetireJwks];

    const fn name(self) -> &'static str {
        match self {
            Self::PrepareStaged => "prepare:staged",
            Self::PrepareCommitted => "prepare:committed",
            Self::ActivateCommitted => "activate:committed",
            Self::ActivateKey => "activate:key",
            Self::ActivateCertificate => "activate:certificate",
            Self::RetirePublished => "retire:published",
            Self::PrepareJwks => "prepare:jwks",
            Self::ActivateJwtMarker => "activate:jwt-marker",
            Self::RetireJwks => "retire:jwks",
        }
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CrashPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                format!("unknown crash point {s:?} (one of {})", names.join(", "))
            })
    }
}

/// How steps are taken.
#[derive(Clone, Copy, Debug)]
pub struct StepOptions {
    /// The workload TTL and clock skew (the holders' timing).
    pub policy: Policy,
    /// The lifetimes and key type of a prepared pair.
    pub generation: Generation,
    /// Take a step even when it is too early.
    pub force: bool,
    /// Stop inside a step, for crash tests.
    pub crash: Option<CrashPoint>,
    /// The algorithm Sentry signs JWT-SVIDs with, when it rotates a JWT key Sigil generated
    /// along with the CA (`None`: a JWT key is not prepared; one prepared already is still
    /// activated and retired).
    pub jwt: Option<super::jwt::JwtAlgorithm>,
}

/// Whether the credentials are rotated automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Automatic {
    /// Sigil generated them and they are unchanged since: Sentry rotates them.
    Yes,
    /// The user brought them: warned about from 30 days before expiry, rotated by hand.
    No,
    /// Sigil generated them but `issuer.crt` was replaced by hand since: the user's now.
    Replaced,
}

/// One pair as the journal sees it.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Its issuer certificate (DER; empty if unreadable).
    pub issuer: Vec<u8>,
    /// Its issuer's validity.
    pub pair: Pair,
    /// When the step that made this slot was taken (published, or activated for the old).
    pub since: Option<SystemTime>,
}

/// What the directory holds.
#[derive(Clone, Debug)]
pub struct Journal {
    /// The pair whose issuer signs.
    pub active: Slot,
    /// The pair published beside it.
    pub prepared: Option<Slot>,
    /// The pair retiring.
    pub old: Option<Slot>,
    /// Whether Sentry rotates them.
    pub automatic: Automatic,
    /// The holders' wait a JWT key in rotation recorded ([`journal::JwtSlots::wait`]): the
    /// steps wait at least this long, whatever the policy they are taken with.
    pub jwt_wait: Option<Duration>,
}

impl Journal {
    /// The planner's view.
    pub fn schedule(&self) -> schedule::Journal {
        let with_since = |s: &Slot| s.since.map(|at| (s.pair, at));
        schedule::Journal {
            active: self.active.pair,
            prepared: self.prepared.as_ref().and_then(with_since),
            old: self.old.as_ref().and_then(with_since),
        }
    }

    /// The next step and when it is due (the policy's wait lengthened to [`Self::jwt_wait`]).
    pub fn next(&self, policy: &Policy) -> Option<(Step, SystemTime)> {
        let policy = &Policy {
            workload_ttl: policy.workload_ttl.max(self.jwt_wait.unwrap_or_default()),
            ..*policy
        };
        schedule::next(&self.schedule(), policy)
    }
}

fn read_text(p: &Path) -> Result<String, RotationError> {
    fs::read_to_string(p).map_err(|source| {
        RotationError::Input(pki::InputError::Read {
            path: p.to_owned(),
            source,
        })
    })
}

fn write(p: &Path, bytes: &[u8], mode: u32) -> Result<(), RotationError> {
    pki::write_atomic(p, bytes, mode, true).map_err(RotationError::from)
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> RotationError + '_ {
    move |source| {
        RotationError::Input(pki::InputError::Write {
            path: p.to_owned(),
            source,
        })
    }
}

fn sync_dir(dir: &Path) -> Result<(), RotationError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

/// The prefix of a journal directory being removed.
const TRASH: &str = ".sigil-trash";

/// Removes a journal directory as one step: renamed to a tombstone first (a kill while its
/// files are unlinked one by one then leaves a tombstone, which [`recover`] deletes, never a
/// half-emptied slot).
fn remove_dir(dir: &Path) -> Result<(), RotationError> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(());
    };
    let trash = parent.join(format!("{TRASH}{}", name.to_string_lossy()));
    match fs::rename(dir, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    }
    sync_dir(parent)?;
    fs::remove_dir_all(&trash).map_err(io(&trash))
}

/// Deletes the tombstones a kill left in `dir`.
fn remove_trash(dir: &Path) -> Result<(), RotationError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TRASH) {
            let p = e.path();
            fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// The first certificate of a PEM file (empty if none).
fn first_cert(p: &Path) -> Vec<u8> {
    fs::read_to_string(p)
        .ok()
        .and_then(|pem| ders(&pem).into_iter().next())
        .unwrap_or_default()
}

/// When a step was taken (seconds since the epoch in `<dir>/since`).
fn stamped(dir: &Path) -> Option<SystemTime> {
    journal::parse_stamp(&fs::read_to_string(dir.join(STAMP)).ok()?)
}

fn stamp(dir: &Path, at: SystemTime) -> Result<(), RotationError> {
    write(&dir.join(STAMP), journal::stamp_text(at).as_bytes(), 0o644)
}

fn crash(opts: &StepOptions, here: CrashPoint) -> Result<(), RotationError> {
    if opts.crash == Some(here) {
        return Err(RotationError::Interrupted(here));
    }
    Ok(())
}

pub(crate) fn slot(issuer_pem: &str, since: Option<SystemTime>) -> Slot {
    let issuer = ders(issuer_pem).into_iter().next().unwrap_or_default();
    let pair = Certificate::parse(&issuer).map_or(
        Pair {
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
        },
        |c| Pair {
            not_before: system_time(c.not_before()),
            not_after: system_time(c.not_after()),
        },
    );
    Slot {
        issuer,
        pair,
        since,
    }
}

/// Reads the journal (no lock: a running step may be half way; take steps through
/// [`rotate`] and [`run_due`]).
///
/// # Errors
///
/// [`RotationError::Input`] if `issuer.crt` cannot be read.
pub fn read(paths: &StorePaths) -> Result<Journal, RotationError> {
    let issuer_pem = read_text(&paths.issuer_cert)?;
    let active = slot(&issuer_pem, None);
    let (next, old) = (paths.dir.join(NEXT), paths.dir.join(OLD));
    let prepared = stamped(&next)
        .map(|since| read_text(&next.join("issuer.crt")).map(|pem| slot(&pem, Some(since))))
        .transpose()?;
    let old = stamped(&old)
        .map(|since| read_text(&old.join("issuer.crt")).map(|pem| slot(&pem, Some(since))))
        .transpose()?;
    let marker = fs::read_to_string(paths.dir.join(AUTO)).ok();
    let automatic = journal::automatic(marker.as_deref(), &issuer_pem);
    let jwt_wait = read_jwt(paths, prepared.is_some(), old.is_some())
        .as_ref()
        .and_then(JwtSlots::wait);
    Ok(Journal {
        active,
        prepared,
        old,
        automatic,
        jwt_wait,
    })
}

/// Finishes or undoes a step a crash interrupted (see the module doc). The caller holds the
/// store's lock.
///
/// # Errors
///
/// [`RotationError`] if a file cannot be read or written.
pub fn recover(paths: &StorePaths, now: SystemTime) -> Result<(), RotationError> {
    remove_trash(&paths.dir)?;
    let next = paths.dir.join(NEXT);
    let activating = paths.dir.join(ACTIVATING);
    if activating.exists() {
        // Rolled forward only over the set it was taken from (or already half replaced by
        // it): credentials the operator put in place since are never overwritten.
        let live = first_cert(&paths.issuer_cert);
        if live == first_cert(&activating.join(OUTGOING_ISSUER))
            || live == first_cert(&activating.join("issuer.crt"))
        {
            finish_activation(paths, now)?;
        } else {
            tracing::warn!(dir = %paths.dir.display(), "an interrupted activation was for credentials replaced since: set aside, the credentials in place kept");
            remove_dir(&activating)?;
        }
    }
    if next.exists() {
        match stamped(&next) {
            None => remove_dir(&next)?,
            Some(_) if first_cert(&next.join(PREPARED_FOR)) != first_cert(&paths.issuer_cert) => {
                // Prepared for an issuer replaced by hand since: not the operator's plan.
                tracing::warn!(dir = %paths.dir.display(), "a prepared pair was for credentials replaced since: set aside");
                remove_dir(&next)?;
            }
            Some(_) => {
                let root = ders(&read_text(&next.join("ca.crt"))?);
                let bundle = ders(&read_text(&paths.ca)?);
                if !root.iter().all(|r| bundle.contains(r)) {
                    publish(paths, &root, now, None)?;
                }
            }
        }
    }
    let old = paths.dir.join(OLD);
    if old.exists() {
        match stamped(&old) {
            // Written only after the activation's commit, which is rolled forward above; a
            // directory without its stamp is a leftover.
            None => remove_dir(&old)?,
            Some(_) => {
                // A retire that took the roots out of ca.crt and stopped: finish it.
                let retiring = ders(&read_text(&old.join("ca.crt"))?);
                let bundle = ders(&read_text(&paths.ca)?);
                if !retiring.is_empty() && !retiring.iter().any(|r| bundle.contains(r)) {
                    remove_dir(&old)?;
                }
            }
        }
    }
    Ok(())
}

/// (Re)stamps the prepared pair and appends `root` to `ca.crt`: published now. The stamp
/// first: a kill between the two leaves the root unpublished, published again (and stamped
/// again) by [`recover`]; never a published root with an older stamp, which would let the
/// activation come before holders could learn it.
fn publish(
    paths: &StorePaths,
    root: &[Vec<u8>],
    now: SystemTime,
    opts: Option<&StepOptions>,
) -> Result<(), RotationError> {
    let next = paths.dir.join(NEXT);
    stamp(&next, now)?;
    // A prepared JWT key is published with the root (merged: idempotent), before it.
    if let Ok(staged) = fs::read_to_string(next.join(JWT_SET)) {
        let set = super::jwt::set_merged(&read_text(&paths.jwks)?, &staged)?;
        write(&paths.jwks, set.as_bytes(), 0o644)?;
        if let Some(opts) = opts {
            crash(opts, CrashPoint::PrepareJwks)?;
        }
    }
    let bundle = journal::published(&ders(&read_text(&paths.ca)?), root);
    write(&paths.ca, pem_of(&bundle).as_bytes(), 0o644)
}

/// The SPIFFE ID an issuer was made for: its subject's `O=` when that is a SPIFFE ID (Dapr's
/// and Sigil's issuers), else Sentry's ID in the root's trust domain.
pub fn sentry_id_of(issuer: &[u8], anchors: &[Vec<u8>]) -> String {
    let org = |der: &[u8]| {
        Certificate::parse(der)
            .ok()
            .map(|c| pki::name_to_string(c.subject()))
            .and_then(|n| n.strip_prefix("O=").map(str::to_owned))
    };
    org(issuer)
        .filter(|o| o.starts_with("spiffe://"))
        .unwrap_or_else(|| {
            let td = anchors
                .first()
                .and_then(|a| org(a))
                .unwrap_or_else(|| "localhost".to_owned());
            crate::dapr::sentry_id(&td, "default")
        })
}

/// The credentials directory with its journal, as [`journal::Set`] (after [`recover`]: a
/// slot directory without its stamp is gone).
fn read_set(paths: &StorePaths) -> Result<Set, RotationError> {
    let (next, old) = (paths.dir.join(NEXT), paths.dir.join(OLD));
    let prepared = match stamped(&next) {
        Some(since) => Some(Prepared {
            ca: read_text(&next.join("ca.crt"))?,
            issuer: read_text(&next.join("issuer.crt"))?,
            key: Zeroizing::new(read_text(&next.join("issuer.key"))?),
            prepared_for: read_text(&next.join(PREPARED_FOR))?,
            since,
        }),
        None => None,
    };
    let retiring = match stamped(&old) {
        Some(since) => Some(Retiring {
            ca: read_text(&old.join("ca.crt"))?,
            issuer: read_text(&old.join("issuer.crt"))?,
            since,
        }),
        None => None,
    };
    Ok(Set {
        ca: read_text(&paths.ca)?,
        issuer: read_text(&paths.issuer_cert)?,
        key: Zeroizing::new(read_text(&paths.issuer_key)?),
        auto: fs::read_to_string(paths.dir.join(AUTO)).ok(),
        jwt: read_jwt(paths, prepared.is_some(), retiring.is_some()),
        next: prepared,
        old: retiring,
    })
}

/// The JWT key and set with their slots, when the directory holds both (a prepared key only
/// in a prepared slot, an outgoing kid only in an old one).
fn read_jwt(paths: &StorePaths, prepared: bool, retiring: bool) -> Option<JwtSlots> {
    let read = |p: &Path| fs::read_to_string(p).ok();
    Some(JwtSlots {
        key: Zeroizing::new(read(&paths.jwt_key)?),
        jwks: read(&paths.jwks)?,
        auto: read(&paths.jwt_marker()),
        next: prepared
            .then(|| read(&paths.dir.join(NEXT).join(JWT_KEY)))
            .flatten()
            .map(Zeroizing::new),
        old_kid: retiring
            .then(|| read(&paths.dir.join(OLD).join(JWT_OLD_KID)))
            .flatten(),
        next_wait: read(&paths.dir.join(NEXT).join(JWT_WAIT)).and_then(|t| journal::parse_wait(&t)),
        old_wait: read(&paths.dir.join(OLD).join(JWT_WAIT)).and_then(|t| journal::parse_wait(&t)),
    })
}

/// A step that produced no slot it must have (never: [`journal::Set::take`] makes it).
fn missing(what: &str) -> RotationError {
    RotationError::Refused(format!("the step made no {what} slot"))
}

fn prepare(
    paths: &StorePaths,
    opts: &StepOptions,
    now: SystemTime,
) -> Result<String, RotationError> {
    let set = read_set(paths)?.take(Step::Prepare, opts, now)?;
    let pair = set.next.as_ref().ok_or_else(|| missing("prepared"))?;
    let next = paths.dir.join(NEXT);
    fs::create_dir_all(&next).map_err(io(&next))?;
    write(&next.join("issuer.key"), pair.key.as_bytes(), 0o600)?;
    write(&next.join("issuer.crt"), pair.issuer.as_bytes(), 0o644)?;
    write(&next.join("ca.crt"), pair.ca.as_bytes(), 0o644)?;
    write(
        &next.join(PREPARED_FOR),
        pair.prepared_for.as_bytes(),
        0o644,
    )?;
    if let Some(jwt) = &set.jwt {
        if let Some(key) = &jwt.next {
            write(&next.join(JWT_KEY), key.as_bytes(), 0o600)?;
            write(&next.join(JWT_SET), jwt.jwks.as_bytes(), 0o644)?;
            let wait = journal::wait_text(jwt.next_wait.unwrap_or_default());
            write(&next.join(JWT_WAIT), wait.as_bytes(), 0o644)?;
        }
    }
    sync_dir(&next)?;
    sync_dir(&paths.dir)?;
    crash(opts, CrashPoint::PrepareStaged)?;
    stamp(&next, now)?;
    crash(opts, CrashPoint::PrepareCommitted)?;
    publish(paths, &ders(&pair.ca), now, Some(opts))?;
    Ok(journal::done(
        Step::Prepare,
        opts,
        now,
        &paths.ca.display().to_string(),
    ))
}

/// The roots in `bundle` that `issuer` chains to (by name, and by key identifier where both
/// carry one), other than `except`.
pub fn roots_of(issuer: &[u8], bundle: &[Vec<u8>], except: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let Ok(issuer) = Certificate::parse(issuer) else {
        return Vec::new();
    };
    bundle
        .iter()
        .filter(|d| !except.contains(d))
        .filter(|d| Certificate::parse(d).is_ok_and(|root| issuer.names_as_issuer(&root)))
        .cloned()
        .collect()
}

fn activate(
    paths: &StorePaths,
    opts: &StepOptions,
    now: SystemTime,
) -> Result<String, RotationError> {
    let set = read_set(paths)?.take(Step::Activate, opts, now)?;
    let outgoing = set.old.as_ref().ok_or_else(|| missing("old"))?;
    let next = paths.dir.join(NEXT);
    let staged_jwt = next.join(JWT_KEY);
    if staged_jwt.exists() {
        let staged = Zeroizing::new(read_text(&staged_jwt)?);
        match &set.jwt {
            // The prepared JWT key signs from the commit on; the outgoing one's kid is noted.
            Some(jwt) if jwt.key.as_str() == staged.as_str() => {
                if let Some(kid) = &jwt.old_kid {
                    write(&next.join(JWT_OLD_KID), kid.as_bytes(), 0o644)?;
                }
                let wait = journal::wait_text(jwt.old_wait.unwrap_or_default());
                write(&next.join(JWT_OUTGOING_WAIT), wait.as_bytes(), 0o644)?;
                let outgoing = fs::read_to_string(&paths.jwt_key)
                    .ok()
                    .and_then(|k| super::jwt::key_thumbprint(&k))
                    .unwrap_or_default();
                write(&next.join(JWT_OUTGOING), outgoing.as_bytes(), 0o644)?;
            }
            // The operator replaced (or removed) the JWT key since the prepare: theirs
            // stays; the prepared key and its entry go.
            jwt => {
                if let Some(jwt) = jwt {
                    write(&paths.jwks, jwt.jwks.as_bytes(), 0o644)?;
                }
                fs::remove_file(&staged_jwt).map_err(io(&staged_jwt))?;
            }
        }
    }
    write(&next.join(OUTGOING_CA), outgoing.ca.as_bytes(), 0o644)?;
    write(
        &next.join(OUTGOING_ISSUER),
        outgoing.issuer.as_bytes(),
        0o644,
    )?;
    let activating = paths.dir.join(ACTIVATING);
    fs::rename(&next, &activating).map_err(io(&next))?;
    sync_dir(&paths.dir)?;
    crash(opts, CrashPoint::ActivateCommitted)?;
    finish(paths, opts, now)?;
    Ok(journal::done(
        Step::Activate,
        opts,
        now,
        &paths.ca.display().to_string(),
    ))
}

/// The activation after its commit point (idempotent: recovery runs it again).
fn finish(paths: &StorePaths, opts: &StepOptions, now: SystemTime) -> Result<(), RotationError> {
    let activating = paths.dir.join(ACTIVATING);
    let old = paths.dir.join(OLD);
    if stamped(&old).is_none() {
        fs::create_dir_all(&old).map_err(io(&old))?;
        write(
            &old.join("ca.crt"),
            read_text(&activating.join(OUTGOING_CA))?.as_bytes(),
            0o644,
        )?;
        write(
            &old.join("issuer.crt"),
            read_text(&activating.join(OUTGOING_ISSUER))?.as_bytes(),
            0o644,
        )?;
        if let Ok(kid) = fs::read_to_string(activating.join(JWT_OLD_KID)) {
            write(&old.join(JWT_OLD_KID), kid.as_bytes(), 0o644)?;
            let wait = fs::read_to_string(activating.join(JWT_OUTGOING_WAIT)).unwrap_or_default();
            write(&old.join(JWT_WAIT), wait.as_bytes(), 0o644)?;
        }
    }
    // The prepared JWT key signs (its marker first, so the key is never unmarked), over the
    // key it was activated from only (again if this runs again): a key the operator put in
    // place since is theirs.
    if let Ok(jwt_key) = fs::read_to_string(activating.join(JWT_KEY)).map(Zeroizing::new) {
        let thumb = super::jwt::key_thumbprint(&jwt_key).unwrap_or_default();
        let live = fs::read_to_string(&paths.jwt_key)
            .ok()
            .and_then(|k| super::jwt::key_thumbprint(&k));
        let outgoing = fs::read_to_string(activating.join(JWT_OUTGOING)).ok();
        if live.is_some()
            && (live.as_deref() == outgoing.as_deref().map(str::trim)
                || live == Some(thumb.clone()))
        {
            write(&paths.jwt_marker(), thumb.as_bytes(), 0o644)?;
            crash(opts, CrashPoint::ActivateJwtMarker)?;
            write(&paths.jwt_key, jwt_key.as_bytes(), 0o600)?;
        } else {
            tracing::warn!(dir = %paths.dir.display(), "the JWT key was replaced by hand during an interrupted activation: the prepared key is not installed");
        }
    }
    let issuer = read_text(&activating.join("issuer.crt"))?;
    // The marker follows the issuer only if it followed the outgoing one: credentials the
    // user brought stay the user's.
    let auto = paths.dir.join(AUTO);
    let outgoing = read_text(&activating.join(OUTGOING_ISSUER))?;
    if fs::read_to_string(&auto).is_ok_and(|m| m == store::auto_marker(&outgoing)) {
        write(&auto, store::auto_marker(&issuer).as_bytes(), 0o644)?;
    }
    // The key, then the certificate that matches it, then the bundle with the new root first:
    // a reload in between sees a mismatched set, refuses it and keeps the old one serving.
    let key = zeroize::Zeroizing::new(read_text(&activating.join("issuer.key"))?);
    write(&paths.issuer_key, key.as_bytes(), 0o600)?;
    crash(opts, CrashPoint::ActivateKey)?;
    write(&paths.issuer_cert, issuer.as_bytes(), 0o644)?;
    crash(opts, CrashPoint::ActivateCertificate)?;
    let bundle = journal::activated(
        &ders(&read_text(&paths.ca)?),
        &ders(&read_text(&activating.join("ca.crt"))?),
    );
    write(&paths.ca, pem_of(&bundle).as_bytes(), 0o644)?;
    // Stamped once the new issuer is in place (again if this runs again): the old issuer
    // signed nothing after this, so its last certificate is gone one TTL plus the skew later.
    stamp(&old, now)?;
    remove_dir(&activating)
}

fn finish_activation(paths: &StorePaths, now: SystemTime) -> Result<(), RotationError> {
    let opts = StepOptions {
        policy: Policy {
            workload_ttl: Duration::ZERO,
            skew: Duration::ZERO,
        },
        generation: Generation::default(),
        force: true,
        crash: None,
        jwt: None,
    };
    finish(paths, &opts, now)
}

fn retire(
    paths: &StorePaths,
    opts: &StepOptions,
    now: SystemTime,
) -> Result<String, RotationError> {
    let before = read_set(paths)?;
    let set = before.take(Step::Retire, opts, now)?;
    // The outgoing JWT key's entry first (a kill before `ca.crt` is written retires again);
    // a set the step does not change is not written (it may be the user's, or read-only).
    if let (Some(was), Some(jwt)) = (&before.jwt, &set.jwt) {
        if was.jwks != jwt.jwks {
            write(&paths.jwks, jwt.jwks.as_bytes(), 0o644)?;
            crash(opts, CrashPoint::RetireJwks)?;
        }
    }
    write(&paths.ca, set.ca.as_bytes(), 0o644)?;
    crash(opts, CrashPoint::RetirePublished)?;
    remove_dir(&paths.dir.join(OLD))?;
    Ok(journal::done(
        Step::Retire,
        opts,
        now,
        &paths.ca.display().to_string(),
    ))
}

/// Takes `step` by hand (`sigil ca rotate`), under the store's lock, after recovering an
/// interrupted one; refused when out of order or too early (unless `opts.force`).
///
/// # Errors
///
/// [`RotationError::Refused`] and the store's errors.
pub fn rotate(
    paths: &StorePaths,
    step: Step,
    opts: &StepOptions,
    clock: impl Fn() -> SystemTime,
) -> Result<String, RotationError> {
    let _lock = StoreLock::acquire(paths)?;
    // Read once the lock is held: a step waited for is stamped when it is taken.
    let now = clock();
    recover(paths, now)?;
    take(paths, step, opts, now)
}

fn take(
    paths: &StorePaths,
    step: Step,
    opts: &StepOptions,
    now: SystemTime,
) -> Result<String, RotationError> {
    match step {
        Step::Prepare => prepare(paths, opts, now),
        Step::Activate => activate(paths, opts, now),
        Step::Retire => retire(paths, opts, now),
    }
}

/// What [`run_due`] did and what comes next.
#[derive(Debug)]
pub struct Tick {
    /// The step taken now, with its message.
    pub done: Option<(Step, String)>,
    /// The journal after it.
    pub journal: Journal,
    /// The next step and when (automatic credentials only).
    pub next: Option<(Step, SystemTime)>,
}

/// Sentry's automatic rotation, once: under the store's lock, recovers an interrupted step,
/// reads the journal and, for credentials Sigil generated, takes the step that is due (at
/// most one; the caller calls again at once when the next is due too). A replica that finds
/// the step already taken by another finds nothing due.
///
/// # Errors
///
/// The store's and the step's errors (a step that fails is tried again at the next call).
pub fn run_due(
    paths: &StorePaths,
    opts: &StepOptions,
    clock: impl Fn() -> SystemTime,
) -> Result<Tick, RotationError> {
    let _lock = StoreLock::acquire(paths)?;
    // Read once the lock is held: a step waited for is stamped when it is taken.
    let now = clock();
    recover(paths, now)?;
    let journal = read(paths)?;
    if journal.automatic != Automatic::Yes {
        return Ok(Tick {
            done: None,
            journal,
            next: None,
        });
    }
    let mut done = None;
    if let Some((step, at)) = journal.next(&opts.policy) {
        if at <= now {
            let message = take(paths, step, opts, now)?;
            done = Some((step, message));
        }
    }
    let journal = if done.is_some() {
        read(paths)?
    } else {
        journal
    };
    let next = journal.next(&opts.policy);
    Ok(Tick {
        done,
        journal,
        next,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::ca::store::{load, load_or_generate, Origin, Rotation};
    use crate::ca::Credentials;

    const ID: &str = "spiffe://localhost/ns/default/dapr-sentry";

    /// Steps for the tests here and in [`super::super::journal`]: workload TTL 5 s, skew 1 s,
    /// pairs of 60 s.
    pub(crate) fn opts(crash: Option<CrashPoint>) -> StepOptions {
        StepOptions {
            policy: Policy {
                workload_ttl: Duration::from_secs(5),
                skew: Duration::from_secs(1),
            },
            generation: Generation {
                root: Duration::from_secs(60),
                issuer: Duration::from_secs(60),
                ..Generation::default()
            },
            force: false,
            crash,
            jwt: None,
        }
    }

    fn start(paths: &StorePaths, rotation: Rotation, now: SystemTime) -> Origin {
        let o = opts(None);
        load_or_generate(
            paths,
            "localhost",
            ID,
            o.policy.skew,
            o.generation,
            rotation,
            now,
        )
        .unwrap()
        .1
    }

    /// The set loads, and every root an issuer of the journal chains to is in `ca.crt`.
    fn consistent(paths: &StorePaths, now: SystemTime) {
        let creds = load(paths, now, ID).unwrap();
        let bundle = creds.anchors().to_vec();
        let j = read(paths).unwrap();
        for slot in [Some(&j.active), j.prepared.as_ref(), j.old.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(
                !roots_of(&slot.issuer, &bundle, &[]).is_empty(),
                "a slot's root is not published"
            );
        }
        assert!(!paths.dir.join(ACTIVATING).exists());
    }

    /// Runs the journal second by second from `from` for `secs`, checking the set after each
    /// tick; returns the steps taken.
    fn run(paths: &StorePaths, from: SystemTime, secs: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        for s in 0..secs {
            let now = from + Duration::from_secs(s);
            loop {
                let tick = run_due(paths, &opts(None), || now).unwrap();
                match tick.done {
                    Some((step, _)) => steps.push(step),
                    None => break,
                }
            }
            consistent(paths, now);
        }
        steps
    }

    /// Runs the journal second by second from `t0` for up to 120 s with `o` until a step stops
    /// at `o.crash` (as a kill -9 there would); the time reached and whether it stopped.
    fn run_to_crash(paths: &StorePaths, o: &StepOptions, t0: SystemTime) -> (SystemTime, bool) {
        let mut at = t0;
        for s in 0..120 {
            at = t0 + Duration::from_secs(s);
            loop {
                match run_due(paths, o, || at) {
                    Ok(tick) if tick.done.is_some() => {}
                    Ok(_) => break,
                    Err(RotationError::Interrupted(p)) => {
                        assert_eq!(Some(p), o.crash);
                        return (at, true);
                    }
                    Err(e) => panic!("{:?}: {e}", o.crash),
                }
            }
        }
        (at, false)
    }

    #[test]
    fn generated_credentials_rotate_on_schedule_and_stay_automatic() {
        let t = tempfile::tempdir().unwrap();
        let paths = StorePaths::in_dir(t.path());
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert_eq!(start(&paths, Rotation::Automatic, t0), Origin::Generated);
        let first = read(&paths).unwrap().active.issuer;
        let steps = run(&paths, t0, 150);
        // Life 60 s: prepare at 30 s, activate at 50 s, retire 6 s later; then every 30 s.
        let activations = steps.iter().filter(|s| **s == Step::Activate).count();
        assert!(activations >= 4, "{steps:?}");
        assert_eq!(&steps[..3], &[Step::Prepare, Step::Activate, Step::Retire]);
        let j = read(&paths).unwrap();
        assert_eq!(j.automatic, Automatic::Yes);
        assert_ne!(j.active.issuer, first);
    }

    #[test]
    fn credentials_the_user_brought_are_never_rotated_and_replaced_ones_stop() {
        let t = tempfile::tempdir().unwrap();
        let paths = StorePaths::in_dir(t.path());
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        start(&paths, Rotation::Manual, t0);
        let tick = run_due(&paths, &opts(None), || t0 + Duration::from_secs(59)).unwrap();
        assert!(tick.done.is_none() && tick.next.is_none());
        assert_eq!(tick.journal.automatic, Automatic::No);
        // A generated set whose issuer the user then replaces by hand is the user's.
        let u = tempfile::tempdir().unwrap();
        let p = StorePaths::in_dir(u.path());
        start(&p, Rotation::Automatic, t0);
        let (_, other) = Credentials::generate("localhost", ID, t0, Duration::ZERO).unwrap();
        fs::write(&p.ca, &other.ca).unwrap();
        fs::write(&p.issuer_key, &*other.key).unwrap();
        fs::write(&p.issuer_cert, &other.issuer).unwrap();
        let tick = run_due(&p, &opts(None), || t0 + Duration::from_secs(59)).unwrap();
        assert!(tick.done.is_none());
        assert_eq!(tick.journal.automatic, Automatic::Replaced);
    }

    #[test]
    fn a_crash_at_any_point_of_any_step_recovers_and_rotation_goes_on() {
        for point in CrashPoint::ALL
            .into_iter()
            .filter(|p| !CrashPoint::JWT.contains(p))
        {
            let t = tempfile::tempdir().unwrap();
            let paths = StorePaths::in_dir(t.path());
            let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            start(&paths, Rotation::Automatic, t0);
            // Run until the step reaches the point and stops there, as a kill -9 would.
            let (now, crashed) = run_to_crash(&paths, &opts(Some(point)), t0);
            assert!(crashed, "{point} never reached");
            // The next start recovers under the lock, and the set it loads is whole.
            assert_eq!(
                start(&paths, Rotation::Automatic, now),
                Origin::Loaded,
                "{point}"
            );
            consistent(&paths, now);
            assert_eq!(read(&paths).unwrap().automatic, Automatic::Yes, "{point}");
            // And the rotation goes on from there.
            let steps = run(&paths, now, 100);
            assert!(
                steps.iter().filter(|s| **s == Step::Activate).count() >= 2,
                "{point}: {steps:?}"
            );
        }
    }

    /// A JWT key and set for `paths` (ES256), marked as Sigil's when `marked`.
    fn jwt_key(paths: &StorePaths, marked: bool) {
        let names = crate::ca::jwt::JwtKeyPaths {
            key: paths.jwt_key.clone(),
            jwks: paths.jwks.clone(),
        };
        let marker = paths.jwt_marker();
        crate::ca::jwt::load_or_generate(
            &names,
            crate::ca::jwt::JwtAlgorithm::ES256,
            None,
            marked.then_some(marker.as_path()),
        )
        .unwrap();
    }

    /// One JWT key as [`JwtHistory`] saw it.
    struct Seen {
        key: String,
        published: SystemTime,
        first_signed: Option<SystemTime>,
        last_signed: Option<SystemTime>,
        left: bool,
    }

    /// The JWT key's history as the journal runs, checked at every look: the key that signs is
    /// in the set; a key signs only once it has been in the set for a holder's TTL (the first
    /// excepted); a key leaves the set only a TTL after it last signed, and never comes back.
    #[derive(Default)]
    struct JwtHistory {
        keys: Vec<Seen>,
    }

    impl JwtHistory {
        fn look(&mut self, paths: &StorePaths, now: SystemTime, ttl: Duration, what: &str) {
            use crate::ca::jwt::kid_in_set;
            let set = fs::read_to_string(&paths.jwks).unwrap();
            let signing = fs::read_to_string(&paths.jwt_key).unwrap();
            let staged = fs::read_to_string(paths.dir.join(NEXT).join(JWT_KEY)).ok();
            for k in [Some(signing.clone()), staged].into_iter().flatten() {
                if kid_in_set(&set, &k).is_some() && !self.keys.iter().any(|e| e.key == k) {
                    self.keys.push(Seen {
                        key: k,
                        published: now,
                        first_signed: None,
                        last_signed: None,
                        left: false,
                    });
                }
            }
            let first = self.keys.first().map(|e| e.key.clone());
            for seen in &mut self.keys {
                let in_set = kid_in_set(&set, &seen.key).is_some();
                if seen.key == signing {
                    assert!(in_set, "{what}: the signing key is not in the set");
                    if seen.first_signed.is_none() && first.as_ref() != Some(&seen.key) {
                        assert!(
                            now >= seen.published + ttl,
                            "{what}: a key signs {:?} after it was published",
                            now.duration_since(seen.published)
                        );
                    }
                    seen.first_signed.get_or_insert(now);
                    seen.last_signed = Some(now);
                }
                if in_set {
                    assert!(!seen.left, "{what}: a retired key came back");
                } else {
                    if let Some(last) = seen.last_signed {
                        assert!(
                            now >= last + ttl,
                            "{what}: a key left the set {:?} after it last signed",
                            now.duration_since(last)
                        );
                    }
                    seen.left = true;
                }
            }
        }
    }

    #[test]
    fn a_generated_jwt_key_rotates_with_the_ca_published_first_and_retired_last_across_crashes() {
        let points = std::iter::once(None).chain(CrashPoint::ALL.into_iter().map(Some));
        for point in points {
            let what = point.map_or_else(|| "no crash".to_owned(), |p| p.to_string());
            let t = tempfile::tempdir().unwrap();
            let paths = StorePaths::in_dir(t.path());
            let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            start(&paths, Rotation::Automatic, t0);
            jwt_key(&paths, true);
            let with_jwt = |crash| StepOptions {
                jwt: Some(crate::ca::jwt::JwtAlgorithm::ES256),
                ..opts(crash)
            };
            let ttl = opts(None).policy.workload_ttl;
            let mut history = JwtHistory::default();
            let mut crashed = false;
            for s in 0..150 {
                let now = t0 + Duration::from_secs(s);
                loop {
                    let crash = if crashed { None } else { point };
                    match run_due(&paths, &with_jwt(crash), || now) {
                        Ok(tick) if tick.done.is_some() => {}
                        Ok(_) => break,
                        // As a kill -9 there: the next look (a restart) recovers.
                        Err(RotationError::Interrupted(_)) => {
                            crashed = true;
                            history.look(&paths, now, ttl, &what);
                        }
                        Err(e) => panic!("{what}: {e}"),
                    }
                    history.look(&paths, now, ttl, &what);
                }
                history.look(&paths, now, ttl, &what);
            }
            assert!(point.is_none() || crashed, "{what} never reached");
            let signed = history
                .keys
                .iter()
                .filter(|e| e.first_signed.is_some())
                .count();
            assert!(signed >= 4, "{what}: {signed} keys signed in 150 s");
            let set = fs::read_to_string(&paths.jwks).unwrap();
            let published = history
                .keys
                .iter()
                .filter(|e| crate::ca::jwt::kid_in_set(&set, &e.key).is_some())
                .count();
            assert!(published <= 2, "{what}: {published} keys still published");
        }
    }

    #[test]
    fn a_jwt_key_the_user_brought_is_never_rotated() {
        let t = tempfile::tempdir().unwrap();
        let paths = StorePaths::in_dir(t.path());
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        start(&paths, Rotation::Automatic, t0);
        jwt_key(&paths, false);
        let (key, set) = (
            fs::read_to_string(&paths.jwt_key).unwrap(),
            fs::read_to_string(&paths.jwks).unwrap(),
        );
        let inode = {
            use std::os::unix::fs::MetadataExt as _;
            fs::metadata(&paths.jwks).unwrap().ino()
        };
        let o = StepOptions {
            jwt: Some(crate::ca::jwt::JwtAlgorithm::ES256),
            ..opts(None)
        };
        let mut activations = 0;
        for s in 0..100 {
            let now = t0 + Duration::from_secs(s);
            while let Some((step, _)) = run_due(&paths, &o, || now).unwrap().done {
                activations += usize::from(step == Step::Activate);
            }
        }
        assert!(activations >= 2, "the CA rotated");
        assert_eq!(fs::read_to_string(&paths.jwt_key).unwrap(), key);
        assert_eq!(fs::read_to_string(&paths.jwks).unwrap(), set);
        // Not even rewritten (it may be read-only, or a link to the operator's file).
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(fs::metadata(&paths.jwks).unwrap().ino(), inode);
    }

    #[test]
    fn a_jwt_key_the_operator_put_in_place_during_an_interrupted_activation_stays() {
        for point in [CrashPoint::ActivateCommitted, CrashPoint::ActivateJwtMarker] {
            let t = tempfile::tempdir().unwrap();
            let paths = StorePaths::in_dir(t.path());
            let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            start(&paths, Rotation::Automatic, t0);
            jwt_key(&paths, true);
            let o = StepOptions {
                jwt: Some(crate::ca::jwt::JwtAlgorithm::ES256),
                ..opts(Some(point))
            };
            let (at, _) = run_to_crash(&paths, &o, t0);
            // The operator's own key and set, before anything restarts.
            fs::remove_file(&paths.jwt_key).unwrap();
            fs::remove_file(&paths.jwks).unwrap();
            jwt_key(&paths, false);
            let mine = fs::read_to_string(&paths.jwt_key).unwrap();
            run_due(&paths, &opts(None), || at).unwrap();
            assert_eq!(fs::read_to_string(&paths.jwt_key).unwrap(), mine, "{point}");
            assert!(!t.path().join(ACTIVATING).exists(), "{point}");
        }
    }

    #[test]
    fn an_interrupted_step_is_set_aside_over_credentials_replaced_by_hand() {
        for point in [CrashPoint::PrepareCommitted, CrashPoint::ActivateCommitted] {
            let t = tempfile::tempdir().unwrap();
            let paths = StorePaths::in_dir(t.path());
            let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            start(&paths, Rotation::Automatic, t0);
            let (at, _) = run_to_crash(&paths, &opts(Some(point)), t0);
            // The operator puts their own set in place before anything restarts.
            let (_, mine) = Credentials::generate("localhost", ID, at, Duration::ZERO).unwrap();
            fs::write(&paths.ca, &mine.ca).unwrap();
            fs::write(&paths.issuer_key, &*mine.key).unwrap();
            fs::write(&paths.issuer_cert, &mine.issuer).unwrap();
            // A kill while a slot was being removed leaves a tombstone.
            fs::create_dir_all(t.path().join(format!("{TRASH}{OLD}"))).unwrap();
            assert_eq!(
                start(&paths, Rotation::Automatic, at),
                Origin::Loaded,
                "{point}"
            );
            assert_eq!(fs::read_to_string(&paths.ca).unwrap(), mine.ca, "{point}");
            assert_eq!(
                fs::read_to_string(&paths.issuer_key).unwrap(),
                *mine.key,
                "{point}"
            );
            assert_eq!(
                fs::read_to_string(&paths.issuer_cert).unwrap(),
                mine.issuer,
                "{point}"
            );
            for gone in [NEXT, ACTIVATING] {
                assert!(!t.path().join(gone).exists(), "{point}: {gone} kept");
            }
            assert!(!t.path().join(format!("{TRASH}{OLD}")).exists());
            assert_eq!(read(&paths).unwrap().automatic, Automatic::Replaced);
        }
    }
}
