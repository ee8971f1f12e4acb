//! The link to the relay over UART0: the boards' shared link ([`sigil_board_common::link`]:
//! the core's framing, and the TLS byte channel embedded-tls runs on) with this board's UART
//! and SysTick clock as its port. QEMU holds a received byte until it is read, so polling loses
//! nothing while the device computes.

pub use sigil_board_common::link::{LinkError, Port, TlsChannel, MAX_SEND, STALL_MS, TLS_CHUNK};

use crate::clock;
use crate::uart::Uart;

/// The link over UART0.
pub type Link<'b> = sigil_board_common::link::Link<'b, Uart>;

impl Port for Uart {
    fn try_read_byte(&mut self) -> Option<u8> {
        Uart::try_read_byte(self)
    }

    fn has_byte(&self) -> bool {
        Uart::has_byte(self)
    }

    fn write_byte(&mut self, byte: u8) {
        Uart::write_byte(self, byte);
    }

    fn now(&self) -> sigil_core::Instant {
        clock::now()
    }

    /// The UART raises no interrupt here, so a byte is noticed at the next 1 ms SysTick, which
    /// keeps counting in `wfi` on this machine.
    fn idle(&mut self) {
        cortex_m::asm::wfi();
    }
}
