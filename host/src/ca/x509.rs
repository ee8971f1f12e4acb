//! The certificates the CA makes, with Dapr's profiles (see the spec's certificate table): the
//! self-signed root, the issuer (intermediate) it signs, and workload certificates (SVIDs).
//!
//! The to-be-signed structure is built with `x509-cert`'s types and signed with the CA key on
//! `ring`; every certificate gets a random 128-bit serial, a subjectKeyIdentifier (CAs) or
//! authorityKeyIdentifier (all but the root), and UTCTime before 2050 (RFC 5280 §4.1.2.5).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use der::{Any, Decode as _, Encode as _, Tag};
use ring::rand::{SecureRandom as _, SystemRandom};
use sigil_core::crypto::PublicKey;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{TbsCertificate, Version};

use crate::key::CaKey;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_AT_ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const ID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const ID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// A field did not encode (a name or URI that is not IA5, a time out of range).
    #[error("certificate field does not encode: {0}")]
    Encode(#[from] der::Error),
    /// The subject key is of a type the CA does not certify.
    #[error("subject key type not supported")]
    UnsupportedKey,
    /// The validity window is empty or inverted.
    #[error("empty validity window")]
    EmptyValidity,
    /// The signing key failed, or the system RNG did.
    #[error("signing failed")]
    Sign,
}

/// What kind of certificate to make.
#[derive(Clone, Copy, Debug)]
pub enum Profile<'a> {
    /// Self-signed root: subject `O=<trust domain>`, CA, keyCertSign.
    Root {
        /// The trust domain.
        trust_domain: &'a str,
    },
    /// Intermediate: subject `O=<Sentry's SPIFFE ID>`, CA, keyCertSign and cRLSign.
    Issuer {
        /// Sentry's SPIFFE ID.
        sentry_id: &'a str,
    },
    /// Workload SVID: empty subject, one critical URI SAN (plus DNS names, if any), serverAuth
    /// and clientAuth, digitalSignature.
    Workload {
        /// The SPIFFE ID.
        spiffe_id: &'a str,
        /// DNS names (Sentry's own serving certificate only).
        dns: &'a [String],
    },
}

/// The certificate that signs, with its key.
#[derive(Clone, Copy, Debug)]
pub struct Signer<'a> {
    /// The issuing certificate's subject, whole DER (becomes the new certificate's issuer).
    pub subject: &'a [u8],
    /// Its subjectKeyIdentifier, if it has one (becomes the authorityKeyIdentifier).
    pub key_id: Option<&'a [u8]>,
    /// Its key.
    pub key: &'a CaKey,
}

/// Who signs a certificate.
#[derive(Clone, Copy, Debug)]
pub enum SignedBy<'a> {
    /// The certificate's own key (a root): issuer = subject, no authorityKeyIdentifier.
    Itself(&'a CaKey),
    /// An issuing certificate and its key.
    Issuer(Signer<'a>),
}

/// Makes a certificate of `profile` for `subject_key`, valid over `[not_before, not_after]`,
/// signed as `signed_by` says.
///
/// # Errors
///
/// [`X509Error`].
pub fn issue(
    profile: Profile<'_>,
    subject_key: PublicKey<'_>,
    not_before: SystemTime,
    not_after: SystemTime,
    signed_by: SignedBy<'_>,
) -> Result<Vec<u8>, X509Error> {
    if not_after <= not_before {
        return Err(X509Error::EmptyValidity);
    }
    let spki = spki_of(subject_key)?;
    let skid = key_id(&spki.subject_public_key);
    let subject = match profile {
        Profile::Root { trust_domain } => organization(trust_domain)?,
        Profile::Issuer { sentry_id } => organization(sentry_id)?,
        Profile::Workload { .. } => Name::default(),
    };
    let (issuer, signing_key, aki) = match signed_by {
        SignedBy::Issuer(s) => (
            Name::from_der(s.subject)?,
            s.key,
            s.key_id.map(<[u8]>::to_vec),
        ),
        SignedBy::Itself(key) => (subject.clone(), key, None),
    };

    let mut extensions = Vec::new();
    let mut push = |critical: bool, oid: ObjectIdentifier, value: Vec<u8>| -> der::Result<()> {
        extensions.push(Extension {
            extn_id: oid,
            critical,
            extn_value: OctetString::new(value)?,
        });
        Ok(())
    };
    use const_oid::AssociatedOid as _;
    match profile {
        Profile::Root { .. } | Profile::Issuer { .. } => {
            let mut usages = KeyUsages::DigitalSignature | KeyUsages::KeyCertSign;
            if matches!(profile, Profile::Issuer { .. }) {
                usages |= KeyUsages::CRLSign;
            }
            push(true, KeyUsage::OID, KeyUsage(usages).to_der()?)?;
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: None,
            };
            push(true, BasicConstraints::OID, bc.to_der()?)?;
            push(
                false,
                SubjectKeyIdentifier::OID,
                SubjectKeyIdentifier(OctetString::new(skid.clone())?).to_der()?,
            )?;
        }
        Profile::Workload { spiffe_id, dns } => {
            push(
                true,
                KeyUsage::OID,
                KeyUsage(KeyUsages::DigitalSignature.into()).to_der()?,
            )?;
            // CA:false, as the X509-SVID specification (§4.1) wants a leaf to say: Dapr's
            // leaves omit the extension, which spec-strict SPIFFE libraries (the `spiffe`
            // crate) refuse.
            let bc = BasicConstraints {
                ca: false,
                path_len_constraint: None,
            };
            push(true, BasicConstraints::OID, bc.to_der()?)?;
            let eku = ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH, ID_KP_CLIENT_AUTH]);
            push(false, ExtendedKeyUsage::OID, eku.to_der()?)?;
            let mut names = vec![GeneralName::UniformResourceIdentifier(Ia5String::new(
                spiffe_id,
            )?)];
            for d in dns {
                names.push(GeneralName::DnsName(Ia5String::new(d)?));
            }
            // The subject is empty, so the SAN is critical (RFC 5280 §4.2.1.6).
            push(true, SubjectAltName::OID, SubjectAltName(names).to_der()?)?;
        }
    }
    if let Some(aki) = aki {
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(aki)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        push(false, AuthorityKeyIdentifier::OID, aki.to_der()?)?;
    }

    // ecdsa-with-SHA256 or Ed25519, both without parameters (RFC 5758 §3.2, RFC 8410 §3).
    let signature_algorithm = AlgorithmIdentifierOwned {
        oid: match signing_key {
            CaKey::P256(_) => ECDSA_WITH_SHA256,
            CaKey::Ed25519(_) => ID_ED25519,
        },
        parameters: None,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: signature_algorithm.clone(),
        issuer,
        validity: Validity {
            not_before: time(not_before)?,
            not_after: time(not_after)?,
        },
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der()?;
    let signature = signing_key.sign(&tbs_der).map_err(|_| X509Error::Sign)?;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }, from
    // the bytes just signed (encoding the TBS once).
    let algorithm = signature_algorithm.to_der()?;
    let bits = BitString::from_bytes(&signature)?.to_der()?;
    let body_len = tbs_der.len() + algorithm.len() + bits.len();
    let header = der::Header::new(Tag::Sequence, der::Length::try_from(body_len)?)?.to_der()?;
    let mut out = Vec::with_capacity(header.len() + body_len);
    for part in [&header, &tbs_der, &algorithm, &bits] {
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// `O=<value>` as a one-attribute name (UTF8String).
fn organization(value: &str) -> Result<Name, X509Error> {
    let atv = AttributeTypeAndValue {
        oid: ID_AT_ORGANIZATION,
        value: Any::new(Tag::Utf8String, value.as_bytes())?,
    };
    let rdn = RelativeDistinguishedName::try_from(vec![atv])?;
    Ok(RdnSequence(vec![rdn]))
}

fn spki_of(key: PublicKey<'_>) -> Result<SubjectPublicKeyInfoOwned, X509Error> {
    let (algorithm, bits) = match key {
        PublicKey::EcP256(point) => (
            AlgorithmIdentifierOwned {
                oid: ID_EC_PUBLIC_KEY,
                parameters: Some(Any::from(&SECP256R1)),
            },
            point,
        ),
        PublicKey::Ed25519(k) => (
            AlgorithmIdentifierOwned {
                oid: ID_ED25519,
                parameters: None,
            },
            &k[..],
        ),
        _ => return Err(X509Error::UnsupportedKey),
    };
    Ok(SubjectPublicKeyInfoOwned {
        algorithm,
        subject_public_key: BitString::from_bytes(bits)?,
    })
}

/// RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the key's bits.
fn key_id(bits: &BitString) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, bits.raw_bytes());
    digest.as_ref().iter().take(20).copied().collect()
}

/// A random positive serial below 2^128.
fn random_serial() -> Result<SerialNumber, X509Error> {
    let mut bytes = [0u8; 16];
    loop {
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| X509Error::Sign)?;
        if bytes.iter().any(|b| *b != 0) {
            return Ok(SerialNumber::new(&bytes)?);
        }
    }
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5), whole seconds.
fn time(t: SystemTime) -> Result<Time, X509Error> {
    const Y2050: u64 = 2_524_608_000;
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| X509Error::EmptyValidity)?
        .as_secs();
    let d = Duration::from_secs(secs);
    Ok(if secs < Y2050 {
        Time::UtcTime(UtcTime::from_unix_duration(d)?)
    } else {
        Time::GeneralTime(GeneralizedTime::from_unix_duration(d)?)
    })
}
