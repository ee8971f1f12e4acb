//! The kubernetes validator's rules as pure functions over the typed objects the API server
//! returned (a `TokenReview`'s status, a `Pod`, a dapr `Configuration`) and the workload's
//! token. Every `Err` is a refusal reason that goes back to the client (gRPC
//! `PermissionDenied`), so each is precise and none quotes the token.

use base64ct::{Base64UrlUnpadded, Encoding};
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use serde_json::Value;

/// Largest token accepted from a workload (real ones are ~1-2 KiB).
pub(super) const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Trust domain of workloads whose Configuration does not name one.
pub(super) const PUBLIC_TRUST_DOMAIN: &str = "public";
pub(super) const ANNOTATION_APP_ID: &str = "dapr.io/app-id";
pub(super) const ANNOTATION_CONFIG: &str = "dapr.io/config";
pub(super) const ANNOTATION_CONTROL_PLANE: &str = "dapr.io/control-plane";
const CONTROL_PLANE_SERVICES: [&str; 5] =
    ["operator", "placement", "injector", "sentry", "scheduler"];

/// Refuses an empty or oversized token before anything is sent to the API server.
pub(super) fn check_token_size(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("token is empty".into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!("token is larger than {MAX_TOKEN_LEN} bytes"));
    }
    Ok(())
}

/// Replaces every occurrence of the workload's token in a refusal reason (a last line of
/// defence: no rule quotes it, but the API server's messages might).
pub(super) fn redact(reason: String, token: &str) -> String {
    if token.is_empty() {
        reason
    } else {
        reason.replace(token, "<redacted>")
    }
}

/// The service account a token review authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Steps 1 and 2: the review must say `authenticated: true`; if it names the audiences the
/// token was valid for, one of them must be one of `audiences` (the ones requested); the user
/// must be `system:serviceaccount:<namespace>:<name>`. A review without a status is not
/// authenticated.
pub(super) fn check_review(
    status: Option<&TokenReviewStatus>,
    audiences: &[&str],
) -> Result<ServiceAccount, String> {
    let Some(status) = status.filter(|s| s.authenticated == Some(true)) else {
        let error = status
            .and_then(|s| s.error.as_deref())
            .filter(|e| !e.is_empty());
        return Err(match error {
            Some(e) => format!("token not authenticated: {e}"),
            None => "token not authenticated".into(),
        });
    };
    if let Some(returned) = &status.audiences {
        if !returned.iter().any(|a| audiences.contains(&a.as_str())) {
            return Err("token review returned none of the requested audiences".into());
        }
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or("");
    let parts: Vec<&str> = username.split(':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => {
            Ok(ServiceAccount {
                namespace: (*ns).to_string(),
                name: (*sa).to_string(),
            })
        }
        _ => Err(format!(
            "token is not a service account token: username {username:?} is not system:serviceaccount:<namespace>:<name>"
        )),
    }
}

/// Step 3: the `kubernetes.io.pod.name` claim of an (already reviewed) JWT, read without
/// checking its signature.
pub(super) fn pod_name_claim(token: &str) -> Result<String, String> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token is not a JWT".into());
    };
    let bytes = Base64UrlUnpadded::decode_vec(payload.trim_end_matches('='))
        .map_err(|_| "token payload is not valid base64url".to_string())?;
    let claims: Value = serde_json::from_slice(&bytes)
        .map_err(|_| "token payload is not valid JSON".to_string())?;
    claims
        .get("kubernetes.io")
        .and_then(|k| k.get("pod"))
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "token has no pod name claim".to_string())
}

/// Checks and percent-encodes a name that becomes one URL path segment (kube puts names in
/// the path as given). Names are DNS-1123 in practice; anything with `/`, `?`, `#`, `%`,
/// whitespace or control characters, and `.` and `..`, is refused rather than encoded.
pub(super) fn path_segment(what: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(format!("invalid {what} {value:?}"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%'))
    {
        return Err(format!("invalid {what} {value:?}"));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// Where a workload's trust domain comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TrustDomainFrom {
    /// Sentry's own (control-plane pods).
    Sentry,
    /// `public` (no `dapr.io/config` annotation, or an empty one).
    Public,
    /// The dapr `Configuration` of this name in the pod's namespace.
    Configuration(String),
}

/// What a pod entitles its workload to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Expected {
    /// The only app ID it may ask for.
    pub app_id: String,
    /// Where its trust domain comes from.
    pub trust_domain: TrustDomainFrom,
}

/// Steps 5 to 7 and the source of step 8, for the pod `pod_name` (the token's claim) that
/// the API server returned as `pod`, the service account `sa` the review authenticated, a
/// request for `request_namespace`, and Sentry in `sentry_namespace`:
///
/// - `sa`'s namespace must be the request's, and the pod must run as `sa`;
/// - a pod annotated `dapr.io/control-plane` with one of Dapr's services must live in
///   Sentry's namespace and not also carry `dapr.io/app-id`; its app ID is `dapr-<service>`
///   and its trust domain Sentry's (other values of the annotation are ignored);
/// - any other pod's app ID is its non-empty `dapr.io/app-id`, else its name; its trust
///   domain comes from its non-empty `dapr.io/config`, else is `public`.
pub(super) fn expected(
    pod: &Pod,
    pod_name: &str,
    sa: &ServiceAccount,
    request_namespace: &str,
    sentry_namespace: &str,
) -> Result<Expected, String> {
    let ns = sa.namespace.as_str();
    if ns != request_namespace {
        return Err(format!(
            "namespace mismatch: token is for namespace {ns}, request is for {request_namespace}"
        ));
    }
    let pod_sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("");
    if pod_sa != sa.name {
        return Err(format!(
            "service account mismatch: token is for service account {}, pod {ns}/{pod_name} runs as {pod_sa:?}",
            sa.name
        ));
    }
    let annotation = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    let app_id = annotation(ANNOTATION_APP_ID);
    if let Some(service) =
        annotation(ANNOTATION_CONTROL_PLANE).filter(|v| CONTROL_PLANE_SERVICES.contains(v))
    {
        if ns != sentry_namespace {
            return Err(format!(
                "control plane pod {ns}/{pod_name} ({ANNOTATION_CONTROL_PLANE}={service}) is not in the control plane namespace {sentry_namespace}"
            ));
        }
        if app_id.is_some() {
            return Err(format!(
                "pod {ns}/{pod_name} has both {ANNOTATION_CONTROL_PLANE} and {ANNOTATION_APP_ID} annotations"
            ));
        }
        return Ok(Expected {
            app_id: format!("dapr-{service}"),
            trust_domain: TrustDomainFrom::Sentry,
        });
    }
    let app_id = app_id.filter(|a| !a.is_empty()).unwrap_or(pod_name);
    let trust_domain = match annotation(ANNOTATION_CONFIG).filter(|c| !c.is_empty()) {
        Some(config) => TrustDomainFrom::Configuration(config.to_string()),
        None => TrustDomainFrom::Public,
    };
    Ok(Expected {
        app_id: app_id.to_string(),
        trust_domain,
    })
}

/// Step 7's last check: the request's app ID must be the expected one.
pub(super) fn check_app_id(expected: &Expected, id: &str) -> Result<(), String> {
    if id == expected.app_id {
        Ok(())
    } else {
        Err(format!(
            "app-id mismatch. expected: {}, received: {id}",
            expected.app_id
        ))
    }
}

/// Step 8 for a `dapr.io/config` annotation: the `spec.accessControl.trustDomain` of the
/// Configuration `namespace/name` (`config`; `None` when the API server said it does not
/// exist), `public` if it does not exist or the field is absent, empty or not a string; a
/// trust domain that is not a valid SPIFFE one refuses.
pub(super) fn trust_domain(
    config: Option<&DynamicObject>,
    namespace: &str,
    name: &str,
) -> Result<String, String> {
    let td = config
        .and_then(|c| c.data.pointer("/spec/accessControl/trustDomain"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if td.is_empty() {
        return Ok(PUBLIC_TRUST_DOMAIN.into());
    }
    if !is_valid_trust_domain(td) {
        return Err(format!(
            "configuration {namespace}/{name} has an invalid trust domain {td:?}"
        ));
    }
    Ok(td.to_string())
}

/// SPIFFE trust domain name: lowercase letters, digits, `.`, `-`, `_`.
fn is_valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(super) mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::{ApiResource, GroupVersionKind};
    use serde_json::json;

    const SENTRY_NS: &str = "dapr-system";
    const SENTRY_ID: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";
    const AUDIENCES: [&str; 2] = ["dapr.io/sentry", SENTRY_ID];
    const SA_USER: &str = "system:serviceaccount:default:mysa";

    /// A JWT-shaped token (unsigned: the API server is what checks it).
    pub(crate) fn jwt(claims: &Value) -> String {
        let header = json!({"alg": "RS256", "kid": "test"});
        format!(
            "{}.{}.c2lnbmF0dXJl",
            Base64UrlUnpadded::encode_string(header.to_string().as_bytes()),
            Base64UrlUnpadded::encode_string(claims.to_string().as_bytes())
        )
    }

    /// A projected service-account token's claims.
    pub(crate) fn claims(ns: &str, pod: Option<&str>, sa: &str) -> Value {
        let mut k = json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": "sa-uid"}});
        if let Some(pod) = pod {
            k["pod"] = json!({"name": pod, "uid": "pod-uid"});
        }
        json!({"aud": ["dapr.io/sentry"], "iss": "https://kubernetes.default.svc.cluster.local",
               "sub": format!("system:serviceaccount:{ns}:{sa}"), "exp": 4102444800u64,
               "kubernetes.io": k})
    }

    fn authenticated(username: &str, audiences: Option<&[&str]>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: audiences.map(|a| a.iter().map(|s| (*s).to_string()).collect()),
            error: None,
            user: Some(UserInfo {
                username: Some(username.into()),
                uid: Some("1234".into()),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    "system:authenticated".into(),
                ]),
                extra: None,
            }),
        }
    }

    fn sa(ns: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn pod(ns: &str, name: &str, sa: &str, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some(sa.into()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// The standard workload: pod default/mypod running as default/mysa, asking for
    /// `request_namespace`.
    fn workload(annotations: &[(&str, &str)], request_namespace: &str) -> Result<Expected, String> {
        expected(
            &pod("default", "mypod", "mysa", annotations),
            "mypod",
            &sa("default", "mysa"),
            request_namespace,
            SENTRY_NS,
        )
    }

    fn public(app_id: &str) -> Expected {
        Expected {
            app_id: app_id.into(),
            trust_domain: TrustDomainFrom::Public,
        }
    }

    fn configuration(spec: Value) -> DynamicObject {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration"),
            "configurations",
        );
        DynamicObject::new("myconfig", &resource)
            .within("default")
            .data(json!({ "spec": spec }))
    }

    #[test]
    fn review_authenticated_service_account() {
        for audiences in [None, Some(&["dapr.io/sentry"][..]), Some(&[SENTRY_ID][..])] {
            assert_eq!(
                check_review(Some(&authenticated(SA_USER, audiences)), &AUDIENCES),
                Ok(sa("default", "mysa"))
            );
        }
    }

    #[test]
    fn review_unauthenticated() {
        let refused = |status: Option<TokenReviewStatus>| check_review(status.as_ref(), &AUDIENCES);
        assert_eq!(
            refused(Some(TokenReviewStatus {
                authenticated: Some(false),
                error: Some("invalid bearer token".into()),
                ..TokenReviewStatus::default()
            })),
            Err("token not authenticated: invalid bearer token".into())
        );
        // No error text, no `authenticated`, no status at all.
        for status in [
            Some(TokenReviewStatus {
                authenticated: Some(false),
                error: Some(String::new()),
                ..TokenReviewStatus::default()
            }),
            Some(TokenReviewStatus {
                authenticated: None,
                ..authenticated(SA_USER, None)
            }),
            None,
        ] {
            assert_eq!(refused(status), Err("token not authenticated".into()));
        }
    }

    #[test]
    fn review_audiences_must_include_ours() {
        for audiences in [&["other"][..], &[][..]] {
            assert_eq!(
                check_review(Some(&authenticated(SA_USER, Some(audiences))), &AUDIENCES),
                Err("token review returned none of the requested audiences".into())
            );
        }
    }

    #[test]
    fn review_username_not_a_service_account() {
        for username in [
            "system:serviceaccount:default",
            "system:serviceaccount:default:mysa:extra",
            "system:node:default:mysa",
            "system:serviceaccount::mysa",
            "system:serviceaccount:default:",
            "",
        ] {
            assert_eq!(
                check_review(Some(&authenticated(username, None)), &AUDIENCES),
                Err(format!(
                    "token is not a service account token: username {username:?} is not system:serviceaccount:<namespace>:<name>"
                ))
            );
        }
        let no_user = TokenReviewStatus {
            user: None,
            ..authenticated(SA_USER, None)
        };
        assert_eq!(
            check_review(Some(&no_user), &AUDIENCES),
            Err("token is not a service account token: username \"\" is not system:serviceaccount:<namespace>:<name>".into())
        );
    }

    #[test]
    fn app_id_annotation() {
        let e = workload(&[(ANNOTATION_APP_ID, "myapp")], "default").unwrap();
        assert_eq!(e, public("myapp"));
        assert_eq!(check_app_id(&e, "myapp"), Ok(()));
        assert_eq!(
            check_app_id(&e, "mypod"),
            Err("app-id mismatch. expected: myapp, received: mypod".into())
        );
    }

    #[test]
    fn pod_name_fallback_without_or_with_empty_app_id() {
        for annotations in [&[][..], &[(ANNOTATION_APP_ID, "")][..]] {
            let e = workload(annotations, "default").unwrap();
            assert_eq!(e, public("mypod"));
            assert_eq!(
                check_app_id(&e, "myapp"),
                Err("app-id mismatch. expected: mypod, received: myapp".into())
            );
        }
        // No annotations at all (not even an empty map).
        let mut bare = pod("default", "mypod", "mysa", &[]);
        bare.metadata.annotations = None;
        assert_eq!(
            expected(&bare, "mypod", &sa("default", "mysa"), "default", SENTRY_NS),
            Ok(public("mypod"))
        );
    }

    #[test]
    fn config_annotation_names_the_configuration() {
        assert_eq!(
            workload(
                &[
                    (ANNOTATION_APP_ID, "myapp"),
                    (ANNOTATION_CONFIG, "myconfig")
                ],
                "default"
            ),
            Ok(Expected {
                app_id: "myapp".into(),
                trust_domain: TrustDomainFrom::Configuration("myconfig".into()),
            })
        );
        assert_eq!(
            workload(&[(ANNOTATION_CONFIG, "")], "default"),
            Ok(public("mypod"))
        );
    }

    #[test]
    fn namespace_mismatch() {
        assert_eq!(
            workload(&[], "other"),
            Err("namespace mismatch: token is for namespace default, request is for other".into())
        );
    }

    #[test]
    fn service_account_mismatch() {
        let runs_as = |spec: Option<PodSpec>| {
            let mut p = pod("default", "mypod", "othersa", &[]);
            p.spec = spec;
            expected(&p, "mypod", &sa("default", "mysa"), "default", SENTRY_NS)
        };
        assert_eq!(
            runs_as(Some(PodSpec {
                service_account_name: Some("othersa".into()),
                ..PodSpec::default()
            })),
            Err("service account mismatch: token is for service account mysa, pod default/mypod runs as \"othersa\"".into())
        );
        assert_eq!(
            runs_as(None),
            Err("service account mismatch: token is for service account mysa, pod default/mypod runs as \"\"".into())
        );
    }

    fn control_plane(ns: &str, annotations: &[(&str, &str)]) -> Result<Expected, String> {
        expected(
            &pod(ns, "dapr-operator-7d9f", "dapr-operator", annotations),
            "dapr-operator-7d9f",
            &sa(ns, "dapr-operator"),
            ns,
            SENTRY_NS,
        )
    }

    #[test]
    fn control_plane_in_sentry_namespace() {
        for service in CONTROL_PLANE_SERVICES {
            // The Configuration is not consulted for control-plane pods.
            let e = control_plane(
                SENTRY_NS,
                &[
                    (ANNOTATION_CONTROL_PLANE, service),
                    (ANNOTATION_CONFIG, "daprsystem"),
                ],
            )
            .unwrap();
            assert_eq!(
                e,
                Expected {
                    app_id: format!("dapr-{service}"),
                    trust_domain: TrustDomainFrom::Sentry,
                }
            );
        }
        let e = control_plane(SENTRY_NS, &[(ANNOTATION_CONTROL_PLANE, "operator")]).unwrap();
        assert_eq!(
            check_app_id(&e, "dapr-operator-7d9f"),
            Err("app-id mismatch. expected: dapr-operator, received: dapr-operator-7d9f".into())
        );
    }

    #[test]
    fn control_plane_outside_sentry_namespace() {
        assert_eq!(
            workload(&[(ANNOTATION_CONTROL_PLANE, "operator")], "default"),
            Err("control plane pod default/mypod (dapr.io/control-plane=operator) is not in the control plane namespace dapr-system".into())
        );
    }

    #[test]
    fn control_plane_with_app_id() {
        for app_id in ["dapr-operator", ""] {
            assert_eq!(
                control_plane(
                    SENTRY_NS,
                    &[
                        (ANNOTATION_CONTROL_PLANE, "operator"),
                        (ANNOTATION_APP_ID, app_id)
                    ]
                ),
                Err("pod dapr-system/dapr-operator-7d9f has both dapr.io/control-plane and dapr.io/app-id annotations".into())
            );
        }
    }

    #[test]
    fn unknown_control_plane_value_is_a_normal_pod() {
        for value in ["dashboard", "", "Operator"] {
            assert_eq!(
                workload(&[(ANNOTATION_CONTROL_PLANE, value)], "default"),
                Ok(public("mypod"))
            );
        }
    }

    #[test]
    fn trust_domain_from_configuration() {
        let td = |spec: Value| trust_domain(Some(&configuration(spec)), "default", "myconfig");
        assert_eq!(
            td(json!({"accessControl": {"defaultAction": "allow", "trustDomain": "example.org"}})),
            Ok("example.org".into())
        );
        // Empty, absent or not a string: public.
        for spec in [
            json!({"accessControl": {"trustDomain": ""}}),
            json!({"accessControl": {"defaultAction": "deny"}}),
            json!({"accessControl": {"trustDomain": 7}}),
            json!({}),
        ] {
            assert_eq!(td(spec), Ok("public".into()));
        }
        for bad in ["Bad/TD", "UPPER.example", "a b", &"x".repeat(256)] {
            assert_eq!(
                td(json!({"accessControl": {"trustDomain": bad}})),
                Err(format!(
                    "configuration default/myconfig has an invalid trust domain {bad:?}"
                ))
            );
        }
    }

    #[test]
    fn missing_configuration_is_public() {
        assert_eq!(
            trust_domain(None, "default", "missing"),
            Ok("public".into())
        );
    }

    #[test]
    fn token_size_and_redaction() {
        assert_eq!(check_token_size(""), Err("token is empty".into()));
        assert_eq!(check_token_size(&"a".repeat(MAX_TOKEN_LEN)), Ok(()));
        assert_eq!(
            check_token_size(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err("token is larger than 65536 bytes".into())
        );
        assert_eq!(
            redact("bad token tok.en.x and tok.en.x".into(), "tok.en.x"),
            "bad token <redacted> and <redacted>"
        );
        assert_eq!(redact("unchanged".into(), ""), "unchanged");
    }

    #[test]
    fn pod_name_claims() {
        assert_eq!(pod_name_claim("abc"), Err("token is not a JWT".into()));
        assert_eq!(pod_name_claim("a.b.c.d"), Err("token is not a JWT".into()));
        assert_eq!(
            pod_name_claim("a.!!!.c"),
            Err("token payload is not valid base64url".into())
        );
        assert_eq!(
            pod_name_claim(&format!("a.{}.c", Base64UrlUnpadded::encode_string(b"{"))),
            Err("token payload is not valid JSON".into())
        );
        assert_eq!(
            pod_name_claim(&format!("a.{}.c", Base64UrlUnpadded::encode_string(b"[1]"))),
            Err("token has no pod name claim".into())
        );
        // A token without the pod claim (not bound to a pod).
        assert_eq!(
            pod_name_claim(&jwt(&claims("default", None, "mysa"))),
            Err("token has no pod name claim".into())
        );
        // String-form pod claim is not the object form.
        let t = jwt(&json!({"kubernetes.io": {"pod": "mypod"}}));
        assert_eq!(
            pod_name_claim(&t),
            Err("token has no pod name claim".into())
        );
        assert_eq!(
            pod_name_claim(&jwt(&claims("default", Some("mypod"), "mysa"))),
            Ok("mypod".into())
        );
    }

    #[test]
    fn path_segments() {
        assert_eq!(path_segment("x", "my-pod.1").unwrap(), "my-pod.1");
        assert_eq!(path_segment("x", "a:b").unwrap(), "a%3Ab");
        for bad in ["", ".", "..", "a/b", "a?b", "a#b", "a%2F", "a b", "a\nb"] {
            assert_eq!(
                path_segment("pod name", bad),
                Err(format!("invalid pod name {bad:?}"))
            );
        }
    }
}
