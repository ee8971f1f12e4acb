//! Kubernetes mode against a real API server (kube-apiserver v1.20.2 and etcd, started per test
//! by `ci/kube-up.sh` from the build `ci/kube-setup.sh` caches): the manifests under
//! `host/deploy/kubernetes/` applied as they are, Sentry running with its own service
//! account's token (never the admin's), workloads with real bound service-account tokens.
//!
//! The cluster is an API server and nothing else (no controllers, scheduler or kubelet): the
//! Sentry replicas are `sigil sentry` processes on loopback, and pods are objects that stay
//! Pending, which is all the kubernetes validator reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sigil_host::client::{SentryClient, SentryTarget, SignRequest};
use sigil_host::pb::sign_certificate_request::TokenValidator;

use common::{key_and_csr, metric, start, wait_until, Sentry};

const NS: &str = "dapr-system";
const TRUST_DOMAIN: &str = "cluster.local";
const SENTRY_ID: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
const KUBE_UP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/kube-up.sh");

/// A throwaway API server; stopped (and its directory removed) when dropped.
struct Cluster {
    dir: String,
    api: String,
    ca: PathBuf,
    kubeconfig: String,
    work: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let out = Command::new("bash").arg(KUBE_UP).output().unwrap();
        assert!(
            out.status.success(),
            "ci/kube-up.sh failed (is the API server built? run `bash ci/kube-setup.sh`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("{name} not in {text}"))
        };
        Self {
            dir: var("SIGIL_KUBE_DIR"),
            api: var("SIGIL_KUBE_API"),
            ca: PathBuf::from(var("SIGIL_KUBE_CA")),
            kubeconfig: var("KUBECONFIG"),
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns its stdout; panics with its stderr if it failed.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    /// The control plane's manifests, as shipped: namespace, Configuration CRD, Sentry's RBAC.
    fn install_control_plane(&self) {
        for f in [
            "00-namespace.yaml",
            "05-configuration-crd.yaml",
            "10-sentry-rbac.yaml",
        ] {
            self.apply(&std::fs::read_to_string(Path::new(DEPLOY).join(f)).unwrap());
        }
        // The CRD is served a moment after it is created.
        wait_until("the Configuration CRD", Duration::from_secs(30), || {
            self.kubectl_output(&["get", "configurations.dapr.io", "-A"], None)
                .status
                .success()
        });
    }

    /// A token of Sentry's own service account, written to a file for `--kube-token-file`.
    fn sentry_token(&self) -> PathBuf {
        let token = self.kubectl(
            &["create", "token", "dapr-sentry", "-n", NS, "--duration=2h"],
            None,
        );
        let path = self.work.path().join("sentry-token");
        std::fs::write(&path, token.trim()).unwrap();
        path
    }

    /// A workload: namespace `ns`, service account `sa`, a pod `pod` annotated with `app_id`,
    /// and a token bound to the pod for Sentry's audience (as daprd's projected token).
    fn workload(&self, ns: &str, sa: &str, pod: &str, app_id: &str) -> String {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: {ns}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  \
             annotations:\n    dapr.io/app-id: {app_id}\nspec:\n  serviceAccountName: {sa}\n  \
             automountServiceAccountToken: false\n  containers:\n  - name: app\n    image: app\n"
        ));
        self.kubectl(
            &[
                "create",
                "token",
                sa,
                "-n",
                ns,
                "--bound-object-kind=Pod",
                &format!("--bound-object-name={pod}"),
                "--audience=dapr.io/sentry",
            ],
            None,
        )
        .trim()
        .to_owned()
    }

    /// A `sigil sentry` replica in kubernetes mode with Sentry's own token.
    fn sentry_command(&self, token: &Path) -> Command {
        let mut c = common::sentry_on_loopback();
        c.args(["--mode", "kubernetes", "--kube-api-server", &self.api])
            .arg("--kube-ca-file")
            .arg(&self.ca)
            .arg("--kube-token-file")
            .arg(token)
            .args(["--trust-domain", TRUST_DOMAIN, "--log-level", "info"])
            .env("NAMESPACE", NS)
            .env("HOME", self.work.path());
        c
    }

    /// Sentry's Configuration file: workload certificates of `ttl`, no back-dating.
    fn sentry_config(&self, ttl: &str) -> PathBuf {
        let config = self.work.path().join("sentry-config.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\n\
                 spec:\n  mtls:\n    workloadCertTTL: {ttl}\n    allowedClockSkew: 0s\n"
            ),
        )
        .unwrap();
        config
    }

    /// A key of an object's `data` (base64-decoded for a Secret).
    fn data(&self, kind: &str, key: &str) -> String {
        let path = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
        let raw = self.kubectl(
            &["get", kind, "dapr-trust-bundle", "-n", NS, "-o", &path],
            None,
        );
        if kind == "secret" {
            decode_b64(&raw)
        } else {
            raw
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([KUBE_UP, "--down", &self.dir])
            .status();
    }
}

fn decode_b64(s: &str) -> String {
    use base64ct::Encoding as _;
    String::from_utf8(base64ct::Base64::decode_vec(s.trim()).unwrap()).unwrap()
}

/// One signing round as the workload holding `token`, checked against `anchors`, for the
/// kubernetes validator.
async fn sign(
    addr: &str,
    anchors: &str,
    token: &str,
    id: &str,
    ns: &str,
) -> Result<sigil_host::client::Signed, sigil_host::client::ClientError> {
    sign_with(addr, anchors, token, id, ns, TokenValidator::Kubernetes).await
}

/// [`sign`] asking for `validator`.
async fn sign_with(
    addr: &str,
    anchors: &str,
    token: &str,
    id: &str,
    ns: &str,
    validator: TokenValidator,
) -> Result<sigil_host::client::Signed, sigil_host::client::ClientError> {
    let anchors = sigil_host::trust::Anchors::from_pem("ca.crt", anchors.as_bytes()).unwrap();
    let target = SentryTarget {
        address: addr.to_owned(),
        anchors: Arc::new(anchors),
        sentry_id: SENTRY_ID.into(),
    };
    let mut c = SentryClient::connect(target).await?;
    let (key, csr) = key_and_csr();
    let req = SignRequest {
        id: id.into(),
        namespace: ns.into(),
        token: token.into(),
        token_validator: i32::from(validator),
        csr_der: csr,
        ..SignRequest::default()
    };
    c.sign(&req, sigil_core::crypto::Signer::public_key(&key))
        .await
}

fn start_replicas(cluster: &Cluster, token: &Path, n: usize) -> Vec<Sentry> {
    start_replicas_with(cluster, token, n, &[])
}

/// [`start_replicas`] with more arguments for each.
fn start_replicas_with(
    cluster: &Cluster,
    token: &Path,
    n: usize,
    extra: &[&std::ffi::OsStr],
) -> Vec<Sentry> {
    start_all(
        (0..n)
            .map(|_| {
                let mut cmd = cluster.sentry_command(token);
                cmd.args(extra);
                cmd
            })
            .collect(),
    )
}

/// Starts the Sentry commands, all spawned before any is waited on: they race for the Secret.
fn start_all(commands: Vec<Command>) -> Vec<Sentry> {
    let children: Vec<_> = commands
        .into_iter()
        .map(|cmd| std::thread::spawn(move || start(cmd)))
        .collect();
    children
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect()
}

/// Replicas that can be killed one by one (`take()`), and their addresses.
fn killable(replicas: Vec<Sentry>) -> (Vec<Option<Sentry>>, Vec<String>) {
    let addresses = replicas.iter().map(|s| s.grpc.clone()).collect();
    (replicas.into_iter().map(Some).collect(), addresses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_replicas_started_at_once_agree_on_one_root_in_the_secret_and_publish_it() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let replicas = start_replicas(&cluster, &token, 3);

    // One root: exactly one replica generated (the others read the winner's Secret).
    let generated: u64 = replicas
        .iter()
        .map(|s| metric(&s.metrics, "dapr_sentry_issuercert_changed_total"))
        .sum();
    assert_eq!(generated, 1, "roots created by the replicas");
    let ca = cluster.data("secret", "ca.crt");
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    assert!(cluster.data("secret", "issuer.key").contains("PRIVATE KEY"));
    assert_eq!(cluster.data("configmap", "ca.crt"), ca, "ConfigMap in step");

    // Every replica signs for a real workload under that root.
    let cart = cluster.workload("shop", "cart", "cart-0", "cart");
    for s in &replicas {
        let signed = sign(&s.grpc, &ca, &cart, "cart", "shop").await.unwrap();
        assert_eq!(
            signed.trust_bundle,
            sigil_host::pki::pem_certificates(ca.as_bytes()).unwrap()
        );
    }
    println!("k8s: replicas=3 roots_created={generated} identities=3");
    // The Secret was written once: a restart loads it, generates nothing.
    drop(replicas);
    let again = start(cluster.sentry_command(&token)).unwrap();
    assert_eq!(
        metric(&again.metrics, "dapr_sentry_issuercert_changed_total"),
        0
    );
    assert_eq!(cluster.data("secret", "ca.crt"), ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_a_secret_replaced_by_kubectl_apply_under_load_fails_no_request_and_a_bad_one_is_refused(
) {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let replicas = start_replicas(&cluster, &token, 2);
    let old_ca = cluster.data("secret", "ca.crt");
    let cart = cluster.workload("shop", "cart", "cart-0", "cart");

    // The new set, trusted by clients alongside the old one (as a user replacing a root
    // publishes the new root first).
    let new = credential_set(TRUST_DOMAIN);
    let both = format!("{old_ca}{}", new.ca);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for s in &replicas {
        let (addr, both, cart) = (s.grpc.clone(), both.clone(), cart.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match sign(&addr, &both, &cart, "cart", "shop").await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("sign failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.apply(&secret_yaml(&new.ca, &new.issuer, &new.key));
    let new_root = sigil_host::pki::pem_certificates(new.ca.as_bytes()).unwrap();
    for s in &replicas {
        let addr = s.grpc.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let signed = sign(&addr, &both, &cart, "cart", "shop").await.unwrap();
            if signed.trust_bundle == new_root {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {addr} never took the new set"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        cluster.data("configmap", "ca.crt"),
        new.ca,
        "ConfigMap follows"
    );

    // A set whose key is not the issuer's: refused, the good set keeps serving.
    let other = credential_set(TRUST_DOMAIN);
    cluster.apply(&secret_yaml(&new.ca, &new.issuer, &other.key));
    for s in &replicas {
        let m = s.metrics.clone();
        wait_until("the bad set refused", Duration::from_secs(30), || {
            metric(&m, "sigil_sentry_credentials_reload_refused_total") >= 1
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let signed = sign(&replicas[0].grpc, &both, &cart, "cart", "shop")
        .await
        .unwrap();
    assert_eq!(signed.trust_bundle, new_root, "the last good set serves");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("k8s: secret_swaps=1 identities={ok} calls_failed={failed}");
    assert!(ok > 10, "{ok} signed");
    assert_eq!(failed, 0, "requests failed across the replacement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_a_configmap_out_of_step_is_reported_and_corrected_never_regenerated() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let first = start(cluster.sentry_command(&token)).unwrap();
    let ca = cluster.data("secret", "ca.crt");
    drop(first);
    let other = credential_set("elsewhere");
    let indent: String = other.ca.lines().map(|l| format!("    {l}\n")).collect();
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dapr-trust-bundle\n  namespace: {NS}\n\
         data:\n  ca.crt: |\n{indent}"
    ));
    let again = start(cluster.sentry_command(&token)).unwrap();
    assert_eq!(
        metric(&again.metrics, "dapr_sentry_issuercert_changed_total"),
        0
    );
    assert_eq!(
        cluster.data("secret", "ca.crt"),
        ca,
        "the Secret is never regenerated"
    );
    assert_eq!(
        cluster.data("configmap", "ca.crt"),
        ca,
        "the ConfigMap is corrected"
    );
    let logged = again.stderr.lock().unwrap().join("\n");
    assert!(logged.contains("held other anchors"), "{logged}");
}

#[test]
fn k8s_sentrys_role_is_least_privilege_and_workloads_cannot_read_the_secret() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    cluster.workload("shop", "cart", "cart-0", "cart");
    let can = |who: &str, args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", who];
        all.extend_from_slice(args);
        let out = cluster.kubectl_output(&all, None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let sentry = "system:serviceaccount:dapr-system:dapr-sentry";
    let cart = "system:serviceaccount:shop:cart";
    for verb in ["get", "watch", "update"] {
        for kind in ["secrets", "configmaps"] {
            let what = format!("{kind}/dapr-trust-bundle");
            assert!(
                can(sentry, &[verb, &what, "-n", NS]),
                "sentry {verb} {what}"
            );
        }
    }
    assert!(can(sentry, &["create", "secrets", "-n", NS]));
    assert!(can(
        sentry,
        &["create", "tokenreviews.authentication.k8s.io"]
    ));
    assert!(can(sentry, &["get", "pods", "-n", "shop"]));
    assert!(can(
        sentry,
        &["get", "configurations.dapr.io", "-n", "shop"]
    ));
    // Nothing else.
    assert!(!can(sentry, &["get", "secrets/other", "-n", NS]));
    assert!(!can(sentry, &["list", "secrets", "-n", NS]));
    assert!(!can(
        sentry,
        &["delete", "secrets/dapr-trust-bundle", "-n", NS]
    ));
    assert!(!can(sentry, &["get", "secrets", "-n", "shop"]));
    assert!(!can(sentry, &["list", "pods", "-n", "shop"]));
    // A workload cannot read Sentry's credentials.
    assert!(!can(cart, &["get", "secrets/dapr-trust-bundle", "-n", NS]));
    assert!(!can(cart, &["get", "secrets", "-n", "shop"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_the_kubernetes_validator_checks_real_bound_tokens() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let sentry = start(cluster.sentry_command(&token)).unwrap();
    let ca = cluster.data("secret", "ca.crt");
    let cart = cluster.workload("shop", "cart", "cart-0", "cart");
    // Sentry's default validator in kubernetes mode is kubernetes.
    let signed = sign_with(
        &sentry.grpc,
        &ca,
        &cart,
        "cart",
        "shop",
        TokenValidator::Unknown,
    )
    .await
    .unwrap();
    let leaf = sigil_core::cert::Certificate::parse(&signed.chain[0]).unwrap();
    assert_eq!(
        leaf.spiffe_ids().next().unwrap().as_str(),
        "spiffe://public/ns/shop/cart"
    );
    // Another app's ID, another namespace, a token for another audience: refused.
    let denied = |r: Result<_, sigil_host::client::ClientError>| match r {
        Err(sigil_host::client::ClientError::Refused { code, message }) => {
            assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
            message
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    };
    let m = denied(sign(&sentry.grpc, &ca, &cart, "checkout", "shop").await);
    assert!(m.contains("app-id mismatch"), "{m}");
    denied(sign(&sentry.grpc, &ca, &cart, "cart", "default").await);
    let wrong_audience = cluster
        .kubectl(
            &[
                "create",
                "token",
                "cart",
                "-n",
                "shop",
                "--bound-object-kind=Pod",
                "--bound-object-name=cart-0",
                "--audience=someone-else",
            ],
            None,
        )
        .trim()
        .to_owned();
    let m = denied(sign(&sentry.grpc, &ca, &wrong_audience, "cart", "shop").await);
    assert!(
        m.contains("not authenticated") || m.contains("audience"),
        "{m}"
    );
    let m = denied(sign(&sentry.grpc, &ca, "not-a-token", "cart", "shop").await);
    assert!(!m.contains("not-a-token"), "the token is never echoed: {m}");
    // The insecure validator is off in kubernetes mode.
    match sign_with(
        &sentry.grpc,
        &ca,
        &cart,
        "cart",
        "shop",
        TokenValidator::Insecure,
    )
    .await
    {
        Err(sigil_host::client::ClientError::Refused { code, .. }) => {
            assert_eq!(code, tonic::Code::InvalidArgument);
        }
        other => panic!("insecure accepted: {:?}", other.map(|_| ())),
    }
}

/// The trust-bundle ConfigMap as kubelet mounts it: `dir/ca.crt` → `..data/ca.crt`, `..data` →
/// a timestamped directory, replaced by swapping the `..data` symlink.
struct Mount {
    dir: PathBuf,
    version: usize,
}

impl Mount {
    fn new(dir: PathBuf, ca: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Self { dir, version: 0 };
        m.update(ca);
        std::os::unix::fs::symlink("..data/ca.crt", m.dir.join("ca.crt")).unwrap();
        m
    }

    /// What kubelet does when the ConfigMap changes: a new directory, then one rename of the
    /// `..data` link onto it.
    fn update(&mut self, ca: &str) {
        self.version += 1;
        let name = format!("..2026_11_29_{:04}", self.version);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("ca.crt"), ca).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// A new root, issuer and key (PEM), as a user would bring them.
fn credential_set(trust_domain: &str) -> sigil_host::ca::GeneratedPem {
    sigil_host::ca::Credentials::generate(
        trust_domain,
        SENTRY_ID,
        SystemTime::now(),
        Duration::ZERO,
    )
    .unwrap()
    .1
}

/// A Secret manifest holding a credential set.
fn secret_yaml(ca: &str, issuer: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dapr-trust-bundle\n  namespace: {NS}\n\
         type: Opaque\nstringData:\n  ca.crt: |\n{}  issuer.crt: |\n{}  issuer.key: |\n{}",
        indent(ca),
        indent(issuer),
        indent(key)
    )
}

#[test]
fn k8s_a_sidecar_on_kubernetes_uses_its_pod_token_and_the_mounted_bundle_and_fails_over() {
    use std::io::BufRead as _;
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    // Short-lived certificates, so the sidecar renews every few seconds.
    let config = cluster.sentry_config("10s");
    let (mut replicas, addresses) = killable(start_replicas_with(
        &cluster,
        &token,
        3,
        &["--config".as_ref(), config.as_os_str()],
    ));
    let old_ca = cluster.data("secret", "ca.crt");

    // The pod's token, and the ConfigMap mounted as kubelet would, kept in sync by a
    // "kubelet" thread.
    let cart = cluster.workload("shop", "cart", "cart-0", "cart");
    let token_file = cluster.work.path().join("cart-token");
    std::fs::write(&token_file, &cart).unwrap();
    let mount = Arc::new(std::sync::Mutex::new(Mount::new(
        cluster.work.path().join("trust-bundle"),
        &cluster.data("configmap", "ca.crt"),
    )));
    let anchors_file = mount.lock().unwrap().file();
    let syncing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let kubelet = {
        let (mount, syncing) = (mount.clone(), syncing.clone());
        let kubeconfig = cluster.kubeconfig.clone();
        std::thread::spawn(move || {
            let mut seen = String::new();
            while syncing.load(Ordering::Relaxed) {
                let out = Command::new("kubectl")
                    .args(["get", "configmap", "dapr-trust-bundle", "-n", NS])
                    .args(["-o", "jsonpath={.data.ca\\.crt}"])
                    .env("KUBECONFIG", &kubeconfig)
                    .output()
                    .unwrap();
                let now = String::from_utf8(out.stdout).unwrap();
                if out.status.success() && !now.is_empty() && now != seen {
                    if !seen.is_empty() {
                        mount.lock().unwrap().update(&now);
                    }
                    seen = now;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    let identity_dir = cluster.work.path().join("identity");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["sidecar", "--mode", "kubernetes", "--app-id", "cart"])
        .args(["--sentry-address", &addresses.join(",")])
        .args(["--control-plane-trust-domain", TRUST_DOMAIN])
        .args(["--control-plane-namespace", NS])
        .arg("--trust-anchors-file")
        .arg(&anchors_file)
        .arg("--identity-dir")
        .arg(&identity_dir)
        .args(["--dapr-http-port", "0", "--dapr-internal-port", "0"])
        .args(["--dapr-grpc-port", "0"])
        .args([
            "--dapr-internal-address",
            "127.0.0.1",
            "--metrics-port",
            "0",
        ])
        .env("NAMESPACE", "shop")
        .env("DAPR_SENTRY_TOKEN_FILE", &token_file)
        .env_remove("DAPR_TRUST_ANCHORS")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(cluster.work.path().join("sidecar.log")).unwrap())
        .spawn()
        .unwrap();
    let ready = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("sidecar: app"))
        .expect("the sidecar's ready line");
    let metrics_addr = ready
        .split_whitespace()
        .find_map(|f| f.strip_prefix("metrics="))
        .unwrap()
        .to_owned();
    let sidecar_metric = |name: &str| {
        common::http_get(&metrics_addr, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let no_failures = || {
        let text = common::http_get(&metrics_addr, "/metrics");
        assert!(
            !text.contains("fail_total{"),
            "a renewal failed: {}",
            text.lines()
                .filter(|l| l.contains("fail_total{"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    };
    let log = cluster.work.path().join("sidecar.log");
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "the sidecar exited {status}: {}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    wait_until("the first identity", Duration::from_secs(30), || {
        sidecar_metric("dapr_runtime_mtls_init_total") == 1
    });

    // One replica dies: renewals go to the others, none fails.
    drop(replicas[0].take());
    let rotated = sidecar_metric("dapr_runtime_mtls_workload_cert_rotated_total");
    wait_until(
        "two renewals after a replica died",
        Duration::from_secs(60),
        || sidecar_metric("dapr_runtime_mtls_workload_cert_rotated_total") >= rotated + 2,
    );
    no_failures();

    // A root replaced as the procedure says: the new root published first (old issuer), then
    // the new issuer. The mounted bundle follows the ConfigMap; no renewal fails.
    let new = credential_set(TRUST_DOMAIN);
    let old_issuer = cluster.data("secret", "issuer.crt");
    let old_key = cluster.data("secret", "issuer.key");
    cluster.apply(&secret_yaml(
        &format!("{old_ca}{}", new.ca),
        &old_issuer,
        &old_key,
    ));
    let both = sigil_host::pki::pem_certificates(format!("{old_ca}{}", new.ca).as_bytes()).unwrap();
    wait_until(
        "the mounted bundle holds both roots",
        Duration::from_secs(30),
        || {
            std::fs::read(&anchors_file)
                .ok()
                .and_then(|b| sigil_host::pki::pem_certificates(&b).ok())
                .is_some_and(|a| a.len() == both.len())
        },
    );
    // The sidecar applies its anchors file after a short debounce.
    std::thread::sleep(Duration::from_secs(1));
    cluster.apply(&secret_yaml(
        &format!("{}{old_ca}", new.ca),
        &new.issuer,
        &new.key,
    ));
    let new_root = sigil_host::pki::pem_certificates(new.ca.as_bytes()).unwrap();
    wait_until(
        "the sidecar renewed under the new root",
        Duration::from_secs(60),
        || {
            std::fs::read(identity_dir.join("cert.pem"))
                .ok()
                .and_then(|b| sigil_host::pki::pem_certificates(&b).ok())
                .is_some_and(|chain| {
                    common::verify_now(&chain, &new_root, sigil_core::chain::Usage::ClientAuth)
                        .is_ok()
                })
        },
    );
    no_failures();
    syncing.store(false, Ordering::Relaxed);
    kubelet.join().unwrap();
    println!(
        "k8s: identities={} failovers=1 secret_swaps=2 calls_failed=0",
        sidecar_metric("dapr_runtime_mtls_workload_cert_rotated_total") + 1
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Every manifest under `host/deploy/kubernetes` is accepted by the API server as it is,
/// except one rewrite the old server needs: the PodDisruptionBudget's `policy/v1` (Kubernetes
/// 1.21+) as `policy/v1beta1` (1.20). Nothing runs them here (no controllers, no kubelet):
/// this proves the objects are valid and the RBAC, CRD and Configuration work, not the pods.
#[test]
fn k8s_the_manifests_apply_to_a_real_api_server() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let mut files: Vec<_> = std::fs::read_dir(DEPLOY)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    // A server-side dry run cannot create a namespace for the objects after it.
    cluster.kubectl(&["create", "namespace", "shop"], None);
    for f in &files {
        let yaml = std::fs::read_to_string(f)
            .unwrap()
            .replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n");
        // The server's own validation first, then for real.
        cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        cluster.apply(&yaml);
    }
    let got = cluster.kubectl(
        &[
            "get",
            "deployment,service,pdb,configmap",
            "-n",
            NS,
            "-o",
            "name",
        ],
        None,
    );
    for want in [
        "deployment.apps/dapr-sentry",
        "service/dapr-sentry",
        "poddisruptionbudget.policy/dapr-sentry",
        "configmap/dapr-sentry-config",
    ] {
        assert!(got.contains(want), "{want} not in {got}");
    }
    let td = cluster.kubectl(
        &[
            "get",
            "configurations.dapr.io",
            "daprsystem",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.mtls.workloadCertTTL}",
        ],
        None,
    );
    assert_eq!(td, "24h");
    assert!(cluster
        .kubectl(
            &["get", "deployment", "cart", "-n", "shop", "-o", "name"],
            None
        )
        .contains("cart"));
}

/// Issuance throughput with one, two and three replicas behind the same API server (printed,
/// not asserted: the machine is shared). Each signing call is a new TLS connection, a
/// TokenReview and a pod read, as daprd's are; on two cores the API server, etcd, the
/// replicas and the clients share the same CPUs, so this shows the cost per call and that
/// replicas add no failure, not how a cluster with a core per replica scales.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_issuance_throughput_with_one_two_and_three_replicas() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let replicas = start_replicas(&cluster, &token, 3);
    let ca = cluster.data("secret", "ca.crt");
    let cart = cluster.workload("shop", "cart", "cart-0", "cart");
    for n in 1..=3 {
        let addresses: Vec<String> = replicas.iter().take(n).map(|s| s.grpc.clone()).collect();
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let until = Instant::now() + Duration::from_secs(4);
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let (addresses, ca, cart) = (addresses.clone(), ca.clone(), cart.clone());
                let (ok, failed) = (ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut i = c;
                    while Instant::now() < until {
                        let addr = &addresses[i % addresses.len()];
                        match sign(addr, &ca, &cart, "cart", "shop").await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        i += 1;
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        println!(
            "k8s-throughput: replicas={n} signed_per_second={:.0} failed={failed}",
            ok as f64 / 4.0
        );
        assert_eq!(failed, 0);
        assert!(ok > 0);
    }
}

/// Sustained signing through the sidecar's transport (every replica's address, failover) while
/// a replica is killed: no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_clients_fail_over_when_a_replica_dies_under_load() {
    use sigil_host::sidecar::identity::{SentryTransport, Transport as _};
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let (mut replicas, addresses) = killable(start_replicas(&cluster, &token, 3));
    let ca = cluster.data("secret", "ca.crt");
    let cart = cluster.workload("shop", "cart", "cart-0", "cart");
    let anchors = Arc::new(sigil_host::trust::Anchors::from_pem("ca.crt", ca.as_bytes()).unwrap());
    let transport = Arc::new(SentryTransport::new(addresses, SENTRY_ID.into()));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let until = Instant::now() + Duration::from_secs(6);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (transport, anchors, cart) = (transport.clone(), anchors.clone(), cart.clone());
            let (ok, failed) = (ok.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let (_, csr) = key_and_csr();
                    let req = SignRequest {
                        id: "cart".into(),
                        namespace: "shop".into(),
                        token: cart.clone(),
                        token_validator: i32::from(TokenValidator::Kubernetes),
                        csr_der: csr,
                        ..SignRequest::default()
                    };
                    match transport.sign(req, anchors.clone()).await {
                        Ok(signed) if !signed.chain.is_empty() => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(_) => failed.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("sign failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = ok.load(Ordering::Relaxed);
    drop(replicas[0].take()); // killed, mid-request for some clients
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("k8s: failovers=1 identities={ok} calls_failed={failed}");
    assert!(before > 0 && ok > before, "{before} then {ok}");
    assert_eq!(failed, 0, "calls failed across the replica's death");
}

/// `cmd` (a `sigil sentry` command) serving gRPC on `port` instead.
fn on_port(cmd: &Command, port: &str) -> Command {
    let mut args: Vec<std::ffi::OsString> = cmd.get_args().map(ToOwned::to_owned).collect();
    if let Some(at) = args.iter().position(|x| x == "--port") {
        args[at + 1] = port.into();
    }
    let mut out = Command::new(cmd.get_program());
    out.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    out
}

/// An app that answers every request 200 (`ok`) on a free loopback port, one connection at a
/// time per thread.
fn ok_app() -> u16 {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(tcp.try_clone().unwrap());
                let mut tcp = tcp;
                loop {
                    // The request head (the calls carry no body).
                    let mut line = String::new();
                    let mut any = false;
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        any = true;
                        if line == "\r\n" {
                            break;
                        }
                        line.clear();
                    }
                    if !any
                        || tcp
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Calls `GET /v1.0/invoke/b/method/ping` through the sidecar serving HTTP at `http` until
/// `stop`; returns (succeeded, the first failures).
fn calls(
    http: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let answer = common::http_get(&http, "/v1.0/invoke/b/method/ping");
            if answer.starts_with("HTTP/1.1 200") {
                ok += 1;
            } else if failed.len() < 10 {
                failed.push(answer);
            } else {
                failed.push(String::new());
            }
        }
        (ok, failed)
    })
}

/// Issue 14 in Kubernetes mode: two Sentry replicas sharing the Secret rotate the root and the
/// issuer they generated (60 s each; workload certificates of 5 s) with no operator: each step
/// is one replace of the Secret at the resourceVersion read, so it is taken once however many
/// replicas wake for it, and the ConfigMap follows. A replica killed (abort, as kill -9) right
/// after writing a step, before the ConfigMap, loses nothing. Two sidecars given only the
/// first root call each other throughout: no call fails, no renewal fails, nobody restarts,
/// and at the end the first root is gone from the Secret and the ConfigMap and both replicas
/// sign with the Secret's issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_two_replicas_rotate_the_root_in_the_secret_by_themselves_and_calls_never_fail() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let config = cluster.sentry_config("5s");
    let replica = |crash: Option<&str>| {
        let mut cmd = cluster.sentry_command(&token);
        cmd.arg("--config")
            .arg(&config)
            .args(["--root-ttl", "60s", "--issuer-ttl", "60s"])
            // The JWT key Sentry generates rotates with the CA (issue 17).
            .args([
                "--jwt-enabled",
                "--jwt-signing-algorithm",
                "ES256",
                "--jwt-ttl",
                "5s",
            ]);
        match crash {
            // Whichever replica takes the first prepare dies right after writing it.
            Some(point) => cmd.env("SIGIL_CRASH_AT", point),
            None => cmd.env_remove("SIGIL_CRASH_AT"),
        };
        cmd
    };
    let mut replicas: Vec<Sentry> = start_all(vec![
        replica(Some("prepare:committed")),
        replica(Some("prepare:committed")),
    ]);
    let addresses: Vec<String> = replicas.iter().map(|s| s.grpc.clone()).collect();
    let first_ca = cluster.data("secret", "ca.crt");
    let first_root = sigil_host::pki::pem_certificates(first_ca.as_bytes()).unwrap();
    assert!(
        !cluster.data("secret", "sigil.auto").trim().is_empty(),
        "a generated set is marked for automatic rotation"
    );
    let first_jwt_key = cluster.data("secret", "jwt.key");
    assert_eq!(
        sigil_host::ca::jwt::key_thumbprint(&first_jwt_key).as_deref(),
        Some(cluster.data("secret", "sigil.jwt.auto").trim()),
        "a generated JWT key is marked"
    );

    // Every issuer the Secret holds, as it changes (a step a minute at most: 300 ms polls see
    // each one).
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let issuers = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = {
        let (watching, issuers) = (watching.clone(), issuers.clone());
        let kubeconfig = cluster.kubeconfig.clone();
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let out = Command::new("kubectl")
                    .args(["get", "secret", "dapr-trust-bundle", "-n", NS])
                    .args(["-o", "jsonpath={.data.issuer\\.crt}"])
                    .env("KUBECONFIG", &kubeconfig)
                    .output()
                    .unwrap();
                let now = String::from_utf8(out.stdout).unwrap();
                let mut seen = issuers.lock().unwrap();
                if out.status.success() && !now.is_empty() && seen.last() != Some(&now) {
                    seen.push(now);
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // Two sidecars in namespace shop with their pods' tokens, given the first root only.
    let anchors = cluster.work.path().join("first-root.pem");
    std::fs::write(&anchors, &first_ca).unwrap();
    let (ia, ib) = (common::free_port(), common::free_port());
    let names = cluster.work.path().join("names.yaml");
    std::fs::write(&names, format!("a: 127.0.0.1:{ia}\nb: 127.0.0.1:{ib}\n")).unwrap();
    let app = ok_app();
    let sidecar = |id: &str, internal: u16, extra: &[&str]| {
        let token_file = cluster.work.path().join(format!("{id}-token"));
        std::fs::write(
            &token_file,
            cluster.workload("shop", id, &format!("{id}-0"), id),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
        cmd.args(["sidecar", "--mode", "kubernetes", "--app-id", id])
            .args(["--sentry-address", &addresses.join(",")])
            .args(["--control-plane-trust-domain", TRUST_DOMAIN])
            .args(["--control-plane-namespace", NS])
            .arg("--trust-anchors-file")
            .arg(&anchors)
            .arg("--resolution-file")
            .arg(&names)
            .args(["--dapr-http-port", "0", "--metrics-port", "0"])
            .args(["--dapr-grpc-port", "0"])
            .args(["--dapr-internal-address", "127.0.0.1"])
            .args(["--dapr-internal-port", &internal.to_string()])
            .args(extra)
            .env("NAMESPACE", "shop")
            .env("DAPR_SENTRY_TOKEN_FILE", &token_file)
            .env_remove("DAPR_TRUST_ANCHORS")
            .stderr(std::fs::File::create(cluster.work.path().join(format!("{id}.log"))).unwrap());
        common::start_sidecar(cmd)
    };
    let a = sidecar("a", ia, &[]);
    let b = sidecar("b", ib, &["--app-port", &app.to_string()]);
    for p in [&a, &b] {
        let http = p.field("http=");
        wait_until("the sidecar's readiness", Duration::from_secs(30), || {
            common::health(&http) == 204
        });
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calling = calls(a.field("http="), stop.clone());

    // The first prepare (about 30 s in) kills the replica that took it, right after its write
    // to the Secret; it is restarted at once, and the survivor restarted cleanly (it would
    // abort at its own next prepare).
    let deadline = Instant::now() + Duration::from_secs(90);
    let died = loop {
        if let Some(i) = replicas
            .iter_mut()
            .position(|r| r.child.try_wait().unwrap().is_some())
        {
            break i;
        }
        assert!(Instant::now() < deadline, "no replica took the prepare");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        replicas[died]
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("SIGIL_CRASH_AT=prepare:committed")),
        "replica {died} died otherwise"
    );
    // The step is in the Secret; the ConfigMap is caught up by the survivor's watch.
    let prepared =
        sigil_host::pki::pem_certificates(cluster.data("secret", "ca.crt").as_bytes()).unwrap();
    assert_eq!(
        prepared.len(),
        first_root.len() + 1,
        "the new root is published"
    );
    wait_until(
        "the ConfigMap follows the prepare",
        Duration::from_secs(30),
        || cluster.data("configmap", "ca.crt") == cluster.data("secret", "ca.crt"),
    );
    let mut restarted: Vec<Sentry> = Vec::new();
    for i in [died, 1 - died] {
        // The same gRPC port: the sidecars know the replicas by address.
        let port = replicas[i].grpc.rsplit(':').next().unwrap().to_owned();
        let cmd = on_port(&replica(None), &port);
        if i != died {
            // Stopped first (the other replica serves meanwhile).
            let _ = replicas[i].child.kill();
            let _ = replicas[i].child.wait();
        }
        restarted.push(start(cmd).unwrap_or_else(|e| panic!("restarting replica {i}: {e}")));
    }
    drop(replicas);

    // Two activations and their retirements, taken by whichever replica woke first.
    let count = |name: &str| -> u64 {
        restarted
            .iter()
            .map(|r| common::metric(&r.metrics, name))
            .sum()
    };
    wait_until(
        "two automatic activations and retirements",
        Duration::from_secs(150),
        || {
            count("sigil_sentry_ca_rotation_steps_total{step=\"activate\"}") >= 2
                && count("sigil_sentry_ca_rotation_steps_total{step=\"retire\"}") >= 2
        },
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = calling.join().unwrap();
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    common::assert_no_failed_calls(ok, &failed);
    assert!(ok > 100, "only {ok} calls");

    // Each step once: as many activations counted as issuers the Secret went through.
    let activations = count("sigil_sentry_ca_rotation_steps_total{step=\"activate\"}");
    let distinct = issuers.lock().unwrap().len() as u64;
    assert_eq!(
        activations,
        distinct - 1,
        "an activation was taken twice or missed"
    );
    assert_eq!(count("sigil_sentry_ca_rotation_failures_total"), 0);
    // The first root is gone; the ConfigMap holds what the Secret holds.
    let ca = cluster.data("secret", "ca.crt");
    let roots = sigil_host::pki::pem_certificates(ca.as_bytes()).unwrap();
    assert!(
        roots.iter().all(|r| !first_root.contains(r)),
        "the first root is still published"
    );
    wait_until("the ConfigMap in step", Duration::from_secs(30), || {
        cluster.data("configmap", "ca.crt") == cluster.data("secret", "ca.crt")
    });
    // Both replicas sign with the Secret's issuer, checked against the ConfigMap's bundle.
    let issuer =
        sigil_host::pki::pem_certificates(cluster.data("secret", "issuer.crt").as_bytes()).unwrap();
    let token_a = std::fs::read_to_string(cluster.work.path().join("a-token")).unwrap();
    for r in &restarted {
        let signed = sign(
            &r.grpc,
            &cluster.data("configmap", "ca.crt"),
            &token_a,
            "a",
            "shop",
        )
        .await
        .unwrap();
        assert_eq!(
            signed.chain.get(1),
            issuer.first(),
            "replica {} signs with another issuer",
            r.grpc
        );
    }
    for p in [&a, &b] {
        let text = common::http_get(&p.field("metrics="), "/metrics");
        assert!(!text.contains("fail_total{"), "a renewal failed: {text}");
        assert_eq!(common::health(&p.field("http=")), 204, "a sidecar is down");
    }
    // The JWT key rotated with the CA: a new key signs, marked; the first one left the set
    // once retired; the ConfigMap publishes the Secret's set.
    let jwt_key = cluster.data("secret", "jwt.key");
    let jwks = cluster.data("secret", "jwks.json");
    assert_ne!(jwt_key, first_jwt_key, "the JWT key did not rotate");
    assert_eq!(
        sigil_host::ca::jwt::key_thumbprint(&jwt_key).as_deref(),
        Some(cluster.data("secret", "sigil.jwt.auto").trim())
    );
    assert!(sigil_host::ca::jwt::kid_in_set(&jwks, &jwt_key).is_some());
    assert!(sigil_host::ca::jwt::kid_in_set(&jwks, &first_jwt_key).is_none());
    let published = serde_json::from_str::<serde_json::Value>(&jwks).unwrap()["keys"]
        .as_array()
        .unwrap()
        .len();
    assert!(published <= 2, "{published} keys published");
    wait_until(
        "the ConfigMap's jwks.json in step",
        Duration::from_secs(30),
        || cluster.data("configmap", "jwks.json") == cluster.data("secret", "jwks.json"),
    );
    println!(
        "k8s: ca_activations={activations} calls_failed=0 rotation_calls={ok} killed_after_step=1 jwt_keys_published={published}"
    );
}

/// Issue 17 in Kubernetes mode: three replicas started at once with `--jwt-enabled` settle on
/// one JWT key in the Secret (Dapr's `jwt.key` and `jwks.json`, beside the CA's), the
/// ConfigMap publishes the set, every replica's tokens verify with it, and a restart loads
/// the key (nothing generated again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_replicas_share_one_jwt_key_in_the_secret_and_publish_its_set() {
    let cluster = Cluster::start();
    cluster.install_control_plane();
    let token = cluster.sentry_token();
    let jwt: [&std::ffi::OsStr; 3] = [
        "--jwt-enabled".as_ref(),
        "--jwt-signing-algorithm".as_ref(),
        "ES256".as_ref(),
    ];
    let replicas = start_replicas_with(&cluster, &token, 3, &jwt);
    let key = cluster.data("secret", "jwt.key");
    assert!(key.contains("PRIVATE KEY"), "{key}");
    let set = cluster.data("secret", "jwks.json");
    assert_eq!(
        cluster.data("configmap", "jwks.json"),
        set,
        "ConfigMap in step"
    );
    let parsed: serde_json::Value = serde_json::from_str(&set).unwrap();
    assert_eq!(
        parsed["keys"].as_array().map(Vec::len),
        Some(1),
        "one key for all the replicas: {set}"
    );
    let jwks = sigil_host::sentry::jwt::Jwks::from_json(set.as_bytes()).unwrap();
    let ca = cluster.data("secret", "ca.crt");
    let cart = cluster.workload("shop", "cart", "cart-0", "cart");
    for s in &replicas {
        let anchors = sigil_host::trust::Anchors::from_pem("ca.crt", ca.as_bytes()).unwrap();
        let mut c = SentryClient::connect(SentryTarget {
            address: s.grpc.clone(),
            anchors: Arc::new(anchors),
            sentry_id: SENTRY_ID.into(),
        })
        .await
        .unwrap();
        let (k, csr) = key_and_csr();
        let req = SignRequest {
            id: "cart".into(),
            namespace: "shop".into(),
            token: cart.clone(),
            token_validator: i32::from(TokenValidator::Kubernetes),
            csr_der: csr,
            jwt_audiences: vec!["api://x".into()],
            ..SignRequest::default()
        };
        let signed = c
            .sign(&req, sigil_core::crypto::Signer::public_key(&k))
            .await
            .unwrap();
        let leaf = sigil_core::cert::Certificate::parse(&signed.chain[0]).unwrap();
        let subject = leaf.spiffe_ids().next().unwrap().as_str().to_owned();
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        sigil_host::sentry::jwt::verify(
            signed.jwt.as_deref().expect("a JWT-SVID"),
            &jwks,
            &sigil_host::sentry::jwt::Expectations {
                audience: "api://x",
                subject: &subject,
                now,
                leeway: 60,
            },
        )
        .unwrap();
    }
    drop(replicas);
    let again = start_replicas_with(&cluster, &token, 1, &jwt);
    assert_eq!(
        cluster.data("secret", "jwt.key"),
        key,
        "loaded, not generated"
    );
    assert_eq!(cluster.data("secret", "jwks.json"), set);

    // Replaced in the Secret while Sentry runs: a pair that does not fit is refused (the
    // ConfigMap keeps the set in use), a good one is reloaded and published.
    let patch = |k: &str, v: &str| {
        use base64ct::Encoding as _;
        let body =
            serde_json::json!({ "data": { k: base64ct::Base64::encode_string(v.as_bytes()) } });
        cluster.kubectl(
            &[
                "patch",
                "secret",
                "dapr-trust-bundle",
                "-n",
                NS,
                "--type",
                "merge",
                "-p",
                &body.to_string(),
            ],
            None,
        );
    };
    let fresh = tempfile::tempdir().unwrap();
    let paths = sigil_host::ca::jwt::JwtKeyPaths {
        key: fresh.path().join("jwt.key"),
        jwks: fresh.path().join("jwks.json"),
    };
    let (new_keys, _, _) = sigil_host::ca::jwt::load_or_generate(
        &paths,
        sigil_host::ca::jwt::JwtAlgorithm::ES256,
        None,
        None,
    )
    .unwrap();
    let new_key = std::fs::read_to_string(&paths.key).unwrap();
    let new_set = std::fs::read_to_string(&paths.jwks).unwrap();
    patch("jwt.key", &new_key);
    let refused = |s: &Sentry| metric(&s.metrics, "sigil_sentry_credentials_reload_refused_total");
    wait_until(
        "the mismatched pair refused",
        Duration::from_secs(20),
        || refused(&again[0]) >= 1,
    );
    assert_eq!(
        cluster.data("configmap", "jwks.json"),
        set,
        "the set in use stays published"
    );
    patch("jwks.json", &new_set);
    wait_until("the new set published", Duration::from_secs(20), || {
        cluster.data("configmap", "jwks.json") == new_keys.jwks_json()
    });
    println!(
        "k8s: jwt replicas=3 keys=1 reloaded=1 refused={}",
        refused(&again[0])
    );
}
