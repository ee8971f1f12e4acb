//! Sentry's automatic CA rotation (file store): a task that, for credentials Sigil generated,
//! takes each step of the rotation journal when [`crate::ca::schedule`] says it is due
//! ([`crate::ca::rotation::run_due`], under the store's lock, so Sentrys sharing the
//! directory take each step once), logs and counts it, and after every look at the journal
//! swaps in the files if they differ from the set in use (the step's Sentry at once; the other
//! replicas, which wake at the same due time, right after it, not at their file watcher's
//! pace). For credentials the user brought it only watches the
//! calendar: from 30 days before the issuer or the first root expires it warns (a log line an
//! hour, and `sigil_sentry_ca_expiring`), as Dapr's Sentry does.
//!
//! The task re-reads the journal at least every [`RECHECK`], so a clock jump, a step taken by
//! another replica or by `sigil ca rotate` is seen within that time.
//!
//! In Kubernetes mode (the Secret store) Sentry does not rotate yet: [`warn_only`] gives the
//! expiry warning there.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Sentry;
use crate::ca::rotation::{self, Automatic, RotationError, StepOptions, WARN_BEFORE};
use crate::ca::schedule::Policy;
use crate::ca::store::StorePaths;

/// The longest sleep between two looks at the journal.
pub const RECHECK: Duration = Duration::from_secs(60);
/// The wait after a failed step.
const RETRY: Duration = Duration::from_secs(5);
/// How often the expiry warning is logged.
const WARN_EVERY: Duration = Duration::from_secs(3600);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs the rotation of `paths` for `sentry` until `stopped` resolves.
pub async fn rotate(
    sentry: Arc<Sentry>,
    paths: StorePaths,
    stopped: impl Future<Output = ()> + Send + 'static,
) {
    let settings = sentry.settings();
    let opts = StepOptions {
        policy: Policy {
            workload_ttl: settings.ttl,
            skew: settings.skew,
        },
        generation: settings.generation,
        force: false,
        crash: settings.crash_at,
    };
    tokio::pin!(stopped);
    let mut warned: Option<Instant> = None;
    let mut last_view = None;
    loop {
        let tick = {
            let p = paths.clone();
            tokio::task::spawn_blocking(move || rotation::run_due(&p, &opts, SystemTime::now)).await
        };
        let wait = match tick {
            Ok(Ok(tick)) => {
                if let Some((step, message)) = &tick.done {
                    sentry.metrics().rotation_step(*step);
                    tracing::info!(?step, "CA rotation: {message}");
                }
                // Whenever the journal moved, not only after a step of ours: replicas wake at
                // the same due time, and the one that did not take the step (or one that
                // recovered an interrupted step) swaps within moments, not at its file
                // watcher's pace. A set already in use is not swapped again.
                let j = &tick.journal;
                let view = (
                    j.active.issuer.clone(),
                    j.prepared.as_ref().map(|s| s.since),
                    j.old.as_ref().map(|s| s.since),
                );
                if last_view.as_ref() != Some(&view) {
                    super::reload::load_and_swap(&sentry, &paths, "CA rotation step").await;
                    last_view = Some(view);
                }
                sentry.metrics().set_slots([
                    Some(unix(j.active.pair.not_after)),
                    j.prepared.as_ref().map(|s| unix(s.pair.not_after)),
                    j.old.as_ref().map(|s| unix(s.pair.not_after)),
                ]);
                if tick.done.is_some() {
                    // The next step may be due at once (a late start): look again now.
                    Duration::ZERO
                } else {
                    match (j.automatic, tick.next) {
                        (Automatic::Yes, Some((_, at))) => {
                            sentry.metrics().set_expiring(false);
                            // A moment late rather than early (a wake-up just before the
                            // due second would find nothing due and sleep again).
                            at.duration_since(SystemTime::now())
                                .map_or(Duration::ZERO, |d| d + Duration::from_millis(50))
                                .min(RECHECK)
                        }
                        _ => {
                            warn_expiry(&sentry, &paths.dir.display().to_string(), &mut warned);
                            RECHECK
                        }
                    }
                }
            }
            Ok(Err(RotationError::Interrupted(point))) => {
                // A crash test: die here as kill -9 would, with no clean-up.
                eprintln!("sentry: SIGIL_CRASH_AT={point}: aborting");
                std::process::abort();
            }
            Ok(Err(e)) => {
                sentry.metrics().rotation_failed();
                tracing::error!(error = %e, "CA rotation step failed; the current set keeps serving; retrying");
                RETRY
            }
            Err(e) => {
                sentry.metrics().rotation_failed();
                tracing::error!(error = %e, "CA rotation task failed; retrying");
                RETRY
            }
        };
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Kubernetes mode (the Secret store), where Sentry does not rotate yet: only the expiry
/// warning, until `stopped` resolves.
pub async fn warn_only(sentry: Arc<Sentry>, stopped: impl Future<Output = ()> + Send + 'static) {
    tokio::pin!(stopped);
    let mut warned: Option<Instant> = None;
    loop {
        warn_expiry(&sentry, "the credentials Secret", &mut warned);
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Credentials Sentry does not rotate: the metric, and a log line an hour from 30 days
/// before the issuer (or the first root) expires.
fn warn_expiry(sentry: &Sentry, store: &str, warned: &mut Option<Instant>) {
    let creds = sentry.credentials();
    let issuer_na = creds.issuer_not_after();
    let root_na = creds
        .anchors()
        .first()
        .and_then(|d| sigil_core::cert::Certificate::parse(d).ok())
        .map_or(issuer_na, |c| crate::ca::system_time(c.not_after()));
    let soonest = issuer_na.min(root_na);
    let left = soonest
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expiring = left < WARN_BEFORE;
    sentry.metrics().set_expiring(expiring);
    if expiring && warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
        *warned = Some(Instant::now());
        tracing::warn!(
            store,
            expires = %humantime::format_rfc3339_seconds(soonest),
            left = %humantime::format_duration(Duration::from_secs(left.as_secs())),
            "the CA's credentials expire soon and Sentry does not rotate them: rotate with \
             `sigil ca rotate prepare|activate|retire`"
        );
    }
}
