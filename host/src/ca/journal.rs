//! The rotation journal's three steps as pure functions over one in-memory copy of a
//! credential set and its slots ([`Set`]): what each step requires, refuses and produces, in
//! one place for both stores. The Secret store ([`super::secret_store`]) writes a step's
//! result as one replace at the resourceVersion it read (the API server's optimistic
//! concurrency is its lock and its commit point); the file store ([`super::rotation`]) writes
//! the same result file by file, in its crash-safe order.
//!
//! The slots are those of [`super::rotation`]: the active pair (the issuer that signs, the
//! published roots), the prepared pair (its root published since `since`, prepared beside the
//! issuer `prepared_for`) and the old pair (its roots still published; its successor active
//! since `since`), plus the marker of credentials Sigil generated.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::rotation::{roots_of, sentry_id_of, Automatic, RotationError, StepOptions};
use super::schedule::Step;
use super::{pem_of, rfc3339, store, Credentials};
use crate::pki;

/// The prepared pair.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Its root (PEM).
    pub ca: String,
    /// Its issuer (PEM).
    pub issuer: String,
    /// Its issuer's key (PEM).
    pub key: Zeroizing<String>,
    /// The issuer that was active when it was prepared (PEM).
    pub prepared_for: String,
    /// When its root was published.
    pub since: SystemTime,
}

/// The old pair, retiring.
#[derive(Clone, Debug)]
pub struct Retiring {
    /// Its roots (PEM), leaving the bundle at retirement.
    pub ca: String,
    /// Its issuer (PEM).
    pub issuer: String,
    /// When its successor was activated.
    pub since: SystemTime,
}

/// A credential set with its journal.
#[derive(Clone, Debug)]
pub struct Set {
    /// The published roots (PEM): the active pair's, a prepared one's, a retiring one's and
    /// any the operator keeps.
    pub ca: String,
    /// The issuer that signs (PEM chain).
    pub issuer: String,
    /// Its key (PEM).
    pub key: Zeroizing<String>,
    /// The automatic-rotation marker ([`store::auto_marker`] of the issuer Sigil generated).
    pub auto: Option<String>,
    /// The prepared pair.
    pub next: Option<Prepared>,
    /// The retiring pair.
    pub old: Option<Retiring>,
}

/// The certificates of a PEM text, DER (none if it does not read).
pub fn ders(pem: &str) -> Vec<Vec<u8>> {
    pki::pem_certificates(pem.as_bytes()).unwrap_or_default()
}

fn first(pem: &str) -> Vec<u8> {
    ders(pem).into_iter().next().unwrap_or_default()
}

/// A slot's stamp as text: seconds since the epoch, rounded up (a step that waits for this
/// one never starts early).
pub fn stamp_text(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .to_string()
}

/// A stamp read back ([`stamp_text`]); `None` if it does not read.
pub fn parse_stamp(text: &str) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(text.trim().parse().ok()?))
}

/// `at` rounded up to a whole second, as a stamp stores it.
pub fn whole(at: SystemTime) -> SystemTime {
    parse_stamp(&stamp_text(at)).unwrap_or(at)
}

/// Whether Sentry rotates a set: the marker must name its issuer.
pub fn automatic(marker: Option<&str>, issuer_pem: &str) -> Automatic {
    match marker {
        None => Automatic::No,
        // Surrounding whitespace aside: an operator may write it by hand (see the README).
        Some(m) if m.trim() == store::auto_marker(issuer_pem).trim() => Automatic::Yes,
        Some(_) => Automatic::Replaced,
    }
}

/// `bundle` with the roots of `root` appended (publication; a root already there stays where
/// it is).
pub fn published(bundle: &[Vec<u8>], root: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = bundle.to_vec();
    out.extend(root.iter().filter(|r| !bundle.contains(r)).cloned());
    out
}

/// `bundle` with the roots of `root` first (activation: the first root is the one that
/// signs now, as Dapr orders `ca.crt`).
pub fn activated(bundle: &[Vec<u8>], root: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let rest = bundle.iter().filter(|d| !root.contains(d)).cloned();
    root.iter().cloned().chain(rest).collect()
}

/// `bundle` without the `retiring` roots, except those the active issuer chains to (they
/// never leave, whatever the record says).
pub fn retired(bundle: &[Vec<u8>], retiring: &[Vec<u8>], active_issuer: &str) -> Vec<Vec<u8>> {
    let active = ders(active_issuer);
    let keep = roots_of(active.last().map_or(&[][..], Vec::as_slice), bundle, &[]);
    bundle
        .iter()
        .filter(|d| !retiring.contains(d) || keep.contains(d))
        .cloned()
        .collect()
}

/// Refuses a step before one workload TTL plus the skew after `since` unless forced;
/// `why(ready)` says what a holder would suffer.
pub fn due(
    since: SystemTime,
    opts: &StepOptions,
    now: SystemTime,
    why: impl FnOnce(SystemTime) -> String,
) -> Result<(), RotationError> {
    let ready = since + opts.policy.workload_ttl + opts.policy.skew;
    if now < ready && !opts.force {
        return Err(RotationError::Refused(format!(
            "too early: {} (--force to do it anyway)",
            why(ready)
        )));
    }
    Ok(())
}

/// What a step did, for its log line; `bundle` names where the roots are published.
pub fn done(step: Step, opts: &StepOptions, now: SystemTime, bundle: &str) -> String {
    let ready = rfc3339(now + opts.policy.workload_ttl + opts.policy.skew);
    match step {
        Step::Prepare => format!(
            "prepared: a new root is published in {bundle} beside the old one; the old issuer \
             still signs. It may sign from {ready} (one workload TTL plus the skew: every \
             holder has renewed and holds the new root by then)."
        ),
        Step::Activate => format!(
            "activated: the new issuer signs; the old root may leave the bundle from {ready} \
             (no certificate from the old issuer is valid after that)."
        ),
        Step::Retire => format!("retired: the old root left {bundle}."),
    }
}

impl Set {
    /// The prepared pair, if it was prepared beside the issuer in place (one prepared for an
    /// issuer the operator replaced since is not the operator's plan: set aside).
    pub fn prepared(&self) -> Option<&Prepared> {
        self.next
            .as_ref()
            .filter(|p| first(&p.prepared_for) == first(&self.issuer))
    }

    /// Whether Sentry rotates this set.
    pub fn automatic(&self) -> Automatic {
        automatic(self.auto.as_deref(), &self.issuer)
    }

    /// The journal as [`super::rotation`] reports it.
    pub fn journal(&self) -> super::rotation::Journal {
        use super::rotation::slot;
        super::rotation::Journal {
            active: slot(&self.issuer, None),
            prepared: self.prepared().map(|p| slot(&p.issuer, Some(p.since))),
            old: self.old.as_ref().map(|o| slot(&o.issuer, Some(o.since))),
            automatic: self.automatic(),
        }
    }

    /// Takes `step` at `now`: the set after it, or why not.
    ///
    /// # Errors
    ///
    /// [`RotationError::Refused`] out of order or too early (unless `opts.force`), and
    /// [`RotationError::Credentials`] if a new pair cannot be made.
    pub fn take(
        &self,
        step: Step,
        opts: &StepOptions,
        now: SystemTime,
    ) -> Result<Self, RotationError> {
        match step {
            Step::Prepare => self.prepare(opts, now),
            Step::Activate => self.activate(opts, now),
            Step::Retire => self.retire(opts, now),
        }
    }

    /// A new root and issuer, prepared: the new root published beside the old one, the old
    /// issuer still signing.
    fn prepare(&self, opts: &StepOptions, now: SystemTime) -> Result<Self, RotationError> {
        if self.prepared().is_some() {
            return Err(RotationError::Refused(
                "a pair is already prepared: activate it first".into(),
            ));
        }
        let anchors = ders(&self.ca);
        let sentry_id = sentry_id_of(&first(&self.issuer), &anchors);
        let trust_domain = sentry_id
            .strip_prefix("spiffe://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("localhost")
            .to_owned();
        let (_, pem) = Credentials::generate_with(
            &trust_domain,
            &sentry_id,
            now,
            opts.policy.skew,
            opts.generation,
        )?;
        let bundle = published(&anchors, &ders(&pem.ca));
        Ok(Self {
            ca: pem_of(&bundle),
            next: Some(Prepared {
                ca: pem.ca,
                issuer: pem.issuer,
                key: pem.key,
                prepared_for: self.issuer.clone(),
                since: whole(now),
            }),
            ..self.clone()
        })
    }

    /// The prepared issuer signs; the outgoing pair's roots retire.
    fn activate(&self, opts: &StepOptions, now: SystemTime) -> Result<Self, RotationError> {
        let next = self.prepared().ok_or_else(|| {
            RotationError::Refused(
                "nothing is prepared: run `sigil ca rotate prepare` first".into(),
            )
        })?;
        if self.old.is_some() {
            return Err(RotationError::Refused(
                "the previous root is still retiring: retire it first".into(),
            ));
        }
        due(next.since, opts, now, |ready| {
            format!(
                "the new root was published at {}; holders that have not renewed since would \
                 refuse certificates from the new issuer until {}",
                rfc3339(next.since),
                rfc3339(ready)
            )
        })?;
        let new_root = ders(&next.ca);
        let bundle = ders(&self.ca);
        let outgoing = ders(&self.issuer);
        let retiring = roots_of(
            outgoing.last().map_or(&[][..], Vec::as_slice),
            &bundle,
            &new_root,
        );
        // The marker follows the issuer only if it followed the outgoing one: credentials
        // the user brought stay the user's.
        let auto = match self.automatic() {
            Automatic::Yes => Some(store::auto_marker(&next.issuer)),
            Automatic::No | Automatic::Replaced => self.auto.clone(),
        };
        Ok(Self {
            ca: pem_of(&activated(&bundle, &new_root)),
            issuer: next.issuer.clone(),
            key: next.key.clone(),
            auto,
            next: None,
            old: Some(Retiring {
                ca: pem_of(&retiring),
                issuer: self.issuer.clone(),
                since: whole(now),
            }),
        })
    }

    /// The old pair's roots leave the bundle.
    fn retire(&self, opts: &StepOptions, now: SystemTime) -> Result<Self, RotationError> {
        let old = self.old.as_ref().ok_or_else(|| {
            RotationError::Refused("nothing to retire: run `sigil ca rotate activate` first".into())
        })?;
        due(old.since, opts, now, |ready| {
            format!(
                "certificates from the old issuer may be valid until {}",
                rfc3339(ready)
            )
        })?;
        let bundle = retired(&ders(&self.ca), &ders(&old.ca), &self.issuer);
        Ok(Self {
            ca: pem_of(&bundle),
            old: None,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ID: &str = "spiffe://localhost/ns/default/dapr-sentry";

    fn opts() -> StepOptions {
        crate::ca::rotation::tests::opts(None)
    }

    fn generated(now: SystemTime) -> Set {
        let (_, pem) = Credentials::generate("localhost", ID, now, Duration::ZERO).unwrap();
        Set {
            auto: Some(store::auto_marker(&pem.issuer)),
            ca: pem.ca,
            issuer: pem.issuer,
            key: pem.key,
            next: None,
            old: None,
        }
    }

    #[test]
    fn the_three_steps_publish_first_sign_next_and_retire_last() {
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let o = opts();
        let set = generated(t0);
        let first_root = ders(&set.ca);
        let p = set.take(Step::Prepare, &o, t0).unwrap();
        let next_root = ders(&p.next.as_ref().unwrap().ca);
        assert_eq!(
            ders(&p.ca),
            [first_root.clone(), next_root.clone()].concat()
        );
        assert_eq!(p.issuer, set.issuer, "the old issuer still signs");
        // Out of order, or too early: refused, nothing changes.
        for (s, step, at) in [
            (&p, Step::Prepare, t0),
            (&p, Step::Retire, t0),
            (&p, Step::Activate, t0 + Duration::from_secs(5)),
            (&set, Step::Activate, t0 + Duration::from_secs(60)),
        ] {
            assert!(
                matches!(s.take(step, &o, at), Err(RotationError::Refused(_))),
                "{step:?}"
            );
        }
        let a = p
            .take(Step::Activate, &o, t0 + Duration::from_secs(6))
            .unwrap();
        assert_eq!(
            ders(&a.ca),
            [next_root.clone(), first_root.clone()].concat()
        );
        assert_eq!(a.automatic(), Automatic::Yes, "the marker follows");
        assert_eq!(ders(&a.old.as_ref().unwrap().ca), first_root);
        assert!(a
            .take(Step::Retire, &o, t0 + Duration::from_secs(11))
            .is_err());
        let r = a
            .take(Step::Retire, &o, t0 + Duration::from_secs(12))
            .unwrap();
        assert_eq!(ders(&r.ca), next_root);
        assert!(r.old.is_none() && r.next.is_none());
        // Forced, a step is taken early.
        let forced = StepOptions { force: true, ..o };
        assert!(p.take(Step::Activate, &forced, t0).is_ok());
    }

    #[test]
    fn a_pair_prepared_for_a_replaced_issuer_is_set_aside_and_a_users_set_stays_the_users() {
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let p = generated(t0).take(Step::Prepare, &opts(), t0).unwrap();
        let other = generated(t0);
        let replaced = Set {
            ca: other.ca.clone(),
            issuer: other.issuer.clone(),
            key: other.key.clone(),
            ..p
        };
        assert!(replaced.prepared().is_none());
        // A marker written by hand (the bare hex digest, no newline) counts.
        let bare = store::auto_marker(&other.issuer).trim().to_owned();
        assert_eq!(automatic(Some(&bare), &other.issuer), Automatic::Yes);
        assert_eq!(replaced.automatic(), Automatic::Replaced);
        let user = Set {
            auto: None,
            ..other
        };
        let up = user.take(Step::Prepare, &opts(), t0).unwrap();
        let ua = up
            .take(Step::Activate, &opts(), t0 + Duration::from_secs(6))
            .unwrap();
        assert_eq!(
            ua.automatic(),
            Automatic::No,
            "a user's set never becomes Sigil's"
        );
    }

    #[test]
    fn retirement_keeps_the_root_the_active_issuer_chains_to() {
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let set = generated(t0);
        let root = ders(&set.ca);
        assert_eq!(retired(&root, &root, &set.issuer), root);
        assert_eq!(published(&root, &root), root);
        assert_eq!(activated(&root, &root), root);
    }
}
