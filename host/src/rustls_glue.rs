//! rustls on the core: peers are checked with the core's path validation and authorized by
//! SPIFFE ID (no hostname check, as Dapr's go-spiffe clients), and certified keys are built from
//! the CA's types. TLS 1.2 and 1.3 with the `ring` provider; ALPN `h2` for gRPC.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, OtherError};
use sigil_core::chain::{PeerName, Usage};
use sigil_core::spiffe::SpiffeId;

use crate::signature::shared;
use crate::trust::{Anchors, Policy};

/// The handshake-signature methods every rustls verifier here shares (the traits require them
/// on each): `ring`'s algorithms from the verifier's `provider` field; TLS 1.3 always, TLS 1.2
/// only with `tls12_and_13` (Sentry's client, which may meet a TLS 1.2 server). The sidecars
/// speak TLS 1.3 only.
macro_rules! handshake_signatures {
    (tls13_only) => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &rustls::pki_types::CertificateDer<'_>,
            _dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }
        $crate::rustls_glue::handshake_signatures!(@tls13);
    };
    (tls12_and_13) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }
        $crate::rustls_glue::handshake_signatures!(@tls13);
    };
    (@tls13) => {
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use handshake_signatures;

/// The `ring` crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certified key for a TLS server or client: `chain` (DER, leaf first) and its PKCS#8 key.
///
/// # Errors
///
/// rustls's error if the key is not a supported ECDSA key.
pub fn certified_key(chain: Vec<Vec<u8>>, pkcs8: &[u8]) -> Result<CertifiedKey, rustls::Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key)?;
    Ok(CertifiedKey::new(
        chain.into_iter().map(CertificateDer::from).collect(),
        signer,
    ))
}

/// Checks a server's chain against `anchors` with the core's path validation and requires its
/// SPIFFE ID to be exactly `expected` (the TLS server name is not used). Signatures go through
/// the process-wide [`crate::signature::shared`] cache.
#[derive(Debug)]
pub struct SentryCertVerifier {
    anchors: Arc<Anchors>,
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl SentryCertVerifier {
    /// A verifier for `expected` (a SPIFFE ID) chaining to one of `anchors`.
    ///
    /// # Errors
    ///
    /// A description if `expected` is not a SPIFFE ID.
    pub fn new(anchors: Arc<Anchors>, expected: String) -> Result<Self, String> {
        SpiffeId::parse(&expected).map_err(|e| format!("{expected:?}: {e}"))?;
        Ok(Self {
            anchors,
            expected,
            provider: provider(),
        })
    }
}

/// A refusal as a sentence (rustls shows its `Debug`, so both are the sentence).
pub(crate) struct VerifyError(String);

impl std::fmt::Debug for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyError {}

/// A certificate refusal rustls reports with `message`.
pub(crate) fn other(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(VerifyError(
        message,
    )))))
}

impl ServerCertVerifier for SentryCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = SpiffeId::parse(&self.expected).map_err(|e| other(e.to_string()))?;
        let ints: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
        let policy = Policy {
            peer: PeerName::SpiffeId(id),
            ..Policy::new(
                Usage::ServerAuth,
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs()),
            )
        };
        self.anchors
            .verify(end_entity.as_ref(), &ints, &policy, shared())
            .map(|_| ServerCertVerified::assertion())
            .map_err(|e| {
                let found: Vec<String> = sigil_core::cert::Certificate::parse(end_entity.as_ref())
                    .map(|c| c.spiffe_ids().map(|i| i.as_str().to_owned()).collect())
                    .unwrap_or_default();
                other(format!(
                    "server certificate refused: {e} (expected SPIFFE ID {}, found {found:?})",
                    self.expected
                ))
            })
    }

    handshake_signatures!(tls12_and_13);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    };

    use super::*;

    const ID: &str = "spiffe://example.org/ns/dapr-system/dapr-sentry";

    /// Sentry's client checks the server through the process-wide cache: a second handshake
    /// with the same chain verifies no signature again.
    #[test]
    fn server_verifier_uses_the_shared_cache() {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "example.org");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name = DistinguishedName::new();
        leaf.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf
            .signed_by(&KeyPair::generate().unwrap(), &root)
            .unwrap();
        let anchors = Anchors::from_ders("test", vec![root.der().to_vec()]).unwrap();
        let verifier = SentryCertVerifier::new(Arc::new(anchors), ID.into()).unwrap();
        let name = ServerName::try_from("dapr-sentry").unwrap();
        let check = || {
            verifier
                .verify_server_cert(leaf.der(), &[], &name, &[], UnixTime::now())
                .unwrap();
        };
        check();
        let before = shared().stats();
        check();
        let after = shared().stats();
        // Other tests share the cache: at least this handshake's one signature was a hit.
        assert!(after.hits > before.hits, "{before:?} -> {after:?}");
    }
}
