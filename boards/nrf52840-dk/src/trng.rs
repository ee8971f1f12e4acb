//! The nRF52840's RNG peripheral (thermal noise, bias correction on) as the entropy source of
//! the core's HMAC-DRBG, with a repetition-count health test.

use sigil_core::drbg::{EntropySource, HmacDrbg};

use crate::hw;

/// The DRBG's personalization prefix: the board's name (the chip's FICR device ID follows).
const BOARD: &[u8] = b"sigil nrf52840-dk";

/// The DRBG, instantiated from the TRNG, which it keeps for its reseeds (the peripheral runs
/// as long as the DRBG lives), personalized with the board's name and the chip's device ID.
/// `None` if the entropy source failed its health test while instantiating.
pub fn drbg() -> Option<HmacDrbg<Trng>> {
    let mut personalization = [0u8; BOARD.len() + 8];
    let (board, device) = personalization.split_at_mut(BOARD.len());
    board.copy_from_slice(BOARD);
    device.copy_from_slice(&hw::device_id());
    let rng = HmacDrbg::new(Trng::start(), &personalization);
    (!rng.entropy_failed()).then_some(rng)
}

/// The RNG peripheral as the DRBG's entropy source.
///
/// Raw bytes pass a repetition-count test (NIST SP 800-90B §4.4.1) with cutoff
/// [`Trng::REPETITION_CUTOFF`], which assumes at least 2 bits of min-entropy per byte
/// (conservative with bias correction on; false alarms at 2^-20 for that, far rarer in
/// practice). A stuck generator or a missing byte marks the source unhealthy, and the caller
/// discards the DRBG.
pub struct Trng {
    rng: hw::Rng,
    last: Option<u8>,
    run: u32,
    healthy: bool,
}

impl Trng {
    /// `1 + ceil(20 / H)` with H = 2 bits per byte.
    pub const REPETITION_CUTOFF: u32 = 11;

    /// Starts the RNG peripheral.
    pub fn start() -> Self {
        Self {
            rng: hw::Rng::start(),
            last: None,
            run: 0,
            healthy: true,
        }
    }
}

impl EntropySource for Trng {
    fn healthy(&self) -> bool {
        self.healthy
    }

    fn fill(&mut self, out: &mut [u8]) {
        for o in out.iter_mut() {
            let Some(byte) = self.rng.next_byte() else {
                self.healthy = false;
                *o = 0;
                continue;
            };
            if self.last == Some(byte) {
                self.run = self.run.saturating_add(1);
                if self.run >= Self::REPETITION_CUTOFF {
                    self.healthy = false;
                }
            } else {
                self.last = Some(byte);
                self.run = 1;
            }
            *o = byte;
        }
    }
}
