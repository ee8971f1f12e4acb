//! The nRF52840 DK's drivers, shared by its images (`identity`, the core's steps; `agent`, the
//! whole device agent):
//!
//! - [`hw`]: the registers (RNG, GPIO P0 for LED1, FICR, UART0), the only `unsafe`;
//! - [`clock`]: SysTick as the monotonic clock (1 ms ticks);
//! - [`trng`]: the RNG peripheral as the core's DRBG entropy source, with a health test;
//! - [`link`]: the boards' shared link over UART0 (with hardware flow control) to the relay.
#![no_std]

pub mod clock;
pub mod hw;
pub mod link;
pub mod trng;

/// Busy-waits at least `ms` milliseconds (cycle counting, so it works with interrupts off).
pub fn delay_ms(ms: u32) {
    for _ in 0..ms {
        cortex_m::asm::delay(clock::CYCLES_PER_MS);
    }
}

/// Blinks LED1 `times` times, then pauses: one round of a failure code.
pub fn blink(times: u32) {
    for _ in 0..times {
        hw::led1(true);
        delay_ms(200);
        hw::led1(false);
        delay_ms(300);
    }
    delay_ms(1_500);
}

/// The panic report both images share: LED1 blinking fast, forever (there is no console).
pub fn panicked() -> ! {
    cortex_m::interrupt::disable();
    hw::led1_init();
    loop {
        hw::led1(true);
        delay_ms(100);
        hw::led1(false);
        delay_ms(100);
    }
}
