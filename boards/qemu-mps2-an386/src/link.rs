//! The core's link framing ([`sigil_core::link`]) over the UART: whole frames in, whole frames
//! out, and [`TlsChannel`], the `embedded-io` byte stream an embedded-tls session runs on
//! (TLS bytes travel in `TlsData` frames; the relay forwards them to a sidecar's mTLS port).
//!
//! Receiving is check-then-parse on a buffer that holds one frame of up to
//! [`MAX_FRAME`] bytes. A frame that does not check (bad magic, CRC, length) is reported and
//! skipped: bytes are dropped up to the next magic byte, so a relay that reconnects in the
//! middle of a frame costs that frame only.

use embedded_io::Write as _;
use sigil_core::link::{self, Frame, HEADER_LEN, MAX_FRAME};
use sigil_core::Instant;

use crate::clock;
use crate::uart::Uart;

/// Largest TLS chunk the device sends in one frame (its TLS records are at most this big).
pub const TLS_CHUNK: usize = 1024;
/// Largest frame the device sends: a sign request (app ID, namespace, token, a ~250 B CSR) or
/// a TLS chunk.
pub const MAX_SEND: usize = 1536;

/// Why the link failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// A frame did not check and was skipped.
    Frame(link::Error),
    /// A frame to send did not fit.
    Encode(link::Error),
    /// Nothing arrived before the deadline.
    Timeout,
    /// The TLS session was closed by the other side.
    Closed,
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Frame(e) => write!(f, "bad frame skipped: {e}"),
            Self::Encode(e) => write!(f, "frame not sent: {e}"),
            Self::Timeout => f.write_str("link timeout"),
            Self::Closed => f.write_str("TLS session closed by the peer"),
        }
    }
}

impl core::error::Error for LinkError {}

impl embedded_io::Error for LinkError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::Timeout => embedded_io::ErrorKind::TimedOut,
            Self::Closed => embedded_io::ErrorKind::ConnectionReset,
            _ => embedded_io::ErrorKind::InvalidData,
        }
    }
}

/// The link: the UART, a receive buffer holding at most one frame, and the bytes counted.
pub struct Link<'b> {
    uart: Uart,
    rx: &'b mut [u8; MAX_FRAME],
    len: usize,
    /// Bytes received and sent, for the report.
    pub received: usize,
    /// Bytes sent.
    pub sent: usize,
    /// Frames skipped because they did not check.
    pub skipped: u32,
}

impl<'b> Link<'b> {
    /// A link over `uart`, receiving into `rx`.
    pub fn new(uart: Uart, rx: &'b mut [u8; MAX_FRAME]) -> Self {
        Self {
            uart,
            rx,
            len: 0,
            received: 0,
            sent: 0,
            skipped: 0,
        }
    }

    /// Sends one frame.
    ///
    /// # Errors
    ///
    /// [`LinkError::Encode`] if it does not fit [`MAX_SEND`].
    pub fn send(&mut self, frame: &Frame<'_>) -> Result<(), LinkError> {
        let mut out = [0u8; MAX_SEND];
        let bytes = frame.emit(&mut out).map_err(LinkError::Encode)?;
        let _ = self.uart.write_all(bytes);
        self.sent += bytes.len();
        Ok(())
    }

    /// Reads what the UART has and returns the length of a whole frame at the start of the
    /// buffer, if there is one. Never waits.
    ///
    /// # Errors
    ///
    /// [`LinkError::Frame`]: a frame did not check; it was skipped (call again).
    pub fn poll(&mut self) -> Result<Option<usize>, LinkError> {
        while self.len < MAX_FRAME {
            let Some(b) = self.uart.try_read_byte() else {
                break;
            };
            if let Some(slot) = self.rx.get_mut(self.len) {
                *slot = b;
            }
            self.len += 1;
            self.received += 1;
        }
        let buffered = self.rx.get(..self.len).unwrap_or(&[]);
        match Frame::check(buffered) {
            Ok(n) => Ok(Some(n)),
            Err(link::Error::Incomplete { .. }) => Ok(None),
            Err(e) => {
                self.skipped += 1;
                self.resync();
                Err(LinkError::Frame(e))
            }
        }
    }

    /// Waits for a whole frame until `deadline`; returns its length.
    ///
    /// # Errors
    ///
    /// [`LinkError::Timeout`], or [`LinkError::Frame`] for a frame that did not check.
    pub fn wait(&mut self, deadline: Instant) -> Result<usize, LinkError> {
        loop {
            if let Some(n) = self.poll()? {
                return Ok(n);
            }
            if clock::now() >= deadline {
                return Err(LinkError::Timeout);
            }
        }
    }

    /// The frame of length `n` at the start of the buffer (as [`Link::poll`] returned it).
    pub fn frame(&self, n: usize) -> Option<Frame<'_>> {
        Frame::parse(self.rx.get(..n)?).ok().map(|(f, _)| f)
    }

    /// Drops the first `n` bytes (a frame that has been handled).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.rx.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Drops bytes up to the next possible frame start.
    fn resync(&mut self) {
        let next = self
            .rx
            .get(1..self.len)
            .and_then(|rest| rest.iter().position(|&b| b == link::MAGIC))
            .map_or(self.len, |p| p + 1);
        self.consume(next);
    }

    /// The TLS session's byte channel over this link.
    pub fn tls(&mut self, timeout_ms: u64) -> TlsChannel<'_, 'b> {
        TlsChannel {
            link: self,
            pending: None,
            timeout_ms,
            closed: false,
        }
    }
}

/// One TLS session's bytes, carried in `TlsData` frames. A read waits at most `timeout_ms`
/// for the next frame; `TlsClose` from the relay reads as end of stream.
pub struct TlsChannel<'l, 'b> {
    link: &'l mut Link<'b>,
    /// The `TlsData` frame being read: (payload start, payload end, frame length).
    pending: Option<(usize, usize, usize)>,
    timeout_ms: u64,
    closed: bool,
}

impl TlsChannel<'_, '_> {
    /// Tells the relay the session is over (it closes its connection to the sidecar).
    pub fn close(mut self) {
        self.drop_pending();
        let _ = self.link.send(&Frame::TlsClose);
    }

    /// Whether the relay closed the session.
    pub const fn is_closed(&self) -> bool {
        self.closed
    }

    fn drop_pending(&mut self) {
        if let Some((_, _, n)) = self.pending.take() {
            self.link.consume(n);
        }
    }
}

impl embedded_io::ErrorType for TlsChannel<'_, '_> {
    type Error = LinkError;
}

impl embedded_io::Read for TlsChannel<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        loop {
            if let Some((start, end, n)) = self.pending {
                let take = buf.len().min(end - start);
                if let (Some(dst), Some(src)) =
                    (buf.get_mut(..take), self.link.rx.get(start..start + take))
                {
                    dst.copy_from_slice(src);
                }
                if start + take == end {
                    self.pending = None;
                    self.link.consume(n);
                } else {
                    self.pending = Some((start + take, end, n));
                }
                return Ok(take);
            }
            if self.closed {
                return Ok(0);
            }
            let deadline =
                clock::now().saturating_add(core::time::Duration::from_millis(self.timeout_ms));
            let n = match self.link.wait(deadline) {
                Ok(n) => n,
                Err(LinkError::Frame(_)) => continue,
                Err(e) => return Err(e),
            };
            match self.link.frame(n) {
                Some(Frame::TlsData(payload)) => {
                    self.pending = Some((HEADER_LEN, HEADER_LEN + payload.len(), n));
                }
                Some(Frame::TlsClose) => {
                    self.link.consume(n);
                    self.closed = true;
                }
                // A late sign answer or anything else: not this session's.
                _ => self.link.consume(n),
            }
        }
    }
}

impl embedded_io::Write for TlsChannel<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        if self.closed {
            return Err(LinkError::Closed);
        }
        let chunk = buf.get(..buf.len().min(TLS_CHUNK)).unwrap_or(buf);
        self.link.send(&Frame::TlsData(chunk))?;
        Ok(chunk.len())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}
