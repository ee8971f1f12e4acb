//! Dapr's service-invocation access control: the Configuration's `spec.accessControl`, parsed
//! and decided as Dapr's `pkg/acl` does (issue 16), on the caller's SPIFFE ID from the mTLS
//! handshake only. The engine is pure: [`AccessControl::parse`] turns the YAML section into
//! rules (or refuses it, naming what is wrong), [`AccessControl::decide`] answers one call;
//! the sidecar enforces the answer and reloads the file.
//!
//! **Decision** (Dapr's order): no access control configured → allow; no SPIFFE ID (mTLS off) →
//! the global `defaultAction`; a caller whose `/ns/<ns>/<app>` has no policy, or whose trust
//! domain is not the policy's → the global default; otherwise the first operation that
//! matches decides (HTTP: the verb's action, else the `*` verb's, else the defaults; gRPC: the
//! operation's action), else the policy's `defaultAction`, else the global default.
//!
//! **Operations** match segment by segment, as Dapr's operation tree does: a literal segment
//! exactly (lowercased for HTTP apps; gRPC is case-sensitive), a segment with `*` inside as a
//! glob within the segment, a whole `*` segment as exactly one last segment (or none:
//! `/a/*` matches `/a`), a `**` segment as any number of segments; a rule also matches every
//! path below it (`/op` matches `/op/x`). Rules are tried in their order in the file, each
//! segment's first matching branch taken (Dapr's tree, without backtracking).
//!
//! **Better than Dapr** where its users were hurt:
//! - the path is normalised before it is matched and the *same* normalised path is what the
//!   app receives ([`normalize`]: percent-decoding, `.`/`..`, repeated slashes, refusing
//!   `?`/`#`/control characters and encoded ones), so no encoding of a denied path gets
//!   through (Dapr's CVE fixed in 1.16.14/1.17.5 was checking one path and delivering
//!   another);
//! - an action or verb that is not one Dapr defines is refused when the file is read (Dapr
//!   treats any unknown action as `deny` and any unknown verb as never matching, silently);
//! - a refusal says which rule decided, and a policy for the caller's app and namespace that
//!   was skipped only because its trust domain differs (dapr/dapr #4326) says so.

use std::collections::BTreeMap;

use serde::Deserialize;
use sigil_core::spiffe::SpiffeId;

/// Dapr's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

/// `spec.accessControl` as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessControlSpec {
    /// `allow` or `deny`.
    #[serde(default)]
    pub default_action: Option<String>,
    /// This app's trust domain (Dapr stores it; matching uses each policy's).
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// Per-caller policies.
    #[serde(default)]
    pub policies: Option<Vec<AppPolicySpec>>,
}

/// One entry of `policies`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicySpec {
    /// The calling app's ID.
    #[serde(default)]
    pub app_id: String,
    /// `allow` or `deny` for this caller's operations that no rule matches.
    #[serde(default)]
    pub default_action: Option<String>,
    /// The calling app's trust domain.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// The calling app's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Rules.
    #[serde(default)]
    pub operations: Vec<OperationSpec>,
}

/// One entry of `operations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSpec {
    /// The path (HTTP) or full method (gRPC), with `*` and `**`.
    pub name: String,
    /// HTTP verbs (`GET`, … or `*`).
    #[serde(default)]
    pub http_verb: Vec<String>,
    /// `allow` or `deny`.
    #[serde(default)]
    pub action: Option<String>,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the call through.
    Allow,
    /// Refuse it.
    Deny,
}

impl Action {
    fn parse(s: &str, field: &str) -> Result<Self, AclError> {
        if s.eq_ignore_ascii_case("allow") {
            Ok(Self::Allow)
        } else if s.eq_ignore_ascii_case("deny") {
            Ok(Self::Deny)
        } else {
            Err(AclError::Action {
                field: field.to_owned(),
                value: s.to_owned(),
            })
        }
    }
}

/// The HTTP verbs Dapr knows (its `HTTPExtension_Verb` names).
const VERBS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Why `spec.accessControl` was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// Policies without an app ID, trust domain or namespace (Dapr's message).
    #[error(
        "invalid access control spec. missing trustdomain for apps: {trust_domain:?}, missing \
         namespace for apps: {namespace:?}, missing app name on at least one of the app \
         policies: {app_name}"
    )]
    Incomplete {
        /// Apps whose policy has no trust domain.
        trust_domain: Vec<String>,
        /// Apps whose policy has no namespace.
        namespace: Vec<String>,
        /// Some policy has no app ID.
        app_name: bool,
    },
    /// An action other than `allow` or `deny`.
    #[error("{field}: action {value:?} is neither \"allow\" nor \"deny\"")]
    Action {
        /// Where.
        field: String,
        /// What was written.
        value: String,
    },
    /// A verb Dapr does not know.
    #[error("{field}: httpVerb {value:?} is not one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH or *")]
    Verb {
        /// Where.
        field: String,
        /// What was written.
        value: String,
    },
}

/// One segment of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Exactly this text.
    Literal(String),
    /// `*` inside: any run of characters within the segment.
    Glob(String),
    /// The whole segment is `*`: one last segment, or none.
    Star,
    /// `**`: any number of segments.
    Any,
}

impl Segment {
    fn of(text: &str) -> Self {
        match text {
            "*" => Self::Star,
            "**" => Self::Any,
            t if t.contains('*') => Self::Glob(t.to_owned()),
            t => Self::Literal(t.to_owned()),
        }
    }
}

/// What a matched rule says.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// The rule as written (for refusals).
    name: String,
    /// HTTP: verb → action (`*` included).
    verbs: BTreeMap<String, Action>,
    /// gRPC: the rule's action.
    action: Action,
}

/// A node of the operation tree: segments in the order rules first used them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Node {
    children: Vec<(Segment, Node)>,
    rule: Option<Rule>,
}

/// One caller's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AppPolicy {
    trust_domain: String,
    default_action: Option<Action>,
    operations: Node,
}

/// Parsed access control: the rules [`AccessControl::decide`] applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessControl {
    default_action: Action,
    trust_domain: String,
    /// By (app ID, namespace), as Dapr keys them.
    policies: BTreeMap<(String, String), AppPolicy>,
    /// The enforcing app speaks HTTP: operations and paths are compared lowercased.
    http: bool,
}

/// Which rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decider {
    /// No SPIFFE ID, no policy for the caller, or its trust domain differs: the global default.
    Global,
    /// The caller's policy's `defaultAction`.
    App,
    /// An operation rule.
    Operation,
}

/// The answer for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub action: Action,
    /// Which rule decided.
    pub by: Decider,
    /// Dapr's metric label: `app` when the caller's policy applied and has a `defaultAction`
    /// (even if an operation decided), `global` otherwise.
    pub app_policy: bool,
    /// Why, for the log and the refusal's message.
    pub why: String,
}

impl Decision {
    /// Whether the call may go on.
    pub fn allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// The verb of a call: an HTTP verb, or none (gRPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb<'a> {
    /// An HTTP method, upper case (`GET`).
    Http(&'a str),
    /// A gRPC call (Dapr's `NONE`).
    None,
}

impl AccessControl {
    /// Parses `spec` for an app speaking HTTP (`http`) or gRPC. `None` when nothing is
    /// configured (every call is allowed, as Dapr does).
    ///
    /// # Errors
    ///
    /// [`AclError`]: a policy without app ID, trust domain or namespace (Dapr's rule and
    /// message), an unknown action or verb (Dapr's silent deny or never-match).
    pub fn parse(spec: &AccessControlSpec, http: bool) -> Result<Option<Self>, AclError> {
        let empty = spec.trust_domain.as_deref().unwrap_or("").is_empty()
            && spec.default_action.as_deref().unwrap_or("").is_empty()
            && spec.policies.as_ref().is_none_or(Vec::is_empty);
        if empty {
            return Ok(None);
        }
        let trust_domain = match spec.trust_domain.as_deref() {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => DEFAULT_TRUST_DOMAIN.to_owned(),
        };
        // A Configuration file without a global default: `allow`, as in a real daprd (it reads
        // the file into a preset of allow/public; the deny-by-default of Dapr's parser applies
        // only to specs built in code).
        let default_action = match spec.default_action.as_deref() {
            Some(a) if !a.is_empty() => Action::parse(a, "defaultAction")?,
            _ => Action::Allow,
        };
        let mut missing_td = Vec::new();
        let mut missing_ns = Vec::new();
        let mut missing_app = false;
        let mut policies = BTreeMap::new();
        for (i, p) in spec.policies.iter().flatten().enumerate() {
            let td = p.trust_domain.as_deref().unwrap_or("");
            let ns = p.namespace.as_deref().unwrap_or("");
            if p.app_id.is_empty() {
                missing_app = true;
            }
            if td.is_empty() {
                missing_td.push(p.app_id.clone());
            }
            if ns.is_empty() {
                missing_ns.push(p.app_id.clone());
            }
            if p.app_id.is_empty() || td.is_empty() || ns.is_empty() {
                continue;
            }
            let at = format!("policies[{i}] ({})", p.app_id);
            let default_action = match p.default_action.as_deref() {
                Some(a) if !a.is_empty() => Some(Action::parse(a, &format!("{at}.defaultAction"))?),
                _ => None,
            };
            let mut operations = Node::default();
            for (j, o) in p.operations.iter().enumerate() {
                let field = format!("{at}.operations[{j}] ({})", o.name);
                let action = Action::parse(o.action.as_deref().unwrap_or(""), &field)?;
                let mut verbs = BTreeMap::new();
                for v in &o.http_verb {
                    if v != "*" && !VERBS.contains(&v.as_str()) {
                        return Err(AclError::Verb {
                            field,
                            value: v.clone(),
                        });
                    }
                    verbs.insert(v.clone(), action);
                }
                let name = if o.name.starts_with('/') {
                    o.name.clone()
                } else {
                    format!("/{}", o.name)
                };
                let name = if http { name.to_lowercase() } else { name };
                operations.insert(
                    &name,
                    Rule {
                        name: name.clone(),
                        verbs,
                        action,
                    },
                );
            }
            // A second policy for the same app and namespace replaces the first, as in Dapr.
            policies.insert(
                (p.app_id.clone(), ns.to_owned()),
                AppPolicy {
                    trust_domain: td.to_owned(),
                    default_action,
                    operations,
                },
            );
        }
        if missing_app || !missing_td.is_empty() || !missing_ns.is_empty() {
            return Err(AclError::Incomplete {
                trust_domain: missing_td,
                namespace: missing_ns,
                app_name: missing_app,
            });
        }
        Ok(Some(Self {
            default_action,
            trust_domain,
            policies,
            http,
        }))
    }

    /// This app's trust domain as configured (`public` by default).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Decides a call to `operation` (a path already [`normalize`]d, or a gRPC full method)
    /// with `verb`, from `caller` (the SPIFFE ID the mTLS handshake verified; `None` without
    /// mTLS).
    pub fn decide(
        &self,
        caller: Option<&SpiffeId<'_>>,
        operation: &str,
        verb: Verb<'_>,
    ) -> Decision {
        let global = |why: String| Decision {
            action: self.default_action,
            by: Decider::Global,
            app_policy: false,
            why,
        };
        let Some(caller) = caller else {
            return global("no caller identity (mutual TLS off): the global defaultAction".into());
        };
        let Some((namespace, app)) = dapr_app(caller) else {
            return Decision {
                action: Action::Deny,
                by: Decider::Global,
                app_policy: false,
                why: format!("malformed SPIFFE ID: {}", caller.as_str()),
            };
        };
        let Some(policy) = self.policies.get(&(app.to_owned(), namespace.to_owned())) else {
            return global(format!(
                "no policy for app {app:?} in namespace {namespace:?}: the global defaultAction"
            ));
        };
        let caller_td = caller.trust_domain().as_str();
        if policy.trust_domain != caller_td {
            return global(format!(
                "the policy for app {app:?} in namespace {namespace:?} is for trust domain \
                 {:?}, the caller is in {caller_td:?}: the global defaultAction",
                policy.trust_domain
            ));
        }
        let (mut action, mut by, mut why) = match policy.default_action {
            Some(a) => (
                a,
                Decider::App,
                format!("the defaultAction of app {app:?}'s policy"),
            ),
            None => (
                self.default_action,
                Decider::Global,
                "the global defaultAction".to_owned(),
            ),
        };
        let op = if operation.starts_with('/') {
            operation.to_owned()
        } else {
            format!("/{operation}")
        };
        let op = if self.http { op.to_lowercase() } else { op };
        if let Some(rule) = policy.operations.search(&op) {
            let verb_action = match verb {
                Verb::Http(v) if self.http => rule
                    .verbs
                    .get(v)
                    .or_else(|| rule.verbs.get("*"))
                    .copied()
                    .map(|a| (a, format!("operation {:?} for verb {v}", rule.name))),
                // Dapr: a call without a verb to an HTTP app takes the policy's default (or
                // deny without one).
                Verb::None if self.http => Some((
                    policy.default_action.unwrap_or(Action::Deny),
                    format!("operation {:?} called without an HTTP verb", rule.name),
                )),
                _ => Some((rule.action, format!("operation {:?}", rule.name))),
            };
            if let Some((a, w)) = verb_action {
                action = a;
                by = Decider::Operation;
                why = w;
            }
        }
        Decision {
            action,
            by,
            app_policy: policy.default_action.is_some(),
            why,
        }
    }
}

/// `(namespace, app)` from `/ns/<namespace>/<app>` of a Dapr workload's SPIFFE ID (more
/// segments allowed, as Dapr).
pub fn dapr_app<'a>(id: &'a SpiffeId<'_>) -> Option<(&'a str, &'a str)> {
    let mut parts = id.path().split('/');
    if parts.next() != Some("") || parts.next() != Some("ns") {
        return None;
    }
    let ns = parts.next().filter(|s| !s.is_empty())?;
    let app = parts.next().filter(|s| !s.is_empty())?;
    Some((ns, app))
}

/// Whether `text` matches `pattern`, where `*` is any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = rest.split('*').collect();
    let Some((last, middle)) = pieces.split_last() else {
        return true;
    };
    for piece in middle {
        match tail.find(piece) {
            Some(at) => tail = &tail[at + piece.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

impl Node {
    fn insert(&mut self, name: &str, rule: Rule) {
        let mut node = self;
        for text in name.split('/').skip(1) {
            let seg = Segment::of(text);
            let at = match node.children.iter().position(|(s, _)| *s == seg) {
                Some(at) => at,
                None => {
                    node.children.push((seg, Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        // A rule written twice: the first one counts, as in Dapr.
        if node.rule.is_none() {
            node.rule = Some(rule);
        }
    }

    /// Dapr's tree search: each segment takes the first child that matches (in the order
    /// rules first used them), no backtracking; a rule reached before the last segment
    /// matches the whole path (rules cover what is below them).
    fn search(&self, op: &str) -> Option<&Rule> {
        let parts: Vec<&str> = op.split('/').skip(1).collect();
        let mut node = self;
        for (i, text) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let next = node.children.iter().find(|(seg, _)| match seg {
                Segment::Literal(l) => l == text,
                Segment::Star => last,
                Segment::Any => true,
                Segment::Glob(g) => glob(g, text),
            });
            let (seg, child) = next?;
            if let Some(rule) = &child.rule {
                // A literal "*" segment in the path under a `*` rule goes on (Dapr's quirk).
                if !last && *seg == Segment::Star {
                    node = child;
                    continue;
                }
                return Some(rule);
            }
            if last {
                // The path ends here: a `*` or `**` child covers "no further segment".
                return child
                    .children
                    .iter()
                    .find(|(s, _)| matches!(s, Segment::Star | Segment::Any))
                    .and_then(|(_, c)| c.rule.as_ref());
            }
            node = child;
        }
        None
    }
}

/// Why a request path was refused before any rule was looked at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in {0:?}")]
    BadEncoding(String),
    /// `?`, `#`, a backslash or a control character in the path (decoded), which no app should
    /// see in a method name.
    #[error("method contains a forbidden character: {0:?}")]
    Forbidden(String),
    /// The decoded path is not UTF-8.
    #[error("method is not UTF-8 once decoded")]
    NotUtf8,
}

/// The path a call is checked with **and** delivered as: percent-decoded once (an encoded `/`
/// becomes a separator, as Dapr's HTTP API decodes it), then `.` and `..` resolved and repeated
/// slashes collapsed (`..` never climbs above the root), with a leading `/` and no trailing
/// one. `?`, `#`, backslashes and control characters are refused (decoded or not), so no
/// encoding of a path reaches the app as anything other than what was checked.
///
/// # Errors
///
/// [`PathError`].
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEncoding(raw.to_owned()));
            };
            decoded.push(u8::try_from(h * 16 + l).unwrap_or(0));
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if text
        .chars()
        .any(|c| matches!(c, '?' | '#' | '\\') || c.is_control())
    {
        return Err(PathError::Forbidden(raw.to_owned()));
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// The verb a call is checked with and delivered as, as Dapr's HTTP API makes it: the method
/// upper-cased, and any method Dapr does not define taken as `POST`.
pub fn canonical_verb(method: &str) -> &'static str {
    VERBS
        .iter()
        .find(|v| v.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or("POST")
}

/// `path` (decoded, from [`normalize`]) as a request target: every byte outside RFC 3986's
/// unreserved and path characters percent-encoded again.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        // `;` is encoded too: some servers cut a path at `;` (matrix parameters), which would
        // route a checked `/admin;x` to `/admin`.
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn op(name: &str, verbs: &[&str], action: &str) -> OperationSpec {
        OperationSpec {
            name: name.into(),
            http_verb: verbs.iter().map(|v| (*v).to_owned()).collect(),
            action: Some(action.into()),
        }
    }

    fn policy(
        app: &str,
        td: &str,
        ns: &str,
        default: &str,
        ops: Vec<OperationSpec>,
    ) -> AppPolicySpec {
        AppPolicySpec {
            app_id: app.into(),
            default_action: (!default.is_empty()).then(|| default.to_owned()),
            trust_domain: Some(td.into()),
            namespace: Some(ns.into()),
            operations: ops,
        }
    }

    /// Dapr's `initializeAccessControlList` fixture (pkg/acl/acl_test.go).
    fn dapr_fixture() -> AccessControlSpec {
        AccessControlSpec {
            default_action: Some("deny".into()),
            trust_domain: Some("abcd".into()),
            policies: Some(vec![
                policy(
                    "app1",
                    "public",
                    "ns1",
                    "allow",
                    vec![
                        op("/op1", &["POST", "GET"], "allow"),
                        op("/op2", &["*"], "deny"),
                    ],
                ),
                policy(
                    "app2",
                    "domain1",
                    "ns2",
                    "deny",
                    vec![
                        op("/op3/a/*", &["PUT", "GET"], "allow"),
                        op("/op4", &["POST"], "allow"),
                    ],
                ),
                policy(
                    "app3",
                    "domain1",
                    "ns1",
                    "",
                    vec![op("/op5", &["POST"], "allow")],
                ),
                policy(
                    "app4",
                    "domain1",
                    "ns2",
                    "deny",
                    vec![
                        op("/op6", &[], "allow"),
                        op("/op7/a/b/*", &[], "allow"),
                        op("/op7/a/b/c/f", &[], "allow"),
                        op("/op7/a/b*", &[], "allow"),
                        op("/op7/c/**", &[], "allow"),
                    ],
                ),
                policy(
                    "app1",
                    "public",
                    "ns4",
                    "allow",
                    vec![op("/op6", &["*"], "allow")],
                ),
            ]),
        }
    }

    fn id(td: &str, ns: &str, app: &str) -> String {
        format!("spiffe://{td}/ns/{ns}/{app}")
    }

    /// A decision case: Dapr's number, the caller (trust domain, namespace, app), the
    /// operation, the HTTP verb, whether the app speaks HTTP, whether it is allowed.
    type Case = (
        u32,
        Option<(&'static str, &'static str, &'static str)>,
        &'static str,
        Option<&'static str>,
        bool,
        bool,
    );

    /// Every case of Dapr's `Test_isOperationAllowedByAccessControlPolicy`, numbered as in its
    /// table: (caller, operation, verb, HTTP app, allowed).
    #[test]
    fn daprs_decision_table() {
        let http = AccessControl::parse(&dapr_fixture(), true)
            .unwrap()
            .unwrap();
        let grpc = AccessControl::parse(&dapr_fixture(), false)
            .unwrap()
            .unwrap();
        let cases: &[Case] = &[
            (
                2,
                Some(("public", "ns1", "appX")),
                "op1",
                Some("POST"),
                true,
                false,
            ),
            (
                3,
                Some(("private", "ns1", "app1")),
                "op1",
                Some("POST"),
                true,
                false,
            ),
            (
                4,
                Some(("public", "abcd", "app1")),
                "op1",
                Some("POST"),
                true,
                false,
            ),
            (5, None, "op1", Some("POST"), true, false),
            (
                6,
                Some(("public", "ns1", "app1")),
                "opX",
                Some("POST"),
                true,
                true,
            ),
            (
                7,
                Some(("public", "ns1", "app1")),
                "Op2",
                Some("POST"),
                true,
                false,
            ),
            (
                8,
                Some(("domain1", "ns2", "app2")),
                "op4",
                Some("PUT"),
                true,
                false,
            ),
            (
                9,
                Some(("domain1", "ns1", "app3")),
                "op5",
                Some("PUT"),
                true,
                false,
            ),
            (
                10,
                Some(("public", "ns1", "app1")),
                "op2",
                Some("PUT"),
                true,
                false,
            ),
            (
                11,
                Some(("domain1", "ns2", "app2")),
                "op4",
                Some("POST"),
                true,
                true,
            ),
            (
                12,
                Some(("domain1", "ns2", "app2")),
                "/op4",
                Some("POST"),
                true,
                true,
            ),
            (
                13,
                Some(("domain1", "ns2", "app2")),
                "op4",
                None,
                true,
                false,
            ),
            (
                14,
                Some(("domain1", "ns2", "app2")),
                "/op3/a",
                Some("PUT"),
                true,
                true,
            ),
            (
                15,
                Some(("domain1", "ns2", "app2")),
                "/OP4",
                None,
                false,
                false,
            ),
            (
                16,
                Some(("domain1", "ns2", "app2")),
                "/op3/b/b",
                Some("PUT"),
                true,
                false,
            ),
            (
                17,
                Some(("domain1", "ns2", "app2")),
                "/op3/a/b",
                Some("PUT"),
                true,
                true,
            ),
            (
                18,
                Some(("domain1", "ns2", "app2")),
                "op4",
                None,
                false,
                true,
            ),
            (
                19,
                Some(("domain1", "ns2", "app4")),
                "op6",
                None,
                false,
                true,
            ),
            (
                20,
                Some(("domain1", "ns2", "app4")),
                "op7/a/b/c",
                None,
                false,
                true,
            ),
            (
                20,
                Some(("domain1", "ns2", "app4")),
                "op7/a/b/c/d",
                None,
                false,
                false,
            ),
            (
                20,
                Some(("domain1", "ns2", "app4")),
                "op7/a/b/c/f",
                None,
                false,
                true,
            ),
            (
                21,
                Some(("domain1", "ns2", "app4")),
                "op7/a/bc",
                None,
                false,
                true,
            ),
            (
                22,
                Some(("domain1", "ns2", "app4")),
                "op7/c/d/e",
                None,
                false,
                true,
            ),
        ];
        for &(n, caller, operation, verb, is_http, allowed) in cases {
            let acl = if is_http { &http } else { &grpc };
            let text = caller.map(|(t, ns, a)| id(t, ns, a));
            let spiffe = text.as_deref().map(|t| SpiffeId::parse(t).unwrap());
            let verb = verb.map_or(Verb::None, Verb::Http);
            let d = acl.decide(spiffe.as_ref(), operation, verb);
            assert_eq!(
                d.allowed(),
                allowed,
                "case {n}: {operation} {verb:?} {caller:?}: {d:?}"
            );
        }
    }

    #[test]
    fn parsing_follows_dapr_and_refuses_what_dapr_would_silently_misread() {
        // Nothing configured: no access control at all.
        assert_eq!(
            AccessControl::parse(&AccessControlSpec::default(), true),
            Ok(None)
        );
        // No global default in a file: allow, as daprd (its preset), policies or not.
        let one = AccessControlSpec {
            trust_domain: Some("public".into()),
            policies: Some(vec![policy("a", "public", "default", "", vec![])]),
            ..AccessControlSpec::default()
        };
        assert_eq!(
            AccessControl::parse(&one, true)
                .unwrap()
                .unwrap()
                .default_action,
            Action::Allow
        );
        let none = AccessControlSpec {
            trust_domain: Some("public".into()),
            policies: Some(vec![]),
            ..AccessControlSpec::default()
        };
        assert_eq!(
            AccessControl::parse(&none, true)
                .unwrap()
                .unwrap()
                .default_action,
            Action::Allow
        );
        // Dapr's refusal of incomplete policies, with its message.
        let bad = AccessControlSpec {
            default_action: Some("deny".into()),
            policies: Some(vec![
                AppPolicySpec {
                    app_id: "app1".into(),
                    namespace: Some("ns".into()),
                    ..AppPolicySpec::default()
                },
                AppPolicySpec {
                    app_id: "app2".into(),
                    trust_domain: Some("public".into()),
                    ..AppPolicySpec::default()
                },
            ]),
            ..AccessControlSpec::default()
        };
        let e = AccessControl::parse(&bad, true).unwrap_err();
        assert!(
            e.to_string()
                .contains("missing trustdomain for apps: [\"app1\"]")
                && e.to_string()
                    .contains("missing namespace for apps: [\"app2\"]"),
            "{e}"
        );
        // A typo is an error here (Dapr: a silent deny / a verb that never matches).
        let typo = AccessControlSpec {
            default_action: Some("alow".into()),
            ..AccessControlSpec::default()
        };
        assert!(matches!(
            AccessControl::parse(&typo, true),
            Err(AclError::Action { .. })
        ));
        let verb = AccessControlSpec {
            default_action: Some("deny".into()),
            policies: Some(vec![policy(
                "a",
                "public",
                "ns",
                "",
                vec![op("/x", &["get"], "allow")],
            )]),
            ..AccessControlSpec::default()
        };
        assert!(matches!(
            AccessControl::parse(&verb, true),
            Err(AclError::Verb { .. })
        ));
    }

    /// The Done-means policy, and the bugs Dapr users hit.
    #[test]
    fn several_operations_multi_segment_methods_and_other_trust_domains() {
        let spec: AccessControlSpec = serde_norway::from_str(
            "defaultAction: deny\n\
             trustDomain: public\n\
             policies:\n\
             - appId: caller\n  defaultAction: deny\n  trustDomain: public\n  namespace: default\n  operations:\n\
             \x20 - name: /ping\n    httpVerb: ['GET']\n    action: allow\n\
             \x20 - name: /helloworld.Greeter/SayHello\n    action: allow\n\
             \x20 - name: /helloworld.Greeter/SayGoodbye\n    action: allow\n\
             \x20 - name: /v1/orders/*/items\n    httpVerb: ['*']\n    action: allow\n",
        )
        .unwrap();
        let http = AccessControl::parse(&spec, true).unwrap().unwrap();
        let grpc = AccessControl::parse(&spec, false).unwrap().unwrap();
        let caller = SpiffeId::parse("spiffe://public/ns/default/caller").unwrap();
        let other = SpiffeId::parse("spiffe://public/ns/default/other").unwrap();
        let get = Verb::Http("GET");
        assert!(http.decide(Some(&caller), "/ping", get).allowed());
        assert!(!http
            .decide(Some(&caller), "/ping", Verb::Http("POST"))
            .allowed());
        assert!(!http.decide(Some(&other), "/ping", get).allowed());
        // dapr/dapr #4202: two methods of one service both allowed.
        for m in [
            "/helloworld.Greeter/SayHello",
            "/helloworld.Greeter/SayGoodbye",
        ] {
            assert!(grpc.decide(Some(&caller), m, Verb::None).allowed(), "{m}");
        }
        assert!(!grpc
            .decide(Some(&caller), "/helloworld.Greeter/Other", Verb::None)
            .allowed());
        // A policy for another trust domain says so (dapr/dapr #4326).
        let foreign = SpiffeId::parse("spiffe://example.org/ns/default/caller").unwrap();
        let d = http.decide(Some(&foreign), "/ping", get);
        assert!(!d.allowed() && d.why.contains("trust domain"), "{d:?}");
    }

    #[test]
    fn normalization_resolves_and_refuses() {
        for (raw, want) in [
            ("/public", "/public"),
            ("public", "/public"),
            ("/admin%2F..%2Fpublic", "/public"),
            ("/public///extra", "/public/extra"),
            ("/a/./b/../c/", "/a/c"),
            ("/../../etc", "/etc"),
            ("/%70ublic", "/public"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
        for raw in [
            "/admin%3Fx",
            "/admin%00x",
            "/a%5C..%5Cpublic",
            "/a%2",
            "/a%zz",
            "/a#b",
        ] {
            assert!(normalize(raw).is_err(), "{raw}");
        }
    }

    /// Any spelling of a path (percent-encoding of any byte, `/` included; `./` and `x/../`
    /// detours; repeated slashes) normalises to the same path, so a deny rule sees every
    /// spelling of what it denies, and the app receives what was checked.
    mod encodings {
        use proptest::prelude::*;

        use super::super::*;

        fn encode(seg: &str, mask: &[bool]) -> String {
            seg.bytes()
                .zip(mask.iter().cycle())
                .map(|(b, &m)| {
                    if m {
                        format!("%{b:02X}")
                    } else {
                        (b as char).to_string()
                    }
                })
                .collect()
        }

        proptest! {
            #[test]
            fn every_spelling_of_a_path_is_decided_as_the_path(
                segs in proptest::collection::vec("[a-zA-Z0-9._~-]{1,8}", 1..5),
                detours in proptest::collection::vec(0u8..4, 1..5),
                mask in proptest::collection::vec(any::<bool>(), 1..9),
                slash_encoded in any::<bool>(),
            ) {
                // "." and ".." are path steps, not names.
                let segs: Vec<String> = segs.into_iter().filter(|s| s != "." && s != "..").collect();
                prop_assume!(!segs.is_empty());
                let canonical = format!("/{}", segs.join("/"));
                let mut spelled = String::new();
                for (i, seg) in segs.iter().enumerate() {
                    let sep = if slash_encoded && i > 0 { "%2F" } else { "/" };
                    match detours[i % detours.len()] {
                        0 => spelled.push_str(&format!("{sep}{}", encode(seg, &mask))),
                        1 => spelled.push_str(&format!("{sep}.{sep}{}", encode(seg, &mask))),
                        2 => spelled.push_str(&format!("{sep}decoy{sep}..{sep}{}", encode(seg, &mask))),
                        _ => spelled.push_str(&format!("{sep}{sep}{}", encode(seg, &mask))),
                    }
                }
                if !spelled.starts_with('/') {
                    spelled.insert(0, '/');
                }
                prop_assert_eq!(normalize(&spelled).unwrap(), canonical.clone());
                // A policy denying exactly the canonical path denies the spelling too.
                let spec: AccessControlSpec = serde_norway::from_str(&format!(
                    "defaultAction: allow\npolicies:\n- appId: c\n  trustDomain: public\n  \
                     namespace: default\n  defaultAction: allow\n  operations:\n  - name: {canonical:?}\n    \
                     httpVerb: ['*']\n    action: deny\n"
                )).unwrap();
                let acl = AccessControl::parse(&spec, true).unwrap().unwrap();
                let caller = SpiffeId::parse("spiffe://public/ns/default/c").unwrap();
                let d = acl.decide(Some(&caller), &normalize(&spelled).unwrap(), Verb::Http("GET"));
                prop_assert!(!d.allowed(), "{} allowed: {:?}", spelled, d);
            }
        }
    }

    #[test]
    fn globs_within_a_segment() {
        for (p, t, m) in [
            ("A*", "ABC", true),
            ("A*", "ABC.a", true),
            ("*C", "ABC", true),
            ("*a", "ABC.a", true),
            ("a*d", "abcd", true),
            ("AB*.a", "ABC.a", true),
            ("a*d", "abc", false),
            ("a*b*c", "axbyc", true),
            ("a*b*c", "axcyb", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob(p, t), m, "{p} ~ {t}");
        }
    }
}
