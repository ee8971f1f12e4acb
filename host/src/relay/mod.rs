//! `sigil relay`: the bridge between an edge device's UART and the host services.
//!
//! The device speaks the link protocol of [`sigil_core::link`] over its UART, which QEMU exposes
//! as a TCP server (`-serial tcp:127.0.0.1:PORT,server=on,wait=on`); the relay is a TCP client
//! of that socket ([`connect_serial`] retries while QEMU starts). Data flow:
//!
//! ```text
//!            SignRequest ──► sign task ──► Sentry (gRPC over TLS, a new connection each time)
//! device ◄─► serial  │                         │
//! (UART)     reader  │       SignAnswer ◄──────┘
//!                    │
//!                    └─ TlsData ──► session task ──► --peer (a sidecar's mTLS port, plain TCP)
//!                       TlsClose         │
//!                                        └──► TlsData / TlsClose back to the device
//! ```
//!
//! - One reader ([`run`]'s loop) owns the serial read half and parses frames with check-then-
//!   parse. It never waits on Sentry or on the peer's connect: sign requests run as spawned
//!   tasks, and TLS bytes go to a session task through a channel.
//! - One writer task owns the serial write half. Every frame to the device goes through its
//!   channel as a whole, so frames never interleave.
//! - The TLS channel is forwarded blindly: the relay never terminates TLS; the device and the
//!   sidecar do mutual TLS end to end. A session task opens the TCP connection to the peer on
//!   the first `TlsData` after none is open, writes the device's bytes, and sends what the peer
//!   writes back as `TlsData` frames of at most [`PEER_READ_LEN`] bytes (with several
//!   `--peer`s, each new session goes to the next one in turn). When the peer closes
//!   (or cannot be connected) the device gets `TlsClose` and the session is forgotten; a
//!   `TlsClose` from the device shuts the peer connection down. Sessions are numbered by the
//!   device: bytes for a session that has ended (a close_notify racing the peer's close, a
//!   frame from before a reconnect) are dropped, never sent to the peer as a new session, and
//!   bytes for a new number end the previous session.
//! - Sign answers carry the device's request number, so the device matches each answer to
//!   its request and drops answers to requests it has given up on. At most
//!   [`MAX_SIGNS_IN_FLIGHT`] run at once; more are refused with `RESOURCE_EXHAUSTED`.
//!
//! Bad input never stops the relay and never panics: the core's link reader
//! ([`sigil_core::link::Deframer`], the same one the boards use) skips a frame that fails to
//! parse by resynchronising on the next magic byte, and a partial frame that stays incomplete
//! for [`STALL_TIMEOUT`] while the device is silent the same way (a corrupted length would
//! otherwise wait for bytes that never come); the relay logs one line per resynchronisation.
//! The receive buffer holds at most one frame ([`MAX_FRAME`] bytes). Sentry's failures become refusals sent to the
//! device, with gRPC codes: Sentry's own when it refuses (Dapr's `INVALID_ARGUMENT` 3,
//! `PERMISSION_DENIED` 7, `INTERNAL` 13), `UNAVAILABLE` 14 when it cannot be reached, and
//! `INTERNAL` 13 when its answer fails the relay's checks. Only the serial link ending (or the
//! shutdown future) ends the relay.
//!
//! This file is the reader and the writer; `sign.rs`'s tasks talk to Sentry and `session.rs`'s
//! to the peer.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_core::link::{self, Deframer, Event, Frame, MAX_FRAME};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::Code;

mod session;
mod sign;

use session::{session, SESSION_QUEUE};
pub use session::{PEER_CONNECT_TIMEOUT, PEER_READ_LEN};
use sign::{DeviceRequest, Reply, SignContext};

/// Sign requests handled at once; further ones are refused with `RESOURCE_EXHAUSTED` (8).
pub const MAX_SIGNS_IN_FLIGHT: usize = 4;

/// How long a partial frame may wait for its remaining bytes while the device sends nothing;
/// then it is dropped as corrupt. A whole frame takes under half a second at 115,200 baud.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames queued for the serial writer.
const OUT_QUEUE: usize = 64;

/// How long the writer may take to flush queued frames when the relay stops.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// What the relay needs besides the serial connection.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Sentry's gRPC address, `host:port`.
    pub sentry: String,
    /// PEM file of Sentry's trust anchors (`ca.crt`): Sentry's serving certificate and every
    /// issued chain are checked against them. Read again when it changes (a rotated root is
    /// picked up); an unusable replacement leaves the last good set in force.
    pub anchors_file: PathBuf,
    /// Sentry's SPIFFE ID, e.g. `spiffe://localhost/ns/default/dapr-sentry`.
    pub sentry_id: String,
    /// The trust domain sent in each sign request.
    pub trust_domain: String,
    /// Where the device's TLS sessions go, `host:port` each (a sidecar's mTLS port, or any
    /// TLS server): each new session to the next one in turn. At least one.
    pub peers: Vec<String>,
    /// Token file used when the device sends an empty token (read for each request, trimmed).
    pub token_file: Option<PathBuf>,
    /// The only app ID this relay asks certificates for (`None`: whatever the device asks).
    /// The relay is the device's one way to Sentry: pinning its identity here means nothing
    /// else on the UART can obtain another workload's certificate through it.
    pub app_id: Option<String>,
    /// The only namespace, likewise.
    pub namespace: Option<String>,
}

impl RelayOptions {
    /// Checks that the options are usable, so a misconfigured relay fails before it waits for
    /// the device: reads the anchors and checks Sentry's SPIFFE ID.
    ///
    /// # Errors
    ///
    /// [`RelayError::Anchors`] or [`RelayError::Config`].
    pub fn validate(&self) -> Result<crate::trust::AnchorsFile, RelayError> {
        let anchors =
            crate::trust::AnchorsFile::open(&self.anchors_file).map_err(RelayError::Anchors)?;
        sigil_core::spiffe::SpiffeId::parse(&self.sentry_id)
            .map_err(|e| RelayError::Config(format!("{:?}: {e}", self.sentry_id)))?;
        if self.peers.is_empty() {
            return Err(RelayError::Config("no peer for TLS sessions".to_owned()));
        }
        Ok(anchors)
    }
}

/// Why the relay stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The device's serial socket could not be reached in time.
    #[error("connecting to the serial port at {address} (tried for {waited:?}): {source}")]
    SerialConnect {
        /// The address dialled.
        address: String,
        /// How long it was tried.
        waited: Duration,
        /// The last error.
        source: std::io::Error,
    },
    /// Reading from the serial connection failed (an EOF is a clean end, not an error).
    #[error("serial link: {0}")]
    Serial(std::io::Error),
    /// The trust anchors file is unusable.
    #[error("trust anchors: {0}")]
    Anchors(crate::trust::TrustError),
    /// Another option is unusable.
    #[error("relay configuration: {0}")]
    Config(String),
}

/// Connects to the device's serial socket at `address`, retrying every 200 ms for up to
/// `limit` (QEMU may start after the relay). The connection has `TCP_NODELAY` set.
///
/// # Errors
///
/// [`RelayError::SerialConnect`] with the last error once `limit` has passed.
pub async fn connect_serial(address: &str, limit: Duration) -> Result<TcpStream, RelayError> {
    let start = Instant::now();
    loop {
        let error = match TcpStream::connect(address).await {
            Ok(stream) => {
                // Small frames must not wait for Nagle; a failure only costs latency.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set on the serial socket");
                }
                return Ok(stream);
            }
            Err(e) => e,
        };
        let waited = start.elapsed();
        if waited >= limit {
            return Err(RelayError::SerialConnect {
                address: address.to_owned(),
                waited,
                source: error,
            });
        }
        tracing::debug!(%address, error = %error, "serial port not up yet; retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Relays between the device on `serial` and Sentry and the peer until the device's end
/// closes (EOF) or `shutdown` completes. Open peer connections and unanswered sign requests
/// are dropped then; frames already queued for the device are flushed (for up to a second).
///
/// # Errors
///
/// [`RelayError::Anchors`] or [`RelayError::Config`] for unusable options, and
/// [`RelayError::Serial`] if reading the serial connection fails. Nothing the device or
/// Sentry sends is an error.
pub async fn run(
    serial: TcpStream,
    opts: RelayOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    let anchors = opts.validate()?;
    let (read, write) = serial.into_split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let mut writer = tokio::spawn(write_frames(write, out_rx));
    let mut relay = Relay {
        sign: Arc::new(SignContext {
            opts,
            anchors,
            from_sentry: std::sync::Mutex::default(),
        }),
        out,
        session: None,
        ended: None,
        opened: 0,
        sessions: JoinSet::new(),
        signs: JoinSet::new(),
        skipped: Skipped::default(),
    };
    let result = tokio::select! {
        r = relay.pump(read) => r,
        () = shutdown => {
            tracing::info!("relay: stopping");
            Ok(())
        }
    };
    // Dropping the relay aborts its tasks (closing peer sockets) and closes the writer's
    // channel; the writer then flushes what is queued and shuts the serial socket down.
    drop(relay);
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    result
}

/// The reader's state.
struct Relay {
    sign: Arc<SignContext>,
    /// Frames to the device (the writer task's channel).
    out: mpsc::Sender<Vec<u8>>,
    /// The open peer session, if any: its number and its queue.
    session: Option<(u16, mpsc::Sender<Vec<u8>>)>,
    /// The number of the session that ended last: its late bytes are dropped.
    ended: Option<u16>,
    /// Sessions opened so far: the next one goes to `peers[opened % peers.len()]`.
    opened: usize,
    /// Session tasks: the open one, and closed ones finishing. Dropping aborts them.
    sessions: JoinSet<()>,
    /// Sign tasks in flight. Dropping aborts them.
    signs: JoinSet<()>,
    /// The resynchronisation under way, if any (logged once when it ends).
    skipped: Skipped,
}

/// One resynchronisation episode: the bad input skipped between two good frames. It is logged
/// as one line when the next good frame arrives, the link ends or the device has been quiet
/// for [`SKIP_QUIET`], and at most every [`SKIP_LOG_INTERVAL`] while it lasts, never once per
/// candidate byte: garbage on the line (4 MB of it has thousands of false magic bytes) must not
/// become megabytes of log. Episode lines themselves go through a [`crate::logs::Throttle`]
/// ([`SKIP_LINE_INTERVAL`]): a device alternating garbage and good frames writes one line a
/// second, with the number of episodes held back.
#[derive(Debug)]
struct Skipped {
    /// Since when (the episode's start or its last line), bytes skipped, candidate frames
    /// refused, the first and the last reason, and when the last bytes were skipped.
    open: Option<(Instant, usize, u64, String, String, Instant)>,
    lines: crate::logs::Throttle,
}

impl Default for Skipped {
    fn default() -> Self {
        Self {
            open: None,
            lines: crate::logs::Throttle::new(SKIP_LINE_INTERVAL),
        }
    }
}

/// How often a resynchronisation that goes on is reported.
const SKIP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// At most one episode line per this long (the rest are counted into the next line).
const SKIP_LINE_INTERVAL: Duration = Duration::from_secs(1);
/// A device quiet this long after bad input ends its episode.
const SKIP_QUIET: Duration = Duration::from_secs(1);

impl Skipped {
    fn add(&mut self, bytes: usize, why: impl std::fmt::Display) {
        let now = Instant::now();
        let why = why.to_string();
        let (since, total, candidates, _, last, at) = self
            .open
            .get_or_insert_with(|| (now, 0, 0, why.clone(), String::new(), now));
        *total += bytes;
        *candidates += 1;
        *last = why.clone();
        *at = now;
        if now.duration_since(*since) >= SKIP_LOG_INTERVAL {
            self.report("bad input from the device; still resynchronising");
            self.open = Some((now, 0, 0, why.clone(), why, now));
        }
    }

    /// When the open episode ends for want of more bytes, if one is open.
    fn quiet_deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|(.., at)| *at + SKIP_QUIET)
    }

    fn finish(&mut self) {
        self.report("bad input from the device skipped; resynchronised");
    }

    fn report(&mut self, message: &str) {
        if let Some((_, bytes, candidates, first, last, _)) = self.open.take() {
            if let Some(held_back) = self.lines.admit(Instant::now()) {
                tracing::warn!(
                    bytes_skipped = bytes,
                    candidates,
                    first_error = %first,
                    last_error = %last,
                    episodes_held_back = held_back,
                    "{message}"
                );
            }
        }
    }
}

impl Relay {
    /// Reads and handles frames until EOF. The core's [`Deframer`] does the checking,
    /// resynchronising and stall timing; this loop moves bytes and arms its timer.
    async fn pump(&mut self, mut read: OwnedReadHalf) -> Result<(), RelayError> {
        let mut buf = Box::new([0u8; MAX_FRAME]);
        let mut link = Deframer::new(&mut buf, STALL_TIMEOUT);
        let clock = LinkClock(tokio::time::Instant::now());
        loop {
            while let Some(event) = link.poll_event(clock.now()) {
                match event {
                    Event::Frame(frame) => {
                        self.skipped.finish();
                        self.handle_frame(frame).await;
                    }
                    Event::Skipped { bytes, reason } => self.skipped.add(bytes, reason),
                }
            }
            // Time spent handling frames does not count toward a stall.
            link.handle_ready(clock.now());
            let stall = link.poll_timeout().map(|t| clock.deadline(t));
            let quiet = self.skipped.quiet_deadline();
            tokio::select! {
                // Bytes that are there win over the stall timer.
                biased;
                r = read.read(link.space()) => {
                    let n = r.map_err(RelayError::Serial)?;
                    if n == 0 {
                        self.skipped.finish();
                        if link.buffered() > 0 {
                            tracing::warn!(bytes = link.buffered(), "serial closed inside a frame");
                        }
                        tracing::info!("serial: end of stream");
                        return Ok(());
                    }
                    link.handle_read(n, clock.now());
                }
                // The deframer skips the stalled frame at the next poll.
                () = tokio::time::sleep_until(stall.unwrap_or_else(tokio::time::Instant::now)),
                    if stall.is_some() => {}
                // Bad input followed by silence: the episode is over.
                () = tokio::time::sleep_until(quiet.map_or_else(tokio::time::Instant::now, Into::into)),
                    if quiet.is_some() => self.skipped.finish(),
                Some(r) = self.signs.join_next() => log_join("sign", r),
                Some(r) = self.sessions.join_next() => log_join("peer session", r),
            }
        }
    }

    async fn handle_frame(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::SignRequest {
                request,
                id,
                namespace,
                token,
                csr,
            } => {
                // Device-supplied text is logged quoted (`?`), never raw.
                tracing::info!(
                    request,
                    ?id,
                    ?namespace,
                    csr_bytes = csr.len(),
                    "sign request"
                );
                while let Some(r) = self.signs.try_join_next() {
                    log_join("sign", r);
                }
                if self.signs.len() >= MAX_SIGNS_IN_FLIGHT {
                    let reply = Reply::refused(
                        Code::ResourceExhausted,
                        format!("{MAX_SIGNS_IN_FLIGHT} sign requests already in flight"),
                    );
                    tracing::warn!(request, reply = ?reply.to_string(), "sign request refused");
                    send(&self.out, reply.to_frame(request)).await;
                    return;
                }
                if let Some(reply) = self.sign.opts.pinned_refusal(id, namespace) {
                    tracing::warn!(request, ?id, ?namespace, reply = ?reply.to_string(), "sign request refused");
                    send(&self.out, reply.to_frame(request)).await;
                    return;
                }
                let number = request;
                let request = DeviceRequest {
                    id: id.to_owned(),
                    namespace: namespace.to_owned(),
                    token: token.to_owned(),
                    csr: csr.to_vec(),
                };
                let (ctx, out) = (self.sign.clone(), self.out.clone());
                self.signs.spawn(async move {
                    let reply = ctx.answer(request).await;
                    tracing::info!(request = number, reply = ?reply.to_string(), "sign answer");
                    send(&out, reply.to_frame(number)).await;
                });
            }
            Frame::TlsData { session, data } => self.forward(session, data.to_vec()).await,
            Frame::TlsClose { session } => {
                if self.session.as_ref().is_some_and(|(n, _)| *n == session) {
                    // The session task sees its channel close, writes what is queued and shuts
                    // the peer connection down.
                    self.session = None;
                    self.ended = Some(session);
                    tracing::debug!(session, "device closed the TLS session");
                }
            }
            Frame::SignAnswer { .. } => {
                tracing::warn!("protocol error: the device sent a SignAnswer; ignored");
            }
        }
    }

    /// Gives `bytes` of session `number` to that session; opens it if it is new; drops them
    /// if it has ended.
    async fn forward(&mut self, number: u16, bytes: Vec<u8>) {
        if let Some((open, tx)) = &self.session {
            if *open == number {
                if tx.send(bytes).await.is_err() {
                    // The peer ended it (the device is being sent TlsClose): late bytes.
                    tracing::debug!(session = number, "bytes after the peer closed; dropped");
                    self.session = None;
                    self.ended = Some(number);
                }
                return;
            }
            // A new number: the device has moved on; the old session ends.
            tracing::debug!(
                old = open,
                new = number,
                "new TLS session replaces the open one"
            );
            self.ended = Some(*open);
            self.session = None;
        }
        if self.ended == Some(number) {
            tracing::debug!(session = number, "bytes of an ended session; dropped");
            return;
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        // A fresh channel has room for one message.
        let _ = tx.try_send(bytes);
        self.session = Some((number, tx));
        let peers = &self.sign.opts.peers;
        let peer = peers
            .get(self.opened % peers.len().max(1))
            .cloned()
            .unwrap_or_default();
        self.opened = self.opened.wrapping_add(1);
        self.sessions
            .spawn(session(peer, number, rx, self.out.clone()));
    }
}

/// The deframer's monotonic clock: milliseconds since the relay started, on tokio's clock (so
/// paused-time tests move it).
struct LinkClock(tokio::time::Instant);

impl LinkClock {
    fn now(&self) -> sigil_core::Instant {
        sigil_core::Instant::from_millis(
            u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX),
        )
    }

    fn deadline(&self, t: sigil_core::Instant) -> tokio::time::Instant {
        self.0 + Duration::from_millis(t.as_millis())
    }
}

fn log_join(what: &str, r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            tracing::error!(error = %e, "{what} task panicked");
        }
    }
}

/// Queues one frame for the device; if the writer is gone the serial link is closing anyway.
pub(super) async fn send(out: &mpsc::Sender<Vec<u8>>, frame: Vec<u8>) {
    if out.send(frame).await.is_err() {
        tracing::debug!("serial writer gone; frame dropped");
    }
}

/// A frame's bytes.
pub(super) fn encode(frame: &Frame<'_>) -> Result<Vec<u8>, link::Error> {
    let mut out = vec![0u8; frame.buffer_len()];
    let len = frame.emit(&mut out)?.len();
    out.truncate(len);
    Ok(out)
}

/// The writer task: writes queued frames to the serial socket until the channel closes, then
/// shuts the socket's write side down.
async fn write_frames(mut write: OwnedWriteHalf, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = write.write_all(&frame).await {
            tracing::warn!(error = %e, "writing to the serial link failed");
            return;
        }
    }
    let _ = write.shutdown().await;
}
