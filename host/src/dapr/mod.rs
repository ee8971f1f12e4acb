//! Dapr's conventions, in one place for Sentry, the sidecar and the relay: the SPIFFE IDs
//! Dapr gives workloads and its own control plane, the rules an app ID and a namespace must
//! follow, the DNS names Dapr puts on control-plane certificates, and its `Configuration`
//! resource ([`config`]).
//!
//! - [`sentry_id`]: the ID clients authenticate Sentry by, `spiffe://<td>/ns/<ns>/dapr-sentry`.
//! - [`workload_id`]: `spiffe://<td>/ns/<namespace>/<app-id>`, each part one path segment.
//! - [`check_names`]: what Sigil refuses up front (`InvalidArgument`) so a name can never
//!   become more than one segment or a Kubernetes API path.
//! - [`check_control_plane`]: Sentry's own ID is never issued; the other control-plane IDs only
//!   in Sentry's namespace and trust domain.

pub mod acl;
pub mod config;

use crate::logs::clip;

/// Sentry's SPIFFE ID: `spiffe://<control-plane td>/ns/<control-plane namespace>/dapr-sentry`.
/// Clients (sidecars, the relay, `sigil sign`) authenticate Sentry by it; Sentry serves under it.
pub fn sentry_id(control_plane_trust_domain: &str, control_plane_namespace: &str) -> String {
    format!("spiffe://{control_plane_trust_domain}/ns/{control_plane_namespace}/{SENTRY_APP_ID}")
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
/// The rule broken, for `PermissionDenied`.
pub fn check_control_plane(
    id: &str,
    namespace: &str,
    trust_domain: &str,
    sentry_namespace: &str,
    sentry_trust_domain: &str,
) -> Result<(), String> {
    if id == SENTRY_APP_ID {
        return Err(format!(
            "the app ID {SENTRY_APP_ID} is Sentry's own and is never issued"
        ));
    }
    if CONTROL_PLANE_IDS.contains(&id)
        && (namespace != sentry_namespace || trust_domain != sentry_trust_domain)
    {
        return Err(format!(
            "{id} is a control-plane ID: it is issued only in namespace {sentry_namespace:?} \
             and trust domain {sentry_trust_domain:?}"
        ));
    }
    Ok(())
}

/// Dapr's DNS names for a control-plane ID in Sentry's own namespace (none elsewhere, and none
/// for workloads): what Dapr's Sentry adds to the injector's, operator's and scheduler's
/// certificates for the Kubernetes services that reach them.
pub fn control_plane_dns(
    id: &str,
    namespace: &str,
    sentry_namespace: &str,
    trust_domain: &str,
) -> Vec<String> {
    if namespace != sentry_namespace {
        return Vec::new();
    }
    let ns = namespace;
    match id {
        "dapr-injector" => vec![format!("dapr-sidecar-injector.{ns}.svc")],
        "dapr-operator" => vec![format!("dapr-webhook.{ns}.svc")],
        "dapr-scheduler" => (0..3)
            .map(|i| {
                format!("dapr-scheduler-server-{i}.dapr-scheduler-server.{ns}.svc.{trust_domain}")
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sentry_id_is_daprs() {
        assert_eq!(
            sentry_id("cluster.local", "dapr-system"),
            "spiffe://cluster.local/ns/dapr-system/dapr-sentry"
        );
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
}
