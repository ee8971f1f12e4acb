//! The device agent: everything an edge device does to obtain and keep its identity over the
//! link, as one sans-IO machine. It owns the [`Rotation`] machine and adds what a device's
//! driver would otherwise write by hand:
//!
//! - **requests**: a fresh key from the caller's RNG and a CSR for every request the machine
//!   asks for, sent as a [`Frame::SignRequest`] numbered with the machine's [`RequestId`];
//! - **answers**: a [`Frame::SignAnswer`] is matched to the request in flight by that number
//!   (an answer to any other request is dropped), then a chain goes to
//!   [`Rotation::handle_response`] and a refusal to [`Rotation::handle_failure`], its gRPC
//!   code read through [`status::failure`] (the table the relay writes with);
//! - **publishing**: a newly installed identity goes to the [`IdentitySlot`], if one is given,
//!   and is withdrawn from it when it expires;
//! - **Sentry's trust bundle**: the roots an answer carries ([`Answer::anchors`]) are adopted
//!   once that answer's chain has validated against the anchors already held and been
//!   installed: the bundle becomes the provisioned anchors
//!   ([`DeviceAgent::with_provisioned`]) plus Sentry's roots, replacing the roots an earlier
//!   answer brought; the TLS verifier and the next renewal use it. The new roots are saved
//!   to an [`AnchorStore`], if one is given, when they change. An answer whose chain is
//!   refused changes nothing, so a relay backed by another CA cannot bring its roots in. The
//!   roots are not signed by Sentry: they are as trustworthy as the link and the relay, which
//!   checked Sentry's serving chain; a hostile relay could attach a root to a genuine chain.
//! - **events** for the driver to log or assert on ([`Event`]).
//!
//! It never reads a clock, the link or an entropy source, and allocates nothing: the driver
//! moves frames and arms one timer.
//!
//! ## Call order
//!
//! As quinn-proto's `Connection`:
//!
//! 1. Inputs, with the monotonic `now` (which never goes backwards): [`DeviceAgent::handle_frame`]
//!    for every frame read from the link, [`DeviceAgent::handle_timeout`] when the timer fires,
//!    [`DeviceAgent::handle_wall_time`] (devices with a clock) and
//!    [`DeviceAgent::handle_trust_bundle`].
//! 2. After every `handle_*`: drain [`DeviceAgent::poll_transmit`] (write each frame to the
//!    link) and [`DeviceAgent::poll_event`], each until it returns `None`.
//! 3. Arm one timer at [`DeviceAgent::poll_timeout`] (`None`: no timer) and call
//!    [`DeviceAgent::handle_timeout`] when it passes. A fresh agent's timeout is due at once.
//!    Calling `handle_timeout` early is harmless: nothing is due.
//!
//! A request the agent cannot send (its CSR or its frame does not fit) is reported as
//! [`Event::NotSent`] and then counts as lost: the machine times it out and retries with
//! backoff, as it would a request the link dropped.

use rand_core::CryptoRngCore;

use crate::bundle::{AnchorStore, StoreError};
use crate::chain;
use crate::crypto::{SignatureVerifier, Signer};
use crate::key::SoftwareKey;
use crate::link::{self, Answer, Frame};
use crate::rotation::{Action, Failure, Rejection, RequestError, RequestId, Rotation};
use crate::slot::{IdentitySlot, MAX_CHAIN_CERTS};
use crate::status;
use crate::time::{Instant, UnixTime};

/// Room for one request's CSR (DER): a P-256 request with a SPIFFE ID of up to about 250
/// characters.
pub const MAX_CSR: usize = 512;

/// Events queued before the oldest undrained one is dropped (the driver drains after every
/// call; one call queues at most three).
const EVENTS: usize = 8;

/// A private key the agent can make fresh for each request.
pub trait FreshKey: Signer + Clone {
    /// A new key from `rng`.
    fn generate(rng: &mut impl CryptoRngCore) -> Self;
}

impl FreshKey for SoftwareKey {
    fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self::generate(rng)
    }
}

/// Who the device asks to be: the fields of every sign request besides the CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload<'a> {
    /// Dapr app ID.
    pub app_id: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Token for Sentry's validator (empty: the relay's, or none).
    pub token: &'a str,
}

/// Why a request was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The machine no longer wants it (it timed out before it could be sent), or its CSR
    /// did not fit [`MAX_CSR`].
    Request(RequestError),
    /// The frame did not fit the caller's buffer or the link's payload limit.
    Frame(link::Error),
}

/// What happened, for the driver to log, count or assert on. Nothing here needs an answer:
/// the agent has already acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A sign request left: [`DeviceAgent::poll_transmit`] returned its frame.
    Requested {
        /// Its number on the link.
        request: u32,
    },
    /// A request could not be sent; the machine retries after its request timeout.
    NotSent(SendError),
    /// An answer's chain validated and is the identity in use (published to the slot, if
    /// any: see [`DeviceAgent::with_slot`]).
    Installed {
        /// Counts installs, from 1.
        generation: u32,
        /// The new certificate's notAfter.
        not_after: UnixTime,
    },
    /// The request got no chain but a refusal with a gRPC code; the machine backs off.
    Refused {
        /// The request refused.
        request: u32,
        /// The gRPC code.
        code: u8,
        /// Its kind ([`status::failure`]).
        failure: Failure,
    },
    /// The answer's chain was refused; the identity in use (if any) keeps serving and the
    /// machine backs off.
    Rejected {
        /// The request answered.
        request: u32,
        /// Why.
        reason: Rejection,
    },
    /// An answer to a request that is not in flight (timed out, superseded, never sent) was
    /// dropped; nothing changed.
    Dropped {
        /// The request it answered.
        request: u32,
    },
    /// The identity expired before a new one was installed (and was withdrawn from the slot).
    Expired,
    /// Sentry's trust bundle changed and is in force: the provisioned anchors and its roots.
    AnchorsAdopted {
        /// Anchors in force now.
        count: usize,
        /// What the [`AnchorStore`] said (`None`: no store).
        saved: Option<Result<(), StoreError>>,
    },
    /// Sentry's trust bundle could not be taken (too many roots, none usable); the anchors
    /// held stay.
    AnchorsRefused(chain::BundleError),
}

/// The device agent: the rotation machine, its requests and answers over the link, and the
/// identity slot. `K` is the key type made fresh per request, `V` checks signatures; the const
/// parameters are the [`Rotation`]'s (and `CHAIN` the slot's).
pub struct DeviceAgent<
    'a,
    K,
    V,
    const CHAIN: usize,
    const ANCHORS: usize,
    const ANCHOR_BYTES: usize,
> {
    rotation: Rotation<'a, K, CHAIN, ANCHORS, ANCHOR_BYTES>,
    workload: Workload<'a>,
    verifier: V,
    slot: Option<&'a IdentitySlot<K, CHAIN>>,
    /// The machine asked for a request that has not been sent yet.
    wanted: bool,
    /// The request sent last: an answer must carry its number.
    sent: Option<RequestId>,
    /// An installed identity waits to be published (a reader held the slot's other buffer).
    unpublished: bool,
    /// The answer being handled installed its chain.
    installed: bool,
    /// The anchors the device was provisioned with (kept beside Sentry's roots).
    provisioned: &'a [&'a [u8]],
    /// Where adopted roots are saved.
    store: Option<&'a mut dyn AnchorStore>,
    /// The CRC-32 of the roots last adopted from Sentry (their DER, in order).
    adopted: Option<u32>,
    events: heapless::Deque<Event, EVENTS>,
}

impl<
        K: core::fmt::Debug,
        V,
        const CHAIN: usize,
        const ANCHORS: usize,
        const ANCHOR_BYTES: usize,
    > core::fmt::Debug for DeviceAgent<'_, K, V, CHAIN, ANCHORS, ANCHOR_BYTES>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceAgent")
            .field("rotation", &self.rotation)
            .field("workload", &self.workload)
            .field("slot", &self.slot.is_some())
            .field("wanted", &self.wanted)
            .field("sent", &self.sent)
            .field("unpublished", &self.unpublished)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<
        'a,
        K: FreshKey,
        V: SignatureVerifier,
        const CHAIN: usize,
        const ANCHORS: usize,
        const ANCHOR_BYTES: usize,
    > DeviceAgent<'a, K, V, CHAIN, ANCHORS, ANCHOR_BYTES>
{
    /// An agent running `rotation` (its policy, clock, jitter seed, SPIFFE ID and anchors are
    /// the device's), asking as `workload`, checking signatures with `verifier`.
    pub fn new(
        rotation: Rotation<'a, K, CHAIN, ANCHORS, ANCHOR_BYTES>,
        workload: Workload<'a>,
        verifier: V,
    ) -> Self {
        Self {
            rotation,
            workload,
            verifier,
            slot: None,
            wanted: false,
            sent: None,
            unpublished: false,
            installed: false,
            provisioned: &[],
            store: None,
            adopted: None,
            events: heapless::Deque::new(),
        }
    }

    /// The anchors the device was provisioned with: they stay in the bundle beside the roots
    /// adopted from Sentry's answers (without them, Sentry's roots alone form the bundle).
    #[must_use]
    pub const fn with_provisioned(mut self, anchors: &'a [&'a [u8]]) -> Self {
        self.provisioned = anchors;
        self
    }

    /// Saves the roots adopted from Sentry to `store` whenever they change.
    #[must_use]
    pub fn with_store(mut self, store: &'a mut dyn AnchorStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Publishes every installed identity to `slot` (and withdraws it on expiry). While a
    /// reader still leases the identity before the current one, publishing waits: it is
    /// tried again at every later `handle_*` and [`DeviceAgent::poll_event`].
    #[must_use]
    pub const fn with_slot(mut self, slot: &'a IdentitySlot<K, CHAIN>) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The rotation machine: the identity in use, the trust bundle, the wall-time estimate,
    /// the state.
    pub const fn rotation(&self) -> &Rotation<'a, K, CHAIN, ANCHORS, ANCHOR_BYTES> {
        &self.rotation
    }

    /// The roots the [`AnchorStore`] holds now, as read back from it (none without a store).
    pub fn stored_anchors(&self) -> impl Iterator<Item = &[u8]> {
        crate::bundle::saved(self.store.as_deref().map_or(&[][..], |s| s.records()))
    }

    /// The timer fired (or any time at or after [`DeviceAgent::poll_timeout`]): renew, retry,
    /// time a request out or report expiry, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.rotation.handle_timeout(now);
        self.drain(0);
    }

    /// A wall-clock reading (devices with a real-time clock; see [`Rotation::handle_wall_time`]).
    pub fn handle_wall_time(&mut self, now: Instant, wall: UnixTime) {
        self.rotation.handle_wall_time(now, wall);
    }

    /// New trust anchors (DER); see [`Rotation::handle_trust_bundle`].
    ///
    /// # Errors
    ///
    /// The bundle's error; the old bundle stays in force then.
    pub fn handle_trust_bundle(
        &mut self,
        now: Instant,
        anchors: &[&[u8]],
    ) -> Result<(), chain::BundleError> {
        let r = self
            .rotation
            .handle_trust_bundle(now, anchors, &self.verifier);
        self.drain(0);
        r
    }

    /// A frame from the link. Sign answers are the agent's; other frames (TLS bytes of the
    /// driver's sessions, or a request, which only a relay receives) are ignored.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        if let Frame::SignAnswer { request, answer } = frame {
            self.handle_answer(now, request, answer);
        }
    }

    /// The answer to request number `request`.
    pub fn handle_answer(&mut self, now: Instant, request: u32, answer: Answer<'_>) {
        let in_flight = self
            .sent
            .filter(|id| id.get() == request && self.rotation.is_in_flight(*id));
        let Some(id) = in_flight else {
            self.push(Event::Dropped { request });
            return;
        };
        match answer {
            Answer::Chain(_) => {
                // One more than a chain may hold, so that a longer one is refused, not cut.
                let mut chain: heapless::Vec<&[u8], { MAX_CHAIN_CERTS + 1 }> = heapless::Vec::new();
                for cert in answer.certificates() {
                    if chain.push(cert).is_err() {
                        break;
                    }
                }
                self.installed = false;
                self.rotation
                    .handle_response(now, id, &chain, &self.verifier);
                self.drain(request);
                if self.installed {
                    self.adopt(now, answer);
                }
            }
            Answer::Refused { code, .. } => {
                let failure = status::failure(code);
                self.push(Event::Refused {
                    request,
                    code,
                    failure,
                });
                self.rotation.handle_failure(now, id, failure);
            }
        }
        self.drain(request);
    }

    /// The next frame to send, written into `buf`: a sign request with a fresh key from `rng`
    /// and its CSR. `buf` should hold a whole request (the link's largest frame,
    /// [`link::MAX_FRAME`], always does; a few hundred bytes more than [`MAX_CSR`] do for
    /// short names).
    pub fn poll_transmit<'b>(
        &mut self,
        rng: &mut impl CryptoRngCore,
        buf: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        if !core::mem::take(&mut self.wanted) {
            return None;
        }
        let mut csr = [0u8; MAX_CSR];
        let (id, der) = match self.rotation.start_request(K::generate(rng), &mut csr) {
            Ok(r) => r,
            Err(e) => {
                self.push(Event::NotSent(SendError::Request(e)));
                return None;
            }
        };
        let frame = Frame::SignRequest {
            request: id.get(),
            id: self.workload.app_id,
            namespace: self.workload.namespace,
            token: self.workload.token,
            csr: der,
        };
        match frame.emit(buf) {
            Ok(bytes) => {
                self.sent = Some(id);
                self.push(Event::Requested { request: id.get() });
                Some(bytes)
            }
            Err(e) => {
                self.push(Event::NotSent(SendError::Frame(e)));
                None
            }
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.publish();
        self.events.pop_front()
    }

    /// When to call [`DeviceAgent::handle_timeout`] next: the one timer the driver arms.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rotation.poll_timeout()
    }

    /// Turns the machine's actions into requests to send, slot updates and events;
    /// `request` is the number of the answer just handled (0 for none).
    fn drain(&mut self, request: u32) {
        while let Some(action) = self.rotation.poll_action() {
            match action {
                Action::Request => self.wanted = true,
                Action::Installed {
                    generation,
                    not_after,
                } => {
                    self.unpublished = true;
                    self.installed = true;
                    self.push(Event::Installed {
                        generation,
                        not_after,
                    });
                }
                Action::Rejected(Rejection::Stale) => self.push(Event::Dropped { request }),
                Action::Rejected(reason) => self.push(Event::Rejected { request, reason }),
                Action::Expired => {
                    self.unpublished = false;
                    if let Some(slot) = self.slot {
                        slot.withdraw();
                    }
                    self.push(Event::Expired);
                }
            }
        }
        self.publish();
    }

    /// Takes the roots `answer` carries (its chain was just installed): the bundle becomes the
    /// provisioned anchors and those roots, if that differs from the bundle held.
    fn adopt(&mut self, now: Instant, answer: Answer<'_>) {
        let mut roots: heapless::Vec<&[u8], ANCHORS> = heapless::Vec::new();
        let mut set: heapless::Vec<&[u8], ANCHORS> = heapless::Vec::new();
        let mut full = false;
        for a in answer.anchors() {
            full |= roots.push(a).is_err();
        }
        let crc = roots
            .iter()
            .fold(0u32, |c, r| link::crc32(r).wrapping_add(c.rotate_left(5)));
        if roots.is_empty() || self.adopted == Some(crc) {
            return;
        }
        for a in self
            .provisioned
            .iter()
            .copied()
            .chain(roots.iter().copied())
        {
            if !set.contains(&a) {
                full |= set.push(a).is_err();
            }
        }
        if full {
            self.push(Event::AnchorsRefused(chain::BundleError::Full {
                capacity: ANCHORS,
            }));
            return;
        }
        // The set in force may be the same (a root moved between the provisioned part and
        // Sentry's): then only the store changes.
        let applied = if self.rotation.bundle().iter().eq(set.iter().copied()) {
            Ok(())
        } else {
            self.rotation.handle_trust_bundle(now, &set, &self.verifier)
        };
        match applied {
            Ok(()) => {
                let saved = self.store.as_mut().map(|s| s.save(&roots));
                // A save that failed is tried again with the next answer.
                if !matches!(saved, Some(Err(_))) {
                    self.adopted = Some(crc);
                }
                self.push(Event::AnchorsAdopted {
                    count: self.rotation.bundle().len(),
                    saved,
                });
            }
            Err(e) => self.push(Event::AnchorsRefused(e)),
        }
    }

    /// Publishes the installed identity if it is waiting to be.
    fn publish(&mut self) {
        if !self.unpublished {
            return;
        }
        let (Some(slot), Some(identity)) = (self.slot, self.rotation.identity()) else {
            self.unpublished = false;
            return;
        };
        // Busy: a reader still holds the older buffer; tried again at the next call.
        self.unpublished = slot
            .publish(
                identity.chain(),
                identity.key().clone(),
                identity.not_after(),
            )
            .is_err();
    }

    fn push(&mut self, event: Event) {
        if self.events.is_full() {
            // The oldest undrained event goes: the driver drains after every call.
            self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use super::*;
    use crate::bundle::OwnedTrustBundle;
    use crate::crypto::{PublicKey, RustCryptoSignatureVerifier, Scheme, SignError};
    use crate::csr::Csr;
    use crate::rotation::{Clock, Policy, State};
    use crate::spiffe::SpiffeId;

    // The fixture CA (root → issuer → leaf for `DEVICE_ID`, valid 2026-11-22 + 20 years) and
    // the leaf's key: real certificates and signatures, the key standing in for the fresh one.
    static ROOT: &[u8] = include_bytes!("../../tests/fixtures/p256/root.der");
    static ISSUER: &[u8] = include_bytes!("../../tests/fixtures/p256/issuer.der");
    static LEAF: &[u8] = include_bytes!("../../tests/fixtures/p256/leaf.der");
    static LEAF_KEY: &[u8; 32] = include_bytes!("../../tests/fixtures/p256/leaf-key.scalar");
    static FOREIGN: &[u8] = include_bytes!("../../tests/fixtures/p256/foreign.der");
    const DEVICE_ID: &str = "spiffe://example.org/ns/default/device";
    const WORKLOAD: Workload<'static> = Workload {
        app_id: "device",
        namespace: "default",
        token: "",
    };

    /// The fixture leaf's key, "generated" for every request: the fixture CA certified it.
    #[derive(Clone, Debug)]
    struct FixtureKey(SoftwareKey);

    impl Signer for FixtureKey {
        fn scheme(&self) -> Scheme {
            self.0.scheme()
        }
        fn public_key(&self) -> PublicKey<'_> {
            self.0.public_key()
        }
        fn sign<'b>(&mut self, message: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], SignError> {
            self.0.sign(message, out)
        }
    }

    impl FreshKey for FixtureKey {
        fn generate(_: &mut impl CryptoRngCore) -> Self {
            Self(SoftwareKey::from_signing_key(
                p256::ecdsa::SigningKey::from_slice(LEAF_KEY).unwrap(),
            ))
        }
    }

    type Agent<'a> = DeviceAgent<'a, FixtureKey, RustCryptoSignatureVerifier, 2048, 2, 2048>;

    fn agent(slot: Option<&IdentitySlot<FixtureKey, 2048>>) -> Agent<'_> {
        let mut bundle = OwnedTrustBundle::new();
        bundle.replace(&[ROOT]).unwrap();
        let id = SpiffeId::parse(DEVICE_ID).unwrap();
        let rotation = Rotation::new(Policy::default(), Clock::Monotonic, 7, Some(id), bundle);
        let agent = DeviceAgent::new(rotation, WORKLOAD, RustCryptoSignatureVerifier);
        match slot {
            Some(s) => agent.with_slot(s),
            None => agent,
        }
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn events(a: &mut Agent<'_>) -> std::vec::Vec<Event> {
        core::iter::from_fn(|| a.poll_event()).collect()
    }

    /// Sends what the agent wants sent; returns the requests' numbers and CSRs.
    fn transmit(a: &mut Agent<'_>) -> std::vec::Vec<(u32, std::vec::Vec<u8>)> {
        let mut out = std::vec::Vec::new();
        let mut buf = [0u8; link::MAX_FRAME];
        while let Some(bytes) = a.poll_transmit(&mut rand_core::OsRng, &mut buf) {
            match Frame::parse(bytes) {
                Ok((
                    Frame::SignRequest {
                        request,
                        id,
                        namespace,
                        token,
                        csr,
                    },
                    n,
                )) if n == bytes.len() => {
                    assert_eq!((id, namespace, token), ("device", "default", ""));
                    out.push((request, csr.to_vec()));
                }
                other => panic!("not one sign request: {other:?}"),
            }
        }
        out
    }

    fn answer_chain(a: &mut Agent<'_>, now: Instant, request: u32) {
        let mut buf = [0u8; 2048];
        let chain = link::encode_chain([LEAF, ISSUER], &mut buf).unwrap();
        a.handle_frame(
            now,
            Frame::SignAnswer {
                request,
                answer: Answer::Chain(chain),
            },
        );
    }

    fn refuse(a: &mut Agent<'_>, now: Instant, request: u32, code: u8) {
        a.handle_frame(
            now,
            Frame::SignAnswer {
                request,
                answer: Answer::Refused {
                    code,
                    message: "no",
                },
            },
        );
    }

    #[test]
    fn a_request_answered_with_a_valid_chain_installs_and_publishes() {
        let slot = IdentitySlot::new();
        let mut a = agent(Some(&slot));
        // A fresh agent's one timer is due at once; nothing is sent before it fires.
        assert_eq!(a.poll_timeout(), Some(Instant::ZERO));
        assert!(transmit(&mut a).is_empty());
        a.handle_timeout(ms(0));
        let sent = transmit(&mut a);
        let [(1, csr)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        let csr = Csr::parse(csr).unwrap();
        csr.verify_signature(&RustCryptoSignatureVerifier).unwrap();
        assert!(csr
            .public_key()
            .same_key(&FixtureKey::generate(&mut rand_core::OsRng).public_key()));
        assert_eq!(events(&mut a), [Event::Requested { request: 1 }]);
        // Nothing more to send while the answer is awaited; the timer is the request timeout.
        assert!(transmit(&mut a).is_empty());
        assert_eq!(a.poll_timeout(), Some(ms(30_000)));

        answer_chain(&mut a, ms(80), 1);
        let got = events(&mut a);
        assert!(
            matches!(got.as_slice(), [Event::Installed { generation: 1, .. }]),
            "{got:?}"
        );
        assert_eq!(a.rotation().identity().map(|i| i.leaf()), Some(LEAF));
        assert_eq!(slot.generation(), Some(1));
        assert_eq!(
            slot.lease()
                .and_then(|l| l.with(|i| Some(i.leaf() == LEAF))),
            Some(true)
        );
        // The one timer is now the renewal point.
        let State::Valid(renew) = a.rotation().state() else {
            panic!("{:?}", a.rotation().state())
        };
        assert_eq!(a.poll_timeout(), Some(renew));
        // A late duplicate of the answer changes nothing.
        answer_chain(&mut a, ms(90), 1);
        assert_eq!(events(&mut a), [Event::Dropped { request: 1 }]);
        assert_eq!(slot.generation(), Some(1));
    }

    #[test]
    fn refusals_read_their_code_and_back_off() {
        let mut a = agent(None);
        a.handle_timeout(ms(0));
        assert_eq!(transmit(&mut a)[0].0, 1);
        let _ = events(&mut a);

        // UNAVAILABLE: the CA could not be reached. First backoff: uniform in [0.5 s, 1 s].
        refuse(&mut a, ms(100), 1, 14);
        assert_eq!(
            events(&mut a),
            [Event::Refused {
                request: 1,
                code: 14,
                failure: Failure::Unreachable
            }]
        );
        assert_eq!(a.rotation().last_failure(), Some(Failure::Unreachable));
        assert_eq!(a.rotation().failures(), 1);
        let State::Backoff(retry) = a.rotation().state() else {
            panic!("{:?}", a.rotation().state())
        };
        assert!((ms(600)..=ms(1100)).contains(&retry), "{retry:?}");
        assert_eq!(a.poll_timeout(), Some(retry));
        // Nothing is sent before the retry time.
        a.handle_timeout(ms(retry.as_millis() - 1));
        assert!(transmit(&mut a).is_empty());
        a.handle_timeout(retry);
        assert_eq!(transmit(&mut a)[0].0, 2);
        let _ = events(&mut a);

        // PERMISSION_DENIED: refused. Second backoff: uniform in [1 s, 2 s].
        let t = retry.saturating_add(Duration::from_millis(100));
        refuse(&mut a, t, 2, 7);
        assert_eq!(
            events(&mut a),
            [Event::Refused {
                request: 2,
                code: 7,
                failure: Failure::Refused
            }]
        );
        assert_eq!(a.rotation().last_failure(), Some(Failure::Refused));
        assert_eq!(a.rotation().failures(), 2);
        let State::Backoff(retry) = a.rotation().state() else {
            panic!("{:?}", a.rotation().state())
        };
        let wait = retry.saturating_duration_since(t);
        assert!(
            (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&wait),
            "{wait:?}"
        );

        // INTERNAL: the CA side produced nothing usable.
        a.handle_timeout(retry);
        assert_eq!(transmit(&mut a)[0].0, 3);
        refuse(&mut a, retry, 3, 13);
        assert!(events(&mut a).contains(&Event::Refused {
            request: 3,
            code: 13,
            failure: Failure::Garbled
        }));
        assert!(a.rotation().identity().is_none());
    }

    #[test]
    fn answers_to_other_requests_are_dropped() {
        let mut a = agent(None);
        a.handle_timeout(ms(0));
        assert_eq!(transmit(&mut a)[0].0, 1);
        let _ = events(&mut a);
        // A number never sent: dropped, the request in flight unaffected.
        answer_chain(&mut a, ms(10), 7);
        refuse(&mut a, ms(10), 0, 14);
        assert_eq!(
            events(&mut a),
            [Event::Dropped { request: 7 }, Event::Dropped { request: 0 }]
        );
        assert_eq!(a.rotation().state(), State::Awaiting(ms(0)));
        // Request 1 times out (30 s), backs off, and is replaced by request 2.
        let timeout = a.poll_timeout().unwrap();
        assert_eq!(timeout, ms(30_000));
        a.handle_timeout(timeout);
        assert!(events(&mut a).is_empty());
        let retry = a.poll_timeout().unwrap();
        a.handle_timeout(retry);
        assert_eq!(transmit(&mut a)[0].0, 2);
        let _ = events(&mut a);
        // The slow answer to request 1 arrives now: dropped, even though it is valid.
        answer_chain(&mut a, retry, 1);
        assert_eq!(events(&mut a), [Event::Dropped { request: 1 }]);
        assert!(a.rotation().identity().is_none());
        answer_chain(&mut a, retry, 2);
        assert!(matches!(
            events(&mut a).as_slice(),
            [Event::Installed { generation: 1, .. }]
        ));
    }

    #[test]
    fn a_chain_that_does_not_validate_is_rejected_and_the_identity_kept() {
        let slot = IdentitySlot::new();
        let mut a = agent(Some(&slot));
        a.handle_timeout(ms(0));
        transmit(&mut a);
        answer_chain(&mut a, ms(50), 1);
        let _ = events(&mut a);
        // Renewal; the answer's issuer is missing, so the leaf does not chain to the root.
        let renew = a.poll_timeout().unwrap();
        a.handle_timeout(renew);
        assert_eq!(transmit(&mut a)[0].0, 2);
        let _ = events(&mut a);
        let mut buf = [0u8; 2048];
        let leaf_only = link::encode_chain([LEAF], &mut buf).unwrap();
        a.handle_frame(
            renew,
            Frame::SignAnswer {
                request: 2,
                answer: Answer::Chain(leaf_only),
            },
        );
        let got = events(&mut a);
        assert!(
            matches!(
                got.as_slice(),
                [Event::Rejected {
                    request: 2,
                    reason: Rejection::Path(_)
                }]
            ),
            "{got:?}"
        );
        assert_eq!(slot.generation(), Some(1));
        assert!(a.rotation().identity().is_some());
        assert!(matches!(a.rotation().state(), State::Backoff(_)));
    }

    #[test]
    fn a_request_that_cannot_be_sent_is_retried_like_a_lost_one() {
        let mut a = agent(None);
        a.handle_timeout(ms(0));
        let mut small = [0u8; 64];
        assert_eq!(a.poll_transmit(&mut rand_core::OsRng, &mut small), None);
        let got = events(&mut a);
        assert!(
            matches!(
                got.as_slice(),
                [Event::NotSent(SendError::Frame(
                    link::Error::BufferTooSmall { .. }
                ))]
            ),
            "{got:?}"
        );
        // Not asked again until the machine times the request out and its backoff passes.
        assert_eq!(a.poll_transmit(&mut rand_core::OsRng, &mut small), None);
        let timeout = a.poll_timeout().unwrap();
        a.handle_timeout(timeout);
        let retry = a.poll_timeout().unwrap();
        assert!(retry > timeout);
        a.handle_timeout(retry);
        assert_eq!(transmit(&mut a)[0].0, 2);
    }

    #[test]
    fn a_leased_identity_delays_publishing_until_the_reader_lets_go() {
        let slot = IdentitySlot::new();
        let mut a = agent(Some(&slot));
        let mut now = ms(0);
        let install = |a: &mut Agent<'_>, now: &mut Instant| {
            let due = a.poll_timeout().unwrap();
            *now = due.max(*now);
            a.handle_timeout(*now);
            let request = transmit(a)[0].0;
            answer_chain(a, *now, request);
        };
        install(&mut a, &mut now);
        let _ = events(&mut a);
        // A reader holds generation 1; generation 2 goes to the other buffer.
        let old = slot.lease().unwrap();
        install(&mut a, &mut now);
        let _ = events(&mut a);
        assert_eq!(slot.generation(), Some(2));
        // Still held: generation 3 would overwrite generation 1's buffer, so it waits.
        install(&mut a, &mut now);
        let _ = events(&mut a);
        assert_eq!(slot.generation(), Some(2));
        drop(old);
        assert_eq!(a.poll_event(), None);
        assert_eq!(slot.generation(), Some(3));
    }

    /// Answers `request` with `chain` and, after the empty field, `roots`.
    fn answer_with_roots(
        a: &mut Agent<'_>,
        now: Instant,
        request: u32,
        chain: &[&[u8]],
        roots: &[&[u8]],
    ) {
        let mut buf = [0u8; 4096];
        let empty: [&[u8]; 1] = [&[]];
        let fields = chain
            .iter()
            .chain(empty.iter())
            .chain(roots.iter())
            .copied();
        let payload = link::encode_chain(fields, &mut buf).unwrap();
        a.handle_frame(
            now,
            Frame::SignAnswer {
                request,
                answer: Answer::Chain(payload),
            },
        );
    }

    #[test]
    fn sentrys_roots_are_adopted_with_an_installed_chain_only_and_saved_when_they_change() {
        let mut store = crate::bundle::RamAnchorStore::<2048>::new();
        let provisioned = [ROOT];
        let mut a = agent(None)
            .with_provisioned(&provisioned)
            .with_store(&mut store);
        a.handle_timeout(ms(0));
        let [(1, _)] = transmit(&mut a).as_slice() else {
            panic!()
        };
        let _ = events(&mut a);
        // The chain installs, then Sentry's roots (its own and a new one) join the provisioned.
        answer_with_roots(&mut a, ms(10), 1, &[LEAF, ISSUER], &[ROOT, FOREIGN]);
        let got = events(&mut a);
        assert!(
            matches!(
                got.as_slice(),
                [
                    Event::Installed { generation: 1, .. },
                    Event::AnchorsAdopted {
                        count: 2,
                        saved: Some(Ok(()))
                    }
                ]
            ),
            "{got:?}"
        );
        assert!(a.rotation().bundle().iter().any(|r| r == FOREIGN));
        // The next answer with the same roots changes nothing (no store write).
        let State::Valid(renew) = a.rotation().state() else {
            panic!()
        };
        a.handle_timeout(renew);
        let [(2, _)] = transmit(&mut a).as_slice() else {
            panic!()
        };
        let _ = events(&mut a);
        answer_with_roots(&mut a, renew, 2, &[LEAF, ISSUER], &[ROOT, FOREIGN]);
        let got = events(&mut a);
        assert!(
            matches!(got.as_slice(), [Event::Installed { generation: 2, .. }]),
            "{got:?}"
        );
        // Sentry's roots replace the ones adopted before; the provisioned root stays.
        let State::Valid(renew) = a.rotation().state() else {
            panic!()
        };
        a.handle_timeout(renew);
        let [(3, _)] = transmit(&mut a).as_slice() else {
            panic!()
        };
        let _ = events(&mut a);
        answer_with_roots(&mut a, renew, 3, &[LEAF, ISSUER], &[FOREIGN]);
        let got = events(&mut a);
        assert!(
            matches!(
                got.as_slice(),
                [
                    Event::Installed { .. },
                    Event::AnchorsAdopted { count: 2, .. }
                ]
            ),
            "{got:?}"
        );
        assert_eq!(a.stored_anchors().collect::<std::vec::Vec<_>>(), [FOREIGN]);
        drop(a);
        let saved: std::vec::Vec<&[u8]> =
            crate::bundle::saved(crate::bundle::AnchorStore::records(&store)).collect();
        assert_eq!(saved, [FOREIGN]);
    }

    #[test]
    fn roots_with_a_refused_chain_or_too_many_are_not_adopted() {
        let provisioned = [ROOT];
        let mut a = agent(None).with_provisioned(&provisioned);
        a.handle_timeout(ms(0));
        let [(1, _)] = transmit(&mut a).as_slice() else {
            panic!()
        };
        let _ = events(&mut a);
        // A leaf without its issuer does not chain: refused, and its roots with it.
        answer_with_roots(&mut a, ms(10), 1, &[LEAF], &[FOREIGN]);
        let got = events(&mut a);
        assert!(
            matches!(got.as_slice(), [Event::Rejected { .. }]),
            "{got:?}"
        );
        assert!(a.rotation().bundle().iter().eq([ROOT]));
        // More roots than the bundle holds: the chain installs, the bundle stays.
        let retry = a.poll_timeout().unwrap();
        a.handle_timeout(retry);
        let [(2, _)] = transmit(&mut a).as_slice() else {
            panic!()
        };
        let _ = events(&mut a);
        answer_with_roots(&mut a, retry, 2, &[LEAF, ISSUER], &[FOREIGN, ISSUER, ROOT]);
        let got = events(&mut a);
        assert!(
            matches!(
                got.as_slice(),
                [
                    Event::Installed { .. },
                    Event::AnchorsRefused(chain::BundleError::Full { .. })
                ]
            ),
            "{got:?}"
        );
        assert!(a.rotation().bundle().iter().eq([ROOT]));
    }
}
