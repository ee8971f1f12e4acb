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
//!
//! Sentry's JWT signing key rides on the same steps ([`JwtSlots`], issue 17): when Sigil
//! generated it (its marker names it) and Sentry says which algorithm it signs with
//! ([`StepOptions::jwt`]), the prepare makes the next key and publishes its public key in the
//! set, the activation makes it sign, and the retire drops the outgoing key's entry. The
//! holders' wait that Sentry passes ([`StepOptions::policy`]) is then the longer of the workload
//! TTL and `--jwt-ttl`, so relying parties have fetched the new key before it signs and the old
//! entry stays until the old key's last token has expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::jwt::{self, JwtAlgorithm};
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

/// Sentry's JWT signing key and its published set, with the journal's JWT slots.
#[derive(Clone, Debug)]
pub struct JwtSlots {
    /// The key that signs (PEM).
    pub key: Zeroizing<String>,
    /// The published key set (JSON).
    pub jwks: String,
    /// The marker of a key Sigil generated: its RFC 7638 thumbprint
    /// ([`jwt::key_thumbprint`]); Sentry rotates the key only while it names `key`.
    pub auto: Option<String>,
    /// The prepared key (PEM), published in `jwks` since the prepare.
    pub next: Option<Zeroizing<String>>,
    /// The `kid` of the outgoing key, in `jwks` until the retire.
    pub old_kid: Option<String>,
    /// The holders' wait Sentry used when it prepared `next` (the longer of the workload TTL
    /// and `--jwt-ttl`): the activation waits at least this long after the prepare.
    pub next_wait: Option<Duration>,
    /// The wait in force when the outgoing key stopped signing: its entry stays this long (plus
    /// the skew) after the activation, however the step is taken later (`sigil ca rotate`, a
    /// Sentry restarted with other flags).
    pub old_wait: Option<Duration>,
}

impl JwtSlots {
    /// Whether the key is Sigil's to rotate: the marker names it.
    pub fn automatic(&self) -> bool {
        self.auto
            .as_deref()
            .is_some_and(|m| jwt::key_thumbprint(&self.key).is_some_and(|own| own == m.trim()))
    }

    /// The longest holders' wait a JWT slot in flight asks for.
    pub fn wait(&self) -> Option<Duration> {
        let next = self.next.as_ref().and(self.next_wait);
        let old = self.old_kid.as_ref().and(self.old_wait);
        next.max(old)
    }

    /// Prepares the next key for `algorithm` (if the key is Sigil's and none is prepared):
    /// its public key goes into the set now, it signs from the activation.
    fn prepare(
        &self,
        algorithm: Option<JwtAlgorithm>,
        wait: Duration,
    ) -> Result<Self, RotationError> {
        let Some(algorithm) = algorithm.filter(|_| self.automatic() && self.next.is_none()) else {
            return Ok(self.clone());
        };
        let next = jwt::generate(algorithm)?;
        Ok(Self {
            jwks: jwt::set_with_key(&self.jwks, &next, algorithm)?,
            next: Some(next),
            next_wait: Some(wait),
            ..self.clone()
        })
    }

    /// The prepared key signs; the outgoing key's entry is kept until the retire. A key the
    /// operator replaced since the prepare stays, and a prepared key the set no longer holds
    /// (a set rewritten by hand) is not made to sign: the prepared key and its entry go, and the
    /// CA's step goes on (a JWT key is never a reason for the issuer to expire).
    fn activate(&self, wait: Duration) -> Result<Self, RotationError> {
        let Some(next) = &self.next else {
            return Ok(self.clone());
        };
        if !self.automatic() || jwt::kid_in_set(&self.jwks, next).is_none() {
            tracing::warn!(
                "the prepared JWT key is not activated: the JWT key or its set was changed by                  hand since the prepare (the key in place keeps signing)"
            );
            let jwks = match jwt::kid_in_set(&self.jwks, next) {
                Some(kid) => jwt::set_without_kid(&self.jwks, &kid)?,
                None => self.jwks.clone(),
            };
            return Ok(Self {
                jwks,
                next: None,
                next_wait: None,
                ..self.clone()
            });
        }
        Ok(Self {
            key: next.clone(),
            jwks: self.jwks.clone(),
            auto: jwt::key_thumbprint(next),
            next: None,
            next_wait: None,
            old_kid: jwt::kid_in_set(&self.jwks, &self.key),
            old_wait: Some(self.next_wait.unwrap_or_default().max(wait)),
        })
    }

    /// The outgoing key's entry leaves the set (never the signing key's).
    fn retire(&self) -> Result<Self, RotationError> {
        let Some(kid) = &self.old_kid else {
            return Ok(self.clone());
        };
        let jwks = if jwt::kid_in_set(&self.jwks, &self.key).as_ref() == Some(kid) {
            self.jwks.clone()
        } else {
            jwt::set_without_kid(&self.jwks, kid)?
        };
        Ok(Self {
            jwks,
            old_kid: None,
            old_wait: None,
            ..self.clone()
        })
    }
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
    /// Sentry's JWT signing key, when the store holds one.
    pub jwt: Option<JwtSlots>,
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

/// A JWT slot's wait as text: whole seconds, rounded up (never shorter than the wait).
pub fn wait_text(wait: Duration) -> String {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).to_string()
}

/// A wait read back ([`wait_text`]); `None` if it does not read.
pub fn parse_wait(text: &str) -> Option<Duration> {
    text.trim().parse().ok().map(Duration::from_secs)
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

    /// `opts` with the holders' wait lengthened to what a JWT slot in flight recorded.
    fn effective(&self, opts: &StepOptions) -> StepOptions {
        let mut opts = *opts;
        if let Some(wait) = self.jwt.as_ref().and_then(JwtSlots::wait) {
            opts.policy.workload_ttl = opts.policy.workload_ttl.max(wait);
        }
        opts
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
            jwt_wait: self.jwt.as_ref().and_then(JwtSlots::wait),
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
        let opts = &self.effective(opts);
        let after = match step {
            Step::Prepare => self.prepare(opts, now),
            Step::Activate => self.activate(opts, now),
            Step::Retire => self.retire(opts, now),
        }?;
        // A JWT key the set published before the step is published after it.
        let published = |j: &JwtSlots| jwt::kid_in_set(&j.jwks, &j.key).is_some();
        if let (Some(before), Some(j)) = (&self.jwt, &after.jwt) {
            if published(before) && !published(j) {
                return Err(RotationError::Refused(
                    "the step would leave the JWT signing key out of the published set".into(),
                ));
            }
        }
        Ok(after)
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
        let jwt = self
            .jwt
            .as_ref()
            .map(|j| j.prepare(opts.jwt, opts.policy.workload_ttl))
            .transpose()?;
        Ok(Self {
            ca: pem_of(&bundle),
            jwt,
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
            jwt: self
                .jwt
                .as_ref()
                .map(|j| j.activate(opts.policy.workload_ttl))
                .transpose()?,
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
            jwt: self.jwt.as_ref().map(JwtSlots::retire).transpose()?,
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
            jwt: None,
        }
    }

    /// `set` holding `key` (ES256) as a JWT key Sigil generated, published alone.
    fn with_jwt_key(set: Set, key: &Zeroizing<String>) -> Set {
        Set {
            jwt: Some(JwtSlots {
                jwks: jwt::set_with_key(r#"{"keys":[]}"#, key, JwtAlgorithm::ES256).unwrap(),
                auto: jwt::key_thumbprint(key),
                key: key.clone(),
                next: None,
                old_kid: None,
                next_wait: None,
                old_wait: None,
            }),
            ..set
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
    fn a_generated_jwt_key_rides_on_the_steps_and_one_replaced_by_hand_stays() {
        use jwt::{kid_in_set, set_with_key};
        let es = JwtAlgorithm::ES256;
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let key = jwt::generate(es).unwrap();
        let set = with_jwt_key(generated(t0), &key);
        // Without an algorithm (`sigil ca rotate`), no JWT key is prepared.
        let by_hand = set.take(Step::Prepare, &opts(), t0).unwrap();
        assert!(by_hand.jwt.unwrap().next.is_none());
        let o = StepOptions {
            jwt: Some(es),
            ..opts()
        };
        let p = set.take(Step::Prepare, &o, t0).unwrap();
        let pj = p.jwt.clone().unwrap();
        let next = pj.next.clone().unwrap();
        assert_eq!(pj.key, key, "the old key still signs");
        assert!(
            kid_in_set(&pj.jwks, &next).is_some(),
            "published at the prepare"
        );
        let a = p
            .take(Step::Activate, &o, t0 + Duration::from_secs(6))
            .unwrap();
        let aj = a.jwt.clone().unwrap();
        assert_eq!((aj.key.as_str(), aj.next.is_none()), (next.as_str(), true));
        assert!(aj.automatic(), "the marker follows");
        assert_eq!(aj.old_kid, kid_in_set(&pj.jwks, &key));
        assert!(
            kid_in_set(&aj.jwks, &key).is_some(),
            "kept until the retire"
        );
        let r = a
            .take(Step::Retire, &o, t0 + Duration::from_secs(12))
            .unwrap()
            .jwt
            .unwrap();
        assert!(kid_in_set(&r.jwks, &key).is_none() && kid_in_set(&r.jwks, &next).is_some());
        assert!(r.old_kid.is_none());
        // A key the operator put in place after the prepare stays; the prepared one goes.
        let mine = jwt::generate(es).unwrap();
        let replaced = Set {
            jwt: Some(JwtSlots {
                key: mine.clone(),
                jwks: set_with_key(&pj.jwks, &mine, es).unwrap(),
                ..pj.clone()
            }),
            ..p.clone()
        };
        let kept = replaced
            .take(Step::Activate, &o, t0 + Duration::from_secs(6))
            .unwrap()
            .jwt
            .unwrap();
        assert_eq!(kept.key, mine);
        assert!(kept.next.is_none() && kid_in_set(&kept.jwks, &next).is_none());
        assert!(kept.old_kid.is_none(), "nothing of the operator's retires");
        // A set rewritten by hand without the prepared key: the CA activates, the key in place
        // keeps signing (a JWT key never holds the issuer back).
        let rewritten = Set {
            jwt: Some(JwtSlots {
                jwks: set_with_key(r#"{"keys":[]}"#, &key, es).unwrap(),
                ..pj.clone()
            }),
            ..p.clone()
        };
        let a2 = rewritten
            .take(Step::Activate, &o, t0 + Duration::from_secs(6))
            .unwrap();
        assert_ne!(a2.issuer, p.issuer, "the CA activated");
        let j2 = a2.jwt.unwrap();
        assert_eq!((j2.key.as_str(), j2.next.is_none()), (key.as_str(), true));
    }

    #[test]
    fn the_wait_a_jwt_slot_recorded_holds_whoever_takes_the_next_step() {
        let es = JwtAlgorithm::ES256;
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let key = jwt::generate(es).unwrap();
        let set = with_jwt_key(generated(t0), &key);
        // Sentry with 20 s tokens (its wait: 20 s) prepares and activates.
        let mut sentry = StepOptions {
            jwt: Some(es),
            ..opts()
        };
        sentry.policy.workload_ttl = Duration::from_secs(20);
        let p = set.take(Step::Prepare, &sentry, t0).unwrap();
        assert_eq!(p.journal().jwt_wait, Some(Duration::from_secs(20)));
        // By hand with 5 s certificates: too early until 20 s plus the skew.
        let by_hand = opts();
        let early = p.take(Step::Activate, &by_hand, t0 + Duration::from_secs(6));
        assert!(matches!(early, Err(RotationError::Refused(_))));
        let a = p
            .take(Step::Activate, &by_hand, t0 + Duration::from_secs(21))
            .unwrap();
        assert_eq!(
            a.jwt.as_ref().unwrap().old_wait,
            Some(Duration::from_secs(20))
        );
        let at = t0 + Duration::from_secs(21);
        let early = a.take(Step::Retire, &by_hand, at + Duration::from_secs(6));
        assert!(matches!(early, Err(RotationError::Refused(_))));
        // The schedule waits too (its next step may be the next prepare, which comes first).
        let (step, due) = a.journal().next(&by_hand.policy).unwrap();
        assert!(
            step != Step::Retire || due >= at + Duration::from_secs(21),
            "{step:?} at {due:?}"
        );
        let mut no_wait = a.journal();
        no_wait.jwt_wait = None;
        assert!(no_wait.next(&by_hand.policy).unwrap().1 <= due);
        let r = a
            .take(Step::Retire, &by_hand, at + Duration::from_secs(21))
            .unwrap();
        assert_eq!(r.journal().jwt_wait, None);
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
