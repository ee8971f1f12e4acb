//! The host's private key: ECDSA P-256 on `ring`, for the CA (root, issuer, serving key) and
//! for a sidecar's workload identity alike; loaded from PKCS#8 or SEC1 PEM (as Dapr and openssl
//! write them) and written as PKCS#8 (as Dapr does). The secret never leaves this type
//! except as the PEM written to a 0600 file, and `Debug` shows only the public key.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use sigil_core::crypto::{PublicKey, Scheme, SignError, Signer};
use sigil_core::key::{SoftwareKey, PKCS8_DER_LEN};
use sigil_core::pem;
use zeroize::Zeroizing;

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No `PRIVATE KEY` or `EC PRIVATE KEY` block.
    #[error("no PRIVATE KEY or EC PRIVATE KEY PEM block")]
    NoKey,
    /// An RSA key (Dapr accepts them; Sigil's CA signs with ECDSA P-256 only).
    #[error("an RSA private key: Sigil's CA signs with ECDSA P-256 keys only")]
    Rsa,
    /// Not a P-256 key (Ed25519, P-384, or malformed).
    #[error(
        "not an ECDSA P-256 private key (Ed25519, P-384 and others are not supported for the CA)"
    )]
    NotP256,
    /// `ring` refused the key or the system RNG failed.
    #[error("the key was refused by the crypto library")]
    Rejected,
}

/// An ECDSA P-256 signing key on `ring`.
pub struct P256Key {
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for P256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P256Key")
            .field("public", &crate::pki::hex(self.public_point()))
            .finish_non_exhaustive()
    }
}

impl P256Key {
    /// A fresh key from the system RNG.
    ///
    /// # Errors
    ///
    /// [`KeyError::Rejected`] if the RNG fails.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| KeyError::Rejected)?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// Reads a PKCS#8 DER key.
    ///
    /// # Errors
    ///
    /// [`KeyError::NotP256`] or [`KeyError::Rejected`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        // Through the core's parser first: it accepts PKCS#8 with or without the public key,
        // and re-encodes it with the public key inside, which ring requires.
        let key = SoftwareKey::from_pkcs8_der(der).map_err(|_| KeyError::NotP256)?;
        Self::from_software_key(&key)
    }

    /// Re-keys a core [`SoftwareKey`] onto `ring`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Rejected`].
    pub fn from_software_key(key: &SoftwareKey) -> Result<Self, KeyError> {
        let mut buf = Zeroizing::new([0u8; PKCS8_DER_LEN]);
        let der = key
            .to_pkcs8_der(buf.as_mut())
            .map_err(|_| KeyError::Rejected)?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|_| KeyError::Rejected)?;
        Ok(Self {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
            rng,
        })
    }

    /// Reads the first private-key block of `text`: `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY`
    /// (SEC1). An `RSA PRIVATE KEY` is refused by name.
    ///
    /// # Errors
    ///
    /// [`KeyError`], saying which.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        for block in pem::blocks(text) {
            let Ok(block) = block else { continue };
            let mut buf = Zeroizing::new(vec![0u8; block.decoded_len_max()]);
            match block.label_str() {
                "PRIVATE KEY" | "EC PRIVATE KEY" => {
                    let der = block.decode(&mut buf).map_err(|_| KeyError::NotP256)?;
                    let key = if block.label_str() == "PRIVATE KEY" {
                        SoftwareKey::from_pkcs8_der(der)
                    } else {
                        SoftwareKey::from_sec1_der(der)
                    }
                    .map_err(|_| KeyError::NotP256)?;
                    return Self::from_software_key(&key);
                }
                "RSA PRIVATE KEY" => return Err(KeyError::Rsa),
                _ => {}
            }
        }
        Err(KeyError::NoKey)
    }

    /// The key as PKCS#8 PEM (`PRIVATE KEY`), for a 0600 file.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pki::to_pem(pem::Label::PrivateKey, &self.pkcs8))
    }

    /// The key as PKCS#8 DER (for a TLS stack that signs with it).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as an uncompressed SEC1 point.
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `message` (ECDSA P-256 with SHA-256), DER signature.
    ///
    /// # Errors
    ///
    /// [`KeyError::Rejected`] if ring fails (it does not on valid keys).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Rejected)
    }
}

impl Signer for P256Key {
    fn scheme(&self) -> Scheme {
        Scheme::EcdsaP256Sha256
    }

    fn public_key(&self) -> PublicKey<'_> {
        PublicKey::EcP256(self.public_point())
    }

    fn sign<'b>(&mut self, message: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], SignError> {
        let sig = P256Key::sign(self, message).map_err(|_| SignError::Failed)?;
        let out = out
            .get_mut(..sig.len())
            .ok_or(SignError::BufferTooSmall { needed: sig.len() })?;
        out.copy_from_slice(&sig);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::RingSignatureVerifier;
    use sigil_core::crypto::SignatureVerifier as _;

    #[test]
    fn generated_key_round_trips_through_pem_and_signs() {
        let key = P256Key::generate().unwrap();
        let again = P256Key::from_pem(&key.to_pem()).unwrap();
        assert_eq!(key.public_point(), again.public_point());
        let sig = again.sign(b"hello").unwrap();
        RingSignatureVerifier
            .verify(Scheme::EcdsaP256Sha256, key.public_key(), b"hello", &sig)
            .unwrap();
        assert!(!format!("{key:?}").contains(&crate::pki::hex(&key.pkcs8)));
    }

    #[test]
    fn refusals_are_named() {
        assert!(matches!(P256Key::from_pem("nothing"), Err(KeyError::NoKey)));
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(P256Key::from_pem(rsa), Err(KeyError::Rsa)));
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(P256Key::from_pem(junk), Err(KeyError::NotP256)));
    }
}
