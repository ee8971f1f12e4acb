//! Mutual TLS between sidecars (rustls, TLS 1.3, ring), checked with the core's path
//! validation and authorized by SPIFFE ID, as Dapr does:
//!
//! - **Server** ([`server_config`]): a client certificate is required; it must chain to the
//!   trust anchors in force for client use and carry one SPIFFE ID, which the [`CallerPolicy`]
//!   must accept: by default any ID (Dapr's `AuthorizeAny`), or only listed IDs
//!   (`--allow-spiffe-id`) and/or only IDs in listed trust domains (`--allow-trust-domain`). A
//!   peer that sends only its leaf (embedded-tls devices do) validates through the intermediates
//!   this sidecar already knows: its own issuer chain. A leaf from an issuer it does not hold
//!   (after Sentry activates a new issuer, until this sidecar renews) is refused and makes the
//!   sidecar renew at once ([`crate::sidecar::identity::IdentityState::renew_early`], at most
//!   every 30 s), so the next handshake succeeds.
//! - **Client** ([`client_config`]): the server must chain to the anchors for server use and
//!   carry `spiffe://<any trust domain>/ns/<namespace>/<target app-id>` (Dapr's
//!   `MTLSUnknownTrustDomain`); no host name is checked.
//! - **Rotation** ([`IdentityResolver`]): both sides present the identity the rotation machine
//!   installed last; new handshakes pick up a new one at once, established connections keep
//!   theirs (they are never cut).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, SignatureScheme};
use sigil_core::chain::{PeerName, Usage};
use sigil_core::spiffe::SpiffeId;

use super::identity::IdentityState;
use crate::rustls_glue::other as refused;
use crate::signature::shared;
use crate::trust::Policy;

/// Presents the identity installed last (see the module doc); the certified key is built once
/// per generation.
#[derive(Debug)]
pub struct IdentityResolver {
    state: Arc<IdentityState>,
    cache: Mutex<Option<(u32, Arc<CertifiedKey>)>>,
}

impl IdentityResolver {
    /// A resolver over `state`.
    pub fn new(state: Arc<IdentityState>) -> Self {
        Self {
            state,
            cache: Mutex::new(None),
        }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let current = self.state.current()?;
        let mut cache = self.cache.lock().ok()?;
        if let Some((generation, key)) = cache.as_ref() {
            if *generation == current.generation {
                return Some(key.clone());
            }
        }
        let key = Arc::new(
            crate::rustls_glue::certified_key(current.chain.clone(), &current.key_pkcs8).ok()?,
        );
        *cache = Some((current.generation, key.clone()));
        Some(key)
    }
}

impl ResolvesServerCert for IdentityResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for IdentityResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.state.current().is_some()
    }
}

/// Whether `leaf`'s issuer (by name and key identifier) is none of the issuers in `own`'s
/// chain.
fn from_an_unknown_issuer(leaf: &[u8], own: Option<&crate::sidecar::identity::Current>) -> bool {
    let (Ok(leaf), Some(own)) = (sigil_core::cert::Certificate::parse(leaf), own) else {
        return false;
    };
    !own.chain.iter().skip(1).any(|issuer| {
        sigil_core::cert::Certificate::parse(issuer).is_ok_and(|c| leaf.names_as_issuer(&c))
    })
}

/// Validates `end_entity` with `intermediates` (plus this sidecar's own issuer chain) against
/// the anchors in force, for `usage`, with `peer`.
fn validate(
    state: &IdentityState,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
    peer: PeerName<'_>,
) -> Result<(), rustls::Error> {
    let anchors = state
        .anchors()
        .ok_or_else(|| refused("no trust anchors loaded yet".to_owned()))?;
    let own = state.current();
    let mut ints: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
    if let Some(own) = own.as_ref() {
        // The peer may send only its leaf: offer the issuers this sidecar knows.
        for issuer in own.chain.iter().skip(1) {
            if !ints.contains(&issuer.as_slice()) {
                ints.push(issuer);
            }
        }
    }
    // No skew for peers: Sentry back-dates notBefore already, and an expired peer is expired.
    let policy = Policy {
        peer,
        ..Policy::new(
            usage,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs()),
        )
    };
    anchors
        .verify(end_entity.as_ref(), &ints, &policy, shared())
        .map(|_| ())
        .inspect_err(|_| {
            if intermediates.is_empty() && from_an_unknown_issuer(end_entity.as_ref(), own.as_deref())
                && state.renew_early()
            {
                tracing::info!("a peer sent only its leaf, from an issuer this sidecar does not hold (Sentry may have activated a new one): renewing now");
            }
        })
        .map_err(|e| {
            let found: Vec<String> = sigil_core::cert::Certificate::parse(end_entity.as_ref())
                .map(|c| c.spiffe_ids().map(|i| i.as_str().to_owned()).collect())
                .unwrap_or_default();
            refused(format!(
                "peer certificate refused: {e} (peer IDs {found:?})"
            ))
        })
}

/// Which callers the mTLS server accepts, beyond chaining to the anchors. The default accepts
/// any SPIFFE ID, as Dapr does: an ID in another trust domain that chains to the anchors is a
/// caller too. Both lists, when given, must accept the ID.
#[derive(Clone, Debug, Default)]
pub struct CallerPolicy {
    ids: Option<Vec<String>>,
    trust_domains: Option<Vec<String>>,
}

impl CallerPolicy {
    /// A policy from `--allow-spiffe-id` and `--allow-trust-domain` (an empty list: no
    /// restriction).
    ///
    /// # Errors
    ///
    /// Names the entry that is not a SPIFFE ID or a trust domain.
    pub fn new(ids: Vec<String>, trust_domains: Vec<String>) -> Result<Self, String> {
        for id in &ids {
            SpiffeId::parse(id).map_err(|e| format!("--allow-spiffe-id {id:?}: {e}"))?;
        }
        for td in &trust_domains {
            sigil_core::spiffe::TrustDomain::parse(td)
                .map_err(|e| format!("--allow-trust-domain {td:?}: {e}"))?;
        }
        Ok(Self {
            ids: (!ids.is_empty()).then_some(ids),
            trust_domains: (!trust_domains.is_empty()).then_some(trust_domains),
        })
    }

    /// Whether a caller with this (validated) ID is accepted.
    pub fn allows(&self, id: &SpiffeId<'_>) -> bool {
        let td = id.trust_domain();
        self.ids
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == id.as_str()))
            && self
                .trust_domains
                .as_ref()
                .is_none_or(|list| list.iter().any(|t| t == td.as_str()))
    }
}

/// Requires and checks client certificates (see the module doc).
#[derive(Debug)]
pub struct PeerClientCertVerifier {
    state: Arc<IdentityState>,
    callers: CallerPolicy,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PeerClientCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let allowed = |id: &SpiffeId<'_>| self.callers.allows(id);
        validate(
            &self.state,
            end_entity,
            intermediates,
            now,
            Usage::ClientAuth,
            PeerName::SpiffeMatching(&allowed),
        )
        .map(|()| ClientCertVerified::assertion())
    }

    crate::rustls_glue::handshake_signatures!(tls13_only);
}

/// Checks the called sidecar: `spiffe://<any td>/ns/<namespace>/<app_id>`.
#[derive(Debug)]
pub struct PeerServerCertVerifier {
    state: Arc<IdentityState>,
    namespace: String,
    app_id: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PeerServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = |id: &SpiffeId<'_>| {
            id.dapr()
                .is_some_and(|d| d.namespace() == self.namespace && d.app_id() == self.app_id)
        };
        validate(
            &self.state,
            end_entity,
            intermediates,
            now,
            Usage::ServerAuth,
            PeerName::SpiffeMatching(&expected),
        )
        .map_err(|e| {
            refused(format!(
                "{e}; expected spiffe://<any>/ns/{}/{}",
                self.namespace, self.app_id
            ))
        })
        .map(|()| ServerCertVerified::assertion())
    }

    crate::rustls_glue::handshake_signatures!(tls13_only);
}

/// The mTLS server configuration: TLS 1.3, client certificates required and checked, this
/// sidecar's current identity presented; `callers` says which verified callers are accepted.
///
/// # Errors
///
/// rustls's error if the provider refuses TLS 1.3 (it does not with ring).
pub fn server_config(
    state: Arc<IdentityState>,
    callers: CallerPolicy,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = crate::rustls_glue::provider();
    let verifier = PeerClientCertVerifier {
        state: state.clone(),
        callers,
        provider: provider.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(IdentityResolver::new(state)));
    // HTTP/2 between sidecars; HTTP/1.1 for devices (embedded-tls offers no ALPN).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Small records and no session tickets: embedded-tls peers parse one record at a time,
    // into a read buffer of the core's size for it.
    config.max_fragment_size = Some(sigil_core::link::MAX_TLS_RECORD);
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The mTLS client configuration for calling `app_id` in `namespace`.
///
/// # Errors
///
/// rustls's error if the provider refuses TLS 1.3.
pub fn client_config(
    state: Arc<IdentityState>,
    namespace: &str,
    app_id: &str,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = crate::rustls_glue::provider();
    let verifier = PeerServerCertVerifier {
        state: state.clone(),
        namespace: namespace.to_owned(),
        app_id: app_id.to_owned(),
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(IdentityResolver::new(state)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn caller_policy_by_id_and_trust_domain() {
        let id = |s| SpiffeId::parse(s).unwrap();
        let any = CallerPolicy::default();
        assert!(any.allows(&id("spiffe://evil.org/ns/attacker-ns/checkout")));

        let tds = CallerPolicy::new(vec![], vec!["public".into(), "corp.example".into()]).unwrap();
        assert!(tds.allows(&id("spiffe://public/ns/default/checkout")));
        assert!(tds.allows(&id("spiffe://corp.example/ns/x/y")));
        assert!(!tds.allows(&id("spiffe://evil.org/ns/default/checkout")));

        let both = CallerPolicy::new(
            vec!["spiffe://public/ns/default/checkout".into()],
            vec!["public".into()],
        )
        .unwrap();
        assert!(both.allows(&id("spiffe://public/ns/default/checkout")));
        assert!(!both.allows(&id("spiffe://public/ns/default/cart")));

        assert!(CallerPolicy::new(vec!["not an id".into()], vec![]).is_err());
        assert!(CallerPolicy::new(vec![], vec!["Bad Domain".into()]).is_err());
        assert!(CallerPolicy::new(vec![], vec!["public/ns".into()]).is_err());
    }
}
