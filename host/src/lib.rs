//! Sigil on a std host: the library behind the `sigil` binary (which only parses arguments).
//!
//! - [`sentry`] and [`ca`]: Sentry, the certificate authority (Dapr's gRPC API, validators,
//!   credentials, issuance, hot reload; the CA's rotation: [`ca::schedule`] when,
//!   [`ca::rotation`] the journal and its steps, [`sentry::rotate`] Sentry taking them).
//! - [`dapr`]: Dapr's conventions (Sentry's ID, workload IDs, name rules, the Configuration).
//! - [`trust`]: the one owner of trust anchors and the entry point of every certificate check.
//! - [`client`]: the Sentry client (transport; [`client::check_issued`] for tools).
//! - [`sidecar`]: identity driver, mutual TLS between sidecars, service invocation.
//! - [`relay`]: the bridge between a device's UART and Sentry and a sidecar.
//! - [`rustls_glue`]: rustls on the core's checks; [`signature`]: the core's
//!   signature-verifier trait on `ring` and its bounded cache; [`key`]: the P-256 and Ed25519 keys.
//! - [`pki`]: PEM files read into owned DER and written atomically; certificates described.
//! - [`net`]: the connection table and the small HTTP servers; [`logs`]: summarised logs.
//! - [`commands`]: what each `sigil` subcommand does; [`demo`]: `sigil demo`.

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

/// The SPIFFE Workload API's messages and service (`proto/spiffe/workload.proto`, no package).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod workload_pb {
    tonic::include_proto!("_");
}
