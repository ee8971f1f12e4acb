//! Sidecar benchmark, in one run on this machine:
//! 1. invocation latency (p50/p99, one client, sequential) and throughput (N clients) through
//!    two sidecars (`sigil sidecar` processes, mTLS between them) against the same app called
//!    directly;
//! 2. full mutual-TLS handshakes per second of the sidecar's listener configuration (client
//!    certificate checked by the core's path validation and SPIFFE authorization) against a
//!    plain rustls server with the stock webpki client verifier, same certificates, interleaved;
//! 3. the sidecars' peak RSS;
//! 4. what access control costs: the same calls to a third sidecar (`c`, same app) whose
//!    Configuration holds 100 policies of 10 operations each (`defaultAction: deny`, the caller's
//!    policy allowing the path among its ten), interleaved with calls to `b` (no policy);
//! 5. gRPC invocation latency (p50/p99, one client, sequential unary calls of 1 KB each way,
//!    gRPC framing and `grpc-status` trailers on HTTP/2) through the sidecars' gRPC proxy
//!    (`dapr-app-id: b`) against the same app called directly, interleaved.
//!
//! `cargo build --release -p sigil-host --bin sigil && cargo run --release -p sigil-tests --bin sidecar-load -- [--seconds 5] [--clients 16]`
//! The last lines are `added_p50_ms=<via sidecars - direct>` for HTTP, then
//! `grpc_added_p50_ms=` for gRPC (target for both: at most 0.5).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_core::crypto::PublicKey;
use sigil_host::ca::store::{self, StorePaths};
use sigil_host::ca::Credentials;
use sigil_host::key::P256Key;
use sigil_host::sidecar::identity::{Current, IdentityState};
use sigil_tests::load::{arg, sigil_binary};
use sigil_tests::peak_rss_mb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const SENTRY_ID: &str = "spiffe://localhost/ns/default/dapr-sentry";

struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(sigil: &std::path::Path, args: &[String], ready: &str) -> Proc {
    let mut child = Command::new(sigil)
        .args(args)
        .env_remove("NAMESPACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sigil");
    let out = child.stdout.take().expect("stdout");
    let line = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains(ready))
        .expect("ready line");
    Proc(child, line)
}

fn field(line: &str, k: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(k))
        .expect("field")
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// The app, on one port: HTTP/1.1 answers "ok"; gRPC (HTTP/2) echoes the request's message
/// and ends with `grpc-status: 0` in the trailers, as a gRPC server does.
async fn app() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let grpc = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                        if !grpc {
                            let ok: AppBody = Full::new(Bytes::from_static(b"ok"))
                                .map_err(|e| match e {})
                                .boxed();
                            return Ok::<_, hyper::Error>(hyper::Response::new(ok));
                        }
                        let message = req.into_body().collect().await?.to_bytes();
                        let mut trailers = hyper::HeaderMap::new();
                        trailers
                            .insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                        let body: AppBody = Full::new(message)
                            .map_err(|e| match e {})
                            .with_trailers(async move { Some(Ok(trailers)) })
                            .boxed();
                        let mut resp = hyper::Response::new(body);
                        resp.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/grpc"),
                        );
                        Ok(resp)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
            });
        }
    });
    port
}

/// Sequential gRPC unary calls of 1 KB over one HTTP/2 connection to `addr` for `d`, naming
/// app `b` in `dapr-app-id` (the app ignores it): sorted latencies. Each answer must carry
/// the message back and `grpc-status: 0` in its trailers.
async fn grpc_latencies(addr: &str, d: Duration) -> Vec<Duration> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let (mut s, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2");
    tokio::spawn(conn);
    let mut message = vec![0u8, 0, 0, 4, 0];
    message.extend(std::iter::repeat_n(b'x', 1024));
    let message = Bytes::from(message);
    let mut out = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        let req = hyper::Request::post(format!("http://{addr}/bench.Echo/Unary"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("dapr-app-id", "b")
            .body(Full::new(message.clone()))
            .expect("req");
        let r = s.send_request(req).await.expect("response");
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.expect("body");
        let status = body
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        assert_eq!(status.as_deref(), Some(&b"0"[..]), "grpc-status");
        assert_eq!(body.to_bytes(), message, "the message back");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// Sequential GETs over one keep-alive connection for `d`: sorted latencies.
async fn latencies(addr: &str, path: &str, d: Duration) -> Vec<Duration> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("http");
    tokio::spawn(conn);
    let mut out = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        if s.ready().await.is_err() {
            break;
        }
        let req = hyper::Request::get(path)
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .expect("req");
        let r = s.send_request(req).await.expect("response");
        assert_eq!(r.status(), 200, "{path}");
        let _ = r.into_body().collect().await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// `clients` keep-alive clients for `d`: requests per second.
async fn throughput(addr: &str, path: &str, clients: usize, d: Duration) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, path) = (addr.to_owned(), path.to_owned());
            tokio::spawn(async move { latencies(&addr, &path, d).await.len() })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.expect("client");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let i = ((v.len().saturating_sub(1)) as f64 * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// A workload identity from `creds`: (chain DER, key PKCS#8).
fn mint(creds: &Credentials, id: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
    let key = P256Key::generate().expect("key");
    let now = SystemTime::now();
    let issued = creds
        .issue_workload(
            PublicKey::EcP256(key.public_point()),
            id,
            &[],
            now,
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .expect("issue");
    let mut chain = vec![issued.der];
    chain.extend(creds.issuer_chain().iter().cloned());
    (chain, key.pkcs8_der().to_vec())
}

/// Full handshakes per second against `addr` for `d` (client certificate sent, server checked
/// by nobody: the client side costs the same for both servers).
async fn handshakes(addr: &str, client: Arc<rustls::ClientConfig>, d: Duration) -> f64 {
    let connector = tokio_rustls::TlsConnector::from(client);
    let end = Instant::now() + d;
    let mut n = 0u64;
    let start = Instant::now();
    while Instant::now() < end {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("bench").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        // The server writes one byte once it has verified us.
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.expect("server byte");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn tls_server(config: rustls::ServerConfig) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"k").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = Duration::from_secs(arg(&args, "--seconds", 5));
    let clients = usize::try_from(arg(&args, "--clients", 16)).unwrap_or(16);
    let sigil = sigil_binary();
    let dir = std::env::temp_dir().join(format!("sigil-sidecar-load-{}", std::process::id()));
    let creds_dir = dir.join("creds");
    let s = |v: &str| v.to_owned();

    // Sentry, two sidecars, the app.
    let sentry = spawn(
        &sigil,
        &[
            s("sentry"),
            s("--issuer-credentials"),
            creds_dir.display().to_string(),
            s("--port"),
            s("0"),
            s("--listen-address"),
            s("127.0.0.1"),
            s("--healthz-port"),
            s("0"),
            s("--healthz-listen-address"),
            s("127.0.0.1"),
            s("--enable-metrics"),
            s("false"),
            s("--log-level"),
            s("error"),
        ],
        "listening",
    );
    let sentry_addr = field(&sentry.1, "grpc=");
    let anchors = creds_dir.join("ca.crt");
    let app_port = app().await;
    let (ia, ib, ic) = (free_port(), free_port(), free_port());
    let names = dir.join("names.yaml");
    std::fs::write(
        &names,
        format!("a: 127.0.0.1:{ia}\nb: 127.0.0.1:{ib}\nc: 127.0.0.1:{ic}\n"),
    )
    .expect("names");
    // 100 policies of 10 operations; the caller `a` is the last, its `/x` the last operation.
    let acl = dir.join("acl.yaml");
    let mut policy = String::from(
        "kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    policies:\n",
    );
    for p in 0..100 {
        let app = if p == 99 {
            "a".to_owned()
        } else {
            format!("app{p}")
        };
        policy.push_str(&format!(
            "    - appId: {app}\n      defaultAction: deny\n      trustDomain: public\n      \
             namespace: default\n      operations:\n"
        ));
        for o in 0..10 {
            let name = if p == 99 && o == 9 {
                "/x".to_owned()
            } else {
                format!("/v{p}/resource{o}/*")
            };
            policy.push_str(&format!(
                "      - name: {name}\n        httpVerb: ['GET', 'POST']\n        action: allow\n"
            ));
        }
    }
    std::fs::write(&acl, policy).expect("acl");
    let sidecar = |id: &str, internal: u16, app: Option<u16>, config: Option<&std::path::Path>| {
        let mut a = vec![
            s("sidecar"),
            s("--app-id"),
            id.to_owned(),
            s("--sentry-address"),
            sentry_addr.clone(),
            s("--trust-anchors-file"),
            anchors.display().to_string(),
            s("--resolution-file"),
            names.display().to_string(),
            s("--dapr-http-port"),
            s("0"),
            s("--dapr-grpc-port"),
            s("0"),
            s("--metrics-port"),
            s("0"),
            s("--dapr-internal-address"),
            s("127.0.0.1"),
            s("--dapr-internal-port"),
            internal.to_string(),
            s("--log-level"),
            s("error"),
        ];
        if let Some(p) = app {
            a.push(s("--app-port"));
            a.push(p.to_string());
        }
        if let Some(c) = config {
            a.push(s("--config"));
            a.push(c.display().to_string());
        }
        spawn(&sigil, &a, "sidecar: app")
    };
    let a = sidecar("a", ia, None, None);
    let b = sidecar("b", ib, Some(app_port), None);
    let c = sidecar("c", ic, Some(app_port), Some(&acl));
    let a_http = field(&a.1, "http=");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = TcpStream::connect(&a_http).await.is_ok()
            && reqwest_like_ok(&a_http, "/v1.0/invoke/b/method/x").await;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the mesh did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `--only handshakes` skips the invocation measurements (for profiling the handshakes).
    let only_handshakes = args
        .windows(2)
        .any(|w| w[0] == "--only" && w[1] == "handshakes");
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    let (mut grpc_through, mut grpc_direct) = (Vec::new(), Vec::new());
    // 1. Latency and throughput, direct and through the sidecars, interleaved.
    let direct_addr = format!("127.0.0.1:{app_port}");
    let via = "/v1.0/invoke/b/method/x";
    if !only_handshakes {
        let _ = latencies(&direct_addr, "/x", Duration::from_millis(500)).await; // warm-up
        let _ = latencies(&a_http, via, Duration::from_millis(500)).await;
        direct = latencies(&direct_addr, "/x", secs).await;
        through = latencies(&a_http, via, secs).await;
        println!(
            "latency, one client: direct p50={:.3}ms p99={:.3}ms | through two sidecars p50={:.3}ms p99={:.3}ms",
            pct(&direct, 0.5), pct(&direct, 0.99), pct(&through, 0.5), pct(&through, 0.99)
        );
        let direct_rps = throughput(&direct_addr, "/x", clients, secs).await;
        let through_rps = throughput(&a_http, via, clients, secs).await;
        println!("throughput, {clients} clients: direct {direct_rps:.0} req/s | through two sidecars {through_rps:.0} req/s");

        // 4. Access control: c (100 policies x 10 operations) against b, interleaved ABBA.
        let with_acl = "/v1.0/invoke/c/method/x";
        let _ = latencies(&a_http, with_acl, Duration::from_millis(500)).await; // warm-up
        let (mut plain, mut guarded) = (Vec::new(), Vec::new());
        for acl_first in [false, true, true, false] {
            let quarter = secs / 4;
            if acl_first {
                guarded.extend(latencies(&a_http, with_acl, quarter).await);
                plain.extend(latencies(&a_http, via, quarter).await);
            } else {
                plain.extend(latencies(&a_http, via, quarter).await);
                guarded.extend(latencies(&a_http, with_acl, quarter).await);
            }
        }
        plain.sort();
        guarded.sort();
        let (p, g) = (pct(&plain, 0.5), pct(&guarded, 0.5));
        println!(
            "access control, 100 policies x 10 operations: p50 without={p:.3}ms with={g:.3}ms \
             p99 without={:.3}ms with={:.3}ms added_p50={:+.1}%",
            pct(&plain, 0.99),
            pct(&guarded, 0.99),
            (g - p) / p * 100.0
        );

        // 5. gRPC invocation: direct and through the sidecars' gRPC proxy, interleaved ABBA.
        let a_grpc = field(&a.1, "grpc=");
        let _ = grpc_latencies(&direct_addr, Duration::from_millis(500)).await; // warm-up
        let _ = grpc_latencies(&a_grpc, Duration::from_millis(500)).await;
        for direct_first in [true, false, false, true] {
            let quarter = secs / 4;
            if direct_first {
                grpc_direct.extend(grpc_latencies(&direct_addr, quarter).await);
                grpc_through.extend(grpc_latencies(&a_grpc, quarter).await);
            } else {
                grpc_through.extend(grpc_latencies(&a_grpc, quarter).await);
                grpc_direct.extend(grpc_latencies(&direct_addr, quarter).await);
            }
        }
        grpc_direct.sort();
        grpc_through.sort();
        println!(
            "gRPC latency, one client, 1 KB unary: direct p50={:.3}ms p99={:.3}ms | through two \
             sidecars p50={:.3}ms p99={:.3}ms",
            pct(&grpc_direct, 0.5),
            pct(&grpc_direct, 0.99),
            pct(&grpc_through, 0.5),
            pct(&grpc_through, 0.99)
        );
    }

    // 2. Handshakes: the sidecar's mTLS listener configuration vs stock rustls + webpki.
    let creds = store::load(
        &StorePaths::in_dir(&creds_dir),
        SystemTime::now(),
        SENTRY_ID,
    )
    .expect("creds");
    let root = creds.anchors().to_vec();
    let (server_chain, server_key) = mint(&creds, "spiffe://public/ns/default/server");
    let (client_chain, client_key) = mint(&creds, "spiffe://public/ns/default/client");
    let provider = sigil_host::rustls_glue::provider();
    let state = Arc::new(IdentityState::fixed(
        Current {
            chain: server_chain.clone(),
            key_pkcs8: server_key.clone().into(),
            spiffe_id: "spiffe://public/ns/default/server".into(),
            not_after: SystemTime::now() + Duration::from_secs(3600),
            generation: 1,
        },
        sigil_host::trust::Anchors::from_ders("bench", root.clone()).expect("anchors"),
    ));
    let ours = tls_server(
        sigil_host::sidecar::mtls::server_config(state, Default::default()).expect("config"),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for r in &root {
        roots.add(CertificateDer::from(r.clone())).expect("root");
    }
    let stock_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let stock_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_client_cert_verifier(stock_verifier)
        .with_single_cert(
            server_chain
                .iter()
                .cloned()
                .map(CertificateDer::from)
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.clone())),
        )
        .expect("stock config");
    let stock = tls_server(stock_config).await;
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider.clone())))
        .with_client_auth_cert(
            client_chain
                .iter()
                .cloned()
                .map(CertificateDer::from)
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key)),
        )
        .expect("client config");
    // Full handshakes only: no session resumption (the stock server sends tickets, ours not).
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    // Interleaved in both orders (ABBA), so warm-up and drift fall on both sides alike.
    let (mut ours_rate, mut stock_rate) = (0.0, 0.0);
    let quarter = secs / 4;
    let _ = handshakes(&ours, client.clone(), Duration::from_millis(300)).await; // warm-up
    let _ = handshakes(&stock, client.clone(), Duration::from_millis(300)).await;
    for first_ours in [true, false, false, true] {
        let (a, b) = if first_ours {
            (&ours, &stock)
        } else {
            (&stock, &ours)
        };
        let ra = handshakes(a, client.clone(), quarter).await / 4.0;
        let rb = handshakes(b, client.clone(), quarter).await / 4.0;
        if first_ours {
            ours_rate += ra;
            stock_rate += rb;
        } else {
            stock_rate += ra;
            ours_rate += rb;
        }
    }
    println!(
        "mTLS handshakes/s (one client, full handshakes): sigil listener {ours_rate:.0} | rustls + webpki {stock_rate:.0} | ratio {:.2}",
        ours_rate / stock_rate
    );

    // 3. Memory.
    println!(
        "sidecar peak RSS: a {:.1} MB, b {:.1} MB, c (with the policies) {:.1} MB",
        peak_rss_mb(a.0.id()),
        peak_rss_mb(b.0.id()),
        peak_rss_mb(c.0.id())
    );
    drop((a, b, c, sentry));
    let _ = std::fs::remove_dir_all(&dir);
    println!("added_p50_ms={:.3}", pct(&through, 0.5) - pct(&direct, 0.5));
    println!(
        "grpc_added_p50_ms={:.3}",
        pct(&grpc_through, 0.5) - pct(&grpc_direct, 0.5)
    );
}

/// One GET through the mesh answered 200.
async fn reqwest_like_ok(addr: &str, path: &str) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut s, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let Ok(req) = hyper::Request::get(path)
        .header("host", "x")
        .body(Empty::<Bytes>::new())
    else {
        return false;
    };
    matches!(s.send_request(req).await, Ok(r) if r.status() == 200)
}
