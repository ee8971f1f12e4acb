//! Dapr's runtime mTLS metrics for the sidecar's identity, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Dapr's runtime mTLS counters.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    init: AtomicU64,
    init_fail: Mutex<BTreeMap<&'static str, u64>>,
    rotated: AtomicU64,
    rotated_fail: Mutex<BTreeMap<&'static str, u64>>,
    expiry: AtomicU64,
}

impl RuntimeMetrics {
    fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, reason: &'static str) {
        if let Ok(mut m) = map.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Counts a failed attempt for `reason`: an init failure before the first identity was
    /// installed (`installed_before` false), a rotation failure after.
    pub(super) fn failed(&self, installed_before: bool, reason: &'static str) {
        let map = if installed_before {
            &self.rotated_fail
        } else {
            &self.init_fail
        };
        Self::bump(map, reason);
    }

    /// Counts an installed identity (the first one or a rotation) and records its expiry.
    pub(super) fn installed(&self, first: bool, not_after: SystemTime) {
        self.expiry.store(
            not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            Ordering::Relaxed,
        );
        if first {
            self.init.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rotated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "dapr_runtime_mtls_init_total",
            "First identities obtained.",
            get(&self.init),
        );
        counter(
            "dapr_runtime_mtls_workload_cert_rotated_total",
            "Identities renewed and installed.",
            get(&self.rotated),
        );
        for (name, map) in [
            ("dapr_runtime_mtls_init_fail_total", &self.init_fail),
            (
                "dapr_runtime_mtls_workload_cert_rotated_fail_total",
                &self.rotated_fail,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} Failed attempts, by reason.\n# TYPE {name} counter"
            );
            if let Ok(m) = map.lock() {
                for (reason, n) in m.iter() {
                    let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP sigil_runtime_workload_cert_expiry_timestamp Unix time the identity in use expires.\n\
             # TYPE sigil_runtime_workload_cert_expiry_timestamp gauge\n\
             sigil_runtime_workload_cert_expiry_timestamp {}",
            get(&self.expiry)
        );
        out
    }

    /// Rotations so far.
    pub fn rotations(&self) -> u64 {
        self.rotated.load(Ordering::Relaxed)
    }
}
