//! Sentry's metrics in the Prometheus text format, with Dapr's names
//! (`dapr_sentry_cert_sign_request_received_total`, `..._success_total`,
//! `..._failure_total{reason}`, `dapr_sentry_issuercert_changed_total`,
//! `dapr_sentry_issuercert_expiry_timestamp`) and Sigil's own: a signing-latency histogram,
//! refused credential reloads, the CA rotation journal (each slot's issuer notAfter, steps
//! taken and failed, the 30-day expiry warning for credentials the user brought), and the gRPC
//! port's connection table (open connections, and
//! how many were refused, shed for room, or closed at a deadline). Counters are atomics;
//! rendering takes a snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::net::admission::Stats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Sentry's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    received: AtomicU64,
    success: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    issuer_changed: AtomicU64,
    reload_refused: AtomicU64,
    bundle_mismatch: AtomicU64,
    issuer_expiry: AtomicU64,
    slots: Mutex<[Option<u64>; 3]>,
    rotation_steps: [AtomicU64; 3],
    rotation_failures: AtomicU64,
    expiring: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    /// A SignCertificate call arrived.
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// A certificate was issued after `took`.
    pub fn success(&self, took: Duration) {
        self.success.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A request failed for `reason` (`validator`, `csr`, `sign`, ...).
    pub fn failure(&self, reason: &'static str) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(reason).or_default() += 1;
        }
    }

    /// A new credential set was swapped in (files replaced and validated), or generated.
    pub fn issuer_changed(&self) {
        self.issuer_changed.fetch_add(1, Ordering::Relaxed);
    }

    /// A changed credential set was refused; the old one keeps serving.
    pub fn reload_refused(&self) {
        self.reload_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The trust-bundle ConfigMap held other anchors than the Secret (corrected; the
    /// Secret's set kept).
    pub fn bundle_mismatch(&self) {
        self.bundle_mismatch.fetch_add(1, Ordering::Relaxed);
    }

    /// The issuer in use expires at `unix_secs`.
    pub fn set_issuer_expiry(&self, unix_secs: u64) {
        self.issuer_expiry.store(unix_secs, Ordering::Relaxed);
    }

    /// The rotation journal's slots: each pair's issuer notAfter (unix seconds), `None` for an
    /// empty slot; in the order active, prepared, old.
    pub fn set_slots(&self, slots: [Option<u64>; 3]) {
        if let Ok(mut s) = self.slots.lock() {
            *s = slots;
        }
    }

    /// A rotation step was taken (0 prepare, 1 activate, 2 retire).
    pub fn rotation_step(&self, step: crate::ca::schedule::Step) {
        use crate::ca::schedule::Step;
        let i = match step {
            Step::Prepare => 0,
            Step::Activate => 1,
            Step::Retire => 2,
        };
        if let Some(c) = self.rotation_steps.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A rotation step failed (it is tried again).
    pub fn rotation_failed(&self) {
        self.rotation_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether credentials Sentry does not rotate expire within 30 days.
    pub fn set_expiring(&self, expiring: bool) {
        self.expiring.store(u64::from(expiring), Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the gRPC port's connection counters `conns`.
    pub fn render(&self, conns: &Stats) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "dapr_sentry_cert_sign_request_received_total",
            "SignCertificate requests received.",
            get(&self.received),
        );
        counter(
            &mut out,
            "dapr_sentry_cert_sign_success_total",
            "Certificates issued.",
            get(&self.success),
        );
        let _ = writeln!(
            out,
            "# HELP dapr_sentry_cert_sign_failure_total Requests refused, by reason.\n\
             # TYPE dapr_sentry_cert_sign_failure_total counter"
        );
        if let Ok(f) = self.failures.lock() {
            for (reason, n) in f.iter() {
                let _ = writeln!(
                    out,
                    "dapr_sentry_cert_sign_failure_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        counter(
            &mut out,
            "dapr_sentry_issuercert_changed_total",
            "Credential sets swapped in (replaced files that validated), or generated.",
            get(&self.issuer_changed),
        );
        counter(
            &mut out,
            "sigil_sentry_credentials_reload_refused_total",
            "Replaced credentials refused (the previous set kept serving).",
            get(&self.reload_refused),
        );
        counter(
            &mut out,
            "sigil_sentry_trust_bundle_mismatch_total",
            "Times the trust-bundle ConfigMap held other anchors than the Secret (corrected).",
            get(&self.bundle_mismatch),
        );
        let _ = writeln!(
            out,
            "# HELP dapr_sentry_issuercert_expiry_timestamp Unix time the issuer certificate expires.\n\
             # TYPE dapr_sentry_issuercert_expiry_timestamp gauge\n\
             dapr_sentry_issuercert_expiry_timestamp {}",
            get(&self.issuer_expiry)
        );
        let _ = writeln!(
            out,
            "# HELP sigil_sentry_ca_slot_expiry_timestamp Unix time each rotation slot's issuer \
             expires (active signs; prepared is published; old is retiring).\n\
             # TYPE sigil_sentry_ca_slot_expiry_timestamp gauge"
        );
        if let Ok(slots) = self.slots.lock() {
            for (name, at) in ["active", "prepared", "old"].iter().zip(slots.iter()) {
                if let Some(at) = at {
                    let _ = writeln!(
                        out,
                        "sigil_sentry_ca_slot_expiry_timestamp{{slot=\"{name}\"}} {at}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP sigil_sentry_ca_rotation_steps_total CA rotation steps taken, by step.\n\
             # TYPE sigil_sentry_ca_rotation_steps_total counter"
        );
        for (name, c) in ["prepare", "activate", "retire"]
            .iter()
            .zip(&self.rotation_steps)
        {
            let _ = writeln!(
                out,
                "sigil_sentry_ca_rotation_steps_total{{step=\"{name}\"}} {}",
                get(c)
            );
        }
        counter(
            &mut out,
            "sigil_sentry_ca_rotation_failures_total",
            "CA rotation steps that failed (each is tried again).",
            get(&self.rotation_failures),
        );
        let _ = writeln!(
            out,
            "# HELP sigil_sentry_ca_expiring 1 when credentials Sentry does not rotate (the \
             user's) expire within 30 days.\n\
             # TYPE sigil_sentry_ca_expiring gauge\n\
             sigil_sentry_ca_expiring {}",
            get(&self.expiring)
        );
        let _ = writeln!(
            out,
            "# HELP sigil_sentry_connections Open gRPC connections.\n\
             # TYPE sigil_sentry_connections gauge\n\
             sigil_sentry_connections {}",
            conns.open
        );
        let _ = writeln!(
            out,
            "# HELP sigil_sentry_connections_refused_total New connections refused, by reason.\n\
             # TYPE sigil_sentry_connections_refused_total counter\n\
             sigil_sentry_connections_refused_total{{reason=\"address\"}} {}\n\
             sigil_sentry_connections_refused_total{{reason=\"full\"}} {}",
            conns.refused_address, conns.refused_full
        );
        counter(
            &mut out,
            "sigil_sentry_connections_shed_total",
            "Idle connections closed to make room for new ones.",
            conns.shed,
        );
        counter(
            &mut out,
            "sigil_sentry_connections_timed_out_total",
            "Connections closed at a deadline (handshake, first request, idle).",
            conns.timed_out,
        );
        let name = "sigil_sentry_cert_sign_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to validate a request and issue its certificate.\n# TYPE {name} histogram"
        );
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(count));
        }
        let count = get(&self.latency_count);
        let sum = Duration::from_micros(get(&self.latency_sum_micros)).as_secs_f64();
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_dapr_names_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.received();
        m.received();
        m.success(Duration::from_micros(700));
        m.failure("csr");
        m.set_issuer_expiry(42);
        let conns = Stats {
            open: 3,
            refused_full: 2,
            ..Stats::default()
        };
        let t = m.render(&conns);
        assert!(
            t.contains("dapr_sentry_cert_sign_request_received_total 2\n"),
            "{t}"
        );
        assert!(t.contains("dapr_sentry_cert_sign_success_total 1\n"));
        assert!(t.contains("dapr_sentry_cert_sign_failure_total{reason=\"csr\"} 1\n"));
        assert!(t.contains("dapr_sentry_issuercert_expiry_timestamp 42\n"));
        assert!(t.contains("sigil_sentry_cert_sign_latency_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(t.contains("sigil_sentry_cert_sign_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(t.contains("sigil_sentry_cert_sign_latency_seconds_count 1\n"));
        assert!(t.contains("sigil_sentry_connections 3\n"));
        assert!(t.contains("sigil_sentry_connections_refused_total{reason=\"full\"} 2\n"));
    }
}
