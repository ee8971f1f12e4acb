//! The Sentry client: dials Sentry over TLS, checks its serving certificate against the trust
//! anchors with the core's path validation and authorizes it by SPIFFE ID (no host-name
//! check, as Dapr's sidecar), sends a CSR, and returns the chain only after validating it
//! against the same anchors for client and server use, with the workload profile and the key.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use sigil_core::cert::Certificate;
use sigil_core::crypto::PublicKey;
use sigil_core::path::{self, Options, Usage};
use sigil_core::{pem, profile};
use tokio::net::TcpStream;
use tonic::transport::{Endpoint, Uri};

use crate::pb;
use crate::tls::{SpiffeServerVerifier, MAX_ANCHORS};

/// Why a signing round failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (no anchors, a bad SPIFFE ID, a bad address).
    #[error("client configuration: {0}")]
    Config(String),
    /// Sentry could not be reached, or its TLS identity was refused.
    #[error("connecting to Sentry at {address}: {reason}")]
    Connect {
        /// The address dialled.
        address: String,
        /// Why (TLS errors name the certificate rule that failed).
        reason: String,
    },
    /// Sentry answered with an error status.
    #[error("Sentry refused: {code:?}: {message}")]
    Refused {
        /// The gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The answer has no valid `valid_until` (daprd refuses such answers too).
    #[error("unusable answer from Sentry: valid_until is missing or invalid")]
    NoValidUntil,
    /// The answer is not a usable certificate response.
    #[error("unusable answer from Sentry: {0}")]
    Garbled(String),
    /// The issued chain does not validate against the trust anchors.
    #[error("issued chain does not validate: {0}")]
    Invalid(path::Error),
    /// The issued certificate does not fit the workload profile or the key.
    #[error("issued certificate refused: {0}")]
    Profile(profile::Error),
}

impl ClientError {
    /// Dapr's metric reason for this failure (`sentry_conn`, `sign`, `invalid_ts`, ...).
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Config(_) | Self::Connect { .. } => "sentry_conn",
            Self::Refused { .. } => "sign",
            Self::NoValidUntil => "invalid_ts",
            Self::Garbled(_) | Self::Invalid(_) | Self::Profile(_) => "invalid_cert",
        }
    }
}

/// Where Sentry is and how to trust it.
#[derive(Clone, Debug)]
pub struct SentryTarget {
    /// `host:port`.
    pub address: String,
    /// Trust anchors (DER).
    pub anchors: Vec<Vec<u8>>,
    /// Sentry's SPIFFE ID: `spiffe://<control-plane td>/ns/<control-plane ns>/dapr-sentry`.
    pub sentry_id: String,
}

/// One signing request.
#[derive(Clone, Debug, Default)]
pub struct SignRequest {
    /// App ID.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Token for the validator.
    pub token: String,
    /// Trust domain (control plane only; empty otherwise).
    pub trust_domain: String,
    /// `TokenValidator` number (0: the server's default).
    pub token_validator: i32,
    /// The CSR, DER.
    pub csr_der: Vec<u8>,
}

/// A validated identity from Sentry.
#[derive(Clone, Debug)]
pub struct Signed {
    /// DER, leaf first, then the issuer chain.
    pub chain: Vec<Vec<u8>>,
    /// The trust anchors Sentry sent (DER), possibly newer than the ones configured.
    pub trust_bundle: Vec<Vec<u8>>,
    /// The leaf's notAfter, as Sentry reported it.
    pub valid_until: SystemTime,
}

/// A connected client (one HTTP/2 connection; clone it to share).
#[derive(Clone, Debug)]
pub struct SentryClient {
    inner: pb::ca_client::CaClient<tonic::transport::Channel>,
    target: Arc<SentryTarget>,
}

impl SentryClient {
    /// Connects to `target` (TLS 1.2/1.3, ALPN h2, Sentry's SPIFFE ID checked).
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] or [`ClientError::Connect`].
    pub async fn connect(target: SentryTarget) -> Result<Self, ClientError> {
        let channel = connect_channel(&target).await?;
        Ok(Self {
            inner: pb::ca_client::CaClient::new(channel),
            target: Arc::new(target),
        })
    }

    /// Sends `req` and returns the issued chain after validating it for `key` (the key the
    /// CSR was made with).
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn sign(
        &mut self,
        req: &SignRequest,
        key: PublicKey<'_>,
    ) -> Result<Signed, ClientError> {
        let csr_pem = crate::pki::to_pem(pem::Label::CertificateRequest, &req.csr_der);
        let message = pb::SignCertificateRequest {
            id: req.id.clone(),
            token: req.token.clone(),
            trust_domain: req.trust_domain.clone(),
            namespace: req.namespace.clone(),
            certificate_signing_request: csr_pem.into_bytes(),
            token_validator: req.token_validator,
            jwt_audiences: Vec::new(),
        };
        let resp = self
            .inner
            .sign_certificate(message)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown
                    if s.message().contains("connect") =>
                {
                    ClientError::Connect {
                        address: self.target.address.clone(),
                        reason: s.message().to_owned(),
                    }
                }
                code => ClientError::Refused {
                    code,
                    message: s.message().to_owned(),
                },
            })?
            .into_inner();
        let valid_until = resp
            .valid_until
            .and_then(|t| u64::try_from(t.seconds).ok())
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
            .ok_or(ClientError::NoValidUntil)?;
        let chain = pem_certificates(&resp.workload_certificate)
            .map_err(|e| ClientError::Garbled(format!("workload_certificate: {e}")))?;
        let mut trust_bundle = Vec::new();
        for b in &resp.trust_chain_certificates {
            trust_bundle.extend(
                pem_certificates(b)
                    .map_err(|e| ClientError::Garbled(format!("trust_chain_certificates: {e}")))?,
            );
        }
        validate_identity(&chain, &self.target.anchors, key, SystemTime::now())?;
        Ok(Signed {
            chain,
            trust_bundle,
            valid_until,
        })
    }
}

/// Dials `target` and returns the gRPC channel (TLS 1.2/1.3, ALPN h2, Sentry's SPIFFE ID
/// checked). [`SentryClient::connect`] uses it; a load generator can too.
///
/// # Errors
///
/// [`ClientError::Config`] or [`ClientError::Connect`].
pub async fn connect_channel(
    target: &SentryTarget,
) -> Result<tonic::transport::Channel, ClientError> {
    let verifier = SpiffeServerVerifier::new(target.anchors.clone(), target.sentry_id.clone())
        .map_err(ClientError::Config)?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = target.address.clone();
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| ClientError::Config(format!("address {address:?}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    let dial = address.clone();
    let connector = tower::service_fn(move |_uri: Uri| {
        let (tls, dial) = (tls.clone(), dial.clone());
        async move {
            let tcp = TcpStream::connect(&dial).await?;
            tcp.set_nodelay(true)?;
            // The name is not checked (the SPIFFE ID is); it is only sent as SNI.
            let name = rustls::pki_types::ServerName::try_from("dapr-sentry")
                .map_err(std::io::Error::other)?;
            let stream = tls.connect(name, tcp).await?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                return Err(std::io::Error::other(
                    "Sentry did not agree to HTTP/2 (ALPN h2)",
                ));
            }
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| ClientError::Connect {
            address: address.clone(),
            reason: error_chain(&e),
        })
}

/// Validates an issued chain (DER, leaf first) against `anchors` at `now`: the path for client
/// and server use (with Dapr's 15 min skew), then the workload profile and the key. Anchors
/// the core cannot use are skipped ([`crate::pki::anchor_bundle`]); signatures go through the
/// process-wide [`crate::verifier::shared`] cache (the issuer's, the same every renewal).
///
/// # Errors
///
/// [`ClientError::Invalid`] or [`ClientError::Profile`] or [`ClientError::Garbled`].
pub fn validate_identity(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    key: PublicKey<'_>,
    now: SystemTime,
) -> Result<(), ClientError> {
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| ClientError::Garbled("no certificate".into()))?;
    // Anchors the core cannot use are skipped (warned about where they were loaded).
    let (bundle, _) = crate::pki::anchor_bundle::<MAX_ANCHORS>(anchors);
    let ints: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let options = Options {
        usage: Usage::ClientAndServer,
        skew: Duration::from_secs(15 * 60),
        ..Options::new(sigil_core::UnixTime::from_secs(secs))
    };
    path::verify(leaf, &ints, &bundle, crate::verifier::shared(), &options)
        .map_err(ClientError::Invalid)?;
    let cert = Certificate::parse(leaf).map_err(|e| ClientError::Garbled(e.to_string()))?;
    profile::check_workload(&cert, key, None).map_err(ClientError::Profile)?;
    Ok(())
}

/// Every CERTIFICATE block of a PEM byte string, DER.
///
/// # Errors
///
/// A description if it is not PEM or holds no certificate.
pub fn pem_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 PEM".to_owned())?;
    let mut out = Vec::new();
    for block in pem::blocks(text) {
        let block = block.map_err(|e| e.to_string())?;
        if block.label_str() != "CERTIFICATE" {
            continue;
        }
        let mut buf = vec![0u8; block.decoded_len_max()];
        out.push(block.decode(&mut buf).map_err(|e| e.to_string())?.to_vec());
    }
    if out.is_empty() {
        return Err("no certificate".into());
    }
    Ok(out)
}

/// An error and its sources, one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // Some errors already print their source; do not say it twice.
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
