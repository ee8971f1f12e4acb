//! A [`SignatureVerifier`] on `ring`, for hosts: the same checks as the core's RustCrypto
//! verifier, faster.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sigil_core::crypto::{PublicKey, Scheme, SignatureError, SignatureVerifier};

/// Verifies signatures with `ring`.
///
/// `ring` accepts only uncompressed P-256 points; a compressed key fails as
/// [`SignatureError::Invalid`], as does any malformed signature (ring does not say which).
#[derive(Clone, Copy, Debug, Default)]
pub struct RingVerifier;

impl SignatureVerifier for RingVerifier {
    fn verify(
        &self,
        scheme: Scheme,
        key: PublicKey<'_>,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), SignatureError> {
        let alg: &'static dyn VerificationAlgorithm = match (scheme, key) {
            (Scheme::EcdsaP256Sha256, PublicKey::EcP256(_)) => &signature::ECDSA_P256_SHA256_ASN1,
            (Scheme::EcdsaP256Sha256Fixed, PublicKey::EcP256(_)) => {
                &signature::ECDSA_P256_SHA256_FIXED
            }
            (Scheme::Ed25519, PublicKey::Ed25519(_)) => &signature::ED25519,
            (Scheme::EcdsaP256Sha256 | Scheme::EcdsaP256Sha256Fixed | Scheme::Ed25519, _) => {
                return Err(SignatureError::BadKey)
            }
            (other, _) => return Err(SignatureError::UnsupportedScheme(other)),
        };
        UnparsedPublicKey::new(alg, key.as_bytes())
            .verify(message, sig)
            .map_err(|_| SignatureError::Invalid)
    }
}
