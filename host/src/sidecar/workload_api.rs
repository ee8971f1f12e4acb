//! The SPIFFE Workload API on a Unix socket (`sigil sidecar --workload-api-socket PATH`), so
//! that any process beside the app (Envoy, spiffe-helper, a program on the `spiffe` crate or
//! go-spiffe) gets the sidecar's identity the way SPIRE's agent gives it, not only a Dapr app.
//!
//! - **The socket** is created with mode 0600 — or 0660 and owned by a group
//!   (`--workload-api-socket-group`, a name from `/etc/group` or a numeric id), for workloads
//!   that run as other users of that group — bound under a temporary name, its mode and group
//!   set, then renamed into place, so it is never reachable with a wider mode or by another
//!   group; a stale socket left by a dead sidecar is replaced, a live one (something answers on
//!   it) or any other file is not.
//! - **Every call** must carry the metadata `workload.spiffe.io: true`, as the specification
//!   requires (a browser or a server-side request forgery cannot set it): otherwise
//!   `INVALID_ARGUMENT`.
//! - **`FetchX509SVID`** streams the identity the sidecar holds (its SPIFFE ID, the leaf and its
//!   intermediates as concatenated DER, the key as PKCS#8 DER, the trust bundle as concatenated
//!   DER) at once, and again at every rotation and every change of the trust anchors; a call
//!   made before the first identity waits for it. **`FetchX509Bundles`** streams the bundle by
//!   trust domain likewise. Sigil's anchors validate every trust domain Sentry issues for, so
//!   the bundle is given for the identity's trust domain.
//! - **`FetchJWTSVID`** answers with the JWT-SVIDs Sentry issued with the identity in use
//!   (`--sentry-request-jwt-audiences`): the per-audience token for one audience, else the
//!   main token when it holds every audience asked for; for other audiences the sidecar mints
//!   tokens on demand, as SPIRE's agent does (a signing round of its own, cached until half
//!   their life: [`IdentityState::jwt_for`]); `NOT_FOUND` when Sentry issues none
//!   (no `--jwt-enabled`), `UNAVAILABLE` when it cannot be reached.
//! - **The socket's bytes** pass through [`crate::net::h2_authority`] first: gRPC C-core and
//!   grpc-java clients send the socket's path as `:authority`, which h2 would refuse.
//! - **`FetchJWTBundles`** and **`ValidateJWTSVID`** use Sentry's JWT key set from
//!   `--jwt-bundle-file` (on Kubernetes, the `jwks.json` key of Dapr's `dapr-trust-bundle`
//!   ConfigMap, mounted): the set is streamed for the identity's trust domain at once and
//!   again when the file changes (looked at every second); a token is validated with it
//!   (signature, audience, expiry with a minute of leeway, a SPIFFE ID as `sub`) and answered
//!   with its ID and claims, or refused with `INVALID_ARGUMENT` and the reason. Without the
//!   flag both answer `UNAVAILABLE`, naming it.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::net::UnixListener;
use tonic::{Request, Response, Status};

use super::identity::{IdentityState, JwtForError};
use crate::workload_pb as pb;

/// The metadata every Workload API call must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The id of `group`: a number as it is, else the name's entry in `/etc/group` (a group known
/// only to a directory service is given by number).
///
/// # Errors
///
/// `NotFound` for a name `/etc/group` does not list.
pub fn group_id(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    std::fs::read_to_string("/etc/group")?
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no group {group:?} in /etc/group (give its numeric id)"),
            )
        })
}

/// Binds the Workload API socket at `path` with mode 0600, or 0660 owned by `group` (see the
/// module doc).
///
/// # Errors
///
/// The path is in use (a live socket, or a file that is not a socket), or the socket cannot be
/// made there (or given to `group`: a user may give a file only to a group it belongs to).
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // Stale only if nobody listens: a socket another process serves (or one this user
            // may not even connect to) is not taken over.
            match std::os::unix::net::UnixStream::connect(path) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("{}: another process serves this socket", path.display()),
                    ))
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "{}: an existing socket that is not ours: {e}",
                            path.display()
                        ),
                    ))
                }
            }
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A private directory beside the socket (same filesystem, for the rename), made 0700 by
    // this process: nobody else can reach the socket, or swap it for a link, before its mode
    // is 0600 and it is renamed into place.
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| std::io::Error::other("the system RNG failed"))?;
    let private: PathBuf = dir.join(format!(
        ".{name}.{}.{}",
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let inner = private.join("s");
    let made = (|| {
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&inner, None, Some(gid))?;
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o660))?;
        }
        std::fs::rename(&inner, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&private);
    made
}

/// The Workload API over the sidecar's identity.
#[derive(Debug)]
pub struct WorkloadApi {
    state: Arc<IdentityState>,
    /// Becomes `true` at shutdown: the streams end then (else a client holding one open would
    /// keep the sidecar from stopping).
    stopping: tokio::sync::watch::Receiver<bool>,
    /// `--jwt-bundle-file`: Sentry's JWT key set.
    jwt_bundle: Option<PathBuf>,
}

impl WorkloadApi {
    /// The API for `state`; its streams end when `stopping` turns `true`.
    pub const fn new(
        state: Arc<IdentityState>,
        stopping: tokio::sync::watch::Receiver<bool>,
        jwt_bundle: Option<PathBuf>,
    ) -> Self {
        Self {
            state,
            stopping,
            jwt_bundle,
        }
    }

    fn jwt_bundle_file(&self) -> Result<&Path, Status> {
        self.jwt_bundle.as_deref().ok_or_else(|| {
            Status::unavailable(
                "no JWT bundle: start the sidecar with --jwt-bundle-file (Sentry's jwks.json)",
            )
        })
    }
}

/// Reads and checks a JWK set file: its bytes and the parsed set.
fn read_jwt_bundle(path: &Path) -> Result<(Vec<u8>, crate::sentry::jwt::Jwks), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let set = crate::sentry::jwt::Jwks::from_json(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((bytes, set))
}

/// A JSON value as protobuf's `Value` (the claims of `ValidateJWTSVID`).
fn to_proto(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(SECURITY_HEADER).map(|v| v.as_bytes()) {
        Some(b"true") => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request (workload.spiffe.io: true)",
        )),
    }
}

/// What one message of a stream is made from: the identity and the anchors in force.
type Snapshot = (Arc<super::identity::Current>, Arc<crate::trust::Anchors>);

/// The identity and anchors now, if both are there.
fn snapshot(state: &IdentityState) -> Option<Snapshot> {
    Some((state.current()?, state.anchors()?))
}

fn concat(ders: &[Vec<u8>]) -> Vec<u8> {
    ders.concat()
}

fn trust_domain(spiffe_id: &str) -> String {
    sigil_core::spiffe::SpiffeId::parse(spiffe_id)
        .map(|i| i.trust_domain().as_str().to_owned())
        .unwrap_or_default()
}

/// A stream of `make(snapshot)`: the first when an identity is held, then one at every
/// change of the identity or the anchors, until `stopping`.
fn follow<T: Send + 'static>(
    state: Arc<IdentityState>,
    stopping: tokio::sync::watch::Receiver<bool>,
    make: fn(&Snapshot) -> T,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    let changes = state.subscribe();
    // The last message's identity generation and anchors (held, so a new set can never be
    // taken for the old one at a reused address).
    let start: (_, _, _, Option<Snapshot>) = (state, changes, stopping, None);
    Box::pin(futures_util::stream::unfold(
        start,
        move |(state, mut changes, mut stopping, last)| async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                if let Some(snap) = snapshot(&state) {
                    let same = last.as_ref().is_some_and(|(c, a)| {
                        c.generation == snap.0.generation && Arc::ptr_eq(a, &snap.1)
                    });
                    if !same {
                        let item = make(&snap);
                        return Some((Ok(item), (state, changes, stopping, Some(snap))));
                    }
                }
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    stopped = stopping.changed() => {
                        // A closed channel (the server gone) ends the stream as a stop does.
                        if stopped.is_err() {
                            return None;
                        }
                    }
                }
            }
        },
    ))
}

fn x509_svid_response((current, anchors): &Snapshot) -> pb::X509svidResponse {
    pb::X509svidResponse {
        svids: vec![pb::X509svid {
            spiffe_id: current.spiffe_id.clone(),
            x509_svid: concat(&current.chain),
            x509_svid_key: current.key_pkcs8.to_vec(),
            bundle: concat(anchors.ders()),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: std::collections::HashMap::new(),
    }
}

fn x509_bundles_response((current, anchors): &Snapshot) -> pb::X509BundlesResponse {
    pb::X509BundlesResponse {
        crl: Vec::new(),
        bundles: std::iter::once((trust_domain(&current.spiffe_id), concat(anchors.ders())))
            .collect(),
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::spiffe_workload_api_server::SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<pb::X509svidResponse>;
    type FetchX509BundlesStream = Streamed<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(follow(
            self.state.clone(),
            self.stopping.clone(),
            x509_svid_response,
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(follow(
            self.state.clone(),
            self.stopping.clone(),
            x509_bundles_response,
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        check_header(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let Some(current) = self.state.current() else {
            return Err(Status::unavailable("no identity issued yet"));
        };
        if !req.spiffe_id.is_empty() && req.spiffe_id != current.spiffe_id {
            return Err(Status::permission_denied(format!(
                "no identity issued for {:?}",
                req.spiffe_id
            )));
        }
        let token = self.state.jwt_for(&req.audience).await.map_err(|e| {
            // The audiences as asked, within reason for a status message.
            let asked: Vec<String> = req
                .audience
                .iter()
                .take(3)
                .map(|a| a.chars().take(64).collect())
                .collect();
            match e {
                JwtForError::Invalid(why) => Status::invalid_argument(why),
                JwtForError::Busy => Status::resource_exhausted(e.to_string()),
                JwtForError::Unavailable(why) => Status::unavailable(why),
                JwtForError::NotIssued(why) => {
                    Status::not_found(format!("no JWT-SVID for audience {asked:?}: {why}"))
                }
            }
        })?;
        Ok(Response::new(pb::JwtsvidResponse {
            svids: vec![pb::Jwtsvid {
                spiffe_id: current.spiffe_id.clone(),
                svid: token,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&req)?;
        let path = self.jwt_bundle_file()?.to_owned();
        read_jwt_bundle(&path).map_err(Status::unavailable)?;
        let start = (
            self.state.clone(),
            self.stopping.clone(),
            path,
            None::<(String, Vec<u8>)>,
        );
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            start,
            |(state, mut stopping, path, last)| async move {
                loop {
                    if *stopping.borrow() {
                        return None;
                    }
                    let td = state.current().map(|c| trust_domain(&c.spiffe_id));
                    // A set that does not read (half written, say) is skipped: the last one
                    // sent stays in force for the client.
                    if let (Some(td), Ok((bytes, _))) = (td, read_jwt_bundle(&path)) {
                        let now = (td, bytes);
                        if last.as_ref() != Some(&now) {
                            let item = pb::JwtBundlesResponse {
                                bundles: std::iter::once(now.clone()).collect(),
                            };
                            return Some((Ok(item), (state, stopping, path, Some(now))));
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        stopped = stopping.changed() => {
                        // A closed channel (the server gone) ends the stream as a stop does.
                        if stopped.is_err() {
                            return None;
                        }
                    }
                    }
                }
            },
        ))))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        check_header(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let (_, set) = read_jwt_bundle(self.jwt_bundle_file()?).map_err(Status::unavailable)?;
        let invalid = |e: String| Status::invalid_argument(format!("invalid JWT-SVID: {e}"));
        let claims =
            crate::sentry::jwt::decode_unverified(&req.svid).map_err(|e| invalid(e.to_string()))?;
        let sub = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("no sub".into()))?
            .to_owned();
        sigil_core::spiffe::SpiffeId::parse(&sub)
            .map_err(|e| invalid(format!("sub {sub:?} is not a SPIFFE ID: {e}")))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        crate::sentry::jwt::verify(
            &req.svid,
            &set,
            &crate::sentry::jwt::Expectations {
                audience: &req.audience,
                subject: &sub,
                now,
                leeway: 60,
            },
        )
        .map_err(|e| invalid(e.to_string()))?;
        Ok(Response::new(pb::ValidateJwtsvidResponse {
            spiffe_id: sub,
            claims: Some(prost_types::Struct {
                fields: claims
                    .iter()
                    .map(|(k, v)| (k.clone(), to_proto(v)))
                    .collect(),
            }),
        }))
    }
}

/// Serves the Workload API on `listener` until `stopped` resolves.
///
/// # Errors
///
/// tonic's transport error.
pub async fn serve(
    state: Arc<IdentityState>,
    listener: UnixListener,
    jwt_bundle: Option<PathBuf>,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let stopped = async move {
        stopped.await;
        let _ = stop_tx.send(true);
    };
    tonic::transport::Server::builder()
        .add_service(
            pb::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(WorkloadApi::new(
                state, stopping, jwt_bundle,
            )),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |conn| conn.map(authority_fixed),
            ),
            stopped,
        )
        .await
}

/// A client's connection as the server reads it: its bytes through a
/// [`crate::net::h2_authority::Rewriter`] (gRPC C-core and grpc-java send the socket's path as
/// `:authority`, which h2 refuses), the server's answers copied back as they are.
fn authority_fixed(client: tokio::net::UnixStream) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (server, ours) = tokio::io::duplex(64 * 1024);
    let (from_server, mut to_server) = tokio::io::split(ours);
    let (mut from_client, mut to_client) = client.into_split();
    let up = tokio::spawn(async move {
        let mut rewriter = crate::net::h2_authority::Rewriter::new();
        let (mut buf, mut out) = (vec![0u8; 16 * 1024], Vec::new());
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            out.clear();
            if let Err(e) = rewriter.feed(buf.get(..n).unwrap_or_default(), &mut out) {
                tracing::debug!(error = %e, "a Workload API client's connection closed");
                break;
            }
            if to_server.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    });
    tokio::spawn(async move {
        let mut from_server = from_server;
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_client).await;
        // The server closed the connection: nothing more to carry to it.
        up.abort();
    });
    server
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    #[tokio::test]
    async fn the_socket_is_private_or_its_groups_and_a_live_one_is_never_taken() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.sock");
        let _private = bind(&own, None).unwrap();
        let meta = std::fs::metadata(&own).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Given to a group: as root, another group than the directory's (so the change shows);
        // otherwise the user's own (a user may give a file only to a group it belongs to).
        let primary = std::fs::metadata(dir.path()).unwrap().gid();
        let gid = match (rustix::process::geteuid().is_root(), primary) {
            (true, 0) => 1,
            (true, _) => 0,
            (false, own) => own,
        };
        let shared = dir.path().join("shared.sock");
        let _group = bind(&shared, Some(gid)).unwrap();
        let meta = std::fs::metadata(&shared).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o777, meta.gid()),
            (0o660, gid)
        );
        // Something serves it: not taken over; nothing left behind in the directory.
        let e = bind(&own, None).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn groups_by_number_or_by_name_from_etc_group() {
        assert_eq!(group_id("4242").unwrap(), 4242);
        assert_eq!(group_id("root").unwrap(), 0);
        let e = group_id("no-such-group-here").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("numeric id"), "{e}");
    }
}
