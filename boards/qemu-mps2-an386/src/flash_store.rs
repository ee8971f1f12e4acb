//! The roots a device adopted from Sentry, kept where a real board keeps them: in flash, not
//! RAM (a [`bundle::AnchorStore`] over the last 4 KB of the code memory, which memory.x keeps
//! out of the image). On this machine that memory is the FPGA board's SSRAM1, which QEMU
//! lets the core write directly; a real MCU erases the page and programs it through its flash
//! controller (the nRF52840's NVMC), in the same order: the records first, the header that
//! makes them valid last, so an interrupted save leaves no half-written set (the old one is
//! gone, and the device boots with its provisioned anchors alone, as on first boot).
//!
//! Layout: `magic (4) | records length (u16 LE) | 0 0 | records` (the core's
//! `u16 length | DER` records). Memory that was never written (zeros here, 0xFF on flash) has
//! no magic, so it reads as an empty store.

use sigil_core::bundle::{AnchorStore, StoreError};

/// "SGAS", little-endian.
const MAGIC: u32 = 0x5341_4753;
const HEADER: usize = 8;

extern "C" {
    // memory.x: the region reserved for the store.
    static _anchor_store_start: u8;
    static _anchor_store_end: u8;
}

fn region() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken (and exposed: the accesses below
    // rebuild pointers into the whole region from them), never their contents.
    let start = core::ptr::addr_of!(_anchor_store_start) as usize;
    let end = core::ptr::addr_of!(_anchor_store_end) as usize;
    (start, end.saturating_sub(start))
}

fn read_u32(at: usize) -> u32 {
    // SAFETY: `at` is a word-aligned address inside the store's region (the region is
    // page-aligned, the header is at its start), which no Rust object occupies (memory.x keeps
    // it out of every section).
    unsafe { core::ptr::read_volatile(core::ptr::with_exposed_provenance::<u32>(at)) }
}

fn write_u32(at: usize, value: u32) {
    // SAFETY: as in `read_u32`; only `FlashAnchorStore::save`, through `&mut` on the one store,
    // writes here, so no slice from `records` is alive.
    unsafe { core::ptr::write_volatile(core::ptr::with_exposed_provenance_mut::<u32>(at), value) }
}

/// The flash-resident store. Only one exists: [`FlashAnchorStore::take`] hands it out once.
#[derive(Debug)]
pub struct FlashAnchorStore(());

impl FlashAnchorStore {
    /// The store, with what an earlier boot saved. Returns `None` after the first call.
    pub fn take() -> Option<Self> {
        static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        (!TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel)).then_some(Self(()))
    }

    /// Bytes of records the region holds.
    pub fn capacity(&self) -> usize {
        region().1.saturating_sub(HEADER)
    }
}

impl AnchorStore for FlashAnchorStore {
    fn save(&mut self, anchors: &[&[u8]]) -> Result<(), StoreError> {
        let needed: usize = anchors.iter().map(|a| 2 + a.len()).sum();
        let Ok(len) = u16::try_from(needed) else {
            return Err(StoreError::Full);
        };
        if needed > self.capacity() {
            return Err(StoreError::Full);
        }
        let (start, _) = region();
        // The old set stops being valid before a byte of it changes.
        write_u32(start, 0);
        // Records are written a word at a time (flash programs words), padded with zeros.
        let mut word = [0u8; 4];
        let mut fill = 0;
        let mut at = start + HEADER;
        let bytes = anchors.iter().flat_map(|a| {
            let n = u16::try_from(a.len()).unwrap_or(0).to_be_bytes();
            n.into_iter().chain(a.iter().copied())
        });
        for b in bytes {
            if let Some(slot) = word.get_mut(fill) {
                *slot = b;
            }
            fill += 1;
            if fill == 4 {
                write_u32(at, u32::from_le_bytes(word));
                at += 4;
                fill = 0;
            }
        }
        if fill > 0 {
            word.iter_mut().skip(fill).for_each(|b| *b = 0);
            write_u32(at, u32::from_le_bytes(word));
        }
        write_u32(start + 4, u32::from(len));
        write_u32(start, MAGIC);
        Ok(())
    }

    fn records(&self) -> &[u8] {
        let (start, size) = region();
        if read_u32(start) != MAGIC {
            return &[];
        }
        let len = usize::try_from(read_u32(start + 4) & 0xFFFF).unwrap_or(0);
        if len > size.saturating_sub(HEADER) {
            return &[];
        }
        // SAFETY: [start + HEADER, start + HEADER + len) lies inside the reserved region (checked
        // above), is initialised memory, and is not written while the returned slice (which
        // borrows `self`) lives: only `save(&mut self)` writes it.
        unsafe {
            core::slice::from_raw_parts(core::ptr::with_exposed_provenance(start + HEADER), len)
        }
    }
}
