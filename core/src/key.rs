//! P-256 private keys: generation, PKCS#8 and SEC1 forms, and the software [`Signer`].

use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey as _;
use rand_core::CryptoRngCore;

use crate::crypto::{PublicKey, Scheme, SignError, Signer};
use crate::der::{oid, tag, Writer};
use crate::pem;

/// Length of the PKCS#8 encoding [`SoftwareKey::to_pkcs8_der`] writes.
pub const PKCS8_DER_LEN: usize = 138;

/// Why a private key could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM text held no `PRIVATE KEY` or `EC PRIVATE KEY` block, or it was malformed.
    Pem(pem::Error),
    /// The DER was not a PKCS#8 `PrivateKeyInfo` (or SEC1 `ECPrivateKey`) holding a P-256 key.
    /// Keys of other types and curves are reported this way too.
    NotP256,
    /// The output buffer is too small; `needed` bytes would do.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Pem(e) => write!(f, "private key PEM: {e}"),
            Self::NotP256 => f.write_str("not an ECDSA P-256 private key (PKCS#8 or SEC1)"),
            Self::BufferTooSmall { needed } => {
                write!(f, "key buffer too small: {needed} bytes needed")
            }
        }
    }
}

impl core::error::Error for KeyError {}

/// An ECDSA P-256 key held in memory. Its secret is zeroized on drop (by `p256`).
#[derive(Clone)]
pub struct SoftwareKey {
    key: SigningKey,
    point: [u8; 65],
}

impl core::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the secret.
        f.debug_struct("SoftwareKey")
            .field("public", &self.point)
            .finish_non_exhaustive()
    }
}

impl SoftwareKey {
    /// A fresh key from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self::from_signing_key(SigningKey::random(rng))
    }

    /// Wraps an existing `p256` key.
    pub fn from_signing_key(key: SigningKey) -> Self {
        let encoded = key.verifying_key().to_encoded_point(false);
        let mut point = [0u8; 65];
        // An uncompressed P-256 point is always 65 bytes.
        for (dst, src) in point.iter_mut().zip(encoded.as_bytes()) {
            *dst = *src;
        }
        Self { key, point }
    }

    /// Reads a PKCS#8 `PrivateKeyInfo` (`PRIVATE KEY`).
    ///
    /// # Errors
    ///
    /// [`KeyError::NotP256`] if it is not a P-256 key in PKCS#8 form.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_der(der)
            .map(Self::from_signing_key)
            .map_err(|_| KeyError::NotP256)
    }

    /// Reads a SEC1 `ECPrivateKey` (`EC PRIVATE KEY`), as Dapr and openssl's `ecparam` write it.
    ///
    /// # Errors
    ///
    /// [`KeyError::NotP256`] if it is not a P-256 key in SEC1 form.
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, KeyError> {
        p256::SecretKey::from_sec1_der(der)
            .map(|k| Self::from_signing_key(SigningKey::from(k)))
            .map_err(|_| KeyError::NotP256)
    }

    /// Reads the first `PRIVATE KEY` or `EC PRIVATE KEY` block of `text`, decoding it in
    /// `scratch` (at least [`PKCS8_DER_LEN`] plus slack for optional fields; 256 bytes is ample).
    ///
    /// # Errors
    ///
    /// [`KeyError::Pem`] if no such block decodes, [`KeyError::NotP256`] if it is not a P-256
    /// key.
    pub fn from_pem(text: &str, scratch: &mut [u8]) -> Result<Self, KeyError> {
        for block in pem::blocks(text) {
            let block = block.map_err(KeyError::Pem)?;
            match block.label() {
                Some(pem::Label::PrivateKey) => {
                    return Self::from_pkcs8_der(block.decode(scratch).map_err(KeyError::Pem)?)
                }
                Some(pem::Label::EcPrivateKey) => {
                    return Self::from_sec1_der(block.decode(scratch).map_err(KeyError::Pem)?)
                }
                _ => {}
            }
        }
        Err(KeyError::Pem(pem::Error::NotFound))
    }

    /// Writes the key as PKCS#8 DER ([`PKCS8_DER_LEN`] bytes), with its public key inside.
    ///
    /// # Errors
    ///
    /// [`KeyError::BufferTooSmall`] if `buf` is shorter than [`PKCS8_DER_LEN`].
    pub fn to_pkcs8_der<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], KeyError> {
        if buf.len() < PKCS8_DER_LEN {
            return Err(KeyError::BufferTooSmall {
                needed: PKCS8_DER_LEN,
            });
        }
        let secret = self.key.to_bytes();
        let mut w = Writer::new(buf);
        w.header(tag::SEQUENCE, 135);
        w.tlv(tag::INTEGER, &[0]);
        w.header(tag::SEQUENCE, 19);
        w.tlv(tag::OID, oid::EC_PUBLIC_KEY);
        w.tlv(tag::OID, oid::PRIME256V1);
        w.header(tag::OCTET_STRING, 109);
        // RFC 5915 ECPrivateKey, curve implied by the PKCS#8 algorithm.
        w.header(tag::SEQUENCE, 107);
        w.tlv(tag::INTEGER, &[1]);
        w.tlv(tag::OCTET_STRING, &secret);
        w.header(tag::context(1), 68);
        w.header(tag::BIT_STRING, 66);
        w.bytes(&[0]);
        w.bytes(&self.point);
        w.finish()
            .map_err(|needed| KeyError::BufferTooSmall { needed })
    }

    /// The `p256` key inside, for code (like a TLS stack) that wants it directly.
    pub const fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key as an uncompressed SEC1 point.
    pub const fn public_point(&self) -> &[u8; 65] {
        &self.point
    }
}

impl Signer for SoftwareKey {
    fn scheme(&self) -> Scheme {
        Scheme::EcdsaP256Sha256
    }

    fn public_key(&self) -> PublicKey<'_> {
        PublicKey::EcP256(&self.point)
    }

    fn sign<'b>(&mut self, message: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], SignError> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature =
            self.key.try_sign(message).map_err(|_| SignError::Failed)?;
        let der = sig.to_der();
        let bytes = der.as_bytes();
        let dst = out
            .get_mut(..bytes.len())
            .ok_or(SignError::BufferTooSmall {
                needed: bytes.len(),
            })?;
        dst.copy_from_slice(bytes);
        Ok(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{RustCryptoSignatureVerifier, SignatureVerifier};

    #[test]
    fn pkcs8_round_trip_and_sign() {
        let mut key = SoftwareKey::generate(&mut rand_core::OsRng);
        let mut buf = [0u8; PKCS8_DER_LEN];
        let der = key.to_pkcs8_der(&mut buf).unwrap();
        assert_eq!(der.len(), PKCS8_DER_LEN);
        let back = SoftwareKey::from_pkcs8_der(der).unwrap();
        assert_eq!(back.public_point(), key.public_point());
        let mut sig = [0u8; 72];
        let sig = key.sign(b"hello", &mut sig).unwrap();
        RustCryptoSignatureVerifier
            .verify(Scheme::EcdsaP256Sha256, back.public_key(), b"hello", sig)
            .unwrap();
        assert_eq!(
            RustCryptoSignatureVerifier.verify(
                Scheme::EcdsaP256Sha256,
                back.public_key(),
                b"hellO",
                sig
            ),
            Err(crate::crypto::SignatureError::Invalid)
        );
        let mut small = [0u8; 10];
        assert_eq!(
            key.to_pkcs8_der(&mut small).unwrap_err(),
            KeyError::BufferTooSmall { needed: 138 }
        );
        assert!(matches!(
            key.sign(b"x", &mut small),
            Err(SignError::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            SoftwareKey::from_pkcs8_der(&[0x30, 0x00]).unwrap_err(),
            KeyError::NotP256
        );
        assert_eq!(
            SoftwareKey::from_sec1_der(&[]).unwrap_err(),
            KeyError::NotP256
        );
    }
}
