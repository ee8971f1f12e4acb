//! `sigil demo`: Sentry, two sidecars and two small apps on loopback, in one process, with
//! real listeners, real TLS and real certificates. The `checkout` app calls the `cart` app
//! through both sidecars over mutual TLS several times a second; certificates live 10 s, so
//! they rotate underneath the calls. Sentry's root and issuer live 40 s, and Sentry rotates
//! them by itself ([`crate::sentry::rotate`]): at 20 s it publishes a new root beside the old
//! one, at about 33 s the new issuer signs, at about 43 s the old root leaves the bundle. The
//! sidecars were given the first root only; they learn each new one from Sentry's answers.
//! The screen shows each identity as it is issued, every rotation, Sentry's rotation steps and
//! a running count of calls.
//!
//! `--once` runs the script for about 45 s and exits 0 only if every step held: identities
//! issued, at least three rotations per sidecar, the root rotated by Sentry (prepared,
//! activated, retired) with both sidecars under the new root, and no call failed.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use tokio::net::TcpListener;

use crate::ca::rotation;
use crate::ca::store::StorePaths;
use crate::sentry::app::{start, SentryOptions};
use crate::sidecar::identity::{AnchorSource, IdentityConfig, IdentityState};
use crate::sidecar::invoke::InvokeConfig;
use crate::sidecar::{self, Listeners};

const TTL: &str = "10s";
/// The root's and the issuer's lifetime: Sentry rotates them at 20 s, 33 s and 43 s.
const CA_TTL: Duration = Duration::from_secs(40);
const ONCE_FOR: Duration = Duration::from_secs(45);

fn say(line: impl AsRef<str>) {
    println!(
        "{:>6.1}s  {}",
        started().elapsed().as_secs_f64(),
        line.as_ref()
    );
}

fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

#[derive(Default)]
struct Calls {
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The `cart` app: `/items` answers a small JSON document.
async fn cart_app() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let caller = req
                            .headers()
                            .get(crate::sidecar::invoke::CALLER_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("?")
                            .to_owned();
                        let body =
                            format!("{{\"items\":[\"apple\",\"pear\"],\"caller\":\"{caller}\"}}");
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(port)
}

/// The `checkout` app: calls `cart` through its sidecar, over and over.
fn checkout_app(sidecar_http: String, calls: Arc<Calls>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            interval.tick().await;
            match call(&sidecar_http).await {
                Ok(()) => {
                    calls.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    calls.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut l) = calls.last_error.lock() {
                        *l = Some(e);
                    }
                }
            }
        }
    })
}

async fn call(sidecar_http: &str) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(sidecar_http)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/v1.0/invoke/cart/method/items")
        .header(hyper::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status == 200 && body.starts_with(b"{\"items\"") {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

struct Node {
    name: &'static str,
    state: Arc<IdentityState>,
    http: String,
    seen_generation: u32,
}

fn describe(node: &Node) -> Option<String> {
    let c = node.state.current()?;
    let left = c
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Some(format!(
        "{:<9} {}  generation {:>2}  expires {} (in {}s)",
        node.name,
        c.spiffe_id,
        c.generation,
        humantime::format_rfc3339_seconds(c.not_after),
        left.as_secs()
    ))
}

/// Whether `node`'s chain validates to one of `roots` now.
fn chains_to(node: &Node, roots: &[Vec<u8>]) -> bool {
    let Some(c) = node.state.current() else {
        return false;
    };
    let anchors_only = roots.to_vec();
    let Ok(key) = crate::key::P256Key::from_pkcs8_der(&c.key_pkcs8) else {
        return false;
    };
    crate::client::validate_identity(
        &c.chain,
        &anchors_only,
        sigil_core::crypto::PublicKey::EcP256(key.public_point()),
        SystemTime::now(),
    )
    .is_ok()
}

/// Runs the demo (see the module doc). Returns whether every step held (always true when
/// interrupted interactively without a failure).
///
/// # Errors
///
/// A component that cannot start.
pub async fn run(
    once: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<bool> {
    started();
    let dir = std::env::temp_dir().join(format!("sigil-demo-{}", std::process::id()));
    // Private, and new: refused if the name exists (nobody else's directory is used).
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let _cleanup = Cleanup(dir.clone());
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("kind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: {TTL}\n    allowedClockSkew: 0s\n"),
    )?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Sentry.
    let sentry = start(&SentryOptions {
        config: Some(config),
        issuer_credentials: Some(dir.join("creds")),
        listen_address: "127.0.0.1".into(),
        port: 0,
        healthz: None,
        metrics: None,
        generation: crate::ca::Generation {
            root: CA_TTL,
            issuer: CA_TTL,
            ..crate::ca::Generation::default()
        },
        ..SentryOptions::default()
    })
    .await?;
    let sentry_addr = sentry.listeners.grpc.local_addr()?.to_string();
    say(format!(
        "Sentry on {sentry_addr}: a new root and issuer in {}, living {}s, rotated by Sentry \
         itself; certificates live {TTL}",
        dir.join("creds").display(),
        CA_TTL.as_secs()
    ));
    let paths = sentry
        .store
        .paths()
        .cloned()
        .context("the demo's Sentry keeps its credentials in files")?;
    let sentry_task = tokio::spawn(crate::sentry::run(
        sentry.sentry,
        sentry.listeners,
        Some(sentry.store),
        stopped(),
    ));
    let anchors = dir.join("anchors.pem");
    std::fs::copy(&paths.ca, &anchors).context("trust anchors")?;

    // Two sidecars, the cart app behind one.
    let cart_port = cart_app().await?;
    let mut nodes = Vec::new();
    let mut sidecar_tasks = Vec::new();
    let names = dir.join("names.yaml");
    let internal: Vec<TcpListener> = vec![
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    ];
    std::fs::write(
        &names,
        format!(
            "checkout: {}\ncart: {}\n",
            internal[0].local_addr()?,
            internal[1].local_addr()?
        ),
    )?;
    for ((name, app_port), internal) in [("checkout", None), ("cart", Some(cart_port))]
        .into_iter()
        .zip(internal)
    {
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http.local_addr()?.to_string();
        let state = Arc::new(IdentityState::default());
        let identity = IdentityConfig {
            app_id: name.into(),
            namespace: "default".into(),
            sentry_address: sentry_addr.clone(),
            sentry_id: crate::dapr::sentry_id("localhost", "default"),
            token_file: None,
            token_validator: crate::pb::sign_certificate_request::TokenValidator::Unknown,
            anchors: AnchorSource::File(anchors.clone()),
            output_dir: None,
            policy: sigil_core::rotation::Policy::default(),
            jwt_audiences: Vec::new(),
        };
        let invoke = InvokeConfig {
            app_id: name.into(),
            namespace: "default".into(),
            app_port,
            app_protocol: crate::sidecar::invoke::AppProtocol::Http,
            resolution: Some(names.clone()),
            mtls: true,
            callers: crate::sidecar::mtls::CallerPolicy::default(),
            acl: std::sync::Arc::new(crate::sidecar::acl::Acl::none()),
            allowed_origins: None,
        };
        say(format!(
            "sidecar {name}: app API http://{http_addr}, mTLS port {}",
            internal.local_addr()?
        ));
        let listeners = Listeners {
            http,
            grpc: None,
            internal,
            metrics: None,
            workload_api: None,
            jwt_bundle: None,
        };
        sidecar_tasks.push(tokio::spawn(sidecar::run(
            identity,
            invoke,
            listeners,
            state.clone(),
            stopped(),
        )));
        nodes.push(Node {
            name,
            state,
            http: http_addr,
            seen_generation: 0,
        });
    }
    // Apps start calling once their sidecars are ready (as with Dapr's readiness probes).
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n| n.state.is_ready()) {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "the sidecars got no identity in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = Arc::new(Calls::default());
    let checkout_http = nodes.first().map(|n| n.http.clone()).unwrap_or_default();
    let checkout = checkout_app(checkout_http, calls.clone());
    say("both sidecars ready; checkout calls cart through them, 10 times a second: GET /v1.0/invoke/cart/method/items");

    // The script.
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_report = Instant::now();
    let mut journal = Journal::new(&paths)?;
    let mut ok_so_far = true;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        for node in &mut nodes {
            let generation = node.state.current().map_or(0, |c| c.generation);
            if generation != node.seen_generation {
                node.seen_generation = generation;
                let what = if generation == 1 {
                    "identity issued"
                } else {
                    "rotated"
                };
                if let Some(d) = describe(node) {
                    say(format!("{what:<15} {d}"));
                }
            }
        }
        journal.advance(&paths, &nodes)?;
        if last_report.elapsed() >= Duration::from_secs(3) {
            last_report = Instant::now();
            let (ok, failed) = (
                calls.ok.load(Ordering::Relaxed),
                calls.failed.load(Ordering::Relaxed),
            );
            say(format!("calls: {ok} succeeded, {failed} failed"));
        }
        if once && started().elapsed() >= ONCE_FOR && journal.done() {
            break;
        }
        if once && started().elapsed() >= ONCE_FOR + Duration::from_secs(30) {
            say("the root rotation did not finish in time");
            ok_so_far = false;
            break;
        }
    }

    // The app stops before its sidecar, as in an orderly shutdown.
    checkout.abort();
    let _ = checkout.await;
    let _ = stop_tx.send(true);
    for t in sidecar_tasks {
        let _ = t.await;
    }
    let _ = sentry_task.await;
    let (ok, failed) = (
        calls.ok.load(Ordering::Relaxed),
        calls.failed.load(Ordering::Relaxed),
    );
    say(format!("stopped. calls: {ok} succeeded, {failed} failed"));
    if failed > 0 {
        if let Ok(Some(e)) = calls.last_error.lock().map(|l| l.clone()) {
            say(format!("last failure: {e}"));
        }
    }
    if !once {
        return Ok(failed == 0);
    }
    let rotations_ok = nodes.iter().all(|n| n.seen_generation >= 4);
    let mut held = true;
    for (step, ok_step) in [
        (
            "identities issued to both sidecars",
            nodes.iter().all(|n| n.seen_generation >= 1),
        ),
        ("at least three rotations per sidecar", rotations_ok),
        (
            "root rotated by Sentry (prepared, activated, retired) while calls went on",
            journal.done(),
        ),
        ("calls succeeded", ok > 100),
        ("no call failed", failed == 0),
    ] {
        say(format!("{} {step}", if ok_step { "ok  " } else { "FAIL" }));
        held &= ok_step;
    }
    Ok(held && ok_so_far)
}

/// What the demo has seen of Sentry's rotation journal, to say each step once.
struct Journal {
    issuer: Vec<u8>,
    prepared: bool,
    old: bool,
    activated: u32,
    retired: u32,
    /// Whether both sidecars hold an identity under the root the active issuer chains to.
    renewed: bool,
}

impl Journal {
    fn new(paths: &StorePaths) -> anyhow::Result<Self> {
        let j = rotation::read(paths)?;
        Ok(Self {
            issuer: j.active.issuer,
            prepared: j.prepared.is_some(),
            old: j.old.is_some(),
            activated: 0,
            retired: 0,
            renewed: true,
        })
    }

    fn advance(&mut self, paths: &StorePaths, nodes: &[Node]) -> anyhow::Result<()> {
        // Read without the lock: a step half way is seen whole at the next tick.
        let Ok(j) = rotation::read(paths) else {
            return Ok(());
        };
        if j.prepared.is_some() && !self.prepared {
            say("CA rotation 1/3: Sentry made a new root and issuer and published the root beside the old one; the old issuer still signs; the sidecars learn the new root from their next renewal");
        }
        if j.active.issuer != self.issuer {
            self.activated += 1;
            self.renewed = false;
            say("CA rotation 2/3: every sidecar has renewed since the new root was published, so Sentry's new issuer signs from now on");
        }
        if !self.renewed {
            let bundle = std::fs::read(&paths.ca)
                .ok()
                .and_then(|pem| crate::pki::pem_certificates(&pem).ok())
                .unwrap_or_default();
            let new_root = rotation::roots_of(&j.active.issuer, &bundle, &[]);
            if !new_root.is_empty() && nodes.iter().all(|n| chains_to(n, &new_root)) {
                self.renewed = true;
                say("             both sidecars renewed under the new root (a root they were never given)");
            }
        }
        if self.old && j.old.is_none() {
            self.retired += 1;
            say("CA rotation 3/3: no certificate from the old issuer is left, so Sentry retired the old root");
        }
        self.issuer = j.active.issuer;
        self.prepared = j.prepared.is_some();
        self.old = j.old.is_some();
        Ok(())
    }

    const fn done(&self) -> bool {
        self.activated >= 1 && self.retired >= 1 && self.renewed
    }
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
