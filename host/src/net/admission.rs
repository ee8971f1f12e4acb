//! Admission control for a server's connections: a table of the open ones that caps how many
//! there are (in all and per client address), closes the idlest idle ones when it runs short,
//! and tells each connection when it has waited too long for its peer.
//!
//! Why this shape: a connection slot is cheap to take and, without deadlines, free to keep.
//! A peer that connects and then sends nothing (no TLS handshake, no first request, or nothing
//! after its last answer) holds a slot, a file descriptor and tens of KiB for as long as the
//! server lets it, so a few thousand such connections would stop all service while the
//! process looks healthy. Three rules bound that:
//!
//! 1. **Deadlines for idle peers.** A connection is *busy* while it has a request in flight and
//!    *idle* otherwise. An idle one is closed when it has been idle too long, with a deadline
//!    for each phase ([`Limits`]): the handshake (from accept), the first request (from the
//!    end of the handshake), and the time between requests. A busy connection has no deadline
//!    here (the server's request timeout bounds each request).
//! 2. **Idle connections make room.** When the table holds `max_connections − reserve` or more
//!    (the reserve is a sixteenth of the table, [`Limits::reserve`]), a newcomer closes the
//!    `reserve / 2` connections that have been idle the longest (one scan of the table for that
//!    many admissions). The newest connections are the last to go, so a
//!    client that connects and sends its request at once is served while a wave of idle ones
//!    cycles through the table; the reserve is room for the connections being closed to let
//!    go of their sockets. Only when every connection is busy is a newcomer refused.
//! 3. **A share per client address.** One address (an IPv4 address, or an IPv6 /64, which one
//!    host usually holds whole) holds at most `per_address` connections; at that share, a
//!    newcomer from it closes that address's idlest quarter, or is refused if they are all
//!    busy. So busy connections (requests trickled in as slowly as the request timeout allows)
//!    from one address can take at most that share of the table.
//!
//! The table never blocks and never waits: [`Admission::admit`] decides at once. Closing a
//! connection is a flag and a wake-up; the connection's own task sees it through its
//! [`Expiry`] and drops the socket.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

// Tokio's clock, so tests can pause it; the real monotonic clock otherwise.
use tokio::time::Instant;

/// What a table admits and how long an idle connection may wait (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections from one address (IPv4 address or IPv6 /64).
    pub per_address: usize,
    /// From accept to the end of the handshake ([`Slot::established`]).
    pub handshake: Duration,
    /// From the end of the handshake to the first request.
    pub first_request: Duration,
    /// From the end of the last request to the next one.
    pub idle: Duration,
}

impl Limits {
    /// The room kept free by closing idle connections early: a sixteenth of the table (at
    /// least one place).
    pub const fn reserve(&self) -> usize {
        let r = self.max_connections / 16;
        if r == 0 {
            1
        } else {
            r
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotAdmitted {
    /// Its address holds its whole share, every connection of it busy.
    #[error("too many connections from this address, all busy")]
    Address,
    /// The table is full and every connection in it is busy.
    #[error("connection table full, every connection busy")]
    Full,
}

/// Why a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Closed {
    /// It was idle and the table needed its room.
    #[error("closed to make room for new connections")]
    Shed,
    /// Its handshake took too long.
    #[error("handshake not finished in time")]
    Handshake,
    /// It sent no request in time after its handshake.
    #[error("no request in time after the handshake")]
    FirstRequest,
    /// It sent no new request in time after its last one.
    #[error("idle for too long")]
    Idle,
}

/// Counters of a table (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections in the table now.
    pub open: usize,
    /// Newcomers refused because their address's share was busy.
    pub refused_address: u64,
    /// Newcomers refused because the whole table was busy.
    pub refused_full: u64,
    /// Idle connections closed to make room.
    pub shed: u64,
    /// Connections closed at one of their deadlines.
    pub timed_out: u64,
}

/// A server's connection table (see the module doc).
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    epoch: Instant,
    table: Mutex<Table>,
    refused_address: AtomicU64,
    refused_full: AtomicU64,
    shed: AtomicU64,
    timed_out: AtomicU64,
    /// Milliseconds since `epoch` (plus one) of the last failed accept; 0: none yet.
    accept_failed: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    state: Arc<ConnState>,
}

/// How long after a failed accept the table counts as unable to take work.
const ACCEPT_FAILURE_WINDOW: Duration = Duration::from_secs(2);

impl Admission {
    /// An empty table with `limits` (at least one connection, and a share of at most the
    /// whole table).
    pub fn new(mut limits: Limits) -> Arc<Self> {
        limits.max_connections = limits.max_connections.max(1);
        limits.per_address = limits.per_address.clamp(1, limits.max_connections);
        Arc::new(Self {
            limits,
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            refused_address: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            accept_failed: AtomicU64::new(0),
        })
    }

    /// The limits.
    pub const fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits a connection from `peer`, closing idle ones to make room (module doc, rules 2
    /// and 3). The connection holds its place until the [`Slot`] is dropped or it is shed.
    ///
    /// # Errors
    ///
    /// [`NotAdmitted`] when the room would have to come from busy connections.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, NotAdmitted> {
        let address = address_key(peer.ip());
        let now = self.now_ms();
        let limits = &self.limits;
        let mut table = self.lock();
        if table.per_address.get(&address).copied().unwrap_or(0) >= limits.per_address {
            let n = self.shed(&mut table, Some(address), (limits.per_address / 4).max(1));
            if n == 0 {
                self.refused_address.fetch_add(1, Ordering::Relaxed);
                return Err(NotAdmitted::Address);
            }
        }
        let soft = limits.max_connections.saturating_sub(limits.reserve());
        if table.conns.len() >= soft {
            self.shed(&mut table, None, (limits.reserve() / 2).max(1));
        }
        if table.conns.len() >= limits.max_connections {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(NotAdmitted::Full);
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(ConnState {
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            since_ms: AtomicU64::new(now),
            established: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        table.conns.insert(
            id,
            Entry {
                address,
                state: state.clone(),
            },
        );
        *table.per_address.entry(address).or_default() += 1;
        Ok(Slot {
            admission: self.clone(),
            id,
            state,
        })
    }

    /// An accept failed (out of file descriptors, say): closes the idlest idle connections to
    /// free some, and makes [`Self::has_room`] say no for a moment.
    pub fn accept_failed(&self) {
        self.accept_failed
            .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
        let mut table = self.lock();
        self.shed(&mut table, None, (self.limits.reserve() / 2).max(1));
    }

    /// Whether a newcomer would be admitted now (for readiness): the table has room or an idle
    /// connection to close, and no accept failed in the last moment.
    pub fn has_room(&self) -> bool {
        let failed = self.accept_failed.load(Ordering::Relaxed);
        let window = u64::try_from(ACCEPT_FAILURE_WINDOW.as_millis()).unwrap_or(u64::MAX);
        if failed != 0 && self.now_ms() < failed.saturating_add(window) {
            return false;
        }
        let table = self.lock();
        table.conns.len() < self.limits.max_connections
            || table.conns.values().any(|e| e.state.is_idle())
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        Stats {
            open: self.lock().conns.len(),
            refused_address: self.refused_address.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Closes up to `n` idle connections (of `address` only, if given); returns how many.
    /// Victims come first from the addresses holding the most connections, the longest-idle
    /// first within an address: a flood from a few addresses, however fast it churns, sheds
    /// its own connections before a lone client's. One pass over the table.
    fn shed(&self, table: &mut Table, address: Option<IpAddr>, n: usize) -> usize {
        let held = |a: &IpAddr| table.per_address.get(a).copied().unwrap_or(0);
        let mut idle: Vec<(std::cmp::Reverse<usize>, u64, u64)> = table
            .conns
            .iter()
            .filter(|(_, e)| address.is_none_or(|a| e.address == a) && e.state.is_idle())
            .map(|(id, e)| {
                (
                    std::cmp::Reverse(held(&e.address)),
                    e.state.since_ms.load(Ordering::Relaxed),
                    *id,
                )
            })
            .collect();
        if idle.len() > n {
            idle.select_nth_unstable(n);
            idle.truncate(n);
        }
        let mut closed = 0usize;
        for (_, _, id) in &idle {
            let closes = table.conns.get(id).is_some_and(|e| e.state.try_close());
            if closes && table.remove(*id).is_some() {
                closed += 1;
            }
        }
        self.shed
            .fetch_add(u64::try_from(closed).unwrap_or(u64::MAX), Ordering::Relaxed);
        closed
    }
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.conns.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&entry.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(&entry.address);
            }
        }
        Some(entry)
    }
}

/// The address a share is counted by: IPv4 addresses one by one (an IPv4-mapped IPv6 address
/// as its IPv4 address), IPv6 by /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One connection's state, shared by its task, its requests and the table.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when it last became idle (accepted, established, or its
    /// last request ended).
    since_ms: AtomicU64,
    established: AtomicBool,
    requested: AtomicBool,
    closing: AtomicBool,
    /// The connection task's waker, woken when it must look at its state again.
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    /// A request started; the connection is busy until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.requested.store(true, Ordering::Relaxed);
        // SeqCst with `try_close`: of a request beginning and a shed racing, at least one sees
        // the other; a request that began is never cut ([`Slot::deadline`] waits for it).
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.closing.load(Ordering::Relaxed)
    }

    /// Marks an idle connection closing; `false` (and nothing changed) if a request is in
    /// flight. A request that begins after the check finishes before the connection closes.
    fn try_close(&self) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            self.closing.store(false, Ordering::SeqCst);
            return false;
        }
        self.wake();
        true
    }

    fn wake(&self) {
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

/// A request in flight on a connection (from [`ConnState::begin`]); dropping it ends the
/// request and starts the connection's idle clock when it was the last one.
#[derive(Debug)]
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The idle clock restarts before the count drops: a connection seen with no request
        // in flight never has a stale start (which would close it at once as idle).
        self.0.since_ms.store(self.0.now_ms(), Ordering::Release);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.wake();
        }
    }
}

/// A connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    state: Arc<ConnState>,
}

impl Slot {
    /// The shared state (for requests to mark themselves busy).
    pub const fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// The handshake is done: the first-request deadline starts now.
    pub fn established(&self) {
        self.state
            .since_ms
            .store(self.state.now_ms(), Ordering::Relaxed);
        self.state.established.store(true, Ordering::Relaxed);
    }

    /// When the connection must close if nothing changes: `Err` if it must close now, `None`
    /// while it is busy.
    fn deadline(&self) -> Result<Option<(Instant, Closed)>, Closed> {
        let s = &self.state;
        // Busy first: a connection shed while a request began finishes that request.
        if s.in_flight.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        if s.closing.load(Ordering::SeqCst) {
            return Err(Closed::Shed);
        }
        let limits = &self.admission.limits;
        let (wait, why) = if !s.established.load(Ordering::Relaxed) {
            (limits.handshake, Closed::Handshake)
        } else if !s.requested.load(Ordering::Relaxed) {
            (limits.first_request, Closed::FirstRequest)
        } else {
            (limits.idle, Closed::Idle)
        };
        let since = Duration::from_millis(s.since_ms.load(Ordering::Acquire));
        Ok(Some((s.epoch + since + wait, why)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

/// Watches a [`Slot`] for the moment its connection must close: shed by the table, or idle
/// past its deadline. Poll it from the connection's task ([`Self::poll_expired`]); the task is
/// woken when the deadline passes, the connection is shed, or its last request ends.
#[derive(Debug)]
pub struct Expiry {
    slot: Slot,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
    counted: bool,
}

impl Expiry {
    /// Watches `slot`.
    pub fn new(slot: Slot) -> Self {
        Self {
            slot,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            counted: false,
        }
    }

    /// The slot watched.
    pub const fn slot(&self) -> &Slot {
        &self.slot
    }

    /// `Ready(why)` once the connection must close; `Pending` (with the task's waker
    /// registered) until then.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Closed> {
        self.slot.state.register(cx.waker());
        loop {
            let why = match self.slot.deadline() {
                Err(why) => why,
                Ok(None) => return Poll::Pending,
                Ok(Some((at, why))) => {
                    if Instant::now() < at {
                        if self.armed != Some(at) {
                            self.timer.as_mut().reset(at);
                            self.armed = Some(at);
                        }
                        if self.timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        // The timer fired: look again (the state may have moved on).
                        self.armed = None;
                        continue;
                    }
                    why
                }
            };
            if !self.counted && why != Closed::Shed {
                self.counted = true;
                self.slot
                    .admission
                    .timed_out
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(why);
        }
    }

    /// Resolves when the connection must close (see [`Self::poll_expired`]).
    pub fn expired(&mut self) -> impl Future<Output = Closed> + '_ {
        std::future::poll_fn(|cx| self.poll_expired(cx))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(max: usize, per_address: usize) -> Limits {
        Limits {
            max_connections: max,
            per_address,
            handshake: Duration::from_secs(3),
            first_request: Duration::from_secs(5),
            idle: Duration::from_secs(30),
        }
    }

    fn peer(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 1000))
    }

    #[test]
    fn a_full_table_sheds_its_idlest_and_refuses_only_when_all_are_busy() {
        let t = Admission::new(limits(16, 16));
        assert_eq!(t.limits().reserve(), 1);
        let slots: Vec<Slot> = (0..15).map(|_| t.admit(peer(2)).unwrap()).collect();
        // At max − reserve: the oldest idle one (the first) is shed for the newcomer.
        let newcomer = t.admit(peer(3)).unwrap();
        assert!(slots[0].state.closing.load(Ordering::Relaxed));
        assert!(!slots[1].state.closing.load(Ordering::Relaxed));
        assert_eq!(t.stats().shed, 1);
        assert_eq!(t.stats().open, 15);
        // Everyone busy: nothing to shed, the table fills, then refuses.
        let busy: Vec<Busy> = slots[1..]
            .iter()
            .chain([&newcomer])
            .map(|s| s.state.begin())
            .collect();
        let last = t.admit(peer(4)).unwrap();
        let _b = last.state.begin();
        assert_eq!(t.admit(peer(5)).unwrap_err(), NotAdmitted::Full);
        assert!(!t.has_room());
        drop(busy);
        assert!(t.has_room());
        t.admit(peer(5)).unwrap();
    }

    #[test]
    fn an_address_at_its_share_sheds_its_own_idlest_never_others() {
        let t = Admission::new(limits(64, 4));
        let other = t.admit(peer(9)).unwrap();
        let mine: Vec<Slot> = (0..4).map(|_| t.admit(peer(2)).unwrap()).collect();
        let fifth = t.admit(peer(2)).unwrap();
        assert!(mine[0].state.closing.load(Ordering::Relaxed));
        assert!(!other.state.closing.load(Ordering::Relaxed));
        let _busy: Vec<Busy> = mine[1..].iter().map(|s| s.state.begin()).collect();
        let _b = fifth.state.begin();
        assert_eq!(t.admit(peer(2)).unwrap_err(), NotAdmitted::Address);
        // Another address is not affected, nor one in the same IPv6 /64's neighbour.
        t.admit(peer(3)).unwrap();
        assert_eq!(
            address_key("2001:db8::1".parse().unwrap()),
            address_key("2001:db8::ffff:1".parse().unwrap())
        );
        assert_ne!(
            address_key("2001:db8::1".parse().unwrap()),
            address_key("2001:db8:0:1::1".parse().unwrap())
        );
        assert_eq!(
            address_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn dropping_a_slot_frees_its_place_and_its_share() {
        let t = Admission::new(limits(8, 2));
        let a = t.admit(peer(2)).unwrap();
        let b = t.admit(peer(2)).unwrap();
        let (_x, _y) = (a.state.begin(), b.state.begin());
        assert_eq!(t.admit(peer(2)).unwrap_err(), NotAdmitted::Address);
        drop(a);
        assert_eq!(t.stats().open, 1);
        t.admit(peer(2)).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_phase_and_pause_while_busy() {
        let t = Admission::new(limits(8, 8));
        let mut e = Expiry::new(t.admit(peer(2)).unwrap());
        let started = tokio::time::Instant::now();
        assert_eq!(e.expired().await, Closed::Handshake);
        assert_eq!(started.elapsed(), Duration::from_secs(3));

        let mut e = Expiry::new(t.admit(peer(2)).unwrap());
        e.slot().established();
        let started = tokio::time::Instant::now();
        assert_eq!(e.expired().await, Closed::FirstRequest);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        let mut e = Expiry::new(t.admit(peer(2)).unwrap());
        e.slot().established();
        let busy = e.slot().state().begin();
        // Busy: no deadline, however long.
        let waited = tokio::time::timeout(Duration::from_secs(600), e.expired()).await;
        assert!(waited.is_err());
        drop(busy);
        let ended = tokio::time::Instant::now();
        assert_eq!(e.expired().await, Closed::Idle);
        assert_eq!(ended.elapsed(), Duration::from_secs(30));
        assert_eq!(t.stats().timed_out, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shed_connection_is_told_at_once() {
        let t = Admission::new(limits(2, 2));
        let mut first = Expiry::new(t.admit(peer(2)).unwrap());
        first.slot().established();
        let waiting = tokio::spawn(async move { first.expired().await });
        tokio::task::yield_now().await;
        let _second = t.admit(peer(3)).unwrap();
        assert_eq!(waiting.await.unwrap(), Closed::Shed);
    }

    /// A connection quiet for 29 s then busy for 2 s is not closed when its request ends: the
    /// idle clock restarts at the end of the request (it is set before the count drops).
    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_restarts_when_the_last_request_ends() {
        let t = Admission::new(limits(8, 8));
        let mut e = Expiry::new(t.admit(peer(2)).unwrap());
        e.slot().established();
        drop(e.slot().state().begin());
        tokio::time::sleep(Duration::from_secs(29)).await;
        let busy = e.slot().state().begin();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(busy);
        let ended = tokio::time::Instant::now();
        assert_eq!(e.expired().await, Closed::Idle);
        assert_eq!(ended.elapsed(), Duration::from_secs(30));
    }

    /// A request that begins on a connection being shed finishes: the connection closes only
    /// when it is idle again, and a busy connection is never shed.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_began_is_never_cut_by_shedding() {
        let t = Admission::new(limits(2, 2));
        let first = t.admit(peer(2)).unwrap();
        first.established();
        // Shed while busy: refused, the connection stays.
        let busy = first.state().begin();
        assert!(!first.state().try_close());
        assert!(matches!(first.deadline(), Ok(None)));
        // Marked closing, then a request begins (the race's other order): it is served.
        drop(busy);
        assert!(first.state().try_close());
        let late = first.state().begin();
        assert!(matches!(first.deadline(), Ok(None)));
        drop(late);
        assert!(matches!(first.deadline(), Err(Closed::Shed)));
    }

    /// A full table sheds from the address holding the most connections first, even when a
    /// lone client's connection has been idle longer.
    #[test]
    fn shedding_starts_with_the_biggest_address() {
        let t = Admission::new(limits(16, 12));
        let lone = t.admit(peer(2)).unwrap();
        let flood: Vec<Slot> = (0..12).map(|_| t.admit(peer(3)).unwrap()).collect();
        let other = t.admit(peer(4)).unwrap();
        let _more = t.admit(peer(5)).unwrap();
        // The 16th place is the reserve: one idle connection goes, from the flood.
        let _newcomer = t.admit(peer(6)).unwrap();
        assert!(!lone.state.closing.load(Ordering::Relaxed));
        assert!(!other.state.closing.load(Ordering::Relaxed));
        assert_eq!(
            flood
                .iter()
                .filter(|s| s.state.closing.load(Ordering::Relaxed))
                .count(),
            1
        );
    }
}
