//! SysTick as the monotonic clock: a 1 ms tick counted in the SysTick exception. The MPS2
//! boards clock the core at 25 MHz; under QEMU (TCG, no `-icount`) that virtual clock follows
//! the host's, so a certificate's 20 s lifetime is 20 s here too.

use core::cell::Cell;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use sigil_core::Instant;

/// The core clock of the MPS2 AN386.
pub const CORE_HZ: u32 = 25_000_000;

static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

/// Starts the 1 ms tick.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Milliseconds since [`start`].
pub fn now() -> Instant {
    Instant::from_millis(critical_section::with(|cs| MILLIS.borrow(cs).get()))
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let m = MILLIS.borrow(cs);
        m.set(m.get().wrapping_add(1));
    });
}
