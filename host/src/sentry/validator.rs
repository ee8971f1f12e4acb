//! Token validation, as Dapr's Sentry does it: choosing the validator a request names (or the
//! default), the common request checks, and the validators themselves.
//!
//! Status codes follow Dapr: a validator that is not enabled (or an unknown number) and a
//! missing choice where there is no default are `InvalidArgument`; every validator failure,
//! including a missing CSR or namespace or an over-long ID, is `PermissionDenied`.
//!
//! Two checks are Sigil's own, on every request whatever the validator:
//! - [`check_names`], before the validator: an app ID or namespace that could never be a
//!   SPIFFE path segment, or a namespace longer than Kubernetes allows, is `InvalidArgument`
//!   (Dapr lets it through and fails issuance with `Internal`).
//! - [`check_control_plane`], after it: Sentry's own ID (`dapr-sentry`, the ID clients
//!   authenticate Sentry by) is never issued, and the other control-plane IDs only in Sentry's
//!   namespace and trust domain (`PermissionDenied`, as Dapr's kubernetes validator refuses
//!   control-plane pods elsewhere).

use std::time::{SystemTime, UNIX_EPOCH};

use super::jwt::{self, Expectations, Jwks};
use super::kube::KubeValidator;

/// A validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The common checks only (Dapr's self-hosted default).
    Insecure,
    /// A Kubernetes service-account token (TokenReview and pod lookup).
    Kubernetes,
    /// A JWT checked against a JWKS.
    Jwks,
}

impl Kind {
    /// The name used in configuration and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Insecure => "insecure",
            Self::Kubernetes => "kubernetes",
            Self::Jwks => "jwks",
        }
    }
}

/// What a request asks, as the validators see it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The app ID.
    pub id: &'a str,
    /// The token.
    pub token: &'a str,
    /// The trust domain asked for ("" → "public").
    pub trust_domain: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// Whether a CSR was sent.
    pub has_csr: bool,
}

/// Why a request was refused before its CSR was looked at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    /// The validator choice is wrong (`InvalidArgument`).
    #[error("{0}")]
    Selection(&'static str),
    /// The validator refused the request (`PermissionDenied`).
    #[error("{0}")]
    Denied(String),
}

/// The validators enabled on this Sentry.
#[derive(Debug)]
pub struct Validators {
    insecure: bool,
    jwks: Option<JwksValidator>,
    kubernetes: Option<KubeValidator>,
    default: Option<Kind>,
}

impl Validators {
    /// Dapr's self-hosted default: insecure only, and it is the default.
    pub fn insecure() -> Self {
        Self {
            insecure: true,
            jwks: None,
            kubernetes: None,
            default: Some(Kind::Insecure),
        }
    }

    /// Kubernetes mode (as Dapr's): the kubernetes validator is on and the default; a JWKS
    /// validator may be added beside it; insecure is off.
    pub fn kubernetes(kube: KubeValidator, jwks: Option<(Jwks, String)>) -> Self {
        Self {
            insecure: false,
            jwks: jwks.map(|(jwks, sentry_id)| JwksValidator { jwks, sentry_id }),
            kubernetes: Some(kube),
            default: Some(Kind::Kubernetes),
        }
    }

    /// With a JWKS validator configured: insecure is off and there is no default (as Dapr).
    pub fn with_jwks(jwks: Jwks, sentry_id: String) -> Self {
        Self {
            insecure: false,
            jwks: Some(JwksValidator { jwks, sentry_id }),
            kubernetes: None,
            default: None,
        }
    }

    /// The validator for the request's `token_validator` number.
    ///
    /// # Errors
    ///
    /// [`ValidationError::Selection`] with Dapr's message.
    pub fn select(&self, requested: i32) -> Result<Kind, ValidationError> {
        let kind = match requested {
            0 => {
                return self.default.ok_or(ValidationError::Selection(
                    "a validator name must be specified in this environment",
                ))
            }
            1 => Kind::Insecure,
            2 => Kind::Kubernetes,
            3 => Kind::Jwks,
            _ => {
                return Err(ValidationError::Selection(
                    "the requested validator is not enabled",
                ))
            }
        };
        let enabled = match kind {
            Kind::Insecure => self.insecure,
            Kind::Jwks => self.jwks.is_some(),
            Kind::Kubernetes => self.kubernetes.is_some(),
        };
        if enabled {
            Ok(kind)
        } else {
            Err(ValidationError::Selection(
                "the requested validator is not enabled",
            ))
        }
    }

    /// Runs validator `kind` on `req`; returns the trust domain for the workload's SPIFFE ID.
    ///
    /// # Errors
    ///
    /// [`ValidationError::Denied`] with the reason.
    pub async fn validate(
        &self,
        kind: Kind,
        req: &Request<'_>,
        now: SystemTime,
    ) -> Result<String, ValidationError> {
        let not_enabled = ValidationError::Selection("the requested validator is not enabled");
        match kind {
            Kind::Insecure => common_checks(req),
            Kind::Jwks => self.jwks.as_ref().ok_or(not_enabled)?.validate(req, now),
            Kind::Kubernetes => {
                let kube = self.kubernetes.as_ref().ok_or(not_enabled)?;
                common_checks(req)?;
                if req.token.is_empty() {
                    return Err(ValidationError::Denied("token is required".to_owned()));
                }
                kube.validate(req.id, req.namespace, req.token)
                    .await
                    .map_err(|e| ValidationError::Denied(format!("token validation failed: {e}")))
            }
        }
    }
}

/// Dapr's common checks; all failures joined into one message.
fn common_checks(req: &Request<'_>) -> Result<String, ValidationError> {
    let mut problems = Vec::new();
    if req.id.is_empty() {
        problems.push("app ID is required".to_owned());
    }
    if req.id.contains('.') {
        problems.push(format!("app ID {:?} must not contain a dot", clip(req.id)));
    }
    if req.id.chars().count() > 64 {
        problems.push(format!(
            "app ID must be at most 64 characters (it has {})",
            req.id.chars().count()
        ));
    }
    if !req.has_csr {
        problems.push("CSR is required".to_owned());
    }
    if req.namespace.is_empty() {
        problems.push("namespace is required".to_owned());
    }
    if let Err(e) = sigil_core::spiffe::TrustDomain::parse(trust_domain(req)) {
        problems.push(format!(
            "trust domain {:?} is invalid: {e}",
            clip(req.trust_domain)
        ));
    }
    if problems.is_empty() {
        Ok(trust_domain(req).to_owned())
    } else {
        Err(ValidationError::Denied(format!(
            "invalid request: {}",
            problems.join("; ")
        )))
    }
}

/// Dapr's workload ID `spiffe://<td>/ns/<namespace>/<id>`, each part a single valid SPIFFE
/// path segment (so a namespace like `a/b` can never add segments), as Dapr's
/// `spiffeid.FromSegments`.
///
/// # Errors
///
/// The SPIFFE rule the ID breaks.
pub fn workload_id(td: &str, namespace: &str, id: &str) -> Result<String, String> {
    sigil_core::spiffe::TrustDomain::parse(td)
        .map_err(|e| format!("trust domain {:?} is invalid: {e}", clip(td)))?;
    let mut buf = vec![0u8; td.len() + namespace.len() + id.len() + 16];
    sigil_core::spiffe::write_dapr_id(td, namespace, id, &mut buf)
        .map(|i| i.as_str().to_owned())
        .map_err(|e| {
            format!(
                "spiffe://{}/ns/{}/{} is not a valid SPIFFE ID: {e}",
                clip(td),
                clip(namespace),
                clip(id)
            )
        })
}

/// Longest namespace accepted: a Kubernetes namespace is a DNS label, at most 63 characters.
pub const MAX_NAMESPACE_LEN: usize = 63;

/// The app ID Sentry serves under; never issued to anyone.
pub const SENTRY_APP_ID: &str = "dapr-sentry";

/// Dapr's other control-plane IDs: issued only in Sentry's namespace and trust domain.
pub const CONTROL_PLANE_IDS: [&str; 4] = [
    "dapr-injector",
    "dapr-operator",
    "dapr-placement",
    "dapr-scheduler",
];

/// Checks the characters of a request's app ID and namespace, and the namespace's length,
/// before any validator runs. The rule: each is made of SPIFFE path-segment characters
/// (`A-Z a-z 0-9 . - _`) and is not `.` or `..`, so it can become one segment of
/// `spiffe://<td>/ns/<namespace>/<id>`; the namespace is at most [`MAX_NAMESPACE_LEN`]. That
/// admits every Kubernetes namespace (lower-case DNS labels) and every name self-hosted Dapr
/// could issue for, and nothing else. Dapr's own rules are left to its common checks, with its
/// codes (`PermissionDenied`): an empty ID or namespace, a dot in the ID, an ID over 64
/// characters.
///
/// # Errors
///
/// The rule broken, for `InvalidArgument`; names are quoted clipped and escaped.
pub fn check_names(id: &str, namespace: &str) -> Result<(), String> {
    let segment_chars = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    if !namespace.is_empty() && (!segment_chars(namespace) || namespace == "." || namespace == "..")
    {
        return Err(format!(
            "namespace {:?} is invalid: only A-Z a-z 0-9 . - _ are allowed, and not . or ..",
            clip(namespace)
        ));
    }
    if namespace.len() > MAX_NAMESPACE_LEN {
        return Err(format!(
            "namespace must be at most {MAX_NAMESPACE_LEN} characters (it has {})",
            namespace.len()
        ));
    }
    // A dot in the ID (so `.` and `..` too) is Dapr's own refusal (common checks).
    if !segment_chars(id) {
        return Err(format!(
            "app ID {:?} is invalid: only A-Z a-z 0-9 - _ are allowed",
            clip(id)
        ));
    }
    Ok(())
}

/// Refuses Sentry's own ID for anyone, and the other control-plane IDs ([`CONTROL_PLANE_IDS`])
/// outside Sentry's namespace and trust domain. `trust_domain` is the one the validator chose
/// for the certificate.
///
/// # Errors
///
/// [`ValidationError::Denied`] naming the rule.
pub fn check_control_plane(
    id: &str,
    namespace: &str,
    trust_domain: &str,
    sentry_namespace: &str,
    sentry_trust_domain: &str,
) -> Result<(), ValidationError> {
    if id == SENTRY_APP_ID {
        return Err(ValidationError::Denied(format!(
            "the app ID {SENTRY_APP_ID} is Sentry's own and is never issued"
        )));
    }
    if CONTROL_PLANE_IDS.contains(&id)
        && (namespace != sentry_namespace || trust_domain != sentry_trust_domain)
    {
        return Err(ValidationError::Denied(format!(
            "{id} is a control-plane ID: it is issued only in namespace {sentry_namespace:?} \
             and trust domain {sentry_trust_domain:?}"
        )));
    }
    Ok(())
}

/// Request text echoed in a message: cut to a readable length, and with control characters
/// (and Unicode line and paragraph separators) escaped, so no echo can break a log line.
pub fn clip(s: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn trust_domain<'a>(req: &Request<'a>) -> &'a str {
    if req.trust_domain.is_empty() {
        "public"
    } else {
        req.trust_domain
    }
}

#[derive(Debug)]
struct JwksValidator {
    jwks: Jwks,
    sentry_id: String,
}

impl JwksValidator {
    fn validate(&self, req: &Request<'_>, now: SystemTime) -> Result<String, ValidationError> {
        if req.token.is_empty() {
            return Err(ValidationError::Denied("token is required".to_owned()));
        }
        let td = common_checks(req)?;
        let subject = workload_id(&td, req.namespace, req.id)
            .map_err(|e| ValidationError::Denied(format!("token validation failed: {e}")))?;
        let expect = Expectations {
            audience: &self.sentry_id,
            subject: &subject,
            now: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            leeway: jwt::DEFAULT_LEEWAY_SECS,
        };
        jwt::verify(req.token, &self.jwks, &expect)
            .map(|_| td)
            .map_err(|e| ValidationError::Denied(format!("token validation failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(id: &'a str, ns: &'a str, has_csr: bool) -> Request<'a> {
        Request {
            id,
            token: "",
            trust_domain: "",
            namespace: ns,
            has_csr,
        }
    }

    #[test]
    fn workload_ids_are_single_segments() {
        assert_eq!(
            workload_id("public", "default", "app").as_deref(),
            Ok("spiffe://public/ns/default/app")
        );
        for (ns, id) in [
            ("a/b", "app"),
            ("default", "a/b"),
            ("..", "app"),
            ("ns", "a b"),
            ("", "x"),
        ] {
            assert!(workload_id("public", ns, id).is_err(), "{ns} {id}");
        }
    }

    #[test]
    fn names_are_checked_before_the_validator() {
        for (id, ns) in [
            ("app", "default"),
            ("My_App-2", "kube-system"),
            ("a.b", "default"), // Dapr's dot rule: PermissionDenied later, not here
            ("", ""),           // Dapr's required fields: PermissionDenied later
            ("app", &"n".repeat(63)),
            (&"a".repeat(65), "ns"), // Dapr's length rule
        ] {
            assert_eq!(check_names(id, ns), Ok(()), "{id} {ns}");
        }
        for (id, ns) in [
            ("app", "a/b"),
            ("app", ".."),
            ("app", "a b"),
            ("app", &"n".repeat(64)),
            ("app", "ns\nFAKE"),
            ("a b", "default"),
            ("a/b", "default"),
            ("é", "default"),
        ] {
            assert!(check_names(id, ns).is_err(), "{id:?} {ns:?}");
        }
        let m = check_names("app", "ns\nINFO fake line").unwrap_err();
        assert!(!m.contains('\n') && m.contains("\\n"), "{m}");
    }

    #[test]
    fn control_plane_ids_only_in_sentrys_namespace_and_trust_domain() {
        let check = |id, ns, td| check_control_plane(id, ns, td, "dapr-system", "cluster.local");
        assert!(check("dapr-sentry", "dapr-system", "cluster.local").is_err());
        assert!(check("dapr-sentry", "shop", "public").is_err());
        for id in CONTROL_PLANE_IDS {
            assert_eq!(check(id, "dapr-system", "cluster.local"), Ok(()));
            assert!(check(id, "shop", "cluster.local").is_err());
            assert!(check(id, "dapr-system", "public").is_err());
        }
        assert_eq!(check("app", "shop", "public"), Ok(()));
        assert_eq!(check("app", "dapr-system", "cluster.local"), Ok(()));
    }

    #[test]
    fn clip_cuts_and_escapes() {
        assert_eq!(clip("a\nb\u{1b}[31m\u{2028}"), "a\\nb\\u{1b}[31m\\u{2028}");
        assert_eq!(clip(&"x".repeat(100)), format!("{}…", "x".repeat(80)));
    }

    #[test]
    fn selection_follows_dapr() {
        let v = Validators::insecure();
        assert_eq!(v.select(0), Ok(Kind::Insecure));
        assert_eq!(v.select(1), Ok(Kind::Insecure));
        for n in [2, 3, -1, 7] {
            assert_eq!(
                v.select(n),
                Err(ValidationError::Selection(
                    "the requested validator is not enabled"
                ))
            );
        }
    }

    #[tokio::test]
    async fn common_checks_join_every_problem() {
        let now = SystemTime::now();
        let v = Validators::insecure();
        assert_eq!(
            v.validate(Kind::Insecure, &req("app", "default", true), now)
                .await,
            Ok("public".into())
        );
        let Err(ValidationError::Denied(m)) = v
            .validate(Kind::Insecure, &req("a.b", "", false), now)
            .await
        else {
            panic!("accepted");
        };
        assert!(m.starts_with("invalid request: "), "{m}");
        assert!(
            m.contains("dot") && m.contains("CSR is required") && m.contains("namespace"),
            "{m}"
        );
        let bad_td = Request {
            trust_domain: "evil/ns/x",
            ..req("app", "default", true)
        };
        assert!(matches!(
            v.validate(Kind::Insecure, &bad_td, now).await,
            Err(ValidationError::Denied(m)) if m.contains("trust domain")
        ));
        let long = "a".repeat(65);
        assert!(v
            .validate(Kind::Insecure, &req(&long, "ns", true), now)
            .await
            .is_err());
        assert!(v
            .validate(Kind::Insecure, &req(&long[..64], "ns", true), now)
            .await
            .is_ok());
    }
}
