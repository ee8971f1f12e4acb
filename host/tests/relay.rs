//! `sigil relay` as a real process on loopback. The test plays the device: it listens on
//! 127.0.0.1:0 as QEMU's `-serial tcp:...,server=on` would, lets the relay connect, and speaks
//! `sigil_core::link` frames to it. Sentry is a real `sigil sentry`; the TLS peer is an echo
//! server (the relay forwards bytes blindly, so no TLS is needed to test it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sigil_core::crypto::Signer as _;
use sigil_core::key::SoftwareKey;
use sigil_core::link::{self, Answer, Frame, MAX_PAYLOAD};

use common::{free_port, key_and_csr, read_certs, sentry_command, start, Sentry};

/// How long any single answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// A frame from the relay, owned.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// Request number, certificates, and Sentry's roots after them.
    Chain(u32, Vec<Vec<u8>>, Vec<Vec<u8>>),
    /// Request number, code, message.
    Refused(u32, u8, String),
    /// Session number, bytes.
    TlsData(u16, Vec<u8>),
    /// Session number.
    TlsClose(u16),
    SignRequest,
}

/// The test's end of the serial link.
struct Device {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Device {
    fn send(&mut self, frame: &Frame<'_>) {
        self.send_raw(&wire(frame));
    }

    /// Sends `data` on TLS session `session`.
    fn send_tls(&mut self, session: u16, data: &[u8]) {
        self.send(&Frame::TlsData { session, data });
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, or `None` if none arrives within `limit`. Panics on a malformed frame
    /// or a closed link.
    fn recv_within(&mut self, limit: Duration) -> Option<Got> {
        let deadline = Instant::now() + limit;
        loop {
            match Frame::parse(&self.buf) {
                Ok((frame, len)) => {
                    let got = match frame {
                        Frame::SignAnswer {
                            request,
                            answer: a @ Answer::Chain(_),
                        } => Got::Chain(
                            request,
                            a.certificates().map(<[u8]>::to_vec).collect(),
                            a.anchors().map(<[u8]>::to_vec).collect(),
                        ),
                        Frame::SignAnswer {
                            request,
                            answer: Answer::Refused { code, message },
                        } => Got::Refused(request, code, message.to_owned()),
                        Frame::TlsData { session, data } => Got::TlsData(session, data.to_vec()),
                        Frame::TlsClose { session } => Got::TlsClose(session),
                        Frame::SignRequest { .. } => Got::SignRequest,
                    };
                    self.buf.drain(..len);
                    return Some(got);
                }
                Err(link::Error::Incomplete { .. }) => {}
                Err(e) => panic!("malformed frame from the relay: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the relay closed the serial link"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("reading the serial link: {e}"),
            }
        }
    }
}

/// A running `sigil relay`, connected to the test's [`Device`].
struct Relay {
    child: Child,
    device: Device,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    /// The next frame (panics with the relay's log if none comes in time).
    fn recv(&mut self) -> Got {
        match self.device.recv_within(ANSWER_TIMEOUT) {
            Some(got) => got,
            None => panic!("no frame from the relay; its log: {}", self.logs()),
        }
    }

    /// The next frame answers `request` with a workload chain for `key` as `device`, valid
    /// against `anchors` (see [`assert_workload_chain`]).
    fn expect_chain(&mut self, request: u32, anchors: &[Vec<u8>], key: &SoftwareKey) {
        match self.recv() {
            Got::Chain(r, chain, roots) if r == request => {
                assert_workload_chain(&chain, anchors, key, "device");
                // Sentry's trust bundle travels with the chain, for the device to adopt.
                assert_eq!(roots, anchors, "Sentry's roots after the chain");
            }
            other => panic!("{other:?}; relay log: {}", self.logs()),
        }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the relay exited; its log: {}",
            self.logs()
        );
    }

    /// Waits for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not exit; its log: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `frame`'s bytes.
fn wire(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = vec![0u8; frame.buffer_len()];
    let len = frame.emit(&mut out).unwrap().len();
    out.truncate(len);
    out
}

/// Starts `sigil relay` before the device listens (`listener`: bind it later to test the
/// retry) or after; returns once it has connected and printed its ready line.
#[allow(clippy::zombie_processes)] // reaped by `Relay::drop`
fn start_relay_at(
    serial: &str,
    listener: impl FnOnce() -> TcpListener,
    sentry: &str,
    anchors: &Path,
    peer: &str,
    extra: &[&str],
) -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["relay", "--trust-domain", "localhost", "--serial", serial])
        .args(["--sentry", sentry, "--anchors"])
        .arg(anchors)
        .args(["--peer", peer, "--log-level", "debug"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stderr, rx) = common::read_output(&mut child);
    let listener = listener();
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("relay exited {status}: {:?}", stderr.lock().unwrap());
                }
                assert!(Instant::now() < deadline, "the relay did not connect");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the relay's ready line");
    // More peers (in `extra`) follow the first, comma-separated.
    assert!(
        line == format!("relay: connected serial={serial} sentry={sentry} peer={peer}")
            || line.starts_with(&format!(
                "relay: connected serial={serial} sentry={sentry} peer={peer},"
            )),
        "{line}"
    );
    Relay {
        child,
        device: Device {
            stream,
            buf: Vec::new(),
        },
        stderr,
    }
}

/// Starts `sigil relay` against a device listening now.
fn start_relay(sentry: &str, anchors: &Path, peer: &str) -> Relay {
    start_relay_with(sentry, anchors, peer, &[])
}

fn start_relay_with(sentry: &str, anchors: &Path, peer: &str, extra: &[&str]) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let serial = listener.local_addr().unwrap().to_string();
    start_relay_at(&serial, move || listener, sentry, anchors, peer, extra)
}

/// A running Sentry and its credentials directory (ca.crt is the anchors file).
fn sentry() -> (Sentry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(dir.path())).unwrap();
    (sentry, dir)
}

/// A relay (started with `extra`, no TLS peer) to a running Sentry. Also returns that Sentry
/// with its credentials directory (hold them for as long as the relay is needed) and the
/// anchors it publishes.
fn relay_to_sentry(extra: &[&str]) -> ((Sentry, tempfile::TempDir), Vec<Vec<u8>>, Relay) {
    let (sentry, dir) = sentry();
    let anchors_file = dir.path().join("ca.crt");
    let anchors = read_certs(&anchors_file);
    let relay = start_relay_with(&sentry.grpc, &anchors_file, &nowhere(), extra);
    ((sentry, dir), anchors, relay)
}

/// An address where nothing listens.
fn nowhere() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// An anchors file (a throwaway self-signed certificate) for a relay whose Sentry is never
/// reached, in a directory removed when the guard drops.
fn anchors_for_no_sentry() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.crt");
    let ca = rcgen::generate_simple_self_signed(vec!["ca.invalid".to_owned()]).unwrap();
    std::fs::write(&path, ca.cert.pem()).unwrap();
    (dir, path)
}

fn sign_request<'a>(request: u32, id: &'a str, csr: &'a [u8]) -> Frame<'a> {
    Frame::SignRequest {
        request,
        id,
        namespace: "default",
        token: "",
        csr,
    }
}

/// Checks a chain answer: leaf first, for `key`, naming `id`, valid against `anchors` now, and
/// without the roots.
fn assert_workload_chain(chain: &[Vec<u8>], anchors: &[Vec<u8>], key: &SoftwareKey, id: &str) {
    use sigil_core::chain::Usage;
    let (leaf, rest) = chain.split_first().expect("a certificate");
    assert!(
        !rest.is_empty(),
        "the issuer certificate comes with the leaf"
    );
    for c in chain {
        assert!(!anchors.contains(c), "a root was sent in the chain");
    }
    let cert = sigil_core::cert::Certificate::parse(leaf).unwrap();
    let ids: Vec<String> = cert.spiffe_ids().map(|i| i.to_string()).collect();
    assert_eq!(ids, [format!("spiffe://localhost/ns/default/{id}")]);
    assert!(cert.public_key().unwrap().same_key(&key.public_key()));
    common::verify_now(chain, anchors, Usage::ClientAndServer).unwrap();
}

#[test]
fn sign_request_gets_a_valid_workload_chain() {
    let (_sentry, anchors, mut relay) = relay_to_sentry(&[]);
    let (key, csr) = key_and_csr();
    relay.device.send(&sign_request(1, "device", &csr));
    relay.expect_chain(1, &anchors, &key);
    // A second request on the same link (a renewal) is answered too.
    let (key, csr) = key_and_csr();
    relay.device.send(&sign_request(2, "device", &csr));
    relay.expect_chain(2, &anchors, &key);
}

#[test]
fn sentry_refusals_reach_the_device_with_dapr_codes() {
    let (_sentry, _, mut relay) = relay_to_sentry(&[]);
    // A CSR that is not one: Sentry's INVALID_ARGUMENT.
    relay
        .device
        .send(&sign_request(3, "device", b"\x30\x03not a CSR"));
    match relay.recv() {
        Got::Refused(3, 3, message) => {
            assert!(message.contains("certificate signing request"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // An app ID with a dot: the validator's PERMISSION_DENIED.
    let (_, csr) = key_and_csr();
    relay.device.send(&sign_request(4, "my.device", &csr));
    match relay.recv() {
        Got::Refused(4, 7, message) => assert!(message.contains("dot"), "{message}"),
        other => panic!("{other:?}"),
    }
    relay.assert_alive();
}

#[test]
fn a_pinned_relay_signs_only_for_its_device() {
    let pins = ["--app-id", "device", "--namespace", "default"];
    let ((sentry, _dir), anchors, mut relay) = relay_to_sentry(&pins);
    // Another app ID, or the right one in another namespace: refused by the relay itself
    // (Sentry's insecure validator would have signed both).
    let (_, csr) = key_and_csr();
    relay.device.send(&sign_request(1, "payments", &csr));
    match relay.recv() {
        Got::Refused(1, 7, message) => assert!(message.contains("app ID device"), "{message}"),
        other => panic!("{other:?}"),
    }
    relay.device.send(&Frame::SignRequest {
        request: 2,
        id: "device",
        namespace: "kube-system",
        token: "",
        csr: &csr,
    });
    assert!(matches!(relay.recv(), Got::Refused(2, 7, _)));
    assert_eq!(
        common::metric(
            &sentry.metrics,
            "dapr_sentry_cert_sign_request_received_total"
        ),
        0,
        "refused requests never reached Sentry"
    );
    // The pinned identity is signed.
    let (key, csr) = key_and_csr();
    relay.device.send(&sign_request(3, "device", &csr));
    relay.expect_chain(3, &anchors, &key);
    relay.assert_alive();
}

#[test]
fn unreachable_sentry_and_peer_are_reported_not_fatal() {
    let (_dir, anchors) = anchors_for_no_sentry();
    let mut relay = start_relay(&nowhere(), &anchors, &nowhere());
    let (_, csr) = key_and_csr();
    let asked = Instant::now();
    relay.device.send(&sign_request(5, "device", &csr));
    match relay.recv() {
        Got::Refused(5, 14, message) => assert!(message.contains("connect"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(asked.elapsed() < Duration::from_secs(10));
    // A TLS session to a peer that is not there is closed at once.
    relay.device.send_tls(1, b"\x16\x03\x01 client hello");
    assert_eq!(relay.recv(), Got::TlsClose(1));
    // And both keep working (a second try gets the same answers; the relay lives on).
    relay.device.send(&sign_request(6, "device", &csr));
    assert!(matches!(relay.recv(), Got::Refused(6, 14, _)));
    relay.device.send_tls(2, b"again");
    assert_eq!(relay.recv(), Got::TlsClose(2));
    relay.assert_alive();
}

/// An echo server for the TLS channel: connection `i` echoes until it has echoed `limits[i]`
/// bytes and then closes (`None`: until EOF); each connection's end is reported.
fn echo_server(limits: Vec<Option<usize>>) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (i, limit) in limits.into_iter().enumerate() {
            let (mut s, _) = listener.accept().unwrap();
            let mut echoed = 0usize;
            let mut buf = [0u8; 1500];
            let end = loop {
                let n = match s.read(&mut buf) {
                    Ok(0) => break "eof",
                    Ok(n) => n,
                    Err(_) => break "error",
                };
                let n = limit.map_or(n, |l| n.min(l - echoed));
                s.write_all(&buf[..n]).unwrap();
                echoed += n;
                if limit == Some(echoed) {
                    s.shutdown(Shutdown::Both).unwrap();
                    break "closed";
                }
            };
            tx.send(format!("{i}: {end} after {echoed}")).unwrap();
        }
    });
    (addr, rx)
}

/// Receives `TlsData` frames of `session` until `len` bytes have come; returns them.
fn recv_tls(relay: &mut Relay, session: u16, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        match relay.recv() {
            Got::TlsData(s, d) if s == session => {
                assert!(!d.is_empty() && d.len() <= MAX_PAYLOAD, "{} bytes", d.len());
                got.extend_from_slice(&d);
            }
            other => panic!("{other:?} after {} of {len} bytes", got.len()),
        }
    }
    got
}

/// The echo of `sent` comes back whole on `session`, then the peer closes the echo server's
/// connection number `connection` (reported on `ends`) and the device is told.
fn echoed_then_closed(
    relay: &mut Relay,
    session: u16,
    sent: &[u8],
    ends: &mpsc::Receiver<String>,
    connection: usize,
) {
    assert_eq!(recv_tls(relay, session, sent.len()), sent);
    assert_eq!(relay.recv(), Got::TlsClose(session));
    assert_eq!(
        ends.recv_timeout(ANSWER_TIMEOUT).unwrap(),
        format!("{connection}: closed after {}", sent.len())
    );
}

#[test]
fn tls_bytes_are_forwarded_both_ways_and_sessions_close() {
    let first: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    let second = b"second session".to_vec();
    let (peer, ends) = echo_server(vec![Some(first.len()), Some(second.len()), None]);
    let (_dir, anchors) = anchors_for_no_sentry();
    let mut relay = start_relay(&nowhere(), &anchors, &peer);

    // Session 1: 9,000 bytes in frames of up to MAX_PAYLOAD; the echo comes back whole, then
    // the peer closes and the device is told.
    for data in first.chunks(MAX_PAYLOAD - 2) {
        relay.device.send_tls(1, data);
    }
    echoed_then_closed(&mut relay, 1, &first, &ends, 0);

    // Late bytes of session 1 (a close_notify after the peer's close) are dropped: they open
    // no connection (the echo server's next accept is session 2's, checked below).
    relay.device.send_tls(1, b"late alert");
    relay.device.send(&Frame::TlsClose { session: 1 });

    // Session 2 opens a new connection.
    relay.device.send_tls(2, &second);
    echoed_then_closed(&mut relay, 2, &second, &ends, 1);

    // Session 3: the device closes; the peer sees EOF and the device hears nothing more.
    relay.device.send_tls(3, b"third");
    assert_eq!(recv_tls(&mut relay, 3, 5), b"third");
    relay.device.send(&Frame::TlsClose { session: 3 });
    assert_eq!(ends.recv_timeout(ANSWER_TIMEOUT).unwrap(), "2: eof after 5");
    assert_eq!(relay.device.recv_within(Duration::from_millis(500)), None);
    relay.assert_alive();
}

/// With two `--peer`s, each new session goes to the next peer in turn (the edge device's
/// end-to-end run uses it to call a sidecar and a Go TLS server alternately).
#[test]
fn sessions_go_to_each_peer_in_turn() {
    let (first, first_ends) = echo_server(vec![Some(3), Some(3)]);
    let (second, second_ends) = echo_server(vec![Some(3)]);
    let (_dir, anchors) = anchors_for_no_sentry();
    let mut relay = start_relay_with(&nowhere(), &anchors, &first, &["--peer", &second]);
    for (session, ends) in [(1, &first_ends), (2, &second_ends), (3, &first_ends)] {
        relay.device.send_tls(session, b"abc");
        assert_eq!(recv_tls(&mut relay, session, 3), b"abc");
        assert_eq!(relay.recv(), Got::TlsClose(session));
        let connection = if session == 3 { 1 } else { 0 };
        assert_eq!(
            ends.recv_timeout(ANSWER_TIMEOUT).unwrap(),
            format!("{connection}: closed after 3"),
            "session {session}"
        );
    }
    relay.assert_alive();
}

#[test]
fn corrupt_input_is_skipped_and_the_link_resynchronises() {
    let (_sentry, anchors, mut relay) = relay_to_sentry(&[]);

    // Line noise (no magic byte), a request with a flipped CRC byte, an unknown kind, a
    // SignAnswer (only the relay may send those), then a valid request: one answer.
    let (_, bad_csr) = key_and_csr();
    let mut flipped = wire(&sign_request(7, "device", &bad_csr));
    *flipped.last_mut().unwrap() ^= 0x01;
    let mut unknown_kind = wire(&Frame::TlsClose { session: 1 });
    unknown_kind[1] = 9;
    let (key, csr) = key_and_csr();
    let mut bytes = b"\x00\x01line noise\xff\xfe\r\n".to_vec();
    bytes.extend_from_slice(&flipped);
    bytes.extend_from_slice(&unknown_kind);
    bytes.extend_from_slice(&wire(&Frame::SignAnswer {
        request: 1,
        answer: Answer::Refused {
            code: 2,
            message: "from the device",
        },
    }));
    bytes.extend_from_slice(&wire(&sign_request(8, "device", &csr)));
    relay.device.send_raw(&bytes);
    relay.expect_chain(8, &anchors, &key);

    // A header whose length was corrupted upwards swallows the next frame; once the device is
    // silent the relay drops it and finds the request inside.
    let (key, csr) = key_and_csr();
    let mut bytes = vec![0x53, 3, 0x09, 0xff];
    bytes.extend_from_slice(&wire(&sign_request(9, "device", &csr)));
    relay.device.send_raw(&bytes);
    relay.expect_chain(9, &anchors, &key);

    // Nothing else was answered, and the relay logged what it skipped: one line per
    // resynchronisation, with what it skipped and why.
    assert_eq!(relay.device.recv_within(Duration::from_millis(1500)), None);
    relay.assert_alive();
    let logs = relay.logs();
    let resyncs: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("resynchronised"))
        .collect();
    assert_eq!(resyncs.len(), 2, "{logs}");
    assert!(resyncs[0].contains("unknown frame kind 9"), "{logs}");
    assert!(resyncs[1].contains("stalled"), "{logs}");
    assert!(logs.contains("SignAnswer"), "{logs}");
}

#[test]
fn megabytes_of_garbage_write_one_log_line() {
    let (_sentry, anchors, mut relay) = relay_to_sentry(&[]);

    // 4 MB of noise dense with false magic bytes (and headers that parse), then a request.
    let mut garbage = Vec::with_capacity(4 << 20);
    let mut x: u32 = 0x1234_5678;
    while garbage.len() < 4 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let b = x.to_le_bytes();
        garbage.extend_from_slice(&[link::MAGIC, b[0] % 5, 0, b[1] % 16, b[2], b[3]]);
    }
    let (key, csr) = key_and_csr();
    garbage.extend_from_slice(&wire(&sign_request(11, "device", &csr)));
    relay.device.send_raw(&garbage);
    relay.expect_chain(11, &anchors, &key);
    relay.assert_alive();
    let logs = relay.logs();
    let resyncs = logs.lines().filter(|l| l.contains("resynchronis")).count();
    assert!(
        resyncs <= 2,
        "{resyncs} lines: {}",
        &logs[..logs.len().min(2000)]
    );
    assert!(logs.len() < 64 * 1024, "{} bytes of log", logs.len());

    // Garbage and good frames alternating: episodes are summarised, not one line each.
    let mut bytes = Vec::new();
    for i in 0..200u16 {
        bytes.extend_from_slice(&[link::MAGIC, 9, 0, 0]);
        bytes.extend_from_slice(&wire(&Frame::TlsClose { session: i }));
    }
    relay.device.send_raw(&bytes);
    // Then garbage and silence: the open episode is reported without a next frame.
    relay.device.send_raw(&[link::MAGIC, 9, 0, 0, 1, 2, 3]);
    std::thread::sleep(Duration::from_millis(2500));
    relay.assert_alive();
    let logs = relay.logs();
    let after = logs.lines().filter(|l| l.contains("resynchronis")).count() - resyncs;
    assert!((1..=4).contains(&after), "{after} lines for 201 episodes");
    assert!(
        logs.lines()
            .any(|l| l.contains("episodes_held_back") && !l.contains("episodes_held_back=0")),
        "{}",
        &logs[logs.len().saturating_sub(3000)..]
    );
}

#[test]
fn late_serial_port_then_eof_exits_zero() {
    // The relay starts before the device's port is up (QEMU starting) and retries.
    let (_dir, anchors) = anchors_for_no_sentry();
    let port = free_port();
    let serial = format!("127.0.0.1:{port}");
    let mut relay = start_relay_at(
        &serial,
        move || {
            std::thread::sleep(Duration::from_millis(1500));
            TcpListener::bind(("127.0.0.1", port)).unwrap()
        },
        &nowhere(),
        &anchors,
        &nowhere(),
        &[],
    );
    // The device goes away (QEMU exited): the relay stops cleanly.
    relay.device.stream.shutdown(Shutdown::Both).unwrap();
    let status = relay.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; relay log: {}", relay.logs());
}

#[test]
fn sigterm_closes_the_link_and_exits_zero() {
    let (_dir, anchors) = anchors_for_no_sentry();
    let mut relay = start_relay(&nowhere(), &anchors, &nowhere());
    let killed = Command::new("kill")
        .args(["-TERM", &relay.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = relay.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; relay log: {}", relay.logs());
    // The serial socket was closed: the device reads EOF.
    let mut rest = Vec::new();
    relay
        .device
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(relay.device.stream.read_to_end(&mut rest).unwrap(), 0);
}
