//! The only `unsafe` of these images: volatile access to the four nRF52840 register blocks the
//! firmware touches, at the addresses of the nRF52840 Product Specification. No PAC or HAL is
//! pulled in, to keep the dependency graph small.
//!
//! | block    | base          | registers used                                              |
//! |----------|---------------|-------------------------------------------------------------|
//! | RNG      | `0x4000_D000` | TASKS_START, TASKS_STOP, EVENTS_VALRDY, CONFIG, VALUE       |
//! | GPIO P0  | `0x5000_0000` | OUTSET, OUTCLR, DIRSET, PIN_CNF (LED1 on P0.13, active low) |
//! | FICR     | `0x1000_0000` | DEVICEID\[0..2\] (read-only, factory-programmed)            |
//! | UART0    | `0x4000_2000` | TASKS_STARTRX/STARTTX/STOPTX, EVENTS_RXDRDY/TXDRDY/ERROR, ERRORSRC, ENABLE, PSEL.*, RXD, TXD, BAUDRATE, CONFIG |
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
        // configuration, pin-select, data or set/clear register of the RNG, UART0 or GPIO P0,
        // whose only effect is on that peripheral (start/stop it, clear its event, send a byte,
        // configure or drive a pin), never on memory.
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
/// PIN_CNF\[8\] and \[7\] (UART RXD and CTS): 0 makes the pin an input with its input buffer
/// connected, no pull.
const P0_PIN_CNF_RXD: Reg = Reg(P0 + 0x700 + 4 * 8);
const P0_PIN_CNF_CTS: Reg = Reg(P0 + 0x700 + 4 * 7);
/// LED1 on the DK is P0.13, lit when the pin is driven low.
const LED1: u32 = 1 << 13;

/// UART0 (the legacy UART, no DMA), wired on the DK to the interface MCU's virtual COM port:
/// TXD P0.06, RXD P0.08, CTS P0.07, RTS P0.05.
const UART0: usize = 0x4000_2000;
const UART_TASKS_STARTRX: Reg = Reg(UART0);
const UART_TASKS_STARTTX: Reg = Reg(UART0 + 0x008);
const UART_TASKS_STOPTX: Reg = Reg(UART0 + 0x00C);
/// Polls of `EVENTS_TXDRDY` before a byte is given up: about a second at 64 MHz (a byte takes
/// 87 µs at 115,200 baud; CTS held longer means the relay is not reading).
const TX_SPIN_LIMIT: u32 = 8_000_000;
const UART_EVENTS_RXDRDY: Reg = Reg(UART0 + 0x108);
const UART_EVENTS_TXDRDY: Reg = Reg(UART0 + 0x11C);
const UART_EVENTS_ERROR: Reg = Reg(UART0 + 0x124);
const UART_ERRORSRC: Reg = Reg(UART0 + 0x480);
const UART_ENABLE: Reg = Reg(UART0 + 0x500);
const UART_PSEL_RTS: Reg = Reg(UART0 + 0x508);
const UART_PSEL_TXD: Reg = Reg(UART0 + 0x50C);
const UART_PSEL_CTS: Reg = Reg(UART0 + 0x510);
const UART_PSEL_RXD: Reg = Reg(UART0 + 0x514);
const UART_RXD: Reg = Reg(UART0 + 0x518);
const UART_TXD: Reg = Reg(UART0 + 0x51C);
const UART_BAUDRATE: Reg = Reg(UART0 + 0x524);
const UART_CONFIG: Reg = Reg(UART0 + 0x56C);
/// ENABLE value that turns the UART on.
const UART_ENABLE_ON: u32 = 4;
/// BAUDRATE value for 115,200 baud.
const UART_BAUD_115200: u32 = 0x01D7_E000;
/// CONFIG bit 0: hardware flow control (RTS/CTS) on, no parity.
const UART_CONFIG_HWFC: u32 = 1;
const PIN_TXD: u32 = 6;
const PIN_RXD: u32 = 8;
const PIN_CTS: u32 = 7;
const PIN_RTS: u32 = 5;

const FICR: usize = 0x1000_0000;
const FICR_DEVICEID0: Reg = Reg(FICR + 0x060);
const FICR_DEVICEID1: Reg = Reg(FICR + 0x064);

/// Polls of `EVENTS_VALRDY` before a byte counts as missing. With bias correction a byte takes
/// on the order of 100 µs (a few thousand polls at 64 MHz); this allows far more.
const SPIN_LIMIT: u32 = 1_000_000;

/// The RNG peripheral, running with bias correction. Stopped when dropped.
pub struct Rng(());

impl Rng {
    /// Starts the generator with bias correction on. Create one at a time: two would share
    /// (and split) the one peripheral's output.
    pub fn start() -> Self {
        RNG_TASKS_STOP.write(1);
        RNG_CONFIG.write(RNG_CONFIG_DERCEN);
        RNG_EVENTS_VALRDY.write(0);
        RNG_TASKS_START.write(1);
        Self(())
    }

    /// The next random byte, or `None` if the generator produced none within [`SPIN_LIMIT`]
    /// polls.
    pub fn next_byte(&mut self) -> Option<u8> {
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
pub fn led1_init() {
    P0_OUTSET.write(LED1);
    P0_DIRSET.write(LED1);
}

/// Lights (`true`) or darkens LED1.
pub fn led1(on: bool) {
    if on {
        P0_OUTCLR.write(LED1);
    } else {
        P0_OUTSET.write(LED1);
    }
}

/// The factory-programmed 64-bit device identifier (FICR DEVICEID), little-endian. Unique per
/// chip but not secret: it personalizes the DRBG, it adds no entropy.
pub fn device_id() -> [u8; 8] {
    let low = u64::from(FICR_DEVICEID0.read());
    let high = u64::from(FICR_DEVICEID1.read());
    (high << 32 | low).to_le_bytes()
}

/// UART0 at 115,200 baud with hardware flow control, polled. With RTS/CTS the receiver holds
/// the sender off when its 6-byte FIFO fills, so bytes wait in the sender (the DK's interface
/// MCU, then the host) while the device computes, instead of being lost: the link's bytes
/// arrive while a handshake's elliptic-curve work runs. Only one exists.
pub struct Uart0(());

impl Uart0 {
    /// Configures the pins and starts the receiver and the transmitter. `None` after the first
    /// call.
    pub fn take() -> Option<Self> {
        static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        if TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel) {
            return None;
        }
        // TXD and RTS are outputs idling high; RXD and CTS inputs (their buffers connected).
        P0_OUTSET.write(1 << PIN_TXD | 1 << PIN_RTS);
        P0_DIRSET.write(1 << PIN_TXD | 1 << PIN_RTS);
        P0_PIN_CNF_RXD.write(0);
        P0_PIN_CNF_CTS.write(0);
        UART_PSEL_TXD.write(PIN_TXD);
        UART_PSEL_RXD.write(PIN_RXD);
        UART_PSEL_CTS.write(PIN_CTS);
        UART_PSEL_RTS.write(PIN_RTS);
        UART_BAUDRATE.write(UART_BAUD_115200);
        UART_CONFIG.write(UART_CONFIG_HWFC);
        UART_ENABLE.write(UART_ENABLE_ON);
        UART_EVENTS_RXDRDY.write(0);
        UART_EVENTS_TXDRDY.write(0);
        UART_TASKS_STARTRX.write(1);
        UART_TASKS_STARTTX.write(1);
        Some(Self(()))
    }

    /// Whether a received byte is waiting.
    pub fn has_byte(&self) -> bool {
        UART_EVENTS_RXDRDY.read() != 0
    }

    /// A received byte, if one is waiting. A receive error (an overrun, a framing error) is
    /// cleared: the link's reader skips the damaged frame and resynchronises.
    pub fn try_read_byte(&mut self) -> Option<u8> {
        if UART_EVENTS_ERROR.read() != 0 {
            UART_EVENTS_ERROR.write(0);
            UART_ERRORSRC.write(UART_ERRORSRC.read());
        }
        if UART_EVENTS_RXDRDY.read() == 0 {
            return None;
        }
        // The event is cleared before RXD is read, as the Product Specification requires.
        UART_EVENTS_RXDRDY.write(0);
        let [byte, ..] = UART_RXD.read().to_le_bytes();
        Some(byte)
    }

    /// Sends one byte, waiting while the transmitter is busy or the relay holds CTS, for at
    /// most [`TX_SPIN_LIMIT`] polls (about a second): then the byte is given up (the relay's
    /// reader skips the damaged frame and resynchronises; the device's own timeouts go on
    /// running instead of the firmware hanging on a relay that stopped reading).
    pub fn write_byte(&mut self, byte: u8) {
        UART_EVENTS_TXDRDY.write(0);
        UART_TXD.write(u32::from(byte));
        for _ in 0..TX_SPIN_LIMIT {
            if UART_EVENTS_TXDRDY.read() != 0 {
                return;
            }
        }
        // Abandon the byte: stop and restart the transmitter.
        UART_TASKS_STOPTX.write(1);
        UART_TASKS_STARTTX.write(1);
    }
}
