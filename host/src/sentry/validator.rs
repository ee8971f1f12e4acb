//! Token validation, as Dapr's Sentry does it: choosing the validator a request names (or the
//! default), the common request checks, and the validators themselves.
//!
//! Status codes follow Dapr: a validator that is not enabled (or an unknown number) and a
//! missing choice where there is no default are `InvalidArgument`; every validator failure,
//! including a missing CSR or namespace or an over-long ID, is `PermissionDenied`.
//!
//! Two checks are Sigil's own, on every request whatever the validator (in [`crate::dapr`]):
//! - [`check_names`](crate::dapr::check_names), before the validator: an app ID or namespace that could never be a
//!   SPIFFE path segment, or a namespace longer than Kubernetes allows, is `InvalidArgument`
//!   (Dapr lets it through and fails issuance with `Internal`).
//! - [`check_control_plane`](crate::dapr::check_control_plane), after it: Sentry's own ID (`dapr-sentry`, the ID clients
//!   authenticate Sentry by) is never issued, and the other control-plane IDs only in Sentry's
//!   namespace and trust domain (`PermissionDenied`, as Dapr's kubernetes validator refuses
//!   control-plane pods elsewhere).

use std::time::{SystemTime, UNIX_EPOCH};

use super::jwt::{self, Expectations, Jwks};
use super::kube::KubeValidator;
use crate::dapr::workload_id;
use crate::logs::clip;

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
