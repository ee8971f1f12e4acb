//! The reference board's drivers, shared by its images (`identity`, `device`, `empty`):
//!
//! - [`uart`]: the CMSDK APB UART0 as an `embedded-io` byte stream (QEMU bridges it to TCP);
//! - [`clock`]: SysTick as the monotonic clock (1 ms ticks), the only time this board has:
//!   there is no real-time clock, so the core's rotation machine runs in its no-RTC mode;
//! - [`link`]: the core's device ↔ relay framing over the UART, and the TLS byte channel
//!   embedded-tls runs on;
//! - [`stack`]: peak-stack measurement by painting;
//! - [`flash_store`]: the roots a device adopted from Sentry, in a flash region of their own.
//!
//! Randomness comes from the core's HMAC-DRBG ([`sigil_core::drbg`]) seeded from a per-device
//! seed provisioned at build time: this machine has no TRNG (see README.md).
#![no_std]

pub mod clock;
pub mod flash_store;
pub mod link;
pub mod log;
pub mod stack;
pub mod uart;

use cortex_m_semihosting::debug;

/// Ends a scenario: prints the peak stack, then `ALL OK` and exit status 0, or `FAILED: <why>`
/// and exit status 1 (QEMU passes the semihosting exit status on as its own).
pub fn finish(outcome: Result<(), &str>) -> ! {
    say!("stack_peak=", stack::peak());
    match outcome {
        Ok(()) => {
            say!("ALL OK");
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(why) => {
            say!("FAILED: ", why);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// The panic report every image shares, then exit status 1. The message is never formatted
/// (that would link `core::fmt` into every image); the location (file and line) is printed
/// only with the feature `panic-location`, since keeping every panic site's file name costs
/// 8.4 KB of the `device` image.
pub fn panicked(info: &core::panic::PanicInfo<'_>) -> ! {
    #[cfg(feature = "panic-location")]
    match info.location() {
        Some(at) => say!("panic at ", at.file(), ":", at.line()),
        None => say!("panic"),
    }
    #[cfg(not(feature = "panic-location"))]
    {
        let _ = info;
        say!("panic (build with --features panic-location to see where)");
    }
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
