//! The sidecar's identity as real processes on loopback: `sigil sidecar` against `sigil
//! sentry` with short-lived certificates. A first fetch that fails is retried (not fatal) and
//! shown by readiness; certificates rotate under the core machine; Sentry stopped for a while
//! costs nothing while the identity is valid; a trust-anchors file replaced at run time is
//! applied without a restart, and an identity that no longer chains is renewed at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    file_mode, free_port, health, http_get, metric, read_certs, sentry_command, short_ttl_sentry,
    sidecar_process, start, verify_now, wait_until, Proc,
};
use sigil_core::chain::Usage;

fn sidecar(sentry_addr: &str, anchors: &Path, identity_dir: &Path) -> Sidecar {
    let p = sidecar_process(&[
        "--app-id".as_ref(),
        "myapp".as_ref(),
        "--sentry-address".as_ref(),
        std::ffi::OsStr::new(sentry_addr),
        "--trust-anchors-file".as_ref(),
        anchors.as_os_str(),
        "--identity-dir".as_ref(),
        identity_dir.as_os_str(),
        "--dapr-http-port".as_ref(),
        "0".as_ref(),
        "--dapr-grpc-port".as_ref(),
        "0".as_ref(),
        "--metrics-port".as_ref(),
        "0".as_ref(),
        "--dapr-internal-port".as_ref(),
        "0".as_ref(),
    ]);
    Sidecar {
        http: p.field("http="),
        metrics: p.field("metrics="),
        _proc: p,
    }
}

struct Sidecar {
    _proc: Proc,
    http: String,
    metrics: String,
}

/// A new root, issuer and key for Sentry's trust domain (PEM).
fn fresh_set() -> sigil_host::ca::GeneratedPem {
    sigil_host::ca::Credentials::generate(
        "localhost",
        common::SENTRY_ID,
        std::time::SystemTime::now(),
        Duration::ZERO,
    )
    .unwrap()
    .1
}

/// Whether `chain` (leaf first) validates to one of `roots` now.
fn chains_to(chain: &[Vec<u8>], roots: &[Vec<u8>]) -> bool {
    !chain.is_empty() && verify_now(chain, roots, Usage::Any).is_ok()
}

#[test]
fn first_fetch_retried_rotations_outage_and_anchors_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Credentials first (a Sentry that generates them, then stops), so the anchors exist.
    drop(short_ttl_sentry(dir.path(), port, "6s"));
    let anchors = dir.path().join("anchors.pem");
    std::fs::copy(dir.path().join("creds/ca.crt"), &anchors).unwrap();
    let id_dir = dir.path().join("identity");

    // 1. No Sentry yet: the sidecar runs, is not ready, and keeps trying.
    let sc = sidecar(&format!("127.0.0.1:{port}"), &anchors, &id_dir);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(health(&sc.http), 500);
    assert!(http_get(&sc.metrics, "/metrics")
        .contains("dapr_runtime_mtls_init_fail_total{reason=\"sentry_conn\"}"));

    // 2. Sentry comes up: an identity within the urgent retry cap, then rotations.
    let sentry = short_ttl_sentry(dir.path(), port, "6s");
    wait_until("readiness", Duration::from_secs(15), || {
        health(&sc.http) == 204
    });
    assert_eq!(metric(&sc.metrics, "dapr_runtime_mtls_init_total"), 1);
    assert_eq!(file_mode(&id_dir.join("key.pem")), 0o600);
    let first_cert = std::fs::read(id_dir.join("cert.pem")).unwrap();
    wait_until("three rotations", Duration::from_secs(20), || {
        metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total") >= 3
    });
    assert_ne!(std::fs::read(id_dir.join("cert.pem")).unwrap(), first_cert);

    // 3. Sentry down for 2 s (under the certificate's remaining life): still ready throughout;
    //    renewal resumes when it is back.
    let rotated = metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total");
    drop(sentry);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(health(&sc.http), 204, "identity lost while Sentry was down");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sentry = short_ttl_sentry(dir.path(), port, "6s");
    wait_until("renewal after the outage", Duration::from_secs(20), || {
        metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total") > rotated
    });

    // 4. A new root at run time: Sentry's credentials replaced (hot reload), the sidecar's
    //    anchors file first gets both roots, then only the new one. The identity that chains to
    //    the old root is then renewed at once, under the new root, without a restart.
    let old_root = read_certs(&anchors);
    let fresh = fresh_set();
    let both = std::fs::read_to_string(&anchors).unwrap() + &fresh.ca;
    std::fs::write(&anchors, &both).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let creds = dir.path().join("creds");
    std::fs::write(creds.join("issuer.key"), fresh.key.as_bytes()).unwrap();
    std::fs::write(creds.join("issuer.crt"), &fresh.issuer).unwrap();
    std::fs::write(creds.join("ca.crt"), &fresh.ca).unwrap();
    std::fs::write(&anchors, &fresh.ca).unwrap();
    let new_root = sigil_host::pki::pem_certificates(fresh.ca.as_bytes()).unwrap();
    wait_until(
        "an identity under the new root",
        Duration::from_secs(20),
        || {
            let chain = read_certs(&id_dir.join("cert.pem"));
            let ca = read_certs(&id_dir.join("ca.pem"));
            ca == new_root && chains_to(&chain, &new_root)
        },
    );
    assert_ne!(old_root, new_root);
    assert_eq!(health(&sc.http), 204);
    drop(sentry);
}

/// A sidecar given an anchors file of 40 certificates (an RSA root first, Sentry's root last)
/// gets its identity: the RSA root is skipped, nothing is truncated.
#[test]
fn forty_anchors_rsa_first_the_right_root_last() {
    let dir = tempfile::tempdir().unwrap();
    let sentry = start(sentry_command(&dir.path().join("creds"))).unwrap();
    let right = std::fs::read_to_string(dir.path().join("creds/ca.crt")).unwrap();
    let anchors = common::forty_anchors(dir.path(), &right);
    let s = sidecar(&sentry.grpc, &anchors, &dir.path().join("identity"));
    wait_until("readiness", Duration::from_secs(15), || {
        health(&s.http) == 204
    });
    assert_eq!(metric(&s.metrics, "dapr_runtime_mtls_init_total"), 1);
}

/// Issue 14, point 3: a sidecar given only the first root learns new roots from Sentry's
/// answers (`trust_chain_certificates`), so a root change needs no file change and no restart:
/// Sentry publishes the new root beside the old one (old issuer still signing), then switches
/// to the new issuer, then drops the old root. The anchors file is never touched; no renewal
/// fails; the app's `ca.pem` follows the set in force (the file's root stays in it).
#[test]
fn a_sidecar_adopts_sentrys_bundle_live_and_renews_across_a_root_change() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sentry = short_ttl_sentry(dir.path(), port, "4s");
    let creds = dir.path().join("creds");
    let anchors = dir.path().join("anchors.pem");
    std::fs::copy(creds.join("ca.crt"), &anchors).unwrap();
    let file_before = std::fs::read(&anchors).unwrap();
    let id_dir = dir.path().join("identity");
    let sc = sidecar(&format!("127.0.0.1:{port}"), &anchors, &id_dir);
    wait_until("an identity", Duration::from_secs(15), || {
        health(&sc.http) == 204
    });
    let old_ca = std::fs::read_to_string(creds.join("ca.crt")).unwrap();
    let old_root = read_certs(&creds.join("ca.crt"));
    let fresh = fresh_set();
    let new_root = sigil_host::pki::pem_certificates(fresh.ca.as_bytes()).unwrap();
    let replace = |name: &str, body: &str| {
        let tmp = creds.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, creds.join(name)).unwrap();
    };
    let app_anchors = || read_certs(&id_dir.join("ca.pem"));

    // 1. Publish: Sentry's bundle holds both roots; the old issuer still signs.
    replace("ca.crt", &format!("{old_ca}{}", fresh.ca));
    wait_until(
        "the new root adopted from Sentry's answer",
        Duration::from_secs(20),
        || app_anchors().contains(&new_root[0]),
    );
    // 2. Activate: the new issuer signs (the new root first in Sentry's bundle).
    replace("issuer.key", &fresh.key);
    replace("issuer.crt", &fresh.issuer);
    replace("ca.crt", &format!("{}{old_ca}", fresh.ca));
    wait_until(
        "an identity under the new root",
        Duration::from_secs(20),
        || chains_to(&read_certs(&id_dir.join("cert.pem")), &new_root),
    );
    // 3. Retire: Sentry's bundle holds the new root only; the file's (old) root stays in the
    //    sidecar's set, since the user gave it.
    replace("ca.crt", &fresh.ca);
    let rotated = metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total");
    wait_until(
        "a renewal after the retirement",
        Duration::from_secs(20),
        || metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total") > rotated,
    );
    let mut held = app_anchors();
    held.sort();
    let mut want = [old_root.clone(), new_root.clone()].concat();
    want.sort();
    assert_eq!(held, want, "the file's root and Sentry's bundle");
    assert_eq!(
        std::fs::read(&anchors).unwrap(),
        file_before,
        "the anchors file untouched"
    );
    let text = http_get(&sc.metrics, "/metrics");
    assert!(!text.contains("fail_total{"), "a renewal failed: {text}");
    assert_eq!(health(&sc.http), 204);
    drop(sentry);
}

/// Issue 14, point 5: a sidecar takes and renews an identity from a Sentry whose root and
/// issuer are Ed25519 (Dapr 1.18's), validating the Ed25519 chain with the core.
#[test]
fn a_sidecar_renews_under_ed25519_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let (_, pem) = sigil_host::ca::Credentials::generate_with(
        "localhost",
        common::SENTRY_ID,
        std::time::SystemTime::now(),
        Duration::ZERO,
        sigil_host::ca::Generation {
            algorithm: sigil_host::key::KeyAlgorithm::Ed25519,
            ..sigil_host::ca::Generation::default()
        },
    )
    .unwrap();
    std::fs::write(creds.join("ca.crt"), &pem.ca).unwrap();
    std::fs::write(creds.join("issuer.crt"), &pem.issuer).unwrap();
    std::fs::write(creds.join("issuer.key"), pem.key.as_bytes()).unwrap();
    let port = free_port();
    let sentry = short_ttl_sentry(dir.path(), port, "4s");
    let id_dir = dir.path().join("identity");
    let sc = sidecar(&format!("127.0.0.1:{port}"), &creds.join("ca.crt"), &id_dir);
    wait_until("two renewals", Duration::from_secs(20), || {
        metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total") >= 2
    });
    let chain = read_certs(&id_dir.join("cert.pem"));
    let leaf = sigil_core::cert::Certificate::parse(&chain[0]).unwrap();
    assert_eq!(
        leaf.signature_scheme().unwrap(),
        sigil_core::crypto::Scheme::Ed25519
    );
    assert!(chains_to(&chain, &read_certs(&creds.join("ca.crt"))));
    drop(sentry);
}

/// Issue 14, point 4: `sigil ca rotate prepare | activate | retire` on a running Sentry's
/// directory; a sidecar given only the first root follows every step live with no failed
/// renewal, and the steps that would break a holder are refused until it is safe.
#[test]
fn sigil_ca_rotate_by_hand_under_a_running_sentry() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let ca = |args: &[&str]| common::sigil_ca(&creds, args);
    assert!(ca(&["init"]).status.success());
    let first_root = read_certs(&creds.join("ca.crt"));
    let port = free_port();
    let sentry = short_ttl_sentry(dir.path(), port, "3s");
    let anchors = dir.path().join("anchors.pem");
    std::fs::copy(creds.join("ca.crt"), &anchors).unwrap();
    let id_dir = dir.path().join("identity");
    let sc = sidecar(&format!("127.0.0.1:{port}"), &anchors, &id_dir);
    wait_until("an identity", Duration::from_secs(15), || {
        health(&sc.http) == 204
    });
    let times = ["--workload-ttl", "3s", "--skew", "0s"];

    let out = ca(&["rotate", "prepare"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let roots = read_certs(&creds.join("ca.crt"));
    let new_root: Vec<Vec<u8>> = roots
        .iter()
        .filter(|r| !first_root.contains(r))
        .cloned()
        .collect();
    assert_eq!(new_root.len(), 1);
    // Too early: holders may not have the new root yet. (Said with an hour's TTL: with 3 s a
    // slow machine could take that long between two commands.)
    let hour = ["--workload-ttl", "1h", "--skew", "0s"];
    let early = ca(&[&["rotate", "activate"][..], &hour[..]].concat());
    assert_eq!(early.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&early.stderr).contains("too early"));
    wait_until("the new root adopted", Duration::from_secs(20), || {
        read_certs(&id_dir.join("ca.pem")).contains(&new_root[0])
    });
    // One TTL (3 s) after the stamp, which is rounded up to the next whole second.
    std::thread::sleep(Duration::from_secs(4));
    let out = ca(&[&["rotate", "activate"][..], &times[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "an identity under the new root",
        Duration::from_secs(20),
        || chains_to(&read_certs(&id_dir.join("cert.pem")), &new_root),
    );
    let early = ca(&[&["rotate", "retire"][..], &hour[..]].concat());
    assert_eq!(early.status.code(), Some(2));
    std::thread::sleep(Duration::from_secs(4));
    let out = ca(&[&["rotate", "retire"][..], &times[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_certs(&creds.join("ca.crt")), new_root);
    let rotated = metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total");
    wait_until(
        "a renewal after retirement",
        Duration::from_secs(20),
        || metric(&sc.metrics, "dapr_runtime_mtls_workload_cert_rotated_total") > rotated,
    );
    let text = http_get(&sc.metrics, "/metrics");
    assert!(!text.contains("fail_total{"), "a renewal failed: {text}");
    let inspect = ca(&["inspect"]);
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("state: valid"));
    drop(sentry);
}
