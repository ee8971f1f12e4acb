//! Helpers shared by the process tests: starting `sigil sentry` (and reading its ready line),
//! reading its metrics, certificates from PEM files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const SENTRY_ID: &str = "spiffe://localhost/ns/default/dapr-sentry";

/// A running `sigil sentry`.
pub struct Sentry {
    pub child: Child,
    pub grpc: String,
    pub metrics: String,
    pub healthz: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sigil sentry` on free loopback ports (gRPC, health, metrics) with piped output; the
/// caller adds where the credentials are and the trust domain.
pub fn sentry_on_loopback() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sigil"));
    c.arg("sentry")
        .args(["--port", "0", "--listen-address", "127.0.0.1"])
        .args([
            "--healthz-port",
            "0",
            "--healthz-listen-address",
            "127.0.0.1",
        ])
        .args([
            "--metrics-port",
            "0",
            "--metrics-listen-address",
            "127.0.0.1",
        ])
        .env_remove("NAMESPACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// [`sentry_on_loopback`] with its credentials in `dir`, trust domain `localhost`.
pub fn sentry_command(dir: &Path) -> Command {
    let mut c = sentry_on_loopback();
    c.arg("--issuer-credentials")
        .arg(dir)
        .args(["--trust-domain", "localhost"]);
    c
}

/// [`sentry_command`] run under a wrapper (`taskset -c 0`, `sh -c 'ulimit …; exec "$0" "$@"'`):
/// `wrapper` comes first, then Sentry's program and arguments, with the same environment and
/// pipes.
pub fn sentry_command_under(dir: &Path, wrapper: &[&str]) -> Command {
    let plain = sentry_command(dir);
    let (program, args) = wrapper.split_first().expect("a wrapper program");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(plain.get_program())
        .args(plain.get_args())
        .env_remove("NAMESPACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads a child's piped output in the background: its stderr lines are collected (the first
/// value), its stdout lines sent down the channel (the second).
pub fn read_output(child: &mut Child) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let err_lines = stderr.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            err_lines.lock().unwrap().push(line);
        }
    });
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (stderr, rx)
}

/// Starts Sentry on a fixed `port` (so that a restarted one is where the sidecars dial) with its
/// credentials in `dir`/creds and a Configuration, `dir`/config.yaml, giving workload
/// certificates a lifetime of `ttl` and no clock skew.
pub fn short_ttl_sentry(dir: &Path, port: u16, ttl: &str) -> Sentry {
    start(short_ttl_sentry_command(dir, port, ttl, &[])).unwrap()
}

/// The command [`short_ttl_sentry`] runs, with `extra` arguments.
pub fn short_ttl_sentry_command(dir: &Path, port: u16, ttl: &str, extra: &[&str]) -> Command {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("kind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: {ttl}\n    allowedClockSkew: 0s\n"),
    )
    .unwrap();
    let base = sentry_command(&dir.join("creds"));
    let mut cmd = Command::new(base.get_program());
    let mut it = base.get_args();
    while let Some(a) = it.next() {
        cmd.arg(a);
        if a == "--port" {
            it.next();
            cmd.arg(port.to_string());
        }
    }
    cmd.arg("--config")
        .arg(&config)
        .args(extra)
        .env_remove("NAMESPACE")
        .env_remove("SIGIL_CRASH_AT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts Sentry and waits for its ready line; `Err` holds its output if it exited instead.
#[allow(clippy::zombie_processes)] // the child is reaped by `Sentry::drop` or waited on here
pub fn start(mut cmd: Command) -> Result<Sentry, String> {
    let mut child = cmd.spawn().unwrap();
    let (stderr, rx) = read_output(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("sentry: listening ") {
                    let field = |k: &str| {
                        rest.split_whitespace()
                            .find_map(|f| f.strip_prefix(k))
                            .unwrap()
                            .to_owned()
                    };
                    return Ok(Sentry {
                        grpc: field("grpc="),
                        metrics: field("metrics="),
                        healthz: field("healthz="),
                        child,
                        stderr,
                    });
                }
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(format!(
                        "exited {status}: {seen:?} {:?}",
                        stderr.lock().unwrap()
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(200));
                return Err(format!(
                    "exited {status}: {seen:?} {:?}",
                    stderr.lock().unwrap()
                ));
            }
        }
    }
    panic!("Sentry did not become ready: {seen:?}");
}

/// A fresh key and an empty CSR (as Dapr's sidecar sends).
pub fn key_and_csr() -> (sigil_core::key::SoftwareKey, Vec<u8>) {
    let mut key = sigil_core::key::SoftwareKey::generate(&mut rand_core::OsRng);
    let mut buf = [0u8; 512];
    let csr = sigil_core::csr::Builder::new()
        .build(&mut key, &mut buf)
        .unwrap()
        .to_vec();
    (key, csr)
}

pub fn read_certs(path: &Path) -> Vec<Vec<u8>> {
    sigil_host::pki::pem_certificates(&std::fs::read(path).unwrap()).unwrap()
}

pub fn metric(addr: &str, name: &str) -> u64 {
    let body = http_get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {body}"))
}

pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Runs `cmd` to completion and asserts that it succeeded (showing its stderr if not).
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A file's permission bits (e.g. 0o600).
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The status code of a sidecar's `/v1.0/healthz` at `http` (0 if no status line came back).
pub fn health(http: &str) -> u16 {
    http_get(http, "/v1.0/healthz")
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Asserts that none of `ok + failed.len()` calls failed, showing the first failure.
pub fn assert_no_failed_calls(ok: u64, failed: &[String]) {
    assert!(
        failed.is_empty(),
        "{} of {} calls failed, first: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        failed.first()
    );
}

/// Waits until `ok` holds, checking every 100 ms; panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Validates `chain` (leaf first, then intermediates) against `anchors` now, for `usage`.
pub fn verify_now(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    usage: sigil_core::chain::Usage,
) -> Result<(), sigil_core::chain::Error> {
    use sigil_core::chain::{self, Options, TrustBundle};
    let (leaf, rest) = chain.split_first().expect("a certificate");
    let mut bundle: TrustBundle<'_, 4> = TrustBundle::new();
    for a in anchors {
        bundle.add(a).unwrap();
    }
    let ints: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let options = Options {
        usage,
        ..Options::new(sigil_core::UnixTime::from_secs(secs))
    };
    chain::verify(
        leaf,
        &ints,
        &bundle,
        &sigil_host::signature::RingSignatureVerifier,
        &options,
    )
    .map(|_| ())
}

/// A free port on loopback (for a process that must come back on the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `sigil sidecar` and its ready line.
pub struct Proc {
    pub child: Child,
    pub line: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// A `key=value` field of the ready line.
    pub fn field(&self, k: &str) -> String {
        self.line
            .split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap()
            .to_owned()
    }
}

/// Starts `sigil sidecar <args>` (no NAMESPACE, no anchors or token from the environment) and
/// waits for its ready line.
pub fn sidecar_process<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.arg("sidecar")
        .args(args)
        .env_remove("NAMESPACE")
        .env_remove("DAPR_TRUST_ANCHORS")
        .env_remove("DAPR_SENTRY_TOKEN_FILE")
        .stderr(Stdio::null());
    start_sidecar(cmd)
}

/// Starts a `sigil sidecar` command and waits for its ready line (its stdout is taken).
#[allow(clippy::zombie_processes)] // reaped by `Proc::drop`
pub fn start_sidecar(mut cmd: Command) -> Proc {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let line = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("sidecar: app"))
        .expect("the sidecar's ready line");
    Proc { child, line }
}

/// An anchors file of 40 certificates in `dir`: an RSA root first (openssl makes it; the core
/// cannot use it), 38 other P-256 roots, and `right` (PEM, the root that matters) last.
pub fn forty_anchors(dir: &Path, right: &str) -> std::path::PathBuf {
    let rsa = dir.join("rsa-root.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=an RSA root", "-keyout"])
        .arg(dir.join("rsa-root.key"))
        .arg("-out")
        .arg(&rsa)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl made no RSA root");
    let mut pem = std::fs::read_to_string(&rsa).unwrap();
    let now = std::time::SystemTime::now();
    for i in 0..38 {
        let td = format!("other{i}.example");
        let id = format!("spiffe://{td}/ns/default/dapr-sentry");
        let (creds, _) =
            sigil_host::ca::Credentials::generate(&td, &id, now, Duration::ZERO).unwrap();
        pem.push_str(creds.anchors_pem());
    }
    pem.push_str(right);
    let path = dir.join("forty-anchors.pem");
    std::fs::write(&path, pem).unwrap();
    assert_eq!(read_certs(&path).len(), 40);
    path
}

/// Runs `sigil ca <args> --issuer-credentials <creds>` and returns its output.
pub fn sigil_ca(creds: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .arg("ca")
        .args(args)
        .arg("--issuer-credentials")
        .arg(creds)
        .output()
        .unwrap()
}

/// The interop venv's python (`ci/python-venv.sh` makes it, with grpcio and the stubs; it is
/// fast when nothing changed). No Python is not a pass: this panics with the script's output.
pub fn python() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let venv = Command::new("bash")
        .arg("ci/python-venv.sh")
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("bash ci/python-venv.sh: {e}"));
    let out = String::from_utf8_lossy(&venv.stdout);
    assert!(
        venv.status.success(),
        "ci/python-venv.sh failed ({}):\n{out}{}",
        venv.status,
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = std::path::PathBuf::from(
        out.lines()
            .last()
            .expect("ci/python-venv.sh prints the venv's python last")
            .trim(),
    );
    assert!(
        python.is_file(),
        "ci/python-venv.sh printed {python:?}, which is not a file"
    );
    python
}

/// `request` over `openssl s_client -quiet` to `addr` with `client_args` (a client
/// certificate, its chain); what came back. `-quiet` implies `-ign_eof`: it reads until the
/// server closes (send `Connection: close`).
pub fn s_client(addr: &str, client_args: &[&std::ffi::OsStr], request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-quiet"])
        .args(client_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let _ = stdout.read_to_string(&mut out);
    let _ = child.wait();
    out
}
