//! Sentry load generator: starts `sigil sentry` pinned to one core (`taskset -c 0`), drives it
//! from the other core with N concurrent clients, first over reused connections, then with a
//! new TLS connection per request (as daprd does), and prints certificates per second, p50/p99
//! latency and Sentry's peak RSS, beside the raw ECDSA P-256 sign+verify rate of this machine
//! measured in the same run on one core (each issuance is one verify of the CSR and one sign).
//!
//! `cargo build --release -p sigil-host --bin sigil && cargo run --release -p sigil-tests --bin sentry-load -- [--clients 16] [--seconds 5]`
//! The last line is `reused_ratio=<certs per second / raw rate>` (target: at least 0.6).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use sigil_host::client::{self, SentryTarget};
use sigil_host::key::P256Key;
use sigil_host::pb;
use sigil_tests::load::{arg, sigil_binary};
use sigil_tests::peak_rss_mb;

/// Raw ECDSA P-256 sign + verify pairs per second on this thread (ring), over `d`.
fn raw_rate(d: Duration) -> f64 {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("keygen");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref(), &rng).expect("key");
    let public =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref().to_vec());
    let msg = [7u8; 300];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        let sig = pair.sign(&rng, &msg).expect("sign");
        public.verify(&msg, sig.as_ref()).expect("verify");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32, ticks_per_sec: f64) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses): utime is the 12th.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks_per_sec)
        })
        .unwrap_or(0.0)
}

/// One phase: `clients` tasks for `secs`; `reuse` keeps one connection per client.
async fn phase(
    target: Arc<SentryTarget>,
    csrs: Arc<Vec<Vec<u8>>>,
    clients: usize,
    secs: u64,
    reuse: bool,
) -> (f64, Vec<Duration>, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (target, csrs) = (target.clone(), csrs.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut conn = None;
            let mut i = c;
            while Instant::now() < deadline {
                let started = Instant::now();
                if conn.is_none() || !reuse {
                    match client::connect_channel(&target).await {
                        Ok(ch) => conn = Some(pb::ca_client::CaClient::new(ch)),
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let req = pb::SignCertificateRequest {
                    id: "load".into(),
                    namespace: "default".into(),
                    certificate_signing_request: csrs[i % csrs.len()].clone(),
                    ..Default::default()
                };
                i += clients;
                match conn
                    .as_mut()
                    .expect("connected")
                    .sign_certificate(req)
                    .await
                {
                    Ok(_) => lat.push(started.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("client task");
        all.extend(lat);
        errors += e;
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all, errors)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients = usize::try_from(arg(&args, "--clients", 16)).unwrap_or(16);
    let secs = arg(&args, "--seconds", 5);
    let sigil = sigil_binary();
    let dir = std::env::temp_dir().join(format!("sigil-sentry-load-{}", std::process::id()));
    let taskset = Command::new("taskset").arg("--version").output().is_ok();
    let mut cmd = if taskset {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&sigil);
        c
    } else {
        Command::new(&sigil)
    };
    cmd.args(["sentry", "--issuer-credentials"])
        .arg(&dir)
        .args([
            "--port",
            "0",
            "--listen-address",
            "127.0.0.1",
            "--healthz-port",
            "0",
        ])
        .args([
            "--healthz-listen-address",
            "127.0.0.1",
            "--enable-metrics",
            "false",
        ])
        .args(["--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start sigil sentry");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let grpc = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("sentry: listening grpc=")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        })
        .expect("Sentry's ready line");
    if taskset {
        // The load generator runs on the other core.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let anchors = Arc::new(sigil_host::trust::Anchors::read(&dir.join("ca.crt")).expect("ca.crt"));
    let target = Arc::new(SentryTarget {
        address: grpc,
        anchors,
        sentry_id: "spiffe://localhost/ns/default/dapr-sentry".into(),
    });
    // CSRs made up front (keys on ring), so the client side measures Sentry, not itself.
    let csrs: Vec<Vec<u8>> = (0..512)
        .map(|_| {
            let mut key = P256Key::generate().expect("key");
            let mut buf = [0u8; 512];
            let der = sigil_core::csr::Builder::new()
                .build(&mut key, &mut buf)
                .expect("csr");
            sigil_host::pki::to_pem(sigil_core::pem::Label::CertificateRequest, der).into_bytes()
        })
        .collect();
    let csrs = Arc::new(csrs);

    let raw = raw_rate(Duration::from_secs(2));
    println!("raw ECDSA P-256 sign+verify (ring, one core): {raw:.0}/s");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let mut reused_rate = 0.0;
    for (reuse, label) in [
        (true, "reused connections"),
        (false, "new connection per request"),
    ] {
        let (cpu0, wall0) = (cpu_seconds(pid, ticks), Instant::now());
        let (rate, lat, errors) =
            rt.block_on(phase(target.clone(), csrs.clone(), clients, secs, reuse));
        let busy = (cpu_seconds(pid, ticks) - cpu0) / wall0.elapsed().as_secs_f64();
        println!(
            "{label}: clients={clients} certs/s={rate:.0} p50={:.2}ms p99={:.2}ms errors={errors} sentry_cpu={:.0}% ratio_to_raw={:.2}",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            busy * 100.0,
            rate / raw
        );
        if reuse {
            reused_rate = rate;
        }
    }
    println!(
        "sentry peak RSS: {:.1} MB (pinned to one core: {taskset})",
        peak_rss_mb(pid)
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!("reused_ratio={:.2}", reused_rate / raw);
}
