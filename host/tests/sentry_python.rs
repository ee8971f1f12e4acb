//! Sentry against an independent peer written in Python: grpcio as the gRPC client, openssl
//! for the CSRs and chain verification, `cryptography` to read the certificates, PyJWT for the
//! jwks validator's tokens. `ci/python-venv.sh` makes the venv and the stubs;
//! `tests/interop/sentry_interop.py` starts its own Sentrys from this test's `sigil` binary and
//! runs every check (one line each). No Python is not a pass: the test fails with the script's
//! output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate lives in the workspace")
        .to_path_buf()
}

#[test]
fn sentry_against_python_grpc_openssl_and_pyjwt() {
    let root = repo_root();
    let start = Instant::now();

    let python = common::python();
    println!(
        "python venv ready in {:.1} s: {}",
        start.elapsed().as_secs_f64(),
        python.display()
    );

    let workdir = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(root.join("tests/interop/sentry_interop.py"))
        .arg("--sigil")
        .arg(env!("CARGO_BIN_EXE_sigil"))
        .arg("--workdir")
        .arg(workdir.path())
        .arg("--stubs")
        .arg(root.join("target/python-stubs"))
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
    println!("interop test took {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "sentry_interop.py failed ({}): see the FAIL lines above",
        out.status
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("ok "))
            && !stdout.lines().any(|l| l.starts_with("FAIL ")),
        "sentry_interop.py exited 0 but its output has no passed check or has a FAIL line"
    );
}

/// Runs `tests/interop/jwt_oidc.py` with this test's `sigil` binary, a fresh work directory and
/// `extra` arguments; its output (printed) and stdout.
fn jwt_oidc(extra: &[&str]) -> (std::process::Output, String) {
    let python = common::python();
    let workdir = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(repo_root().join("tests/interop/jwt_oidc.py"))
        .arg("--sigil")
        .arg(env!("CARGO_BIN_EXE_sigil"))
        .arg("--workdir")
        .arg(workdir.path())
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out, stdout)
}

/// Issue 17: JWT-SVIDs from `sigil sign --jwt-audience` verified by PyJWT with the keys the
/// OIDC discovery document points to (over TLS), for RS256, PS256, ES256, ES384 and EdDSA; the
/// OIDC server's host handling (dapr/dapr #10027 and stricter); the flags Sentry refuses.
/// `tests/interop/jwt_oidc.py` starts its own Sentrys from this test's `sigil` binary.
#[test]
fn jwt_svids_verify_with_pyjwt_through_oidc_discovery() {
    let (out, stdout) = jwt_oidc(&[]);
    assert!(
        out.status.success(),
        "jwt_oidc.py failed: see the FAIL lines above"
    );
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 8
            && !stdout.lines().any(|l| l.starts_with("FAIL ")),
        "jwt_oidc.py exited 0 without its eight checks passing"
    );
}

/// Sentry rotates the JWT key it generated with its CA (issue 17): PyJWT, fetching the set from
/// the OIDC server as a relying party would, verifies every token across two rotations with a
/// set fetched before the token was signed, and with every set published while it is valid.
#[test]
fn the_jwt_key_rotates_with_the_ca_and_pyjwt_verifies_across_it() {
    let (out, stdout) = jwt_oidc(&["--rotation"]);
    assert!(
        out.status.success() && stdout.contains("ok jwt_key_rotates_with_the_ca"),
        "jwt_oidc.py --rotation failed: see above"
    );
}
