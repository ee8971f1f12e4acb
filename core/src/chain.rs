//! Certificate path building and validation (RFC 5280 §6), strict in the ways rustls-webpki is.
//!
//! [`verify`] takes a leaf, a set of untrusted intermediates and a [`TrustBundle`], and looks
//! for a path from the leaf to an anchor, trying the next candidate issuer when one fails. On
//! the way it checks, for every certificate: the signature (through a
//! [`SignatureVerifier`]), validity at the caller's time with the caller's allowed clock skew;
//! for issuers: cA, pathLenConstraint, keyCertSign when keyUsage is present, extKeyUsage when
//! present; every issuer's (and anchor's) nameConstraints over the certificates below it; and
//! for the leaf: not a CA, extKeyUsage for the usage asked, and the peer name asked for.
//!
//! Work is bounded by a [`Budget`] (signatures checked, issuers tried, name comparisons) and a
//! depth cap; each limit has its own error. An anchor is a name and a key: its own validity is
//! not checked (as in rustls-webpki); its pathLenConstraint and nameConstraints are applied.
//!
//! ## Rules beyond rustls-webpki
//!
//! Where RFC 5280 leaves room, or rustls-webpki and openssl differ, these are the rules:
//!
//! - **Anchors**: [`TrustBundle::add`] refuses a certificate the core cannot use as an anchor:
//!   one that does not parse, one with an unknown critical extension (a constraint the core
//!   cannot honour), and one whose key it cannot verify with (RSA, P-384, ...): such an anchor
//!   could never validate a path. Loaders skip such anchors and keep the rest (the host's
//!   `pki::anchor_bundle`, [`crate::bundle::OwnedTrustBundle::replace`]).
//! - **Self-issued intermediates** (issuer name = subject name; a CA re-keying under its own
//!   name) count neither toward a pathLenConstraint nor toward [`Options::max_depth`]
//!   (RFC 5280 §6.1.4 (l), as openssl; rustls-webpki counts them). The path still holds at
//!   most [`MAX_INTERMEDIATES`] certificates in all, and the [`Budget`] bounds the search.
//!   Name constraints do not apply to a self-issued intermediate's own names (§6.1.3 (b)).
//! - **Names under nameConstraints** ([`crate::names`]): a wildcard dNSName `*.d` stands for
//!   every name one label below `d` and must satisfy the constraints as a whole: a permitted
//!   subtree must contain every such name, an excluded subtree must contain none of them
//!   (so `*.example.com` under an excluded `bad.example.com` is refused: the class of Go's
//!   CVE-2025-61727). Below any nameConstraints, every dNSName and rfc822Name of the
//!   certificates checked must be well-formed (LDH labels, no empty label, no trailing dot,
//!   a last label not all digits, a wildcard only as a whole first label over at least two
//!   labels; a dot-atom mailbox at a well-formed domain), and so must every constraint
//!   compared with one: a malformed name or constraint is a violation, never a byte
//!   comparison. Non-ASCII names never parse (IA5String).
//! - **Key identifiers**: authorityKeyIdentifier and subjectKeyIdentifier are not required
//!   (rustls-webpki and openssl by default accept certificates without them, and neither the
//!   SPIFFE X.509-SVID profile nor Dapr's validation requires them; Dapr's and Sigil's
//!   Sentry write both). When a certificate's authorityKeyIdentifier keyIdentifier and a
//!   candidate issuer's subjectKeyIdentifier are both present and differ, the candidate is not
//!   its issuer ([`ErrorKind::AuthorityKeyIdMismatch`]), as in openssl; rustls-webpki ignores
//!   both. The signature is never skipped on a match: key identifiers only rule candidates
//!   out, which also spares a signature check on a same-named root during a root rotation.

use core::time::Duration;

use crate::cert::{self, Certificate, KeyUsage, Purpose};
use crate::crypto::{AlgorithmError, SignatureError, SignatureVerifier};
use crate::names::{self, ConstraintFailure, GeneralName};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::time::UnixTime;

/// Most untrusted intermediates [`verify`] accepts from a peer.
pub const MAX_INTERMEDIATES: usize = 8;
/// Default cap on the intermediates in a path that are not self-issued (rustls-webpki's
/// `MAX_SUB_CA_COUNT`).
pub const DEFAULT_MAX_DEPTH: usize = 6;

/// A trust anchor: a certificate whose subject name and key are trusted as given.
#[derive(Clone, Copy, Debug)]
pub struct TrustAnchor<'a> {
    cert: Certificate<'a>,
}

impl<'a> TrustAnchor<'a> {
    /// An anchor from a DER certificate (normally a self-signed root).
    ///
    /// # Errors
    ///
    /// [`BundleError::Malformed`] if it does not parse (an unknown critical extension
    /// included), [`BundleError::UnsupportedKey`] if its key is not one signatures can be
    /// verified with here: such an anchor could never validate a path.
    pub fn from_der(der: &'a [u8]) -> Result<Self, BundleError> {
        let cert = Certificate::parse(der).map_err(BundleError::Malformed)?;
        cert.public_key().map_err(BundleError::UnsupportedKey)?;
        Ok(Self { cert })
    }

    /// The anchor's certificate.
    pub const fn certificate(&self) -> &Certificate<'a> {
        &self.cert
    }
}

/// Why a trust bundle refused an anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle already holds its capacity of anchors.
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// The certificate did not parse (an unknown critical extension included).
    Malformed(cert::Error),
    /// The certificate's key is not one signatures can be verified with (RSA, P-384, ...).
    UnsupportedKey(AlgorithmError),
}

impl BundleError {
    /// A short fixed name of the error, for logs that cannot afford `core::fmt` (firmware).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Full { .. } => "bundle-full",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedKey(_) => "unsupported-key",
        }
    }
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full { capacity } => write!(f, "trust bundle is full ({capacity} anchors)"),
            Self::Malformed(e) => write!(f, "trust anchor: {e}"),
            Self::UnsupportedKey(e) => write!(f, "trust anchor key: {e}"),
        }
    }
}

impl core::error::Error for BundleError {}

/// A set of trust anchors with a fixed capacity. Several anchors at once is the normal case
/// during a root rotation: chains to either validate.
#[derive(Clone, Debug, Default)]
pub struct TrustBundle<'a, const N: usize> {
    anchors: heapless::Vec<TrustAnchor<'a>, N>,
}

impl<'a, const N: usize> TrustBundle<'a, N> {
    /// An empty bundle.
    pub const fn new() -> Self {
        Self {
            anchors: heapless::Vec::new(),
        }
    }

    /// Adds the anchor in `der`. Adding a certificate already present is a no-op.
    ///
    /// # Errors
    ///
    /// As [`TrustAnchor::from_der`], or [`BundleError::Full`]; the bundle is unchanged then.
    pub fn add(&mut self, der: &'a [u8]) -> Result<(), BundleError> {
        let anchor = TrustAnchor::from_der(der)?;
        if self.contains(der) {
            return Ok(());
        }
        self.anchors
            .push(anchor)
            .map_err(|_| BundleError::Full { capacity: N })
    }

    /// Removes the anchor whose certificate is `der`; returns whether it was there.
    pub fn remove(&mut self, der: &[u8]) -> bool {
        let before = self.anchors.len();
        self.anchors.retain(|a| a.cert.der() != der);
        self.anchors.len() != before
    }

    /// Whether the certificate `der` is an anchor here.
    pub fn contains(&self, der: &[u8]) -> bool {
        self.anchors.iter().any(|a| a.cert.der() == der)
    }

    /// The anchors, in the order added.
    pub fn anchors(&self) -> &[TrustAnchor<'a>] {
        &self.anchors
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// What the leaf certificate will be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (id-kp-serverAuth).
    ServerAuth,
    /// TLS client authentication (id-kp-clientAuth).
    ClientAuth,
    /// Both: a workload identity, which serves and dials mutual TLS with one certificate.
    ClientAndServer,
    /// No extKeyUsage requirement.
    Any,
}

impl Usage {
    /// The purposes extKeyUsage must list, with the usage to report when one is missing.
    const fn purposes(self) -> [Option<(Purpose<'static>, Self)>; 2] {
        let server = Some((Purpose::ServerAuth, Self::ServerAuth));
        let client = Some((Purpose::ClientAuth, Self::ClientAuth));
        match self {
            Self::ServerAuth => [server, None],
            Self::ClientAuth => [client, None],
            Self::ClientAndServer => [server, client],
            Self::Any => [None, None],
        }
    }
}

impl core::fmt::Display for Usage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::ServerAuth => "serverAuth",
            Self::ClientAuth => "clientAuth",
            Self::ClientAndServer => "serverAuth and clientAuth",
            Self::Any => "any",
        })
    }
}

/// The name the leaf must carry.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum PeerName<'p> {
    /// No name check (only the path).
    Unchecked,
    /// Exactly this SPIFFE ID, as the leaf's single URI SAN.
    SpiffeId(SpiffeId<'p>),
    /// Any SPIFFE ID in this trust domain.
    TrustDomain(TrustDomain<'p>),
    /// Any SPIFFE ID the predicate accepts (e.g. Dapr's `/ns/<ns>/<app>` in any trust domain).
    SpiffeMatching(&'p dyn Fn(&SpiffeId<'_>) -> bool),
    /// A DNS name, matched against dNSName SANs with RFC 6125 wildcard rules.
    Dns(&'p str),
    /// An IP address (4 or 16 bytes), matched against iPAddress SANs.
    Ip(&'p [u8]),
}

impl core::fmt::Debug for PeerName<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unchecked => f.write_str("Unchecked"),
            Self::SpiffeId(id) => write!(f, "SpiffeId({id})"),
            Self::TrustDomain(td) => write!(f, "TrustDomain({})", td.as_str()),
            Self::SpiffeMatching(_) => f.write_str("SpiffeMatching(..)"),
            Self::Dns(n) => write!(f, "Dns({n})"),
            Self::Ip(a) => write!(f, "Ip({a:?})"),
        }
    }
}

/// Limits on the work one [`verify`] call may do (rustls-webpki's numbers by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Signature verifications.
    pub signatures: usize,
    /// Candidate issuers tried.
    pub build_calls: usize,
    /// Name-constraint comparisons.
    pub name_comparisons: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            signatures: 100,
            build_calls: 200_000,
            name_comparisons: 250_000,
        }
    }
}

/// How to validate.
#[derive(Clone, Copy, Debug)]
pub struct Options<'p> {
    /// The time to validate at.
    pub time: UnixTime,
    /// Allowed clock skew: a certificate is valid from notBefore − skew to notAfter + skew.
    pub skew: Duration,
    /// What the leaf is for.
    pub usage: Usage,
    /// The name the leaf must carry.
    pub peer: PeerName<'p>,
    /// Most intermediates in a path that are not self-issued (anchors not counted; the path
    /// never holds more than [`MAX_INTERMEDIATES`] in all).
    pub max_depth: usize,
    /// Work limits.
    pub budget: Budget,
}

impl Options<'_> {
    /// Validation at `time`, no skew, any usage, no name check, default depth and budget.
    pub fn new(time: UnixTime) -> Self {
        Self {
            time,
            skew: Duration::ZERO,
            usage: Usage::Any,
            peer: PeerName::Unchecked,
            max_depth: DEFAULT_MAX_DEPTH,
            budget: Budget::default(),
        }
    }
}

/// Which certificate an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The leaf (end-entity) certificate.
    Leaf,
    /// The untrusted intermediate at this index of the caller's list.
    Intermediate(usize),
    /// The trust anchor at this index of the bundle.
    Anchor(usize),
}

impl Position {
    /// A short fixed name (`leaf`, `intermediate`, `anchor`), for logs without `core::fmt`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Leaf => "leaf",
            Self::Intermediate(_) => "intermediate",
            Self::Anchor(_) => "anchor",
        }
    }
}

impl core::fmt::Display for Position {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Leaf => f.write_str("leaf"),
            Self::Intermediate(i) => write!(f, "intermediate #{i}"),
            Self::Anchor(i) => write!(f, "trust anchor #{i}"),
        }
    }
}

/// Which budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetKind {
    /// Signature verifications.
    Signatures,
    /// Candidate issuers tried.
    BuildCalls,
    /// Name-constraint comparisons.
    NameComparisons,
}

/// Why a peer name did not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameMismatch {
    /// An X.509-SVID carries exactly one URI SAN; this leaf has this many.
    NotSvid {
        /// URI SANs found.
        uris: usize,
    },
    /// The single URI SAN is not a valid SPIFFE ID.
    BadSpiffeId(crate::spiffe::Error),
    /// The SPIFFE ID is not the one expected (or not in the trust domain, or refused by the
    /// predicate).
    SpiffeId,
    /// No dNSName SAN matches the DNS name.
    Dns,
    /// The DNS name asked for is not a valid reference name.
    BadReferenceDns,
    /// No iPAddress SAN matches the address.
    Ip,
}

/// The rule a certificate broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// It did not parse.
    Malformed(cert::Error),
    /// Its signature algorithm, or its issuer's key, is not supported.
    UnsupportedAlgorithm(AlgorithmError),
    /// Its signature does not verify under the issuer's key.
    BadSignature(SignatureError),
    /// It expired: `time` is after notAfter + skew.
    Expired {
        /// The validation time.
        time: UnixTime,
        /// notAfter.
        not_after: UnixTime,
        /// Allowed skew, seconds.
        skew_secs: u64,
    },
    /// It is not valid yet: `time` is before notBefore − skew.
    NotYetValid {
        /// The validation time.
        time: UnixTime,
        /// notBefore.
        not_before: UnixTime,
        /// Allowed skew, seconds.
        skew_secs: u64,
    },
    /// The leaf is a CA certificate (basicConstraints cA true).
    CaUsedAsEndEntity,
    /// An issuer lacks basicConstraints cA.
    NotCa,
    /// An issuer's pathLenConstraint allows fewer intermediates below it than the path has.
    PathLenExceeded {
        /// The constraint.
        path_len: u32,
        /// Intermediates below the issuer.
        below: usize,
    },
    /// An issuer has keyUsage without keyCertSign.
    MissingKeyCertSign,
    /// extKeyUsage is present and lacks the usage asked for.
    RequiredEkuNotFound(Usage),
    /// A name of a certificate below breaks this issuer's nameConstraints.
    NameConstraintViolation,
    /// The leaf does not carry the peer name asked for.
    PeerNameMismatch(NameMismatch),
    /// No anchor or intermediate is the issuer of this certificate.
    UnknownIssuer,
    /// The only candidate issuers (by name) have a subjectKeyIdentifier other than this
    /// certificate's authorityKeyIdentifier: an issuer of that name with another key.
    AuthorityKeyIdMismatch,
    /// The path would need more intermediates (self-issued ones not counted) than allowed.
    MaxDepthExceeded {
        /// The cap.
        max: usize,
    },
    /// More untrusted intermediates were given than [`MAX_INTERMEDIATES`].
    TooManyIntermediates {
        /// The cap.
        max: usize,
    },
    /// A work budget ran out.
    BudgetExceeded(BudgetKind),
}

/// Why validation failed: which certificate, and which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// The certificate concerned.
    pub cert: Position,
    /// The rule it broke.
    pub kind: ErrorKind,
}

impl ErrorKind {
    /// A short fixed name of the rule broken, for logs that cannot afford `core::fmt`
    /// (firmware); the `Display` text says more.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnsupportedAlgorithm(_) => "unsupported-algorithm",
            Self::BadSignature(_) => "bad-signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not-yet-valid",
            Self::CaUsedAsEndEntity => "ca-as-leaf",
            Self::NotCa => "issuer-not-ca",
            Self::PathLenExceeded { .. } => "path-len-exceeded",
            Self::MissingKeyCertSign => "no-key-cert-sign",
            Self::RequiredEkuNotFound(_) => "eku-missing",
            Self::NameConstraintViolation => "name-constraints",
            Self::PeerNameMismatch(_) => "peer-name-mismatch",
            Self::UnknownIssuer => "unknown-issuer",
            Self::AuthorityKeyIdMismatch => "authority-key-id-mismatch",
            Self::MaxDepthExceeded { .. } => "max-depth",
            Self::TooManyIntermediates { .. } => "too-many-intermediates",
            Self::BudgetExceeded(_) => "budget-exceeded",
        }
    }
}

impl Error {
    const fn new(cert: Position, kind: ErrorKind) -> Self {
        Self { cert, kind }
    }

    /// How specific the error is, to choose among the failures of several candidate paths.
    const fn rank(&self) -> u8 {
        match self.kind {
            ErrorKind::UnknownIssuer => 0,
            ErrorKind::MaxDepthExceeded { .. } | ErrorKind::AuthorityKeyIdMismatch => 1,
            ErrorKind::Malformed(_) | ErrorKind::UnsupportedAlgorithm(_) => 2,
            ErrorKind::BadSignature(_) => 4,
            _ => 3,
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: ", self.cert)?;
        match self.kind {
            ErrorKind::Malformed(e) => write!(f, "{e}"),
            ErrorKind::UnsupportedAlgorithm(e) => write!(f, "{e}"),
            ErrorKind::BadSignature(e) => write!(f, "bad signature: {e}"),
            ErrorKind::Expired { time, not_after, skew_secs } => write!(
                f,
                "certificate expired: notAfter {not_after} is before {time} (allowed skew {skew_secs}s)"
            ),
            ErrorKind::NotYetValid { time, not_before, skew_secs } => write!(
                f,
                "certificate not yet valid: notBefore {not_before} is after {time} (allowed skew {skew_secs}s)"
            ),
            ErrorKind::CaUsedAsEndEntity => f.write_str("a CA certificate used as the leaf"),
            ErrorKind::NotCa => f.write_str("issuer is not a CA (basicConstraints cA missing)"),
            ErrorKind::PathLenExceeded { path_len, below } => write!(
                f,
                "pathLenConstraint {path_len} exceeded: {below} intermediate(s) below this CA"
            ),
            ErrorKind::MissingKeyCertSign => f.write_str("issuer keyUsage lacks keyCertSign"),
            ErrorKind::RequiredEkuNotFound(u) => write!(f, "extKeyUsage does not allow {u}"),
            ErrorKind::NameConstraintViolation => {
                f.write_str("a name below violates this CA's nameConstraints")
            }
            ErrorKind::PeerNameMismatch(m) => match m {
                NameMismatch::NotSvid { uris } => {
                    write!(f, "not an X.509-SVID: {uris} URI SANs (exactly one required)")
                }
                NameMismatch::BadSpiffeId(e) => write!(f, "URI SAN is not a SPIFFE ID: {e}"),
                NameMismatch::SpiffeId => f.write_str("SPIFFE ID is not the one expected"),
                NameMismatch::Dns => f.write_str("no DNS SAN matches the expected name"),
                NameMismatch::BadReferenceDns => f.write_str("expected DNS name is not valid"),
                NameMismatch::Ip => f.write_str("no IP SAN matches the expected address"),
            },
            ErrorKind::UnknownIssuer => {
                f.write_str("issuer not found among the intermediates and trust anchors")
            }
            ErrorKind::AuthorityKeyIdMismatch => f.write_str(
                "authorityKeyIdentifier differs from the subjectKeyIdentifier of every issuer of that name",
            ),
            ErrorKind::MaxDepthExceeded { max } => {
                write!(f, "path needs more than {max} intermediates")
            }
            ErrorKind::TooManyIntermediates { max } => {
                write!(f, "more than {max} intermediates supplied")
            }
            ErrorKind::BudgetExceeded(k) => write!(f, "work budget exceeded ({k:?})"),
        }
    }
}

impl core::error::Error for Error {}

/// A validated path: the anchor and the intermediates used, leaf first upwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPath {
    anchor: usize,
    intermediates: heapless::Vec<usize, MAX_INTERMEDIATES>,
}

impl VerifiedPath {
    /// Index of the anchor in the bundle.
    pub const fn anchor(&self) -> usize {
        self.anchor
    }

    /// Indices of the intermediates in the caller's list, from the leaf's issuer upwards.
    pub fn intermediates(&self) -> &[usize] {
        &self.intermediates
    }
}

/// Validates `leaf` against `anchors`, building a path through `intermediates` (in any order,
/// unneeded ones are ignored; ones that do not parse cannot be anyone's issuer).
///
/// Intermediates are parsed when they are candidates, not all up front, so the stack holds one
/// parsed certificate per level of the path rather than one per intermediate given.
///
/// # Errors
///
/// An [`Error`] naming the certificate and the rule; when every candidate path failed, the
/// most specific failure among them.
pub fn verify<const N: usize>(
    leaf: &[u8],
    intermediates: &[&[u8]],
    anchors: &TrustBundle<'_, N>,
    verifier: &impl SignatureVerifier,
    options: &Options<'_>,
) -> Result<VerifiedPath, Error> {
    let at = |kind| Error::new(Position::Leaf, kind);
    let leaf = Certificate::parse(leaf).map_err(|e| at(ErrorKind::Malformed(e)))?;
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(at(ErrorKind::TooManyIntermediates {
            max: MAX_INTERMEDIATES,
        }));
    }
    check_time(&leaf, options).map_err(at)?;
    if leaf.is_ca() {
        return Err(at(ErrorKind::CaUsedAsEndEntity));
    }
    check_eku(&leaf, options.usage).map_err(at)?;
    check_peer_name(&leaf, &options.peer).map_err(|m| at(ErrorKind::PeerNameMismatch(m)))?;
    let mut search = Search {
        leaf: &leaf,
        intermediates,
        anchors: anchors.anchors(),
        verifier,
        options,
        budget: options.budget,
        path: heapless::Vec::new(),
    };
    search.build(&leaf, Position::Leaf)
}

struct Search<'s, 'a, V> {
    leaf: &'s Certificate<'a>,
    intermediates: &'s [&'a [u8]],
    anchors: &'s [TrustAnchor<'a>],
    verifier: &'s V,
    options: &'s Options<'s>,
    budget: Budget,
    /// Intermediates chosen so far, leaf's issuer first.
    path: heapless::Vec<usize, MAX_INTERMEDIATES>,
}

/// A failure that ends the search rather than moving on to the next candidate.
fn is_fatal(e: &Error) -> bool {
    matches!(e.kind, ErrorKind::BudgetExceeded(_))
}

impl<'a, V: SignatureVerifier> Search<'_, 'a, V> {
    /// Finds an issuer for `child` (at `pos`), trying anchors first, then intermediates.
    fn build(&mut self, child: &Certificate<'a>, pos: Position) -> Result<VerifiedPath, Error> {
        self.budget.build_calls = self.budget.build_calls.checked_sub(1).ok_or(Error::new(
            pos,
            ErrorKind::BudgetExceeded(BudgetKind::BuildCalls),
        ))?;
        let mut best = Error::new(pos, ErrorKind::UnknownIssuer);
        let keep = |best: &mut Error, e: Error| {
            if e.rank() >= best.rank() {
                *best = e;
            }
        };
        // A candidate ruled out by key identifiers says less than a path that went further.
        let mismatch = |best: &mut Error, pos| {
            if best.kind == ErrorKind::UnknownIssuer {
                *best = Error::new(pos, ErrorKind::AuthorityKeyIdMismatch);
            }
        };

        for (i, anchor) in self.anchors.iter().enumerate() {
            if anchor.cert.subject() != child.issuer() {
                continue;
            }
            if !child.key_ids_agree(&anchor.cert) {
                mismatch(&mut best, pos);
                continue;
            }
            match self.try_anchor(child, pos, &anchor.cert, i) {
                Ok(()) => {
                    return Ok(VerifiedPath {
                        anchor: i,
                        intermediates: self.path.clone(),
                    });
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => keep(&mut best, e),
            }
        }

        for (j, der) in self.intermediates.iter().enumerate() {
            if self.path.contains(&j) {
                continue;
            }
            let Ok(ca) = Certificate::parse(der) else {
                continue;
            };
            if ca.subject() != child.issuer() {
                continue;
            }
            if !child.key_ids_agree(&ca) {
                mismatch(&mut best, pos);
                continue;
            }
            // Self-issued intermediates do not count toward the cap (RFC 5280 §6.1.4 (l)).
            let depth = self.below_count() + usize::from(!ca.is_self_issued());
            if self.path.len() >= MAX_INTERMEDIATES || depth > self.options.max_depth {
                keep(
                    &mut best,
                    Error::new(
                        pos,
                        ErrorKind::MaxDepthExceeded {
                            max: self.options.max_depth,
                        },
                    ),
                );
                continue;
            }
            let ca_pos = Position::Intermediate(j);
            let attempt = self.check_issuer(child, pos, &ca, ca_pos).and_then(|()| {
                // `path` has room: its length is below MAX_INTERMEDIATES (checked above).
                let _ = self.path.push(j);
                let found = self.build(&ca, ca_pos);
                self.path.pop();
                found
            });
            match attempt {
                Ok(found) => return Ok(found),
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => keep(&mut best, e),
            }
        }
        Err(best)
    }

    fn try_anchor(
        &mut self,
        child: &Certificate<'a>,
        pos: Position,
        anchor: &Certificate<'a>,
        index: usize,
    ) -> Result<(), Error> {
        let anchor_pos = Position::Anchor(index);
        if let Some(path_len) = anchor.basic_constraints().and_then(|b| b.path_len) {
            let below = self.below_count();
            if below > usize::try_from(path_len).unwrap_or(usize::MAX) {
                return Err(Error::new(
                    anchor_pos,
                    ErrorKind::PathLenExceeded { path_len, below },
                ));
            }
        }
        self.check_constraints(anchor, anchor_pos)?;
        self.check_signature(child, pos, anchor, anchor_pos)
    }

    /// The checks on an intermediate `ca` as the issuer of `child`.
    fn check_issuer(
        &mut self,
        child: &Certificate<'a>,
        pos: Position,
        ca: &Certificate<'a>,
        ca_pos: Position,
    ) -> Result<(), Error> {
        let at = |kind| Error::new(ca_pos, kind);
        check_time(ca, self.options).map_err(at)?;
        let Some(bc) = ca.basic_constraints().filter(|b| b.ca) else {
            return Err(at(ErrorKind::NotCa));
        };
        if let Some(path_len) = bc.path_len {
            let below = self.below_count();
            if below > usize::try_from(path_len).unwrap_or(usize::MAX) {
                return Err(at(ErrorKind::PathLenExceeded { path_len, below }));
            }
        }
        if ca
            .key_usage()
            .is_some_and(|ku| !ku.contains(KeyUsage::KEY_CERT_SIGN))
        {
            return Err(at(ErrorKind::MissingKeyCertSign));
        }
        check_eku(ca, self.options.usage).map_err(at)?;
        self.check_constraints(ca, ca_pos)?;
        self.check_signature(child, pos, ca, ca_pos)
    }

    /// The intermediates chosen so far (below the issuer being considered), re-parsed.
    fn below(&self) -> impl Iterator<Item = Certificate<'a>> + '_ {
        self.path
            .iter()
            .filter_map(|&j| self.intermediates.get(j))
            .filter_map(|der| Certificate::parse(der).ok())
    }

    /// Intermediates below the issuer being considered that are not self-issued.
    fn below_count(&self) -> usize {
        self.below().filter(|c| !c.is_self_issued()).count()
    }

    /// Applies `ca`'s nameConstraints to the leaf and the intermediates below it.
    fn check_constraints(&mut self, ca: &Certificate<'a>, ca_pos: Position) -> Result<(), Error> {
        let Some(constraints) = ca.name_constraints() else {
            return Ok(());
        };
        let mut comparisons = self.budget.name_comparisons;
        let leaf = *self.leaf;
        let result = core::iter::once(leaf)
            .chain(self.below().filter(|c| !c.is_self_issued()))
            .try_for_each(|cert| {
                let subject = (!cert.subject_is_empty()).then(|| cert.subject());
                names::check_constraints(
                    &constraints,
                    subject,
                    cert.subject_alt_names(),
                    &mut comparisons,
                )
            });
        self.budget.name_comparisons = comparisons;
        result.map_err(|f| match f {
            ConstraintFailure::Violation => Error::new(ca_pos, ErrorKind::NameConstraintViolation),
            ConstraintFailure::Budget => Error::new(
                ca_pos,
                ErrorKind::BudgetExceeded(BudgetKind::NameComparisons),
            ),
        })
    }

    fn check_signature(
        &mut self,
        child: &Certificate<'a>,
        pos: Position,
        issuer: &Certificate<'a>,
        issuer_pos: Position,
    ) -> Result<(), Error> {
        let scheme = child
            .signature_scheme()
            .map_err(|e| Error::new(pos, ErrorKind::UnsupportedAlgorithm(e)))?;
        let key = issuer
            .public_key()
            .map_err(|e| Error::new(issuer_pos, ErrorKind::UnsupportedAlgorithm(e)))?;
        self.budget.signatures = self.budget.signatures.checked_sub(1).ok_or(Error::new(
            pos,
            ErrorKind::BudgetExceeded(BudgetKind::Signatures),
        ))?;
        self.verifier
            .verify(scheme, key, child.tbs(), child.signature())
            .map_err(|e| Error::new(pos, ErrorKind::BadSignature(e)))
    }
}

fn check_time(cert: &Certificate<'_>, options: &Options<'_>) -> Result<(), ErrorKind> {
    let time = options.time;
    let skew_secs = options.skew.as_secs();
    if time.saturating_add(options.skew) < cert.not_before() {
        return Err(ErrorKind::NotYetValid {
            time,
            not_before: cert.not_before(),
            skew_secs,
        });
    }
    if time.saturating_sub(options.skew) > cert.not_after() {
        return Err(ErrorKind::Expired {
            time,
            not_after: cert.not_after(),
            skew_secs,
        });
    }
    Ok(())
}

/// extKeyUsage, when present, must list the usage (anyExtendedKeyUsage does not count, as in
/// rustls-webpki and openssl).
fn check_eku(cert: &Certificate<'_>, usage: Usage) -> Result<(), ErrorKind> {
    let Some(eku) = cert.ext_key_usage() else {
        return Ok(());
    };
    for (purpose, needed) in usage.purposes().into_iter().flatten() {
        if !eku.contains(purpose) {
            return Err(ErrorKind::RequiredEkuNotFound(needed));
        }
    }
    Ok(())
}

fn check_peer_name(leaf: &Certificate<'_>, peer: &PeerName<'_>) -> Result<(), NameMismatch> {
    let sans = || leaf.subject_alt_names().into_iter().flat_map(|s| s.iter());
    let spiffe = || -> Result<SpiffeId<'_>, NameMismatch> {
        let mut uris = sans().filter_map(|n| match n {
            GeneralName::Uri(u) => Some(u),
            _ => None,
        });
        match (uris.next(), uris.next()) {
            (Some(uri), None) => SpiffeId::parse(uri).map_err(NameMismatch::BadSpiffeId),
            (None, _) => Err(NameMismatch::NotSvid { uris: 0 }),
            (Some(_), Some(_)) => Err(NameMismatch::NotSvid {
                uris: 2 + uris.count(),
            }),
        }
    };
    match *peer {
        PeerName::Unchecked => Ok(()),
        PeerName::SpiffeId(want) => (spiffe()? == want)
            .then_some(())
            .ok_or(NameMismatch::SpiffeId),
        PeerName::TrustDomain(td) => spiffe()?
            .is_member_of(td)
            .then_some(())
            .ok_or(NameMismatch::SpiffeId),
        PeerName::SpiffeMatching(accept) => accept(&spiffe()?)
            .then_some(())
            .ok_or(NameMismatch::SpiffeId),
        PeerName::Dns(reference) => {
            if !names::is_valid_reference_dns(reference.strip_suffix('.').unwrap_or(reference)) {
                return Err(NameMismatch::BadReferenceDns);
            }
            sans()
                .any(|n| matches!(n, GeneralName::Dns(p) if names::dns_matches(p, reference)))
                .then_some(())
                .ok_or(NameMismatch::Dns)
        }
        PeerName::Ip(addr) => sans()
            .any(|n| n == GeneralName::Ip(addr))
            .then_some(())
            .ok_or(NameMismatch::Ip),
    }
}
