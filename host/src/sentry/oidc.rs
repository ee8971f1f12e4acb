//! OIDC discovery for Sentry's JWT-SVIDs (Dapr's `--oidc-enabled`): relying parties (cloud
//! identity federation, PyJWT's `PyJWKClient`) find the issuer and its keys at
//! `<prefix>/.well-known/openid-configuration` and `<prefix>/jwks.json`.
//!
//! As Dapr: GET only (405 otherwise), `Content-Type: application/json` and `Cache-Control:
//! public, max-age=3600`, 404 for an empty key set, the discovery document's fields and
//! values; the issuer is `--jwt-issuer`, else `<scheme>://<host>`; `jwks_uri` is
//! `--oidc-jwks-uri`, else the issuer's origin with the prefix and `/jwks.json`. With
//! `--oidc-allowed-hosts`, a request whose host (`X-Forwarded-Host` if present, else `Host`)
//! is not listed (exactly, or without its port, or `*`) is refused with 403 `Forbidden:
//! unauthorized domain`, and `X-Forwarded-Host` shapes the issuer only then (and not with `*`),
//! the fix of dapr/dapr #10027.
//!
//! **Stricter than Dapr**: without `--jwt-issuer` the issuer is built from the request, so
//! Dapr with no allow-list answers any `Host` an attacker sends with an issuer and `jwks_uri`
//! on the attacker's host. Here, with no allow-list, only loopback hosts (`localhost`,
//! `127.0.0.1`, `[::1]`, any port) may shape them; any other host is refused with 403 and a
//! message naming the two flags that fix it. With `--jwt-issuer` the host never matters
//! (unless an allow-list restricts it).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Sentry;

/// The discovery document's path (after the prefix).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The key set's path (after the prefix).
pub const JWKS_PATH: &str = "/jwks.json";

/// The OIDC server's settings (Dapr's `--oidc-*` flags).
#[derive(Clone, Debug, Default)]
pub struct OidcSettings {
    /// `--oidc-path-prefix`, normalised: empty, or `/x` without a trailing slash.
    pub prefix: String,
    /// `--oidc-jwks-uri`: used as given.
    pub jwks_uri: Option<String>,
    /// `--oidc-allowed-hosts`.
    pub allowed_hosts: Vec<String>,
    /// `--jwt-issuer`.
    pub issuer: Option<String>,
    /// The server speaks TLS (the issuer's scheme when built from the host).
    pub tls: bool,
}

impl OidcSettings {
    /// `--oidc-path-prefix` as Dapr reads it: one trailing slash trimmed, `/` meaning none, a
    /// leading slash added.
    pub fn normalise_prefix(prefix: &str) -> String {
        let p = prefix.strip_suffix('/').unwrap_or(prefix);
        if p.is_empty() {
            String::new()
        } else if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("/{p}")
        }
    }
}

/// The OIDC server's socket, its TLS (`None`: plain HTTP) and settings.
pub struct OidcListener {
    /// The bound socket.
    pub listener: tokio::net::TcpListener,
    /// TLS, from `--oidc-server-tls-cert-file` and `--oidc-server-tls-key-file`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// What it serves.
    pub settings: OidcSettings,
}

impl std::fmt::Debug for OidcListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcListener")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .field("settings", &self.settings)
            .finish()
    }
}

/// The router: the two routes under the prefix, any method (405 for all but GET).
pub fn router(sentry: Arc<Sentry>, settings: OidcSettings) -> axum::Router {
    let prefix = settings.prefix.clone();
    let state = Arc::new((sentry, settings));
    axum::Router::new()
        .route(
            &format!("{prefix}{DISCOVERY_PATH}"),
            axum::routing::any(discovery),
        )
        .route(&format!("{prefix}{JWKS_PATH}"), axum::routing::any(jwks))
        .with_state(state)
}

type Shared = Arc<(Arc<Sentry>, OidcSettings)>;

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

fn json(body: String) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `host` without its port (`[::1]:9080` → `[::1]`, `example.com:443` → `example.com`).
fn without_port(host: &str) -> &str {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if host.starts_with('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket.
        return match host.find(']') {
            Some(i) if i + 1 == host.len() => host,
            Some(i) if host[i + 1..].strip_prefix(':').is_some_and(digits) => &host[..=i],
            _ => host,
        };
    }
    host.rsplit_once(':')
        .filter(|(_, port)| digits(port))
        .map_or(host, |(h, _)| h)
}

/// A host as an authority: no user info, path, query or spaces.
fn valid_authority(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

fn is_loopback(host: &str) -> bool {
    let h = without_port(host);
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|l| h.eq_ignore_ascii_case(l))
}

/// The host the answer is for, or the refusal: see the module doc.
/// A refusal: its status and body.
type Refusal = (StatusCode, &'static str);

fn checked_host(settings: &OidcSettings, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let host = header_str(headers, &header::HOST);
    let forwarded = header_str(
        headers,
        &header::HeaderName::from_static("x-forwarded-host"),
    );
    let list = &settings.allowed_hosts;
    let any = list.iter().any(|h| h == "*");
    if !list.is_empty() {
        let candidate = forwarded.or(host).unwrap_or("");
        // Host names compare without regard to case (RFC 4343).
        let allowed = any
            || list.iter().any(|h| {
                h.eq_ignore_ascii_case(candidate) || h.eq_ignore_ascii_case(without_port(candidate))
            });
        if !allowed {
            return Err((StatusCode::FORBIDDEN, "Forbidden: unauthorized domain"));
        }
    }
    if settings.issuer.is_some() {
        return Ok(None);
    }
    // The issuer is built from the request's host.
    let base = if !list.is_empty() && !any {
        forwarded.or(host)
    } else {
        host
    };
    let Some(base) = base.filter(|h| valid_authority(h)) else {
        return Err((StatusCode::BAD_REQUEST, "Invalid host"));
    };
    if list.is_empty() && !is_loopback(base) {
        return Err((
            StatusCode::FORBIDDEN,
            "Forbidden: unauthorized domain (the issuer is never built from a host that is not \
             allowed: set --jwt-issuer or --oidc-allowed-hosts)",
        ));
    }
    Ok(Some(base.to_owned()))
}

/// `scheme://authority` of `url` (the issuer's origin), without its path.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..]
        .find('/')
        .map_or(url, |i| &url[..after_scheme + i])
}

async fn discovery(State(state): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    let (sentry, settings) = &*state;
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let host = match checked_host(settings, &headers) {
        Ok(h) => h,
        Err((status, body)) => return text(status, body),
    };
    let Some(keys) = sentry.jwt_keys() else {
        return text(StatusCode::NOT_FOUND, "no JWT signing key");
    };
    let scheme = if settings.tls { "https" } else { "http" };
    let issuer = match (&settings.issuer, host) {
        (Some(iss), _) => iss.clone(),
        (None, Some(h)) => format!("{scheme}://{h}"),
        (None, None) => return text(StatusCode::BAD_REQUEST, "Invalid host"),
    };
    let jwks_uri = settings
        .jwks_uri
        .clone()
        .unwrap_or_else(|| format!("{}{}{JWKS_PATH}", origin(&issuer), settings.prefix));
    let doc = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [keys.algorithm().as_str()],
        "scopes_supported": ["openid"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "use"],
    });
    json(format!("{doc}\n"))
}

async fn jwks(State(state): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    let (sentry, settings) = &*state;
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    if let Err(r) = checked_host(
        &OidcSettings {
            // The set does not depend on the host: only the allow-list applies.
            issuer: Some(String::new()),
            ..settings.clone()
        },
        &headers,
    ) {
        return text(r.0, r.1);
    }
    match sentry.jwt_keys() {
        Some(keys) if !keys.is_empty() => json(keys.jwks_json()),
        _ => text(StatusCode::NOT_FOUND, "no JWT signing key"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(host: Option<&str>, forwarded: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = forwarded {
            h.insert("x-forwarded-host", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn allowed(list: &[&str], issuer: Option<&str>) -> OidcSettings {
        OidcSettings {
            allowed_hosts: list.iter().map(|s| (*s).to_owned()).collect(),
            issuer: issuer.map(str::to_owned),
            ..OidcSettings::default()
        }
    }

    fn status(
        s: &OidcSettings,
        host: Option<&str>,
        fwd: Option<&str>,
    ) -> Result<Option<String>, u16> {
        checked_host(s, &headers(host, fwd)).map_err(|r| r.0.as_u16())
    }

    #[test]
    fn daprs_allow_list_cases() {
        // dapr tests/integration/suite/sentry/oidc custom.go.
        let s = allowed(&["localhost", "example.com", "api.example.com"], None);
        assert_eq!(
            status(&s, Some("localhost"), None),
            Ok(Some("localhost".into()))
        );
        assert_eq!(
            status(&s, Some("example.com"), None),
            Ok(Some("example.com".into()))
        );
        assert_eq!(status(&s, Some("forbidden.com"), None), Err(403));
        assert!(status(&s, Some("api.example.com:8443"), None).is_ok());
        assert_eq!(
            status(&s, Some("forbidden.com"), Some("example.com")),
            Ok(Some("example.com".into()))
        );
        assert_eq!(
            status(&s, Some("localhost"), Some("forbidden.com")),
            Err(403)
        );
        // `*`: anything passes, and the issuer comes from Host, never X-Forwarded-Host.
        let s = allowed(&["*"], None);
        assert_eq!(
            status(&s, Some("localhost:9080"), Some("attacker.example.com")),
            Ok(Some("localhost:9080".into()))
        );
    }

    #[test]
    fn no_allow_list_no_issuer_only_loopback_shapes_the_issuer() {
        let s = allowed(&[], None);
        // dapr forwarded.go: X-Forwarded-Host is ignored.
        assert_eq!(
            status(&s, Some("localhost:9080"), Some("attacker.example.com")),
            Ok(Some("localhost:9080".into()))
        );
        assert_eq!(
            status(&s, Some("127.0.0.1:1"), None),
            Ok(Some("127.0.0.1:1".into()))
        );
        assert_eq!(
            status(&s, Some("[::1]:9080"), None),
            Ok(Some("[::1]:9080".into()))
        );
        // Stricter than Dapr: another Host would name the issuer.
        assert_eq!(status(&s, Some("attacker.example.com"), None), Err(403));
        assert_eq!(status(&s, Some("localhost.attacker.com"), None), Err(403));
        assert_eq!(status(&s, Some("[::1].attacker.example"), None), Err(403));
        assert_eq!(status(&s, Some("[::1]:x"), None), Err(403));
        assert!(status(&s, Some("LOCALHOST:9080"), None).is_ok());
        assert_eq!(status(&s, Some("user@localhost"), None), Err(400));
        assert_eq!(status(&s, None, None), Err(400));
        // With --jwt-issuer the host does not matter.
        let s = allowed(&[], Some("https://issuer.example"));
        assert_eq!(status(&s, Some("anything.example"), None), Ok(None));
    }

    #[test]
    fn prefixes_and_origins() {
        assert_eq!(OidcSettings::normalise_prefix(""), "");
        assert_eq!(OidcSettings::normalise_prefix("/"), "");
        assert_eq!(OidcSettings::normalise_prefix("/oidc/"), "/oidc");
        assert_eq!(OidcSettings::normalise_prefix("oidc"), "/oidc");
        assert_eq!(origin("https://a.example/tenant/x"), "https://a.example");
        assert_eq!(origin("https://a.example"), "https://a.example");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("a.example:443"), "a.example");
        assert_eq!(without_port("a.example"), "a.example");
        assert_eq!(without_port("[::1].evil"), "[::1].evil");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}
