//! The sidecar's SPIFFE Workload API (issue 17) against an independent client, the `spiffe`
//! crate's `WorkloadApiClient`: Sentry issues 4 s certificates, the sidecar serves its socket,
//! the client fetches the X.509-SVID and streams X.509 contexts until it has seen the identity
//! change at rotation. A call without the security header is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{free_port, short_ttl_sentry, sidecar_process};
use futures_util::StreamExt as _;

/// `sigil sidecar` for app `app1` with Sentry on `port`, the given anchors, every port free,
/// and `extra` arguments.
fn app1_sidecar(port: u16, anchors: &std::path::Path, extra: &[&str]) -> common::Proc {
    let sentry = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--app-id",
        "app1",
        "--sentry-address",
        &sentry,
        "--trust-anchors-file",
        anchors.to_str().unwrap(),
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
    ];
    args.extend_from_slice(extra);
    sidecar_process(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiffe_crate_client_streams_the_svid_and_sees_each_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sentry = short_ttl_sentry(dir.path(), port, "4s");
    let root = std::fs::read(dir.path().join("creds/ca.crt")).unwrap();
    let root_der = common::read_certs(&dir.path().join("creds/ca.crt"));
    let socket = dir.path().join("workload.sock");
    let _sidecar = app1_sidecar(
        port,
        &dir.path().join("creds/ca.crt"),
        &["--workload-api-socket", socket.to_str().unwrap()],
    );
    assert!(!root.is_empty());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket's mode");

    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
        .await
        .unwrap();
    // The first fetch waits for the sidecar's first identity.
    let svid = tokio::time::timeout(Duration::from_secs(20), client.fetch_x509_svid())
        .await
        .expect("an SVID within 20 s")
        .unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://public/ns/default/app1"
    );
    assert_eq!(svid.cert_chain().len(), 2, "leaf and issuer");

    // Streamed: every rotation is a new message with a new leaf, the same ID, the bundle
    // holding Sentry's root.
    // Sentry issues no JWT-SVIDs here (no --jwt-enabled): none minted on demand either.
    let none = client.fetch_jwt_svid(["api://x"], None).await;
    assert!(format!("{none:?}").contains("jwt-enabled"), "{none:?}");

    let mut stream = client.stream_x509_contexts().await.unwrap();
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while leaves.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let ctx = tokio::time::timeout(left, stream.next())
            .await
            .expect("three identities within 30 s")
            .expect("the stream stays open")
            .unwrap();
        let svid = ctx.default_svid().expect("a default SVID");
        assert_eq!(
            svid.spiffe_id().to_string(),
            "spiffe://public/ns/default/app1"
        );
        let td = spiffe::TrustDomain::try_from("public").unwrap();
        let bundle = ctx
            .bundle_set()
            .get(&td)
            .expect("a bundle for the SVID's trust domain");
        let authorities: Vec<Vec<u8>> = bundle
            .authorities()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect();
        assert_eq!(authorities, root_der, "the bundle is Sentry's root");
        let leaf = svid.leaf().as_bytes().to_vec();
        if leaves.last() != Some(&leaf) {
            leaves.push(leaf);
        }
    }
    assert_eq!(
        leaves.len(),
        3,
        "each message after the first is a rotation"
    );

    // Without `workload.spiffe.io: true`: INVALID_ARGUMENT.
    let path = socket.clone();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut raw =
        sigil_host::workload_pb::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel);
    let refused = raw
        .fetch_x509svid(sigil_host::workload_pb::X509svidRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("security header"), "{refused:?}");
}

/// The JWT-SVIDs Sentry issued with the sidecar's certificate (`--sentry-request-jwt-audiences`)
/// through the Workload API: the `spiffe` crate's client fetches the token for each audience
/// asked for, which verifies with the key set Sentry published; audiences not asked for in
/// advance are minted on demand; the app's copy `jwt_svid.token` is 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_svids_from_sentry_through_the_workload_api() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sentry = common::start(common::short_ttl_sentry_command(
        dir.path(),
        port,
        "1h",
        &["--jwt-enabled", "--jwt-signing-algorithm", "ES256"],
    ))
    .unwrap();
    let socket = dir.path().join("workload.sock");
    let identity = dir.path().join("identity");
    let group = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dir.path()).unwrap().gid().to_string()
    };
    let _sidecar = app1_sidecar(
        port,
        &dir.path().join("creds/ca.crt"),
        &[
            "--identity-dir",
            identity.to_str().unwrap(),
            "--workload-api-socket",
            socket.to_str().unwrap(),
            "--sentry-request-jwt-audiences",
            "api://x,sts.example",
            "--jwt-bundle-file",
            dir.path().join("creds/jwks.json").to_str().unwrap(),
            // The socket shared with the directory's group (mode 0660).
            "--workload-api-socket-group",
            &group,
        ],
    );
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o777, meta.gid().to_string()),
        (0o660, group.clone())
    );
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), client.fetch_x509_svid())
        .await
        .expect("an identity within 20 s")
        .unwrap();
    let jwks = sigil_host::sentry::jwt::Jwks::from_json(
        &std::fs::read(dir.path().join("creds/jwks.json")).unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for audience in ["api://x", "sts.example", "public"] {
        let svid = client.fetch_jwt_svid([audience], None).await.unwrap();
        assert_eq!(
            svid.spiffe_id().to_string(),
            "spiffe://public/ns/default/app1"
        );
        assert_eq!(
            svid.audience(),
            [audience.to_owned()],
            "the per-audience token"
        );
        let claims = sigil_host::sentry::jwt::verify(
            svid.token(),
            &jwks,
            &sigil_host::sentry::jwt::Expectations {
                audience,
                subject: "spiffe://public/ns/default/app1",
                now,
                leeway: 60,
            },
        )
        .unwrap();
        assert_eq!(claims.aud, [audience.to_owned()]);
    }
    // Two audiences: the main token, which holds both (and the trust domain).
    let both = client
        .fetch_jwt_svid(["api://x", "sts.example"], None)
        .await
        .unwrap();
    assert_eq!(
        both.audience(),
        [
            "public".to_owned(),
            "api://x".to_owned(),
            "sts.example".to_owned()
        ]
    );
    // Audiences not asked for in advance: minted on demand (a signing round of the sidecar's
    // own), verified with the published set, then served from the cache (the same token).
    for (i, audiences) in [vec!["api://other"], vec!["api://a", "api://b"]]
        .into_iter()
        .enumerate()
    {
        let minted = client.fetch_jwt_svid(&audiences, None).await.unwrap();
        let again = client.fetch_jwt_svid(&audiences, None).await.unwrap();
        assert_eq!(minted.token(), again.token(), "cached");
        let claims = sigil_host::sentry::jwt::verify(
            minted.token(),
            &jwks,
            &sigil_host::sentry::jwt::Expectations {
                audience: audiences[0],
                subject: "spiffe://public/ns/default/app1",
                now,
                leeway: 60,
            },
        )
        .unwrap();
        if i == 0 {
            assert_eq!(
                claims.aud,
                ["api://other".to_owned()],
                "the per-audience token"
            );
        } else {
            assert!(audiences
                .iter()
                .all(|a| claims.aud.contains(&(*a).to_owned())));
        }
    }
    // Beyond Sentry's limits (17 audiences): refused by the sidecar, Sentry not asked.
    let many: Vec<String> = (0..17).map(|i| format!("api://{i}")).collect();
    let refused = client.fetch_jwt_svid(&many, None).await;
    assert!(format!("{refused:?}").contains("1 to 16"), "{refused:?}");
    // Another SPIFFE ID than the sidecar's: refused.
    let spiffe_id = spiffe::SpiffeId::try_from("spiffe://public/ns/default/app2").unwrap();
    let other = client.fetch_jwt_svid(["api://x"], Some(&spiffe_id)).await;
    assert!(other.is_err(), "{other:?}");

    // The JWT bundle (Sentry's published set, from --jwt-bundle-file) for the trust domain,
    // with the key that signed the tokens; validation through the sidecar.
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let td = spiffe::TrustDomain::try_from("public").unwrap();
    let bundle = bundles.get(&td).expect("a JWT bundle for the trust domain");
    assert!(
        bundle.find_jwt_authority(both.key_id()).is_some(),
        "the signing key is in the bundle"
    );
    let valid = client
        .validate_jwt_token("sts.example", both.token())
        .await
        .unwrap();
    assert_eq!(
        valid.spiffe_id().to_string(),
        "spiffe://public/ns/default/app1"
    );
    assert!(client
        .validate_jwt_token("api://other", both.token())
        .await
        .is_err());
    // One signature byte changed (a character well inside the last segment).
    let token = both.token();
    let at = token.len() - 10;
    let c = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{c}{}", &token[..at], &token[at + 1..]);
    assert!(client.validate_jwt_token("api://x", &forged).await.is_err());
    let token = identity.join("jwt_svid.token");
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&token).unwrap(), both.token());
}

/// The identity is renewed for its JWT-SVIDs at half their life when that comes before the
/// certificate's renewal (as daprd): 4 s tokens with 1 h certificates renew every ~2 s.
#[test]
fn short_lived_jwt_svids_drive_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sentry = common::start(common::short_ttl_sentry_command(
        dir.path(),
        port,
        "1h",
        &[
            "--jwt-enabled",
            "--jwt-signing-algorithm",
            "ES256",
            "--jwt-ttl",
            "4s",
        ],
    ))
    .unwrap();
    let sidecar = app1_sidecar(
        port,
        &dir.path().join("creds/ca.crt"),
        &["--sentry-request-jwt-audiences", "api://x"],
    );
    let metrics = sidecar.field("metrics=");
    common::wait_until(
        "three renewals driven by 4 s JWTs",
        Duration::from_secs(20),
        || common::metric(&metrics, "dapr_runtime_mtls_workload_cert_rotated_total") >= 3,
    );
}

/// A second independent client, py-spiffe (the SPIFFE project's Python library): it fetches the
/// X.509-SVID (checking the leaf's profile and key as the specification says) and the bundle,
/// verifies a JWT-SVID with the JWT bundle it fetched, and streams X.509 contexts across two
/// rotations of 4 s certificates.
#[test]
fn py_spiffe_fetches_verifies_and_streams_through_the_workload_api() {
    let python = common::python();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sentry = common::start(common::short_ttl_sentry_command(
        dir.path(),
        port,
        "4s",
        &["--jwt-enabled", "--jwt-signing-algorithm", "ES256"],
    ))
    .unwrap();
    let socket = dir.path().join("workload.sock");
    let _sidecar = app1_sidecar(
        port,
        &dir.path().join("creds/ca.crt"),
        &[
            "--workload-api-socket",
            socket.to_str().unwrap(),
            "--sentry-request-jwt-audiences",
            "api://x",
            "--jwt-bundle-file",
            dir.path().join("creds/jwks.json").to_str().unwrap(),
        ],
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/interop/workload_api_client.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg("--socket")
        .arg(&socket)
        .args(["--id", "spiffe://public/ns/default/app1"])
        .arg("--root")
        .arg(dir.path().join("creds/ca.crt"))
        .args(["--audience", "api://x", "--rotations", "3"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success()
            && stdout.lines().filter(|l| l.starts_with("ok ")).count() == 3
            && !stdout.contains("FAIL "),
        "workload_api_client.py failed: see above"
    );
}
