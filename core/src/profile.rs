//! The workload profile: what a sidecar or device checks on the certificate Sentry issued it,
//! beyond path validation (which [`crate::chain`] does).
//!
//! An X.509-SVID for a Dapr workload: the key is the one the workload generated (so the
//! identity can actually be used), exactly one URI SAN holding a valid SPIFFE ID, not a CA,
//! extKeyUsage (when present) allowing both TLS server and client authentication, and
//! keyUsage (when present) allowing digitalSignature.

use crate::cert::{Certificate, KeyUsage, Purpose};
use crate::crypto::PublicKey;
use crate::names::GeneralName;
use crate::spiffe::{self, SpiffeId};

/// Why an issued certificate does not fit the workload profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The certificate's public key is not the key this workload generated.
    KeyMismatch,
    /// The certificate's public key is of an unsupported type.
    UnsupportedKey,
    /// Not exactly one URI SAN.
    NotSvid {
        /// URI SANs found.
        uris: usize,
    },
    /// The URI SAN is not a valid SPIFFE ID.
    BadSpiffeId(spiffe::Error),
    /// The certificate is a CA.
    IsCa,
    /// extKeyUsage lacks serverAuth or clientAuth.
    MissingEku(&'static str),
    /// keyUsage lacks digitalSignature.
    MissingDigitalSignature,
    /// The SPIFFE ID is not the one asked for.
    UnexpectedId,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::KeyMismatch => {
                f.write_str("certificate key is not the key this workload generated")
            }
            Self::UnsupportedKey => f.write_str("certificate key type is not supported"),
            Self::NotSvid { uris } => {
                write!(
                    f,
                    "not an X.509-SVID: {uris} URI SANs (exactly one required)"
                )
            }
            Self::BadSpiffeId(e) => write!(f, "URI SAN is not a SPIFFE ID: {e}"),
            Self::IsCa => f.write_str("workload certificate is a CA"),
            Self::MissingEku(which) => write!(f, "extKeyUsage lacks {which}"),
            Self::MissingDigitalSignature => f.write_str("keyUsage lacks digitalSignature"),
            Self::UnexpectedId => f.write_str("SPIFFE ID is not this workload's"),
        }
    }
}

impl core::error::Error for Error {}

/// The identity a workload expects the CA to have issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected<'a> {
    /// Exactly this SPIFFE ID (a device that asked for it in its CSR).
    Id(SpiffeId<'a>),
    /// Dapr's `spiffe://<any trust domain>/ns/<namespace>/<app_id>`: a sidecar sends an empty
    /// CSR and Sentry picks the trust domain, so only the path is the workload's to check.
    DaprWorkload {
        /// The workload's namespace.
        namespace: &'a str,
        /// The workload's app ID.
        app_id: &'a str,
    },
}

impl Expected<'_> {
    /// Whether `id` is the identity expected.
    pub fn matches(&self, id: &SpiffeId<'_>) -> bool {
        match self {
            Self::Id(want) => want == id,
            Self::DaprWorkload { namespace, app_id } => id
                .dapr()
                .is_some_and(|d| d.namespace() == *namespace && d.app_id() == *app_id),
        }
    }
}

impl<'a> From<SpiffeId<'a>> for Expected<'a> {
    fn from(id: SpiffeId<'a>) -> Self {
        Self::Id(id)
    }
}

/// Checks `leaf` against the workload profile for a workload holding `key`; returns its
/// SPIFFE ID. If `expected` is given, the ID must match it.
///
/// # Errors
///
/// The first [`Error`] the certificate breaks, checked in the order the variants are listed.
pub fn check_workload<'a>(
    leaf: &Certificate<'a>,
    key: PublicKey<'_>,
    expected: Option<Expected<'_>>,
) -> Result<SpiffeId<'a>, Error> {
    let cert_key = leaf.public_key().map_err(|_| Error::UnsupportedKey)?;
    if !cert_key.same_key(&key) {
        return Err(Error::KeyMismatch);
    }
    let mut uris = leaf
        .subject_alt_names()
        .into_iter()
        .flat_map(|s| s.iter())
        .filter_map(|n| match n {
            GeneralName::Uri(u) => Some(u),
            _ => None,
        });
    let id = match (uris.next(), uris.next()) {
        (Some(uri), None) => SpiffeId::parse(uri).map_err(Error::BadSpiffeId)?,
        (None, _) => return Err(Error::NotSvid { uris: 0 }),
        (Some(_), Some(_)) => {
            return Err(Error::NotSvid {
                uris: 2 + uris.count(),
            })
        }
    };
    if leaf.is_ca() {
        return Err(Error::IsCa);
    }
    if let Some(eku) = leaf.ext_key_usage() {
        if !eku.contains(Purpose::ServerAuth) {
            return Err(Error::MissingEku("serverAuth"));
        }
        if !eku.contains(Purpose::ClientAuth) {
            return Err(Error::MissingEku("clientAuth"));
        }
    }
    if leaf
        .key_usage()
        .is_some_and(|ku| !ku.contains(KeyUsage::DIGITAL_SIGNATURE))
    {
        return Err(Error::MissingDigitalSignature);
    }
    if expected.is_some_and(|want| !want.matches(&id)) {
        return Err(Error::UnexpectedId);
    }
    Ok(id)
}
