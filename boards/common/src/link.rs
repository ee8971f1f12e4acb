//! The core's link framing ([`sigil_core::link`]) over a board's serial port ([`Port`]): whole
//! frames in, whole frames out, and [`TlsChannel`], the `embedded-io` byte stream an
//! embedded-tls session runs on (TLS bytes travel in `TlsData` frames; the relay forwards them
//! to the peer, a sidecar's mTLS port or any TLS server).
//!
//! Receiving is the core's [`Deframer`] (the same reader the relay uses) over a buffer that
//! holds one frame of up to [`MAX_FRAME`] bytes: a frame that does not check (bad magic, CRC,
//! length) is reported and skipped up to the next magic byte, and a partial frame that gets no
//! further byte for [`STALL_MS`] (a corrupted length, a relay that went away mid-frame) is
//! skipped the same way, so the frames after it are not held back for long.
//!
//! TLS sessions are numbered: frames of another session than the channel's (late bytes or a
//! late close of an earlier one) are dropped, and a channel always ends with `TlsClose` for
//! its number, even when dropped early.

use sigil_core::link::{self, Deframer, Event, Frame, HEADER_LEN, MAX_FRAME};
use sigil_core::Instant;

/// A board's serial port to the relay, and its monotonic clock. The port must not lose bytes
/// while the device computes (a UART with flow control, or one that holds a byte until it is
/// read, as QEMU's does): a TLS record arrives while the previous one is being processed.
pub trait Port {
    /// A received byte, if one is waiting. Never waits.
    fn try_read_byte(&mut self) -> Option<u8>;
    /// Whether a received byte is waiting.
    fn has_byte(&self) -> bool;
    /// Sends one byte, waiting while the transmitter is busy.
    fn write_byte(&mut self, byte: u8);
    /// The monotonic clock.
    fn now(&self) -> Instant;
    /// Called in a loop while the device has nothing to do until a deadline or a byte: sleep
    /// until the next interrupt (`wfi`) where the clock keeps counting in sleep, or return.
    fn idle(&mut self) {}
}

/// Largest TLS chunk the device sends in one frame (its TLS records are at most this big).
pub const TLS_CHUNK: usize = 1024;
/// Largest frame the device sends: a sign request (app ID, namespace, token, a ~250 B CSR) or
/// a TLS chunk.
pub const MAX_SEND: usize = 1536;
/// A partial frame with no new byte for this long is skipped.
pub const STALL_MS: u64 = 1000;

/// Why the link failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Bytes that were not a frame were skipped.
    Frame(link::Skip),
    /// A frame to send did not fit.
    Encode(link::Error),
    /// Nothing arrived before the deadline.
    Timeout,
    /// The TLS session was closed by the other side.
    Closed,
}

impl LinkError {
    /// A fixed description, for logs without `core::fmt`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Frame(_) => "bad frame skipped",
            Self::Encode(_) => "frame not sent",
            Self::Timeout => "link timeout",
            Self::Closed => "TLS session closed by the peer",
        }
    }
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

/// The link: the UART, the reader over a buffer holding at most one frame, and the bytes
/// counted.
pub struct Link<'b, P> {
    port: P,
    rx: Deframer<'b>,
    /// Bytes received and sent, for the report.
    pub received: usize,
    /// Bytes sent.
    pub sent: usize,
    /// Frames skipped because they did not check.
    pub skipped: u32,
}

impl<'b, P: Port> Link<'b, P> {
    /// A link over `port`, receiving into `rx`.
    pub fn new(port: P, rx: &'b mut [u8; MAX_FRAME]) -> Self {
        let stall = core::time::Duration::from_millis(STALL_MS);
        Self {
            port,
            rx: Deframer::new(rx, stall),
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
        self.write(bytes);
        Ok(())
    }

    /// Sends the bytes of a frame already encoded (the device agent's).
    pub fn write(&mut self, frame: &[u8]) {
        for &b in frame {
            self.port.write_byte(b);
        }
        self.sent += frame.len();
    }

    /// Idles ([`Port::idle`]) until `deadline` or a byte on the port, whichever comes first.
    /// A port that raises no interrupt for a byte notices it at the next clock tick; hence no
    /// idling at all while a frame is arriving (bytes of it are buffered), which would cost a
    /// tick per byte.
    pub fn idle_until(&mut self, deadline: Instant) {
        if self.rx.buffered() > 0 {
            return;
        }
        while self.port.now() < deadline && !self.port.has_byte() {
            self.port.idle();
        }
    }

    /// The monotonic clock of the port's board.
    pub fn now(&self) -> Instant {
        self.port.now()
    }

    /// Reads what the UART has and returns the next whole frame, if there is one. Never waits.
    /// The frame's bytes stay readable through [`Link::frame_bytes`] until the next poll.
    ///
    /// # Errors
    ///
    /// [`LinkError::Frame`]: bytes that were not a frame were skipped (call again).
    pub fn poll(&mut self) -> Result<Option<Frame<'_>>, LinkError> {
        let now = self.port.now();
        let space = self.rx.space();
        let mut n = 0;
        for slot in space.iter_mut() {
            let Some(b) = self.port.try_read_byte() else {
                break;
            };
            *slot = b;
            n += 1;
        }
        self.rx.handle_read(n, now);
        self.received += n;
        match self.rx.poll_event(now) {
            Some(Event::Frame(f)) => Ok(Some(f)),
            Some(Event::Skipped { reason, .. }) => {
                self.skipped += 1;
                Err(LinkError::Frame(reason))
            }
            None => Ok(None),
        }
    }

    /// The bytes of the frame [`Link::poll`] returned last.
    pub fn frame_bytes(&self) -> &[u8] {
        self.rx.frame_bytes()
    }

    /// The byte channel of TLS session `session` over this link (a new number for every
    /// session).
    pub fn tls(&mut self, session: u16, timeout_ms: u64) -> TlsChannel<'_, 'b, P> {
        TlsChannel {
            link: self,
            session,
            pending: None,
            timeout_ms,
            closed: false,
            close_sent: false,
        }
    }
}

/// One TLS session's bytes, carried in `TlsData` frames of its number. A read waits at most
/// `timeout_ms` for the next frame; `TlsClose` from the relay reads as end of stream.
pub struct TlsChannel<'l, 'b, P: Port> {
    link: &'l mut Link<'b, P>,
    session: u16,
    /// The part of the last `TlsData` frame not read yet: (start, end) in its bytes.
    pending: Option<(usize, usize)>,
    timeout_ms: u64,
    /// The relay closed the session.
    closed: bool,
    /// This side sent `TlsClose`.
    close_sent: bool,
}

impl<P: Port> TlsChannel<'_, '_, P> {
    /// Tells the relay the session is over (it closes its connection to the sidecar).
    pub fn close(mut self) {
        self.send_close();
    }

    fn send_close(&mut self) {
        self.pending = None;
        if !self.close_sent {
            self.close_sent = true;
            let _ = self.link.send(&Frame::TlsClose {
                session: self.session,
            });
        }
    }

    /// Whether the relay closed the session.
    pub const fn is_closed(&self) -> bool {
        self.closed
    }
}

impl<P: Port> Drop for TlsChannel<'_, '_, P> {
    /// A session dropped without [`TlsChannel::close`] (an error path) still ends at the relay.
    fn drop(&mut self) {
        self.send_close();
    }
}

impl<P: Port> embedded_io::ErrorType for TlsChannel<'_, '_, P> {
    type Error = LinkError;
}

impl<P: Port> embedded_io::Read for TlsChannel<'_, '_, P> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        loop {
            if let Some((start, end)) = self.pending {
                let take = buf.len().min(end - start);
                if let (Some(dst), Some(src)) = (
                    buf.get_mut(..take),
                    self.link.frame_bytes().get(start..start + take),
                ) {
                    dst.copy_from_slice(src);
                }
                self.pending = (start + take < end).then_some((start + take, end));
                return Ok(take);
            }
            if self.closed {
                return Ok(0);
            }
            let deadline = self
                .link
                .now()
                .saturating_add(core::time::Duration::from_millis(self.timeout_ms));
            loop {
                match self.link.poll() {
                    Ok(Some(Frame::TlsData { session, data }))
                        if session == self.session && !data.is_empty() =>
                    {
                        // The payload follows the header and the 2-byte session number.
                        let start = HEADER_LEN + 2;
                        self.pending = Some((start, start + data.len()));
                        break;
                    }
                    Ok(Some(Frame::TlsClose { session })) if session == self.session => {
                        self.closed = true;
                        break;
                    }
                    // Another session's bytes, a late sign answer, an empty frame, skipped
                    // bytes: not this session's data.
                    Ok(Some(_)) | Err(LinkError::Frame(_)) => {}
                    Ok(None) => {
                        if self.link.now() >= deadline {
                            return Err(LinkError::Timeout);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

impl<P: Port> embedded_io::Write for TlsChannel<'_, '_, P> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        if self.closed || self.close_sent {
            return Err(LinkError::Closed);
        }
        let chunk = buf.get(..buf.len().min(TLS_CHUNK)).unwrap_or(buf);
        self.link.send(&Frame::TlsData {
            session: self.session,
            data: chunk,
        })?;
        Ok(chunk.len())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}
