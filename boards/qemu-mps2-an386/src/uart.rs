//! The CMSDK APB UART0 of the MPS2 boards (base 0x4000_4000), polled, as an `embedded-io`
//! byte stream. QEMU connects it to a host socket (`-serial tcp:…`); there is no baud-rate
//! emulation, and the receiver holds one byte at a time (QEMU stops reading its socket while
//! that byte is unread, so nothing is lost, only slowed: about 19 KB/s host → device).

use core::convert::Infallible;

const BASE: usize = 0x4000_4000;
const DATA: usize = BASE;
const STATE: usize = BASE + 0x4;
const CTRL: usize = BASE + 0x8;
const BAUDDIV: usize = BASE + 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_RX_ENABLE: u32 = 0b11;

fn read(addr: usize) -> u32 {
    // SAFETY: `addr` is one of this UART's word-aligned registers (memory-mapped I/O on every
    // MPS2 board); reads have no side effect except DATA, which pops the received byte.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write(addr: usize, value: u32) {
    // SAFETY: as in `read`; the register accepts any value written here.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// UART0. Only one exists: [`Uart::take`] hands it out once.
#[derive(Debug)]
pub struct Uart(());

impl Uart {
    /// Enables the transmitter and receiver. Returns `None` after the first call.
    pub fn take() -> Option<Self> {
        static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        if TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel) {
            return None;
        }
        write(BAUDDIV, 16);
        write(CTRL, CTRL_TX_RX_ENABLE);
        Some(Self(()))
    }

    /// Whether a received byte is waiting.
    pub fn has_byte(&self) -> bool {
        read(STATE) & STATE_RX_FULL != 0
    }

    /// A received byte, if one is waiting.
    pub fn try_read_byte(&mut self) -> Option<u8> {
        (read(STATE) & STATE_RX_FULL != 0).then(|| read(DATA).to_le_bytes()[0])
    }

    /// Sends one byte, waiting while the transmitter is full.
    pub fn write_byte(&mut self, b: u8) {
        while read(STATE) & STATE_TX_FULL != 0 {}
        write(DATA, u32::from(b));
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::Read for Uart {
    /// Waits for at least one byte, then returns what has arrived.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while n == 0 {
            for slot in buf.iter_mut() {
                match self.try_read_byte() {
                    Some(b) => {
                        *slot = b;
                        n += 1;
                    }
                    None => break,
                }
            }
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.write_byte(b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
