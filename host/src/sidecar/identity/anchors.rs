//! Where a sidecar's trust anchors come from and how it learns they changed: PEM in the
//! environment (`DAPR_TRUST_ANCHORS`, fixed), or a file watched in its directory (an atomic
//! replace or a Kubernetes ConfigMap's `..data` swap both count).

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::IdentityError;
use crate::trust::Anchors;

/// Where the trust anchors come from.
#[derive(Clone, Debug)]
pub enum AnchorSource {
    /// PEM text (`DAPR_TRUST_ANCHORS`), fixed for the process's life.
    Pem(String),
    /// A PEM file, re-read when it changes.
    File(PathBuf),
}

/// Reads the anchors from `source`.
pub(super) fn read_anchors(source: &AnchorSource) -> Result<Anchors, IdentityError> {
    match source {
        AnchorSource::Pem(p) => Anchors::from_pem("DAPR_TRUST_ANCHORS", p.as_bytes()),
        AnchorSource::File(f) => Anchors::read(f),
    }
    .map_err(|e| IdentityError::Anchors(e.to_string()))
}

/// Watches `file`'s directory and signals changes to it; `None` if watching is impossible (the
/// anchors then stay as loaded).
pub(super) fn watch_file(
    file: PathBuf,
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let dir = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        })?
        .to_owned();
    let name = file.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if crate::sentry::reload::changes(&ev.kind)
                && ev.paths.iter().any(|p| {
                    p.file_name() == Some(name.as_os_str())
                        || p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("..data"))
                })
            {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the trust anchors; they stay as loaded"))
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the trust anchors; they stay as loaded");
        })
        .ok()?;
    Some(watcher)
}
