//! A trust bundle that owns its anchors, for anchors that change at run time (from a CA's
//! answer or a watched file) without a restart: the DER lives in a fixed buffer, and a borrowed
//! [`TrustBundle`] is made from it when a path is validated.
//!
//! [`AnchorStore`] is where a device keeps the roots it adopted from Sentry so that they
//! survive a restart (flash, behind the trait the board implements); [`RamAnchorStore`]
//! keeps them in RAM, for boards without persistence and for tests.

use crate::chain::{BundleError, TrustAnchor, TrustBundle};

/// Up to `N` anchors in at most `BYTES` bytes of DER.
#[derive(Clone, Debug)]
pub struct OwnedTrustBundle<const N: usize, const BYTES: usize> {
    der: heapless::Vec<u8, BYTES>,
    ends: heapless::Vec<usize, N>,
    generation: u32,
}

impl<const N: usize, const BYTES: usize> Default for OwnedTrustBundle<N, BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const BYTES: usize> OwnedTrustBundle<N, BYTES> {
    /// An empty bundle.
    pub const fn new() -> Self {
        Self {
            der: heapless::Vec::new(),
            ends: heapless::Vec::new(),
            generation: 0,
        }
    }

    /// Replaces the anchors with the usable ones among `anchors` (DER certificates), in order:
    /// a certificate [`TrustBundle::add`] refuses (it does not parse, has an unknown critical
    /// extension or a key signatures cannot be verified with here) is skipped, so that one
    /// unusable root in a CA's bundle never locks a device out of the others. Returns how many
    /// were skipped.
    ///
    /// # Errors
    ///
    /// The first anchor's refusal when `anchors` is not empty and none is usable (an
    /// unusable bundle never replaces a usable one); [`BundleError::Full`] when the usable ones
    /// do not fit. The bundle is unchanged then.
    pub fn replace(&mut self, anchors: &[&[u8]]) -> Result<usize, BundleError> {
        let usable = |a: &&[u8]| TrustAnchor::from_der(a).is_ok();
        let (mut count, mut total) = (0, 0);
        for a in anchors.iter().filter(|a| usable(a)) {
            count += 1;
            total += a.len();
        }
        if let (0, Some(first)) = (count, anchors.first()) {
            return TrustAnchor::from_der(first).map(|_| 0);
        }
        if count > N || total > BYTES {
            return Err(BundleError::Full { capacity: N });
        }
        self.der.clear();
        self.ends.clear();
        for a in anchors.iter().filter(|a| usable(a)) {
            // Room was checked above.
            let _ = self.der.extend_from_slice(a);
            let _ = self.ends.push(self.der.len());
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(anchors.len() - count)
    }

    /// The anchors' DER, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let a = self.der.get(start..end).unwrap_or(&[]);
            start = end;
            a
        })
    }

    /// A borrowed bundle for path validation.
    pub fn as_bundle(&self) -> TrustBundle<'_, N> {
        let mut b = TrustBundle::new();
        for a in self.iter() {
            // Each anchor was accepted when stored, and N bounds the count.
            let _ = b.add(a);
        }
        b
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bumped by every successful [`OwnedTrustBundle::replace`].
    pub const fn generation(&self) -> u32 {
        self.generation
    }
}

/// Why an [`AnchorStore`] did not save.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The anchors do not fit.
    Full,
    /// The medium failed (a flash write or erase).
    Medium,
}

/// Where a device keeps the roots it adopted from Sentry's answers (never its provisioned
/// ones, which stay in the firmware): loaded at boot beside the provisioned anchors, saved
/// when Sentry's bundle changes (not at every renewal: flash wears).
pub trait AnchorStore {
    /// Replaces the saved roots with `anchors` (DER): all of them, or (on an error) the old
    /// ones are kept.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    fn save(&mut self, anchors: &[&[u8]]) -> Result<(), StoreError>;

    /// The saved roots as `u16 length | DER` records (memory-mapped flash on most MCUs; read
    /// them with [`saved`]).
    fn records(&self) -> &[u8];
}

/// The roots in an [`AnchorStore`]'s records, in order (a truncated record ends them).
pub fn saved(records: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = records;
    core::iter::from_fn(move || {
        let (der, tail) = crate::link::take_field(rest)?;
        rest = tail;
        Some(der)
    })
}

/// An [`AnchorStore`] in RAM: up to `BYTES` bytes of `u16 length | DER` records. Nothing
/// survives a restart.
#[derive(Clone, Debug, Default)]
pub struct RamAnchorStore<const BYTES: usize> {
    records: heapless::Vec<u8, BYTES>,
}

impl<const BYTES: usize> RamAnchorStore<BYTES> {
    /// An empty store.
    pub const fn new() -> Self {
        Self {
            records: heapless::Vec::new(),
        }
    }
}

impl<const BYTES: usize> AnchorStore for RamAnchorStore<BYTES> {
    fn save(&mut self, anchors: &[&[u8]]) -> Result<(), StoreError> {
        let needed: usize = anchors.iter().map(|a| 2 + a.len()).sum();
        if needed > BYTES || anchors.iter().any(|a| u16::try_from(a.len()).is_err()) {
            return Err(StoreError::Full);
        }
        self.records.clear();
        for a in anchors {
            // Sizes were checked above.
            let len = u16::try_from(a.len()).unwrap_or(0);
            let _ = self.records.extend_from_slice(&len.to_be_bytes());
            let _ = self.records.extend_from_slice(a);
        }
        Ok(())
    }

    fn records(&self) -> &[u8] {
        &self.records
    }
}
