//! Replacing Sentry's root by hand with no failed handshake: the three steps, each safe to
//! stop after, that every holder of the old root survives (the demo performs them while calls
//! go on; `host/tests/sidecar.rs` checks them under load).
//!
//! 1. [`RootReplacement::publish`]: the new root joins the trust anchors the holders read
//!    (both roots trusted); Sentry still issues from the old issuer.
//! 2. [`RootReplacement::activate`]: Sentry's files switch to the new issuer, with `ca.crt`
//!    holding the new root first and the old one after (Sentry reloads them without a
//!    restart); holders renew under the new root at their next rotation.
//! 3. [`RootReplacement::retire`]: once every holder chains to the new root
//!    ([`RootReplacement::new_root`]), the old root leaves the anchors and `ca.crt`.
//!
//! Every file is replaced atomically (a watcher never reads half of one); the issuer key is
//! written `0600`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::store::StorePaths;
use super::{Credentials, CredentialsError, GeneratedPem};
use crate::pki::InputError;

/// Why a step could not be taken. Nothing is half-written: each file is replaced whole or not
/// at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplaceError {
    /// Making the new credentials failed.
    #[error("making the new root: {0}")]
    Generate(#[from] CredentialsError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    File(#[from] InputError),
}

/// A root replacement under way: the new root and issuer, made once.
#[derive(Debug)]
pub struct RootReplacement {
    new: GeneratedPem,
    new_root: Vec<Vec<u8>>,
}

impl RootReplacement {
    /// Makes a new root and issuer for `trust_domain`, Sentry serving as `sentry_id`.
    ///
    /// # Errors
    ///
    /// [`ReplaceError::Generate`].
    pub fn prepare(
        trust_domain: &str,
        sentry_id: &str,
        now: SystemTime,
    ) -> Result<Self, ReplaceError> {
        let (_, new) = Credentials::generate(trust_domain, sentry_id, now, Duration::ZERO)?;
        let new_root = crate::pki::pem_certificates(new.ca.as_bytes()).map_err(|reason| {
            CredentialsError::Malformed {
                file: "ca.crt",
                index: 1,
                reason,
            }
        })?;
        Ok(Self { new, new_root })
    }

    /// The new root (DER): a holder whose chain ends at it has moved over.
    pub fn new_root(&self) -> &[Vec<u8>] {
        &self.new_root
    }

    /// Step 1: appends the new root to the PEM anchors file `anchors` (kept as it is
    /// otherwise).
    ///
    /// # Errors
    ///
    /// [`ReplaceError::File`].
    pub fn publish(&self, anchors: &Path) -> Result<(), ReplaceError> {
        let old = read(anchors)?;
        write(anchors, &format!("{old}{}", self.new.ca), 0o644)
    }

    /// Step 2: Sentry's store switches to the new issuer; its `ca.crt` holds the new root and
    /// then what it held before.
    ///
    /// # Errors
    ///
    /// [`ReplaceError::File`].
    pub fn activate(&self, store: &StorePaths) -> Result<(), ReplaceError> {
        let old = read(&store.ca)?;
        write(&store.issuer_cert, &self.new.issuer, 0o644)?;
        write(&store.issuer_key, &self.new.key, 0o600)?;
        write(&store.ca, &format!("{}{old}", self.new.ca), 0o644)
    }

    /// Step 3: the anchors file and Sentry's `ca.crt` hold the new root only.
    ///
    /// # Errors
    ///
    /// [`ReplaceError::File`].
    pub fn retire(&self, store: &StorePaths, anchors: &Path) -> Result<(), ReplaceError> {
        write(anchors, &self.new.ca, 0o644)?;
        write(&store.ca, &self.new.ca, 0o644)
    }
}

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), ReplaceError> {
    crate::pki::write_atomic(path, text.as_bytes(), mode, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_three_steps_leave_a_set_sentry_loads_at_each_stage() {
        let dir = tempfile::tempdir().unwrap();
        let store = StorePaths::in_dir(dir.path());
        let id = crate::dapr::sentry_id("localhost", "default");
        let now = SystemTime::now();
        let (_, old) = Credentials::generate("localhost", &id, now, Duration::ZERO).unwrap();
        std::fs::write(&store.ca, &old.ca).unwrap();
        std::fs::write(&store.issuer_cert, &old.issuer).unwrap();
        std::fs::write(&store.issuer_key, old.key.as_bytes()).unwrap();
        let anchors = dir.path().join("anchors.pem");
        std::fs::write(&anchors, &old.ca).unwrap();
        let roots = |p: &Path| crate::pki::read_pem_blocks(p, sigil_core::pem::Label::Certificate);

        let r = RootReplacement::prepare("localhost", &id, now).unwrap();
        let old_root = roots(&store.ca).unwrap();
        r.publish(&anchors).unwrap();
        assert_eq!(
            roots(&anchors).unwrap(),
            [old_root.clone(), r.new_root().to_vec()].concat()
        );

        r.activate(&store).unwrap();
        assert_eq!(
            roots(&store.ca).unwrap(),
            [r.new_root().to_vec(), old_root].concat()
        );
        let loaded = super::super::store::load(&store, now, &id).unwrap();
        assert_eq!(loaded.anchors().first(), r.new_root().first());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&store.issuer_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        r.retire(&store, &anchors).unwrap();
        assert_eq!(roots(&anchors).unwrap(), r.new_root());
        assert_eq!(roots(&store.ca).unwrap(), r.new_root());
        super::super::store::load(&store, now, &id).unwrap();
    }
}
