//! The certificate authority behind Sentry: a validated credential set (trust anchors, the
//! issuer chain and its key), workload issuance with Dapr's profile, and the on-disk store.
//!
//! A [`Credentials`] value exists only after every check passed: each anchor is a self-signed
//! CA, the key matches the issuer, and a probe certificate issued with that key validates
//! through the issuer chain to the anchors *now* (core path validation: signatures, CA flags,
//! keyCertSign, path length, name constraints, validity). So an expired issuer, a foreign
//! chain or a wrong key can never be loaded, at start or at a reload.

pub mod journal;
pub mod jwt;
pub mod rotation;
pub mod schedule;
pub mod secret_store;
pub mod store;
pub mod x509;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sigil_core::cert::Certificate;
use sigil_core::chain::Usage;
use sigil_core::crypto::{PublicKey, SignatureVerifier as _};
use sigil_core::pem;
use sigil_core::UnixTime;

use crate::key::{CaKey, KeyAlgorithm, KeyError};
use crate::signature::RingSignatureVerifier;
use crate::trust::{Anchors, Policy};
use x509::{Profile, X509Error};

/// Lifetime of a generated root and issuer (Dapr's `defaultCATTL`).
pub const CA_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// What Sentry (or `sigil ca init`) generates: how long the root and the issuer live
/// (`--root-ttl`, `--issuer-ttl`; [`CA_TTL`] each by default, as Dapr; the issuer's notAfter is
/// clamped to the root's) and their key type (P-256 by default; Ed25519 as Dapr 1.18 makes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    /// The root's lifetime.
    pub root: Duration,
    /// The issuer's lifetime.
    pub issuer: Duration,
    /// The keys' type.
    pub algorithm: KeyAlgorithm,
}

impl Default for Generation {
    fn default() -> Self {
        Self {
            root: CA_TTL,
            issuer: CA_TTL,
            algorithm: KeyAlgorithm::P256,
        }
    }
}

/// Why a credential set is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A file holds no certificate.
    #[error("{file} holds no PEM certificate")]
    NoCertificate {
        /// Which file (ca.crt or issuer.crt).
        file: &'static str,
    },
    /// A certificate does not parse.
    #[error("{file}: certificate #{index} is malformed: {reason}")]
    Malformed {
        /// Which file.
        file: &'static str,
        /// Position in the file, from 1.
        index: usize,
        /// The parser's reason.
        reason: String,
    },
    /// A trust anchor is not a self-signed CA certificate.
    #[error("ca.crt: certificate #{index} is not a self-signed CA certificate ({reason})")]
    BadAnchor {
        /// Position in ca.crt, from 1.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A trust anchor's key or signature algorithm is not one Sigil can verify with.
    #[error(
        "ca.crt: certificate #{index} has an unsupported {what}: {algorithm} \
         (supported: ECDSA P-256 with SHA-256, Ed25519)"
    )]
    UnsupportedAnchor {
        /// Position in ca.crt, from 1.
        index: usize,
        /// `key` or `signature algorithm`.
        what: &'static str,
        /// The algorithm found, e.g. `RSA 1024-bit`, `ECDSA P-192`.
        algorithm: String,
    },
    /// A trust anchor the path validation cannot use (an unknown critical extension, say).
    #[error("ca.crt: certificate #{index} cannot be a trust anchor: {reason}")]
    UnusableAnchor {
        /// Position in ca.crt, from 1.
        index: usize,
        /// Why.
        reason: String,
    },
    /// More anchors than fit.
    #[error(
        "ca.crt holds {count} certificates; at most {} are supported",
        crate::trust::CAPACITY
    )]
    TooManyAnchors {
        /// How many.
        count: usize,
    },
    /// The issuer key does not load.
    #[error("issuer.key: {0}")]
    Key(#[from] KeyError),
    /// The issuer key is not the key of the issuer certificate.
    #[error("issuer.key does not match the public key of issuer.crt")]
    KeyMismatch,
    /// The issuer certificate is not a CA allowed to sign certificates.
    #[error("issuer.crt is not a CA certificate allowed to sign certificates ({reason})")]
    IssuerNotCa {
        /// What is missing.
        reason: &'static str,
    },
    /// The issuer certificate has expired.
    #[error("issuer.crt expired at {not_after} (now {now}); refusing to issue with it")]
    IssuerExpired {
        /// Its notAfter (RFC 3339).
        not_after: String,
        /// The time of the check.
        now: String,
    },
    /// The issuer certificate is not valid yet.
    #[error("issuer.crt is not valid before {not_before} (now {now})")]
    IssuerNotYetValid {
        /// Its notBefore (RFC 3339).
        not_before: String,
        /// The time of the check.
        now: String,
    },
    /// The issuer chain does not validate to any anchor in ca.crt.
    #[error("issuer.crt does not chain to a root in ca.crt: {0}")]
    Chain(String),
    /// Making a certificate failed.
    #[error("making a certificate: {0}")]
    X509(#[from] X509Error),
}

/// Why a workload certificate was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The issuer has expired: nothing is issued with it.
    #[error("issuer certificate expired at {not_after}; refusing to issue")]
    IssuerExpired {
        /// Its notAfter (RFC 3339).
        not_after: String,
    },
    /// The certificate could not be made.
    #[error("{0}")]
    X509(#[from] X509Error),
}

/// A workload certificate just issued.
#[derive(Debug)]
pub struct Issued {
    /// Its DER.
    pub der: Vec<u8>,
    /// Its notAfter.
    pub not_after: SystemTime,
}

/// A validated credential set (see the module doc).
#[derive(Debug)]
pub struct Credentials {
    /// Every certificate of ca.crt, each checked above to be a usable root: the same
    /// [`Anchors`] type every other host check goes through.
    anchors: Arc<Anchors>,
    issuer_chain: Vec<Vec<u8>>,
    key: CaKey,
    issuer_subject: Vec<u8>,
    issuer_key_id: Option<Vec<u8>>,
    issuer_not_before: SystemTime,
    issuer_not_after: SystemTime,
    anchors_pem: String,
    issuer_chain_pem: String,
}

/// `t` as RFC 3339, to the second.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A certificate time as a `SystemTime`.
pub(crate) fn system_time(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// Reads every CERTIFICATE block of `text` into DER, each checked to parse.
fn certificates(text: &str, file: &'static str) -> Result<Vec<Vec<u8>>, CredentialsError> {
    let out = crate::pki::decode_pem(text, pem::Label::Certificate).map_err(|e| {
        CredentialsError::Malformed {
            file,
            index: e.index,
            reason: e.source.to_string(),
        }
    })?;
    for (i, der) in out.iter().enumerate() {
        Certificate::parse(der).map_err(|e| CredentialsError::Malformed {
            file,
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    if out.is_empty() {
        return Err(CredentialsError::NoCertificate { file });
    }
    Ok(out)
}

fn is_self_signed(c: &Certificate<'_>) -> bool {
    let (Ok(scheme), Ok(key)) = (c.signature_scheme(), c.public_key()) else {
        return false;
    };
    c.is_self_issued()
        && RingSignatureVerifier
            .verify(scheme, key, c.tbs(), c.signature())
            .is_ok()
}

/// A certificate's public-key algorithm for a message (`RSA 1024-bit`, `ECDSA P-192`, `Ed448`,
/// or the OID).
fn key_algorithm(der: &[u8]) -> String {
    use x509_cert::der::asn1::{ObjectIdentifier, UintRef};
    use x509_cert::der::{Decode as _, Reader as _, SliceReader};
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return "an unreadable key".to_owned();
    };
    let info = &cert.tbs_certificate.subject_public_key_info;
    match info.algorithm.oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => {
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let modulus =
                SliceReader::new(info.subject_public_key.raw_bytes()).and_then(|mut r| {
                    r.sequence(|r| {
                        let n = UintRef::decode(r)?;
                        UintRef::decode(r)?;
                        Ok(n.as_bytes().to_vec())
                    })
                });
            match modulus.ok().as_deref() {
                Some([first, rest @ ..]) => format!(
                    "RSA {}-bit",
                    rest.len() * 8 + 8 - usize::try_from(first.leading_zeros()).unwrap_or(0)
                ),
                _ => "RSA".to_owned(),
            }
        }
        "1.2.840.10045.2.1" => {
            let curve = info
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .map(|oid| oid.to_string());
            let name = match curve.as_deref() {
                Some("1.2.840.10045.3.1.1") => "P-192",
                Some("1.3.132.0.33") => "P-224",
                Some("1.2.840.10045.3.1.7") => "P-256",
                Some("1.3.132.0.34") => "P-384",
                Some("1.3.132.0.35") => "P-521",
                Some("1.3.132.0.10") => "secp256k1",
                Some(other) => return format!("ECDSA on curve {other}"),
                None => return "ECDSA with explicit curve parameters".to_owned(),
            };
            format!("ECDSA {name}")
        }
        "1.3.101.112" => "Ed25519".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        "1.2.840.10040.4.1" => "DSA".to_owned(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS".to_owned(),
        other => format!("key algorithm {other}"),
    }
}

/// A certificate's signature algorithm for a message.
fn signature_algorithm(der: &[u8]) -> String {
    use x509_cert::der::Decode as _;
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return "an unreadable algorithm".to_owned();
    };
    let oid = cert.signature_algorithm.oid.to_string();
    let name = match oid.as_str() {
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        _ => return oid,
    };
    name.to_owned()
}

/// Certificates (DER) as concatenated PEM.
pub(crate) fn pem_of(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| crate::pki::to_pem(pem::Label::Certificate, d))
        .collect()
}

impl Credentials {
    /// Validates a credential set given as the contents of `ca.crt`, `issuer.crt` and
    /// `issuer.key`, at `now`. `probe_id` is the SPIFFE ID of the probe certificate (Sentry's
    /// own), so the issuer's name constraints are honoured.
    ///
    /// # Errors
    ///
    /// The first [`CredentialsError`] found, naming the file and the rule.
    pub fn from_pem(
        ca: &str,
        issuer: &str,
        key: &str,
        now: SystemTime,
        probe_id: &str,
    ) -> Result<Self, CredentialsError> {
        let anchors = certificates(ca, "ca.crt")?;
        // The host's one capacity ([`crate::trust::CAPACITY`]), as every holder of ca.crt.
        if anchors.len() > crate::trust::CAPACITY {
            return Err(CredentialsError::TooManyAnchors {
                count: anchors.len(),
            });
        }
        for (i, der) in anchors.iter().enumerate() {
            let c = Certificate::parse(der).map_err(|e| CredentialsError::Malformed {
                file: "ca.crt",
                index: i + 1,
                reason: e.to_string(),
            })?;
            if !c.is_ca() {
                return Err(CredentialsError::BadAnchor {
                    index: i + 1,
                    reason: "not a CA",
                });
            }
            // An algorithm the verifier lacks would fail the self-signature check below: say
            // which algorithm it is instead.
            if c.public_key().is_err() {
                return Err(CredentialsError::UnsupportedAnchor {
                    index: i + 1,
                    what: "key",
                    algorithm: key_algorithm(der),
                });
            }
            if c.signature_scheme().is_err() {
                return Err(CredentialsError::UnsupportedAnchor {
                    index: i + 1,
                    what: "signature algorithm",
                    algorithm: signature_algorithm(der),
                });
            }
            if !is_self_signed(&c) {
                return Err(CredentialsError::BadAnchor {
                    index: i + 1,
                    reason: "not self-signed",
                });
            }
        }
        let mut chain = certificates(issuer, "issuer.crt")?;
        // A trailing self-signed root in issuer.crt is dropped, as Dapr does.
        while chain.len() > 1
            && chain
                .last()
                .and_then(|d| Certificate::parse(d).ok())
                .is_some_and(|c| is_self_signed(&c))
        {
            chain.pop();
        }
        let key = CaKey::from_pem(key)?;
        let (subject, key_id, not_before, not_after) = {
            let first = chain
                .first()
                .ok_or(CredentialsError::NoCertificate { file: "issuer.crt" })?;
            let c = Certificate::parse(first).map_err(|e| CredentialsError::Malformed {
                file: "issuer.crt",
                index: 1,
                reason: e.to_string(),
            })?;
            let matches = c.public_key().is_ok_and(|k| k.same_key(&key.public_key()));
            if !matches {
                return Err(CredentialsError::KeyMismatch);
            }
            if !c.is_ca() {
                return Err(CredentialsError::IssuerNotCa {
                    reason: "basicConstraints cA is not set",
                });
            }
            if c.key_usage()
                .is_some_and(|ku| !ku.contains(sigil_core::cert::KeyUsage::KEY_CERT_SIGN))
            {
                return Err(CredentialsError::IssuerNotCa {
                    reason: "keyUsage lacks keyCertSign",
                });
            }
            let nb = system_time(c.not_before());
            let na = system_time(c.not_after());
            if now >= na {
                return Err(CredentialsError::IssuerExpired {
                    not_after: rfc3339(na),
                    now: rfc3339(now),
                });
            }
            if now < nb {
                return Err(CredentialsError::IssuerNotYetValid {
                    not_before: rfc3339(nb),
                    now: rfc3339(now),
                });
            }
            (
                c.subject().to_vec(),
                c.subject_key_id().map(<[u8]>::to_vec),
                nb,
                na,
            )
        };
        let anchors_pem = pem_of(&anchors);
        let anchors = Anchors::from_ders("ca.crt", anchors).map_err(|e| {
            CredentialsError::UnusableAnchor {
                index: 1,
                reason: e.to_string(),
            }
        })?;
        // Sentry is strict about its own roots: one the others would skip is refused here.
        if let Some(skipped) = anchors.skipped().first() {
            return Err(CredentialsError::UnusableAnchor {
                index: skipped.index + 1,
                reason: skipped.reason.to_string(),
            });
        }
        let creds = Self {
            anchors_pem,
            issuer_chain_pem: pem_of(&chain),
            anchors: Arc::new(anchors),
            issuer_chain: chain,
            key,
            issuer_subject: subject,
            issuer_key_id: key_id,
            issuer_not_before: not_before,
            issuer_not_after: not_after,
        };
        creds.probe(now, probe_id)?;
        Ok(creds)
    }

    /// Issues a short probe certificate and validates it through the chain to the anchors: the
    /// one check that covers signatures, CA constraints and validity of the whole chain.
    fn probe(&self, now: SystemTime, probe_id: &str) -> Result<(), CredentialsError> {
        let probe_key = crate::key::P256Key::generate()?;
        let nb = (now - Duration::from_secs(60)).max(self.issuer_not_before);
        let na = (now + Duration::from_secs(60)).min(self.issuer_not_after);
        let leaf = x509::issue(
            Profile::Workload {
                spiffe_id: probe_id,
                dns: &[],
            },
            PublicKey::EcP256(probe_key.public_point()),
            nb,
            na,
            x509::SignedBy::Issuer(self.signer()),
        )?;
        let intermediates: Vec<&[u8]> = self.issuer_chain.iter().map(Vec::as_slice).collect();
        // Client and server use, as workloads will use what this issuer signs: an issuer whose
        // extKeyUsage forbids either is refused now, not discovered by every peer later.
        let policy = Policy::new(Usage::ClientAndServer, now);
        self.anchors
            .verify(&leaf, &intermediates, &policy, &RingSignatureVerifier)
            .map(|_| ())
            .map_err(|e| CredentialsError::Chain(e.to_string()))
    }

    /// Generates a new root (self-signed, `O=<trust_domain>`) and an issuer signed by it
    /// (`O=<sentry_id>`), both valid from `now - skew` for [`CA_TTL`]. The root's key is
    /// discarded, as Dapr does.
    ///
    /// # Errors
    ///
    /// [`CredentialsError`] if making or (re)validating them fails.
    pub fn generate(
        trust_domain: &str,
        sentry_id: &str,
        now: SystemTime,
        skew: Duration,
    ) -> Result<(Self, GeneratedPem), CredentialsError> {
        Self::generate_with(trust_domain, sentry_id, now, skew, Generation::default())
    }

    /// [`Credentials::generate`] with the root and issuer living as `generation` says (from `now`;
    /// the issuer clamped to the root), with keys of its algorithm.
    ///
    /// # Errors
    ///
    /// [`CredentialsError`] if making or (re)validating them fails.
    pub fn generate_with(
        trust_domain: &str,
        sentry_id: &str,
        now: SystemTime,
        skew: Duration,
        generation: Generation,
    ) -> Result<(Self, GeneratedPem), CredentialsError> {
        let root_key = CaKey::generate(generation.algorithm)?;
        let issuer_key = CaKey::generate(generation.algorithm)?;
        let nb = now - skew;
        let root_na = now + generation.root;
        let issuer_na = (now + generation.issuer).min(root_na);
        let root = x509::issue(
            Profile::Root { trust_domain },
            root_key.public_key(),
            nb,
            root_na,
            x509::SignedBy::Itself(&root_key),
        )?;
        let root_cert = Certificate::parse(&root)
            .map_err(|e| CredentialsError::Chain(format!("generated root: {e}")))?;
        let issuer = x509::issue(
            Profile::Issuer { sentry_id },
            issuer_key.public_key(),
            nb,
            issuer_na,
            x509::SignedBy::Issuer(x509::Signer {
                subject: root_cert.subject(),
                key_id: root_cert.subject_key_id(),
                key: &root_key,
            }),
        )?;
        let files = GeneratedPem {
            ca: pem_of(std::slice::from_ref(&root)),
            issuer: pem_of(std::slice::from_ref(&issuer)),
            key: issuer_key.to_pem(),
        };
        let creds = Self::from_pem(&files.ca, &files.issuer, &files.key, now, sentry_id)?;
        Ok((creds, files))
    }

    /// The issuer's signing identity, for [`x509::issue`].
    pub fn signer(&self) -> x509::Signer<'_> {
        x509::Signer {
            subject: &self.issuer_subject,
            key_id: self.issuer_key_id.as_deref(),
            key: &self.key,
        }
    }

    /// Issues a workload certificate for `subject_key` with `spiffe_id` (and DNS names), valid
    /// from `now - skew` to `now + ttl`, clamped to the issuer's notAfter.
    ///
    /// # Errors
    ///
    /// [`IssueError::IssuerExpired`] once the issuer has expired; [`IssueError::X509`].
    pub fn issue_workload(
        &self,
        subject_key: PublicKey<'_>,
        spiffe_id: &str,
        dns: &[String],
        now: SystemTime,
        ttl: Duration,
        skew: Duration,
    ) -> Result<Issued, IssueError> {
        if now >= self.issuer_not_after {
            return Err(IssueError::IssuerExpired {
                not_after: rfc3339(self.issuer_not_after),
            });
        }
        let not_before = now
            .checked_sub(skew)
            .unwrap_or(UNIX_EPOCH)
            .max(self.issuer_not_before);
        let not_after = now
            .checked_add(ttl)
            .unwrap_or(self.issuer_not_after)
            .min(self.issuer_not_after);
        let der = x509::issue(
            Profile::Workload { spiffe_id, dns },
            subject_key,
            not_before,
            not_after,
            x509::SignedBy::Issuer(self.signer()),
        )?;
        Ok(Issued { der, not_after })
    }

    /// The trust anchors, DER.
    pub fn anchors(&self) -> &[Vec<u8>] {
        self.anchors.ders()
    }

    /// The trust anchors as concatenated PEM (what `trust_chain_certificates` carries).
    pub fn anchors_pem(&self) -> &str {
        &self.anchors_pem
    }

    /// The issuer chain (issuer first, no root), DER.
    pub fn issuer_chain(&self) -> &[Vec<u8>] {
        &self.issuer_chain
    }

    /// The issuer chain as concatenated PEM (appended to each workload certificate).
    pub fn issuer_chain_pem(&self) -> &str {
        &self.issuer_chain_pem
    }

    /// The issuer's notAfter.
    pub const fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after
    }
}

/// The PEM files of a freshly generated set.
#[derive(Debug)]
pub struct GeneratedPem {
    /// `ca.crt`.
    pub ca: String,
    /// `issuer.crt`.
    pub issuer: String,
    /// `issuer.key` (PKCS#8).
    pub key: zeroize::Zeroizing<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ca_crt_holds_up_to_the_hosts_one_capacity_and_more_is_refused_with_the_count() {
        let now = SystemTime::now();
        let id = crate::dapr::sentry_id("localhost", "default");
        let (_, set) = Credentials::generate("localhost", &id, now, Duration::ZERO).unwrap();
        let (_, other) = Credentials::generate("other", &id, now, Duration::ZERO).unwrap();
        // 40 roots, the right one last (the old limit was 16).
        let forty = other.ca.repeat(39) + &set.ca;
        let creds = Credentials::from_pem(&forty, &set.issuer, &set.key, now, &id).unwrap();
        assert_eq!(creds.anchors().len(), 40);
        let too_many = other.ca.repeat(crate::trust::CAPACITY) + &set.ca;
        let e = Credentials::from_pem(&too_many, &set.issuer, &set.key, now, &id).unwrap_err();
        assert!(
            matches!(e, CredentialsError::TooManyAnchors { count } if count == crate::trust::CAPACITY + 1),
            "{e}"
        );
    }

    #[test]
    fn ed25519_credentials_load_sign_and_their_chains_validate() {
        let now = SystemTime::now();
        let id = crate::dapr::sentry_id("cluster.local", "dapr-system");
        let (_, pem) = Credentials::generate_with(
            "cluster.local",
            &id,
            now,
            Duration::ZERO,
            Generation {
                algorithm: KeyAlgorithm::Ed25519,
                ..Generation::default()
            },
        )
        .unwrap();
        // As they would be read back from files (or made by Dapr 1.18).
        let creds = Credentials::from_pem(&pem.ca, &pem.issuer, &pem.key, now, &id).unwrap();
        let leaf_key = crate::key::P256Key::generate().unwrap();
        let issued = creds
            .issue_workload(
                PublicKey::EcP256(leaf_key.public_point()),
                "spiffe://public/ns/shop/cart",
                &[],
                now,
                Duration::from_secs(3600),
                Duration::ZERO,
            )
            .unwrap();
        let leaf = Certificate::parse(&issued.der).unwrap();
        assert_eq!(
            leaf.signature_scheme().unwrap(),
            sigil_core::crypto::Scheme::Ed25519
        );
        let anchors = Anchors::from_ders("ca.crt", creds.anchors().to_vec()).unwrap();
        let ints: Vec<&[u8]> = creds.issuer_chain().iter().map(Vec::as_slice).collect();
        anchors
            .verify(
                &issued.der,
                &ints,
                &Policy::new(Usage::ClientAndServer, now),
                &RingSignatureVerifier,
            )
            .unwrap();
        // A P-256 issuer certificate with an Ed25519 key file: the mismatch is named.
        let (_, p256) = Credentials::generate("cluster.local", &id, now, Duration::ZERO).unwrap();
        assert!(matches!(
            Credentials::from_pem(&p256.ca, &p256.issuer, &pem.key, now, &id),
            Err(CredentialsError::KeyMismatch)
        ));
    }
}
