//! SysTick as the monotonic clock: a 1 ms tick counted in the SysTick exception. On the nRF52
//! SysTick stops while the CPU sleeps in `wfi`, so these images never sleep: the link's idle
//! loop polls (a product that sleeps would count time with RTC0, which runs on the 32.768 kHz
//! clock in System ON sleep).

use core::cell::Cell;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use sigil_core::Instant;

/// The CPU clock: the nRF52840's Cortex-M4 always runs at 64 MHz, from HFINT or HFXO alike.
pub const CORE_HZ: u32 = 64_000_000;
/// Core cycles per millisecond.
pub const CYCLES_PER_MS: u32 = CORE_HZ / 1_000;

static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

/// Starts the 1 ms tick.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CYCLES_PER_MS - 1);
    syst.clear_current();
    syst.enable_counter();
    syst.enable_interrupt();
}

/// Milliseconds since [`start`].
pub fn now() -> Instant {
    Instant::from_millis(critical_section::with(|cs| MILLIS.borrow(cs).get()))
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ms = MILLIS.borrow(cs);
        ms.set(ms.get().saturating_add(1));
    });
}
