//! Hot reload of the credentials: the directories holding `ca.crt`, `issuer.crt` and
//! `issuer.key` are watched (`notify`; a directory, because editors and Kubernetes replace
//! files by rename). After an event, changes are debounced until the files have been quiet for
//! [`DEBOUNCE`], so a set written in several steps is read whole; then the set is validated
//! exactly as at start and swapped in atomically. A set that does not validate is refused with
//! a log line and a metric, and the old one keeps serving; the next change is tried again.
//! A periodic re-read ([`POLL`]) covers file systems that do not deliver events.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::Sentry;
use crate::ca::secret_store::SecretStore;
use crate::ca::store::{self, StorePaths};
use crate::ca::Credentials;

/// Quiet time after the last event before the set is read.
pub const DEBOUNCE: Duration = Duration::from_millis(400);
/// Longest wait for quiet under a continuous stream of events.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(5);
/// Re-read interval when no event arrives.
pub const POLL: Duration = Duration::from_secs(30);

/// The content fingerprint of the three files (missing files count as empty).
fn fingerprint(paths: &StorePaths) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in [&paths.ca, &paths.issuer_cert, &paths.issuer_key] {
        let bytes = std::fs::read(p).unwrap_or_default();
        ctx.update(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes());
        ctx.update(&bytes);
    }
    ctx.finish().as_ref().to_vec()
}

/// Whether an event is a change (not a read): files written, created, renamed or removed.
pub fn changes(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

fn relevant(paths: &StorePaths, path: &Path) -> bool {
    paths.is_credential_file(path)
        // Kubernetes secret volumes swap a `..data` symlink.
        || path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("..data"))
}

/// Watches `paths` and swaps validated changes into `sentry` until `stopped` resolves. The
/// watch is registered when this is called, not when the future first runs: a change made
/// once the caller has gone on (Sentry reported ready, say) is never missed.
pub fn watch(
    sentry: Arc<Sentry>,
    paths: StorePaths,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watch_paths = paths.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            // Reads (ours included) report access events: only changes count.
            if changes(&event.kind) && event.paths.iter().any(|p| relevant(&watch_paths, p)) {
                let _ = tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the credentials; re-reading every {POLL:?}");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        for dir in paths.directories() {
            if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
    }
    let mut last = fingerprint(&paths);
    async move {
        // Kept alive as long as the loop runs.
        let _watcher = watcher;
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                got = rx.recv() => {
                    if got.is_none() {
                        // The watcher is gone: keep polling, still stoppable.
                        tokio::select! {
                            () = &mut stopped => return,
                            () = tokio::time::sleep(POLL) => {}
                        }
                    } else {
                        // Debounce: wait until the files have been quiet for a while, but not
                        // forever under a storm of events, and never past shutdown.
                        let cap = tokio::time::sleep(MAX_DEBOUNCE);
                        tokio::pin!(cap);
                        loop {
                            tokio::select! {
                                () = &mut stopped => return,
                                () = &mut cap => break,
                                () = tokio::time::sleep(DEBOUNCE) => break,
                                more = rx.recv() => if more.is_none() { break },
                            }
                        }
                    }
                }
                () = tokio::time::sleep(POLL) => {}
            }
            let now = fingerprint(&paths);
            if now == last {
                continue;
            }
            last = now;
            load_and_swap(&sentry, &paths, "files changed").await;
        }
    }
}

/// Reads the files of `paths`, validates them as at start and swaps them into `sentry` unless
/// they hold the set already in use (the rotation task swaps right after its step; the
/// watcher then finds nothing new). Returns whether a set went in. A set that does not
/// validate is logged and counted, and the old one keeps serving.
pub async fn load_and_swap(sentry: &Sentry, paths: &StorePaths, why: &'static str) -> bool {
    let sentry_id = sentry.sentry_id().to_owned();
    let loaded = {
        let (p, id) = (paths.clone(), sentry_id.clone());
        tokio::task::spawn_blocking(move || store::load(&p, SystemTime::now(), &id)).await
    };
    match loaded {
        Ok(Ok(creds)) => swap_if_changed(sentry, creds, why),
        Ok(Err(e)) => {
            sentry.metrics().reload_refused();
            tracing::error!(error = %e, "replaced credentials refused; the previous set keeps serving");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "credential reload task failed");
            false
        }
    }
}

/// Swaps `creds` in unless Sentry already serves the same anchors and issuer chain; counts
/// and logs a swap (`why` says what caused it). Returns whether it swapped.
pub fn swap_if_changed(sentry: &Sentry, creds: Credentials, why: &'static str) -> bool {
    let current = sentry.credentials();
    if creds.anchors() == current.anchors() && creds.issuer_chain() == current.issuer_chain() {
        return false;
    }
    let roots = creds.anchors().len();
    sentry.swap_credentials(creds);
    // Counted only when a set went in: a refused one changes nothing.
    sentry.metrics().issuer_changed();
    tracing::info!(roots, sentry_id = %sentry.sentry_id(), why, "credentials replaced: new requests use the new set");
    true
}

/// How often the JWT key files are looked at ([`watch_jwt`]).
pub const JWT_POLL: Duration = Duration::from_secs(1);

/// The JWT key file and set file as text (`None` for a missing or unreadable one).
pub fn jwt_file_texts(
    paths: &crate::ca::jwt::JwtKeyPaths,
) -> (Option<zeroize::Zeroizing<String>>, Option<String>) {
    (
        std::fs::read_to_string(&paths.key)
            .ok()
            .map(zeroize::Zeroizing::new),
        std::fs::read_to_string(&paths.jwks).ok(),
    )
}

/// Re-reads the JWT key and its set when either file changes (looked at every [`JWT_POLL`],
/// read once quiet for [`DEBOUNCE`]) and installs them if they pass the checks of start
/// ([`crate::ca::jwt::JwtKeys::new`]: the key suits the algorithm, the set holds it, the kids
/// agree); otherwise the keys in use stay, with a log line and
/// `sigil_sentry_credentials_reload_refused_total`. Nothing is generated here: a key removed
/// while Sentry runs leaves the one in memory signing. To rotate the key with overlap, add the
/// new public key to the set first, wait for relying parties to fetch it, then replace the key.
pub async fn watch_jwt(
    sentry: Arc<Sentry>,
    files: super::JwtFiles,
    stopped: impl Future<Output = ()>,
) {
    let super::JwtFiles {
        paths,
        algorithm,
        key_id,
        loaded,
    } = files;
    tokio::pin!(stopped);
    let mut last = loaded;
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(JWT_POLL) => {}
        }
        let (key, set) = jwt_file_texts(&paths);
        let now =
            crate::ca::jwt::text_fingerprint(key.as_deref().map(String::as_str), set.as_deref());
        if now == last {
            continue;
        }
        // Quiet first: a pair written in two steps is read whole. The pair checked is the
        // pair whose fingerprint is kept.
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(DEBOUNCE) => {}
        }
        let (key, set) = jwt_file_texts(&paths);
        let settled =
            crate::ca::jwt::text_fingerprint(key.as_deref().map(String::as_str), set.as_deref());
        if settled != now {
            continue;
        }
        last = settled;
        let loaded = match (&key, &set) {
            (Some(k), Some(s)) => {
                crate::ca::jwt::JwtKeys::new(k, s, &paths, algorithm, key_id.as_deref())
                    .map_err(|e| e.to_string())
            }
            _ => Err(format!(
                "{} or {} is missing or unreadable",
                paths.key.display(),
                paths.jwks.display()
            )),
        };
        match loaded {
            Ok(keys) => {
                tracing::info!(kid = keys.kid(), "JWT signing key and key set reloaded");
                sentry.set_jwt_keys(keys);
            }
            Err(e) => {
                sentry.metrics().reload_refused();
                tracing::error!(error = %e, "replaced JWT key files refused; the keys in use stay");
            }
        }
    }
}

/// How often the Secret's JWT key is looked at ([`watch_jwt_secret`]).
pub const JWT_SECRET_POLL: Duration = Duration::from_secs(5);

/// Kubernetes mode: re-reads the JWT key and set from the Secret every [`JWT_SECRET_POLL`]
/// and installs a changed pair that passes the checks of start (the ConfigMap's `jwks.json`
/// follows); a pair that does not is refused with a log line and
/// `sigil_sentry_credentials_reload_refused_total`, and the keys in use stay. Nothing is
/// generated here.
pub async fn watch_jwt_secret(
    sentry: Arc<Sentry>,
    secrets: SecretStore,
    (algorithm, key_id, loaded): (crate::ca::jwt::JwtAlgorithm, Option<String>, Vec<u8>),
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut last = loaded;
    let names = secrets.jwt_names();
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(JWT_SECRET_POLL) => {}
        }
        let (key, set) = match secrets.jwt_texts().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading the Secret's JWT key");
                continue;
            }
        };
        let now =
            crate::ca::jwt::text_fingerprint(key.as_deref().map(String::as_str), set.as_deref());
        if now == last {
            // The ConfigMap is brought in step at every look (one read when it is), so a
            // failed publish, or a ConfigMap recreated without `jwks.json`, heals within a
            // poll. Only when the Secret did not change: a set another replica just rotated
            // is not overwritten with the one in memory.
            if let Some(keys) = sentry.jwt_keys() {
                if let Err(e) = secrets.publish_jwks(&keys.jwks_json()).await {
                    tracing::warn!(error = %e, "publishing jwks.json in the ConfigMap");
                }
            }
            continue;
        }
        last = now;
        let loaded = match (&key, &set) {
            (Some(k), Some(s)) => {
                crate::ca::jwt::JwtKeys::new(k, s, &names, algorithm, key_id.as_deref())
                    .map_err(|e| e.to_string())
            }
            _ => Err("the Secret lacks jwt.key or jwks.json".to_owned()),
        };
        match loaded {
            Ok(keys) => {
                let set = keys.jwks_json();
                tracing::info!(
                    kid = keys.kid(),
                    "JWT signing key and key set reloaded from the Secret"
                );
                sentry.set_jwt_keys(keys);
                if let Err(e) = secrets.publish_jwks(&set).await {
                    tracing::warn!(error = %e, "publishing jwks.json in the ConfigMap (retried at the next look)");
                }
            }
            Err(e) => {
                sentry.metrics().reload_refused();
                tracing::error!(error = %e, "the Secret's JWT key refused; the keys in use stay");
            }
        }
    }
}

/// Kubernetes mode: watches the credentials Secret ([`SecretStore::watch`]) and swaps each
/// changed set that validates into `sentry` until `stopped` resolves; a refused set is logged
/// and counted, and the old one keeps serving.
pub async fn watch_secret(
    sentry: Arc<Sentry>,
    secrets: SecretStore,
    stopped: impl Future<Output = ()>,
) {
    let probe_id = sentry.sentry_id().to_owned();
    let initial = sentry.credentials().anchors_pem().to_owned();
    let swapping = sentry.clone();
    let refusing = sentry.clone();
    let mismatching = sentry.clone();
    secrets
        .watch(
            probe_id,
            initial,
            move |creds| {
                swap_if_changed(&swapping, creds, "credentials Secret changed");
            },
            move |e| {
                refusing.metrics().reload_refused();
                tracing::error!(error = %e, "replaced credentials refused; the previous set keeps serving");
            },
            move || {
                mismatching.metrics().bundle_mismatch();
                tracing::warn!(
                    "the trust-bundle ConfigMap held other anchors than the Secret; corrected \
                     (the Secret's set is kept, never regenerated)"
                );
            },
            stopped,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind,
        RenameMode,
    };

    #[test]
    fn reads_are_not_changes() {
        // Reading the files (as the reload itself does) must not trigger another reload.
        assert!(!changes(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes(&EventKind::Access(AccessKind::Read)));
        assert!(changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(changes(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(changes(&EventKind::Create(CreateKind::File)));
        assert!(changes(&EventKind::Remove(RemoveKind::File)));
    }

    /// A real watcher on a directory: reading a file yields no change, writing one does.
    #[test]
    fn a_real_watcher_reports_writes_and_not_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, "one").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(e) = res {
                let _ = tx.send(changes(&e.kind));
            }
        })
        .unwrap();
        w.watch(dir.path(), RecursiveMode::NonRecursive).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::read(&file).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.try_iter().all(|c| !c), "a read was taken for a change");
        std::fs::write(&file, "two").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.try_iter().any(|c| c), "a write was not seen");
    }
}
