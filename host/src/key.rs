//! The host's private keys, on `ring`: [`P256Key`] (ECDSA P-256) for a sidecar's workload
//! identity, Sentry's serving key and, by default, the CA; [`Ed25519Key`] for a CA made as
//! Dapr 1.18 makes them; [`CaKey`], either of the two, for the root and the issuer. Keys are
//! loaded from PKCS#8 (or, for P-256, SEC1) PEM as Dapr and openssl write them, and written as
//! PKCS#8 (as Dapr does). The secret never leaves these types except as the PEM written to a
//! 0600 file, and `Debug` shows only the public key.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
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
    /// An RSA key (Dapr accepts them; Sigil's CA signs with ECDSA P-256 or Ed25519).
    #[error("an RSA private key: Sigil's CA signs with ECDSA P-256 or Ed25519 keys only")]
    Rsa,
    /// Not a key of the kind needed (P-384, Ed448, a P-256 key where Ed25519 is wanted, or
    /// malformed).
    #[error(
        "not an ECDSA P-256 or Ed25519 private key (P-384, Ed448 and others are not supported)"
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

/// An Ed25519 signing key on `ring` (RFC 8032; PKCS#8 per RFC 8410).
pub struct Ed25519Key {
    pair: Ed25519KeyPair,
    public: [u8; 32],
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("public", &crate::pki::hex(self.public_bytes()))
            .finish_non_exhaustive()
    }
}

impl Ed25519Key {
    /// A fresh key from the system RNG.
    ///
    /// # Errors
    ///
    /// [`KeyError::Rejected`] if the RNG fails.
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Rejected)?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// Reads a PKCS#8 DER key, with or without its public key (v1 as openssl writes it, v2 as
    /// ring does).
    ///
    /// # Errors
    ///
    /// [`KeyError::NotP256`] if it is not an Ed25519 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyError::NotP256)?;
        let public =
            <[u8; 32]>::try_from(pair.public_key().as_ref()).map_err(|_| KeyError::Rejected)?;
        Ok(Self {
            pair,
            public,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// The 32-byte public key.
    pub const fn public_bytes(&self) -> &[u8; 32] {
        &self.public
    }

    /// Signs `message` (Ed25519, 64 bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Which kind of CA key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (Sigil's default, Dapr's up to 1.17).
    #[default]
    P256,
    /// Ed25519 (Dapr 1.18's).
    Ed25519,
}

/// A CA key (root or issuer): ECDSA P-256 or Ed25519.
#[derive(Debug)]
pub enum CaKey {
    /// ECDSA P-256.
    P256(P256Key),
    /// Ed25519.
    Ed25519(Ed25519Key),
}

impl CaKey {
    /// A fresh key of `algorithm`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Rejected`] if the RNG fails.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        Ok(match algorithm {
            KeyAlgorithm::P256 => Self::P256(P256Key::generate()?),
            KeyAlgorithm::Ed25519 => Self::Ed25519(Ed25519Key::generate()?),
        })
    }

    /// Reads the first private-key block of `text`: `PRIVATE KEY` (PKCS#8, P-256 or Ed25519)
    /// or `EC PRIVATE KEY` (SEC1, P-256). An `RSA PRIVATE KEY` is refused by name.
    ///
    /// # Errors
    ///
    /// [`KeyError`], saying which.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        match P256Key::from_pem(text) {
            Ok(k) => Ok(Self::P256(k)),
            Err(KeyError::NotP256) => {
                let der = crate::pki::decode_pem(text, pem::Label::PrivateKey)
                    .ok()
                    .and_then(|mut ders| (!ders.is_empty()).then(|| ders.swap_remove(0)))
                    .map(Zeroizing::new)
                    .ok_or(KeyError::NotP256)?;
                Ed25519Key::from_pkcs8_der(&der).map(Self::Ed25519)
            }
            Err(e) => Err(e),
        }
    }

    /// The key as PKCS#8 PEM (`PRIVATE KEY`), for a 0600 file.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let der = match self {
            Self::P256(k) => k.pkcs8_der(),
            Self::Ed25519(k) => &k.pkcs8,
        };
        Zeroizing::new(crate::pki::to_pem(pem::Label::PrivateKey, der))
    }

    /// The public key, for the core.
    pub fn public_key(&self) -> PublicKey<'_> {
        match self {
            Self::P256(k) => PublicKey::EcP256(k.public_point()),
            Self::Ed25519(k) => PublicKey::Ed25519(k.public_bytes()),
        }
    }

    /// The kind of key.
    pub const fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::P256(_) => KeyAlgorithm::P256,
            Self::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// Signs `message`: ECDSA P-256 with SHA-256 (DER) or Ed25519.
    ///
    /// # Errors
    ///
    /// [`KeyError::Rejected`] if ring fails.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::P256(k) => k.sign(message),
            Self::Ed25519(k) => Ok(k.sign(message)),
        }
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
    fn ca_keys_of_both_kinds_round_trip_and_sign() {
        for alg in [KeyAlgorithm::P256, KeyAlgorithm::Ed25519] {
            let key = CaKey::generate(alg).unwrap();
            let again = CaKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(again.algorithm(), alg);
            assert!(again.public_key().same_key(&key.public_key()));
            let scheme = match alg {
                KeyAlgorithm::P256 => Scheme::EcdsaP256Sha256,
                KeyAlgorithm::Ed25519 => Scheme::Ed25519,
            };
            let sig = again.sign(b"tbs").unwrap();
            RingSignatureVerifier
                .verify(scheme, key.public_key(), b"tbs", &sig)
                .unwrap();
        }
        // An Ed25519 key as openssl writes it (PKCS#8 v1, no public key), RFC 8410's example.
        let openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            CaKey::from_pem(openssl).unwrap().algorithm(),
            KeyAlgorithm::Ed25519
        );
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
