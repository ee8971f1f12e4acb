//! Sentry as a real process on loopback: credentials replaced under a steady stream of signing
//! requests, kill -9 during first-start generation, racing starts on one empty directory, and
//! expired or incomplete credentials. Clients are the library's `SentryClient` (TLS, Sentry's
//! SPIFFE ID checked); the independent grpcio peer is `tests/sentry_python.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sigil_core::crypto::Signer as _;
use sigil_host::ca::x509::{self, Profile};
use sigil_host::ca::Credentials;
use sigil_host::client::{self, SentryClient, SentryTarget, SignRequest};
use sigil_host::key::{CaKey, KeyAlgorithm};

use common::{key_and_csr, metric, read_certs, sentry_command, start, Sentry, SENTRY_ID};

fn shared_anchors(ders: Vec<Vec<u8>>) -> Arc<sigil_host::trust::Anchors> {
    Arc::new(sigil_host::trust::Anchors::from_ders("ca.crt", ders).unwrap())
}

fn request(csr: Vec<u8>) -> SignRequest {
    SignRequest {
        id: "app".into(),
        namespace: "default".into(),
        csr_der: csr,
        ..SignRequest::default()
    }
}

async fn sign_once(
    addr: &str,
    anchors: Vec<Vec<u8>>,
) -> Result<client::Signed, client::ClientError> {
    let target = SentryTarget {
        address: addr.to_owned(),
        anchors: shared_anchors(anchors),
        sentry_id: SENTRY_ID.into(),
    };
    let mut c = SentryClient::connect(target).await?;
    let (key, csr) = key_and_csr();
    c.sign(&request(csr), key.public_key()).await
}

/// Writes a credential set; `slowly` writes ca.crt in two halves with a pause (a partial
/// write the watcher must debounce), the others by rename.
fn write_set(dir: &Path, ca: &str, issuer: &str, key: &str, slowly: bool) {
    let put = |name: &str, body: &str| {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    };
    put("issuer.key", key);
    std::thread::sleep(Duration::from_millis(30));
    put("issuer.crt", issuer);
    std::thread::sleep(Duration::from_millis(30));
    if slowly {
        use std::io::Write as _;
        let mut f = std::fs::File::create(dir.join("ca.crt")).unwrap();
        let (a, b) = ca.split_at(ca.len() / 2);
        f.write_all(a.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        f.write_all(b.as_bytes()).unwrap();
    } else {
        put("ca.crt", ca);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_replaced_five_times_under_load_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let sets: Vec<_> = (0..6)
        .map(|_| {
            Credentials::generate("localhost", SENTRY_ID, now, Duration::from_secs(900))
                .unwrap()
                .1
        })
        .collect();
    write_set(
        dir.path(),
        &sets[0].ca,
        &sets[0].issuer,
        &sets[0].key,
        false,
    );
    let sentry = start(sentry_command(dir.path())).unwrap();
    // The clients trust every root the test will use (TLS to Sentry); each issued chain is
    // checked against the roots Sentry sent with it.
    let all_roots: Vec<Vec<u8>> = sets
        .iter()
        .flat_map(|s| sigil_host::pki::pem_certificates(s.ca.as_bytes()).unwrap())
        .collect();

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let roots_seen = Arc::new(Mutex::new(std::collections::BTreeSet::<Vec<u8>>::new()));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (addr, anchors) = (sentry.grpc.clone(), all_roots.clone());
        let (done, ok, failures, roots_seen) = (
            done.clone(),
            ok.clone(),
            failures.clone(),
            roots_seen.clone(),
        );
        workers.push(tokio::spawn(async move {
            // Half reuse one connection, half dial per request (as daprd does).
            let reuse = w % 2 == 0;
            let target = SentryTarget {
                address: addr.clone(),
                anchors: shared_anchors(anchors.clone()),
                sentry_id: SENTRY_ID.into(),
            };
            let mut conn = None;
            while !done.load(Ordering::Relaxed) {
                if conn.is_none() || !reuse {
                    match SentryClient::connect(target.clone()).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            failures.lock().unwrap().push(format!("connect: {e}"));
                            continue;
                        }
                    }
                }
                let (key, csr) = key_and_csr();
                let c = conn.as_mut().unwrap();
                match c.sign(&request(csr), key.public_key()).await {
                    Ok(signed) => {
                        // Validates against the roots current at issue time.
                        if let Err(e) = client::validate_identity(
                            &signed.chain,
                            &signed.trust_bundle,
                            key.public_key(),
                            SystemTime::now(),
                        ) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("chain vs its roots: {e}"));
                        }
                        roots_seen
                            .lock()
                            .unwrap()
                            .insert(signed.trust_bundle[0].clone());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(format!("sign: {e}")),
                }
            }
        }));
    }

    for (i, set) in sets.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let (d, ca, issuer, key) = (
            dir.path().to_owned(),
            set.ca.clone(),
            set.issuer.clone(),
            set.key.to_string(),
        );
        tokio::task::spawn_blocking(move || write_set(&d, &ca, &issuer, &key, i % 2 == 1))
            .await
            .unwrap();
        // Wait until Sentry issues from the new root.
        let root = sigil_host::pki::pem_certificates(set.ca.as_bytes())
            .unwrap()
            .remove(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = sign_once(&sentry.grpc, all_roots.clone()).await.unwrap();
            if s.trust_bundle[0] == root {
                break;
            }
            assert!(Instant::now() < deadline, "set {i} never swapped in");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Keep the stream going until at least 2,000 requests were answered.
    while ok.load(Ordering::Relaxed) < 2000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(
        roots_seen.lock().unwrap().len(),
        6,
        "every set issued under load"
    );
    assert!(ok.load(Ordering::Relaxed) >= 2000);
    assert!(metric(&sentry.metrics, "dapr_sentry_issuercert_changed_total") >= 5);
}

/// A first-start generation stopped after each of its steps, as a kill -9 there would leave
/// it (`store::interrupt_generation`), then a real Sentry started on the directory: it rolls
/// forward or back, serves, and leaves no journal behind.
#[tokio::test]
async fn a_crash_at_each_generation_step_leaves_a_consistent_store() {
    use sigil_host::ca::store::{self, Step, StorePaths};
    for step in [Step::Staged, Step::Marked, Step::Moved] {
        let dir = tempfile::tempdir().unwrap();
        store::interrupt_generation(
            &StorePaths::in_dir(dir.path()),
            "localhost",
            common::SENTRY_ID,
            std::time::SystemTime::now(),
            step,
        )
        .unwrap();
        let names = || -> Vec<String> {
            std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let before = names();
        assert!(
            before.iter().any(|n| n.ends_with(".sigil-new")),
            "{step:?}: {before:?}"
        );

        let sentry = start(sentry_command(dir.path())).unwrap();
        let anchors = read_certs(&dir.path().join("ca.crt"));
        sign_once(&sentry.grpc, anchors).await.unwrap();
        let after = names();
        assert!(
            !after
                .iter()
                .any(|n| n.ends_with(".sigil-new") || n == ".sigil-generated"),
            "{step:?}: journal left behind: {after:?}"
        );
    }
}

#[tokio::test]
async fn racing_sentrys_on_an_empty_directory_agree_on_one_root() {
    let dir = tempfile::tempdir().unwrap();
    let cmds: Vec<Command> = (0..3).map(|_| sentry_command(dir.path())).collect();
    let sentrys: Vec<Sentry> = std::thread::scope(|s| {
        let hs: Vec<_> = cmds
            .into_iter()
            .map(|c| s.spawn(move || start(c).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let anchors = read_certs(&dir.path().join("ca.crt"));
    assert_eq!(anchors.len(), 1);
    for s in &sentrys {
        // Each serves from the one root (its chain validates against ca.crt alone).
        let signed = sign_once(&s.grpc, anchors.clone()).await.unwrap();
        assert_eq!(signed.trust_bundle, anchors);
    }
}

/// A valid root and an issuer signed by it that expired a day ago.
fn expired_set(dir: &Path) {
    let root_key = CaKey::generate(KeyAlgorithm::P256).unwrap();
    let issuer_key = CaKey::generate(KeyAlgorithm::P256).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let root = x509::issue(
        Profile::Root {
            trust_domain: "localhost",
        },
        root_key.public_key(),
        now - 30 * day,
        now + 300 * day,
        x509::SignedBy::Itself(&root_key),
    )
    .unwrap();
    let parsed = sigil_core::cert::Certificate::parse(&root).unwrap();
    let issuer = x509::issue(
        Profile::Issuer {
            sentry_id: SENTRY_ID,
        },
        issuer_key.public_key(),
        now - 20 * day,
        now - day,
        x509::SignedBy::Issuer(x509::Signer {
            subject: parsed.subject(),
            key_id: parsed.subject_key_id(),
            key: &root_key,
        }),
    )
    .unwrap();
    let pem = |d: &[u8]| sigil_host::pki::to_pem(sigil_core::pem::Label::Certificate, d);
    write_set(dir, &pem(&root), &pem(&issuer), &issuer_key.to_pem(), false);
}

#[tokio::test]
async fn an_expired_issuer_is_refused_at_start_and_at_swap() {
    let dir = tempfile::tempdir().unwrap();
    expired_set(dir.path());
    let e = start(sentry_command(dir.path()))
        .err()
        .expect("started with an expired issuer");
    assert!(e.contains("issuer.crt expired at"), "{e}");

    // At swap: a running Sentry keeps its set and says why.
    let good = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(good.path())).unwrap();
    let anchors = read_certs(&good.path().join("ca.crt"));
    let before = sign_once(&sentry.grpc, anchors.clone()).await.unwrap();
    expired_set(good.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &sentry.metrics,
        "sigil_sentry_credentials_reload_refused_total",
    ) == 0
    {
        assert!(Instant::now() < deadline, "the expired set was not refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = sign_once(&sentry.grpc, anchors.clone()).await.unwrap();
    assert_eq!(after.trust_bundle, before.trust_bundle);
    assert_eq!(after.chain[1], before.chain[1], "still the old issuer");
    let logs = sentry.stderr.lock().unwrap().join("\n");
    assert!(logs.contains("replaced credentials refused"), "{logs}");
}

#[test]
fn incomplete_user_credentials_stop_sentry_and_are_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), "mine").unwrap();
    let e = start(sentry_command(dir.path()))
        .err()
        .expect("started over user files");
    assert!(e.contains("incomplete credentials"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
        "mine"
    );
    assert!(!dir.path().join("issuer.key").exists());
}

#[tokio::test]
async fn sigterm_stops_sentry_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(dir.path())).unwrap();
    sign_once(&sentry.grpc, read_certs(&dir.path().join("ca.crt")))
        .await
        .unwrap();
    sigterm_and_wait(sentry).await;
}

/// On one core (`taskset -c 0`) `sigil` runs a current-thread runtime: concurrent requests,
/// validation and shutdown must work there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_on_one_core_serves_concurrent_requests_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = common::sentry_command_under(dir.path(), &["taskset", "-c", "0"]);
    let sentry = start(cmd).unwrap();
    let affinity = Command::new("taskset")
        .args(["-p", &sentry.child.id().to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&affinity.stdout)
            .trim()
            .ends_with(": 1"),
        "not pinned: {affinity:?}"
    );
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (addr, anchors) = (sentry.grpc.clone(), anchors.clone());
            tokio::spawn(async move { sign_once(&addr, anchors).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        metric(&sentry.metrics, "dapr_sentry_cert_sign_success_total"),
        32
    );
    sigterm_and_wait(sentry).await;
}

async fn sigterm_and_wait(mut sentry: Sentry) {
    let pid = sentry.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = sentry.child.try_wait().unwrap() {
            assert!(s.success(), "exit {s}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn openssl(args: &[&str], dir: &Path) {
    common::run_ok(Command::new("openssl").args(args).current_dir(dir));
}

/// Credentials as openssl (and Dapr's docs) make them: a root, an issuer with Dapr's subject,
/// the key as SEC1 or PKCS#8, and ca.crt holding two roots.
fn openssl_credentials(dir: &Path, sec1: bool) {
    openssl_credentials_with(dir, sec1, false);
}

/// [`openssl_credentials`], with Ed25519 keys (as Dapr 1.18 makes them) when `ed25519`.
fn openssl_credentials_with(dir: &Path, sec1: bool, ed25519: bool) {
    let ec: &[&str] = if ed25519 {
        &["-newkey", "ed25519", "-nodes"]
    } else {
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]
    };
    // A self-signed CA certificate `name`.pem (key `name`.key) for a year, with CA:true and the
    // `more` extensions.
    let self_signed = |name: &str, subject: &str, more: &[&str]| {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509"];
        args.extend_from_slice(ec);
        args.extend([
            "-keyout", &key, "-out", &pem, "-subj", subject, "-days", "365",
        ]);
        args.extend(["-addext", "basicConstraints=critical,CA:true"]);
        for e in more {
            args.extend(["-addext", e]);
        }
        openssl(&args, dir);
    };
    self_signed(
        "root",
        "/O=localhost",
        &["keyUsage=critical,digitalSignature,keyCertSign,cRLSign"],
    );
    self_signed("other", "/O=other", &[]);
    let mut csr = vec!["req", "-new"];
    csr.extend_from_slice(ec);
    csr.extend([
        "-keyout",
        "issuer.pk8",
        "-out",
        "issuer.csr",
        "-subj",
        "/O=spiffe:\\/\\/localhost\\/ns\\/default\\/dapr-sentry",
    ]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("issuer.ext"),
        "basicConstraints=critical,CA:true\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "issuer.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            "issuer.ext",
            "-out",
            "issuer.crt",
        ],
        dir,
    );
    if sec1 {
        openssl(&["ec", "-in", "issuer.pk8", "-out", "issuer.key"], dir);
        let key = std::fs::read_to_string(dir.join("issuer.key")).unwrap();
        assert!(key.contains("BEGIN EC PRIVATE KEY"), "{key}");
    } else {
        std::fs::copy(dir.join("issuer.pk8"), dir.join("issuer.key")).unwrap();
    }
    let roots = std::fs::read_to_string(dir.join("other.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root.pem")).unwrap();
    std::fs::write(dir.join("ca.crt"), roots).unwrap();
}

/// Issue 14, point 5: Ed25519 credentials (a root and an issuer as Dapr 1.18 makes them, here
/// by openssl) load, sign workload certificates with Ed25519, and the chain verifies with
/// `openssl verify` as well as Sigil's client.
#[tokio::test]
async fn ed25519_credentials_made_by_openssl_sign_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    openssl_credentials_with(dir.path(), false, true);
    let key = std::fs::read_to_string(dir.path().join("issuer.key")).unwrap();
    assert!(key.contains("BEGIN PRIVATE KEY"), "{key}");
    let sentry = start(sentry_command(dir.path())).unwrap();
    let anchors = read_certs(&dir.path().join("ca.crt"));
    let signed = sign_once(&sentry.grpc, anchors).await.unwrap();
    let leaf = sigil_core::cert::Certificate::parse(&signed.chain[0]).unwrap();
    assert_eq!(
        leaf.signature_scheme().unwrap(),
        sigil_core::crypto::Scheme::Ed25519
    );
    let pem = |d: &[u8]| sigil_host::pki::to_pem(sigil_core::pem::Label::Certificate, d);
    std::fs::write(dir.path().join("leaf.pem"), pem(&signed.chain[0])).unwrap();
    std::fs::write(dir.path().join("chain.pem"), pem(&signed.chain[1])).unwrap();
    openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ],
        dir.path(),
    );
}

#[tokio::test]
async fn credentials_made_by_openssl_load_unchanged() {
    for sec1 in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        openssl_credentials(dir.path(), sec1);
        let before: Vec<Vec<u8>> = ["ca.crt", "issuer.crt", "issuer.key"]
            .iter()
            .map(|f| std::fs::read(dir.path().join(f)).unwrap())
            .collect();
        let sentry = start(sentry_command(dir.path())).unwrap();
        let anchors = read_certs(&dir.path().join("ca.crt"));
        assert_eq!(anchors.len(), 2);
        let signed = sign_once(&sentry.grpc, anchors.clone()).await.unwrap();
        assert_eq!(signed.trust_bundle, anchors, "both roots sent");
        let after: Vec<Vec<u8>> = ["ca.crt", "issuer.crt", "issuer.key"]
            .iter()
            .map(|f| std::fs::read(dir.path().join(f)).unwrap())
            .collect();
        assert_eq!(before, after, "sec1={sec1}: files untouched");
    }
}

/// The leaf of Sentry's serving chain, read with openssl s_client.
fn serving_leaf(addr: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-showcerts"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end].to_owned()
}

#[tokio::test]
async fn the_serving_certificate_is_renewed_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: 4s\n    allowedClockSkew: 0s\n",
    )
    .unwrap();
    let mut cmd = sentry_command(&dir.path().join("creds"));
    cmd.arg("--config").arg(&config);
    let sentry = start(cmd).unwrap();
    let anchors = read_certs(&dir.path().join("creds/ca.crt"));
    let first = serving_leaf(&sentry.grpc);
    let mut renewed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if serving_leaf(&sentry.grpc) != first {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "the serving certificate never changed");
    // Well past the first certificate's 4 s: the client still validates Sentry (renewed).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let signed = sign_once(&sentry.grpc, anchors).await.unwrap();
    let leaf = sigil_core::cert::Certificate::parse(&signed.chain[0]).unwrap();
    assert_eq!(
        leaf.not_after().as_secs() - leaf.not_before().as_secs(),
        4,
        "workloadCertTTL from the Configuration, skew 0"
    );
}

#[tokio::test]
async fn sigil_sign_writes_a_validated_identity_and_never_overwrites_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(&dir.path().join("creds"))).unwrap();
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args([
                "sign",
                "--sentry",
                &sentry.grpc,
                "--id",
                "checkout",
                "--namespace",
                "shop",
            ])
            .arg("--anchors")
            .arg(dir.path().join("creds/ca.crt"))
            .arg("--out-dir")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("spiffe://public/ns/shop/checkout"));
    assert_eq!(common::file_mode(&out.join("key.pem")), 0o600);
    let v = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.pem"))
        .arg("-untrusted")
        .arg(out.join("cert.pem"))
        .arg(out.join("cert.pem"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let key = std::fs::read(out.join("key.pem")).unwrap();
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(out.join("key.pem")).unwrap(),
        key,
        "key untouched"
    );
    assert!(run(&["--force"]).status.success());
    assert_ne!(std::fs::read(out.join("key.pem")).unwrap(), key);
    // A Sentry with another identity is refused (its SPIFFE ID is checked).
    let wrong = run(&["--control-plane-namespace", "elsewhere", "--force"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("elsewhere"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// `sigil sign` with an anchors file of 40 certificates (an RSA root first, Sentry's root
/// last): the RSA root is skipped with a warning, Sentry is trusted through the last one.
#[tokio::test]
async fn sigil_sign_with_forty_anchors_rsa_first_the_right_root_last() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(&dir.path().join("creds"))).unwrap();
    let right = std::fs::read_to_string(dir.path().join("creds/ca.crt")).unwrap();
    let anchors = common::forty_anchors(dir.path(), &right);
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["sign", "--sentry", &sentry.grpc, "--id", "checkout"])
        .arg("--anchors")
        .arg(&anchors)
        .arg("--out-dir")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("spiffe://public/ns/default/checkout"),
        "{text}"
    );
    assert!(text.contains("#0 (CN=an RSA root) skipped"), "{text}");
}

/// Issue 14, point 1: `--root-ttl` and `--issuer-ttl` set the lifetimes of what Sentry
/// generates (Go durations); the issuer never outlives the root; nonsense is refused.
#[test]
fn generated_root_and_issuer_live_as_long_as_the_flags_say() {
    let life = |pem: &Path| {
        let der = read_certs(pem).remove(0);
        let c = sigil_core::cert::Certificate::parse(&der).unwrap();
        c.not_after().as_secs() - c.not_before().as_secs()
    };
    for (root, issuer, want_root, want_issuer) in [
        ("2h", "1h", 7200, 3600),
        ("1h", "3h", 3600, 3600), // the issuer is clamped to the root
    ] {
        let dir = tempfile::tempdir().unwrap();
        // Certificates of 5 min: short enough for an issuer of an hour to be rotated.
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "spec:\n  mtls:\n    workloadCertTTL: 5m\n").unwrap();
        let mut cmd = sentry_command(dir.path());
        cmd.args(["--root-ttl", root, "--issuer-ttl", issuer])
            .arg("--config")
            .arg(&config);
        let sentry = start(cmd).unwrap();
        // Both are back-dated by the 15 min clock skew.
        let skew = 15 * 60;
        assert_eq!(life(&dir.path().join("ca.crt")), want_root + skew, "{root}");
        let issuer_end = {
            let der = read_certs(&dir.path().join("issuer.crt")).remove(0);
            sigil_core::cert::Certificate::parse(&der)
                .unwrap()
                .not_after()
        };
        let root_end = {
            let der = read_certs(&dir.path().join("ca.crt")).remove(0);
            sigil_core::cert::Certificate::parse(&der)
                .unwrap()
                .not_after()
        };
        assert_eq!(
            life(&dir.path().join("issuer.crt")),
            want_issuer + skew,
            "{issuer}"
        );
        assert!(issuer_end <= root_end);
        drop(sentry);
    }
    // An issuer too short for the workload TTL (24 h by default) to be rotated safely is
    // refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let out = sentry_command(&dir.path().join("creds"))
        .args(["--issuer-ttl", "1h"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be rotated without breaking holders"),
        "{err}"
    );
    assert!(!dir.path().join("creds/ca.crt").exists(), "written anyway");
    for bad in ["10s", "a year", "-1h"] {
        let dir = tempfile::tempdir().unwrap();
        let out = sentry_command(dir.path())
            .arg(format!("--root-ttl={bad}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--root-ttl"),
            "{bad}"
        );
    }
}

/// Issue 14, point 4 (init, inspect, expiry, export): `sigil ca init` makes a directory Sentry
/// runs on; `inspect` explains it while Sentry runs; `expiry` answers with its exit status;
/// `export` gives the bundle openssl verifies the issuer against.
#[tokio::test]
async fn sigil_ca_init_inspect_expiry_export() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let sigil = |args: &[&str]| common::sigil_ca(&creds, args);
    let out = sigil(&[
        "init",
        "--trust-domain",
        "localhost",
        "--issuer-ttl",
        "240h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(common::file_mode(&creds.join("issuer.key")), 0o600);
    // Never over existing files.
    let again = sigil(&["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exist"));

    let sentry = start(sentry_command(&creds)).unwrap();
    let anchors = read_certs(&creds.join("ca.crt"));
    sign_once(&sentry.grpc, anchors.clone()).await.unwrap();
    let inspect = sigil(&["inspect"]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success() && text.contains("state: valid"),
        "{text}"
    );
    assert!(text.contains(SENTRY_ID), "{text}");
    // 10 days left on the issuer: within the 30-day warning, exit 1.
    let expiry = sigil(&["expiry"]);
    assert_eq!(expiry.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&expiry.stdout).contains("renew within 30 days"));
    let export = sigil(&["export"]);
    assert!(export.status.success());
    assert_eq!(
        sigil_host::pki::pem_certificates(&export.stdout).unwrap(),
        anchors
    );
    std::fs::write(dir.path().join("bundle.pem"), &export.stdout).unwrap();
    openssl(
        &["verify", "-CAfile", "bundle.pem", "creds/issuer.crt"],
        dir.path(),
    );
    drop(sentry);
}
