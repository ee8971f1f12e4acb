//! When the CA's credentials should change: the sans-IO planner of automatic root rotation
//! (issue 14), modelled on SPIRE's prepared / active / old journal
//! (`pkg/server/ca/manager/journal.go`) and adapted to a root + issuer pair. A pure function
//! of what the journal records, and of the workload TTL and clock skew: no clock, no file.
//! [`crate::ca::rotation`] keeps the journal on disk and takes the steps;
//! [`crate::sentry::rotate`] runs them in Sentry.
//!
//! The three steps, for the active pair's issuer valid over `[nb, na]` (its life `na − nb`):
//!
//! - **prepare** at `na − min(life / 2, 30 d)`: a new root and issuer are made and the new
//!   root is *published* (in `ca.crt` and Sentry's answers) while the old issuer still signs;
//! - **activate** at the later of `published + TTL + skew` (every holder renews within one
//!   TTL, so by then every holder has the new root) and `na − min(life / 6, 7 d)`: the new
//!   issuer signs;
//! - **retire** at `activated + TTL + skew`: workload certificates are clamped to their
//!   issuer and the old issuer signs nothing after activation, so none chaining to the old
//!   root outlives that; the old root leaves the bundle.
//!
//! [`next`] returns the earliest due step; a step run late (Sentry down, a crash) only moves
//! the later ones. The property test drives a CA, holders renewing at random phases and
//! fractions of the TTL, random lifetimes, skews, delays and CA clock jumps (back by up to
//! two lifetimes, any number of times; forward once by up to the skew), and checks the
//! invariant: every unexpired certificate the CA issued chains to a root every holder has in
//! its bundle. A forward jump beyond the skew breaks it (shown by a second test): the skew is
//! the planner's allowance for a CA clock running ahead, as it is the holders'.

use std::time::{Duration, SystemTime};

/// SPIRE's caps: prepare at most 30 days before the end, activate at most 7.
const PREPARE_CAP: Duration = Duration::from_secs(30 * 24 * 3600);
const ACTIVATE_CAP: Duration = Duration::from_secs(7 * 24 * 3600);

/// The issuer validity of a root + issuer pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The issuer's notBefore.
    pub not_before: SystemTime,
    /// The issuer's notAfter (never after the root's).
    pub not_after: SystemTime,
}

impl Pair {
    fn life(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// What the journal records: the pair that signs, the one published beside it (with when it
/// was published) and the one retiring (with when its successor began signing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Journal {
    /// The pair whose issuer signs.
    pub active: Pair,
    /// A pair published (its root in the bundle) but not signing yet, and since when.
    pub prepared: Option<(Pair, SystemTime)>,
    /// The previous pair, still in the bundle, and when its successor was activated.
    pub old: Option<(Pair, SystemTime)>,
}

/// What the schedule depends on besides the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The workload certificate lifetime (every holder renews within it).
    pub workload_ttl: Duration,
    /// The clock skew allowed.
    pub skew: Duration,
}

/// A step of the rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Make the next pair and publish its root.
    Prepare,
    /// The prepared pair's issuer starts signing; the active pair becomes the old one.
    Activate,
    /// The old pair's root leaves the bundle.
    Retire,
}

/// When the active pair's successor should be prepared.
pub fn prepare_at(active: &Pair) -> SystemTime {
    active.not_after - (active.life() / 2).min(PREPARE_CAP)
}

/// When a pair published at `published` may start signing in place of `active`.
pub fn activate_at(active: &Pair, published: SystemTime, policy: &Policy) -> SystemTime {
    let learned = published + policy.workload_ttl + policy.skew;
    let planned = active.not_after - (active.life() / 6).min(ACTIVATE_CAP);
    learned.max(planned)
}

/// When the old pair's root may leave the bundle, its successor active since `activated`.
pub fn retire_at(activated: SystemTime, policy: &Policy) -> SystemTime {
    activated + policy.workload_ttl + policy.skew
}

/// Whether a pair living `life` can be rotated with no holder refusing anything: the new
/// root must be published for one TTL plus the skew before the old issuer expires, so the
/// issuer must live more than twice that (prepare comes at half its life at the latest).
///
/// # Errors
///
/// Says what to change.
pub fn check(life: Duration, policy: &Policy) -> Result<(), String> {
    let needed = 2 * (policy.workload_ttl + policy.skew);
    // The lead between prepare and the issuer's end is capped (30 days): that must exceed
    // one TTL plus the skew too.
    if life <= needed || PREPARE_CAP <= policy.workload_ttl + policy.skew {
        return Err(format!(
            "an issuer living {} cannot be rotated without breaking holders: with workload \
             certificates of {} and a clock skew of {}, it must live more than {} (raise \
             --issuer-ttl and --root-ttl, or lower spec.mtls.workloadCertTTL, --jwt-ttl when \
             Sentry rotates its JWT key with the CA, or allowedClockSkew)",
            humantime::format_duration(life),
            humantime::format_duration(policy.workload_ttl),
            humantime::format_duration(policy.skew),
            humantime::format_duration(needed)
        ));
    }
    Ok(())
}

/// The next step and when it is due (it may be in the past: run it now). `None` never
/// happens while a pair is active; it is an `Option` for a journal with nothing to do.
pub fn next(journal: &Journal, policy: &Policy) -> Option<(Step, SystemTime)> {
    let mut due: Vec<(Step, SystemTime)> = Vec::with_capacity(2);
    if let Some((_, activated)) = journal.old {
        due.push((Step::Retire, retire_at(activated, policy)));
    }
    match journal.prepared {
        Some((_, published)) => due.push((
            Step::Activate,
            activate_at(&journal.active, published, policy),
        )),
        None => due.push((Step::Prepare, prepare_at(&journal.active))),
    }
    due.into_iter().min_by_key(|&(_, at)| at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_year_long_pair_follows_spires_caps() {
        let t0 = UNIX_EPOCH + secs(1_000_000);
        let year = secs(365 * 86_400);
        let active = Pair {
            not_before: t0,
            not_after: t0 + year,
        };
        let policy = Policy {
            workload_ttl: secs(86_400),
            skew: secs(900),
        };
        let j = Journal {
            active,
            prepared: None,
            old: None,
        };
        assert_eq!(
            next(&j, &policy),
            Some((Step::Prepare, t0 + year - PREPARE_CAP))
        );
        let published = t0 + year - PREPARE_CAP;
        let j = Journal {
            prepared: Some((active, published)),
            ..j
        };
        assert_eq!(
            next(&j, &policy),
            Some((Step::Activate, t0 + year - ACTIVATE_CAP))
        );
        let activated = t0 + year - ACTIVATE_CAP;
        // The new pair signs (made when it was published); the old one retires first.
        let successor = Pair {
            not_before: published,
            not_after: published + year,
        };
        let j = Journal {
            active: successor,
            prepared: None,
            old: Some((active, activated)),
        };
        assert_eq!(
            next(&j, &policy),
            Some((Step::Retire, activated + secs(86_400 + 900)))
        );
    }

    #[test]
    fn activation_waits_a_full_ttl_after_publishing() {
        let t0 = UNIX_EPOCH + secs(1_000_000);
        let active = Pair {
            not_before: t0,
            not_after: t0 + secs(60),
        };
        let policy = Policy {
            workload_ttl: secs(5),
            skew: secs(1),
        };
        // Published late (a crash): activation is a TTL + skew after, not at life/6.
        let published = t0 + secs(55);
        assert_eq!(activate_at(&active, published, &policy), t0 + secs(61));
    }

    /// A CA clock jump: at real second `at`, the CA's clock moves by `by` seconds.
    #[derive(Clone, Copy, Debug)]
    struct Jump {
        at: u64,
        by: i64,
    }

    /// A simulated CA, run by the planner with steps delayed at random (a crash, Sentry down)
    /// and its clock jumping at the given moments, and holders renewing at random fractions
    /// of the TTL on the real clock. Certificates carry the CA's times; holders judge expiry on
    /// the real clock. Returns the first violation of the invariant.
    fn simulate(
        life: u64,
        ttl: u64,
        skew: u64,
        holders: &[(u64, u64)],
        delays: &[u64],
        jumps: &[Jump],
        horizon: u64,
    ) -> Result<(), String> {
        #[derive(Clone, Copy)]
        struct Cert {
            root: u32,
            not_after: u64,
        }
        let policy = Policy {
            workload_ttl: secs(ttl),
            skew: secs(skew),
        };
        // Far enough from the epoch that a backward jump never goes below it.
        let base = 100 * life;
        let at = |t: u64| UNIX_EPOCH + secs(t);
        let of = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        // Roots are numbered; pair n's issuer is valid [start_n, start_n + life] (CA time).
        let mut next_root = 1u32;
        let mut active = (
            0u32,
            Pair {
                not_before: at(base),
                not_after: at(base + life),
            },
        );
        let mut prepared: Option<(u32, Pair, SystemTime)> = None;
        let mut old: Option<(u32, Pair, SystemTime)> = None;
        let mut published: Vec<u32> = vec![0];
        // Each holder: (renew period, phase), its bundle and its certificate.
        let mut bundles: Vec<Vec<u32>> = vec![published.clone(); holders.len()];
        let mut certs: Vec<Cert> = holders
            .iter()
            .map(|_| Cert {
                root: 0,
                not_after: base + ttl,
            })
            .collect();
        let mut step = 0usize;
        let mut offset = 0i64;
        let mut t = base;
        while t < base + horizon {
            for j in jumps.iter().filter(|j| j.at + base == t) {
                offset += j.by;
            }
            let ca = t.saturating_add_signed(offset);
            // The CA's steps due by its clock (each run after its random delay).
            loop {
                let j = Journal {
                    active: active.1,
                    prepared: prepared.map(|(_, p, at)| (p, at)),
                    old: old.map(|(_, p, at)| (p, at)),
                };
                let Some((what, when)) = next(&j, &policy) else {
                    break;
                };
                let delay = delays.get(step % delays.len().max(1)).copied().unwrap_or(0);
                if of(when) + delay > ca {
                    break;
                }
                step += 1;
                match what {
                    Step::Prepare => {
                        let p = Pair {
                            not_before: at(ca),
                            not_after: at(ca + life),
                        };
                        prepared = Some((next_root, p, at(ca)));
                        published.push(next_root);
                        next_root += 1;
                    }
                    Step::Activate => {
                        let (n, p, _) = prepared.take().unwrap();
                        old = Some((active.0, active.1, at(ca)));
                        active = (n, p);
                    }
                    Step::Retire => {
                        let (n, _, _) = old.take().unwrap();
                        published.retain(|&r| r != n);
                    }
                }
            }
            // Holders renew on their schedule (real time): a new certificate from the active
            // issuer (clamped to it, CA times) and the bundle as published now.
            for (h, &(fraction, phase)) in holders.iter().enumerate() {
                let period = (ttl * fraction / 100).max(1);
                let since = t - base;
                if since >= phase
                    && (since - phase).is_multiple_of(period)
                    && of(active.1.not_after) > ca
                {
                    certs[h] = Cert {
                        root: active.0,
                        not_after: (ca + ttl).min(of(active.1.not_after)),
                    };
                    bundles[h] = published.clone();
                }
            }
            // The invariant: every unexpired certificate chains to a root every holder has.
            for c in certs.iter().filter(|c| c.not_after > t) {
                for (h, b) in bundles.iter().enumerate() {
                    if !b.contains(&c.root) {
                        return Err(format!(
                            "t={}: a certificate under root {} (valid to {}) is not trusted by \
                             holder {h} (bundle {b:?})",
                            t - base,
                            c.root,
                            c.not_after - base
                        ));
                    }
                }
            }
            t += 1;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_unexpired_certificate_chains_to_a_root_every_holder_has(
            ttl in 2u64..40,
            life_in_ttls in 6u64..20,
            skew in 0u64..3,
            // Holders renew every 20–100 % of the TTL, from a random phase within the first TTL.
            holders in proptest::collection::vec((20u64..=100, 0u64..40), 1..5),
            delays in proptest::collection::vec(0u64..4, 1..6),
            // The CA's clock jumps back by up to two lifetimes, any number of times, and
            // forward once by up to the skew (more than the skew forward makes the CA's
            // certificates not yet valid for holders: no schedule can help then).
            back in proptest::collection::vec((0u64..1000, 0u64..1000), 0..4),
            forward in (0u64..1000, 0u64..=100),
        ) {
            let life = ttl * life_in_ttls;
            let holders: Vec<(u64, u64)> =
                holders.into_iter().map(|(f, p)| (f, p % ttl)).collect();
            let horizon = 3 * life;
            let mut jumps: Vec<Jump> = back
                .into_iter()
                .map(|(at, by)| Jump {
                    at: at * horizon / 1000,
                    by: -i64::try_from(by * 2 * life / 1000).unwrap(),
                })
                .collect();
            jumps.push(Jump {
                at: forward.0 * horizon / 1000,
                by: i64::try_from(forward.1 * skew / 100).unwrap(),
            });
            // Three lifetimes: at least two rotations without jumps.
            simulate(life, ttl, skew, &holders, &delays, &jumps, horizon)
                .map_err(TestCaseError::fail)?;
        }

        /// The simulation can fail: a forward jump of more than the skew right after a root
        /// is published breaks the invariant, as it would break holders.
        #[test]
        fn a_forward_jump_beyond_the_skew_is_caught(ttl in 4u64..20) {
            let life = ttl * 10;
            // One holder renews a second after the jump, the other a second later.
            let holders = [(100, 2), (100, 3)];
            // Prepare is at life/2, activation planned at 5/6 of the life: a jump of four TTLs
            // right after the prepare makes the activation come at once.
            let jumps = [Jump { at: life / 2 + 1, by: i64::try_from(4 * ttl).unwrap() }];
            prop_assert!(simulate(life, ttl, 0, &holders, &[0], &jumps, 3 * life).is_err());
        }
    }
}
