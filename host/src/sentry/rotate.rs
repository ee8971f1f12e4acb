//! Sentry's automatic CA rotation: a task that, for credentials Sigil generated, takes each
//! step of the rotation journal when [`crate::ca::schedule`] says it is due, logs and counts
//! it, and after every look at the journal swaps in the store's set if it differs from the
//! one in use (the step's Sentry at once; the other replicas, which wake at the same due time,
//! right after it, not at their watcher's pace). Both stores take each step once however many
//! replicas share them: the file store under its lock ([`crate::ca::rotation::run_due`]), the
//! Secret store as one replace at the resourceVersion read
//! ([`crate::ca::secret_store::SecretStore::run_due`]). For credentials the user brought (or
//! a store that holds none: a deleted Secret) it only watches the calendar: from 30 days
//! before the issuer or the first root expires it warns (a log line an hour, and
//! `sigil_sentry_ca_expiring`), as Dapr's Sentry does.
//! The task re-reads the journal at least every [`RECHECK`], so a clock jump, a step taken by
//! another replica or by `sigil ca rotate` is seen within that time.
//!

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Sentry;
use crate::ca::rotation::{
    self, Automatic, CrashPoint, RotationError, StepOptions, Tick, WARN_BEFORE,
};
use crate::ca::secret_store::{SecretStore, SecretStoreError};
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

/// Where the journal is kept.
#[derive(Debug)]
pub enum Journaled {
    /// A credentials directory.
    Files(StorePaths),
    /// The credentials Secret (Kubernetes mode).
    Secret(Box<SecretStore>),
}

/// Why a look at the journal took no step.
enum Failure {
    /// The store holds no set (a deleted or emptied Secret): nothing to rotate; the watch
    /// reports it, the set in use keeps serving.
    NoSet,
    /// A crash test stopped a step here.
    Interrupted(CrashPoint),
    /// Anything else: retried.
    Failed(String),
}

impl From<RotationError> for Failure {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::Interrupted(p) => Self::Interrupted(p),
            e => Self::Failed(e.to_string()),
        }
    }
}

impl Journaled {
    async fn tick(&self, opts: StepOptions, probe_id: &str) -> Result<Tick, Failure> {
        match self {
            Self::Files(paths) => {
                let p = paths.clone();
                tokio::task::spawn_blocking(move || rotation::run_due(&p, &opts, SystemTime::now))
                    .await
                    .map_err(|e| Failure::Failed(format!("CA rotation task: {e}")))?
                    .map_err(Failure::from)
            }
            Self::Secret(store) => match store.run_due(&opts, probe_id, SystemTime::now).await {
                Ok(tick) => Ok(tick),
                Err(SecretStoreError::Rotation { source, .. }) => Err(source.into()),
                Err(SecretStoreError::NoSet { .. }) => Err(Failure::NoSet),
                Err(e) => Err(Failure::Failed(e.to_string())),
            },
        }
    }

    /// Swaps the store's set in if it differs from the one in use; `false` if the Secret
    /// could not be read (tried again at the next look).
    async fn swap(&self, sentry: &Sentry) -> bool {
        match self {
            Self::Files(paths) => {
                // A refused set is reported and counted by the reload; the next change retries.
                super::reload::load_and_swap(sentry, paths, "CA rotation step").await;
                true
            }
            Self::Secret(store) => match store.load(sentry.sentry_id()).await {
                Ok(creds) => {
                    super::reload::swap_if_changed(sentry, creds, "CA rotation step");
                    true
                }
                // The watch reports and counts a refused set.
                Err(e) => {
                    tracing::warn!(error = %e, "reading the rotated credentials Secret");
                    false
                }
            },
        }
    }

    /// Installs the store's JWT key and set at once after the journal moved (the JWT reload
    /// would within its poll; a step moves the key, so the one in use follows now). A pair
    /// that does not pass the checks is left to the reload, which reports and counts it.
    async fn swap_jwt(&self, sentry: &Sentry) {
        let Some(j) = sentry.settings().jwt.as_ref() else {
            return;
        };
        let (key, set, names, algorithm, key_id) = match (self, &j.files, &j.secret) {
            (Self::Files(_), Some(f), _) => {
                let (key, set) = super::reload::jwt_file_texts(&f.paths);
                (key, set, f.paths.clone(), f.algorithm, f.key_id.clone())
            }
            (Self::Secret(store), _, Some((algorithm, key_id, _))) => {
                let Ok((key, set)) = store.jwt_texts().await else {
                    return;
                };
                (key, set, store.jwt_names(), *algorithm, key_id.clone())
            }
            _ => return,
        };
        let (Some(key), Some(set)) = (key, set) else {
            return;
        };
        if let Ok(keys) =
            crate::ca::jwt::JwtKeys::new(&key, &set, &names, algorithm, key_id.as_deref())
        {
            tracing::info!(
                kid = keys.kid(),
                published = keys.published(),
                "CA rotation step: JWT key and set in use"
            );
            sentry.set_jwt_keys(keys);
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Files(paths) => paths.dir.display().to_string(),
            Self::Secret(store) => format!(
                "Secret {}/{}",
                store.namespace(),
                crate::ca::secret_store::TRUST_BUNDLE
            ),
        }
    }
}

/// Runs the rotation of the journal in `store` for `sentry` until `stopped` resolves.
pub async fn rotate(
    sentry: Arc<Sentry>,
    store: Journaled,
    stopped: impl Future<Output = ()> + Send + 'static,
) {
    let settings = sentry.settings();
    let opts = StepOptions {
        policy: settings.rotation_policy(),
        generation: settings.generation,
        force: false,
        crash: settings.crash_at,
        jwt: settings.jwt_rotation(),
    };
    tokio::pin!(stopped);
    let mut warned: Option<Instant> = None;
    let mut last_view = None;
    loop {
        let wait = match store.tick(opts, sentry.sentry_id()).await {
            Ok(tick) => {
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
                if last_view.as_ref() != Some(&view) && store.swap(&sentry).await {
                    store.swap_jwt(&sentry).await;
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
                            warn_expiry(&sentry, &store, &mut warned);
                            RECHECK
                        }
                    }
                }
            }
            Err(Failure::NoSet) => {
                warn_expiry(&sentry, &store, &mut warned);
                RECHECK
            }
            Err(Failure::Interrupted(point)) => {
                // A crash test: die here as kill -9 would, with no clean-up.
                eprintln!("sentry: SIGIL_CRASH_AT={point}: aborting");
                std::process::abort();
            }
            Err(Failure::Failed(e)) => {
                sentry.metrics().rotation_failed();
                tracing::error!(error = %e, "CA rotation step failed; the current set keeps serving; retrying");
                RETRY
            }
        };
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Credentials Sentry does not rotate: the metric, and a log line an hour from 30 days
/// before the issuer (or the first root) expires.
fn warn_expiry(sentry: &Sentry, store: &Journaled, warned: &mut Option<Instant>) {
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
        let how = match store {
            Journaled::Files(_) => "rotate them with `sigil ca rotate prepare|activate|retire`",
            Journaled::Secret(_) => {
                "replace the Secret in two steps: first ca.crt with the new root added (the old \
                 issuer still signs), then, one workload TTL later, the new issuer and key"
            }
        };
        tracing::warn!(
            store = %store.name(),
            expires = %humantime::format_rfc3339_seconds(soonest),
            left = %humantime::format_duration(Duration::from_secs(left.as_secs())),
            "the CA's credentials expire soon and Sentry does not rotate them (it rotates only \
             credentials it generated and marked; a set generated by a Sigil before the marker \
             was introduced counts as brought): {how}"
        );
    }
}
