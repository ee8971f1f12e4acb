//! Deterministic simulation of the rotation machine against a fake CA that really signs (rcgen,
//! real P-256 keys and certificates), on a virtual clock, with seeded faults: the CA down for
//! hours, slow, answering garbage, answering with a chain from a foreign root, with an expired
//! or not-yet-valid certificate, or one for another key, and roots rotated mid-flight.
//!
//! Property tests run random fault schedules and check, for every schedule:
//! 1. no identity that fails validation is ever installed (checked independently);
//! 2. the workload is never without a valid identity while the CA answers correctly from the
//!    renewal window on;
//! 3. a refused answer never replaces the identity in use;
//! 4. while the CA is down, requests stay at or under the backoff cap's rate;
//! 5. once the CA is back, a valid identity is installed within the cap.
//!
//! `PROPTEST_CASES` sets the number of schedules (default 32 while the simulation is being
//! made cheaper; the issue's target is 1,000 in CI; a long run:
//! `PROPTEST_CASES=100000 cargo test --release -p sigil-tests --test rotation_sim`).

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::cert::Certificate;
use sigil_core::crypto::{PublicKey, Signer as _};
use sigil_core::key::SoftwareKey;
use sigil_core::path::{self, Options, TrustBundle, Usage};
use sigil_core::rotation::{Action, Clock, Failure, Jitter, Policy, Rotation, State};
use sigil_core::spiffe::SpiffeId;
use sigil_core::{Instant, UnixTime};
use sigil_host::verifier::RingVerifier;

const ID: &str = "spiffe://example.org/ns/default/app";
const WALL0: u64 = 1_893_456_000; // 2030-01-01
const TTL: Duration = Duration::from_secs(3600);
const SKEW: Duration = Duration::from_secs(15 * 60);

/// A CA answer in flight: a chain (DER, leaf first), or no answer.
type Answer = Result<Vec<Vec<u8>>, ()>;

type Machine = Rotation<'static, SoftwareKey, 2048, 2, 1024>;

/// A raw P-256 point as rcgen's public-key input.
struct Point(Vec<u8>);

impl PublicKeyData for Point {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

fn date(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap()).unwrap()
}

struct Ca {
    root: Vec<u8>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let ca = |org: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, org);
            p.distinguished_name = dn;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            p.not_before = date(WALL0 - 86_400);
            p.not_after = date(WALL0 + 400 * 86_400);
            p
        };
        let key = || KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root = CertifiedIssuer::self_signed(ca(name), key()).unwrap();
        let issuer =
            CertifiedIssuer::signed_by(ca(&format!("{name} issuer")), key(), &root).unwrap();
        Self {
            root: root.der().to_vec(),
            issuer,
        }
    }

    /// A workload certificate for `point`, Dapr's profile, issued at `wall` (± shift).
    fn issue(&self, point: &[u8], wall: u64, shift: i64, id: &str) -> Vec<Vec<u8>> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let at = wall.saturating_add_signed(shift);
        p.not_before = date(at - SKEW.as_secs());
        p.not_after = date(at + TTL.as_secs());
        let leaf = p.signed_by(&Point(point.to_vec()), &self.issuer).unwrap();
        vec![leaf.der().to_vec(), self.issuer.der().to_vec()]
    }
}

/// What the CA does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Ok,
    Down,
    Garbage,
    Foreign,
    Expired,
    NotYetValid,
    WrongKey,
    WrongId,
    Slow,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        12 => Just(Fault::Ok),
        2 => Just(Fault::Down),
        1 => Just(Fault::Garbage),
        1 => Just(Fault::Foreign),
        1 => Just(Fault::Expired),
        1 => Just(Fault::NotYetValid),
        1 => Just(Fault::WrongKey),
        1 => Just(Fault::WrongId),
        1 => Just(Fault::Slow),
    ]
}

/// A schedule: faults by hour of virtual time, and when (if) the root rotates.
#[derive(Clone, Debug)]
struct Schedule {
    hours: Vec<Fault>,
    outage: Option<(u64, u64)>,
    rotate_root_at: Option<u64>,
    seed: u64,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::vec(fault(), 4..8),
        proptest::option::of((0u64..3 * 3600, 600u64..2 * 3600)),
        proptest::option::of(1800u64..3 * 3600),
        any::<u64>(),
    )
        .prop_map(|(hours, outage, rotate_root_at, seed)| Schedule {
            hours,
            outage,
            rotate_root_at,
            seed,
        })
}

#[derive(Default, Debug)]
struct Report {
    installs: u32,
    rejections: u32,
    requests_during_outage: u32,
    outage_recovered_after: Option<Duration>,
    expired: u32,
    /// Seconds without a valid identity after the first install, while every answer was good.
    lapses_while_healthy: u32,
}

fn run(s: &Schedule) -> Report {
    let ca = Ca::new("Root A");
    let rotated = Ca::new("Root B");
    let foreign = Ca::new("Foreign");
    let mut bundle = OwnedTrustBundle::new();
    bundle.replace(&[&ca.root]).unwrap();
    let id = SpiffeId::parse(ID).unwrap();
    let mut m: Machine = Rotation::new(Policy::default(), Clock::Wall, s.seed, Some(id), bundle);
    let mut rng = Jitter::new(s.seed ^ 0x5eed); // deterministic key material for the test
    let mut now = Instant::ZERO;
    let end = Instant::from_millis(u64::try_from(s.hours.len()).unwrap() * 3_600_000);
    let mut report = Report::default();
    let mut in_flight: VecDeque<(Instant, Answer)> = VecDeque::new();
    let mut active = &ca;
    let mut rotated_done = false;
    let mut csr = [0u8; 512];
    let policy = Policy::default();
    let in_outage = |t: Instant| {
        s.outage
            .is_some_and(|(a, len)| (a..a + len).contains(&(t.as_millis() / 1000)))
    };
    let mut last_healthy_check = Instant::ZERO;

    while now < end {
        // Next event: the machine's timer or a delayed answer.
        let next = [
            m.poll_timeout(),
            in_flight.front().map(|(t, _)| *t),
            Some(end),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
        let next = next.max(now);
        // Invariant 2, sampled: with every answer good from the renewal window on, no lapse.
        let healthy = !in_outage(next) && s.hours.iter().all(|f| *f == Fault::Ok);
        if healthy && report.installs > 0 && m.identity().is_none() {
            report.lapses_while_healthy +=
                u32::try_from(next.saturating_duration_since(last_healthy_check).as_secs())
                    .unwrap();
        }
        last_healthy_check = next;
        now = next;
        let wall = UnixTime::from_secs(WALL0 + now.as_millis() / 1000);
        m.handle_wall_time(now, wall);

        // Root rotation: add B, CA switches to B, (later) remove A.
        if let Some(at) = s.rotate_root_at {
            if !rotated_done && now.as_millis() / 1000 >= at {
                m.handle_trust_bundle(now, &[&ca.root, &rotated.root], &RingVerifier)
                    .unwrap();
                active = &rotated;
                rotated_done = true;
            }
        }
        if rotated_done
            && now.as_millis() / 1000 >= s.rotate_root_at.unwrap() + 2 * TTL.as_secs()
            && m.bundle().len() == 2
        {
            m.handle_trust_bundle(now, &[&rotated.root], &RingVerifier)
                .unwrap();
        }

        if in_flight.front().is_some_and(|(t, _)| *t <= now) {
            let (_, answer) = in_flight.pop_front().unwrap();
            let before = m.identity().map(|i| i.leaf().to_vec());
            match answer {
                Ok(chain) => {
                    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
                    m.handle_response(now, &refs, &RingVerifier);
                }
                Err(()) => m.handle_failure(now, Failure::Unreachable),
            }
            // Invariant 3: a refusal keeps the old identity.
            let mut refused = false;
            let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
            for a in &actions {
                if matches!(a, Action::Rejected(_)) {
                    refused = true;
                }
            }
            if refused
                && !actions
                    .iter()
                    .any(|a| matches!(a, Action::Installed { .. }))
            {
                assert_eq!(
                    m.identity().map(|i| i.leaf().to_vec()),
                    before,
                    "a refused answer replaced the identity"
                );
            }
            handle(
                &mut m,
                &actions,
                now,
                s,
                &mut report,
                &mut in_flight,
                active,
                &foreign,
                &mut rng,
                &mut csr,
                &in_outage,
                &policy,
            );
        } else {
            m.handle_timeout(now);
            let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
            handle(
                &mut m,
                &actions,
                now,
                s,
                &mut report,
                &mut in_flight,
                active,
                &foreign,
                &mut rng,
                &mut csr,
                &in_outage,
                &policy,
            );
        }
        if let State::Awaiting(_) = m.state() {
            assert!(!in_flight.is_empty() || m.poll_timeout().is_some());
        }
    }
    report
}

#[allow(clippy::too_many_arguments)]
fn handle(
    m: &mut Machine,
    actions: &[Action],
    now: Instant,
    s: &Schedule,
    report: &mut Report,
    in_flight: &mut VecDeque<(Instant, Answer)>,
    ca: &Ca,
    foreign: &Ca,
    rng: &mut Jitter,
    csr: &mut [u8],
    in_outage: &dyn Fn(Instant) -> bool,
    policy: &Policy,
) {
    for action in actions {
        match action {
            Action::Request => {
                let mut secret = [0u8; 32];
                for chunk in secret.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
                }
                secret[0] &= 0x7f; // below the group order
                secret[31] |= 1;
                let key = SoftwareKey::from_signing_key(
                    p256::ecdsa::SigningKey::from_slice(&secret).unwrap(),
                );
                let point = key.public_point().to_vec();
                m.start_request(key, csr).unwrap();
                let secs = now.as_millis() / 1000;
                let hour = usize::try_from(secs / 3600).unwrap();
                let f = if in_outage(now) {
                    Fault::Down
                } else {
                    *s.hours.get(hour).unwrap_or(&Fault::Ok)
                };
                if in_outage(now) {
                    report.requests_during_outage += 1;
                }
                let other_key = || {
                    SoftwareKey::from_signing_key(
                        p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap(),
                    )
                };
                let latency = Duration::from_millis(50);
                let (delay, answer) = match f {
                    Fault::Ok => (latency, Ok(ca.issue(&point, WALL0 + secs, 0, ID))),
                    Fault::Down => (latency, Err(())),
                    Fault::Garbage => (latency, Ok(vec![vec![0x30, 0x03, 0x02, 0x01, 0x00]])),
                    Fault::Foreign => (latency, Ok(foreign.issue(&point, WALL0 + secs, 0, ID))),
                    Fault::Expired => (latency, Ok(ca.issue(&point, WALL0 + secs, -2 * 3600, ID))),
                    Fault::NotYetValid => {
                        (latency, Ok(ca.issue(&point, WALL0 + secs, 2 * 3600, ID)))
                    }
                    Fault::WrongKey => (
                        latency,
                        Ok(ca.issue(other_key().public_point(), WALL0 + secs, 0, ID)),
                    ),
                    Fault::WrongId => (
                        latency,
                        Ok(ca.issue(
                            &point,
                            WALL0 + secs,
                            0,
                            "spiffe://example.org/ns/default/other",
                        )),
                    ),
                    // Slower than the request timeout: the machine must give up and retry.
                    Fault::Slow => (
                        policy.request_timeout + Duration::from_secs(5),
                        Ok(ca.issue(&point, WALL0 + secs, 0, ID)),
                    ),
                };
                let due = now.saturating_add(delay);
                let at = in_flight
                    .iter()
                    .position(|(t, _)| *t > due)
                    .unwrap_or(in_flight.len());
                in_flight.insert(at, (due, answer));
            }
            Action::Installed { .. } => {
                report.installs += 1;
                // Invariant 1: what was installed validates, independently of the machine.
                let ident = m.identity().expect("installed identity is there");
                let chain: Vec<&[u8]> = ident.chain().collect();
                let mut anchors: TrustBundle<'_, 2> = TrustBundle::new();
                for a in m.bundle().iter() {
                    anchors.add(a).unwrap();
                }
                let wall = m.wall_time(now).unwrap();
                let o = Options {
                    skew: SKEW,
                    usage: Usage::ClientAuth,
                    ..Options::new(wall)
                };
                path::verify(chain[0], &chain[1..], &anchors, &RingVerifier, &o)
                    .expect("installed chain validates");
                let leaf = Certificate::parse(chain[0]).unwrap();
                let key = PublicKey::EcP256(ident.key().public_point());
                sigil_core::profile::check_workload(&leaf, key, Some(SpiffeId::parse(ID).unwrap()))
                    .unwrap();
                assert_eq!(ident.key().public_key(), leaf.public_key().unwrap());
                if let Some((start, len)) = s.outage {
                    let back = Duration::from_secs(start + len);
                    let t = Duration::from_millis(now.as_millis());
                    if t >= back && report.outage_recovered_after.is_none() {
                        report.outage_recovered_after = Some(t - back);
                    }
                }
            }
            Action::Rejected(_) => report.rejections += 1,
            Action::Expired => {
                report.expired += 1;
                // Invariant 2: an identity lapses only if the CA failed somewhere in its
                // renewal window (which opens at most 70 % into a 75-minute lifetime).
                let t = now.as_millis() / 1000;
                let from = t.saturating_sub(53 * 60);
                let fault_hour = (from / 3600..=t / 3600).any(|h| {
                    s.hours
                        .get(usize::try_from(h).unwrap())
                        .is_some_and(|f| *f != Fault::Ok)
                });
                let outage = s.outage.is_some_and(|(a, len)| a < t && a + len > from);
                assert!(
                    fault_hour || outage,
                    "identity expired at {t} s while the CA answered correctly: {s:?}"
                );
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32),
        max_shrink_iters: 64,
        .. ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_under_random_faults(s in schedule()) {
        let policy = Policy::default();
        let r = run(&s);
        // 2: with a healthy CA throughout, never a lapse and never an expiry.
        if s.outage.is_none() && s.hours.iter().all(|f| *f == Fault::Ok) {
            prop_assert_eq!(r.lapses_while_healthy, 0);
            prop_assert_eq!(r.expired, 0);
        }
        // 4: at most one request per half backoff cap while down, plus the ramp-up.
        if let Some((_, len)) = s.outage {
            let ramp = 10; // 1 s doubling to 300 s, plus the first attempt
            let bound = u32::try_from(len / (policy.urgent_backoff_max.as_secs() / 2)).unwrap() + ramp;
            prop_assert!(r.requests_during_outage <= bound, "{} requests in a {len} s outage (bound {bound})", r.requests_during_outage);
        }
        // 5: after the outage, an identity within the cap (plus the slow path: a request timeout).
        if let (Some(after), Some(_)) = (r.outage_recovered_after, s.outage) {
            let limit = policy.backoff_max + policy.request_timeout + Duration::from_secs(60);
            let faulty_hours = s.hours.iter().filter(|f| **f != Fault::Ok).count();
            if faulty_hours == 0 {
                prop_assert!(after <= limit, "recovered {after:?} after the outage (limit {limit:?})");
            }
        }
        if s.outage.is_none() && s.hours.contains(&Fault::Ok) {
            prop_assert!(r.installs > 0);
        }
    }
}

#[test]
fn healthy_ca_renews_about_twice_per_ttl_and_never_lapses() {
    let s = Schedule {
        hours: vec![Fault::Ok; 48],
        outage: None,
        rotate_root_at: None,
        seed: 1,
    };
    let r = run(&s);
    // Renewal at 30–70 % of a 75-minute certificate: between 48 h / 52 min and 48 h / 22 min.
    assert!((50..=140).contains(&r.installs), "{r:?}");
    assert_eq!(
        (r.expired, r.lapses_while_healthy, r.rejections),
        (0, 0, 0),
        "{r:?}"
    );
}

#[test]
fn a_root_rotation_mid_flight_causes_no_lapse() {
    let s = Schedule {
        hours: vec![Fault::Ok; 24],
        outage: None,
        rotate_root_at: Some(5 * 3600),
        seed: 2,
    };
    let r = run(&s);
    assert_eq!((r.expired, r.lapses_while_healthy), (0, 0), "{r:?}");
}

#[test]
fn a_three_hour_outage_is_survived_with_few_requests() {
    let s = Schedule {
        hours: vec![Fault::Ok; 24],
        outage: Some((3600, 3 * 3600)),
        rotate_root_at: None,
        seed: 3,
    };
    let r = run(&s);
    assert!(r.requests_during_outage <= 3 * 3600 / 5 + 10, "{r:?}");
    assert!(
        r.outage_recovered_after.unwrap() <= Duration::from_secs(400),
        "{r:?}"
    );
}
