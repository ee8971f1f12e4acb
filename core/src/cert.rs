//! Zero-copy, checked parsing of X.509 v3 certificates.
//!
//! [`Certificate::parse`] checks the whole structure once: DER framing, version 3, the
//! signature algorithm fields agreeing, validity times, and every extension Dapr and SPIFFE
//! use (basicConstraints, keyUsage, extKeyUsage, subjectAltName, nameConstraints, authority and
//! subject key identifiers). An unknown extension marked critical, or any extension twice,
//! rejects the certificate. After `parse` succeeds no accessor can fail or panic.
//!
//! Parsing does not judge trust: signatures, validity at a time and the CA rules are the
//! business of [`crate::chain`].

use crate::crypto::{AlgorithmError, PublicKey, Scheme};
use crate::der::{self, oid, tag, DerError, Reader};
use crate::names::{self, GeneralNames, NameConstraints};
use crate::time::UnixTime;

/// Why a certificate did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The DER structure is malformed.
    Der(DerError),
    /// Not an X.509 version 3 certificate.
    UnsupportedVersion,
    /// The serial number is negative, not minimal or longer than 20 octets.
    BadSerial,
    /// The outer `signatureAlgorithm` differs from the `signature` field inside the TBS.
    SignatureAlgorithmMismatch,
    /// notAfter is before notBefore.
    BadValidity,
    /// The same extension appears twice.
    DuplicateExtension(Extension),
    /// An extension Sigil does not know is marked critical (RFC 5280 §4.2).
    UnsupportedCriticalExtension,
    /// A known extension's content is malformed.
    BadExtension(Extension),
}

impl From<DerError> for Error {
    fn from(e: DerError) -> Self {
        Self::Der(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Der(e) => write!(f, "malformed certificate: {e}"),
            Self::UnsupportedVersion => f.write_str("not an X.509 v3 certificate"),
            Self::BadSerial => f.write_str("serial number is negative, non-minimal or too long"),
            Self::SignatureAlgorithmMismatch => {
                f.write_str("signatureAlgorithm differs from the TBS signature field")
            }
            Self::BadValidity => f.write_str("notAfter is before notBefore"),
            Self::DuplicateExtension(e) => write!(f, "extension {e} appears twice"),
            Self::UnsupportedCriticalExtension => f.write_str("unknown critical extension"),
            Self::BadExtension(e) => write!(f, "malformed {e} extension"),
        }
    }
}

impl core::error::Error for Error {}

/// The extensions this parser understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Extension {
    /// basicConstraints (2.5.29.19)
    BasicConstraints,
    /// keyUsage (2.5.29.15)
    KeyUsage,
    /// extKeyUsage (2.5.29.37)
    ExtKeyUsage,
    /// subjectAltName (2.5.29.17)
    SubjectAltName,
    /// nameConstraints (2.5.29.30)
    NameConstraints,
    /// authorityKeyIdentifier (2.5.29.35)
    AuthorityKeyId,
    /// subjectKeyIdentifier (2.5.29.14)
    SubjectKeyId,
}

impl core::fmt::Display for Extension {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BasicConstraints => "basicConstraints",
            Self::KeyUsage => "keyUsage",
            Self::ExtKeyUsage => "extKeyUsage",
            Self::SubjectAltName => "subjectAltName",
            Self::NameConstraints => "nameConstraints",
            Self::AuthorityKeyId => "authorityKeyIdentifier",
            Self::SubjectKeyId => "subjectKeyIdentifier",
        })
    }
}

/// basicConstraints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BasicConstraints {
    /// cA
    pub ca: bool,
    /// pathLenConstraint
    pub path_len: Option<u32>,
}

/// keyUsage bits, numbered as in RFC 5280 (bit 0 = digitalSignature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyUsage(u16);

impl KeyUsage {
    /// digitalSignature
    pub const DIGITAL_SIGNATURE: u16 = 1 << 0;
    /// nonRepudiation / contentCommitment
    pub const CONTENT_COMMITMENT: u16 = 1 << 1;
    /// keyEncipherment
    pub const KEY_ENCIPHERMENT: u16 = 1 << 2;
    /// dataEncipherment
    pub const DATA_ENCIPHERMENT: u16 = 1 << 3;
    /// keyAgreement
    pub const KEY_AGREEMENT: u16 = 1 << 4;
    /// keyCertSign
    pub const KEY_CERT_SIGN: u16 = 1 << 5;
    /// cRLSign
    pub const CRL_SIGN: u16 = 1 << 6;
    /// encipherOnly
    pub const ENCIPHER_ONLY: u16 = 1 << 7;
    /// decipherOnly
    pub const DECIPHER_ONLY: u16 = 1 << 8;
    const NAMES: [&'static str; 9] = [
        "digitalSignature",
        "contentCommitment",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];

    /// Whether every bit of `mask` is set.
    pub const fn contains(self, mask: u16) -> bool {
        self.0 & mask == mask
    }

    /// The raw bit set.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The names of the bits set, in RFC order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| n)
    }
}

/// An extended key usage purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose<'a> {
    /// id-kp-serverAuth
    ServerAuth,
    /// id-kp-clientAuth
    ClientAuth,
    /// anyExtendedKeyUsage
    Any,
    /// Another purpose (the OID's DER value bytes).
    Other(&'a [u8]),
}

/// The purposes of an extKeyUsage extension, checked at parse time.
#[derive(Clone, Copy, Debug)]
pub struct ExtKeyUsage<'a>(&'a [u8]);

impl<'a> ExtKeyUsage<'a> {
    /// The purposes, in order.
    pub fn purposes(&self) -> impl Iterator<Item = Purpose<'a>> {
        let mut r = Reader::new(self.0);
        core::iter::from_fn(move || {
            let id = r.read(tag::OID).ok()?;
            Some(match id {
                oid::KP_SERVER_AUTH => Purpose::ServerAuth,
                oid::KP_CLIENT_AUTH => Purpose::ClientAuth,
                oid::ANY_EXTENDED_KEY_USAGE => Purpose::Any,
                other => Purpose::Other(other),
            })
        })
    }

    /// Whether the purpose is listed.
    pub fn contains(&self, purpose: Purpose<'_>) -> bool {
        self.purposes().any(|p| p == purpose)
    }
}

/// A checked, borrowed X.509 v3 certificate.
#[derive(Clone, Copy, Debug)]
pub struct Certificate<'a> {
    der: &'a [u8],
    tbs: &'a [u8],
    signature_scheme: Result<Scheme, AlgorithmError>,
    signature: &'a [u8],
    serial: &'a [u8],
    issuer: &'a [u8],
    subject: &'a [u8],
    not_before: UnixTime,
    not_after: UnixTime,
    spki: &'a [u8],
    public_key: Result<PublicKey<'a>, AlgorithmError>,
    basic_constraints: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
    ext_key_usage: Option<ExtKeyUsage<'a>>,
    subject_alt_name: Option<GeneralNames<'a>>,
    name_constraints: Option<NameConstraints<'a>>,
    authority_key_id: Option<&'a [u8]>,
    subject_key_id: Option<&'a [u8]>,
}

impl<'a> Certificate<'a> {
    /// Parses and checks one DER certificate; `der` must hold exactly that.
    ///
    /// A signature or public-key algorithm Sigil does not support (RSA, P-384, …) does not fail
    /// the parse, so such certificates can still be inspected; it fails path validation.
    ///
    /// # Errors
    ///
    /// An [`Error`] naming the first rule the input breaks.
    pub fn parse(der: &'a [u8]) -> Result<Self, Error> {
        let cert = der::parse_exact(der, tag::SEQUENCE)?;
        let mut r = Reader::new(cert);
        let (tbs_value, tbs) = r.read_tlv(tag::SEQUENCE)?;
        let outer_alg = r.read(tag::SEQUENCE)?;
        let signature = der::bit_string_octets(r.read(tag::BIT_STRING)?)?;
        r.finish()?;

        let mut t = Reader::new(tbs_value);
        let version = t
            .read(tag::context(0))
            .map_err(|_| Error::UnsupportedVersion)?;
        if der::parse_exact(version, tag::INTEGER)? != [2] {
            return Err(Error::UnsupportedVersion);
        }
        let serial = der::unsigned_integer(t.read(tag::INTEGER)?).map_err(|_| Error::BadSerial)?;
        if serial.len() > 20 {
            return Err(Error::BadSerial);
        }
        let inner_alg = t.read(tag::SEQUENCE)?;
        if inner_alg != outer_alg {
            return Err(Error::SignatureAlgorithmMismatch);
        }
        let (_, issuer) = t.read_tlv(tag::SEQUENCE)?;
        let mut validity = Reader::new(t.read(tag::SEQUENCE)?);
        let (nb_tag, nb, _) = validity.read_any()?;
        let (na_tag, na, _) = validity.read_any()?;
        validity.finish()?;
        let not_before = der::time(nb_tag, nb)?;
        let not_after = der::time(na_tag, na)?;
        if not_after < not_before {
            return Err(Error::BadValidity);
        }
        let (_, subject) = t.read_tlv(tag::SEQUENCE)?;
        let spki = t.read(tag::SEQUENCE)?;
        // issuerUniqueID [1] and subjectUniqueID [2] are allowed and ignored.
        t.read_optional(tag::context_primitive(1))?;
        t.read_optional(tag::context_primitive(2))?;
        let extensions = t.read_optional(tag::context(3))?;
        t.finish()?;

        let mut c = Self {
            der,
            tbs,
            signature_scheme: Scheme::from_algorithm_identifier(outer_alg),
            signature,
            serial,
            issuer,
            subject,
            not_before,
            not_after,
            spki,
            public_key: PublicKey::from_spki(spki),
            basic_constraints: None,
            key_usage: None,
            ext_key_usage: None,
            subject_alt_name: None,
            name_constraints: None,
            authority_key_id: None,
            subject_key_id: None,
        };
        if let Some(exts) = extensions {
            let list = der::parse_exact(exts, tag::SEQUENCE)?;
            c.parse_extensions(list)?;
        }
        Ok(c)
    }

    fn parse_extensions(&mut self, list: &'a [u8]) -> Result<(), Error> {
        let mut r = Reader::new(list);
        let mut seen = 0u8;
        while !r.is_empty() {
            let mut e = Reader::new(r.read(tag::SEQUENCE)?);
            let id = e.read(tag::OID)?;
            let critical = match e.read_optional(tag::BOOLEAN)? {
                Some(b) => der::boolean(b)?,
                None => false,
            };
            let value = e.read(tag::OCTET_STRING)?;
            e.finish()?;
            let kind = match id {
                oid::BASIC_CONSTRAINTS => Extension::BasicConstraints,
                oid::KEY_USAGE => Extension::KeyUsage,
                oid::EXT_KEY_USAGE => Extension::ExtKeyUsage,
                oid::SUBJECT_ALT_NAME => Extension::SubjectAltName,
                oid::NAME_CONSTRAINTS => Extension::NameConstraints,
                oid::AUTHORITY_KEY_ID => Extension::AuthorityKeyId,
                oid::SUBJECT_KEY_ID => Extension::SubjectKeyId,
                _ if critical => return Err(Error::UnsupportedCriticalExtension),
                _ => continue,
            };
            #[allow(clippy::as_conversions)]
            // A fieldless enum's discriminant, < 8.
            let bit = 1u8 << (kind as u8);
            if seen & bit != 0 {
                return Err(Error::DuplicateExtension(kind));
            }
            seen |= bit;
            self.parse_extension(kind, value)
                .map_err(|_| Error::BadExtension(kind))?;
        }
        Ok(())
    }

    fn parse_extension(&mut self, kind: Extension, value: &'a [u8]) -> Result<(), DerError> {
        match kind {
            Extension::BasicConstraints => {
                let mut b = Reader::new(der::parse_exact(value, tag::SEQUENCE)?);
                let ca = match b.read_optional(tag::BOOLEAN)? {
                    Some(v) => der::boolean(v)?,
                    None => false,
                };
                let path_len = b
                    .read_optional(tag::INTEGER)?
                    .map(der::small_unsigned)
                    .transpose()?;
                b.finish()?;
                self.basic_constraints = Some(BasicConstraints { ca, path_len });
            }
            Extension::KeyUsage => {
                let bits = der::named_bits(der::parse_exact(value, tag::BIT_STRING)?)?;
                self.key_usage = Some(KeyUsage(bits));
            }
            Extension::ExtKeyUsage => {
                let list = der::parse_exact(value, tag::SEQUENCE)?;
                let mut p = Reader::new(list);
                if p.is_empty() {
                    return Err(DerError::Truncated);
                }
                while !p.is_empty() {
                    p.read(tag::OID)?;
                }
                self.ext_key_usage = Some(ExtKeyUsage(list));
            }
            Extension::SubjectAltName => {
                let list = der::parse_exact(value, tag::SEQUENCE)?;
                self.subject_alt_name = Some(GeneralNames::parse(list)?);
            }
            Extension::NameConstraints => {
                self.name_constraints = Some(NameConstraints::parse(value)?);
            }
            Extension::AuthorityKeyId => {
                let mut a = Reader::new(der::parse_exact(value, tag::SEQUENCE)?);
                self.authority_key_id = a.read_optional(tag::context_primitive(0))?;
                // authorityCertIssuer [1] and authorityCertSerialNumber [2] are not used.
                a.read_optional(tag::context(1))?;
                a.read_optional(tag::context_primitive(2))?;
                a.finish()?;
            }
            Extension::SubjectKeyId => {
                self.subject_key_id = Some(der::parse_exact(value, tag::OCTET_STRING)?);
            }
        }
        Ok(())
    }

    /// The whole certificate, as given to [`Certificate::parse`].
    pub const fn der(&self) -> &'a [u8] {
        self.der
    }

    /// The signed part (`tbsCertificate`, whole TLV).
    pub const fn tbs(&self) -> &'a [u8] {
        self.tbs
    }

    /// The signature scheme, or why it is not supported.
    pub const fn signature_scheme(&self) -> Result<Scheme, AlgorithmError> {
        self.signature_scheme
    }

    /// The signature bytes (DER `ECDSA-Sig-Value` or Ed25519 signature).
    pub const fn signature(&self) -> &'a [u8] {
        self.signature
    }

    /// The serial number's minimal big-endian bytes.
    pub const fn serial(&self) -> &'a [u8] {
        self.serial
    }

    /// The issuer `Name`, whole DER TLV.
    pub const fn issuer(&self) -> &'a [u8] {
        self.issuer
    }

    /// The subject `Name`, whole DER TLV (`30 00` when empty, as in SPIFFE SVIDs).
    pub const fn subject(&self) -> &'a [u8] {
        self.subject
    }

    /// Whether the subject is the empty sequence.
    pub fn subject_is_empty(&self) -> bool {
        self.subject == [tag::SEQUENCE, 0]
    }

    /// notBefore.
    pub const fn not_before(&self) -> UnixTime {
        self.not_before
    }

    /// notAfter.
    pub const fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// The value of the `subjectPublicKeyInfo` SEQUENCE.
    pub const fn spki(&self) -> &'a [u8] {
        self.spki
    }

    /// The subject public key, or why it is not supported.
    pub const fn public_key(&self) -> Result<PublicKey<'a>, AlgorithmError> {
        self.public_key
    }

    /// basicConstraints, if present.
    pub const fn basic_constraints(&self) -> Option<BasicConstraints> {
        self.basic_constraints
    }

    /// Whether basicConstraints says cA.
    pub fn is_ca(&self) -> bool {
        self.basic_constraints.is_some_and(|b| b.ca)
    }

    /// keyUsage, if present.
    pub const fn key_usage(&self) -> Option<KeyUsage> {
        self.key_usage
    }

    /// extKeyUsage, if present.
    pub const fn ext_key_usage(&self) -> Option<ExtKeyUsage<'a>> {
        self.ext_key_usage
    }

    /// subjectAltName entries, if present.
    pub const fn subject_alt_names(&self) -> Option<GeneralNames<'a>> {
        self.subject_alt_name
    }

    /// nameConstraints, if present.
    pub const fn name_constraints(&self) -> Option<NameConstraints<'a>> {
        self.name_constraints
    }

    /// authorityKeyIdentifier's keyIdentifier, if present.
    pub const fn authority_key_id(&self) -> Option<&'a [u8]> {
        self.authority_key_id
    }

    /// subjectKeyIdentifier, if present.
    pub const fn subject_key_id(&self) -> Option<&'a [u8]> {
        self.subject_key_id
    }

    /// Whether `issuer`'s key identifier allows it to be this certificate's issuer: unless
    /// both the authorityKeyIdentifier here and its subjectKeyIdentifier are present, they say
    /// nothing.
    pub fn key_ids_agree(&self, issuer: &Certificate<'_>) -> bool {
        match (self.authority_key_id, issuer.subject_key_id) {
            (Some(aki), Some(ski)) => aki == ski,
            _ => true,
        }
    }

    /// Whether `issuer` is a candidate issuer of this certificate, as path building picks
    /// them: its subject is this certificate's issuer name and the key identifiers agree.
    /// The signature is not checked.
    pub fn names_as_issuer(&self, issuer: &Certificate<'_>) -> bool {
        self.issuer == issuer.subject && self.key_ids_agree(issuer)
    }

    /// Whether issuer and subject are the same name.
    pub fn is_self_issued(&self) -> bool {
        self.issuer == self.subject
    }

    /// The URI SANs that are SPIFFE IDs, parsed. Malformed `spiffe://` URIs are skipped here;
    /// [`crate::profile`] rejects them.
    pub fn spiffe_ids(&self) -> impl Iterator<Item = crate::spiffe::SpiffeId<'a>> {
        self.subject_alt_name
            .into_iter()
            .flat_map(|names| names.iter())
            .filter_map(|n| match n {
                names::GeneralName::Uri(u) => crate::spiffe::SpiffeId::parse(u).ok(),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            let mut buf = [0x30u8; 64];
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37) ^ 0x30;
            }
            let _ = Certificate::parse(&buf[..len]);
        }
        assert!(matches!(
            Certificate::parse(&[]),
            Err(Error::Der(DerError::Truncated))
        ));
    }
}
