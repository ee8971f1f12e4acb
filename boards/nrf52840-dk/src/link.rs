//! The link to the relay over UART0: the boards' shared link ([`sigil_board_common::link`]) with
//! this board's UART (115,200 baud, RTS/CTS flow control: nothing is lost while the device
//! computes) and SysTick clock as its port. On the DK, UART0 is the interface MCU's virtual COM
//! port on USB; the relay reaches it through a TCP bridge (e.g. `socat
//! TCP-LISTEN:7000,reuseaddr /dev/ttyACM0,raw,b115200,crtscts`, then `sigil relay --serial
//! 127.0.0.1:7000 …`).

pub use sigil_board_common::link::{LinkError, Port, MAX_SEND};

use crate::clock;
use crate::hw::Uart0;

/// The link over UART0.
pub type Link<'b> = sigil_board_common::link::Link<'b, Uart0>;

impl Port for Uart0 {
    fn try_read_byte(&mut self) -> Option<u8> {
        Self::try_read_byte(self)
    }

    fn has_byte(&self) -> bool {
        Self::has_byte(self)
    }

    fn write_byte(&mut self, byte: u8) {
        Self::write_byte(self, byte);
    }

    fn now(&self) -> sigil_core::Instant {
        clock::now()
    }

    // `idle` stays a no-op: SysTick stops in `wfi` on this chip.
}
