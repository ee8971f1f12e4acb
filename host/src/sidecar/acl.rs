//! The callee's enforcement of Dapr's access-control policies ([`crate::dapr::acl`]) on
//! service invocation: the Configuration file's `spec.accessControl`, re-read when the file
//! changes (an invalid one is refused with the reason and the policy in force stays), the
//! decision on the caller's SPIFFE ID from the mTLS handshake, and Dapr's counters. One file
//! gives two readings, as Dapr reads it by the app's protocol: HTTP invocation decides with
//! HTTP semantics (verbs, paths compared lowercased), gRPC invocation with gRPC semantics
//! (no verb, method names case-sensitive).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sigil_core::spiffe::SpiffeId;

use crate::dapr::acl::{AccessControl, Action, Decider, Decision, Verb};
use crate::dapr::config::SentryConfig;

/// How long after a modification the file is read at every call.
const RECENT: std::time::Duration = std::time::Duration::from_secs(2);

/// What identifies a version of the file: modification time, length, inode.
type Stamp = (Option<SystemTime>, u64, u64);

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    (m.modified().ok(), m.len(), m.ino())
}

/// A counter's key: the metric's name, then the caller's app ID, trust domain and namespace.
type CountKey = (&'static str, String, String, String);

/// One policy file read for each kind of call.
#[derive(Debug, PartialEq, Eq)]
struct Policies {
    http: AccessControl,
    grpc: AccessControl,
}

/// What a call is, for the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call<'a> {
    /// HTTP invocation with this method (upper case).
    Http(&'a str),
    /// gRPC invocation (Dapr's verb `NONE`; the operation is the full method name).
    Grpc,
}

/// The policy in force and where it comes from.
#[derive(Debug)]
pub struct Acl {
    file: Option<PathBuf>,
    /// The file's stamp when last read, and the policy it gave.
    current: Mutex<(Option<Stamp>, Option<Arc<Policies>>)>,
    /// Dapr's `runtime/acl/{app,global}_policy_action_{allowed,blocked}_total`, by caller
    /// (app, trust domain, namespace); refusals of unusable policy files.
    counts: Mutex<BTreeMap<CountKey, u64>>,
    reload_refused: Mutex<u64>,
}

impl Acl {
    /// Reads the policy in `file` (the sidecar's `--config`), for an app speaking HTTP.
    ///
    /// # Errors
    ///
    /// What is wrong with the file: the sidecar does not start on an invalid policy (Dapr's
    /// daprd does not either).
    pub fn load(file: Option<PathBuf>) -> Result<Self, String> {
        let (stamp, policy) = match &file {
            Some(f) => {
                let stamp = std::fs::metadata(f).ok().map(|m| stamp_of(&m));
                (stamp, read(f)?)
            }
            None => (None, None),
        };
        Ok(Self {
            file,
            current: Mutex::new((stamp, policy)),
            counts: Mutex::default(),
            reload_refused: Mutex::default(),
        })
    }

    /// No policy file at all (the demo, tests).
    pub fn none() -> Self {
        Self {
            file: None,
            current: Mutex::new((None, None)),
            counts: Mutex::default(),
            reload_refused: Mutex::default(),
        }
    }

    /// `Some(self)` when a policy file is configured (its policy may still be empty).
    pub fn enabled(&self) -> Option<&Self> {
        self.file.is_some().then_some(self)
    }

    /// The policy in force, re-read first if the file changed.
    fn policy(&self) -> Option<Arc<Policies>> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = &self.file {
            let meta = std::fs::metadata(f).ok();
            let stamp = meta.as_ref().map(stamp_of);
            // Read again when the file's stamp changed, and at every call while it was
            // modified in the last two seconds: an edit within one timestamp tick (or a read
            // between an editor's truncate and its write) is not missed.
            let recent = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < RECENT);
            let changed = stamp != current.0;
            if changed || recent {
                current.0 = stamp;
                match read(f) {
                    Ok(p) => {
                        if p != current.1 {
                            tracing::info!(file = %f.display(), "access control policy reloaded");
                        }
                        current.1 = p;
                    }
                    // Counted and logged once per version of the file (a missing or invalid
                    // file is not reported at every call).
                    Err(e) if changed => {
                        if let Ok(mut n) = self.reload_refused.lock() {
                            *n += 1;
                        }
                        tracing::error!(error = %e, "access control policy refused; the one in force stays");
                    }
                    Err(_) => {}
                }
            }
        }
        current.1.clone()
    }

    /// Decides `call` from `caller` (the handshake's SPIFFE ID) to `operation` (normalised),
    /// and counts it as Dapr does. `None`: no policy, allowed.
    pub fn decide(
        &self,
        caller: Option<&str>,
        operation: &str,
        call: Call<'_>,
    ) -> Option<Decision> {
        let policies = self.policy()?;
        let id = match caller.map(SpiffeId::parse) {
            None => None,
            Some(Ok(id)) => Some(id),
            // A verified peer whose ID does not read is denied, never taken for "no mTLS".
            Some(Err(_)) => {
                return Some(Decision {
                    action: Action::Deny,
                    by: Decider::Global,
                    app_policy: false,
                    why: format!("malformed SPIFFE ID: {:?}", caller.unwrap_or("")),
                })
            }
        };
        let decision = match call {
            Call::Http(method) => policies
                .http
                .decide(id.as_ref(), operation, Verb::Http(method)),
            Call::Grpc => policies.grpc.decide(id.as_ref(), operation, Verb::None),
        };
        // Counted as Dapr counts: by the caller's Dapr identity, not for a malformed one.
        let dapr = id.as_ref().and_then(|id| {
            let (ns, app) = crate::dapr::acl::dapr_app(id)?;
            Some((
                app.to_owned(),
                id.trust_domain().as_str().to_owned(),
                ns.to_owned(),
            ))
        });
        if let Some((app, td, ns)) = dapr {
            let name = match (decision.app_policy, decision.action) {
                (false, Action::Allow) => "dapr_runtime_acl_global_policy_action_allowed_total",
                (false, Action::Deny) => "dapr_runtime_acl_global_policy_action_blocked_total",
                (true, Action::Allow) => "dapr_runtime_acl_app_policy_action_allowed_total",
                (true, Action::Deny) => "dapr_runtime_acl_app_policy_action_blocked_total",
            };
            let mut c = self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *c.entry((name, app, td, ns)).or_default() += 1;
        }
        Some(decision)
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if let Ok(c) = self.counts.lock() {
            let mut last = "";
            for ((name, app, td, ns), n) in c.iter() {
                if *name != last {
                    let _ = writeln!(
                        out,
                        "# HELP {name} Service invocations decided by the access-control policy.\n# TYPE {name} counter"
                    );
                    last = name;
                }
                let _ = writeln!(
                    out,
                    "{name}{{app_id={app:?},trustDomain={td:?},namespace={ns:?}}} {n}"
                );
            }
        }
        let refused = self.reload_refused.lock().map_or(0, |n| *n);
        let _ = writeln!(
            out,
            "# HELP sigil_runtime_acl_reload_refused_total Access-control policy files refused (the policy in force stayed).\n\
             # TYPE sigil_runtime_acl_reload_refused_total counter\n\
             sigil_runtime_acl_reload_refused_total {refused}"
        );
        out
    }
}

fn read(f: &std::path::Path) -> Result<Option<Arc<Policies>>, String> {
    let config = SentryConfig::load(f).map_err(|e| e.to_string())?;
    let Some(spec) = config.access_control else {
        return Ok(None);
    };
    let parse = |http| {
        AccessControl::parse(&spec, http)
            .map_err(|e| format!("{}: spec.accessControl: {e}", f.display()))
    };
    // Both readings are made from the same spec: one is `None` exactly when the other is.
    Ok(match (parse(true)?, parse(false)?) {
        (Some(http), Some(grpc)) => Some(Arc::new(Policies { http, grpc })),
        _ => None,
    })
}
