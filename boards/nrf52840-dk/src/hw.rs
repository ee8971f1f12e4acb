//! The only `unsafe` of this image: volatile access to the three nRF52840 register blocks the
//! firmware touches, at the addresses of the nRF52840 Product Specification. No PAC or HAL is
//! pulled in, to keep the dependency graph small.
//!
//! | block    | base          | registers used                                              |
//! |----------|---------------|-------------------------------------------------------------|
//! | RNG      | `0x4000_D000` | TASKS_START, TASKS_STOP, EVENTS_VALRDY, CONFIG, VALUE       |
//! | GPIO P0  | `0x5000_0000` | OUTSET, OUTCLR, DIRSET (LED1 on P0.13, active low)          |
//! | FICR     | `0x1000_0000` | DEVICEID\[0..2\] (read-only, factory-programmed)            |
#![allow(unsafe_code)]

use core::ptr;

/// One 32-bit memory-mapped register. Only the constants below are ever constructed, so every
/// value names a word-aligned register that the nRF52840 implements.
#[derive(Clone, Copy)]
struct Reg(usize);

impl Reg {
    fn read(self) -> u32 {
        // SAFETY: `self.0` is one of the register addresses below: word-aligned, always mapped
        // on the nRF52840, and readable. It is device memory, not memory Rust manages, so no
        // reference aliases it; the access is volatile so it is neither elided nor merged.
        unsafe { ptr::read_volatile(ptr::with_exposed_provenance::<u32>(self.0)) }
    }

    fn write(self, value: u32) {
        // SAFETY: as in `read`; in addition every register written here is a task, event,
        // configuration or set/clear register of the RNG or GPIO P0, whose only effect is on
        // that peripheral (start/stop it, clear its event, drive the LED pin), never on memory.
        unsafe { ptr::write_volatile(ptr::with_exposed_provenance_mut::<u32>(self.0), value) }
    }
}

const RNG: usize = 0x4000_D000;
const RNG_TASKS_START: Reg = Reg(RNG);
const RNG_TASKS_STOP: Reg = Reg(RNG + 0x004);
const RNG_EVENTS_VALRDY: Reg = Reg(RNG + 0x100);
const RNG_CONFIG: Reg = Reg(RNG + 0x504);
const RNG_VALUE: Reg = Reg(RNG + 0x508);
/// CONFIG bit 0: digital error (bias) correction on.
const RNG_CONFIG_DERCEN: u32 = 1;

const P0: usize = 0x5000_0000;
const P0_OUTSET: Reg = Reg(P0 + 0x508);
const P0_OUTCLR: Reg = Reg(P0 + 0x50C);
const P0_DIRSET: Reg = Reg(P0 + 0x518);
/// LED1 on the DK is P0.13, lit when the pin is driven low.
const LED1: u32 = 1 << 13;

const FICR: usize = 0x1000_0000;
const FICR_DEVICEID0: Reg = Reg(FICR + 0x060);
const FICR_DEVICEID1: Reg = Reg(FICR + 0x064);

/// Polls of `EVENTS_VALRDY` before a byte counts as missing. With bias correction a byte takes
/// on the order of 100 µs (a few thousand polls at 64 MHz); this allows far more.
const SPIN_LIMIT: u32 = 1_000_000;

/// The RNG peripheral, running with bias correction. Stopped when dropped.
pub(crate) struct Rng(());

impl Rng {
    /// Starts the generator with bias correction on. Create one at a time: two would share
    /// (and split) the one peripheral's output.
    pub(crate) fn start() -> Self {
        RNG_TASKS_STOP.write(1);
        RNG_CONFIG.write(RNG_CONFIG_DERCEN);
        RNG_EVENTS_VALRDY.write(0);
        RNG_TASKS_START.write(1);
        Self(())
    }

    /// The next random byte, or `None` if the generator produced none within [`SPIN_LIMIT`]
    /// polls.
    pub(crate) fn next_byte(&mut self) -> Option<u8> {
        for _ in 0..SPIN_LIMIT {
            if RNG_EVENTS_VALRDY.read() != 0 {
                // Read, then clear: a value landing in between is skipped, never read twice.
                let [byte, ..] = RNG_VALUE.read().to_le_bytes();
                RNG_EVENTS_VALRDY.write(0);
                return Some(byte);
            }
        }
        None
    }
}

impl Drop for Rng {
    fn drop(&mut self) {
        RNG_TASKS_STOP.write(1);
    }
}

/// Makes P0.13 an output with LED1 off.
pub(crate) fn led1_init() {
    P0_OUTSET.write(LED1);
    P0_DIRSET.write(LED1);
}

/// Lights (`true`) or darkens LED1.
pub(crate) fn led1(on: bool) {
    if on {
        P0_OUTCLR.write(LED1);
    } else {
        P0_OUTSET.write(LED1);
    }
}

/// The factory-programmed 64-bit device identifier (FICR DEVICEID), little-endian. Unique per
/// chip but not secret: it personalizes the DRBG, it adds no entropy.
pub(crate) fn device_id() -> [u8; 8] {
    let low = u64::from(FICR_DEVICEID0.read());
    let high = u64::from(FICR_DEVICEID1.read());
    (high << 32 | low).to_le_bytes()
}
