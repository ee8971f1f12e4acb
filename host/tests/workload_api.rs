//! The sidecar's SPIFFE Workload API (issue 17) against an independent client, the `spiffe`
//! crate's `WorkloadApiClient`: Sentry issues 4 s certificates, the sidecar serves its socket,
//! the client fetches the X.509-SVID and streams X.509 contexts until it has seen the identity
//! change at rotation. A call without the security header is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{free_port, short_ttl_sentry, sidecar_process};
use futures_util::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiffe_crate_client_streams_the_svid_and_sees_each_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sentry = short_ttl_sentry(dir.path(), port, "4s");
    let root = std::fs::read(dir.path().join("creds/ca.crt")).unwrap();
    let root_der = common::read_certs(&dir.path().join("creds/ca.crt"));
    let socket = dir.path().join("workload.sock");
    let sentry = format!("127.0.0.1:{port}");
    let anchors = dir.path().join("creds/ca.crt");
    let _sidecar = sidecar_process(&[
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
        "--workload-api-socket",
        socket.to_str().unwrap(),
    ]);
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
