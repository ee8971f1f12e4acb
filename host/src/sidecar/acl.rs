//! The callee's enforcement of Dapr's access-control policies ([`crate::dapr::acl`]) on
//! service invocation: the Configuration file's `spec.accessControl`, re-read when the file
//! changes (an invalid one is refused with the reason and the policy in force stays), the
//! decision on the caller's SPIFFE ID from the mTLS handshake, and Dapr's counters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sigil_core::spiffe::SpiffeId;

use crate::dapr::acl::{AccessControl, Action, Decider, Decision, Verb};
use crate::dapr::config::SentryConfig;

/// A counter's key: the metric's name, then the caller's app ID, trust domain and namespace.
type CountKey = (&'static str, String, String, String);

/// The policy in force and where it comes from.
#[derive(Debug)]
pub struct Acl {
    file: Option<PathBuf>,
    /// The file's modification time when last read, and the policy it gave.
    current: Mutex<(Option<SystemTime>, Option<Arc<AccessControl>>)>,
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
        let (mtime, policy) = match &file {
            Some(f) => {
                let mtime = std::fs::metadata(f).and_then(|m| m.modified()).ok();
                (mtime, read(f)?)
            }
            None => (None, None),
        };
        Ok(Self {
            file,
            current: Mutex::new((mtime, policy)),
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
    fn policy(&self) -> Option<Arc<AccessControl>> {
        let Ok(mut current) = self.current.lock() else {
            return None;
        };
        if let Some(f) = &self.file {
            let mtime = std::fs::metadata(f).and_then(|m| m.modified()).ok();
            if mtime != current.0 {
                current.0 = mtime;
                match read(f) {
                    Ok(p) => {
                        tracing::info!(file = %f.display(), "access control policy reloaded");
                        current.1 = p;
                    }
                    Err(e) => {
                        if let Ok(mut n) = self.reload_refused.lock() {
                            *n += 1;
                        }
                        tracing::error!(error = %e, "access control policy refused; the one in force stays");
                    }
                }
            }
        }
        current.1.clone()
    }

    /// Decides a call from `caller` (the handshake's SPIFFE ID) to `operation` (normalised)
    /// with HTTP `method`, and counts it as Dapr does. `None`: no policy, allowed.
    pub fn decide(&self, caller: Option<&str>, operation: &str, method: &str) -> Option<Decision> {
        let policy = self.policy()?;
        let id = caller.and_then(|c| SpiffeId::parse(c).ok());
        let decision = policy.decide(id.as_ref(), operation, Verb::Http(method));
        if let Some(id) = &id {
            let name = match (decision.by, decision.action) {
                (Decider::Global, Action::Allow) => {
                    "dapr_runtime_acl_global_policy_action_allowed_total"
                }
                (Decider::Global, Action::Deny) => {
                    "dapr_runtime_acl_global_policy_action_blocked_total"
                }
                (_, Action::Allow) => "dapr_runtime_acl_app_policy_action_allowed_total",
                (_, Action::Deny) => "dapr_runtime_acl_app_policy_action_blocked_total",
            };
            let mut parts = id.path().split('/').skip(2);
            let ns = parts.next().unwrap_or("").to_owned();
            let app = parts.next().unwrap_or("").to_owned();
            if let Ok(mut c) = self.counts.lock() {
                *c.entry((name, app, id.trust_domain().as_str().to_owned(), ns))
                    .or_default() += 1;
            }
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
                    "{name}{{app_id={app:?},trust_domain={td:?},namespace={ns:?}}} {n}"
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

fn read(f: &std::path::Path) -> Result<Option<Arc<AccessControl>>, String> {
    let config = SentryConfig::load(f).map_err(|e| e.to_string())?;
    match config.access_control {
        Some(spec) => AccessControl::parse(&spec, true)
            .map(|p| p.map(Arc::new))
            .map_err(|e| format!("{}: spec.accessControl: {e}", f.display())),
        None => Ok(None),
    }
}
