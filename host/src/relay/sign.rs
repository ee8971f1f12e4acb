//! The signing channel: a device's `SignRequest` becomes a request to Sentry (a new TLS
//! connection each time, Sentry's chain and ID checked), and Sentry's answer or refusal becomes
//! a `SignAnswer`. Transport only: the chain is judged by the device's rotation machine.
//!
//! Sentry's trust bundle travels on: the answer carries the chain, an empty field, and the
//! roots Sentry sent (`trust_chain_certificates`), which the device adopts once the chain
//! installs. The relay adopts them too, as a sidecar does: it checks Sentry's serving chain
//! against its anchors file plus the roots of Sentry's last answer (accepted because that
//! Sentry's serving chain validated against the set held then), so it follows Sentry through
//! a root rotation with no file change.

use sigil_core::link::{self, Answer, Frame, MAX_PAYLOAD};
use sigil_core::rotation::Failure;
use sigil_core::status;
use tonic::Code;

use super::{encode, RelayOptions};
use crate::client::{ClientError, SentryClient, SentryTarget, SignRequest};

impl RelayOptions {
    /// The refusal for a request outside the pinned app ID and namespace, if any.
    pub(super) fn pinned_refusal(&self, id: &str, namespace: &str) -> Option<Reply> {
        let pinned = |pin: &Option<String>, asked: &str| pin.as_deref().is_some_and(|p| p != asked);
        (pinned(&self.app_id, id) || pinned(&self.namespace, namespace)).then(|| {
            Reply::refused(
                Code::PermissionDenied,
                format!(
                    "this relay signs for app ID {} in namespace {} only",
                    self.app_id.as_deref().unwrap_or("(any)"),
                    self.namespace.as_deref().unwrap_or("(any)")
                ),
            )
        })
    }
}

/// A sign request, owned (it outlives the receive buffer).
pub(super) struct DeviceRequest {
    pub(super) id: String,
    pub(super) namespace: String,
    pub(super) token: String,
    pub(super) csr: Vec<u8>,
}

/// What sign tasks share.
pub(super) struct SignContext {
    pub(super) opts: RelayOptions,
    /// The anchors file, read again when it changes (a rotated root is picked up); the last
    /// good set is used if a replacement is unusable.
    pub(super) anchors: crate::trust::AnchorsFile,
    /// The roots of Sentry's last answer (DER).
    pub(super) from_sentry: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl SignContext {
    /// Asks Sentry for a certificate for `req` and turns the outcome into an answer.
    pub(super) async fn answer(&self, req: DeviceRequest) -> Reply {
        let token = match (&self.opts.token_file, req.token.is_empty()) {
            (Some(file), true) => match std::fs::read_to_string(file) {
                Ok(t) => t.trim().to_owned(),
                Err(e) => {
                    // Transient, as a projected token that is not written yet: retry later.
                    let why = format!("token file {}: {e}", file.display());
                    return Reply::failed(Failure::Unreachable, why);
                }
            },
            _ => req.token,
        };
        let from_sentry = self
            .from_sentry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let file = self.anchors.current();
        let anchors = match file.with_sentry_roots(&from_sentry) {
            Ok(a) => std::sync::Arc::new(a),
            Err(e) => {
                tracing::warn!(error = %e, "Sentry's trust bundle not usable beside the file's; the file's anchors alone");
                file
            }
        };
        let target = SentryTarget {
            address: self.opts.sentry.clone(),
            anchors: anchors.clone(),
            sentry_id: self.opts.sentry_id.clone(),
        };
        let request = SignRequest {
            // A token selects the JWKS validator, as daprd's token file does; without one
            // Sentry's default validator decides.
            token_validator: crate::client::token_validator(!token.is_empty()),
            id: req.id,
            namespace: req.namespace,
            token,
            trust_domain: self.opts.trust_domain.clone(),
            csr_der: req.csr.clone(),
            jwt_audiences: Vec::new(),
        };
        // Transport only: the device's rotation machine is the one judge of the chain (the
        // path against its anchors, the profile, its key, its SPIFFE ID), as on a sidecar.
        let signed = match SentryClient::connect(target).await {
            Ok(mut client) => client.request(&request).await,
            Err(e) => Err(e),
        };
        let signed = match signed {
            Ok(s) => s,
            Err(e) => return Reply::from(e),
        };
        if !signed.trust_bundle.is_empty() && signed.trust_bundle != from_sentry {
            *self
                .from_sentry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = signed.trust_bundle.clone();
        }
        // Leaf and intermediates; a root (configured or sent by Sentry) is not sent on.
        let is_root = |c: &Vec<u8>| anchors.ders().contains(c) || signed.trust_bundle.contains(c);
        let certs: Vec<&[u8]> = signed
            .chain
            .iter()
            .enumerate()
            .filter(|&(i, c)| i == 0 || !is_root(c))
            .map(|(_, c)| c.as_slice())
            .collect();
        // The answer's payload: request number (4), status (1), then the chain, and Sentry's
        // roots after an empty field if they fit (the chain alone otherwise: the device keeps
        // the roots it has).
        let mut payload = vec![0u8; MAX_PAYLOAD - 5];
        let with_roots = certs
            .iter()
            .copied()
            .chain((!signed.trust_bundle.is_empty()).then_some(&[][..]))
            .chain(signed.trust_bundle.iter().map(Vec::as_slice));
        if let Ok(answer) = link::encode_chain(with_roots, &mut payload) {
            return Reply::Chain(answer.to_vec());
        }
        if !signed.trust_bundle.is_empty() {
            tracing::warn!(
                roots = signed.trust_bundle.len(),
                "Sentry's trust bundle does not fit a link frame beside the chain: sent without \
                 it (the device keeps the roots it has)"
            );
        }
        match link::encode_chain(certs, &mut payload) {
            Ok(chain) => Reply::Chain(chain.to_vec()),
            Err(e) => Reply::failed(
                Failure::Garbled,
                format!("issued chain does not fit a link frame: {e}"),
            ),
        }
    }
}

/// The answer to a sign request.
///
/// Codes (gRPC's): Sentry's own when it refuses (Dapr's: `INVALID_ARGUMENT` 3 for the CSR or
/// the validator choice, `PERMISSION_DENIED` 7 for the validator, `INTERNAL` 13 for issuance);
/// `UNAVAILABLE` 14 when Sentry cannot be reached or the token file read; `INTERNAL` 13 when
/// Sentry's answer cannot be decoded or does not fit a frame (the chain itself is judged by the
/// device); `RESOURCE_EXHAUSTED` 8 when too many requests are in flight. Failures without a
/// code of Sentry's get theirs from [`sigil_core::status`], the table the device reads them
/// back with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// The chain payload (`link::encode_chain`), leaf first.
    Chain(Vec<u8>),
    /// A refusal: gRPC code (never 0) and message (fits a frame).
    Refused { code: u8, message: String },
}

impl Reply {
    pub(super) fn refused(code: Code, message: impl Into<String>) -> Self {
        let code = u8::try_from(i32::from(code))
            .ok()
            .filter(|&c| c != 0)
            .unwrap_or(2); // UNKNOWN
        Self::Refused {
            code,
            message: clip(message.into(), MAX_PAYLOAD - 5),
        }
    }

    /// A failure without a code of Sentry's: the core's code for its kind.
    fn failed(failure: Failure, message: impl Into<String>) -> Self {
        Self::refused(Code::from(i32::from(status::code(failure))), message)
    }

    /// The `SignAnswer` frame for request `request`.
    pub(super) fn to_frame(&self, request: u32) -> Vec<u8> {
        let answer = match self {
            Self::Chain(c) => Answer::Chain(c),
            Self::Refused { code, message } => Answer::Refused {
                code: *code,
                message,
            },
        };
        encode(&Frame::SignAnswer { request, answer }).unwrap_or_else(|e| {
            // Unreachable: chains and messages are sized to fit above.
            tracing::error!(error = %e, "sign answer not encoded");
            encode(&Frame::SignAnswer {
                request,
                answer: Answer::Refused {
                    code: status::code(Failure::Garbled),
                    message: "answer not encoded",
                },
            })
            .unwrap_or_default()
        })
    }
}

impl From<ClientError> for Reply {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Refused { code, message } => Self::refused(code, message),
            e => Self::failed(e.failure(), e.to_string()),
        }
    }
}

impl core::fmt::Display for Reply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Chain(c) => write!(f, "chain of {} bytes", c.len()),
            Self::Refused { code, message } => write!(f, "refused ({code}): {message}"),
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}
