//! Where trust lives on a host: one type, [`Anchors`], owns a set of trust anchors, and one
//! entry point, [`Anchors::verify`], is what every host check of a certificate chain goes
//! through — Sentry's serving chain seen by the Sentry client, the sidecars' rustls verifiers
//! (both directions), the issued chain judged for tools (`sigil sign`), `sigil cert verify` —
//! each caller stating its [`Policy`] (usage, peer name, skew, time). The rotation machine
//! (sidecar and device) holds its own copy of the same DER in the core's owned bundle.
//!
//! - **Loaded once, when they change**: a certificate the core cannot use as an anchor (it does
//!   not parse, has an unknown critical extension, or a key signatures cannot be verified with,
//!   such as RSA) is skipped with a warning naming it, once, at load; the others keep working.
//!   No usable anchor at all is an error. A handshake never re-reads or re-judges the set.
//! - **One capacity**, [`CAPACITY`], for the CLI, the sidecar, the relay and the Sentry
//!   client: a bundle with more certificates is refused at load with an error naming the
//!   count, never truncated.
//! - **Swapped atomically**: holders keep an `Arc<Anchors>` (in an `ArcSwap` where the set
//!   changes at run time); a check runs against one set from start to end.
//!
//! The core's [`TrustBundle`] borrows the DER it was made from, so a check builds it from the
//! stored DER: the anchors were judged at load, and parsing a certificate costs about 0.1 µs
//! (0.15 % of a chain check).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sigil_core::chain::{self, Options, PeerName, TrustBundle, Usage};
use sigil_core::crypto::SignatureVerifier;
use sigil_core::pem;

use crate::pki::{InputError, SkippedAnchor};

/// Most certificates an anchors bundle may hold (usable or not).
pub const CAPACITY: usize = 64;

/// Why a set of anchors was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The bundle could not be read.
    #[error(transparent)]
    Read(#[from] InputError),
    /// Anchors given as text that is not PEM certificates.
    #[error("{origin}: {reason}")]
    NotPem {
        /// Where they came from.
        origin: String,
        /// Why.
        reason: String,
    },
    /// More certificates than [`CAPACITY`].
    #[error("{origin}: {count} certificates; at most {CAPACITY} trust anchors are supported")]
    TooMany {
        /// Where they came from.
        origin: String,
        /// How many there are.
        count: usize,
    },
    /// None of the certificates can be an anchor.
    #[error("{origin}: no usable trust anchor among {count} certificates ({})", describe(.skipped))]
    NoneUsable {
        /// Where they came from.
        origin: String,
        /// How many there are.
        count: usize,
        /// Why each was skipped.
        skipped: Vec<SkippedAnchor>,
    },
}

fn describe(skipped: &[SkippedAnchor]) -> String {
    skipped
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a caller asks of a chain.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'p> {
    /// The use the leaf must allow.
    pub usage: Usage,
    /// The name the leaf must carry.
    pub peer: PeerName<'p>,
    /// Clock skew allowed on validity periods.
    pub skew: Duration,
    /// The time to validate at.
    pub at: SystemTime,
    /// Most intermediates that are not self-issued ([`chain::DEFAULT_MAX_DEPTH`] unless said).
    pub max_depth: usize,
}

impl Policy<'_> {
    /// A policy for `usage` at `at`, any name, no skew.
    pub const fn new(usage: Usage, at: SystemTime) -> Self {
        Self {
            usage,
            peer: PeerName::Unchecked,
            skew: Duration::ZERO,
            at,
            max_depth: chain::DEFAULT_MAX_DEPTH,
        }
    }
}

/// A set of trust anchors, judged once (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchors {
    source: String,
    ders: Vec<Vec<u8>>,
    skipped: Vec<SkippedAnchor>,
}

impl Anchors {
    /// These anchors plus the roots of Sentry's last answer (`from_sentry`, DER) not among
    /// them: the set a holder that adopts Sentry's bundle uses (a sidecar, the relay). The
    /// configured ones always stay; Sentry's part is replaced by each answer's.
    ///
    /// # Errors
    ///
    /// As [`Anchors::from_ders`].
    pub fn with_sentry_roots(&self, from_sentry: &[Vec<u8>]) -> Result<Self, TrustError> {
        if from_sentry.is_empty() {
            return Ok(self.clone());
        }
        let mut ders = self.ders.clone();
        for d in from_sentry {
            if !ders.contains(d) {
                ders.push(d.clone());
            }
        }
        Self::from_ders(&format!("{} and Sentry's trust bundle", self.source), ders)
    }

    /// The anchors among `ders` (DER certificates) from `source` (a file name, an environment
    /// variable, "Sentry's answer"), skipping the unusable ones with a warning each.
    ///
    /// # Errors
    ///
    /// [`TrustError::TooMany`] or [`TrustError::NoneUsable`].
    pub fn from_ders(source: &str, ders: Vec<Vec<u8>>) -> Result<Self, TrustError> {
        let count = ders.len();
        if count > CAPACITY {
            return Err(TrustError::TooMany {
                origin: source.to_owned(),
                count,
            });
        }
        let (_, skipped) = bundle_of(&ders);
        for s in &skipped {
            // The subject is text the certificate's maker chose: logged escaped.
            tracing::warn!(
                source,
                index = s.index,
                subject = ?s.subject,
                reason = %s.reason,
                "trust anchor skipped"
            );
        }
        let ders: Vec<Vec<u8>> = ders
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !skipped.iter().any(|s| s.index == *i))
            .map(|(_, d)| d)
            .collect();
        if ders.is_empty() {
            return Err(TrustError::NoneUsable {
                origin: source.to_owned(),
                count,
                skipped,
            });
        }
        Ok(Self {
            source: source.to_owned(),
            ders,
            skipped,
        })
    }

    /// The anchors in PEM `text` from `source`.
    ///
    /// # Errors
    ///
    /// [`TrustError::Read`] if it is not PEM certificates, or as [`Anchors::from_ders`].
    pub fn from_pem(source: &str, text: &[u8]) -> Result<Self, TrustError> {
        let ders = crate::pki::pem_certificates(text).map_err(|reason| TrustError::NotPem {
            origin: source.to_owned(),
            reason,
        })?;
        Self::from_ders(source, ders)
    }

    /// The anchors in the PEM file at `path`.
    ///
    /// # Errors
    ///
    /// [`TrustError::Read`], or as [`Anchors::from_ders`].
    pub fn read(path: &Path) -> Result<Self, TrustError> {
        let ders = crate::pki::read_pem_blocks(path, pem::Label::Certificate)?;
        Self::from_ders(&path.display().to_string(), ders)
    }

    /// Where the anchors came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The usable anchors (DER), in the order given.
    pub fn ders(&self) -> &[Vec<u8>] {
        &self.ders
    }

    /// The certificates skipped at load, and why.
    pub fn skipped(&self) -> &[SkippedAnchor] {
        &self.skipped
    }

    /// The one check: `leaf` with `intermediates` (DER) must chain to one of these anchors
    /// under `policy`, with signatures through `verifier`. The path found names its anchor by
    /// its index in [`Anchors::ders`] (see [`Anchors::index_given`]).
    ///
    /// # Errors
    ///
    /// The core's [`chain::Error`]: which certificate, which rule.
    pub fn verify(
        &self,
        leaf: &[u8],
        intermediates: &[&[u8]],
        policy: &Policy<'_>,
        verifier: &impl SignatureVerifier,
    ) -> Result<chain::VerifiedPath, chain::Error> {
        let (bundle, _) = bundle_of(&self.ders);
        let options = Options {
            usage: policy.usage,
            peer: policy.peer,
            skew: policy.skew,
            max_depth: policy.max_depth,
            ..Options::new(unix(policy.at))
        };
        chain::verify(leaf, intermediates, &bundle, verifier, &options)
    }

    /// The position, among the certificates given at load (skipped ones counted), of the
    /// usable anchor at `index` in [`Anchors::ders`].
    pub fn index_given(&self, index: usize) -> usize {
        let mut usable = 0;
        for given in 0.. {
            if self.skipped.iter().any(|s| s.index == given) {
                continue;
            }
            if usable == index {
                return given;
            }
            usable += 1;
        }
        index
    }

    /// The core's bundle of these anchors, for a check that is not a path (the rotation
    /// machine's judgement, see [`crate::client::check_issued`]).
    pub fn bundle(&self) -> TrustBundle<'_, CAPACITY> {
        bundle_of(&self.ders).0
    }
}

/// The core's bundle of `ders` and the ones it refused ([`TrustBundle::add`]'s rule).
fn bundle_of(ders: &[Vec<u8>]) -> (TrustBundle<'_, CAPACITY>, Vec<SkippedAnchor>) {
    crate::pki::anchor_bundle::<CAPACITY>(ders)
}

/// A PEM anchors file read again only when it changes (its modification time or length),
/// for a holder that asks for the anchors per request instead of watching the file (the
/// relay). An unreadable or unusable replacement is logged and the last good set kept.
#[derive(Debug)]
pub struct AnchorsFile {
    path: PathBuf,
    /// The file's (modification time, length) when `anchors` was read, and the set.
    loaded: Mutex<(Option<Stamp>, Arc<Anchors>)>,
}

impl AnchorsFile {
    /// Reads the anchors at `path`.
    ///
    /// # Errors
    ///
    /// As [`Anchors::read`].
    pub fn open(path: &Path) -> Result<Self, TrustError> {
        let stamp = stamp(path);
        let anchors = Arc::new(Anchors::read(path)?);
        Ok(Self {
            path: path.to_owned(),
            loaded: Mutex::new((stamp, anchors)),
        })
    }

    /// The anchors in force: read again if the file has changed since the last read.
    pub fn current(&self) -> Arc<Anchors> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamp(&self.path);
        if now.is_some() && now != loaded.0 {
            match Anchors::read(&self.path) {
                Ok(new) => *loaded = (now, Arc::new(new)),
                Err(e) => {
                    tracing::warn!(error = %e, "trust anchors not re-read; the last good set stays");
                    // Not retried until the file changes again.
                    loaded.0 = now;
                }
            }
        }
        loaded.1.clone()
    }
}

/// A file's modification time and length.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Seconds since the Unix epoch, for the core.
pub fn unix(t: SystemTime) -> sigil_core::UnixTime {
    sigil_core::UnixTime::from_secs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn root(tag: &str) -> Vec<u8> {
        let (creds, _) = crate::ca::Credentials::generate(
            tag,
            &format!("spiffe://{tag}/ns/default/dapr-sentry"),
            SystemTime::now(),
            Duration::ZERO,
        )
        .unwrap();
        creds.anchors().first().unwrap().clone()
    }

    #[test]
    fn more_than_the_capacity_is_refused_with_the_count_never_truncated() {
        let one = root("a.example");
        let e = Anchors::from_ders("f.pem", vec![one.clone(); CAPACITY + 1]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{} certificates", CAPACITY + 1)),
            "{e}"
        );
        assert_eq!(
            Anchors::from_ders("f.pem", vec![one; CAPACITY])
                .unwrap()
                .ders()
                .len(),
            CAPACITY
        );
    }

    #[test]
    fn unusable_certificates_are_skipped_and_none_usable_is_an_error() {
        let good = root("b.example");
        let a = Anchors::from_ders("f.pem", vec![b"garbage".to_vec(), good.clone()]).unwrap();
        assert_eq!(a.ders(), [good]);
        assert_eq!(a.skipped().len(), 1);
        assert_eq!(a.skipped().first().unwrap().index, 0);
        let e = Anchors::from_ders("f.pem", vec![b"garbage".to_vec()]).unwrap_err();
        assert!(matches!(e, TrustError::NoneUsable { count: 1, .. }), "{e}");
    }

    #[test]
    fn an_anchors_file_is_read_again_when_it_changes_and_a_bad_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let pem = |der: &[u8]| crate::pki::to_pem(pem::Label::Certificate, der);
        let (a, b) = (root("a.example"), root("b.example"));
        std::fs::write(&path, pem(&a)).unwrap();
        let file = AnchorsFile::open(&path).unwrap();
        assert_eq!(file.current().ders(), std::slice::from_ref(&a));
        std::fs::write(&path, pem(&a) + &pem(&b)).unwrap();
        assert_eq!(file.current().ders(), [a.clone(), b]);
        std::fs::write(&path, "not PEM at all, and longer than before.........").unwrap();
        assert_eq!(file.current().ders().len(), 2, "the last good set stays");
    }
}
