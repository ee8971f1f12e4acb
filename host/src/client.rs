//! The Sentry client: dials Sentry over TLS, checks its serving certificate against the trust
//! anchors with the core's path validation and authorizes it by SPIFFE ID (no host-name
//! check, as Dapr's sidecar), sends a CSR and returns the answer. [`SentryClient::request`]
//! is transport only: the issued chain is judged by whoever holds the key, with the core's
//! one judgement ([`sigil_core::rotation::check_issued`]) — the rotation machine on a sidecar
//! or a device, [`check_issued`] for tools (`sigil sign`), so the same answer gets the same
//! verdict, reason and metric everywhere.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use sigil_core::crypto::PublicKey;
use sigil_core::pem;
use sigil_core::profile::Expected;
use sigil_core::rotation::{self, Failure, Rejection};
use sigil_core::status;
use tokio::net::TcpStream;
use tonic::transport::{Endpoint, Uri};

use crate::pb;
use crate::rustls_glue::SentryCertVerifier;
use crate::trust::Anchors;

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
    /// The issued chain was refused by the core's judgement (path, profile, key, identity).
    #[error("issued certificate refused: {0}")]
    Rejected(Rejection),
    /// A JWT-SVID in the answer is unusable ([`check_jwt_svids`]).
    #[error("{0}")]
    Jwt(JwtSvidError),
}

impl ClientError {
    /// The rotation machine's kind for this failure, by the core's one table
    /// ([`sigil_core::status`]): the device reads the same kind from the code the relay sends.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Config(_) | Self::Connect { .. } => Failure::Unreachable,
            Self::Refused { code, .. } => {
                status::failure(u8::try_from(i32::from(*code)).unwrap_or(status::UNKNOWN))
            }
            Self::NoValidUntil | Self::Garbled(_) | Self::Rejected(_) | Self::Jwt(_) => {
                Failure::Garbled
            }
        }
    }

    /// Dapr's metric reason for this failure (`sentry_conn`, `sign`, `invalid_ts`, ...).
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Config(_) | Self::Connect { .. } => "sentry_conn",
            Self::Refused { .. } => "sign",
            Self::NoValidUntil => "invalid_ts",
            Self::Garbled(_) | Self::Rejected(_) => "invalid_cert",
            Self::Jwt(e) => e.reason,
        }
    }
}

/// Where Sentry is and how to trust it.
#[derive(Clone, Debug)]
pub struct SentryTarget {
    /// `host:port`.
    pub address: String,
    /// The trust anchors Sentry's serving chain must chain to (loaded once, shared).
    pub anchors: Arc<Anchors>,
    /// Sentry's SPIFFE ID: `spiffe://<control-plane td>/ns/<control-plane ns>/dapr-sentry`.
    pub sentry_id: String,
}

/// The validator a workload asks for, as daprd chooses it: `JWKS` when it sends a token (a
/// token file is configured), otherwise `UNKNOWN`, which lets Sentry use its default.
pub fn token_validator(has_token: bool) -> i32 {
    use crate::pb::sign_certificate_request::TokenValidator;
    i32::from(if has_token {
        TokenValidator::Jwks
    } else {
        TokenValidator::Unknown
    })
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
    /// Audiences of JWT-SVIDs to ask for (`jwt_audiences`; Sentry adds the trust domain).
    pub jwt_audiences: Vec<String>,
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
    /// The JWT-SVID for the trust domain and every requested audience (`jwt`), when Sentry
    /// issues them.
    pub jwt: Option<String>,
    /// One JWT-SVID per audience (`per_audience_jwts`, Dapr 1.18).
    pub per_audience_jwts: std::collections::BTreeMap<String, String>,
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

    /// Sends `req` and returns the issued chain after judging it ([`check_issued`]) for `key`
    /// (the key the CSR was made with), in any trust domain: for tools and tests that hold no
    /// rotation machine.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn sign(
        &mut self,
        req: &SignRequest,
        key: PublicKey<'_>,
    ) -> Result<Signed, ClientError> {
        let signed = self.request(req).await?;
        check_issued(
            &signed.chain,
            &self.target.anchors,
            key,
            None,
            SystemTime::now(),
        )?;
        Ok(signed)
    }

    /// Sends `req` and returns Sentry's answer, not judged (see the module doc): the chain
    /// parsed from PEM, the trust bundle, `valid_until`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] other than [`ClientError::Rejected`].
    pub async fn request(&mut self, req: &SignRequest) -> Result<Signed, ClientError> {
        let csr_pem = crate::pki::to_pem(pem::Label::CertificateRequest, &req.csr_der);
        let message = pb::SignCertificateRequest {
            id: req.id.clone(),
            token: req.token.clone(),
            trust_domain: req.trust_domain.clone(),
            namespace: req.namespace.clone(),
            certificate_signing_request: csr_pem.into_bytes(),
            token_validator: req.token_validator,
            jwt_audiences: req.jwt_audiences.clone(),
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
        let chain = crate::pki::pem_certificates(&resp.workload_certificate)
            .map_err(|e| ClientError::Garbled(format!("workload_certificate: {e}")))?;
        let mut trust_bundle = Vec::new();
        for b in &resp.trust_chain_certificates {
            trust_bundle.extend(
                crate::pki::pem_certificates(b)
                    .map_err(|e| ClientError::Garbled(format!("trust_chain_certificates: {e}")))?,
            );
        }
        if chain.is_empty() {
            return Err(ClientError::Garbled(
                "workload_certificate: no certificate".into(),
            ));
        }
        Ok(Signed {
            chain,
            trust_bundle,
            valid_until,
            jwt: resp.jwt,
            per_audience_jwts: resp.per_audience_jwts.into_iter().collect(),
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
    let verifier = SentryCertVerifier::new(target.anchors.clone(), target.sentry_id.clone())
        .map_err(ClientError::Config)?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::rustls_glue::provider())
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

/// The core's judgement ([`sigil_core::rotation::check_issued`]) on an issued chain (DER, leaf
/// first) at `now`: the path against `anchors` for client and server use (with Dapr's 15 min
/// skew), the workload profile, the key and, if given, the identity expected. Anchors the core
/// cannot use were skipped when `anchors` was loaded ([`Anchors`]); signatures go through the
/// process-wide [`crate::signature::shared`] cache.
///
/// # Errors
///
/// [`ClientError::Rejected`].
pub fn check_issued(
    chain: &[Vec<u8>],
    anchors: &Anchors,
    key: PublicKey<'_>,
    expected: Option<Expected<'_>>,
    now: SystemTime,
) -> Result<(), ClientError> {
    let bundle = anchors.bundle();
    let chain: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rotation::check_issued(
        &chain,
        &bundle,
        key,
        expected,
        sigil_core::UnixTime::from_secs(secs),
        Duration::from_secs(15 * 60),
        crate::signature::shared(),
    )
    .map_err(ClientError::Rejected)
}

/// [`check_issued`] with no identity expected.
///
/// # Errors
///
/// [`ClientError::Rejected`].
pub fn validate_identity(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    key: PublicKey<'_>,
    now: SystemTime,
) -> Result<(), ClientError> {
    let anchors = Anchors::from_ders("trust anchors", anchors.to_vec())
        .map_err(|e| ClientError::Config(e.to_string()))?;
    check_issued(chain, &anchors, key, None, now)
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

/// Why a JWT-SVID in Sentry's answer is not usable.
#[derive(Debug, thiserror::Error)]
#[error("JWT-SVID{}: {why}", audience.as_ref().map_or_else(String::new, |a| format!(" for audience {a:?}")))]
pub struct JwtSvidError {
    /// The per-audience token's key, or `None` for the main token.
    pub audience: Option<String>,
    /// What is wrong.
    pub why: String,
    /// Dapr's metric reason: `jwt_parse`, or `jwt_aud` for an audience that does not fit.
    pub reason: &'static str,
}

/// Checks the JWT-SVIDs of an answer as daprd does (the signature is the relying party's to
/// check, with the issuer's published keys): each is a JWT whose `sub` is the SPIFFE ID of the
/// answer's leaf, whose `exp` is after `now` (with `leeway`); the main token's `aud` holds the
/// leaf's trust domain and every audience `asked` for; each per-audience token's `aud` is
/// exactly its key. An answer without tokens passes when none were asked for.
///
/// # Errors
///
/// [`JwtSvidError`] for the first token that fails, naming it.
pub fn check_jwt_svids(
    signed: &Signed,
    asked: &[String],
    now: SystemTime,
    leeway: Duration,
) -> Result<(), JwtSvidError> {
    if signed.jwt.is_none() && signed.per_audience_jwts.is_empty() && asked.is_empty() {
        return Ok(());
    }
    let subject = signed
        .chain
        .first()
        .and_then(|d| sigil_core::cert::Certificate::parse(d).ok())
        .and_then(|c| c.spiffe_ids().next().map(|i| i.as_str().to_owned()))
        .unwrap_or_default();
    let trust_domain = sigil_core::spiffe::SpiffeId::parse(&subject)
        .map(|i| i.trust_domain().as_str().to_owned())
        .unwrap_or_default();
    let (subject, trust_domain) = (subject.as_str(), trust_domain.as_str());
    let check = |token: &str, audience: Option<&str>| -> Result<Vec<String>, JwtSvidError> {
        let fail = |why: String| JwtSvidError {
            audience: audience.map(str::to_owned),
            why,
            reason: "jwt_parse",
        };
        let claims =
            crate::sentry::jwt::decode_unverified(token).map_err(|e| fail(e.to_string()))?;
        let sub = claims.get("sub").and_then(serde_json::Value::as_str);
        if sub != Some(subject) {
            return Err(fail(format!("sub is {sub:?}, not {subject:?}")));
        }
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| fail("no numeric exp".into()))?;
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if exp.saturating_add(leeway.as_secs()) < now_secs {
            return Err(fail(format!("expired (exp {exp})")));
        }
        let aud: Vec<String> = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| fail("aud holds a non-string".into()))?,
            _ => return Err(fail("no aud".into())),
        };
        Ok(aud)
    };
    if let Some(jwt) = &signed.jwt {
        let aud = check(jwt, None)?;
        for want in std::iter::once(trust_domain).chain(asked.iter().map(String::as_str)) {
            if !aud.iter().any(|a| a == want) {
                return Err(JwtSvidError {
                    audience: None,
                    why: format!("aud {aud:?} lacks {want:?}"),
                    reason: "jwt_aud",
                });
            }
        }
    } else if !asked.is_empty() {
        return Err(JwtSvidError {
            audience: None,
            why: "audiences were asked for but Sentry sent no JWT (is it running with \
                  --jwt-enabled?)"
                .into(),
            reason: "jwt_parse",
        });
    }
    for (key, token) in &signed.per_audience_jwts {
        let aud = check(token, Some(key))?;
        if aud != [key.clone()] {
            return Err(JwtSvidError {
                audience: Some(key.clone()),
                why: format!("aud is {aud:?}, not exactly [{key:?}]"),
                reason: "jwt_aud",
            });
        }
    }
    Ok(())
}
