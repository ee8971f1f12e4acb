//! The rotation state machine: obtain a workload identity, renew it before it expires, follow
//! trust-bundle changes, and survive a CA outage without ever presenting an identity that
//! failed validation. Sans-IO: the driver (a tokio task on a host, a loop on a device) feeds it
//! events and carries out its actions.
//!
//! ```text
//!                        ┌──────────────── bundle no longer trusts the identity: Request ─┐
//!   ┌──────┐  timeout:   ▼                                                                 │
//!   │ Idle │ ──────► ┌──────────┐  answer to this request, valid: Installed   ┌───────┐    │
//!   └──────┘ Request │ Awaiting │ ───────────────────────────────────────────► │ Valid │ ───┤
//!                    └──────────┘                                              └───────┘    │
//!        invalid answer: Rejected │  ▲ retry time:                                 │        │
//!        failure, request timeout │  │ Request              renewal point: Request │        │
//!                                 ▼  │                     ┌───────────────────────┘        │
//!                    ┌──────────┐ ───┘                     ▼                                │
//!                    │ Backoff  │ ◄──────────────── (to Awaiting)                           │
//!                    └──────────┘ ──────────────────────────────────────────────────────────┘
//!   In any state: an answer to another request is Rejected(Stale) and changes nothing; the
//!   identity's expiry passing emits Expired once and withdraws it from `identity()`.
//! ```
//!
//! | state | event | next state | actions |
//! |---|---|---|---|
//! | Idle | timeout (due at once) | Awaiting | Request |
//! | Awaiting | valid answer to the request in flight | Valid (renewal point) | Installed |
//! | Awaiting | invalid answer to the request in flight | Backoff | Rejected(reason) |
//! | Awaiting | failure of the request in flight, or `request_timeout` passed | Backoff | — |
//! | Backoff | retry time | Awaiting | Request |
//! | Valid | renewal point | Awaiting | Request |
//! | Valid, Backoff | new bundle no longer trusts the identity | Awaiting (failures reset) | Request |
//! | any | answer to a request not in flight | unchanged | Rejected(Stale) |
//! | any, with an identity | its expiry | unchanged | Expired (once) |
//!
//! Rules, in order of precedence:
//!
//! - **Only validated identities are installed.** A response is installed only if its chain
//!   validates against the current trust bundle (core path validation, client and server use),
//!   passes the workload profile check, and carries the key of the request in flight. Anything
//!   else is [`Action::Rejected`] and the old identity keeps serving.
//! - **Renewal** starts at `renew_at ± renew_jitter` of the lifetime (default 50 % ± 20 %,
//!   uniform, a fresh draw per certificate): Dapr's 50 % on average, spread so that a fleet
//!   issued in one minute stops renewing in one minute after a few rounds.
//! - **Failures back off** exponentially from `backoff_initial`, doubling to `backoff_max`, each
//!   wait drawn uniformly from its upper half (jitter); in the last `urgent_below` of the
//!   lifetime (or with no valid identity) the cap is `urgent_backoff_max`, so a returning CA is
//!   found quickly exactly when it matters. A request with no answer after `request_timeout`
//!   counts as a failure.
//! - **Trust bundles** change at run time: [`Rotation::handle_trust_bundle`]. If the current
//!   identity no longer chains to any anchor, renewal starts at once.
//! - **Time**: timers run on the monotonic [`Instant`]. Wall time is needed only to validate a
//!   new chain; a device with a clock passes it in, a device without one runs with
//!   [`Clock::Monotonic`]: the lower bound on wall time is the newest notBefore seen plus the
//!   CA's assumed back-dating (`issuer_skew`), advanced by the monotonic clock. Why that is a
//!   lower bound: the certificate carries the key generated for *this* request, so it was
//!   issued after the request left, and the CA issued it at notBefore + its skew (Sentry
//!   back-dates by `allowedClockSkew`); so that instant has passed. The bound is as good as the
//!   CA's clock, which the device trusts anyway, and only rises (the maximum over every
//!   certificate seen). What a device without a clock cannot know: whether its very first
//!   certificate is not yet valid or already expired beyond the window it states; after the
//!   first install it refuses chains that expired before the floor. The expiry and
//!   renewal deadlines of an installed identity are fixed on the monotonic clock at install,
//!   so a wall clock jumping backwards or days forwards afterwards cannot wedge the machine:
//!   the identity in use keeps serving until its own deadline, renewal happens on time, and the
//!   trust re-check of [`Rotation::handle_trust_bundle`] uses the identity's own time estimate
//!   (wall time at install plus monotonic time since). In [`Clock::Wall`] mode the clock is
//!   trusted for *new* chains: while it is wrong by more than `validation_skew` they are refused
//!   ([`Rejection::Path`] with the time error) and retried at the backoff cap, and the first
//!   attempt after it is right again succeeds. A device whose clock may be wrong for long should
//!   run [`Clock::Monotonic`].
//!
//! ## Why these defaults
//!
//! - 50 % renewal is Dapr's; ± 20 % jitter turns a fleet issued in one minute into a load spread
//!   over 40 % of the lifetime after the first round (`fleet-sim` measures the peak-to-mean).
//! - Backoff 1 s doubling to 5 min: a blip costs seconds; a CA down for an hour sees about 15
//!   requests per workload instead of Dapr's 360; a CA that returns is found within 5 min.
//! - Urgent below 10 % of the lifetime, capped at 10 s: with a 24 h certificate that is the last
//!   2.4 h, when waiting 5 min for a returning CA risks an outage; 10 s matches Dapr's retry.
//! - 30 s request timeout: longer than Dapr's 5 × 3 s retried call, short against the lifetime.
//! - 15 min skew: Dapr's `allowedClockSkew`, so a certificate back-dated by Sentry validates.
//!
//! Call order: after every `handle_*`, drain [`Rotation::poll_action`], then arm one timer at
//! [`Rotation::poll_timeout`] and call [`Rotation::handle_timeout`] when it fires. On
//! [`Action::Request`], generate a key and call [`Rotation::start_request`] for the CSR; it
//! returns the [`RequestId`] to hand back with the answer ([`Rotation::handle_response`]) or the
//! failure ([`Rotation::handle_failure`]). An answer to a request the machine already gave up on
//! (timed out, superseded) is refused as [`Rejection::Stale`] and changes nothing, so a slow CA
//! can never cancel the request that replaced its own.

use core::time::Duration;

use crate::bundle::OwnedTrustBundle;
use crate::cert::Certificate;
use crate::chain::{self, Options, Usage};
use crate::crypto::{PublicKey, SignatureVerifier, Signer};
use crate::csr;
use crate::profile::{self, Expected};
use crate::spiffe::SpiffeId;
use crate::time::{Instant, UnixTime};

/// A share of a certificate's lifetime, in thousandths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permille(pub u16);

impl Permille {
    fn of(self, d: Duration) -> Duration {
        d.saturating_mul(u32::from(self.0.min(1000))) / 1000
    }
}

/// When to renew and how to retry. Every field is documented with its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Middle of the renewal window, as a share of the lifetime. Default 500 (Dapr's 50 %).
    pub renew_at: Permille,
    /// Half-width of the renewal window. Default 200: renewal at 30–70 % of the lifetime.
    pub renew_jitter: Permille,
    /// First wait after a failure. Default 1 s.
    pub backoff_initial: Duration,
    /// Longest wait between attempts. Default 5 min: a CA down for an hour sees about a
    /// dozen requests per workload, not the 360 of Dapr's fixed 10 s.
    pub backoff_max: Duration,
    /// Below this share of the lifetime left (or with no valid identity), retries are urgent.
    /// Default 100 (the last 10 %).
    pub urgent_below: Permille,
    /// Longest wait between urgent attempts. Default 10 s.
    pub urgent_backoff_max: Duration,
    /// A request with no answer after this long has failed. Default 30 s.
    pub request_timeout: Duration,
    /// How far the CA back-dates notBefore (Dapr's allowedClockSkew), for devices without a
    /// clock. Default 15 min.
    pub issuer_skew: Duration,
    /// Allowed clock skew when validating a new chain. Default 15 min.
    pub validation_skew: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            renew_at: Permille(500),
            renew_jitter: Permille(200),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            urgent_below: Permille(100),
            urgent_backoff_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            issuer_skew: Duration::from_secs(15 * 60),
            validation_skew: Duration::from_secs(15 * 60),
        }
    }
}

impl Policy {
    /// How long after notBefore to renew a certificate living `lifetime`, using `jitter`.
    pub fn renewal_offset(&self, lifetime: Duration, jitter: &mut Jitter) -> Duration {
        let lo = Permille(self.renew_at.0.saturating_sub(self.renew_jitter.0));
        let hi = Permille(
            self.renew_at
                .0
                .saturating_add(self.renew_jitter.0)
                .min(1000),
        );
        let (lo, hi) = (lo.of(lifetime), hi.of(lifetime));
        lo + jitter.between(hi.saturating_sub(lo))
    }

    /// The wait before attempt `failures + 1` (`failures` >= 1), urgent or not.
    pub fn backoff(&self, failures: u32, urgent: bool, jitter: &mut Jitter) -> Duration {
        let cap = if urgent {
            self.urgent_backoff_max.min(self.backoff_max)
        } else {
            self.backoff_max
        };
        let doublings = failures.saturating_sub(1).min(30);
        let base = self.backoff_initial.saturating_mul(1 << doublings).min(cap);
        // Uniform in [base/2, base]: spread, and never more than the cap.
        base / 2 + jitter.between(base / 2)
    }
}

/// A small seeded generator (SplitMix64) for jitter. Not for keys.
#[derive(Clone, Copy, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from `seed`; give each workload its own (from its RNG or identity).
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniform in `[0, max]`, to the millisecond.
    pub fn between(&mut self, max: Duration) -> Duration {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(if ms == 0 {
            0
        } else {
            self.next_u64() % (ms + 1)
        })
    }
}

/// Where wall time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The driver passes real wall time with each event.
    Wall,
    /// No real-time clock: wall time is bounded below from certificates (see the module doc).
    Monotonic,
}

/// Names one request, so that its answer or failure is matched to it. Requests count from 1;
/// the default (0) names no request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestId(u32);

impl RequestId {
    /// The number (counts requests from 1).
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Generate a fresh key, call [`Rotation::start_request`] for the CSR, and send it to the CA.
    Request,
    /// A new identity was installed: publish it (e.g. to the identity slot or the TLS stack).
    Installed {
        /// Counts installs, from 1.
        generation: u32,
        /// The new certificate's notAfter.
        not_after: UnixTime,
    },
    /// A response was refused; the previous identity (if any) keeps serving.
    Rejected(Rejection),
    /// The identity expired before a new one could be installed. Reported once per identity.
    Expired,
}

/// Why a response was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The answer is to a request that is no longer in flight (it timed out, failed or was
    /// superseded); the request in flight, if any, is unaffected.
    Stale,
    /// [`Clock::Wall`] mode, and the driver has not passed a wall-clock reading yet.
    NoWallTime,
    /// The response held no certificate, or more than fit.
    BadShape,
    /// The chain does not validate against the current trust bundle.
    Path(chain::Error),
    /// The leaf does not fit the workload profile (including the key check).
    Profile(profile::Error),
}

impl core::fmt::Display for Rejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Stale => f.write_str("answer to a request no longer in flight"),
            Self::NoWallTime => f.write_str("no wall-clock time to validate at yet"),
            Self::BadShape => f.write_str("no certificate, or more than fit"),
            Self::Path(e) => write!(f, "chain does not validate: {e}"),
            Self::Profile(e) => write!(f, "not this workload's certificate: {e}"),
        }
    }
}

impl core::error::Error for Rejection {}

/// Why the driver reports a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The CA could not be reached.
    Unreachable,
    /// The CA answered with an error (e.g. a gRPC status).
    Refused,
    /// The answer could not be decoded.
    Garbled,
}

/// Why [`Rotation::start_request`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// No [`Action::Request`] is outstanding.
    NotRequested,
    /// Building the CSR failed.
    Csr(csr::Error),
}

/// The machine's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing asked yet.
    Idle,
    /// A request is wanted or in flight since the instant given.
    Awaiting(Instant),
    /// Waiting until the instant given to try again.
    Backoff(Instant),
    /// Holding a valid identity; renewal at the instant given.
    Valid(Instant),
}

/// The identity in use: its chain (leaf first) and the key it certifies.
#[derive(Debug)]
pub struct Identity<K, const CHAIN: usize> {
    chain: heapless::Vec<u8, CHAIN>,
    ends: heapless::Vec<usize, 4>,
    key: K,
    not_before: UnixTime,
    not_after: UnixTime,
    installed: Instant,
    /// Wall time (as validated) at `installed`.
    installed_wall: UnixTime,
    expires: Instant,
}

impl<K, const CHAIN: usize> Identity<K, CHAIN> {
    /// The certificates, leaf first, as DER.
    pub fn chain(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let c = self.chain.get(start..end).unwrap_or(&[]);
            start = end;
            c
        })
    }

    /// The leaf certificate's DER.
    pub fn leaf(&self) -> &[u8] {
        self.chain().next().unwrap_or(&[])
    }

    /// The private key.
    pub const fn key(&self) -> &K {
        &self.key
    }

    /// The leaf's notAfter.
    pub const fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// The leaf's notBefore.
    pub const fn not_before(&self) -> UnixTime {
        self.not_before
    }

    /// When (on the monotonic clock) it was installed.
    pub const fn installed(&self) -> Instant {
        self.installed
    }

    /// When (on the monotonic clock) it expires.
    pub const fn expires(&self) -> Instant {
        self.expires
    }
}

/// The rotation machine for one workload. `CHAIN` bounds the DER of an identity's chain;
/// `ANCHORS`/`ANCHOR_BYTES` bound the trust bundle.
#[derive(Debug)]
pub struct Rotation<'id, K, const CHAIN: usize, const ANCHORS: usize, const ANCHOR_BYTES: usize> {
    policy: Policy,
    clock: Clock,
    jitter: Jitter,
    /// The identity the answer must carry (and, if exact, that the CSR asks for).
    expected: Option<Expected<'id>>,
    bundle: OwnedTrustBundle<ANCHORS, ANCHOR_BYTES>,
    state: State,
    current: Option<Identity<K, CHAIN>>,
    pending: Option<K>,
    request_outstanding: bool,
    request_id: u32,
    last_failure: Option<Failure>,
    failures: u32,
    generation: u32,
    expired_reported: bool,
    /// (monotonic instant, wall time at that instant): the newest wall-time reading.
    wall: Option<(Instant, UnixTime)>,
    actions: heapless::Deque<Action, 4>,
}

impl<'id, K: Signer, const CHAIN: usize, const ANCHORS: usize, const ANCHOR_BYTES: usize>
    Rotation<'id, K, CHAIN, ANCHORS, ANCHOR_BYTES>
{
    /// A machine with no identity yet. `seed` drives jitter: give each workload its own.
    /// `spiffe_id`, if given, is asked for in the CSR and required of the answer (see
    /// [`Rotation::expecting`] for a sidecar's check).
    pub fn new(
        policy: Policy,
        clock: Clock,
        seed: u64,
        spiffe_id: Option<SpiffeId<'id>>,
        bundle: OwnedTrustBundle<ANCHORS, ANCHOR_BYTES>,
    ) -> Self {
        Self {
            policy,
            clock,
            jitter: Jitter::new(seed),
            expected: spiffe_id.map(Expected::Id),
            bundle,
            state: State::Idle,
            current: None,
            pending: None,
            request_outstanding: false,
            request_id: 0,
            last_failure: None,
            failures: 0,
            generation: 0,
            expired_reported: false,
            wall: None,
            actions: heapless::Deque::new(),
        }
    }

    /// Requires answers to carry `expected` instead (a sidecar: Dapr's
    /// `/ns/<namespace>/<app-id>` in whatever trust domain Sentry chose).
    #[must_use]
    pub const fn expecting(mut self, expected: Expected<'id>) -> Self {
        self.expected = Some(expected);
        self
    }

    /// The current state.
    pub const fn state(&self) -> State {
        self.state
    }

    /// The identity in use, if any and not expired.
    pub fn identity(&self) -> Option<&Identity<K, CHAIN>> {
        self.current.as_ref().filter(|_| !self.expired_reported)
    }

    /// The trust bundle in force.
    pub const fn bundle(&self) -> &OwnedTrustBundle<ANCHORS, ANCHOR_BYTES> {
        &self.bundle
    }

    /// Consecutive failed attempts.
    pub const fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a wall-clock reading (devices with a clock: with every event).
    pub fn handle_wall_time(&mut self, now: Instant, wall: UnixTime) {
        if self.clock == Clock::Wall {
            self.wall = Some((now, wall));
        }
    }

    /// The best wall time known at `now`, if any.
    pub fn wall_time(&self, now: Instant) -> Option<UnixTime> {
        self.wall
            .map(|(at, w)| w.saturating_add(now.saturating_duration_since(at)))
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Rotation::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self
            .current
            .as_ref()
            .filter(|_| !self.expired_reported)
            .map(|c| c.expires);
        let state_deadline = match self.state {
            State::Idle => Some(Instant::ZERO),
            State::Awaiting(since) => Some(since.saturating_add(self.policy.request_timeout)),
            State::Backoff(at) | State::Valid(at) => Some(at),
        };
        match (state_deadline, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: renew, retry, time a request out, or report expiry, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(c) = &self.current {
            if now >= c.expires && !self.expired_reported {
                self.expired_reported = true;
                self.push(Action::Expired);
            }
        }
        match self.state {
            State::Idle => self.request(now),
            State::Valid(at) | State::Backoff(at) if now >= at => self.request(now),
            State::Awaiting(since) if now >= since.saturating_add(self.policy.request_timeout) => {
                self.fail(now);
            }
            _ => {}
        }
    }

    /// Renews now rather than at the planned point, if a valid identity is waiting for its
    /// renewal (a request in flight or a backoff is left alone). For a driver that learns the
    /// CA has moved on, e.g. a peer's certificate from an issuer this workload does not hold
    /// yet. Call [`Rotation::handle_timeout`] (or re-arm the timer) afterwards.
    pub fn renew_now(&mut self, now: Instant) {
        if let State::Valid(at) = self.state {
            if at > now {
                self.state = State::Valid(now);
            }
        }
    }

    /// Builds the CSR for the outstanding request with `key` (fresh from the driver's RNG) into
    /// `buf`, and keeps the key as the pending one. Returns the request's id (for
    /// [`Rotation::handle_response`] and [`Rotation::handle_failure`]) and the CSR's DER.
    ///
    /// # Errors
    ///
    /// [`RequestError::NotRequested`] unless an [`Action::Request`] is outstanding;
    /// [`RequestError::Csr`] if the CSR does not fit.
    pub fn start_request<'b>(
        &mut self,
        mut key: K,
        buf: &'b mut [u8],
    ) -> Result<(RequestId, &'b [u8]), RequestError> {
        if !self.request_outstanding {
            return Err(RequestError::NotRequested);
        }
        let builder = match self.expected {
            Some(Expected::Id(id)) => csr::Builder::new().with_spiffe_id(id),
            _ => csr::Builder::new(),
        };
        let der = builder.build(&mut key, buf).map_err(RequestError::Csr)?;
        self.pending = Some(key);
        Ok((RequestId(self.request_id), der))
    }

    /// The CA answered request `id` with `chain` (DER, leaf first, then its issuers).
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        chain: &[&[u8]],
        verifier: &impl SignatureVerifier,
    ) {
        if !self.in_flight(id) {
            self.push(Action::Rejected(Rejection::Stale));
            return;
        }
        match self.validate(now, chain, verifier) {
            Ok(()) => {}
            Err(r) => {
                self.push(Action::Rejected(r));
                self.fail(now);
            }
        }
    }

    /// Request `id` failed without an answer to check. A failure of a request no longer in
    /// flight is ignored.
    pub fn handle_failure(&mut self, now: Instant, id: RequestId, reason: Failure) {
        if self.in_flight(id) {
            self.last_failure = Some(reason);
            self.fail(now);
        }
    }

    /// Why the last request failed without an answer, if it did (for metrics and logs).
    pub const fn last_failure(&self) -> Option<Failure> {
        self.last_failure
    }

    /// Whether request `id` is the one in flight (its answer or failure would be taken).
    pub fn is_in_flight(&self, id: RequestId) -> bool {
        self.in_flight(id)
    }

    fn in_flight(&self, id: RequestId) -> bool {
        matches!(self.state, State::Awaiting(_))
            && self.request_outstanding
            && self.pending.is_some()
            && id.0 == self.request_id
    }

    /// New trust anchors (DER); ones the core cannot use are skipped, as
    /// [`OwnedTrustBundle::replace`] does. If the identity in use no longer chains to any of
    /// them, renewal starts at once.
    ///
    /// # Errors
    ///
    /// The bundle's error (none usable, or too many); the old bundle stays in force then.
    pub fn handle_trust_bundle(
        &mut self,
        now: Instant,
        anchors: &[&[u8]],
        verifier: &impl SignatureVerifier,
    ) -> Result<(), chain::BundleError> {
        self.bundle.replace(anchors)?;
        let still_trusted = match &self.current {
            Some(c) if !self.expired_reported => {
                // The identity's own clock: immune to wall-clock jumps since its install.
                let wall = c
                    .installed_wall
                    .saturating_add(now.saturating_duration_since(c.installed));
                let certs: heapless::Vec<&[u8], 4> = c.chain().collect();
                let (leaf, rest) = certs
                    .split_first()
                    .map_or((&[][..], &[][..]), |(l, r)| (*l, r));
                let options = Options {
                    skew: self.policy.validation_skew,
                    ..Options::new(wall)
                };
                chain::verify(leaf, rest, &self.bundle.as_bundle(), verifier, &options).is_ok()
            }
            _ => true,
        };
        if !still_trusted {
            if let State::Valid(_) | State::Backoff(_) = self.state {
                self.failures = 0;
                self.request(now);
            }
        }
        Ok(())
    }

    fn push(&mut self, action: Action) {
        if self.actions.is_full() {
            // The oldest undrained action is dropped: the driver drains after every call.
            self.actions.pop_front();
        }
        let _ = self.actions.push_back(action);
    }

    fn request(&mut self, now: Instant) {
        self.state = State::Awaiting(now);
        self.pending = None;
        self.request_outstanding = true;
        self.request_id = self.request_id.wrapping_add(1).max(1);
        self.push(Action::Request);
    }

    /// Whether retries are urgent at `now`: no valid identity, or less than `urgent_below` of
    /// its lifetime left (for readiness and metrics: the workload is at risk).
    pub fn is_urgent(&self, now: Instant) -> bool {
        match self.identity() {
            None => true,
            Some(c) => {
                let lifetime = Duration::from_secs(
                    c.not_after.as_secs().saturating_sub(c.not_before.as_secs()),
                );
                let left = c.expires.saturating_duration_since(now);
                left <= self.policy.urgent_below.of(lifetime)
            }
        }
    }

    fn fail(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.pending = None;
        self.request_outstanding = false;
        let wait = self
            .policy
            .backoff(self.failures, self.is_urgent(now), &mut self.jitter);
        let mut at = now.saturating_add(wait);
        // Never sleep past a valid identity's expiry without trying.
        if let Some(c) = self.identity() {
            if c.expires > now {
                at = at.min(c.expires);
            }
        }
        self.state = State::Backoff(at);
    }

    fn validate(
        &mut self,
        now: Instant,
        chain: &[&[u8]],
        verifier: &impl SignatureVerifier,
    ) -> Result<(), Rejection> {
        let leaf_der = chain.first().ok_or(Rejection::BadShape)?;
        if chain.len() > 4 || chain.iter().map(|c| c.len()).sum::<usize>() > CHAIN {
            return Err(Rejection::BadShape);
        }
        let leaf = Certificate::parse(leaf_der).map_err(|e| {
            Rejection::Path(chain::Error {
                cert: chain::Position::Leaf,
                kind: chain::ErrorKind::Malformed(e),
            })
        })?;
        // Wall time to validate at: the clock, or (no clock) the floor the certificates give.
        let wall = match (self.clock, self.wall_time(now)) {
            (Clock::Wall, Some(w)) => w,
            (Clock::Wall, None) => return Err(Rejection::NoWallTime),
            (Clock::Monotonic, floor) => {
                let estimate = leaf
                    .not_before()
                    .saturating_add(self.policy.issuer_skew)
                    .min(leaf.not_after());
                floor.map_or(estimate, |f| f.max(estimate))
            }
        };
        let pending = self.pending.as_ref().ok_or(Rejection::Stale)?;
        check_issued(
            chain,
            &self.bundle.as_bundle(),
            pending.public_key(),
            self.expected,
            wall,
            self.policy.validation_skew,
            verifier,
        )?;

        // Install: copy the chain, fix the deadlines on the monotonic clock.
        let mut stored: heapless::Vec<u8, CHAIN> = heapless::Vec::new();
        let mut ends: heapless::Vec<usize, 4> = heapless::Vec::new();
        for c in chain {
            stored
                .extend_from_slice(c)
                .map_err(|_| Rejection::BadShape)?;
            ends.push(stored.len()).map_err(|_| Rejection::BadShape)?;
        }
        let (not_before, not_after) = (leaf.not_before(), leaf.not_after());
        let until_expiry = Duration::from_secs(not_after.as_secs().saturating_sub(wall.as_secs()));
        let lifetime =
            Duration::from_secs(not_after.as_secs().saturating_sub(not_before.as_secs()));
        let renew_wall =
            not_before.saturating_add(self.policy.renewal_offset(lifetime, &mut self.jitter));
        let until_renewal =
            Duration::from_secs(renew_wall.as_secs().saturating_sub(wall.as_secs()));
        let key = self.pending.take().ok_or(Rejection::Stale)?;
        let expires = now.saturating_add(until_expiry);
        self.current = Some(Identity {
            chain: stored,
            ends,
            key,
            not_before,
            not_after,
            installed: now,
            installed_wall: wall,
            expires,
        });
        if self.clock == Clock::Monotonic {
            self.wall = Some((now, wall));
        }
        self.generation = self.generation.wrapping_add(1);
        self.failures = 0;
        self.last_failure = None;
        self.expired_reported = false;
        self.request_outstanding = false;
        self.state = State::Valid(now.saturating_add(until_renewal.min(until_expiry)));
        self.push(Action::Installed {
            generation: self.generation,
            not_after,
        });
        Ok(())
    }
}

/// The judgement on a chain the CA issued (DER, leaf first, then its issuers): it validates
/// against `bundle` at `wall` (with `skew`) for both client and server use, and its leaf fits
/// the workload profile for `key` and `expected`. The rotation machine judges every answer
/// with it, and so does every host tool that obtains a certificate (`sigil sign`), so one
/// answer gets one verdict everywhere.
///
/// # Errors
///
/// [`Rejection::BadShape`] for an empty chain, [`Rejection::Path`] or [`Rejection::Profile`].
pub fn check_issued<const N: usize>(
    chain: &[&[u8]],
    bundle: &chain::TrustBundle<'_, N>,
    key: PublicKey<'_>,
    expected: Option<Expected<'_>>,
    wall: UnixTime,
    skew: Duration,
    verifier: &impl SignatureVerifier,
) -> Result<(), Rejection> {
    let (leaf_der, rest) = chain.split_first().ok_or(Rejection::BadShape)?;
    let leaf = Certificate::parse(leaf_der).map_err(|e| {
        Rejection::Path(chain::Error {
            cert: chain::Position::Leaf,
            kind: chain::ErrorKind::Malformed(e),
        })
    })?;
    let options = Options {
        skew,
        usage: Usage::ClientAndServer,
        ..Options::new(wall)
    };
    chain::verify(leaf_der, rest, bundle, verifier, &options).map_err(Rejection::Path)?;
    profile::check_workload(&leaf, key, expected).map_err(Rejection::Profile)?;
    Ok(())
}
