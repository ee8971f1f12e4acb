//! Service invocation through two sidecars, as real processes on loopback: Sentry, sidecar `a`
//! (the caller), sidecar `b` and an app behind `b` (an echo server written here). openssl
//! `s_client` is the independent client for the mTLS refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{free_port, health, short_ttl_sentry, sidecar_process, wait_until, Proc, Sentry};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use sigil_core::crypto::PublicKey;
use sigil_host::ca::store::{self, StorePaths};
use sigil_host::key::P256Key;

fn sidecar(app_id: &str, sentry: &str, dir: &Path, internal: u16, extra: &[&str]) -> Proc {
    let mut args: Vec<std::ffi::OsString> = ["--app-id", app_id, "--sentry-address", sentry]
        .iter()
        .map(Into::into)
        .collect();
    args.push("--trust-anchors-file".into());
    args.push(dir.join("anchors.pem").into());
    args.push("--resolution-file".into());
    args.push(dir.join("names.yaml").into());
    for a in [
        "--dapr-http-port",
        "0",
        "--dapr-grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--dapr-internal-address",
        "127.0.0.1",
    ] {
        args.push(a.into());
    }
    args.push("--dapr-internal-port".into());
    args.push(internal.to_string().into());
    args.extend(extra.iter().map(Into::into));
    sidecar_process(&args)
}

/// The app behind sidecar `b`: `/echo` streams the request body back (and reports the caller
/// and a custom header), `/status/<n>` answers with status n, anything else 404.
async fn echo_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap_or("").to_owned())
                                .unwrap_or_default()
                        };
                        let resp = hyper::Response::builder()
                            .header("x-caller", header("dapr-caller-app-id"))
                            .header("x-caller-namespace", header("dapr-caller-namespace"))
                            .header("x-callee", header("dapr-callee-app-id"))
                            .header("x-caller-spiffe", header("x-sigil-caller-spiffe-id"))
                            .header("x-seen-hop", header("x-hop"))
                            .header("x-echo-custom", header("x-custom"))
                            .header("x-method", req.method().as_str());
                        let body: http_body_util::combinators::BoxBody<Bytes, hyper::Error> =
                            if path == "/echo" {
                                req.into_body().boxed()
                            } else if let Some(n) = path.strip_prefix("/status/") {
                                return Ok::<_, Infallible>(
                                    resp.status(n.parse::<u16>().unwrap_or(500))
                                        .body(
                                            Full::new(Bytes::from_static(b"status"))
                                                .map_err(|e| match e {})
                                                .boxed(),
                                        )
                                        .unwrap(),
                                );
                            } else {
                                return Ok(resp
                                    .status(404)
                                    .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                                    .unwrap());
                            };
                        Ok(resp.body(body).unwrap())
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    port
}

struct Mesh {
    dir: tempfile::TempDir,
    /// Held so Sentry lives as long as the mesh.
    _sentry: Option<Sentry>,
    sentry_port: u16,
    a: Proc,
    b: Proc,
}

impl Mesh {
    fn sentry_addr(&self) -> String {
        format!("127.0.0.1:{}", self.sentry_port)
    }

    /// Sentry, sidecar `a` (no app) and sidecar `b` in front of `app_port`.
    fn new(app_port: u16, ttl: &str, b_extra: &[&str]) -> Self {
        Self::in_dir(tempfile::tempdir().unwrap(), app_port, ttl, b_extra)
    }

    /// A mesh whose sidecar `b` runs with mutual TLS off; also the Configuration saying so.
    fn with_b_mtls_off(app_port: u16) -> (Self, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let off = mtls_off_config(dir.path());
        let mesh = Self::in_dir(dir, app_port, "1h", &["--config", off.to_str().unwrap()]);
        (mesh, off)
    }

    /// [`Mesh::new`] in `dir`.
    fn in_dir(dir: tempfile::TempDir, app_port: u16, ttl: &str, b_extra: &[&str]) -> Self {
        let sentry_port = free_port();
        let sentry = short_ttl_sentry(dir.path(), sentry_port, ttl);
        Self::around(dir, sentry, sentry_port, app_port, b_extra)
    }

    /// Sidecars `a` and `b` (in front of `app_port`) around a running Sentry, given its first
    /// `ca.crt` as their anchors file.
    fn around(
        dir: tempfile::TempDir,
        sentry: Sentry,
        sentry_port: u16,
        app_port: u16,
        b_extra: &[&str],
    ) -> Self {
        std::fs::copy(
            dir.path().join("creds/ca.crt"),
            dir.path().join("anchors.pem"),
        )
        .unwrap();
        let (ia, ib) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("names.yaml"),
            format!("a: 127.0.0.1:{ia}\nb: 127.0.0.1:{ib}\n"),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{sentry_port}");
        let a = sidecar("a", &addr, dir.path(), ia, &[]);
        let mut extra = vec!["--app-port".to_owned(), app_port.to_string()];
        extra.extend(b_extra.iter().map(|s| (*s).to_owned()));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let b = sidecar("b", &addr, dir.path(), ib, &extra);
        let mesh = Self {
            dir,
            _sentry: Some(sentry),
            sentry_port,
            a,
            b,
        };
        for p in [&mesh.a, &mesh.b] {
            wait_ready(&p.field("http="));
        }
        mesh
    }
}

/// Waits (15 s at most) until the sidecar serving `http` is ready.
fn wait_ready(http: &str) {
    wait_until("the sidecar's readiness", Duration::from_secs(15), || {
        health(http) == 204
    });
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET `url`, without a body, through `c`.
async fn get(c: &Client, url: String) -> hyper::Response<Incoming> {
    c.request(hyper::Request::get(url).body(empty()).unwrap())
        .await
        .unwrap()
}

fn empty() -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_passes_everything_through_and_streams_50_mb() {
    let app = echo_app().await;
    let mesh = Mesh::new(app, "1h", &[]);
    let a = mesh.a.field("http=");
    let c = client();

    // Status, headers, method pass through; the caller's app ID reaches the app.
    let req = hyper::Request::builder()
        .method("PUT")
        .uri(format!("http://{a}/v1.0/invoke/b/method/status/418"))
        .header("x-custom", "kept")
        .body(empty())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-method"], "PUT");
    assert_eq!(resp.headers()["x-echo-custom"], "kept");
    assert_eq!(resp.headers()["x-caller"], "a");

    // 50 MB, generated as it is sent, echoed back as it arrives, checked as it is read.
    const TOTAL: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let chunks = (0..TOTAL / CHUNK).map(|i| {
        let fill = u8::try_from(i % 251).unwrap();
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![fill; CHUNK])))
    });
    let body = StreamBody::new(futures_stream(chunks)).boxed();
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{a}/v1.0/invoke/b/method/echo"))
        .body(body)
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut got, mut ok) = (0usize, true);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            for (k, byte) in data.iter().enumerate() {
                let expect = u8::try_from(((got + k) / CHUNK) % 251).unwrap();
                ok &= *byte == expect;
            }
            got += data.len();
        }
    }
    assert_eq!(got, TOTAL);
    assert!(ok, "the echoed bytes differ");
    // Streamed, not buffered: neither sidecar ever held the body (50 MB) in memory.
    for p in [&mesh.a, &mesh.b] {
        let rss = peak_rss_mb(p.child.id());
        assert!(
            rss < 45.0,
            "sidecar peak RSS {rss:.1} MB: the body was buffered"
        );
    }

    // Dapr-style errors: an unknown app.
    let resp = get(&c, format!("http://{a}/v1.0/invoke/nobody/method/x")).await;
    assert_eq!(resp.status(), 404);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["errorCode"], "ERR_DIRECT_INVOKE");
    drop(mesh);
}

/// A Dapr Configuration with `spec.mtls.enabled: false`, written in `dir`.
fn mtls_off_config(dir: &std::path::Path) -> std::path::PathBuf {
    let off = dir.join("off.yaml");
    std::fs::write(
        &off,
        "kind: Configuration\nspec:\n  mtls:\n    enabled: false\n",
    )
    .unwrap();
    off
}

/// A stream from an iterator (no extra crate).
fn futures_stream<I: Iterator + Unpin>(it: I) -> impl tokio_stream::Stream<Item = I::Item> {
    tokio_stream::iter(it)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_unreachable_or_without_mtls_gives_a_clear_error_not_a_hang() {
    let app = echo_app().await;
    // b runs with mutual TLS off: a (on) cannot talk to it, and says why.
    let (mesh, _) = Mesh::with_b_mtls_off(app);
    let a = mesh.a.field("http=");
    let c = client();
    let started = Instant::now();
    let resp = get(&c, format!("http://{a}/v1.0/invoke/b/method/status/200")).await;
    assert_eq!(resp.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(10));
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        body.contains("ERR_DIRECT_INVOKE") && body.contains("b at"),
        "{body}"
    );
    // A peer that is not there at all.
    std::fs::write(
        mesh.dir.path().join("names.yaml"),
        format!("b: 127.0.0.1:{}\n", free_port()),
    )
    .unwrap();
    let resp = get(&c, format!("http://{a}/v1.0/invoke/b/method/x")).await;
    assert_eq!(resp.status(), 502);
}

/// A workload certificate from the mesh's issuer, with any ID and validity: key and leaf PEM.
fn mint(dir: &Path, id: &str, not_before: SystemTime, not_after: SystemTime) -> (PathBuf, PathBuf) {
    let paths = StorePaths::in_dir(&dir.join("creds"));
    let creds = store::load(&paths, SystemTime::now(), common::SENTRY_ID).unwrap();
    let key = P256Key::generate().unwrap();
    let leaf = sigil_host::ca::x509::issue(
        sigil_host::ca::x509::Profile::Workload {
            spiffe_id: id,
            dns: &[],
        },
        PublicKey::EcP256(key.public_point()),
        not_before,
        not_after,
        sigil_host::ca::x509::SignedBy::Issuer(creds.signer()),
    )
    .unwrap();
    let name = id.rsplit('/').next().unwrap();
    let (k, c) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    std::fs::write(&k, key.to_pem().as_bytes()).unwrap();
    std::fs::write(
        &c,
        sigil_host::pki::to_pem(sigil_core::pem::Label::Certificate, &leaf),
    )
    .unwrap();
    (k, c)
}

/// [`mint`] valid from an hour ago to an hour from now.
fn mint_valid(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    let (now, hour) = (SystemTime::now(), Duration::from_secs(3600));
    mint(dir, id, now - hour, now + hour)
}

/// One HTTP request over `openssl s_client` with an optional client certificate; the output.
fn s_client(addr: &str, cert: Option<(&Path, &Path)>) -> String {
    s_client_request(
        addr,
        cert,
        "GET /status/200 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
}

/// `request` over `openssl s_client` with an optional client certificate; the output.
fn s_client_request(addr: &str, cert: Option<(&Path, &Path)>, request: &str) -> String {
    let args: Vec<&std::ffi::OsStr> = cert.map_or_else(Vec::new, |(key, crt)| {
        vec![
            "-key".as_ref(),
            key.as_os_str(),
            "-cert".as_ref(),
            crt.as_os_str(),
        ]
    });
    common::s_client(addr, &args, request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_refusals_and_acceptance() {
    let app = echo_app().await;
    let allowed = "spiffe://public/ns/default/friend";
    let mesh = Mesh::new(app, "1h", &["--allow-spiffe-id", allowed]);
    let b = mesh.b.field("internal=");
    let dir = mesh.dir.path();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);

    // Accepted: a valid certificate for an allowed ID, leaf only (as embedded-tls sends).
    let (k, c) = mint_valid(dir, allowed);
    let ok = s_client(&b, Some((&k, &c)));
    assert!(
        ok.starts_with("HTTP/1.1 200"),
        "valid certificate refused: {ok:?}"
    );
    // Refused: no certificate.
    assert!(!s_client(&b, None).contains("HTTP/1.1"));
    // Refused: a certificate from a foreign root.
    let foreign = tempfile::tempdir().unwrap();
    store::load_or_generate(
        &StorePaths::in_dir(&foreign.path().join("creds")),
        "localhost",
        common::SENTRY_ID,
        Duration::ZERO,
        sigil_host::ca::Generation::default(),
        store::Rotation::Manual,
        now,
    )
    .unwrap();
    let (k, c) = mint_valid(foreign.path(), allowed);
    assert!(!s_client(&b, Some((&k, &c))).contains("HTTP/1.1"));
    // Refused: expired.
    let (k, c) = mint(dir, allowed, now - 3 * hour, now - 2 * hour);
    assert!(!s_client(&b, Some((&k, &c))).contains("HTTP/1.1"));
    // Refused: valid, but not on the allow-list.
    let (k, c) = mint_valid(dir, "spiffe://public/ns/default/stranger");
    assert!(!s_client(&b, Some((&k, &c))).contains("HTTP/1.1"));
}

/// The app can tell callers apart: Dapr's caller headers come from the handshake (a caller
/// with the same app ID in another namespace or trust domain is not `checkout` of `default`),
/// forged ones are replaced, and `--allow-trust-domain` refuses other trust domains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_headers_come_from_the_handshake_and_trust_domains_can_be_restricted() {
    let app = echo_app().await;
    let mesh = Mesh::new(app, "1h", &["--allow-trust-domain", "public"]);
    let b = mesh.b.field("internal=");
    let dir = mesh.dir.path();
    let forged = "GET /status/200 HTTP/1.1\r\nHost: b\r\n\
        dapr-caller-app-id: admin\r\ndapr-caller-namespace: default\r\n\
        dapr-callee-app-id: other\r\n\
        x-sigil-caller-spiffe-id: spiffe://public/ns/default/admin\r\n\
        Connection: close, x-hop\r\nx-hop: smuggled\r\n\r\n";
    let header = |out: &str, name: &str| {
        out.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(": "))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_default()
    };

    // Another namespace, the same app ID: the app sees the namespace the certificate proves.
    let (k, c) = mint_valid(dir, "spiffe://public/ns/attacker-ns/checkout");
    let out = s_client_request(&b, Some((&k, &c)), forged);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert_eq!(header(&out, "x-caller"), "checkout");
    assert_eq!(header(&out, "x-caller-namespace"), "attacker-ns");
    assert_eq!(header(&out, "x-callee"), "b");
    assert_eq!(
        header(&out, "x-caller-spiffe"),
        "spiffe://public/ns/attacker-ns/checkout"
    );
    // A header the caller named in Connection is not forwarded.
    assert_eq!(header(&out, "x-seen-hop"), "");

    // Another trust domain: refused by --allow-trust-domain public.
    let (k, c) = mint_valid(dir, "spiffe://evil.org/ns/default/checkout");
    let out = s_client_request(&b, Some((&k, &c)), forged);
    assert!(!out.contains("HTTP/1.1"), "{out:?}");

    // Through the caller's sidecar: the caller's own IDs, whatever the app claims.
    let http = mesh.a.field("http=");
    let req = hyper::Request::get(format!("http://{http}/v1.0/invoke/b/method/status/200"))
        .header("dapr-caller-app-id", "admin")
        .header("dapr-caller-namespace", "kube-system")
        .header("connection", "x-hop")
        .header("x-hop", "smuggled")
        .body(empty())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = |n: &str| resp.headers()[n].to_str().unwrap().to_owned();
    assert_eq!(h("x-caller"), "a");
    assert_eq!(h("x-caller-namespace"), "default");
    assert_eq!(h("x-callee"), "b");
    assert_eq!(h("x-caller-spiffe"), "spiffe://public/ns/default/a");
    assert_eq!(h("x-seen-hop"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_port_is_loopback_only() {
    let app = echo_app().await;
    let mesh = Mesh::new(app, "1h", &[]);
    let http = mesh.a.field("http=");
    assert!(http.starts_with("127.0.0.1:"), "{http}");
    let port = http.rsplit(':').next().unwrap();
    // Every non-loopback address of this machine refuses the port.
    let out = Command::new("hostname").arg("-I").output();
    let addrs: Vec<String> = out
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for ip in addrs
        .iter()
        .filter(|a| !a.starts_with("127.") && !a.contains(':'))
    {
        let target = format!("{ip}:{port}");
        assert!(
            std::net::TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(2))
                .is_err(),
            "the app-facing port answers on {target}"
        );
    }
    let _ = mesh.sentry_addr();
}

/// Calls a → b in the background until stopped.
struct Calls {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Calls {
    /// Starts calling b through the sidecar serving HTTP at `a`.
    fn start(a: String) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = call_stream(a, stop.clone());
        Self { stop, task }
    }

    /// Stops calling; asserts that no call failed and returns how many succeeded.
    async fn stop_without_failures(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = self.task.await.unwrap();
        common::assert_no_failed_calls(ok, &failed);
        ok
    }
}

/// Calls a → b until `stop`, counting successes and failures (status other than 200).
fn call_stream(
    a: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let c = client();
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let req = hyper::Request::get(format!("http://{a}/v1.0/invoke/b/method/status/200"))
                .body(empty())
                .unwrap();
            match c.request(req).await {
                Ok(r) if r.status() == 200 => {
                    let _ = r.into_body().collect().await;
                    ok += 1;
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    failed.push(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    })
}

fn rotations(p: &Proc) -> u64 {
    common::metric(
        &p.field("metrics="),
        "dapr_runtime_mtls_workload_cert_rotated_total",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_calls_across_rotations_and_a_root_replacement_never_fail() {
    let app = echo_app().await;
    let mesh = Mesh::new(app, "4s", &[]);
    let dir = mesh.dir.path().to_owned();
    let calls = Calls::start(mesh.a.field("http="));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;

    // The root replacement: a new root is added everywhere first...
    let (_, fresh) = sigil_host::ca::Credentials::generate(
        "localhost",
        common::SENTRY_ID,
        SystemTime::now(),
        Duration::ZERO,
    )
    .unwrap();
    let old = std::fs::read_to_string(dir.join("anchors.pem")).unwrap();
    std::fs::write(dir.join("anchors.pem"), format!("{old}{}", fresh.ca)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ...then Sentry issues from it (both roots published)...
    let creds = dir.join("creds");
    std::fs::write(creds.join("issuer.key"), fresh.key.as_bytes()).unwrap();
    std::fs::write(creds.join("issuer.crt"), &fresh.issuer).unwrap();
    std::fs::write(creds.join("ca.crt"), format!("{}{old}", fresh.ca)).unwrap();
    // ...the sidecars renew under it...
    let (ra, rb) = (rotations(&mesh.a), rotations(&mesh.b));
    let deadline = Instant::now() + Duration::from_secs(20);
    while rotations(&mesh.a) < ra + 3 || rotations(&mesh.b) < rb + 3 {
        assert!(Instant::now() < deadline, "no renewal under the new root");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and the old root is removed.
    std::fs::write(dir.join("anchors.pem"), &fresh.ca).unwrap();
    std::fs::write(creds.join("ca.crt"), &fresh.ca).unwrap();

    let rest = Duration::from_secs(62).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let ok = calls.stop_without_failures().await;
    assert!(ok > 1000, "only {ok} calls");
    for p in [&mesh.a, &mesh.b] {
        assert!(rotations(p) >= 10, "{} rotations", rotations(p));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_working_while_sentry_is_down_and_renewal_resumes() {
    let app = echo_app().await;
    let mut mesh = Mesh::new(app, "12s", &[]);
    let calls = Calls::start(mesh.a.field("http="));
    tokio::time::sleep(Duration::from_secs(1)).await;
    mesh._sentry = None; // Sentry stopped
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = rotations(&mesh.a);
    mesh._sentry = Some(short_ttl_sentry(mesh.dir.path(), mesh.sentry_port, "12s"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while rotations(&mesh.a) <= before {
        assert!(Instant::now() < deadline, "renewal did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ok = calls.stop_without_failures().await;
    assert!(ok > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_when_mtls_is_off_on_both_sides_and_cors_as_configured() {
    let app = echo_app().await;
    let (mesh, off) = Mesh::with_b_mtls_off(app);
    // A caller sidecar with mTLS off too, and a CORS list.
    let dir = mesh.dir.path();
    let sentry = format!("127.0.0.1:{}", mesh.sentry_port);
    let a_off = sidecar(
        "a2",
        &sentry,
        dir,
        free_port(),
        &[
            "--config",
            off.to_str().unwrap(),
            "--allowed-origins",
            "https://shop.example",
        ],
    );
    assert!(a_off.line.contains("mtls=off"), "{}", a_off.line);
    let http = a_off.field("http=");
    wait_ready(&http);
    let c = client();
    let call = |origin: Option<&'static str>| {
        let mut b = hyper::Request::get(format!("http://{http}/v1.0/invoke/b/method/status/200"));
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        c.request(b.body(empty()).unwrap())
    };
    // Plain TCP between the two sidecars works.
    let resp = call(Some("https://shop.example")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    // An origin not on the list gets no CORS header.
    let resp = call(Some("https://evil.example")).await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Without --allowed-origins (sidecar a of the mesh): no CORS header at all.
    let b = hyper::Request::get(format!("http://{}/v1.0/healthz", mesh.a.field("http=")))
        .header("origin", "https://shop.example")
        .body(empty())
        .unwrap();
    let resp = c.request(b).await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

/// Sentry with root and issuer TTLs of 60 s (generated, so rotated automatically), workload
/// certificates of 5 s and no skew, on `port`, its credentials in `dir`/creds; `crash_at`
/// makes it abort (as kill -9) at that point of a rotation step.
fn rotating_sentry_command(dir: &Path, port: u16, crash_at: Option<&str>) -> Command {
    let mut cmd = common::short_ttl_sentry_command(
        dir,
        port,
        "5s",
        &["--root-ttl", "60s", "--issuer-ttl", "60s"],
    );
    if let Some(p) = crash_at {
        cmd.env("SIGIL_CRASH_AT", p);
    }
    cmd
}

fn sentry_metric(s: &Sentry, name: &str) -> u64 {
    common::metric(&s.metrics, name)
}

fn activations(s: &Sentry) -> u64 {
    sentry_metric(s, "sigil_sentry_ca_rotation_steps_total{step=\"activate\"}")
}

/// Issue 14, the Done-means: `sigil sentry --root-ttl 60s --issuer-ttl 60s` with workload
/// certificates of 5 s; two sidecars given only the first root call each other for 200 s
/// while Sentry rotates its root and issuer by itself, again and again; no call fails, nobody
/// restarts, and every sidecar ends up trusting roots it was never given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_seconds_of_calls_across_automatic_root_rotations_never_fail() {
    let app = echo_app().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sentry = common::start(rotating_sentry_command(dir.path(), port, None)).unwrap();
    let first_root = common::read_certs(&dir.path().join("creds/ca.crt"));
    let mesh = Mesh::around(dir, sentry, port, app, &[]);
    let calls = Calls::start(mesh.a.field("http="));
    tokio::time::sleep(Duration::from_secs(200)).await;
    let ok = calls.stop_without_failures().await;
    let sentry = mesh._sentry.as_ref().unwrap();
    let done = activations(sentry);
    assert!(done >= 2, "only {done} automatic activations in 200 s");
    assert!(
        sentry_metric(
            sentry,
            "sigil_sentry_ca_rotation_steps_total{step=\"retire\"}"
        ) >= 2,
        "old roots not retired"
    );
    assert_eq!(
        sentry_metric(sentry, "sigil_sentry_ca_rotation_failures_total"),
        0
    );
    let roots = common::read_certs(&mesh.dir.path().join("creds/ca.crt"));
    assert!(
        roots.iter().all(|r| !first_root.contains(r)),
        "the first root is still published"
    );
    for p in [&mesh.a, &mesh.b] {
        let text = common::http_get(&p.field("metrics="), "/metrics");
        assert!(!text.contains("fail_total{"), "a renewal failed: {text}");
    }
    println!("automatic rotation: {ok} calls, {done} activations, 0 failed");
    assert!(ok > 1000, "only {ok} calls");
}

/// Issue 14: Sentry killed (abort, as kill -9) at each point of each rotation step in turn,
/// restarted at once on the same directory: each start finishes or undoes the step, the
/// rotation goes on, and the sidecars' calls never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_killed_at_every_rotation_step_recovers_and_calls_never_fail() {
    let app = echo_app().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let points = [
        "prepare:staged",
        "prepare:committed",
        "activate:committed",
        "activate:key",
        "activate:certificate",
        "retire:published",
    ];
    let sentry = common::start(rotating_sentry_command(dir.path(), port, Some(points[0]))).unwrap();
    let mut mesh = Mesh::around(dir, sentry, port, app, &[]);
    let calls = Calls::start(mesh.a.field("http="));
    for (i, point) in points.iter().enumerate() {
        let sentry = mesh._sentry.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = sentry.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "Sentry never reached {point}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!status.success(), "{point}: {status}");
        wait_until("the abort line", Duration::from_secs(5), || {
            sentry
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&format!("SIGIL_CRASH_AT={point}")))
        });
        // Restarted at once: the next point, or none after the last.
        let next = points.get(i + 1).copied();
        mesh._sentry = None;
        mesh._sentry = Some(
            common::start(rotating_sentry_command(mesh.dir.path(), port, next))
                .unwrap_or_else(|e| panic!("restart after {point}: {e}")),
        );
        println!("killed at {point}, restarted");
    }
    // After the last crash, the rotation goes on by itself.
    let sentry = mesh._sentry.as_ref().unwrap();
    wait_until(
        "an activation after the crashes",
        Duration::from_secs(60),
        || activations(sentry) >= 1,
    );
    let creds = mesh.dir.path().join("creds");
    for leftover in [".sigil-activating", ".sigil-new"] {
        assert!(!creds.join(leftover).exists(), "{leftover} left behind");
    }
    let ok = calls.stop_without_failures().await;
    assert!(ok > 100, "only {ok} calls");
    let inspect = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["ca", "inspect", "--workload-ttl", "5s", "--skew", "0s"])
        .arg("--issuer-credentials")
        .arg(&creds)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("state: valid"), "{text}");
    assert!(text.contains("rotation: automatic"), "{text}");
    assert!(text.contains("next: "), "{text}");
}

/// Issue 14: credentials the user brought (`sigil ca init`, no automatic rotation) rotated by
/// hand with `sigil ca rotate prepare | activate | retire` under a running Sentry, while two
/// sidecars given only the first root call each other: no call fails, and the steps that
/// would break a holder are refused until they are safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_across_a_root_rotation_by_hand_never_fail() {
    let app = echo_app().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let ca = |args: &[&str]| common::sigil_ca(&creds, args);
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(ca(&["init"]));
    let first_root = common::read_certs(&creds.join("ca.crt"));
    let port = free_port();
    let sentry = common::start(common::short_ttl_sentry_command(
        dir.path(),
        port,
        "4s",
        &[],
    ))
    .unwrap();
    let mesh = Mesh::around(dir, sentry, port, app, &[]);
    let calls = Calls::start(mesh.a.field("http="));
    let times = ["--workload-ttl", "4s", "--skew", "0s"];
    let step = |s: &'static str| [&["rotate", s][..], &times[..]].concat();
    // Said with an hour's TTL, a step right after the one it waits for is surely too early
    // (with 4 s, a slow machine could take that long between two commands).
    let too_early = |s: &'static str| {
        let out = ca(&["rotate", s, "--workload-ttl", "1h", "--skew", "0s"]);
        assert_eq!(out.status.code(), Some(2), "{s}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("too early"),
            "{s}"
        );
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    ok(ca(&step("prepare")));
    // Too early: a holder may not have the new root yet.
    too_early("activate");
    tokio::time::sleep(Duration::from_secs(5)).await;
    ok(ca(&step("activate")));
    too_early("retire");
    tokio::time::sleep(Duration::from_secs(5)).await;
    ok(ca(&step("retire")));
    let roots = common::read_certs(&mesh.dir.path().join("creds/ca.crt"));
    assert!(
        roots.iter().all(|r| !first_root.contains(r)),
        "the first root stayed"
    );
    let shown = ok(ca(&[&["inspect"][..], &times[..]].concat()));
    assert!(shown.contains("rotation: by hand"), "{shown}");
    // Both sidecars renew under the new root and keep calling.
    let (ra, rb) = (rotations(&mesh.a), rotations(&mesh.b));
    wait_until(
        "renewals after the retirement",
        Duration::from_secs(20),
        || rotations(&mesh.a) >= ra + 2 && rotations(&mesh.b) >= rb + 2,
    );
    let n = calls.stop_without_failures().await;
    assert!(n > 100, "only {n} calls");
}

/// One HTTP/1.1 request to `addr` (a sidecar's app API); the status and the body.
fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Issue 16's Done-means over real mutual TLS: the callee's sidecar (`b`) runs with
/// `defaultAction: deny` and one policy allowing app `a` to `GET /status/200`. `a`'s GET
/// answers 200, its POST 403 with Dapr's error body, another app's GET 403, an encoding that
/// would reach a denied path past the allowed prefix 403, and a spelling of the allowed path
/// reaches the app as the path that was checked. The policy file reloads at run time; an
/// invalid one is refused and the policy in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_policies_allow_deny_and_reload() {
    let app = echo_app().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("acl.yaml");
    let write_policy = |verbs: &str, action: &str| {
        std::fs::write(
            &policy,
            format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n  \
                 accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    \
                 - appId: a\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      \
                 operations:\n      - name: /status/200\n        httpVerb: [{verbs}]\n        action: {action}\n"
            ),
        )
        .unwrap();
    };
    write_policy("'GET'", "allow");
    let mesh = Mesh::in_dir(dir, app, "1h", &["--config", policy.to_str().unwrap()]);
    let a = mesh.a.field("http=");
    let ok = request(&a, "GET", "/v1.0/invoke/b/method/status/200");
    assert_eq!(ok.0, 200, "{ok:?}");
    let post = request(&a, "POST", "/v1.0/invoke/b/method/status/200");
    assert_eq!(post.0, 403, "{post:?}");
    assert!(
        post.1.contains("\"errorCode\":\"ERR_DIRECT_INVOKE\"")
            && post.1.contains("code = PermissionDenied")
            && post.1.contains("access control policy has denied access to id: spiffe://public/ns/default/a operation: status/200 verb: POST"),
        "{post:?}"
    );
    assert_eq!(
        request(&a, "GET", "/v1.0/invoke/b/method/status/201").0,
        403
    );
    // Past the allowed prefix by an encoded `/..`: checked (and delivered) as /status/201.
    assert_eq!(
        request(&a, "GET", "/v1.0/invoke/b/method/status/200%2F..%2F201").0,
        403
    );
    // Other spellings of the allowed path: allowed, and the app sees /status/200 (it answers
    // with the status the path names).
    assert_eq!(
        request(&a, "GET", "/v1.0/invoke/b/method/status/.//201/../200").0,
        200
    );
    assert_eq!(
        request(&a, "GET", "/v1.0/invoke/b/method/status/201%2F..%2F200").0,
        200
    );
    // Methods as Dapr makes them: a lower-case `get` is GET (and reaches the app as GET); a
    // method Dapr does not define is POST, which the policy denies.
    assert_eq!(
        request(&a, "get", "/v1.0/invoke/b/method/status/200").0,
        200
    );
    assert_eq!(
        request(&a, "FETCH", "/v1.0/invoke/b/method/status/200").0,
        403
    );
    // Another app, same trust domain and namespace: no policy, the global deny.
    let other = sidecar(
        "other",
        &mesh.sentry_addr(),
        mesh.dir.path(),
        free_port(),
        &[],
    );
    wait_ready(&other.field("http="));
    assert_eq!(
        request(
            &other.field("http="),
            "GET",
            "/v1.0/invoke/b/method/status/200"
        )
        .0,
        403
    );
    // Reloaded at run time: POST allowed too.
    std::thread::sleep(Duration::from_millis(50));
    write_policy("'GET', 'POST'", "allow");
    wait_until("the reloaded policy", Duration::from_secs(10), || {
        request(&a, "POST", "/v1.0/invoke/b/method/status/200").0 == 200
    });
    // An invalid policy (an action that is neither allow nor deny) is refused; the one in
    // force stays.
    std::thread::sleep(Duration::from_millis(50));
    write_policy("'GET', 'POST'", "alow");
    // Several calls while the file is fresh: refused once, not at every call.
    for _ in 0..3 {
        assert_eq!(
            request(&a, "POST", "/v1.0/invoke/b/method/status/200").0,
            200
        );
    }
    let metrics = common::http_get(&mesh.b.field("metrics="), "/metrics");
    assert!(
        metrics.contains("sigil_runtime_acl_reload_refused_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "dapr_runtime_acl_app_policy_action_blocked_total{app_id=\"a\",trustDomain=\"public\",namespace=\"default\"}"
        ) && metrics.contains("dapr_runtime_acl_global_policy_action_blocked_total{app_id=\"other\""),
        "{metrics}"
    );
}

/// The grpcio app behind `b` (`tests/interop/grpc_invoke.py serve`): its port, and the file in
/// which it records the calls it saw cancelled. Killed when dropped.
struct GrpcApp {
    child: std::process::Child,
    port: u16,
    events: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for GrpcApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn interop_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/interop/grpc_invoke.py")
}

fn grpc_app(python: &Path) -> GrpcApp {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    let mut child = Command::new(python)
        .arg(interop_script())
        .args(["serve", "--events"])
        .arg(&events)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let port = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("app: listening port=")?.parse().ok())
        .expect("the gRPC app's ready line");
    GrpcApp {
        child,
        port,
        events,
        _dir: dir,
    }
}

/// Runs the grpcio client's `checks` against sidecar `a`'s gRPC port, calling app `b`; every
/// check must print `ok`.
fn grpc_checks(python: &Path, mesh: &Mesh, events: &Path, checks: &[&str], seconds: u64) {
    let out = Command::new(python)
        .arg(interop_script())
        .args(["client", "--app", "b", "--caller", "a", "--target"])
        .arg(mesh.a.field("grpc="))
        .arg("--events")
        .arg(events)
        .args(["--checks", &checks.join(",")])
        .args(["--seconds", &seconds.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "grpc_invoke.py client failed: {stdout}"
    );
    for c in checks {
        assert!(
            stdout.lines().any(|l| l == format!("ok {c}")),
            "no `ok {c}` line"
        );
    }
}

/// Issue 16, gRPC invocation in Dapr's proxy form with an independent client and server
/// (grpcio) on both ends: unary, server, client and bidirectional streams; metadata and
/// trailers, status codes and messages as the app sent them; 1 MiB messages; a deadline and a
/// cancellation that reach the app; Dapr's answers without `dapr-app-id` or for an unknown app.
#[test]
fn grpc_invocation_through_two_sidecars_with_grpcio_on_both_ends() {
    let python = common::python();
    let app = grpc_app(&python);
    let mesh = Mesh::new(app.port, "1h", &["--app-protocol", "grpc"]);
    grpc_checks(
        &python,
        &mesh,
        &app.events,
        &[
            "unary",
            "callee_metadata",
            "large",
            "server_stream",
            "client_stream",
            "bidi",
            "status",
            "deadline",
            "cancel",
            "unimplemented_method",
            "no_app_id",
            "unknown_app",
        ],
        0,
    );
}

/// The access-control policy on gRPC invocation (the operation is the full method name,
/// case-sensitive, no verb): with `defaultAction: deny`, the caller's policy allowing
/// `/sigil.test.Echo/*` and denying `/sigil.test.Echo/Secret`, `Unary` reaches the app,
/// `Secret` is `PERMISSION_DENIED` with Dapr's message, as are `/sigil.test.echo/unary` and
/// `/sigil.test.Echo/x/../Secret`.
#[test]
fn grpc_invocation_under_access_control() {
    let python = common::python();
    let app = grpc_app(&python);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("acl.yaml");
    std::fs::write(
        &policy,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n  \
         accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    \
         - appId: a\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      \
         operations:\n      - name: /sigil.test.Echo/Secret\n        action: deny\n      \
         - name: /sigil.test.Echo/*\n        action: allow\n",
    )
    .unwrap();
    let mesh = Mesh::in_dir(
        dir,
        app.port,
        "1h",
        &[
            "--config",
            policy.to_str().unwrap(),
            "--app-protocol",
            "grpc",
        ],
    );
    grpc_checks(&python, &mesh, &app.events, &["acl"], 0);
    let metrics = common::http_get(&mesh.b.field("metrics="), "/metrics");
    assert!(
        metrics.contains(
            "dapr_runtime_acl_app_policy_action_blocked_total{app_id=\"a\",trustDomain=\"public\",namespace=\"default\"} 3"
        ),
        "{metrics}"
    );
}

/// One bidirectional gRPC stream stays open, every message answered, while both sidecars
/// renew their identities (4 s certificates) at least twice; a new call after works too.
#[test]
fn grpc_bidirectional_stream_across_identity_rotations() {
    let python = common::python();
    let app = grpc_app(&python);
    let mesh = Mesh::new(app.port, "4s", &["--app-protocol", "grpc"]);
    let (ra, rb) = (rotations(&mesh.a), rotations(&mesh.b));
    grpc_checks(&python, &mesh, &app.events, &["rotation"], 12);
    let (ra2, rb2) = (rotations(&mesh.a), rotations(&mesh.b));
    assert!(
        ra2 >= ra + 2 && rb2 >= rb + 2,
        "rotations during the stream: a {ra} -> {ra2}, b {rb} -> {rb2}"
    );
}

/// gRPC invocation reaches only an app declared `--app-protocol grpc`: to an HTTP app (the
/// default) the callee's sidecar answers `UNIMPLEMENTED`, so an HTTP request is never decided
/// by gRPC's access-control rules; what is not a gRPC call (a GET, another content type) is
/// refused with HTTP 415 on the gRPC port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_invocation_to_an_http_app_and_non_grpc_requests_are_refused() {
    let python = common::python();
    let app = echo_app().await;
    let mesh = Mesh::new(app, "1h", &[]);
    let events = mesh.dir.path().join("events");
    grpc_checks(&python, &mesh, &events, &["http_app"], 0);
    // A GET and a JSON POST on the gRPC port: 415 (HTTP/2 prior knowledge).
    let tcp = tokio::net::TcpStream::connect(mesh.a.field("grpc="))
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (method, content_type) in [("GET", "application/grpc"), ("POST", "application/json")] {
        let req = hyper::Request::builder()
            .method(method)
            .uri("http://b/admin/users")
            .header("content-type", content_type)
            .header("dapr-app-id", "b")
            .body(empty())
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 415, "{method} {content_type}");
    }
}
