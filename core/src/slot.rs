//! The identity slot: where the rotation machine publishes the identity in use, and where a TLS
//! stack, another task or an interrupt handler reads it while rotation swaps it underneath.
//!
//! - **Fixed capacity, no allocation**: two buffers of `CHAIN` bytes of certificate DER and a
//!   key each, so it can live in a `static`.
//! - **Consistent reads**: every access runs in a `critical-section`, so no reader ever sees a
//!   half-written chain. A reader that needs the identity for several steps (a TLS handshake
//!   sends the chain, then signs with the key) takes a [`Lease`]: every read through it sees the
//!   same generation, chain and key, whatever is published meanwhile.
//! - **Double-buffered**: [`IdentitySlot::publish`] writes the buffer that is not active and
//!   then flips, so a lease on the current identity never blocks a publish. Only a lease still
//!   held on the identity *before* the current one makes a publish wait ([`SlotError::Busy`]):
//!   the writer keeps its new identity and publishes again later (the rotation machine holds
//!   it), and the readers keep a consistent older one until they let go.
//! - **Short critical sections**: each access copies at most one chain (`CHAIN` bytes); work such
//!   as signing is done outside, on a key cloned through the lease ([`Lease::key`]).
//!
//! The critical-section implementation comes from the platform: `cortex-m`'s single-core one on
//! the device, `critical-section`'s `std` feature on a host.

use core::cell::RefCell;

use critical_section::Mutex;

use crate::time::UnixTime;

/// Most certificates an identity's chain holds (leaf and issuers).
pub const MAX_CHAIN_CERTS: usize = 4;

/// Why a publish did not happen. The slot is unchanged then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotError {
    /// Readers still hold a lease on the buffer the publish would overwrite (the identity
    /// before the current one). Publish again once they let go.
    Busy {
        /// The generation they still read.
        leased: u32,
    },
    /// The chain is empty, longer than [`MAX_CHAIN_CERTS`], or its DER exceeds the capacity.
    TooLarge {
        /// The slot's capacity in bytes.
        capacity: usize,
    },
}

impl core::fmt::Display for SlotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Busy { leased } => {
                write!(
                    f,
                    "identity generation {leased} is still leased by a reader"
                )
            }
            Self::TooLarge { capacity } => write!(
                f,
                "chain must hold 1 to {MAX_CHAIN_CERTS} certificates within {capacity} bytes"
            ),
        }
    }
}

impl core::error::Error for SlotError {}

struct Buffer<K, const CHAIN: usize> {
    chain: heapless::Vec<u8, CHAIN>,
    ends: heapless::Vec<usize, MAX_CHAIN_CERTS>,
    key: Option<K>,
    not_after: UnixTime,
    generation: u32,
    leases: u32,
}

impl<K, const CHAIN: usize> Buffer<K, CHAIN> {
    const fn new() -> Self {
        Self {
            chain: heapless::Vec::new(),
            ends: heapless::Vec::new(),
            key: None,
            not_after: UnixTime::EPOCH,
            generation: 0,
            leases: 0,
        }
    }
}

struct Inner<K, const CHAIN: usize> {
    buffers: [Buffer<K, CHAIN>; 2],
    /// The buffer holding the published identity, if one is published.
    active: Option<usize>,
    generation: u32,
}

/// A published identity as a reader sees it: its certificates (leaf first), key and metadata.
pub struct IdentityRef<'a, K> {
    chain: &'a [u8],
    ends: &'a [usize],
    key: &'a K,
    not_after: UnixTime,
    generation: u32,
}

impl<'a, K> IdentityRef<'a, K> {
    /// The certificates as DER, leaf first.
    pub fn chain(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let chain = self.chain;
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let c = chain.get(start..end).unwrap_or(&[]);
            start = end;
            c
        })
    }

    /// The leaf certificate's DER.
    pub fn leaf(&self) -> &'a [u8] {
        self.chain().next().unwrap_or(&[])
    }

    /// The private key.
    pub const fn key(&self) -> &'a K {
        self.key
    }

    /// The leaf's notAfter.
    pub const fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// The generation this identity was published as (from 1).
    pub const fn generation(&self) -> u32 {
        self.generation
    }
}

/// A double-buffered, critical-section-protected holder of the identity in use (see the module
/// doc). `CHAIN` bounds the chain's DER in bytes.
pub struct IdentitySlot<K, const CHAIN: usize> {
    inner: Mutex<RefCell<Inner<K, CHAIN>>>,
}

impl<K, const CHAIN: usize> Default for IdentitySlot<K, CHAIN> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, const CHAIN: usize> IdentitySlot<K, CHAIN> {
    /// An empty slot; `const`, so it can be a `static`.
    pub const fn new() -> Self {
        Self {
            inner: Mutex::new(RefCell::new(Inner {
                buffers: [Buffer::new(), Buffer::new()],
                active: None,
                generation: 0,
            })),
        }
    }

    /// Publishes `chain` (DER, leaf first) with its `key`: new leases see it; leases already
    /// held keep theirs. Returns the new generation.
    ///
    /// # Errors
    ///
    /// [`SlotError::Busy`] while the buffer to overwrite is leased, [`SlotError::TooLarge`] when
    /// the chain does not fit; the published identity is unchanged then.
    pub fn publish<'c>(
        &self,
        chain: impl IntoIterator<Item = &'c [u8]>,
        key: K,
        not_after: UnixTime,
    ) -> Result<u32, SlotError> {
        critical_section::with(|cs| {
            let mut inner = self.inner.borrow_ref_mut(cs);
            let target = match inner.active {
                Some(0) => 1,
                _ => 0,
            };
            let generation = inner.generation.wrapping_add(1).max(1);
            let buffer = inner
                .buffers
                .get_mut(target)
                .ok_or(SlotError::TooLarge { capacity: CHAIN })?;
            if buffer.leases > 0 {
                return Err(SlotError::Busy {
                    leased: buffer.generation,
                });
            }
            // The target is not active and not leased: nobody reads it while it is written.
            buffer.chain.clear();
            buffer.ends.clear();
            buffer.key = None;
            let too_large = SlotError::TooLarge { capacity: CHAIN };
            for cert in chain {
                buffer
                    .chain
                    .extend_from_slice(cert)
                    .map_err(|_| too_large)?;
                let end = buffer.chain.len();
                buffer.ends.push(end).map_err(|_| too_large)?;
            }
            if buffer.ends.is_empty() {
                return Err(too_large);
            }
            buffer.key = Some(key);
            buffer.not_after = not_after;
            buffer.generation = generation;
            inner.active = Some(target);
            inner.generation = generation;
            Ok(generation)
        })
    }

    /// Withdraws the published identity (it expired): new leases get none; leases already held
    /// keep reading theirs.
    pub fn withdraw(&self) {
        critical_section::with(|cs| self.inner.borrow_ref_mut(cs).active = None);
    }

    /// The generation of the published identity, or `None` when none is published.
    pub fn generation(&self) -> Option<u32> {
        critical_section::with(|cs| {
            let inner = self.inner.borrow_ref(cs);
            inner.active.map(|_| inner.generation)
        })
    }

    /// A lease on the published identity, or `None` when none is published. Reads through it
    /// see that identity until it is dropped.
    pub fn lease(&self) -> Option<Lease<'_, K, CHAIN>> {
        critical_section::with(|cs| {
            let mut inner = self.inner.borrow_ref_mut(cs);
            let index = inner.active?;
            let buffer = inner.buffers.get_mut(index)?;
            buffer.leases = buffer.leases.saturating_add(1);
            Some(Lease {
                slot: self,
                index,
                generation: buffer.generation,
            })
        })
    }

    /// Runs `f` on the published identity (or `None`) inside one critical section: keep it short.
    pub fn with<R>(&self, f: impl FnOnce(Option<IdentityRef<'_, K>>) -> R) -> R {
        critical_section::with(|cs| {
            let inner = self.inner.borrow_ref(cs);
            let view = inner
                .active
                .and_then(|i| inner.buffers.get(i))
                .and_then(view);
            f(view)
        })
    }
}

fn view<K, const CHAIN: usize>(b: &Buffer<K, CHAIN>) -> Option<IdentityRef<'_, K>> {
    Some(IdentityRef {
        chain: &b.chain,
        ends: &b.ends,
        key: b.key.as_ref()?,
        not_after: b.not_after,
        generation: b.generation,
    })
}

/// A reader's hold on one published identity: every read sees the same generation until the
/// lease is dropped (see the module doc).
pub struct Lease<'s, K, const CHAIN: usize> {
    slot: &'s IdentitySlot<K, CHAIN>,
    index: usize,
    generation: u32,
}

impl<K, const CHAIN: usize> Lease<'_, K, CHAIN> {
    /// The generation this lease reads.
    pub const fn generation(&self) -> u32 {
        self.generation
    }

    /// Runs `f` on the leased identity inside one critical section: keep it short.
    pub fn with<R>(&self, f: impl FnOnce(IdentityRef<'_, K>) -> Option<R>) -> Option<R> {
        critical_section::with(|cs| {
            let inner = self.slot.inner.borrow_ref(cs);
            // A leased buffer is never written, so it still holds `self.generation`.
            inner.buffers.get(self.index).and_then(view).and_then(f)
        })
    }

    /// A copy of the leased key, to sign with outside the critical section.
    pub fn key(&self) -> Option<K>
    where
        K: Clone,
    {
        self.with(|id| Some(id.key().clone()))
    }

    /// Copies the certificate at `index` (0 = leaf) into `out`; returns its length.
    pub fn copy_cert(&self, index: usize, out: &mut [u8]) -> Option<usize> {
        self.with(|id| {
            let cert = id.chain().nth(index)?;
            out.get_mut(..cert.len())?.copy_from_slice(cert);
            Some(cert.len())
        })
    }
}

impl<K, const CHAIN: usize> Drop for Lease<'_, K, CHAIN> {
    fn drop(&mut self) {
        critical_section::with(|cs| {
            let mut inner = self.slot.inner.borrow_ref_mut(cs);
            if let Some(b) = inner.buffers.get_mut(self.index) {
                b.leases = b.leases.saturating_sub(1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Key(u32);

    type Slot = IdentitySlot<Key, 64>;

    fn chain_of(g: u32) -> [[u8; 8]; 2] {
        let b = g.to_le_bytes();
        [
            [b[0], b[1], b[2], b[3], 1, 1, 1, 1],
            [b[0], b[1], b[2], b[3], 2, 2, 2, 2],
        ]
    }

    fn publish(slot: &Slot, g: u32) -> Result<u32, SlotError> {
        let c = chain_of(g);
        slot.publish(
            c.iter().map(|c| &c[..]),
            Key(g),
            UnixTime::from_secs(u64::from(g)),
        )
    }

    #[test]
    fn empty_then_published_then_withdrawn() {
        let slot = Slot::new();
        assert!(slot.lease().is_none());
        assert_eq!(slot.generation(), None);
        assert_eq!(publish(&slot, 7), Ok(1));
        let lease = slot.lease().unwrap();
        assert_eq!(lease.generation(), 1);
        assert_eq!(lease.key(), Some(Key(7)));
        let mut out = [0u8; 8];
        assert_eq!(lease.copy_cert(1, &mut out), Some(8));
        assert_eq!(out, chain_of(7)[1]);
        assert_eq!(lease.copy_cert(2, &mut out), None);
        slot.withdraw();
        assert!(slot.lease().is_none());
        // The lease taken before the withdrawal still reads its identity.
        assert_eq!(lease.key(), Some(Key(7)));
    }

    #[test]
    fn a_lease_on_the_current_identity_never_blocks_a_publish() {
        let slot = Slot::new();
        publish(&slot, 1).unwrap();
        let old = slot.lease().unwrap();
        assert_eq!(publish(&slot, 2), Ok(2));
        // The old lease still sees generation 1, whole.
        assert_eq!(old.key(), Some(Key(1)));
        assert_eq!(
            old.with(|id| Some(id.leaf().to_vec())),
            Some(chain_of(1)[0].to_vec())
        );
        // A third publish would overwrite the leased buffer: refused, nothing changes.
        assert_eq!(publish(&slot, 3), Err(SlotError::Busy { leased: 1 }));
        assert_eq!(slot.lease().unwrap().key(), Some(Key(2)));
        drop(old);
        assert_eq!(publish(&slot, 3), Ok(3));
        assert_eq!(slot.lease().unwrap().key(), Some(Key(3)));
    }

    #[test]
    fn a_chain_that_does_not_fit_changes_nothing() {
        let slot = Slot::new();
        publish(&slot, 1).unwrap();
        let big = [0u8; 65];
        assert_eq!(
            slot.publish([&big[..]], Key(9), UnixTime::EPOCH),
            Err(SlotError::TooLarge { capacity: 64 })
        );
        let empty: [&[u8]; 0] = [];
        assert!(slot.publish(empty, Key(9), UnixTime::EPOCH).is_err());
        let five = [[0u8; 1]; 5];
        assert!(slot
            .publish(five.iter().map(|c| &c[..]), Key(9), UnixTime::EPOCH)
            .is_err());
        assert_eq!(slot.generation(), Some(1));
        assert_eq!(slot.lease().unwrap().key(), Some(Key(1)));
        // The failed writes left the spare buffer usable.
        assert_eq!(publish(&slot, 2), Ok(2));
    }

    /// Real threads (critical-section's std implementation): a writer publishes generation
    /// after generation while readers lease, read the chain and the key in separate critical
    /// sections, and check that they always belong together.
    #[test]
    fn readers_never_see_a_torn_identity() {
        static SLOT: Slot = Slot::new();
        publish(&SLOT, 1).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut g = 2;
                while g < 3000 {
                    match publish(&SLOT, g) {
                        Ok(_) => g += 1,
                        Err(SlotError::Busy { .. }) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            });
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        let lease = SLOT.lease().unwrap();
                        let mut leaf = [0u8; 8];
                        lease.copy_cert(0, &mut leaf).unwrap();
                        std::thread::yield_now();
                        let key = lease.key().unwrap();
                        let mut issuer = [0u8; 8];
                        lease.copy_cert(1, &mut issuer).unwrap();
                        let expected = chain_of(key.0);
                        assert_eq!((leaf, issuer), (expected[0], expected[1]));
                    }
                });
            }
        });
    }
}
