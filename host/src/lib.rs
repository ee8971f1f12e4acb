//! Sigil on a std host: the library behind the `sigil` binary.
//!
//! - [`signature::RingSignatureVerifier`]: the core's signature-verifier trait on `ring`; and
//!   [`signature::CachingSignatureVerifier`], the bounded cache of verified signatures the TLS verifiers
//!   share ([`signature::shared`]).
//! - [`pki`]: reading PEM files into owned DER, and describing certificates for people.
//! - [`commands`]: what each `sigil` subcommand does; the binary only parses arguments.

pub mod ca;
pub mod client;
pub mod commands;
pub mod dapr;
pub mod demo;
pub mod key;
pub mod logs;
pub mod net;
pub mod pki;
pub mod relay;
pub mod rustls_glue;
pub mod sentry;
pub mod sidecar;
pub mod signature;
pub mod trust;

/// The gRPC messages and services of Dapr's Sentry API, generated from `proto/`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("dapr.proto.sentry.v1");
}
