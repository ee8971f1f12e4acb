//! The crypto trait boundary: signature verification and signing.
//!
//! Certificates, CSRs and (later) tokens are checked through [`SignatureVerifier`]; requests
//! and certificates are signed through [`Signer`]. [`RustCryptoSignatureVerifier`] is the pure-Rust
//! default here (RustCrypto `p256`, plus `ed25519-dalek` behind the `ed25519` feature); the host
//! plugs in a `ring` implementation behind the same trait.

use crate::der::{self, oid, tag, DerError};

/// A signature scheme: algorithm, hash and signature encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// ECDSA over P-256 with SHA-256, signature as a DER `ECDSA-Sig-Value` (X.509, CSRs, TLS).
    EcdsaP256Sha256,
    /// ECDSA over P-256 with SHA-256, signature as fixed-size `r || s` (IEEE P1363; JWS ES256).
    EcdsaP256Sha256Fixed,
    /// Pure Ed25519 (RFC 8032), as Dapr >= 1.18 issues it.
    Ed25519,
}

impl Scheme {
    /// The X.509 `AlgorithmIdentifier` of a scheme used in certificates, as DER.
    pub const fn algorithm_identifier(self) -> &'static [u8] {
        match self {
            Self::EcdsaP256Sha256 | Self::EcdsaP256Sha256Fixed => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            Self::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
        }
    }

    /// The scheme named by an X.509 signature `AlgorithmIdentifier` (the value of the SEQUENCE).
    ///
    /// # Errors
    ///
    /// [`AlgorithmError::Malformed`] for bad DER, [`AlgorithmError::Unsupported`] for any
    /// algorithm other than ecdsa-with-SHA256 and Ed25519, or parameters where RFC 5758 and
    /// RFC 8410 say there are none.
    pub fn from_algorithm_identifier(value: &[u8]) -> Result<Self, AlgorithmError> {
        let mut r = der::Reader::new(value);
        let id = r.read(tag::OID)?;
        r.finish().map_err(|_| AlgorithmError::Unsupported)?;
        match id {
            oid::ECDSA_WITH_SHA256 => Ok(Self::EcdsaP256Sha256),
            oid::ED25519 => Ok(Self::Ed25519),
            _ => Err(AlgorithmError::Unsupported),
        }
    }

    /// Whether `key` is of the kind this scheme verifies with.
    pub fn fits(self, key: PublicKey<'_>) -> bool {
        matches!(
            (self, key),
            (
                Self::EcdsaP256Sha256 | Self::EcdsaP256Sha256Fixed,
                PublicKey::EcP256(_)
            ) | (Self::Ed25519, PublicKey::Ed25519(_))
        )
    }
}

impl core::fmt::Display for Scheme {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256Sha256 => "ecdsa-with-SHA256 (P-256)",
            Self::EcdsaP256Sha256Fixed => "ES256 (P-256, r||s)",
            Self::Ed25519 => "Ed25519",
        })
    }
}

/// Why an algorithm identifier or a public key was not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlgorithmError {
    /// The structure was not valid DER.
    Malformed(DerError),
    /// A well-formed algorithm or curve that Sigil does not accept (only ECDSA P-256/SHA-256
    /// and Ed25519 are).
    Unsupported,
    /// The key bytes are not a valid key of their type (e.g. not a point on P-256).
    BadKey,
}

impl From<DerError> for AlgorithmError {
    fn from(e: DerError) -> Self {
        Self::Malformed(e)
    }
}

impl core::fmt::Display for AlgorithmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed algorithm or key: {e}"),
            Self::Unsupported => {
                f.write_str("unsupported algorithm or curve (only ECDSA P-256/SHA-256 and Ed25519)")
            }
            Self::BadKey => f.write_str("public key is not a valid point or key of its type"),
        }
    }
}

impl core::error::Error for AlgorithmError {}

/// A public key, borrowed from a certificate, CSR or key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PublicKey<'a> {
    /// A P-256 point in SEC1 form (uncompressed `04 || x || y`, or compressed).
    EcP256(&'a [u8]),
    /// An Ed25519 public key.
    Ed25519(&'a [u8; 32]),
}

impl<'a> PublicKey<'a> {
    /// Parses the value of a `SubjectPublicKeyInfo` SEQUENCE.
    ///
    /// # Errors
    ///
    /// [`AlgorithmError::Malformed`] for bad DER; [`AlgorithmError::Unsupported`] for keys other
    /// than id-ecPublicKey on prime256v1 and Ed25519; [`AlgorithmError::BadKey`] for a key of
    /// the wrong size or form.
    pub fn from_spki(value: &'a [u8]) -> Result<Self, AlgorithmError> {
        let mut r = der::Reader::new(value);
        let alg = r.read(tag::SEQUENCE)?;
        let bits = der::bit_string_octets(r.read(tag::BIT_STRING)?)?;
        r.finish()?;
        let mut a = der::Reader::new(alg);
        match a.read(tag::OID)? {
            oid::EC_PUBLIC_KEY => {
                // namedCurve only; explicit curve parameters are not accepted (RFC 5480).
                let curve = a.read(tag::OID).map_err(|_| AlgorithmError::Unsupported)?;
                a.finish()?;
                if curve != oid::PRIME256V1 {
                    return Err(AlgorithmError::Unsupported);
                }
                match bits {
                    [0x04, rest @ ..] if rest.len() == 64 => Ok(Self::EcP256(bits)),
                    [0x02 | 0x03, rest @ ..] if rest.len() == 32 => Ok(Self::EcP256(bits)),
                    _ => Err(AlgorithmError::BadKey),
                }
            }
            oid::ED25519 => {
                a.finish().map_err(|_| AlgorithmError::Unsupported)?;
                bits.try_into()
                    .map(Self::Ed25519)
                    .map_err(|_| AlgorithmError::BadKey)
            }
            _ => Err(AlgorithmError::Unsupported),
        }
    }

    /// Parses a whole DER `SubjectPublicKeyInfo` (as in a `PUBLIC KEY` PEM block).
    ///
    /// # Errors
    ///
    /// As [`PublicKey::from_spki`].
    pub fn from_spki_der(der: &'a [u8]) -> Result<Self, AlgorithmError> {
        Self::from_spki(der::parse_exact(der, tag::SEQUENCE)?)
    }

    /// The key's raw bytes (SEC1 point or Ed25519 key).
    pub const fn as_bytes(&self) -> &'a [u8] {
        match self {
            Self::EcP256(b) => b,
            Self::Ed25519(b) => b.as_slice(),
        }
    }

    /// A short name of the key type.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::EcP256(_) => "ECDSA P-256",
            Self::Ed25519(_) => "Ed25519",
        }
    }

    /// Whether two keys are the same. Keys are compared by encoding: a compressed and an
    /// uncompressed form of one P-256 point are not considered the same.
    pub fn same_key(&self, other: &PublicKey<'_>) -> bool {
        self == other
    }
}

/// Why a signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature does not verify under the key.
    Invalid,
    /// The signature is not encoded as the scheme requires.
    Malformed,
    /// The key is not valid for the scheme (wrong type, not on the curve).
    BadKey,
    /// This verifier does not implement the scheme (e.g. Ed25519 without the `ed25519` feature).
    UnsupportedScheme(Scheme),
}

impl core::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Invalid => f.write_str("signature does not verify"),
            Self::Malformed => f.write_str("signature is not encoded as its scheme requires"),
            Self::BadKey => f.write_str("public key is not valid for the signature scheme"),
            Self::UnsupportedScheme(s) => write!(f, "signature scheme {s} is not supported here"),
        }
    }
}

impl core::error::Error for SignatureError {}

/// Checks signatures. Implementations must be constant-behaviour with respect to the signature
/// (no early accept) and must reject non-canonical encodings the way their scheme defines.
pub trait SignatureVerifier {
    /// Verifies `signature` over `message` with `key` under `scheme`.
    ///
    /// # Errors
    ///
    /// A [`SignatureError`] saying why the signature was not accepted.
    fn verify(
        &self,
        scheme: Scheme,
        key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError>;
}

/// The pure-Rust verifier (RustCrypto `p256`; `ed25519-dalek` with the `ed25519` feature).
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCryptoSignatureVerifier;

impl SignatureVerifier for RustCryptoSignatureVerifier {
    fn verify(
        &self,
        scheme: Scheme,
        key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        use p256::ecdsa::signature::Verifier as _;
        if !scheme.fits(key) {
            return Err(SignatureError::BadKey);
        }
        match (scheme, key) {
            (Scheme::EcdsaP256Sha256 | Scheme::EcdsaP256Sha256Fixed, PublicKey::EcP256(point)) => {
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(|_| SignatureError::BadKey)?;
                let sig = if scheme == Scheme::EcdsaP256Sha256 {
                    p256::ecdsa::Signature::from_der(signature)
                } else {
                    p256::ecdsa::Signature::from_slice(signature)
                }
                .map_err(|_| SignatureError::Malformed)?;
                vk.verify(message, &sig)
                    .map_err(|_| SignatureError::Invalid)
            }
            #[cfg(feature = "ed25519")]
            (Scheme::Ed25519, PublicKey::Ed25519(k)) => {
                let vk = ed25519_dalek::VerifyingKey::from_bytes(k)
                    .map_err(|_| SignatureError::BadKey)?;
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| SignatureError::Malformed)?;
                vk.verify_strict(message, &sig)
                    .map_err(|_| SignatureError::Invalid)
            }
            _ => Err(SignatureError::UnsupportedScheme(scheme)),
        }
    }
}

/// Why signing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// The output buffer is too small; `needed` bytes would do.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// The key or device refused to sign.
    Failed,
}

impl core::fmt::Display for SignError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BufferTooSmall { needed } => {
                write!(f, "signature buffer too small: {needed} bytes needed")
            }
            Self::Failed => f.write_str("the signer failed"),
        }
    }
}

impl core::error::Error for SignError {}

/// Something that signs to-be-signed bytes: a software key, a secure element, an HSM.
pub trait Signer {
    /// The scheme this signer signs with. X.509 structures use its
    /// [`Scheme::algorithm_identifier`].
    fn scheme(&self) -> Scheme;

    /// The public key that verifies this signer's signatures.
    fn public_key(&self) -> PublicKey<'_>;

    /// Signs `message`, writing the signature (DER for ECDSA) into `out`.
    ///
    /// # Errors
    ///
    /// [`SignError::BufferTooSmall`] (with `out` left untouched) or [`SignError::Failed`].
    fn sign<'b>(&mut self, message: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], SignError>;
}

/// Longest DER ECDSA P-256 signature.
pub const MAX_ECDSA_P256_DER_LEN: usize = 72;
/// Longest signature any [`Signer`] here produces.
pub const MAX_SIGNATURE_LEN: usize = MAX_ECDSA_P256_DER_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_identifiers_round_trip() {
        for s in [Scheme::EcdsaP256Sha256, Scheme::Ed25519] {
            let value = der::parse_exact(s.algorithm_identifier(), tag::SEQUENCE).unwrap();
            assert_eq!(Scheme::from_algorithm_identifier(value), Ok(s));
        }
        // ecdsa-with-SHA256 with NULL parameters is not DER-correct (RFC 5758).
        let with_null = [
            0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x05, 0x00,
        ];
        assert_eq!(
            Scheme::from_algorithm_identifier(&with_null),
            Err(AlgorithmError::Unsupported)
        );
        // sha256WithRSAEncryption
        let rsa = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
        ];
        assert_eq!(
            Scheme::from_algorithm_identifier(&rsa),
            Err(AlgorithmError::Unsupported)
        );
    }
}
