//! Service invocation in Dapr's gRPC proxy form. The app calls its sidecar's gRPC port on
//! loopback (`--dapr-grpc-port`, HTTP/2 without TLS) with the target's service and method, as
//! it would call the target itself, and names the target app in the `dapr-app-id` metadata
//! (or `dapr-callee-app-id`, which Dapr reads first). The sidecar resolves the app ID as HTTP
//! invocation does, forwards the call over the same mutual-TLS HTTP/2 connection to the
//! target's sidecar, which checks the access-control policy on the caller's SPIFFE ID (the
//! operation is the full method name, `/package.Service/Method`, compared case-sensitively;
//! no verb) and calls its app's gRPC server at `127.0.0.1:<app-port>` over one reused HTTP/2
//! connection.
//!
//! Nothing is decoded: messages stream in both directions frame by frame (unary, client,
//! server and bidirectional streams alike), headers and trailers pass through, so status
//! codes, messages, details and trailing metadata reach the caller as the app sent them;
//! `grpc-timeout` passes through and bounds each hop's wait for the answer (then
//! `DEADLINE_EXCEEDED`), and a call the client cancels (or whose deadline passes) is reset on
//! every hop, so the app sees its context cancelled. The callee's sidecar replaces
//! the caller metadata with what the handshake proved (`dapr-caller-app-id`,
//! `dapr-caller-namespace`, `x-sigil-caller-spiffe-id`), as for HTTP.
//!
//! The callee's sidecar forwards gRPC calls only to an app declared `--app-protocol grpc`
//! (Dapr's flag; an HTTP app answers `UNIMPLEMENTED`), and both sidecars take only what gRPC
//! sends (POST, `content-type: application/grpc*`; else HTTP 415): the access-control policy
//! is read with gRPC's rules only for gRPC calls to gRPC apps, so an HTTP request cannot be
//! decided without its verb or case.
//!
//! What the sidecar answers itself is a gRPC status (trailers-only): no `dapr-app-id`
//! metadata: `UNKNOWN` with Dapr's message (Dapr's own runtime API, `dapr.proto.runtime.v1`,
//! is `UNIMPLEMENTED`: Sigil is the identity layer under it); an app ID not in the
//! name-resolution file: `NOT_FOUND`; a peer that cannot be reached or whose identity is
//! refused: `UNAVAILABLE` with the reason; a method name that does not normalise: Dapr's
//! `INVALID_ARGUMENT`; a call the policy denies: `PERMISSION_DENIED` with Dapr's message; an
//! app that cannot be reached: `UNAVAILABLE`.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use super::acl::Call;
use super::invoke::{self, Body, Invoker, CALLEE_HEADER, CALLER_HEADER, CALLER_NAMESPACE_HEADER};

/// The metadata naming the app to call (Dapr's gRPC proxy).
pub const APP_ID_METADATA: &str = "dapr-app-id";
/// Set by the calling sidecar on a gRPC call it forwards: the callee's sidecar calls its app
/// over HTTP/2 with gRPC's rules, not over HTTP/1.1. Removed from what apps send.
pub const PROTOCOL_HEADER: &str = "x-sigil-invoke-protocol";
/// Dapr's API token between an app and its sidecar: never forwarded to another app.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";
/// The service of Dapr's own runtime API, which a Dapr sidecar serves on this port.
const DAPR_RUNTIME_SERVICE: &str = "/dapr.proto.runtime.v1.";

/// The gRPC status codes the sidecar answers with itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 2: Dapr's answer to a call without `dapr-app-id`.
    Unknown = 2,
    /// 3: a method name that does not normalise.
    InvalidArgument = 3,
    /// 4: the call's `grpc-timeout` passed before the next hop answered.
    DeadlineExceeded = 4,
    /// 5: an app ID the name-resolution file does not have.
    NotFound = 5,
    /// 7: the access-control policy denied the call.
    PermissionDenied = 7,
    /// 12: Dapr's runtime API, which Sigil does not serve.
    Unimplemented = 12,
    /// 14: a peer or an app that cannot be reached.
    Unavailable = 14,
}

/// A trailers-only gRPC answer: HTTP 200 with `grpc-status` and `grpc-message` in its one
/// HEADERS frame.
pub fn status(code: Code, message: &str) -> Response<Body> {
    let mut r = Response::new(invoke::full(hyper::body::Bytes::new()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    r
}

/// `grpc-message`'s encoding (gRPC over HTTP/2): printable ASCII but `%` as is, every other
/// byte of the UTF-8 text as `%XX`.
pub fn percent_encode(message: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Whether a request from a peer sidecar is a forwarded gRPC call.
pub fn is_forwarded_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(PROTOCOL_HEADER)
        .is_some_and(|v| v.as_bytes() == b"grpc")
}

/// A gRPC call is a POST with a `application/grpc` content type (gRPC over HTTP/2); anything
/// else on the gRPC path is refused before it is forwarded or decided, so an HTTP request
/// cannot be decided by gRPC's access-control rules (no verb, case-sensitive).
#[allow(clippy::result_large_err)]
fn check_grpc_request<B>(req: &Request<B>) -> Result<(), Response<Body>> {
    let grpc_type = req.headers().get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v == b"application/grpc"
            || v.starts_with(b"application/grpc+")
            || v.starts_with(b"application/grpc;")
    });
    if req.method() != hyper::Method::POST || !grpc_type {
        let mut r = Response::new(invoke::full(hyper::body::Bytes::from_static(
            b"gRPC calls only: POST with content-type application/grpc",
        )));
        *r.status_mut() = hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(r);
    }
    Ok(())
}

/// The call's deadline from `grpc-timeout` (gRPC over HTTP/2: up to 8 digits and a unit).
fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    })
}

/// Waits for the next hop's answer head within the call's deadline: a call whose deadline
/// passes first is `DEADLINE_EXCEEDED` (dropping the request resets it on the next hop).
async fn within_deadline<F, E>(
    deadline: Option<std::time::Duration>,
    answer: F,
) -> Option<Result<Response<Incoming>, E>>
where
    F: std::future::Future<Output = Result<Response<Incoming>, E>>,
{
    match deadline {
        Some(d) => tokio::time::timeout(d, answer).await.ok(),
        None => Some(answer.await),
    }
}

/// The first value of `name`, if it is text and not empty.
fn metadata<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Invoker {
    /// Handles a call from the app on the loopback gRPC port: forwards it to the sidecar of
    /// the app its metadata names.
    pub async fn handle_app_grpc(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if let Err(r) = check_grpc_request(&req) {
            return r;
        }
        let deadline = grpc_timeout(req.headers());
        let headers = req.headers();
        let Some(target) = metadata(headers, CALLEE_HEADER)
            .or_else(|| metadata(headers, APP_ID_METADATA))
            .map(str::to_owned)
        else {
            if req.uri().path().starts_with(DAPR_RUNTIME_SERVICE) {
                return status(
                    Code::Unimplemented,
                    "Dapr's runtime API is not served by Sigil's sidecar (service invocation \
                     only: name the app in the dapr-app-id metadata)",
                );
            }
            return status(
                Code::Unknown,
                "failed to proxy request: required metadata dapr-callee-app-id or dapr-app-id \
                 not found",
            );
        };
        let address = match self.resolve(&target) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return status(
                    Code::NotFound,
                    &format!("failed to resolve app {target:?}: not in the name resolution file"),
                )
            }
            Err(e) => return status(Code::Unavailable, &e),
        };
        let (mut parts, body) = req.into_parts();
        invoke::strip_hop_by_hop(&mut parts.headers);
        let me = self.config();
        for (name, value) in [
            (CALLER_HEADER, me.app_id.as_str()),
            (CALLER_NAMESPACE_HEADER, me.namespace.as_str()),
            (CALLEE_HEADER, target.as_str()),
        ] {
            invoke::set_header(&mut parts.headers, name, Some(value));
        }
        parts.headers.remove(invoke::CALLER_SPIFFE_HEADER);
        parts.headers.remove(API_TOKEN_HEADER);
        parts
            .headers
            .insert(PROTOCOL_HEADER, HeaderValue::from_static("grpc"));
        parts
            .headers
            .insert(hyper::header::TE, HeaderValue::from_static("trailers"));
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str)
            .to_owned();
        parts.uri = match format!("http://{target}{path}").parse() {
            Ok(u) => u,
            Err(e) => return status(Code::InvalidArgument, &format!("invalid method: {e}")),
        };
        parts.version = hyper::Version::HTTP_2;
        let mut sender = match self.connection(&target, &address).await {
            Ok(s) => s,
            Err(e) => return status(Code::Unavailable, &e),
        };
        // The call's own deadline (`grpc-timeout`, passed on too); none without one, as gRPC.
        let answer = sender.send_request(Request::from_parts(
            parts,
            http_body_util::BodyExt::boxed(body),
        ));
        match within_deadline(deadline, answer).await {
            None => status(
                Code::DeadlineExceeded,
                &format!("invoking {target}: the call's deadline passed"),
            ),
            Some(Ok(resp)) => passed_through(resp),
            Some(Err(e)) => {
                if sender.is_closed() {
                    self.forget(&target, &address);
                }
                status(
                    Code::Unavailable,
                    &format!("invoking {target} at {address}: {e}"),
                )
            }
        }
    }

    /// Handles a gRPC call a peer sidecar forwarded: checks the policy, calls the app.
    pub(super) async fn handle_peer_grpc(
        self: Arc<Self>,
        req: Request<Incoming>,
        caller: Option<String>,
    ) -> Response<Body> {
        if let Err(r) = check_grpc_request(&req) {
            return r;
        }
        let deadline = grpc_timeout(req.headers());
        let me = self.config();
        let Some(port) = me.app_port else {
            return status(
                Code::Unavailable,
                &format!(
                    "app {} has no gRPC server here (its sidecar has no --app-port)",
                    me.app_id
                ),
            );
        };
        if me.app_protocol != super::invoke::AppProtocol::Grpc {
            return status(
                Code::Unimplemented,
                &format!(
                    "app {} speaks HTTP (its sidecar's --app-protocol is http): gRPC \
                     invocation reaches apps with --app-protocol grpc",
                    me.app_id
                ),
            );
        }
        // Dapr normalises the method before the policy and the app see it; the app receives
        // the name that was checked.
        let operation = match crate::dapr::acl::normalize(req.uri().path()) {
            Ok(op) => op,
            Err(e) => return status(Code::InvalidArgument, &format!("invalid method: {e}")),
        };
        if let Some(acl) = me.acl.enabled() {
            if let Some(d) = acl
                .decide(caller.as_deref(), &operation, Call::Grpc)
                .filter(|d| !d.allowed())
            {
                tracing::debug!(caller = ?caller, operation, why = d.why, "gRPC invocation denied by the access-control policy");
                return status(
                    Code::PermissionDenied,
                    &format!(
                        "access control policy has denied access to id: {} operation: {} verb: NONE",
                        caller.as_deref().unwrap_or(""),
                        operation.trim_start_matches('/'),
                    ),
                );
            }
        }
        let (mut parts, body) = req.into_parts();
        invoke::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(PROTOCOL_HEADER);
        parts.headers.remove(API_TOKEN_HEADER);
        invoke::caller_headers(&mut parts.headers, caller.as_deref(), &me.app_id);
        parts
            .headers
            .insert(hyper::header::TE, HeaderValue::from_static("trailers"));
        let app = format!("127.0.0.1:{port}");
        parts.uri =
            match format!("http://{app}{}", crate::dapr::acl::encode_path(&operation)).parse() {
                Ok(u) => u,
                Err(e) => return status(Code::InvalidArgument, &format!("invalid method: {e}")),
            };
        parts.version = hyper::Version::HTTP_2;
        let mut sender = match self.app_connection(&app).await {
            Ok(s) => s,
            Err(e) => {
                return status(
                    Code::Unavailable,
                    &format!("the app's gRPC server at {app} is not reachable: {e}"),
                )
            }
        };
        let answer = sender.send_request(Request::from_parts(
            parts,
            http_body_util::BodyExt::boxed(body),
        ));
        match within_deadline(deadline, answer).await {
            None => status(
                Code::DeadlineExceeded,
                "the app's gRPC server did not answer within the call's deadline",
            ),
            Some(Ok(resp)) => passed_through(resp),
            Some(Err(e)) => {
                if sender.is_closed() {
                    self.forget_app_connection();
                }
                status(
                    Code::Unavailable,
                    &format!("the app's gRPC server at {app} failed: {e}"),
                )
            }
        }
    }

    /// The open HTTP/2 connection to the app, or a new one.
    async fn app_connection(
        &self,
        app: &str,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, String> {
        if let Ok(current) = self.grpc_app.lock() {
            if let Some(s) = current.as_ref().filter(|s| !s.is_closed()) {
                return Ok(s.clone());
            }
        }
        let tcp = tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(app))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let sender = invoke::handshake(TokioIo::new(tcp)).await?;
        if let Ok(mut current) = self.grpc_app.lock() {
            *current = Some(sender.clone());
        }
        Ok(sender)
    }

    fn forget_app_connection(&self) {
        if let Ok(mut current) = self.grpc_app.lock() {
            *current = None;
        }
    }
}

/// A response from the next hop as this hop's answer: hop-by-hop headers removed, the body
/// (messages, then trailers) streamed as it comes.
fn passed_through(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    invoke::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
}

/// Serves the app-facing gRPC port on `listener` (bind it to loopback; HTTP/2 without TLS, as
/// gRPC clients speak to a local server) until `stopped` resolves.
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
        let _ = tcp.set_nodelay(true);
        let invoker = invoker.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let invoker = invoker.clone();
                async move { Ok::<_, Infallible>(invoker.handle_app_grpc(req).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(std::time::Duration::from_secs(20))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded_as_grpc_says() {
        assert_eq!(percent_encode("plain text: ok"), "plain text: ok");
        assert_eq!(percent_encode("100% \"é\"\n"), "100%25 \"%C3%A9\"%0A");
    }

    #[test]
    fn grpc_timeouts_as_grpc_writes_them() {
        let t = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        use std::time::Duration;
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("123456789S"), None, "more than 8 digits");
        assert_eq!(t("S"), None);
        assert_eq!(t("1x"), None);
        assert_eq!(t("-1S"), None);
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn status_is_trailers_only() {
        let r = status(Code::PermissionDenied, "no");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(r.headers()["grpc-message"], "no");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/grpc");
        assert!(hyper::body::Body::is_end_stream(r.body()));
    }
}
