//! The core's device agent against a fake relay that really signs (rcgen, the CSR's own key),
//! over the link's bytes, on a virtual clock, driven the way a board drives it: frames in,
//! frames out, and one timer armed at `poll_timeout`.
//!
//! Every step also checks the one-timer contract: the agent always names its next deadline,
//! and calling `handle_timeout` a millisecond before it does nothing (nothing to send, no
//! event, the same deadline), so a driver needs no other timer.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{CertifiedIssuer, KeyPair};
use sigil_core::agent::{DeviceAgent, Event, Workload};
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::crypto::{PublicKey, RustCryptoSignatureVerifier};
use sigil_core::csr::Csr;
use sigil_core::key::SoftwareKey;
use sigil_core::link::{self, Answer, Deframer, Frame, MAX_FRAME};
use sigil_core::rotation::{Clock, Failure, Policy, Rotation};
use sigil_core::slot::IdentitySlot;
use sigil_core::spiffe::SpiffeId;
use sigil_core::Instant;
use sigil_tests::fixtures::{ca_params, p256_key, workload_params, Point};

const ID: &str = "spiffe://example.org/ns/default/device";
const WORKLOAD: Workload<'static> = Workload {
    app_id: "device",
    namespace: "default",
    token: "",
};
const WALL0: u64 = 1_893_456_000; // 2030-01-01
/// Sentry's back-dating, which the device's no-RTC clock adds to notBefore.
const SKEW: Duration = Duration::from_secs(15 * 60);
const LATENCY: Duration = Duration::from_millis(50);

type Agent = DeviceAgent<'static, SoftwareKey, RustCryptoSignatureVerifier, 2048, 2, 1024>;

struct Ca {
    root: Vec<u8>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let params = |org: &str| ca_params(org, WALL0 - 86_400, WALL0 + 400 * 86_400);
        let root = CertifiedIssuer::self_signed(params("Root"), p256_key()).unwrap();
        let issuer = CertifiedIssuer::signed_by(params("Issuer"), p256_key(), &root).unwrap();
        Ca {
            root: root.der().to_vec(),
            issuer,
        }
    })
}

/// What the fake relay does with one request.
#[derive(Clone, Copy, Debug)]
enum Relay {
    /// Sentry issues a certificate living `ttl`, answered after `delay`.
    Issue { ttl: Duration, delay: Duration },
    /// A refusal with this gRPC code.
    Refuse(u8),
}

/// The device side (the agent, its slot, the link reader) and the relay side, on one clock.
struct Sim {
    agent: Agent,
    slot: &'static IdentitySlot<SoftwareKey, 2048>,
    device_rx: Deframer<'static>,
    now: Instant,
    /// Frames on their way to the device: (due, bytes), in order.
    to_device: VecDeque<(Instant, Vec<u8>)>,
    relay: Box<dyn FnMut(u32) -> Relay>,
    /// What the agent reported, when.
    events: Vec<(Instant, Event)>,
    /// When each request reached the relay: (number, instant).
    requests: Vec<(u32, Instant)>,
    /// Deadlines checked to be the only timer needed.
    early_checks: u32,
}

impl Sim {
    fn new(relay: impl FnMut(u32) -> Relay + 'static) -> Self {
        let slot = Box::leak(Box::new(IdentitySlot::new()));
        let mut bundle = OwnedTrustBundle::new();
        bundle.replace(&[ca().root.as_slice()]).unwrap();
        let policy = Policy {
            issuer_skew: SKEW,
            ..Policy::default()
        };
        let id = SpiffeId::parse(ID).unwrap();
        let rotation = Rotation::new(policy, Clock::Monotonic, 42, Some(id), bundle);
        let agent =
            DeviceAgent::new(rotation, WORKLOAD, RustCryptoSignatureVerifier).with_slot(slot);
        let buf = Box::leak(Box::new([0u8; MAX_FRAME]));
        Self {
            agent,
            slot,
            device_rx: Deframer::new(buf, Duration::from_secs(1)),
            now: Instant::ZERO,
            to_device: VecDeque::new(),
            relay: Box::new(relay),
            events: Vec::new(),
            requests: Vec::new(),
            early_checks: 0,
        }
    }

    fn secs(&self) -> u64 {
        self.now.as_millis() / 1000
    }

    /// Runs until `end` on virtual time, the way a board's loop does.
    fn run_until(&mut self, end: Duration) {
        let end = Instant::ZERO.saturating_add(end);
        loop {
            let timer = self
                .agent
                .poll_timeout()
                .expect("the agent always names its next deadline");
            let delivery = self.to_device.front().map(|(t, _)| *t);
            let next = delivery.map_or(timer, |d| d.min(timer)).max(self.now);
            if next > end {
                self.now = end;
                return;
            }
            if delivery.is_some_and(|d| d <= next) {
                self.now = next;
                let (_, bytes) = self.to_device.pop_front().unwrap();
                self.deliver(&bytes);
            } else {
                self.check_one_timer(timer);
                self.now = next;
                self.agent.handle_timeout(self.now);
            }
            self.drain();
        }
    }

    /// A millisecond before the deadline, nothing is due: a driver arming one timer at
    /// `poll_timeout` misses nothing.
    fn check_one_timer(&mut self, timer: Instant) {
        let early = Instant::from_millis(timer.as_millis().saturating_sub(1));
        if early <= self.now || early >= timer {
            return;
        }
        self.now = early;
        self.agent.handle_timeout(early);
        let mut buf = vec![0u8; MAX_FRAME];
        assert_eq!(
            self.agent.poll_transmit(&mut rand_core::OsRng, &mut buf),
            None,
            "sent before its deadline"
        );
        assert_eq!(self.agent.poll_event(), None, "event before its deadline");
        assert_eq!(self.agent.poll_timeout(), Some(timer), "deadline moved");
        self.early_checks += 1;
    }

    /// Link bytes reach the device: every frame goes to the agent.
    fn deliver(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.device_rx.handle_bytes(bytes, self.now);
            bytes = &bytes[n..];
            while let Some(e) = self.device_rx.poll_event(self.now) {
                match e {
                    link::Event::Frame(f) => self.agent.handle_frame(self.now, f),
                    link::Event::Skipped { bytes, reason } => {
                        panic!("{bytes} link bytes skipped: {reason}")
                    }
                }
            }
        }
    }

    /// Drains the agent after a call: frames to the relay, events to the record.
    fn drain(&mut self) {
        let mut buf = vec![0u8; MAX_FRAME];
        while let Some(frame) = self.agent.poll_transmit(&mut rand_core::OsRng, &mut buf) {
            let frame = frame.to_vec();
            self.relay_receives(&frame);
        }
        while let Some(e) = self.agent.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// The relay: parses the request, checks its CSR, and answers as scripted.
    fn relay_receives(&mut self, bytes: &[u8]) {
        let (frame, len) = Frame::parse(bytes).expect("the agent sends whole, valid frames");
        assert_eq!(len, bytes.len());
        let Frame::SignRequest {
            request,
            id,
            namespace,
            token,
            csr,
        } = frame
        else {
            panic!("not a sign request: {frame:?}")
        };
        assert_eq!((id, namespace, token), ("device", "default", ""));
        let csr = Csr::parse(csr).unwrap();
        csr.verify_signature(&RustCryptoSignatureVerifier).unwrap();
        let PublicKey::EcP256(point) = csr.public_key() else {
            panic!("not a P-256 key")
        };
        self.requests.push((request, self.now));
        let (delay, answer) = match (self.relay)(request) {
            Relay::Issue { ttl, delay } => {
                // Sentry's clock is right; it back-dates by SKEW.
                let wall = WALL0 + self.secs();
                let p = workload_params(ID, wall - SKEW.as_secs(), wall + ttl.as_secs());
                let leaf = p.signed_by(&Point(point.to_vec()), &ca().issuer).unwrap();
                let mut chain = vec![0u8; 4096];
                let n = link::encode_chain(
                    [leaf.der().as_ref(), ca().issuer.der().as_ref()],
                    &mut chain,
                )
                .unwrap()
                .len();
                chain.truncate(n);
                (delay, Ok(chain))
            }
            Relay::Refuse(code) => (LATENCY, Err(code)),
        };
        let answer = match &answer {
            Ok(chain) => Answer::Chain(chain),
            Err(code) => Answer::Refused {
                code: *code,
                message: "refused by the test",
            },
        };
        let mut out = vec![0u8; MAX_FRAME];
        let wire = Frame::SignAnswer { request, answer }
            .emit(&mut out)
            .unwrap()
            .to_vec();
        let due = self.now.saturating_add(delay);
        let at = self.to_device.partition_point(|(t, _)| *t <= due);
        self.to_device.insert(at, (due, wire));
    }

    fn installs(&self) -> Vec<(Instant, u32)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Installed { generation, .. } => Some((*t, *generation)),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| f(e)).count()
    }
}

fn healthy(ttl: Duration) -> impl FnMut(u32) -> Relay {
    move |_| Relay::Issue {
        ttl,
        delay: LATENCY,
    }
}

#[test]
fn one_timer_drives_a_day_of_rotations() {
    let ttl = Duration::from_secs(3600);
    let mut sim = Sim::new(healthy(ttl));
    // Hour by hour, so that the identity is seen held throughout.
    for hour in 1..=24 {
        sim.run_until(Duration::from_secs(hour * 3600));
        let identity = sim
            .agent
            .rotation()
            .identity()
            .expect("never without identity");
        assert_eq!(
            sim.slot
                .lease()
                .unwrap()
                .with(|i| Some(i.leaf() == identity.leaf())),
            Some(true),
            "the slot publishes the identity in use"
        );
    }
    let installs = sim.installs();
    // Renewal at 30–70 % of the lifetime: between about 34 and 80 certificates in a day.
    assert!(
        (30..=80).contains(&installs.len()),
        "{} installs",
        installs.len()
    );
    assert_eq!(installs.first().map(|i| i.1), Some(1));
    // Every install is the next generation, published as it happened.
    for (i, (_, generation)) in installs.iter().enumerate() {
        assert_eq!(*generation, u32::try_from(i).unwrap() + 1);
    }
    assert_eq!(
        sim.slot.generation(),
        installs.last().map(|i| i.1),
        "slot holds the last install"
    );
    // Each request answered once and installed: nothing refused, dropped or expired.
    let requested = sim.count(|e| matches!(e, Event::Requested { .. }));
    assert_eq!(requested, installs.len());
    assert_eq!(sim.requests.len(), installs.len());
    assert_eq!(
        sim.count(|e| !matches!(e, Event::Requested { .. } | Event::Installed { .. })),
        0,
        "{:?}",
        sim.events
    );
    // The link's request numbers are the machine's, counting from 1.
    let numbers: Vec<u32> = sim.requests.iter().map(|r| r.0).collect();
    assert_eq!(
        numbers,
        (1..=u32::try_from(numbers.len()).unwrap()).collect::<Vec<_>>()
    );
    assert!(
        sim.early_checks >= 30,
        "{} deadlines checked",
        sim.early_checks
    );
}

#[test]
fn refusals_back_off_by_their_kind() {
    // Five refusals with UNAVAILABLE, two with PERMISSION_DENIED, then a certificate.
    let mut sim = Sim::new(|request| match request {
        1..=5 => Relay::Refuse(14),
        6 | 7 => Relay::Refuse(7),
        _ => Relay::Issue {
            ttl: Duration::from_secs(3600),
            delay: LATENCY,
        },
    });
    sim.run_until(Duration::from_secs(120));
    let refusals: Vec<(u32, u8, Failure)> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Refused {
                request,
                code,
                failure,
            } => Some((*request, *code, *failure)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals,
        [
            (1, 14, Failure::Unreachable),
            (2, 14, Failure::Unreachable),
            (3, 14, Failure::Unreachable),
            (4, 14, Failure::Unreachable),
            (5, 14, Failure::Unreachable),
            (6, 7, Failure::Refused),
            (7, 7, Failure::Refused),
        ]
    );
    // The wait after failure k (answered LATENCY after its request) is uniform in the upper
    // half of min(2^(k-1) s, 10 s): urgent, since the device has no identity yet.
    for k in 1..=7usize {
        let (_, sent) = sim.requests[k - 1];
        let (_, next) = sim.requests[k];
        let base = Duration::from_secs(1 << (k - 1)).min(Duration::from_secs(10));
        let wait = next.saturating_duration_since(sent.saturating_add(LATENCY));
        assert!(
            wait >= base / 2 && wait <= base,
            "wait after failure {k}: {wait:?} (base {base:?})"
        );
    }
    assert_eq!(sim.installs().first().map(|i| i.1), Some(1));
    assert_eq!(
        sim.agent.rotation().failures(),
        0,
        "an install resets the backoff"
    );
    assert_eq!(sim.agent.rotation().last_failure(), None);
}

#[test]
fn an_answer_to_a_request_given_up_on_is_dropped() {
    // The first answer comes after the request timeout (30 s), while the retry is in flight
    // (its answer takes 15 s): the late chain is for another key and must not be taken for
    // the retry's answer.
    let mut sim = Sim::new(|request| Relay::Issue {
        ttl: Duration::from_secs(3600),
        delay: Duration::from_secs(if request == 1 { 40 } else { 15 }),
    });
    sim.run_until(Duration::from_secs(60));
    let (_, retried) = sim.requests[1];
    assert!(
        retried >= Instant::from_millis(30_500) && retried <= Instant::from_millis(31_000),
        "retried at {retried:?}"
    );
    assert_eq!(
        sim.events
            .iter()
            .filter(|(_, e)| !matches!(e, Event::Requested { .. }))
            .map(|(t, e)| (*t, *e))
            .take(1)
            .collect::<Vec<_>>(),
        [(Instant::from_millis(40_000), Event::Dropped { request: 1 })],
        "{:?}",
        sim.events
    );
    let installs = sim.installs();
    assert_eq!(
        installs,
        [(retried.saturating_add(Duration::from_secs(15)), 1)],
        "{:?}",
        sim.events
    );
    assert_eq!(sim.slot.generation(), Some(1));
    assert_eq!(sim.requests.len(), 2);
}

#[test]
fn without_answers_the_identity_expires_and_leaves_the_slot() {
    // One 60 s certificate, then Sentry is unreachable for good.
    let mut sim = Sim::new(|request| {
        if request == 1 {
            Relay::Issue {
                ttl: Duration::from_secs(60),
                delay: LATENCY,
            }
        } else {
            Relay::Refuse(14)
        }
    });
    sim.run_until(Duration::from_secs(50));
    assert_eq!(sim.slot.generation(), Some(1));
    sim.run_until(Duration::from_secs(120));
    let expired: Vec<Instant> = sim
        .events
        .iter()
        .filter(|(_, e)| *e == Event::Expired)
        .map(|(t, _)| *t)
        .collect();
    // notAfter is 60 s after issue, at 50 ms.
    assert_eq!(expired, [Instant::from_millis(60_050)], "{:?}", sim.events);
    assert!(sim.agent.rotation().identity().is_none());
    assert_eq!(sim.slot.generation(), None, "withdrawn from the slot");
    // Still trying, no faster than the urgent cap allows after the ramp.
    let after: Vec<Instant> = sim
        .requests
        .iter()
        .map(|r| r.1)
        .filter(|t| *t > Instant::from_millis(60_050))
        .collect();
    assert!(after.len() >= 5, "{after:?}");
    for w in after.windows(2) {
        assert!(w[1].saturating_duration_since(w[0]) <= Duration::from_secs(10) + LATENCY);
    }
}
