//! Sentry as a real process under abuse (issue 11): waves of idle TLS and raw TCP connections,
//! connections that never send a request, every connection busy, half-sent requests on the
//! metrics ports, a low open-file limit; requests for control-plane IDs and malformed names;
//! log lines a request tries to forge; credential reloads that are refused; roots with keys
//! Sigil cannot verify with. Attackers connect from 127.0.0.2 and up (all of 127/8 is
//! loopback), the legitimate client from 127.0.0.1, so per-address shares are exercised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sigil_core::crypto::Signer as _;
use sigil_host::ca::Credentials;
use sigil_host::client::{self, ClientError, SentryClient, SentryTarget, SignRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use common::{http_get, key_and_csr, metric, read_certs, sentry_command, start, SENTRY_ID};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

fn target(addr: &str, anchors: &[Vec<u8>]) -> SentryTarget {
    SentryTarget {
        address: addr.to_owned(),
        anchors: std::sync::Arc::new(
            sigil_host::trust::Anchors::from_ders("ca.crt", anchors.to_vec()).unwrap(),
        ),
        sentry_id: SENTRY_ID.into(),
    }
}

async fn sign_as(
    addr: &str,
    anchors: &[Vec<u8>],
    id: &str,
    namespace: &str,
    trust_domain: &str,
) -> Result<client::Signed, ClientError> {
    let mut c = SentryClient::connect(target(addr, anchors)).await?;
    let (key, csr) = key_and_csr();
    let req = SignRequest {
        id: id.into(),
        namespace: namespace.into(),
        trust_domain: trust_domain.into(),
        csr_der: csr,
        jwt_audiences: Vec::new(),
        ..SignRequest::default()
    };
    c.sign(&req, key.public_key()).await
}

/// A legitimate client's whole exchange (dial, TLS, request, validation): how long it took.
async fn timed_sign(addr: &str, anchors: &[Vec<u8>]) -> Result<Duration, ClientError> {
    let started = Instant::now();
    sign_as(addr, anchors, "app", "default", "").await?;
    Ok(started.elapsed())
}

/// A TCP connection to `addr` from `127.0.0.<from>`.
async fn dial_from(from: u8, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, from], 0)))?;
    socket.connect(addr).await
}

/// A TLS client that trusts Sentry's roots and checks the DNS name `localhost` on its serving
/// certificate (plain webpki: these connections only need to get through the handshake).
fn tls_connector(anchors: &[Vec<u8>]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for a in anchors {
        roots
            .add(rustls::pki_types::CertificateDer::from(a.clone()))
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection from `127.0.0.<from>` that finished its handshake and sends nothing.
async fn idle_tls(
    from: u8,
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> std::io::Result<Tls> {
    let tcp = dial_from(from, addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .map_err(std::io::Error::other)?
}

/// Whether the peer has closed `s` (EOF or an error), without waiting; bytes it sent are
/// read and dropped.
fn closed_now(s: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Waits until the peer closes `s`; how long that took, or `None` past `limit`.
async fn wait_closed<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

fn http_status(addr: &str, path: &str) -> u16 {
    http_get(addr, path)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The figures of one wave.
#[derive(Debug)]
struct Wave {
    attacker_connections: usize,
    /// Attacker sockets not yet seen closed at the end (the listen backlog included).
    #[allow(dead_code)]
    held_at_end: usize,
    open_on_sentry: u64,
    shed: u64,
    slowest_sign: Duration,
    rss_before_mib: f64,
    /// Printed, not asserted: the peak depends on the allocator.
    #[allow(dead_code)]
    rss_peak_mib: f64,
    rss_after_mib: f64,
}

/// Opens `per_address × addresses` idle TLS connections and `raw_per_address × addresses`
/// raw TCP ones (attackers at 127.0.0.2 and up), then, while a second wave keeps arriving,
/// signs `tries` times as a legitimate client; then lets every attacker go and waits for
/// Sentry to close them all.
async fn wave(
    sentry: &common::Sentry,
    anchors: &[Vec<u8>],
    addresses: u8,
    tls_per_address: usize,
    raw_per_address: usize,
    tries: usize,
) -> Wave {
    let pid = sentry.child.id();
    let addr: SocketAddr = sentry.grpc.parse().unwrap();
    let connector = tls_connector(anchors);
    // Warm up (allocator arenas, the serving path) before the baseline.
    for _ in 0..3 {
        timed_sign(&sentry.grpc, anchors).await.unwrap();
    }
    let rss_before = status_kib(pid, "VmRSS:");

    let open_batch = |first_round: bool| {
        let connector = connector.clone();
        async move {
            let mut tls = Vec::new();
            let mut raw = Vec::new();
            let mut opening = tokio::task::JoinSet::new();
            for from in 2..2 + addresses {
                for i in 0..tls_per_address + raw_per_address {
                    let connector = connector.clone();
                    opening.spawn(async move {
                        if i < tls_per_address {
                            idle_tls(from, addr, &connector)
                                .await
                                .map(|s| (Some(s), None))
                        } else {
                            dial_from(from, addr).await.map(|s| (None, Some(s)))
                        }
                    });
                }
                if !first_round {
                    // The second wave trickles in while the legitimate client works.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            while let Some(r) = opening.join_next().await {
                match r.unwrap() {
                    Ok((Some(t), _)) => tls.push(t),
                    Ok((_, Some(r))) => raw.push(r),
                    _ => {}
                }
            }
            (tls, raw)
        }
    };
    let (mut tls, mut raw) = open_batch(true).await;
    let second = tokio::spawn(open_batch(false));
    let mut slowest = Duration::ZERO;
    for _ in 0..tries {
        let took = timed_sign(&sentry.grpc, anchors)
            .await
            .expect("a legitimate client during the wave");
        slowest = slowest.max(took);
        assert!(
            http_status(&sentry.healthz, "/healthz") == 200,
            "healthz during a wave of idle connections"
        );
    }
    let (t2, r2) = second.await.unwrap();
    tls.extend(t2);
    raw.extend(r2);
    let attacker_connections = addresses as usize * (tls_per_address + raw_per_address) * 2;
    let held_at_end = tls.iter().filter(|t| !closed_now(t.get_ref().0)).count()
        + raw.iter().filter(|r| !closed_now(r)).count();
    let open_on_sentry = metric(&sentry.metrics, "sigil_sentry_connections");
    let rss_peak = status_kib(pid, "VmHWM:");
    drop((tls, raw));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&sentry.metrics, "sigil_sentry_connections") > 0 {
        assert!(
            Instant::now() < deadline,
            "connections left open after the wave"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Wave {
        attacker_connections,
        held_at_end,
        open_on_sentry,
        shed: metric(&sentry.metrics, "sigil_sentry_connections_shed_total"),
        slowest_sign: slowest,
        rss_before_mib: mib(rss_before),
        rss_peak_mib: mib(rss_peak),
        rss_after_mib: mib(status_kib(pid, "VmRSS:")),
    }
}

/// Issue 11, point 1: more idle TLS and raw TCP connections than the table holds, from eight
/// addresses, and a second wave arriving meanwhile: a legitimate client still gets its
/// certificate within 1 s each time, `/healthz` stays 200, the table never holds more than its
/// limit, and RSS is back within 16 MiB of where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wave_of_idle_connections_does_not_stop_issuance() {
    sigil_host::net::raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sentry_command(dir.path());
    cmd.args(["--max-connections", "128", "--max-connections-per-ip", "32"]);
    let sentry = start(cmd).unwrap();
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let w = wave(&sentry, &anchors, 8, 40, 16, 5).await;
    println!("{w:#?}");
    assert!(w.attacker_connections > 4 * 128, "{w:?}");
    assert!(w.slowest_sign < Duration::from_secs(1), "{w:?}");
    assert!(w.open_on_sentry <= 128, "{w:?}");
    assert!(w.shed > 0, "{w:?}");
    assert!(w.rss_after_mib <= w.rss_before_mib + 16.0, "{w:?}");
}

/// The same at Sentry's default limits (4,096 connections, 256 per address), with 6,144 idle
/// connections and as many again meanwhile. Run by hand (it needs ~13,000 file descriptors):
/// `cargo test --release -p sigil-host --test sentry_hardening -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run by hand: needs ~13,000 file descriptors and a minute"]
async fn a_wave_at_the_default_limits() {
    let limit = sigil_host::net::raise_open_files_limit();
    assert!(limit >= 14_000, "open-file limit {limit}");
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(dir.path())).unwrap();
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let w = wave(&sentry, &anchors, 24, 192, 64, 5).await;
    println!("{w:#?}");
    assert!(w.slowest_sign < Duration::from_secs(1), "{w:?}");
    assert!(w.open_on_sentry <= 4096, "{w:?}");
    // Memory is bounded by the table, not given back (glibc keeps freed pages): measured
    // 56 MiB (release) and 62 MiB (debug) after the wave; the bound leaves room for both.
    assert!(w.rss_after_mib <= 96.0, "{w:?}");
}

/// Each idle phase has its deadline: a socket that sends nothing is cut at the handshake
/// deadline (3 s), a TLS connection that sends no request after its handshake at the
/// first-request deadline (5 s), and a client that made a request and went quiet at the idle
/// deadline (here 2 s). Before, these waited 10 s, 300 s and 300 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_at_their_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sentry_command(dir.path());
    cmd.args(["--connection-idle-timeout", "2s"]);
    let sentry = start(cmd).unwrap();
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let addr: SocketAddr = sentry.grpc.parse().unwrap();

    let raw = tokio::spawn(async move {
        let mut s = dial_from(2, addr).await.unwrap();
        wait_closed(&mut s, Duration::from_secs(20)).await
    });
    let connector = tls_connector(&anchors);
    let tls = tokio::spawn(async move {
        let mut s = idle_tls(3, addr, &connector).await.unwrap();
        wait_closed(&mut s, Duration::from_secs(20)).await
    });
    // A reusing client: one request, then quiet.
    let mut client = SentryClient::connect(target(&sentry.grpc, &anchors))
        .await
        .unwrap();
    let (key, csr) = key_and_csr();
    let req = SignRequest {
        id: "app".into(),
        namespace: "default".into(),
        csr_der: csr,
        jwt_audiences: Vec::new(),
        ..SignRequest::default()
    };
    client.sign(&req, key.public_key()).await.unwrap();
    let quiet = Instant::now();

    let raw = raw.await.unwrap().expect("a raw connection left open");
    let tls = tls
        .await
        .unwrap()
        .expect("a TLS connection without request left open");
    assert!(raw < Duration::from_secs(5), "raw TCP closed after {raw:?}");
    assert!(tls < Duration::from_secs(7), "TLS closed after {tls:?}");
    // By now (> 5 s) the quiet client's connection is gone too.
    while metric(&sentry.metrics, "sigil_sentry_connections") > 0 {
        assert!(
            quiet.elapsed() < Duration::from_secs(6),
            "the quiet client's connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&sentry.metrics, "sigil_sentry_connections_timed_out_total") >= 3);
    // And the client reconnects for its next request.
    let (key, csr) = key_and_csr();
    let req = SignRequest {
        csr_der: csr,
        ..req
    };
    client.sign(&req, key.public_key()).await.unwrap();
}

/// A gRPC request whose body never comes: its connection is busy (until the request timeout).
async fn busy_connection(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> tokio::task::JoinHandle<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tls = idle_tls(2, addr, connector).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(async move {
        let body = http_body_util::StreamBody::new(tokio_stream::pending::<
            Result<hyper::body::Frame<hyper::body::Bytes>, std::convert::Infallible>,
        >());
        let req = http::Request::post("http://dapr-sentry/dapr.proto.sentry.v1.CA/SignCertificate")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let call = send.send_request(req);
        tokio::select! {
            _ = conn => {}
            _ = call => {}
        }
    })
}

/// When every connection has a request in flight, the table cannot make room: `/healthz`
/// says 503 and a newcomer is refused; when the requests end, both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_every_connection_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sentry_command(dir.path());
    cmd.args(["--max-connections", "16", "--max-connections-per-ip", "16"]);
    let sentry = start(cmd).unwrap();
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let addr: SocketAddr = sentry.grpc.parse().unwrap();
    assert_eq!(http_status(&sentry.healthz, "/healthz"), 200);
    let connector = tls_connector(&anchors);
    let mut busy = Vec::new();
    for _ in 0..16 {
        busy.push(busy_connection(addr, &connector).await);
        // Its request starts before the next connection comes (an idle one would be shed).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_status(&sentry.healthz, "/healthz") != 503 {
        assert!(
            Instant::now() < deadline,
            "healthz never said 503: {}",
            http_get(&sentry.metrics, "/metrics")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(timed_sign(&sentry.grpc, &anchors).await.is_err());
    assert!(
        sentry
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("connection refused")),
        "the refusal is logged"
    );
    for b in busy {
        b.abort();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_status(&sentry.healthz, "/healthz") != 200 {
        assert!(Instant::now() < deadline, "healthz never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    timed_sign(&sentry.grpc, &anchors).await.unwrap();
}

/// `n` connections from 127.0.0.2 to `addr`, each with a request whose headers never end
/// (dialled at once; those not connected within 2 s are left out).
async fn half_sent_requests(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut dials = tokio::task::JoinSet::new();
    for _ in 0..n {
        dials.spawn(async move {
            let mut s = tokio::time::timeout(Duration::from_secs(2), dial_from(2, addr))
                .await
                .ok()?
                .ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .await
                .ok()?;
            Some(s)
        });
    }
    let mut out = Vec::new();
    while let Some(s) = dials.join_next().await {
        out.extend(s.unwrap());
    }
    out
}

/// Checks one small HTTP port under a flood of half-sent requests: a request for `path` in
/// the middle of it is answered with `expect` in the body, and every half-sent request is
/// closed within the header deadline (5 s) plus slack.
async fn flood_and_scrape(port: &str, path: &'static str, expect: &str) {
    let addr: SocketAddr = port.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(9);
    let mut flood = half_sent_requests(addr, 300).await;
    let body = tokio::task::spawn_blocking({
        let port = port.to_owned();
        move || http_get(&port, path)
    })
    .await
    .unwrap();
    assert!(body.contains(expect), "{path} during the flood: {body}");
    for (i, s) in flood.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            wait_closed(s, left).await.is_some(),
            "half-sent request {i} on {port} still open after 9 s"
        );
    }
}

/// Issue 11, point 2: Sentry's metrics port and a sidecar's, flooded with 300 half-sent
/// requests each: a normal scrape is still answered, and the half-sent ones are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_on_the_metrics_ports_are_closed_and_scrapes_still_work() {
    sigil_host::net::raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(dir.path())).unwrap();
    flood_and_scrape(
        &sentry.metrics,
        "/metrics",
        "dapr_sentry_cert_sign_request_received_total",
    )
    .await;
    flood_and_scrape(&sentry.healthz, "/healthz", "ok").await;
    let ca = dir.path().join("ca.crt");
    let sidecar = common::sidecar_process(&[
        "--app-id",
        "app",
        "--sentry-address",
        &sentry.grpc,
        "--trust-anchors-file",
        ca.to_str().unwrap(),
        "--dapr-http-port",
        "0",
        "--dapr-grpc-port",
        "0",
        "--dapr-internal-port",
        "0",
        "--dapr-internal-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
    ]);
    flood_and_scrape(
        &sidecar.field("metrics="),
        "/metrics",
        "dapr_runtime_mtls_init_total",
    )
    .await;
}

/// Issue 11, point 2: a Sentry with 256 file descriptors whose metrics port gets 1,000
/// half-sent requests still signs (before, the metrics port took every descriptor and the
/// gRPC port could no longer accept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn few_file_descriptors_and_a_flooded_metrics_port_do_not_stop_signing() {
    sigil_host::net::raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let cmd = common::sentry_command_under(
        dir.path(),
        &["sh", "-c", "ulimit -n 256 && exec \"$0\" \"$@\""],
    );
    let sentry = start(cmd).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", sentry.child.id())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let addr: SocketAddr = sentry.metrics.parse().unwrap();
    let flood = half_sent_requests(addr, 1000).await;
    let took = timed_sign(&sentry.grpc, &anchors)
        .await
        .expect("signing with the metrics port flooded");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", sentry.child.id()))
        .unwrap()
        .count();
    assert!(fds < 200, "{fds} descriptors open");
    drop(flood);
}

fn refused(r: Result<client::Signed, ClientError>) -> (tonic::Code, String) {
    match r {
        Err(ClientError::Refused { code, message }) => (code, message),
        other => panic!("not refused: {other:?}"),
    }
}

/// Issue 11, point 3: Sentry's own ID is never issued; the other control-plane IDs only in
/// Sentry's namespace and trust domain; malformed names are INVALID_ARGUMENT (not INTERNAL,
/// not counted as signing failures).
#[tokio::test]
async fn control_plane_ids_and_malformed_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(dir.path())).unwrap();
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let g = &sentry.grpc;
    for (id, ns, td) in [
        ("dapr-sentry", "default", "localhost"),
        ("dapr-sentry", "shop", ""),
        ("dapr-operator", "shop", "localhost"),
        ("dapr-placement", "default", ""),
        ("dapr-scheduler", "default", "public"),
        ("dapr-injector", "kube-system", "localhost"),
    ] {
        let (code, message) = refused(sign_as(g, &anchors, id, ns, td).await);
        assert_eq!(
            code,
            tonic::Code::PermissionDenied,
            "{id} {ns} {td}: {message}"
        );
    }
    let signed = sign_as(g, &anchors, "dapr-placement", "default", "localhost")
        .await
        .unwrap();
    let leaf = sigil_core::cert::Certificate::parse(&signed.chain[0]).unwrap();
    assert_eq!(
        leaf.spiffe_ids().next().unwrap().as_str(),
        "spiffe://localhost/ns/default/dapr-placement"
    );
    let long = "n".repeat(64);
    for (id, ns) in [
        ("app", "a/b"),
        ("app", long.as_str()),
        ("a b", "default"),
        ("app", ".."),
    ] {
        let (code, message) = refused(sign_as(g, &anchors, id, ns, "").await);
        assert_eq!(code, tonic::Code::InvalidArgument, "{id} {ns}: {message}");
    }
    let ok = sign_as(g, &anchors, "app", &"n".repeat(63), "").await;
    assert!(ok.is_ok(), "{ok:?}");
    let body = http_get(&sentry.metrics, "/metrics");
    assert!(
        body.contains("dapr_sentry_cert_sign_failure_total{reason=\"request\"} 4\n"),
        "{body}"
    );
    assert!(!body.contains("reason=\"sign\""), "{body}");
}

/// Issue 11, point 4: a namespace with a newline cannot write a log line of its own.
#[tokio::test]
async fn a_newline_in_a_request_makes_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(dir.path())).unwrap();
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let forged = "ns\n2026-01-01T00:00:00.000000Z  INFO sentry: FORGED credentials replaced";
    refused(sign_as(&sentry.grpc, &anchors, "app", forged, "").await);
    // The ID too.
    let forged_id = "app\nFORGED line";
    refused(sign_as(&sentry.grpc, &anchors, forged_id, "default", "").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = sentry.stderr.lock().unwrap().clone();
    assert!(
        !lines.iter().any(|l| l.starts_with("2026-01-01")),
        "a forged line: {lines:#?}"
    );
    let mentions: Vec<&String> = lines.iter().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(mentions.len(), 2, "{lines:#?}");
    for l in mentions {
        assert!(l.contains("sign request refused"), "a line of its own: {l}");
    }
}

/// Writes `ca`, `issuer` and `key` into `dir` (each by rename).
fn write_set(dir: &Path, ca: &str, issuer: &str, key: &str) {
    for (name, body) in [("issuer.key", key), ("issuer.crt", issuer), ("ca.crt", ca)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Issue 11, point 5: `dapr_sentry_issuercert_changed_total` counts the sets swapped in, not
/// the refused ones.
#[tokio::test]
async fn issuercert_changed_counts_only_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let make = || {
        Credentials::generate("localhost", SENTRY_ID, now, Duration::from_secs(900))
            .unwrap()
            .1
    };
    let (first, second) = (make(), make());
    write_set(dir.path(), &first.ca, &first.issuer, &first.key);
    let sentry = start(sentry_command(dir.path())).unwrap();
    // Served once: the watcher has read the first set.
    let anchors = read_certs(&dir.path().join("ca.crt"));
    sign_as(&sentry.grpc, &anchors, "app", "default", "")
        .await
        .unwrap();
    let changed = || metric(&sentry.metrics, "dapr_sentry_issuercert_changed_total");
    let refused = || {
        metric(
            &sentry.metrics,
            "sigil_sentry_credentials_reload_refused_total",
        )
    };
    assert_eq!(changed(), 0, "loaded, not generated");
    // A mismatched set: the second issuer with the first key.
    write_set(dir.path(), &second.ca, &second.issuer, &first.key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused() == 0 {
        assert!(
            Instant::now() < deadline,
            "the bad set was not refused: {:#?}",
            sentry.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(changed(), 0, "a refused set is not a change");
    write_set(dir.path(), &second.ca, &second.issuer, &second.key);
    while changed() == 0 {
        assert!(Instant::now() < deadline, "the good set was not swapped in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(changed(), 1);
}

/// Issue 11, point 5: roots with keys Sigil cannot verify with are refused by their algorithm,
/// not as "not self-signed".
#[test]
fn roots_with_unsupported_keys_are_refused_by_name() {
    for (newkey, expect) in [
        (
            &["-newkey", "rsa:1024"][..],
            "unsupported key: RSA 1024-bit",
        ),
        (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime192v1"][..],
            "unsupported key: ECDSA P-192",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let good = Credentials::generate("localhost", SENTRY_ID, SystemTime::now(), Duration::ZERO)
            .unwrap()
            .1;
        common::run_ok(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-nodes",
                    "-subj",
                    "/O=localhost",
                    "-days",
                    "30",
                ])
                .args(newkey)
                .args(["-keyout", "root.key", "-out", "ca.crt"])
                .current_dir(dir.path()),
        );
        std::fs::write(dir.path().join("issuer.crt"), &good.issuer).unwrap();
        std::fs::write(dir.path().join("issuer.key"), good.key.as_str()).unwrap();
        let e = start(sentry_command(dir.path())).err().expect("started");
        assert!(e.contains(expect), "{expect}: {e}");
        assert!(!e.contains("not self-signed"), "{e}");
    }
}
