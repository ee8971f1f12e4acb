//! Service invocation in Dapr's HTTP form. The app calls its sidecar on loopback at
//! `/v1.0/invoke/<app-id>/method/<method>`; the sidecar resolves `<app-id>` through the
//! name-resolution file to that app's sidecar, forwards the request over mutual TLS (HTTP/2,
//! one multiplexed connection per peer, reconnected when it closes), and the peer sidecar calls
//! its app at `127.0.0.1:<app-port>/<method>`. Method, headers, body and status pass through;
//! bodies stream in both directions and are never buffered whole.
//!
//! Name resolution file (YAML or JSON): a map from app ID to the address of that app's
//! sidecar's mTLS port, re-read when it changes:
//!
//! ```yaml
//! checkout: 127.0.0.1:50002
//! cart: 10.0.0.7:50002
//! ```
//!
//! Errors reach the app as Dapr-style JSON (`{"errorCode": ..., "message": ...}`): an unknown
//! app ID is 404 `ERR_DIRECT_INVOKE`, a peer that cannot be reached 502, a peer whose identity
//! is refused (or that refuses ours) 502 with the TLS reason, an app that does not answer 502.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use super::identity::IdentityState;
use super::mtls;

/// A response body: streamed from a peer, or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that belong to one connection and are not forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The header naming the calling app, as Dapr sets it.
pub const CALLER_HEADER: &str = "dapr-caller-app-id";
/// The header naming the calling app's namespace, as Dapr sets it.
pub const CALLER_NAMESPACE_HEADER: &str = "dapr-caller-namespace";
/// The header naming the called app, as Dapr sets it.
pub const CALLEE_HEADER: &str = "dapr-callee-app-id";
/// The header carrying the caller's verified SPIFFE ID (trust domain included) to the app.
pub const CALLER_SPIFFE_HEADER: &str = "x-sigil-caller-spiffe-id";

/// How the sidecar invokes and is invoked.
#[derive(Clone, Debug)]
pub struct InvokeConfig {
    /// This app's ID.
    pub app_id: String,
    /// This app's namespace (peers are expected in it).
    pub namespace: String,
    /// The app's port on 127.0.0.1.
    pub app_port: Option<u16>,
    /// `--app-protocol`: what the app speaks there; gRPC invocation reaches only a `grpc` app.
    pub app_protocol: AppProtocol,
    /// The name-resolution file.
    pub resolution: Option<PathBuf>,
    /// Mutual TLS between sidecars (`spec.mtls.enabled`); off: plain TCP.
    pub mtls: bool,
    /// Which callers that chain to the anchors are accepted (default: any).
    pub callers: mtls::CallerPolicy,
    /// Dapr's access-control policies on this app's operations (`spec.accessControl`).
    pub acl: Arc<super::acl::Acl>,
    /// `--allowed-origins`: none (no CORS headers), `*`, or a list.
    pub allowed_origins: Option<Vec<String>>,
}

/// What the app speaks on its port (Dapr's `--app-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppProtocol {
    /// HTTP/1.1 (Dapr's default): HTTP invocation.
    #[default]
    Http,
    /// gRPC (HTTP/2 without TLS): gRPC invocation, and HTTP invocation as before.
    Grpc,
}

impl std::str::FromStr for AppProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "http" => Ok(Self::Http),
            "grpc" => Ok(Self::Grpc),
            other => Err(format!(
                "--app-protocol {other:?}: http or grpc (Dapr's https, grpcs and h2c are not \
                 supported)"
            )),
        }
    }
}

/// Name resolution, re-read when the file's modification time changes.
#[derive(Debug, Default)]
struct Resolver {
    path: Option<PathBuf>,
    cache: Mutex<(Option<SystemTime>, BTreeMap<String, String>)>,
}

impl Resolver {
    fn resolve(&self, app_id: &str) -> Result<Option<String>, String> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("name resolution file {}: {e}", path.display()))?;
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| "name resolution cache poisoned".to_owned())?;
        if cache.0 != Some(modified) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("name resolution file {}: {e}", path.display()))?;
            let map: BTreeMap<String, String> = serde_norway::from_str(&text)
                .map_err(|e| format!("name resolution file {}: {e}", path.display()))?;
            *cache = (Some(modified), map);
        }
        Ok(cache.1.get(app_id).cloned())
    }
}

/// One HTTP/2 connection per (app ID, address), reused while it is open: a connection is only
/// ever used for the app whose identity its handshake checked.
type Peers = Mutex<BTreeMap<(String, String), hyper::client::conn::http2::SendRequest<Body>>>;

/// How long a call waits for the answer's head (the body then streams without a limit).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client has to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The sidecar's data plane (both directions).
#[derive(Debug)]
pub struct Invoker {
    config: InvokeConfig,
    state: Arc<IdentityState>,
    resolver: Resolver,
    peers: Peers,
    /// The HTTP/2 connection to the app for gRPC invocation, reused while it is open.
    pub(super) grpc_app: Mutex<Option<hyper::client::conn::http2::SendRequest<Body>>>,
    /// Refused handshakes on the internal port: one log line per [`REFUSAL_LOG_INTERVAL`].
    refusals: crate::logs::Throttle,
}

/// Refused mTLS handshakes are summarised: one line per interval, with the count held back.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errorCode": code, "message": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Removes the hop-by-hop headers: the fixed list, and every header the `Connection` header
/// names (RFC 9110 §7.6.1: a sender lists there the headers meant for this hop only, so a
/// proxy that forwards them lets a client smuggle headers the next hop treats as its own).
pub(super) fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    // Split the raw bytes: a value with a byte outside visible ASCII still names its headers.
    let named: Vec<hyper::header::HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|name| hyper::header::HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

impl Invoker {
    /// A data plane for `config`, presenting and checking identities from `state`.
    pub fn new(config: InvokeConfig, state: Arc<IdentityState>) -> Arc<Self> {
        Arc::new(Self {
            resolver: Resolver {
                path: config.resolution.clone(),
                cache: Mutex::default(),
            },
            config,
            state,
            peers: Mutex::default(),
            grpc_app: Mutex::default(),
            refusals: crate::logs::Throttle::new(REFUSAL_LOG_INTERVAL),
        })
    }

    /// This sidecar's settings.
    pub(super) fn config(&self) -> &InvokeConfig {
        &self.config
    }

    /// The address of `app_id`'s sidecar in the name-resolution file.
    pub(super) fn resolve(&self, app_id: &str) -> Result<Option<String>, String> {
        self.resolver.resolve(app_id)
    }

    /// Handles a request from the app on the loopback API.
    pub async fn handle_app(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let origin = req.headers().get(hyper::header::ORIGIN).cloned();
        let mut resp = if req.uri().path() == "/v1.0/healthz"
            || req.uri().path() == "/v1.0/healthz/outbound"
        {
            let status = if self.state.is_ready() {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = status;
            r
        } else if req.method() == hyper::Method::OPTIONS
            && origin.is_some()
            && self.config.allowed_origins.is_some()
        {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        } else {
            match self.clone().invoke(req).await {
                Ok(r) => r,
                Err(r) => r,
            }
        };
        cors(
            self.config.allowed_origins.as_deref(),
            origin,
            resp.headers_mut(),
        );
        resp
    }

    async fn invoke(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Response<Body>> {
        let path = req.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/v1.0/invoke/") else {
            return Err(json_error(
                StatusCode::NOT_FOUND,
                "ERR_NOT_FOUND",
                &format!("no route for {path}"),
            ));
        };
        let Some((target, method)) = rest.split_once("/method/") else {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "ERR_DIRECT_INVOKE",
                "expected /v1.0/invoke/<app-id>/method/<method>",
            ));
        };
        let address = match self.resolver.resolve(target) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(json_error(
                    StatusCode::NOT_FOUND,
                    "ERR_DIRECT_INVOKE",
                    &format!("failed to resolve app {target:?}: not in the name resolution file"),
                ))
            }
            Err(e) => {
                return Err(json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_DIRECT_INVOKE",
                    &e,
                ))
            }
        };
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // What the app claims about the caller is replaced by who this sidecar is (with mTLS
        // on, the callee's sidecar replaces it again with what the handshake proved).
        for (name, value) in [
            (CALLER_HEADER, self.config.app_id.as_str()),
            (CALLER_NAMESPACE_HEADER, self.config.namespace.as_str()),
            (CALLEE_HEADER, target),
        ] {
            set_header(&mut parts.headers, name, Some(value));
        }
        parts.headers.remove(CALLER_SPIFFE_HEADER);
        parts.headers.remove(super::grpc::PROTOCOL_HEADER);
        parts.headers.remove(super::grpc::API_TOKEN_HEADER);
        parts.uri = format!("http://{target}/{method}{query}")
            .parse()
            .map_err(|e| {
                json_error(
                    StatusCode::BAD_REQUEST,
                    "ERR_DIRECT_INVOKE",
                    &format!("{e}"),
                )
            })?;
        parts.version = hyper::Version::HTTP_2;
        let outgoing = Request::from_parts(parts, body.boxed());
        let mut sender = self
            .connection(target, &address)
            .await
            .map_err(|e| json_error(StatusCode::BAD_GATEWAY, "ERR_DIRECT_INVOKE", &e))?;
        let resp = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(outgoing))
            .await
            .map_err(|_| {
                json_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "ERR_DIRECT_INVOKE",
                    &format!("invoking {target} at {address}: no answer in {CALL_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| {
                if sender.is_closed() {
                    self.forget(target, &address);
                }
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "ERR_DIRECT_INVOKE",
                    &format!("invoking {target} at {address}: {e}"),
                )
            })?;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }

    pub(super) fn forget(&self, target: &str, address: &str) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.remove(&(target.to_owned(), address.to_owned()));
        }
    }

    /// The open connection to `address`, or a new one (mTLS checked for `target`).
    ///
    /// # Errors
    ///
    /// Why the peer could not be reached, in words for the app.
    pub(super) async fn connection(
        &self,
        target: &str,
        address: &str,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, String> {
        let key = (target.to_owned(), address.to_owned());
        if let Ok(peers) = self.peers.lock() {
            if let Some(s) = peers.get(&key) {
                if !s.is_closed() {
                    return Ok(s.clone());
                }
            }
        }
        let unreachable = |e: String| format!("cannot reach {target} at {address}: {e}");
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let sender = if self.config.mtls {
            let config = mtls::client_config(self.state.clone(), &self.config.namespace, target)
                .map_err(|e| unreachable(e.to_string()))?;
            let name = rustls::pki_types::ServerName::try_from("sigil-sidecar")
                .map_err(|e| unreachable(e.to_string()))?;
            let tls = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
            )
            .await
            .map_err(|_| {
                unreachable("TLS handshake timed out (is mTLS enabled on the peer?)".into())
            })?
            .map_err(|e| format!("mTLS with {target} at {address} failed: {e}"))?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
        .map_err(|e| {
            unreachable(format!(
                "{e} (does the peer expect {}?)",
                if self.config.mtls {
                    "plain TCP"
                } else {
                    "mTLS"
                }
            ))
        })?;
        if let Ok(mut peers) = self.peers.lock() {
            peers.insert(key, sender.clone());
        }
        Ok(sender)
    }

    /// Handles a request from a peer sidecar: calls the app on loopback.
    pub async fn handle_peer(
        self: Arc<Self>,
        req: Request<Incoming>,
        caller: Option<String>,
    ) -> Response<Body> {
        if super::grpc::is_forwarded_grpc(req.headers()) {
            return self.handle_peer_grpc(req, caller).await;
        }
        let Some(port) = self.config.app_port else {
            return json_error(
                StatusCode::NOT_FOUND,
                "ERR_DIRECT_INVOKE",
                "this sidecar has no app (--app-port)",
            );
        };
        let mut path = req
            .uri()
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str)
            .to_owned();
        // Access control: the path and the method are normalised, checked, and delivered as
        // checked.
        let mut delivered_method = None;
        if let Some(policy) = self.config.acl.enabled() {
            let operation = match crate::dapr::acl::normalize(req.uri().path()) {
                Ok(op) => op,
                Err(e) => {
                    return json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ERR_DIRECT_INVOKE",
                        &format!(
                            "failed to invoke, id: {}, err: invalid method: {e}",
                            self.config.app_id
                        ),
                    )
                }
            };
            let verb = crate::dapr::acl::canonical_verb(req.method().as_str());
            delivered_method = Some(verb);
            let decision =
                policy.decide(caller.as_deref(), &operation, super::acl::Call::Http(verb));
            if let Some(d) = decision.filter(|d| !d.allowed()) {
                tracing::debug!(caller = ?caller, operation, verb, why = d.why, "invocation denied by the access-control policy");
                return json_error(
                    StatusCode::FORBIDDEN,
                    "ERR_DIRECT_INVOKE",
                    &format!(
                        "failed to invoke, id: {}, err: rpc error: code = PermissionDenied desc = \
                         access control policy has denied access to id: {} operation: {} verb: {}",
                        self.config.app_id,
                        caller.as_deref().unwrap_or(""),
                        operation.trim_start_matches('/'),
                        verb
                    ),
                );
            }
            path = match req.uri().query() {
                Some(q) => format!("{}?{q}", crate::dapr::acl::encode_path(&operation)),
                None => crate::dapr::acl::encode_path(&operation),
            };
        }
        let (mut parts, body) = req.into_parts();
        if let Some(m) = delivered_method.and_then(|m| hyper::Method::from_bytes(m.as_bytes()).ok())
        {
            parts.method = m;
        }
        strip_hop_by_hop(&mut parts.headers);
        caller_headers(&mut parts.headers, caller.as_deref(), &self.config.app_id);
        let app = format!("127.0.0.1:{port}");
        if let Ok(host) = hyper::header::HeaderValue::from_str(&app) {
            parts.headers.insert(hyper::header::HOST, host);
        }
        parts.version = hyper::Version::HTTP_11;
        parts.uri = match path.parse() {
            Ok(u) => u,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "ERR_DIRECT_INVOKE",
                    &format!("{e}"),
                )
            }
        };
        let tcp = match TcpStream::connect(&app).await {
            Ok(t) => t,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_GATEWAY,
                    "ERR_DIRECT_INVOKE",
                    &format!("the app at {app} is not reachable: {e}"),
                )
            }
        };
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
                Ok(x) => x,
                Err(e) => {
                    return json_error(
                        StatusCode::BAD_GATEWAY,
                        "ERR_DIRECT_INVOKE",
                        &format!("{e}"),
                    )
                }
            };
        tokio::spawn(conn);
        let call = sender.send_request(Request::from_parts(parts, body));
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // The sidecar answers in its own protocol version, whatever the app spoke
                // (an HTTP/1.0 app must not turn the caller's HTTP/1.1 answer into 1.0).
                parts.version = hyper::Version::default();
                Response::from_parts(parts, body.boxed())
            }
            Ok(Err(e)) => json_error(
                StatusCode::BAD_GATEWAY,
                "ERR_DIRECT_INVOKE",
                &format!("the app at {app} failed: {e}"),
            ),
            Err(_) => json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "ERR_DIRECT_INVOKE",
                &format!("the app at {app} did not answer in {CALL_TIMEOUT:?}"),
            ),
        }
    }
}

/// Sets `name` to `value`, or removes it when `value` is `None` or not a valid header value.
pub(super) fn set_header(headers: &mut hyper::HeaderMap, name: &'static str, value: Option<&str>) {
    match value.and_then(|v| hyper::header::HeaderValue::from_str(v).ok()) {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// The caller headers the app behind this (callee) sidecar sees. Who called is what the mTLS
/// handshake proved (`caller`, the SPIFFE ID of the peer's certificate), never what the request
/// says: Dapr's `dapr-caller-app-id` and `dapr-caller-namespace` come from the ID's
/// `/ns/<namespace>/<app-id>` path (and are removed when the ID has no such path), and
/// `x-sigil-caller-spiffe-id` carries the whole ID, so an app can tell
/// `spiffe://evil.org/ns/attacker-ns/checkout` from `spiffe://public/ns/default/checkout`.
/// With mTLS off (`caller` is `None`) nothing is proved: the calling sidecar's claims pass as
/// Dapr passes them, and no SPIFFE ID is claimed. `dapr-callee-app-id` is this app's ID.
pub(super) fn caller_headers(headers: &mut hyper::HeaderMap, caller: Option<&str>, callee: &str) {
    set_header(headers, CALLEE_HEADER, Some(callee));
    let Some(id) = caller else {
        headers.remove(CALLER_SPIFFE_HEADER);
        return;
    };
    let parsed = sigil_core::spiffe::SpiffeId::parse(id).ok();
    let dapr = parsed.as_ref().and_then(sigil_core::spiffe::SpiffeId::dapr);
    set_header(headers, CALLER_HEADER, dapr.as_ref().map(|d| d.app_id()));
    set_header(
        headers,
        CALLER_NAMESPACE_HEADER,
        dapr.as_ref().map(|d| d.namespace()),
    );
    set_header(headers, CALLER_SPIFFE_HEADER, parsed.map(|_| id));
}

/// `--allowed-origins`: none by default (no CORS headers), `*`, or a list. With `*` the answer
/// is `*` itself (the Origin is never echoed: echoing turns "any origin" into "this origin",
/// which browsers then accept for credentialed requests too); with a list, a listed Origin is
/// echoed with `Vary: Origin`. The opaque origin `null` (sandboxed frames, `file:` pages,
/// redirects) is never echoed, even when listed: every such page sends the same `null`.
fn cors(
    allowed: Option<&[String]>,
    origin: Option<hyper::header::HeaderValue>,
    headers: &mut hyper::HeaderMap,
) {
    use hyper::header::{self, HeaderValue};
    let (Some(allowed), Some(origin)) = (allowed, origin) else {
        return;
    };
    if allowed.iter().any(|a| a == "*") {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else if origin.as_bytes() != b"null"
        && allowed.iter().any(|a| origin.as_bytes() == a.as_bytes())
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    } else {
        return;
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("HEAD, GET, POST, PUT, PATCH, DELETE"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
}

/// HTTP/1.1 and HTTP/2 with timers: a client must send a request's head within
/// [`HEADER_READ_TIMEOUT`]; idle HTTP/2 peers are pinged.
pub(super) fn server_builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20));
    b
}

pub(super) async fn handshake<T>(
    io: TokioIo<T>,
) -> Result<hyper::client::conn::http2::SendRequest<Body>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Serves the app-facing API on `listener` (bind it to loopback) until `stopped` resolves.
pub async fn serve_app(
    invoker: Arc<Invoker>,
    listener: TcpListener,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut stopped => return,
            c = crate::net::accept(&listener) => c,
        };
        let invoker = invoker.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let invoker = invoker.clone();
                async move { Ok::<_, Infallible>(invoker.handle_app(req).await) }
            });
            let _ = server_builder()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Serves peer sidecars on `listener` (mTLS unless disabled) until `stopped` resolves; each
/// connection keeps its handshake's identity for its whole life.
///
/// # Errors
///
/// rustls's error if the TLS configuration cannot be built.
pub async fn serve_peers(
    invoker: Arc<Invoker>,
    listener: TcpListener,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<(), rustls::Error> {
    let acceptor = if invoker.config.mtls {
        let config = mtls::server_config(invoker.state.clone(), invoker.config.callers.clone())?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    } else {
        None
    };
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => return Ok(()),
            c = crate::net::accept(&listener) => c,
        };
        let (invoker, acceptor) = (invoker.clone(), acceptor.clone());
        tokio::spawn(async move {
            serve_peer_connection(invoker, acceptor, tcp, peer).await;
        });
    }
}

async fn serve_peer_connection(
    invoker: Arc<Invoker>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let builder = server_builder();
    match acceptor {
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        if let Some(more) = invoker.refusals.admit(std::time::Instant::now()) {
                            tracing::info!(
                                %peer,
                                error = ?e.to_string(),
                                more_since_last_line = more,
                                "peer refused at the mTLS handshake"
                            );
                        }
                        return;
                    }
                    Err(_) => return,
                };
            let caller = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| {
                    sigil_core::cert::Certificate::parse(leaf.as_ref())
                        .ok()
                        .and_then(|c| c.spiffe_ids().next().map(|i| i.as_str().to_owned()))
                });
            // The verifier accepted a SPIFFE ID; should none be read back, the connection is
            // closed rather than served as if nothing were proved (which would pass the
            // request's own caller headers).
            let Some(caller) = caller else {
                tracing::warn!(%peer, "verified peer without a readable SPIFFE ID; closed");
                return;
            };
            let caller = Some(caller);
            let service = hyper::service::service_fn(move |req| {
                let (invoker, caller) = (invoker.clone(), caller.clone());
                async move { Ok::<_, Infallible>(invoker.handle_peer(req, caller).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        }
        None => {
            let service = hyper::service::service_fn(move |req| {
                let invoker = invoker.clone();
                async move { Ok::<_, Infallible>(invoker.handle_peer(req, None).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use hyper::header::HeaderValue;
    use hyper::HeaderMap;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn headers_named_in_connection_are_not_forwarded() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Hop"),
            ("connection", "x-second"),
            ("x-hop", "1"),
            ("x-second", "2"),
            ("x-kept", "3"),
            ("te", "trailers"),
        ]);
        h.append(
            "connection",
            HeaderValue::from_bytes(b"x-third, \xe9t\xe9").unwrap(),
        );
        h.append("x-third", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(hyper::header::HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn cors_star_answers_star_and_never_echoes_null() {
        let star = vec!["*".to_owned()];
        let list = vec!["https://shop.example".to_owned(), "null".to_owned()];
        let origin = |o: &'static str| Some(HeaderValue::from_static(o));
        let allow = |allowed: Option<&[String]>, o| {
            let mut h = HeaderMap::new();
            cors(allowed, o, &mut h);
            (
                h.get("access-control-allow-origin")
                    .map(|v| v.to_str().unwrap().to_owned()),
                h.get("vary").is_some(),
            )
        };
        assert_eq!(
            allow(Some(&star), origin("https://any.example")),
            (Some("*".into()), false)
        );
        assert_eq!(
            allow(Some(&star), origin("null")),
            (Some("*".into()), false)
        );
        assert_eq!(
            allow(Some(&list), origin("https://shop.example")),
            (Some("https://shop.example".into()), true)
        );
        assert_eq!(allow(Some(&list), origin("null")), (None, false));
        assert_eq!(
            allow(Some(&list), origin("https://evil.example")),
            (None, false)
        );
        assert_eq!(allow(None, origin("https://shop.example")), (None, false));
        assert_eq!(allow(Some(&star), None), (None, false));
    }

    #[test]
    fn caller_headers_come_from_the_handshake_only() {
        let forged = || {
            headers(&[
                (CALLER_HEADER, "checkout"),
                (CALLER_NAMESPACE_HEADER, "default"),
                (CALLEE_HEADER, "someone-else"),
                (CALLER_SPIFFE_HEADER, "spiffe://public/ns/default/checkout"),
            ])
        };
        let get = |h: &HeaderMap, n: &str| h.get(n).map(|v| v.to_str().unwrap().to_owned());

        // A caller in another trust domain and namespace with the same app ID: the app sees
        // which one it is.
        let mut h = forged();
        caller_headers(
            &mut h,
            Some("spiffe://evil.org/ns/attacker-ns/checkout"),
            "cart",
        );
        assert_eq!(get(&h, CALLER_HEADER).as_deref(), Some("checkout"));
        assert_eq!(
            get(&h, CALLER_NAMESPACE_HEADER).as_deref(),
            Some("attacker-ns")
        );
        assert_eq!(get(&h, CALLEE_HEADER).as_deref(), Some("cart"));
        assert_eq!(
            get(&h, CALLER_SPIFFE_HEADER).as_deref(),
            Some("spiffe://evil.org/ns/attacker-ns/checkout")
        );

        // An ID without Dapr's /ns/<ns>/<app> path: no Dapr caller headers at all (the forged
        // ones are removed), the SPIFFE ID says who it is.
        let mut h = forged();
        caller_headers(&mut h, Some("spiffe://public/workload/x"), "cart");
        assert_eq!(get(&h, CALLER_HEADER), None);
        assert_eq!(get(&h, CALLER_NAMESPACE_HEADER), None);
        assert_eq!(
            get(&h, CALLER_SPIFFE_HEADER).as_deref(),
            Some("spiffe://public/workload/x")
        );

        // mTLS off: nothing proved; the calling sidecar's claims pass, no SPIFFE ID is claimed.
        let mut h = forged();
        caller_headers(&mut h, None, "cart");
        assert_eq!(get(&h, CALLER_HEADER).as_deref(), Some("checkout"));
        assert_eq!(get(&h, CALLER_NAMESPACE_HEADER).as_deref(), Some("default"));
        assert_eq!(get(&h, CALLEE_HEADER).as_deref(), Some("cart"));
        assert_eq!(get(&h, CALLER_SPIFFE_HEADER), None);
    }
}
