//! Deterministic simulation of the rotation machine against a fake CA that really signs (rcgen,
//! real P-256 keys and certificates), on a virtual clock, with seeded faults: the CA down for
//! hours, slow, answering garbage, answering with a chain from a foreign root, with an expired
//! or not-yet-valid certificate, or one for another key or another ID, and roots rotated
//! mid-flight.
//!
//! Property tests run random fault schedules and check, for every schedule:
//! 1. no identity that fails validation is ever installed (checked independently of the
//!    machine, for client and server use, the workload profile and the key);
//! 2. the workload is never without a valid identity while the CA answered correctly: an
//!    identity expires only if some answer since it was installed was faulty, and with a
//!    healthy CA there is no gap at all;
//! 3. a refused answer never replaces the identity in use;
//! 4. while the CA is down, requests stay at or under the backoff cap: no more than the ramp
//!    plus one per half cap (urgent or not, as the machine was at the time);
//! 5. once the CA is back, a valid identity is installed within the cap (plus one request
//!    timeout for a slow answer in flight).
//!
//! `ROTATION_SIM_CASES` (or proptest's own `PROPTEST_CASES`) sets the number of schedules:
//! 64 by default, 1,000 in CI (`ci/ci.sh test`), and a long run of 100,000 with
//! `ROTATION_SIM_CASES=100000 cargo test --release -p sigil-tests --test rotation_sim invariants`.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use rcgen::{CertifiedIssuer, KeyPair};
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::cert::Certificate;
use sigil_core::chain::{self, Options, TrustBundle, Usage};
use sigil_core::crypto::{PublicKey, Signer as _};
use sigil_core::key::SoftwareKey;
use sigil_core::rotation::{
    Action, Clock, Failure, Jitter, Policy, Rejection, RequestId, Rotation, State,
};
use sigil_core::slot::IdentitySlot;
use sigil_core::spiffe::SpiffeId;
use sigil_core::{Instant, UnixTime};
use sigil_host::signature::RingSignatureVerifier;
use sigil_tests::fixtures::{ca_params, p256_key, workload_params, Point};

const ID: &str = "spiffe://example.org/ns/default/app";
const WALL0: u64 = 1_893_456_000; // 2030-01-01
const TTL: Duration = Duration::from_secs(3600);
const SKEW: Duration = Duration::from_secs(15 * 60);
const LATENCY: Duration = Duration::from_millis(50);

/// A CA answer in flight: a chain (DER, leaf first), or no answer.
type Answer = Result<Vec<Vec<u8>>, ()>;

type Machine = Rotation<'static, SoftwareKey, 2048, 2, 1024>;

struct Ca {
    root: Vec<u8>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let ca = |org: &str| ca_params(org, WALL0 - 86_400, WALL0 + 400 * 86_400);
        let root = CertifiedIssuer::self_signed(ca(name), p256_key()).unwrap();
        let issuer =
            CertifiedIssuer::signed_by(ca(&format!("{name} issuer")), p256_key(), &root).unwrap();
        Self {
            root: root.der().to_vec(),
            issuer,
        }
    }

    /// A workload certificate for `point`, Dapr's profile, issued at `wall` (± shift).
    fn issue(&self, point: &[u8], wall: u64, shift: i64, id: &str) -> Vec<Vec<u8>> {
        let at = wall.saturating_add_signed(shift);
        let p = workload_params(id, at - SKEW.as_secs(), at + TTL.as_secs());
        let leaf = p.signed_by(&Point(point.to_vec()), &self.issuer).unwrap();
        vec![leaf.der().to_vec(), self.issuer.der().to_vec()]
    }
}

/// The CAs every schedule uses (made once: their keys are not what is under test).
struct Cas {
    a: Ca,
    b: Ca,
    foreign: Ca,
}

fn cas() -> &'static Cas {
    static CAS: OnceLock<Cas> = OnceLock::new();
    CAS.get_or_init(|| Cas {
        a: Ca::new("Root A"),
        b: Ca::new("Root B"),
        foreign: Ca::new("Foreign"),
    })
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
    /// A correct answer after 10 s (well within the request timeout).
    Lagging,
    /// A correct answer after the request timed out.
    Slow,
}

impl Fault {
    /// Whether the CA answers correctly (and in time).
    fn is_correct(self) -> bool {
        matches!(self, Self::Ok | Self::Lagging)
    }
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
        1 => Just(Fault::Lagging),
        1 => Just(Fault::Slow),
    ]
}

/// A schedule: faults by slot of virtual time, an outage, and when (if) the root rotates.
#[derive(Clone, Debug)]
struct Schedule {
    /// The CA's behaviour in consecutive slots of `slot` each.
    faults: Vec<Fault>,
    slot: Duration,
    outage: Option<(u64, u64)>,
    rotate_root_at: Option<u64>,
    seed: u64,
}

impl Schedule {
    fn healthy(hours: u64, seed: u64) -> Self {
        Self {
            faults: vec![Fault::Ok; usize::try_from(hours).unwrap()],
            slot: Duration::from_secs(3600),
            outage: None,
            rotate_root_at: None,
            seed,
        }
    }

    fn end(&self) -> Duration {
        self.slot * u32::try_from(self.faults.len()).unwrap()
    }

    fn in_outage(&self, secs: u64) -> bool {
        self.outage
            .is_some_and(|(a, len)| (a..a + len).contains(&secs))
    }

    fn fault_at(&self, secs: u64) -> Fault {
        if self.in_outage(secs) {
            return Fault::Down;
        }
        let slot = usize::try_from(secs / self.slot.as_secs()).unwrap();
        *self.faults.get(slot).unwrap_or(&Fault::Ok)
    }

    /// Whether the CA answers correctly throughout `[from, to]` (seconds).
    fn healthy_between(&self, from: u64, to: u64) -> bool {
        let step = self.slot.as_secs();
        !self
            .outage
            .is_some_and(|(a, len)| a <= to && from < a + len)
            && (from / step..=to / step).all(|i| {
                self.faults
                    .get(usize::try_from(i).unwrap())
                    .is_none_or(|f| f.is_correct())
            })
    }
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::vec(fault(), 8..24),
        proptest::option::of((0u64..3 * 3600, 600u64..2 * 3600)),
        proptest::option::of(1800u64..3 * 3600),
        any::<u64>(),
    )
        .prop_map(|(faults, outage, rotate_root_at, seed)| Schedule {
            faults,
            slot: Duration::from_secs(15 * 60),
            outage,
            rotate_root_at,
            seed,
        })
}

/// A wall clock that is wrong for a while: `offset` seconds off during `[from, from + len)`.
#[derive(Clone, Copy, Debug)]
struct ClockJump {
    from: u64,
    len: u64,
    offset: i64,
}

#[derive(Default, Debug)]
struct Report {
    requests: u32,
    installs: u32,
    rejections: u32,
    stale: u32,
    requests_during_outage: u32,
    /// Seconds of outage spent urgent / not urgent, and trust changes during it.
    outage_urgent_secs: u64,
    outage_calm_secs: u64,
    outage_trust_changes: u32,
    outage_recovered_after: Option<Duration>,
    /// Whether the machine was still after an identity (not `Valid`) when the outage ended.
    renewing_when_back: Option<bool>,
    expired: u32,
    /// Seconds without a valid identity after the first install, while the CA was healthy.
    lapses_while_healthy: u64,
}

struct Sim<'s> {
    s: &'s Schedule,
    clock: Clock,
    jump: Option<ClockJump>,
    m: Machine,
    now: Instant,
    in_flight: VecDeque<(Instant, RequestId, Answer)>,
    active: &'static Ca,
    rotated: bool,
    keys: Jitter,
    report: Report,
    /// Whether some answer since the last install was faulty (invariant 2's bookkeeping).
    faulty_since_install: bool,
    /// Where the driver publishes each installed identity, as a TLS stack would read it.
    slot: IdentitySlot<SoftwareKey, 2048>,
}

impl<'s> Sim<'s> {
    fn new(s: &'s Schedule, clock: Clock, jump: Option<ClockJump>) -> Self {
        let mut bundle = OwnedTrustBundle::new();
        bundle.replace(&[&cas().a.root]).unwrap();
        let id = SpiffeId::parse(ID).unwrap();
        Self {
            s,
            clock,
            jump,
            m: Rotation::new(Policy::default(), clock, s.seed, Some(id), bundle),
            now: Instant::ZERO,
            in_flight: VecDeque::new(),
            active: &cas().a,
            rotated: false,
            keys: Jitter::new(s.seed ^ 0x5eed), // deterministic key material for the test
            report: Report::default(),
            faulty_since_install: false,
            slot: IdentitySlot::new(),
        }
    }

    fn secs(&self) -> u64 {
        self.now.as_millis() / 1000
    }

    /// The driver's wall clock: the CA's (true) time, or off by the jump.
    fn wall(&self) -> UnixTime {
        let t = self.secs();
        let off = self
            .jump
            .filter(|j| (j.from..j.from + j.len).contains(&t))
            .map_or(0, |j| j.offset);
        UnixTime::from_secs((WALL0 + t).saturating_add_signed(off))
    }

    fn run(mut self) -> Report {
        let end = Instant::from_millis(u64::try_from(self.s.end().as_millis()).unwrap());
        while self.now < end {
            self.step(end);
        }
        self.report
    }

    fn step(&mut self, end: Instant) {
        let next = [
            self.m.poll_timeout(),
            self.in_flight.front().map(|(t, _, _)| *t),
            Some(end),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap()
        .max(self.now);
        self.account(next);
        self.now = next;
        if self.clock == Clock::Wall {
            self.m.handle_wall_time(self.now, self.wall());
        }
        self.rotate_roots();

        let before = self.m.identity().map(|i| i.leaf().to_vec());
        let answered = self
            .in_flight
            .front()
            .is_some_and(|(t, _, _)| *t <= self.now);
        if answered {
            let (_, id, answer) = self.in_flight.pop_front().unwrap();
            match answer {
                Ok(chain) => {
                    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
                    self.m
                        .handle_response(self.now, id, &refs, &RingSignatureVerifier);
                }
                Err(()) => self.m.handle_failure(self.now, id, Failure::Unreachable),
            }
        } else {
            self.m.handle_timeout(self.now);
        }
        let actions: Vec<Action> = std::iter::from_fn(|| self.m.poll_action()).collect();
        // Invariant 3: a refusal keeps the old identity.
        let installed = actions
            .iter()
            .any(|a| matches!(a, Action::Installed { .. }));
        if !installed && actions.iter().any(|a| matches!(a, Action::Rejected(_))) {
            assert_eq!(
                self.m.identity().map(|i| i.leaf().to_vec()),
                before,
                "a refused answer replaced the identity"
            );
        }
        let published = self.slot.generation();
        for action in actions {
            self.act(action);
        }
        // The slot changes only on an install (or withdrawal at expiry), and then holds exactly
        // the machine's identity.
        if !installed {
            assert!(
                self.slot.generation() == published || self.slot.generation().is_none(),
                "the slot changed without an install"
            );
        }
        if let Some(lease) = self.slot.lease() {
            let ident = self.m.identity().expect("a published identity is in use");
            assert_eq!(lease.with(|l| Some(l.leaf() == ident.leaf())), Some(true));
        }
        if let State::Awaiting(_) = self.m.state() {
            assert!(self.m.poll_timeout().is_some());
        }
    }

    /// Time-weighted bookkeeping between events: lapses while healthy (invariant 2), how the
    /// outage was spent, and whether the machine still needed an identity when it ended
    /// (invariants 4 and 5). The machine's state is constant between events; its urgency only
    /// grows, so the interval counts as urgent if it is urgent at its end.
    fn account(&mut self, next: Instant) {
        let dt = next.saturating_duration_since(self.now).as_secs();
        let (t, t_next) = (self.secs(), next.as_millis() / 1000);
        if self.report.installs > 0
            && self.m.identity().is_none()
            && self.jump.is_none()
            && self.s.healthy_between(0, t_next)
        {
            self.report.lapses_while_healthy += dt;
        }
        if let Some((a, len)) = self.s.outage {
            let overlap = t_next.min(a + len).saturating_sub(t.max(a));
            if self.m.is_urgent(next) {
                self.report.outage_urgent_secs += overlap;
            } else {
                self.report.outage_calm_secs += overlap;
            }
            if (t..=t_next).contains(&(a + len)) && self.report.renewing_when_back.is_none() {
                self.report.renewing_when_back = Some(!matches!(self.m.state(), State::Valid(_)));
            }
        }
    }

    /// Root rotation: add B beside A, the CA switches to B, and two lifetimes later A goes.
    fn rotate_roots(&mut self) {
        let Some(at) = self.s.rotate_root_at else {
            return;
        };
        let t = self.secs();
        let changed = if !self.rotated && t >= at {
            self.rotated = true;
            self.active = &cas().b;
            self.m
                .handle_trust_bundle(
                    self.now,
                    &[&cas().a.root, &cas().b.root],
                    &RingSignatureVerifier,
                )
                .unwrap();
            true
        } else if self.rotated && t >= at + 2 * TTL.as_secs() && self.m.bundle().len() == 2 {
            self.m
                .handle_trust_bundle(self.now, &[&cas().b.root], &RingSignatureVerifier)
                .unwrap();
            true
        } else {
            false
        };
        if changed && self.s.in_outage(t) {
            self.report.outage_trust_changes += 1;
        }
    }

    fn fresh_key(&mut self) -> SoftwareKey {
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&self.keys.next_u64().to_le_bytes());
        }
        secret[0] &= 0x7f; // below the group order
        secret[31] |= 1;
        SoftwareKey::from_signing_key(p256::ecdsa::SigningKey::from_slice(&secret).unwrap())
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Request => self.request(),
            Action::Installed { generation, .. } => {
                self.report.installs += 1;
                self.faulty_since_install = false;
                self.check_installed();
                let ident = self.m.identity().expect("installed identity is there");
                let published = self
                    .slot
                    .publish(ident.chain(), ident.key().clone(), ident.not_after())
                    .unwrap();
                assert_eq!(published, generation);
                if let Some((start, len)) = self.s.outage {
                    let back = Duration::from_secs(start + len);
                    let t = Duration::from_millis(self.now.as_millis());
                    if t >= back && self.report.outage_recovered_after.is_none() {
                        self.report.outage_recovered_after = Some(t - back);
                    }
                }
            }
            Action::Rejected(Rejection::Stale) => self.report.stale += 1,
            Action::Rejected(_) => self.report.rejections += 1,
            Action::Expired => {
                self.report.expired += 1;
                self.slot.withdraw();
                // Invariant 2: an identity lapses only if an answer since its install was bad
                // (or the driver's own clock was wrong).
                assert!(
                    self.faulty_since_install || self.jump.is_some(),
                    "identity expired at {} s while every answer was correct: {:?}",
                    self.secs(),
                    self.s
                );
            }
            _ => {}
        }
    }

    fn request(&mut self) {
        let key = self.fresh_key();
        let point = key.public_point().to_vec();
        let mut csr = [0u8; 512];
        let (id, _csr) = self.m.start_request(key, &mut csr).unwrap();
        self.report.requests += 1;
        let secs = self.secs();
        let f = self.s.fault_at(secs);
        if self.s.in_outage(secs) {
            self.report.requests_during_outage += 1;
        }
        if !f.is_correct() {
            self.faulty_since_install = true;
        }
        let (ca, foreign) = (self.active, &cas().foreign);
        let wall = WALL0 + secs; // the CA's clock is right
        let (delay, answer) = match f {
            Fault::Ok => (LATENCY, Ok(ca.issue(&point, wall, 0, ID))),
            Fault::Lagging => (Duration::from_secs(10), Ok(ca.issue(&point, wall, 0, ID))),
            Fault::Down => (LATENCY, Err(())),
            Fault::Garbage => (LATENCY, Ok(vec![vec![0x30, 0x03, 0x02, 0x01, 0x00]])),
            Fault::Foreign => (LATENCY, Ok(foreign.issue(&point, wall, 0, ID))),
            Fault::Expired => (LATENCY, Ok(ca.issue(&point, wall, -2 * 3600, ID))),
            Fault::NotYetValid => (LATENCY, Ok(ca.issue(&point, wall, 2 * 3600, ID))),
            Fault::WrongKey => {
                let other = SoftwareKey::from_signing_key(
                    p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap(),
                );
                (LATENCY, Ok(ca.issue(other.public_point(), wall, 0, ID)))
            }
            Fault::WrongId => (
                LATENCY,
                Ok(ca.issue(&point, wall, 0, "spiffe://example.org/ns/default/other")),
            ),
            // Slower than the request timeout: the machine gives up, retries, and refuses the
            // late answer as stale without cancelling its newer request.
            Fault::Slow => (
                Policy::default().request_timeout + Duration::from_secs(5),
                Ok(ca.issue(&point, wall, 0, ID)),
            ),
        };
        let due = self.now.saturating_add(delay);
        let at = self
            .in_flight
            .iter()
            .position(|(t, _, _)| *t > due)
            .unwrap_or(self.in_flight.len());
        self.in_flight.insert(at, (due, id, answer));
    }

    /// Invariant 1: what was installed validates, independently of the machine.
    fn check_installed(&self) {
        let ident = self.m.identity().expect("installed identity is there");
        let chain: Vec<&[u8]> = ident.chain().collect();
        let mut anchors: TrustBundle<'_, 2> = TrustBundle::new();
        for a in self.m.bundle().iter() {
            anchors.add(a).unwrap();
        }
        let wall = self.m.wall_time(self.now).unwrap();
        for usage in [Usage::ClientAuth, Usage::ServerAuth] {
            let o = Options {
                skew: SKEW,
                usage,
                ..Options::new(wall)
            };
            chain::verify(chain[0], &chain[1..], &anchors, &RingSignatureVerifier, &o)
                .expect("installed chain validates");
        }
        let leaf = Certificate::parse(chain[0]).unwrap();
        let key = PublicKey::EcP256(ident.key().public_point());
        sigil_core::profile::check_workload(&leaf, key, Some(SpiffeId::parse(ID).unwrap().into()))
            .unwrap();
        assert_eq!(ident.key().public_key(), leaf.public_key().unwrap());
    }
}

fn run(s: &Schedule) -> Report {
    Sim::new(s, Clock::Wall, None).run()
}

fn cases() -> u32 {
    ["ROTATION_SIM_CASES", "PROPTEST_CASES"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 64,
        .. ProptestConfig::default()
    })]

    /// Invariants 1–5 over random fault schedules (1 and 3 are asserted inside the simulation,
    /// 2 there and here).
    #[test]
    fn invariants_hold_under_random_faults(s in schedule()) {
        let policy = Policy::default();
        let r = run(&s);
        // 2: with a healthy CA throughout, never a gap and never an expiry.
        if s.healthy_between(0, s.end().as_secs()) {
            prop_assert_eq!(r.lapses_while_healthy, 0);
            prop_assert_eq!(r.expired, 0);
        }
        prop_assert_eq!(r.lapses_while_healthy, 0);
        // 4: while down, the ramp (1 s doubling to the cap: ten attempts) once, and again per
        // trust change, then at most one request per half cap, urgent or not; +2 for an
        // attempt clipped to an expiry.
        if s.outage.is_some() {
            let ramp = 10 * (1 + u64::from(r.outage_trust_changes));
            let urgent = r.outage_urgent_secs / (policy.urgent_backoff_max.as_secs() / 2);
            let calm = r.outage_calm_secs / (policy.backoff_max.as_secs() / 2);
            let bound = ramp + urgent + calm + 2;
            prop_assert!(
                u64::from(r.requests_during_outage) <= bound,
                "{} requests in the outage (bound {bound}): {r:?}", r.requests_during_outage
            );
        }
        // 5: if the machine was still after an identity when the outage ended, one is installed
        // within the cap (plus a slow answer's timeout), when the CA is healthy over that
        // stretch.
        if let (Some((start, len)), Some(true)) = (s.outage, r.renewing_when_back) {
            let limit = policy.backoff_max + policy.request_timeout + Duration::from_secs(1);
            let back = start + len;
            if back + limit.as_secs() < s.end().as_secs()
                && s.healthy_between(back, back + limit.as_secs())
            {
                let after = r.outage_recovered_after;
                prop_assert!(
                    after.is_some_and(|a| a <= limit),
                    "recovered {after:?} after the outage (limit {limit:?}): {r:?}"
                );
            }
        }
        prop_assert!(r.requests > 0);
    }
}

#[test]
fn healthy_ca_renews_about_twice_per_ttl_and_never_lapses() {
    let r = run(&Schedule::healthy(48, 1));
    // Renewal at 30–70 % of a 75-minute certificate: between 48 h / 52 min and 48 h / 22 min.
    assert!((50..=140).contains(&r.installs), "{r:?}");
    assert_eq!(
        (r.expired, r.lapses_while_healthy, r.rejections, r.stale),
        (0, 0, 0, 0),
        "{r:?}"
    );
}

#[test]
fn a_root_rotation_mid_flight_causes_no_lapse() {
    let s = Schedule {
        rotate_root_at: Some(5 * 3600),
        ..Schedule::healthy(24, 2)
    };
    let r = run(&s);
    assert_eq!((r.expired, r.lapses_while_healthy), (0, 0), "{r:?}");
}

#[test]
fn a_three_hour_outage_is_survived_with_few_requests() {
    let s = Schedule {
        outage: Some((3600, 3 * 3600)),
        ..Schedule::healthy(24, 3)
    };
    let r = run(&s);
    assert!(r.requests_during_outage <= 3 * 3600 / 5 + 10, "{r:?}");
    assert!(
        r.outage_recovered_after.unwrap() <= Duration::from_secs(400),
        "{r:?}"
    );
}

#[test]
fn a_slow_answer_never_cancels_the_request_that_replaced_it() {
    // Request 1 (t = 0) is answered at 35 s, after its 30 s timeout; request 2 (about 31 s)
    // is answered at about 41 s. The late answer arrives while request 2 is in flight.
    let s = Schedule {
        faults: vec![Fault::Slow, Fault::Lagging, Fault::Ok],
        slot: Duration::from_secs(20),
        ..Schedule::healthy(1, 4)
    };
    let mut sim = Sim::new(&s, Clock::Wall, None);
    let end = Instant::from_millis(60_000);
    while sim.report.installs == 0 && sim.now < end {
        sim.step(end);
    }
    assert_eq!(sim.report.stale, 1, "{:?}", sim.report);
    assert_eq!(sim.report.installs, 1, "{:?}", sim.report);
    assert_eq!(sim.report.requests, 2, "{:?}", sim.report);
    assert_eq!(sim.report.rejections, 0, "{:?}", sim.report);
    assert!(sim.now.as_millis() > 40_000, "{:?}", sim.now);
}

#[test]
fn wall_clock_jumps_never_wedge_the_machine() {
    // Back three days, then forward five days, each for 20 minutes around a renewal.
    for (seed, offset) in [(5, -3 * 86_400), (6, 5 * 86_400)] {
        for from in [30 * 60, 95 * 60, 170 * 60] {
            let s = Schedule::healthy(8, seed);
            let jump = ClockJump {
                from,
                len: 20 * 60,
                offset,
            };
            let r = Sim::new(&s, Clock::Wall, Some(jump)).run();
            // The identity in use kept serving on its monotonic deadline, renewals failed only
            // while the clock was wrong, and the machine came back right after.
            assert_eq!(r.expired, 0, "jump {jump:?}: {r:?}");
            assert!(r.installs >= 8, "jump {jump:?}: {r:?}");
        }
    }
}

#[test]
fn a_forward_jump_does_not_expire_the_identity_or_trigger_renewal() {
    let s = Schedule::healthy(2, 7);
    let jump = ClockJump {
        from: 60,
        len: 3600,
        offset: 5 * 86_400,
    };
    let mut sim = Sim::new(&s, Clock::Wall, Some(jump));
    while sim.report.installs == 0 {
        sim.step(Instant::from_millis(60_000));
    }
    // Into the jump: the wall clock says five days later.
    sim.now = Instant::from_millis(120_000);
    sim.m.handle_wall_time(sim.now, sim.wall());
    sim.m.handle_timeout(sim.now);
    assert!(sim.m.identity().is_some());
    assert!(matches!(sim.m.state(), State::Valid(_)));
    // A trust-bundle update re-checks the identity on its own clock: still trusted, so no
    // renewal storm because the wall clock is wrong.
    sim.m
        .handle_trust_bundle(
            sim.now,
            &[&cas().a.root, &cas().b.root],
            &RingSignatureVerifier,
        )
        .unwrap();
    assert!(matches!(sim.m.state(), State::Valid(_)));
    assert_eq!(sim.m.poll_action(), None);
}

#[test]
fn a_device_without_a_clock_gets_and_renews_its_identity() {
    // Bad answers for a quarter of an hour at a time (short enough to renew around them).
    let mut faults = vec![Fault::Ok; 96];
    for (i, f) in [
        (10, Fault::Foreign),
        (20, Fault::WrongKey),
        (30, Fault::Expired),
        (40, Fault::Garbage),
        (50, Fault::WrongId),
        (60, Fault::Foreign),
        (70, Fault::Expired),
    ] {
        faults[i] = f;
    }
    let s = Schedule {
        faults,
        slot: Duration::from_secs(15 * 60),
        ..Schedule::healthy(1, 8)
    };
    let mut sim = Sim::new(&s, Clock::Monotonic, None);
    let end = Instant::from_millis(24 * 3600 * 1000);
    while sim.now < end {
        sim.step(end);
        // The machine's wall time is a lower bound on the CA's, within the network latency.
        if let Some(w) = sim.m.wall_time(sim.now) {
            let truth = WALL0 + sim.secs();
            assert!(w.as_secs() <= truth + 1, "{w:?} > {truth}");
            assert!(w.as_secs() + 2 >= truth, "{w:?} far below {truth}");
        }
    }
    let r = sim.report;
    assert!(r.installs > 30, "{r:?}");
    assert_eq!(r.expired, 0, "{r:?}");
    // Bad answers were refused (an expired chain is recognised once a floor is known).
    assert!(r.rejections >= 2, "{r:?}");
}

#[test]
fn a_response_for_an_unknown_request_is_stale_and_harmless() {
    let s = Schedule::healthy(1, 9);
    let mut sim = Sim::new(&s, Clock::Wall, None);
    while sim.report.installs == 0 {
        sim.step(Instant::from_millis(60_000));
    }
    let ident = sim.m.identity().unwrap();
    let chain: Vec<Vec<u8>> = ident.chain().map(<[u8]>::to_vec).collect();
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let state = sim.m.state();
    sim.m
        .handle_response(sim.now, RequestId::default(), &refs, &RingSignatureVerifier);
    assert_eq!(
        sim.m.poll_action(),
        Some(Action::Rejected(Rejection::Stale))
    );
    assert_eq!(sim.m.state(), state);
    sim.m
        .handle_failure(sim.now, RequestId::default(), Failure::Refused);
    assert_eq!(sim.m.state(), state);
    assert_eq!(sim.m.poll_action(), None);
}
