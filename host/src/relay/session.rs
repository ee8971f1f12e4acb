//! The TLS channel: one session task per device session, forwarding bytes blindly between the
//! device (as `TlsData` frames) and the peer's TCP connection. The relay never terminates TLS.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use sigil_core::link::Frame;

use super::{encode, send};

/// Bytes read from the peer at a time: each read becomes one `TlsData` frame, kept well under
/// [`MAX_PAYLOAD`](sigil_core::link::MAX_PAYLOAD) so a device with small buffers gets small frames.
pub const PEER_READ_LEN: usize = 2048;

/// How long connecting to the peer may take before the device gets `TlsClose`.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Device bytes queued for one peer session.
pub(super) const SESSION_QUEUE: usize = 32;

/// One TLS session to the peer: connects, then copies the device's bytes (from `rx`) to the
/// peer and the peer's bytes to the device as `TlsData` frames, the two directions
/// independently (neither waits for the other, so a peer that writes before it reads cannot
/// deadlock the session). Ends when the device closes (`rx` closed: the peer connection is
/// shut down, nothing is sent) or the peer does (the device gets `TlsClose`).
pub(super) async fn session(
    peer: String,
    number: u16,
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let stream = match tokio::time::timeout(PEER_CONNECT_TIMEOUT, TcpStream::connect(&peer)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = format!("connecting to {peer}: {e}");
            return peer_closed(number, &mut rx, &out, &why).await;
        }
        Err(_) => {
            let why = format!("connecting to {peer}: timed out");
            return peer_closed(number, &mut rx, &out, &why).await;
        }
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set on the peer socket");
    }
    tracing::debug!(%peer, "TLS session opened");
    let (mut peer_read, mut peer_write) = stream.into_split();
    let to_peer = async {
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = peer_write.write_all(&bytes).await {
                return Some(format!("writing to {peer}: {e}"));
            }
        }
        let _ = peer_write.shutdown().await;
        None
    };
    let from_peer = async {
        let mut buf = [0u8; PEER_READ_LEN];
        loop {
            match peer_read.read(&mut buf).await {
                Ok(0) => return "closed by the peer".to_owned(),
                Ok(n) => match encode(&Frame::TlsData {
                    session: number,
                    data: buf.get(..n).unwrap_or_default(),
                }) {
                    Ok(frame) => send(&out, frame).await,
                    // Unreachable: PEER_READ_LEN is under MAX_PAYLOAD.
                    Err(e) => tracing::error!(error = %e, "TlsData frame not encoded"),
                },
                Err(e) => return format!("reading from {peer}: {e}"),
            }
        }
    };
    // `None`: the device closed the session.
    let peer_end = tokio::select! {
        end = to_peer => end,
        end = from_peer => Some(end),
    };
    match peer_end {
        Some(why) => peer_closed(number, &mut rx, &out, &why).await,
        None => tracing::debug!(%peer, "TLS session closed by the device"),
    }
}

/// Ends session `number` from the peer's side: closes `rx` first, so that bytes the device
/// sends for it after this find the session gone (and are dropped), then sends `TlsClose`.
async fn peer_closed(
    number: u16,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    out: &mpsc::Sender<Vec<u8>>,
    why: &str,
) {
    rx.close();
    tracing::debug!(
        session = number,
        reason = why,
        "TLS session ended; TlsClose to the device"
    );
    match encode(&Frame::TlsClose { session: number }) {
        Ok(frame) => send(out, frame).await,
        Err(e) => tracing::error!(error = %e, "TlsClose frame not encoded"),
    }
}
