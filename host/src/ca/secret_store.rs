//! Sentry's credentials in Kubernetes, where Dapr keeps them: the Secret `dapr-trust-bundle`
//! (keys `ca.crt`, `issuer.crt`, `issuer.key`) in Sentry's namespace, and the ConfigMap
//! `dapr-trust-bundle` (key `ca.crt`) that sidecars mount as their trust anchors.
//!
//! The guarantees of the file store ([`super::store`]), by the API server's means:
//!
//! - **Never generates over a user's set**: a Secret with all three keys is loaded and
//!   validated ([`Credentials::from_pem`]); one with none (Dapr's Helm chart creates it empty)
//!   or no Secret at all gets a generated set; one with some of the keys is refused, naming them.
//! - **One root for racing replicas**: the generated set is written with the API server's
//!   optimistic concurrency — `create` for a missing Secret (`AlreadyExists`: another replica
//!   won), `replace` at the resourceVersion read for an empty one (`Conflict`: likewise) — and a
//!   replica that lost reads the winner's set. Nothing is ever overwritten.
//! - **The ConfigMap follows the Secret**: after every load its `ca.crt` is made equal to the
//!   Secret's (created if absent, replaced at the version read). A ConfigMap that differed is
//!   reported (log, `sigil_sentry_trust_bundle_mismatch_total`) and corrected; Sentry never
//!   regenerates because of it (Dapr does, dapr/dapr #9563).
//! - **Hot reload** ([`SecretStore::watch`]): a watch on the Secret (kube-runtime's watcher:
//!   re-list when the resourceVersion has expired, with backoff on errors) plus a periodic
//!   re-read ([`RESYNC`]); a changed set is validated exactly as at start and swapped in, a set
//!   that does not validate is refused with the reason and the old one keeps serving, and a
//!   deleted Secret changes nothing (it is reported; Sentry does not recreate it over a user's
//!   intent).
//! - **Automatic rotation** ([`SecretStore::run_due`]) of a set Sentry generated (marked
//!   [`AUTO_KEY`]): the journal's slots are keys beside Dapr's three (`sigil.next.*` for the
//!   prepared pair, `sigil.old.*` for the retiring one), each step ([`super::journal`]) is one
//!   replace at the resourceVersion read (all or nothing; of racing replicas one wins), and the
//!   ConfigMap follows.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube_runtime::{watcher, WatchStreamExt as _};
use zeroize::Zeroizing;

use super::journal::{self, JwtSlots, Prepared, Retiring, Set};
use super::rotation::{Automatic, CrashPoint, RotationError, StepOptions, Tick};
use super::schedule::Step;
use super::store::Origin;
use super::{Credentials, CredentialsError, Generation};

/// The name of the Secret and of the ConfigMap, as Dapr names them.
pub const TRUST_BUNDLE: &str = "dapr-trust-bundle";
/// The Secret's and the ConfigMap's key for the trust anchors.
pub const CA_KEY: &str = "ca.crt";
/// The Secret's key for the issuer chain.
pub const ISSUER_CERT_KEY: &str = "issuer.crt";
/// The Secret's key for the issuer's private key.
pub const ISSUER_KEY_KEY: &str = "issuer.key";
/// How often the Secret is read again even when the watch reports nothing.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How many times a lost race is re-read before giving up (each read follows a write by
/// another replica, so one is enough unless the Secret is being rewritten continuously).
const RACE_RETRIES: usize = 5;

/// Why the Secret store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStoreError {
    /// The API server refused or could not be reached.
    #[error("{what} {namespace}/{TRUST_BUNDLE}: {source}")]
    Api {
        /// What was being done ("reading the Secret", …).
        what: &'static str,
        /// The namespace.
        namespace: String,
        /// kube's error.
        source: kube::Error,
    },
    /// Some of the three keys are there and some are not: nothing is generated over them.
    #[error(
        "Secret {namespace}/{TRUST_BUNDLE} is incomplete: has {present:?} but not {missing:?}; \
         refusing to generate over it (provide all three keys, or none to let Sentry generate)"
    )]
    Partial {
        /// The namespace.
        namespace: String,
        /// The keys found.
        present: Vec<&'static str>,
        /// The keys missing.
        missing: Vec<&'static str>,
    },
    /// The set in the Secret does not validate.
    #[error("invalid credentials in Secret {namespace}/{TRUST_BUNDLE}: {source}")]
    Invalid {
        /// The namespace.
        namespace: String,
        /// What is wrong.
        source: CredentialsError,
    },
    /// A rotation step was refused or failed.
    #[error("rotating the credentials in Secret {namespace}/{TRUST_BUNDLE}: {source}")]
    Rotation {
        /// The namespace.
        namespace: String,
        /// Why.
        source: RotationError,
    },
    /// The Secret holds no credential set (missing or emptied): nothing to rotate or load.
    #[error("Secret {namespace}/{TRUST_BUNDLE} holds no credentials")]
    NoSet {
        /// The namespace.
        namespace: String,
    },
    /// Another writer kept changing the Secret while this replica tried to settle on it.
    #[error("Secret {namespace}/{TRUST_BUNDLE} kept changing under {RACE_RETRIES} attempts")]
    Contended {
        /// The namespace.
        namespace: String,
    },
    /// The JWT key or its set in the Secret is unusable (nothing is written over it).
    #[error("the JWT key in Secret {namespace}/{TRUST_BUNDLE}: {source}")]
    Jwt {
        /// The namespace.
        namespace: String,
        /// What is wrong.
        source: super::jwt::JwtKeyError,
    },
}

/// The Secret's key for Sentry's JWT signing key (Dapr's name).
pub const JWT_KEY_KEY: &str = "jwt.key";
/// The Secret's and the ConfigMap's key for the JWT key set (Dapr's name).
pub const JWKS_KEY: &str = "jwks.json";

/// What [`SecretStore::publish_anchors`] found in the ConfigMap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// It already held the anchors.
    InStep,
    /// There was none (or it had no `ca.crt`): created.
    Created,
    /// It held other anchors than the Secret: reported and corrected.
    Corrected,
}

/// The Secret's keys for the rotation journal's slots (beside Dapr's three, which hold the
/// active pair): the prepared pair under `sigil.next.`, the retiring one under `sigil.old.`,
/// and the marker of a set Sentry generated (see [`super::journal`]).
const NEXT_PREFIX: &str = "sigil.next.";
const OLD_PREFIX: &str = "sigil.old.";
/// The automatic-rotation marker's key.
pub const AUTO_KEY: &str = "sigil.auto";
const SINCE: &str = "since";
const PREPARED_FOR: &str = "prepared-for.crt";
/// The marker of a JWT key Sigil generated (its thumbprint; see [`journal::JwtSlots`]).
pub const JWT_AUTO_KEY: &str = "sigil.jwt.auto";
/// The prepared JWT key (`sigil.next.` + this) and the outgoing one's kid (`sigil.old.` + this).
const JWT_NEXT: &str = "jwt.key";
const JWT_OLD_KID: &str = "jwt.kid";
/// The holders' wait of a JWT slot (`sigil.next.` / `sigil.old.` + this; seconds).
const JWT_WAIT: &str = "jwt.wait";

/// What the Secret holds.
enum Contents {
    /// No Secret.
    Missing,
    /// A Secret with none of the keys (replaced at its resourceVersion, its labels,
    /// annotations and other keys kept).
    Empty(Box<Secret>),
    /// All three keys, with the journal's slots.
    Set(Box<Set>),
}

/// Sentry's credentials in a Secret and the ConfigMap that publishes its trust anchors.
/// Clones share the API clients and what was loaded (the watch and the rotation task each
/// hold one).
#[derive(Clone)]
pub struct SecretStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    namespace: String,
    /// The fingerprint of the set loaded or generated last, so the watch's first listing of
    /// the same Secret is not taken for a change.
    loaded: std::sync::Arc<std::sync::Mutex<Option<Fingerprint>>>,
}

/// SHA-256 over the three PEM texts (length-prefixed): which set, without keeping the key.
type Fingerprint = [u8; 32];

/// Which active set (the three keys Sentry serves from), without keeping the key.
fn fingerprint(set: &Set) -> Fingerprint {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [set.ca.as_str(), set.issuer.as_str(), set.key.as_str()] {
        ctx.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .filter(|v| !v.0.is_empty())
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// Reads the Secret's keys: all three, none, or an error naming what is there.
fn contents_of(secret: Secret, namespace: &str) -> Result<Contents, SecretStoreError> {
    let data = secret.data.unwrap_or_default();
    let keys = [CA_KEY, ISSUER_CERT_KEY, ISSUER_KEY_KEY];
    let values = keys.map(|k| text(&data, k));
    match values {
        [Some(ca), Some(issuer), Some(key)] => Ok(Contents::Set(Box::new(Set {
            ca,
            issuer,
            key: Zeroizing::new(key),
            auto: text(&data, AUTO_KEY),
            next: prepared_of(&data),
            old: retiring_of(&data),
            jwt: jwt_slots_of(&data),
        }))),
        [None, None, None] => Ok(Contents::Empty(Box::new(Secret {
            data: Some(data),
            ..secret
        }))),
        _ => {
            let (present, missing): (Vec<_>, Vec<_>) =
                keys.iter().zip(&values).partition(|(_, v)| v.is_some());
            Err(SecretStoreError::Partial {
                namespace: namespace.to_owned(),
                present: present.into_iter().map(|(k, _)| *k).collect(),
                missing: missing.into_iter().map(|(k, _)| *k).collect(),
            })
        }
    }
}

/// The prepared pair under `sigil.next.` (all five keys, or none counts).
fn prepared_of(data: &BTreeMap<String, ByteString>) -> Option<Prepared> {
    let get = |k: &str| text(data, &format!("{NEXT_PREFIX}{k}"));
    Some(Prepared {
        ca: get(CA_KEY)?,
        issuer: get(ISSUER_CERT_KEY)?,
        key: Zeroizing::new(get(ISSUER_KEY_KEY)?),
        prepared_for: get(PREPARED_FOR)?,
        since: journal::parse_stamp(&get(SINCE)?)?,
    })
}

/// The retiring pair under `sigil.old.` (all three keys, or none counts).
fn retiring_of(data: &BTreeMap<String, ByteString>) -> Option<Retiring> {
    let get = |k: &str| text(data, &format!("{OLD_PREFIX}{k}"));
    Some(Retiring {
        ca: get(CA_KEY)?,
        issuer: get(ISSUER_CERT_KEY)?,
        since: journal::parse_stamp(&get(SINCE)?)?,
    })
}

/// The JWT key and set (Dapr's `jwt.key`, `jwks.json`) with the journal's JWT keys, when the
/// Secret holds both.
fn jwt_slots_of(data: &BTreeMap<String, ByteString>) -> Option<JwtSlots> {
    Some(JwtSlots {
        key: Zeroizing::new(text(data, JWT_KEY_KEY)?),
        jwks: text(data, JWKS_KEY)?,
        auto: text(data, JWT_AUTO_KEY),
        next: text(data, &format!("{NEXT_PREFIX}{JWT_NEXT}")).map(Zeroizing::new),
        old_kid: text(data, &format!("{OLD_PREFIX}{JWT_OLD_KID}")),
        next_wait: wait_of(data, NEXT_PREFIX),
        old_wait: wait_of(data, OLD_PREFIX),
    })
}

fn wait_of(data: &BTreeMap<String, ByteString>, prefix: &str) -> Option<Duration> {
    journal::parse_wait(&text(data, &format!("{prefix}{JWT_WAIT}"))?)
}

/// A Secret key of the JWT key's journal.
fn jwt_journal_key(k: &str) -> bool {
    k == JWT_AUTO_KEY
        || [JWT_NEXT, JWT_OLD_KID, JWT_WAIT]
            .iter()
            .any(|j| k == format!("{NEXT_PREFIX}{j}") || k == format!("{OLD_PREFIX}{j}"))
}

/// `data` holding `set`: Dapr's three keys and the journal's, other keys kept as they are.
fn data_of(set: &Set, mut data: BTreeMap<String, ByteString>) -> BTreeMap<String, ByteString> {
    // The JWT key's journal is rewritten with the key; without it (no set read: a Secret
    // whose `jwks.json` is missing, say), its keys stay as they are.
    data.retain(|k, _| {
        if jwt_journal_key(k) {
            return set.jwt.is_none();
        }
        !k.starts_with(NEXT_PREFIX) && !k.starts_with(OLD_PREFIX) && k != AUTO_KEY
    });
    let mut put = |k: String, v: &str| {
        data.insert(k, ByteString(v.as_bytes().to_vec()));
    };
    put(CA_KEY.to_owned(), &set.ca);
    put(ISSUER_CERT_KEY.to_owned(), &set.issuer);
    put(ISSUER_KEY_KEY.to_owned(), &set.key);
    if let Some(auto) = &set.auto {
        put(AUTO_KEY.to_owned(), auto);
    }
    if let Some(p) = &set.next {
        put(format!("{NEXT_PREFIX}{CA_KEY}"), &p.ca);
        put(format!("{NEXT_PREFIX}{ISSUER_CERT_KEY}"), &p.issuer);
        put(format!("{NEXT_PREFIX}{ISSUER_KEY_KEY}"), &p.key);
        put(format!("{NEXT_PREFIX}{PREPARED_FOR}"), &p.prepared_for);
        put(
            format!("{NEXT_PREFIX}{SINCE}"),
            &journal::stamp_text(p.since),
        );
    }
    if let Some(j) = &set.jwt {
        put(JWT_KEY_KEY.to_owned(), &j.key);
        put(JWKS_KEY.to_owned(), &j.jwks);
        if let Some(auto) = &j.auto {
            put(JWT_AUTO_KEY.to_owned(), auto);
        }
        if let Some(next) = &j.next {
            put(format!("{NEXT_PREFIX}{JWT_NEXT}"), next);
        }
        if let Some(kid) = &j.old_kid {
            put(format!("{OLD_PREFIX}{JWT_OLD_KID}"), kid);
        }
        for (prefix, wait) in [(NEXT_PREFIX, j.next_wait), (OLD_PREFIX, j.old_wait)] {
            if let Some(w) = wait {
                put(format!("{prefix}{JWT_WAIT}"), &journal::wait_text(w));
            }
        }
    }
    if let Some(o) = &set.old {
        put(format!("{OLD_PREFIX}{CA_KEY}"), &o.ca);
        put(format!("{OLD_PREFIX}{ISSUER_CERT_KEY}"), &o.issuer);
        put(
            format!("{OLD_PREFIX}{SINCE}"),
            &journal::stamp_text(o.since),
        );
    }
    data
}

fn secret_of(set: &Set, resource_version: Option<String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(TRUST_BUNDLE.to_owned()),
            resource_version,
            ..ObjectMeta::default()
        },
        data: Some(data_of(set, BTreeMap::new())),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

impl SecretStore {
    /// The store in `namespace` through `client`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            loaded: std::sync::Arc::new(std::sync::Mutex::new(None)),
        }
    }

    fn api(&self, what: &'static str) -> impl FnOnce(kube::Error) -> SecretStoreError + '_ {
        move |source| SecretStoreError::Api {
            what,
            namespace: self.namespace.clone(),
            source,
        }
    }

    fn remember(&self, set: &Set) {
        *self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fingerprint(set));
    }

    async fn read(&self) -> Result<Contents, SecretStoreError> {
        match self
            .secrets
            .get_opt(TRUST_BUNDLE)
            .await
            .map_err(self.api("reading the Secret"))?
        {
            None => Ok(Contents::Missing),
            Some(s) => contents_of(s, &self.namespace),
        }
    }

    fn validate(&self, set: &Set, probe_id: &str) -> Result<Credentials, SecretStoreError> {
        Credentials::from_pem(&set.ca, &set.issuer, &set.key, SystemTime::now(), probe_id).map_err(
            |source| SecretStoreError::Invalid {
                namespace: self.namespace.clone(),
                source,
            },
        )
    }

    /// Loads the set in the Secret, or generates one and writes it if the Secret is missing or
    /// empty (see the module doc). Returns the credentials and where they came from; the
    /// caller then brings the ConfigMap in step ([`SecretStore::publish_anchors`]).
    ///
    /// # Errors
    ///
    /// [`SecretStoreError`]; nothing is written over a set that is there.
    pub async fn load_or_generate(
        &self,
        trust_domain: &str,
        sentry_id: &str,
        skew: Duration,
        generation: Generation,
    ) -> Result<(Credentials, Origin), SecretStoreError> {
        for _ in 0..RACE_RETRIES {
            let empty = match self.read().await? {
                Contents::Set(set) => {
                    let creds = self.validate(&set, sentry_id)?;
                    self.remember(&set);
                    return Ok((creds, Origin::Loaded));
                }
                Contents::Missing => None,
                Contents::Empty(secret) => Some(secret),
            };
            let (creds, pem) = Credentials::generate_with(
                trust_domain,
                sentry_id,
                SystemTime::now(),
                skew,
                generation,
            )
            .map_err(|source| SecretStoreError::Invalid {
                namespace: self.namespace.clone(),
                source,
            })?;
            // Generated by Sentry: marked, so Sentry rotates it (see [`SecretStore::run_due`]).
            let set = Set {
                auto: Some(super::store::auto_marker(&pem.issuer)),
                ca: pem.ca,
                issuer: pem.issuer,
                key: pem.key,
                next: None,
                old: None,
                jwt: None,
            };
            let written = match empty {
                None => self
                    .secrets
                    .create(&PostParams::default(), &secret_of(&set, None))
                    .await
                    .map(|_| ()),
                Some(secret) => {
                    // At the version read: a replica that wrote first makes this a Conflict.
                    let mut filled = *secret;
                    filled.data = Some(data_of(&set, filled.data.unwrap_or_default()));
                    self.secrets
                        .replace(TRUST_BUNDLE, &PostParams::default(), &filled)
                        .await
                        .map(|_| ())
                }
            };
            match written {
                Ok(()) => {
                    self.remember(&set);
                    return Ok((creds, Origin::Generated));
                }
                // Another replica wrote first: read its set on the next turn.
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                    tracing::info!(
                        namespace = %self.namespace,
                        "another Sentry created the credentials first; loading its set"
                    );
                }
                Err(e) => return Err(self.api("writing the generated Secret")(e)),
            }
        }
        Err(SecretStoreError::Contended {
            namespace: self.namespace.clone(),
        })
    }

    /// The journal in the Secret now (`None` if it holds no set).
    ///
    /// # Errors
    ///
    /// [`SecretStoreError`]: unreadable or a partial set.
    pub async fn journal(&self) -> Result<Option<super::rotation::Journal>, SecretStoreError> {
        match self.read().await? {
            Contents::Set(set) => Ok(Some(set.journal())),
            Contents::Missing | Contents::Empty(_) => Ok(None),
        }
    }

    /// Reads and validates the set in the Secret now.
    ///
    /// # Errors
    ///
    /// [`SecretStoreError`]: unreadable, no set, a partial or an invalid one.
    pub async fn load(&self, probe_id: &str) -> Result<Credentials, SecretStoreError> {
        match self.read().await? {
            Contents::Set(set) => self.validate(&set, probe_id),
            Contents::Missing | Contents::Empty(_) => Err(SecretStoreError::NoSet {
                namespace: self.namespace.clone(),
            }),
        }
    }

    /// Sentry's automatic rotation in the Secret, once: reads it and, for a set Sentry
    /// generated (marked `sigil.auto`), takes the step of the journal that is due (at most
    /// one; [`journal::Set::take`]) as **one replace at the resourceVersion read**: the step is
    /// all written or not at all, and a replica that raced another for it gets `Conflict`,
    /// reads again and finds it taken. Then the ConfigMap follows (a kill in between is caught
    /// up by every replica's watch and at the next start). A crash test
    /// (`opts.crash` = the step's `…:committed` / `retire:published` point) stops right after
    /// the Secret was written.
    ///
    /// # Errors
    ///
    /// [`SecretStoreError`]: the API server's, a step refused or failing, no set.
    pub async fn run_due(
        &self,
        opts: &StepOptions,
        probe_id: &str,
        clock: impl Fn() -> SystemTime,
    ) -> Result<Tick, SecretStoreError> {
        let rotation = |source| SecretStoreError::Rotation {
            namespace: self.namespace.clone(),
            source,
        };
        for _ in 0..RACE_RETRIES {
            let secret = self
                .secrets
                .get_opt(TRUST_BUNDLE)
                .await
                .map_err(self.api("reading the Secret"))?
                .ok_or_else(|| SecretStoreError::NoSet {
                    namespace: self.namespace.clone(),
                })?;
            let Contents::Set(set) = contents_of(secret.clone(), &self.namespace)? else {
                return Err(SecretStoreError::NoSet {
                    namespace: self.namespace.clone(),
                });
            };
            let now = clock();
            let journal = set.journal();
            if journal.automatic != Automatic::Yes {
                return Ok(Tick {
                    done: None,
                    journal,
                    next: None,
                });
            }
            // Holders mount the ConfigMap: a prepared root counts as published only once it is
            // there. If the ConfigMap does not hold it (the write after the prepare failed or
            // was killed, and no replica's watch caught up), it is published now and the
            // stamp taken again, as the file store's recovery does.
            let stale = match set.prepared() {
                Some(p) => !self.config_map_holds(&journal::ders(&p.ca)).await?,
                None => false,
            };
            let (after, step) = if stale {
                let mut after = (*set).clone();
                if let Some(p) = after.next.as_mut() {
                    p.since = journal::whole(now);
                }
                let creds = self.validate(&set, probe_id)?;
                self.publish_anchors(creds.anchors_pem()).await?;
                tracing::warn!(namespace = %self.namespace, "the prepared root was not in the trust-bundle ConfigMap: published, and its activation counted from now");
                (after, None)
            } else {
                match journal.next(&opts.policy) {
                    Some((step, at)) if at <= now => {
                        (set.take(step, opts, now).map_err(rotation)?, Some(step))
                    }
                    next => {
                        return Ok(Tick {
                            done: None,
                            journal,
                            next,
                        })
                    }
                }
            };
            // Validated before it is written: a step whose result Sentry would refuse to
            // load is not taken.
            let creds = self.validate(&after, probe_id)?;
            let mut written = secret;
            written.data = Some(data_of(&after, written.data.unwrap_or_default()));
            match self
                .secrets
                .replace(TRUST_BUNDLE, &PostParams::default(), &written)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    tracing::info!(?step, "the credentials Secret changed under the rotation step (another Sentry took it?); reading it again");
                    continue;
                }
                Err(e) => return Err(self.api("writing the rotation step to the Secret")(e)),
            }
            let point = match step {
                Some(Step::Prepare) => Some(CrashPoint::PrepareCommitted),
                Some(Step::Activate) => Some(CrashPoint::ActivateCommitted),
                Some(Step::Retire) => Some(CrashPoint::RetirePublished),
                None => None,
            };
            if let Some(point) = point.filter(|p| opts.crash == Some(*p)) {
                return Err(rotation(RotationError::Interrupted(point)));
            }
            // The ConfigMap follows, in the encoding Sentry serves.
            if let Err(e) = self.publish_anchors(creds.anchors_pem()).await {
                tracing::warn!(error = %e, "publishing the rotated trust bundle in the ConfigMap; every Sentry's watch retries, and the next look restamps a prepared root it lacks");
            }
            // And the JWT key set (every Sentry's JWT reload publishes it again at each look).
            if let Some(j) = after.jwt.as_ref().filter(|_| step.is_some()) {
                if let Err(e) = self.publish_jwks(&j.jwks).await {
                    tracing::warn!(error = %e, "publishing the rotated JWT key set in the ConfigMap (retried at the next look)");
                }
            }
            let journal = after.journal();
            let next = journal.next(&opts.policy);
            let done = step.map(|step| {
                let message = journal::done(
                    step,
                    opts,
                    now,
                    &format!("Secret {}/{TRUST_BUNDLE}", self.namespace),
                );
                (step, message)
            });
            return Ok(Tick {
                done,
                journal,
                next,
            });
        }
        Err(SecretStoreError::Contended {
            namespace: self.namespace.clone(),
        })
    }

    /// Whether the ConfigMap's `ca.crt` holds every root of `roots`.
    async fn config_map_holds(&self, roots: &[Vec<u8>]) -> Result<bool, SecretStoreError> {
        let held = self
            .config_maps
            .get_opt(TRUST_BUNDLE)
            .await
            .map_err(self.api("reading the ConfigMap"))?
            .and_then(|c| c.data)
            .and_then(|mut d| d.remove(CA_KEY))
            .map(|pem| journal::ders(&pem))
            .unwrap_or_default();
        Ok(roots.iter().all(|r| held.contains(r)))
    }

    /// Loads Sentry's JWT signing key and its set from the Secret (Dapr's keys `jwt.key` and
    /// `jwks.json`, beside the CA's; the Secret exists, [`SecretStore::load_or_generate`] ran
    /// first), making what is missing ([`super::jwt::plan`]) in one replace at the
    /// resourceVersion read (replicas racing: one wins, the others re-read its key), then
    /// publishes `jwks.json` in the ConfigMap, as Dapr does. Returns the keys, whether a key
    /// was generated, and the fingerprint of the key and set they came from
    /// ([`super::jwt::text_fingerprint`], the reload's baseline).
    ///
    /// # Errors
    ///
    /// [`SecretStoreError`]: the API, an unusable key or set (nothing written over it).
    pub async fn jwt_load_or_generate(
        &self,
        algorithm: super::jwt::JwtAlgorithm,
        key_id: Option<&str>,
    ) -> Result<(super::jwt::JwtKeys, bool, Vec<u8>), SecretStoreError> {
        let names = self.jwt_names();
        for _ in 0..RACE_RETRIES {
            let secret = self
                .secrets
                .get_opt(TRUST_BUNDLE)
                .await
                .map_err(self.api("reading the Secret"))?
                .ok_or_else(|| SecretStoreError::NoSet {
                    namespace: self.namespace.clone(),
                })?;
            let data = secret.data.clone().unwrap_or_default();
            let held_key = text(&data, JWT_KEY_KEY).map(Zeroizing::new);
            let held_set = text(&data, JWKS_KEY);
            let planned = super::jwt::plan(
                held_key.clone(),
                held_set.as_deref(),
                &names,
                algorithm,
                key_id,
            )
            .map_err(|source| SecretStoreError::Jwt {
                namespace: self.namespace.clone(),
                source,
            })?;
            let fingerprint = super::jwt::text_fingerprint(
                planned
                    .write_key
                    .as_deref()
                    .or(held_key.as_deref())
                    .map(String::as_str),
                planned.write_set.as_deref().or(held_set.as_deref()),
            );
            if planned.write_key.is_none() && planned.write_set.is_none() {
                self.publish_jwks(&planned.keys.jwks_json()).await?;
                return Ok((planned.keys, false, fingerprint));
            }
            // Key and set in one write, at the version read.
            let mut updated = secret;
            let d = updated.data.get_or_insert_with(BTreeMap::new);
            if let Some(k) = &planned.write_key {
                d.insert(JWT_KEY_KEY.to_owned(), ByteString(k.as_bytes().to_vec()));
            }
            if let Some(set) = &planned.write_set {
                d.insert(JWKS_KEY.to_owned(), ByteString(set.as_bytes().to_vec()));
            }
            // A generated key is marked for the rotation journal (see [`JwtSlots`]).
            if let Some(thumb) = planned
                .write_key
                .as_deref()
                .and_then(|k| super::jwt::key_thumbprint(k))
            {
                d.insert(JWT_AUTO_KEY.to_owned(), ByteString(thumb.into_bytes()));
            }
            match self
                .secrets
                .replace(TRUST_BUNDLE, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {
                    self.publish_jwks(&planned.keys.jwks_json()).await?;
                    return Ok((planned.keys, planned.generated, fingerprint));
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    tracing::info!(
                        namespace = %self.namespace,
                        "another Sentry wrote the Secret first; reading its JWT key"
                    );
                }
                Err(e) => return Err(self.api("writing the JWT key to the Secret")(e)),
            }
        }
        Err(SecretStoreError::Contended {
            namespace: self.namespace.clone(),
        })
    }

    /// The Secret's JWT key and set named as errors name them.
    pub fn jwt_names(&self) -> super::jwt::JwtKeyPaths {
        super::jwt::JwtKeyPaths {
            key: format!("Secret {}/{TRUST_BUNDLE} key {JWT_KEY_KEY}", self.namespace).into(),
            jwks: format!("Secret {}/{TRUST_BUNDLE} key {JWKS_KEY}", self.namespace).into(),
        }
    }

    /// The Secret's JWT key and set as they are now (for the reload's comparison).
    ///
    /// # Errors
    ///
    /// [`SecretStoreError::Api`].
    pub async fn jwt_texts(
        &self,
    ) -> Result<(Option<Zeroizing<String>>, Option<String>), SecretStoreError> {
        let data = self
            .secrets
            .get_opt(TRUST_BUNDLE)
            .await
            .map_err(self.api("reading the Secret"))?
            .and_then(|s| s.data)
            .unwrap_or_default();
        Ok((
            text(&data, JWT_KEY_KEY).map(Zeroizing::new),
            text(&data, JWKS_KEY),
        ))
    }

    /// Makes the ConfigMap's `jwks.json` equal to `set` (relying parties and sidecars that
    /// mount the ConfigMap read Sentry's JWT keys there).
    ///
    /// # Errors
    ///
    /// [`SecretStoreError::Api`].
    pub async fn publish_jwks(&self, set: &str) -> Result<(), SecretStoreError> {
        self.publish(JWKS_KEY, set).await.map(|_| ())
    }

    /// Makes the ConfigMap's `ca.crt` equal to `ca_pem`, and says what it found.
    ///
    /// # Errors
    ///
    /// [`SecretStoreError::Api`] if it could not be read or written (a concurrent writer's
    /// `Conflict` is retried from a fresh read).
    pub async fn publish_anchors(&self, ca_pem: &str) -> Result<Published, SecretStoreError> {
        self.publish(CA_KEY, ca_pem).await
    }

    /// Makes the ConfigMap's `key` equal to `value` (its other keys kept), and says what it
    /// found; a concurrent writer's `Conflict` is retried from a fresh read.
    async fn publish(&self, key: &str, value: &str) -> Result<Published, SecretStoreError> {
        for _ in 0..RACE_RETRIES {
            let current = self
                .config_maps
                .get_opt(TRUST_BUNDLE)
                .await
                .map_err(self.api("reading the ConfigMap"))?;
            let held = current
                .as_ref()
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.get(key));
            let found = match held {
                Some(h) if h == value => return Ok(Published::InStep),
                Some(_) => Published::Corrected,
                None => Published::Created,
            };
            let mut map = current.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(TRUST_BUNDLE.to_owned()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            });
            map.data
                .get_or_insert_with(BTreeMap::new)
                .insert(key.to_owned(), value.to_owned());
            let written = if current.is_some() {
                self.config_maps
                    .replace(TRUST_BUNDLE, &PostParams::default(), &map)
                    .await
            } else {
                self.config_maps.create(&PostParams::default(), &map).await
            };
            match written {
                Ok(_) => return Ok(found),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {}
                Err(e) => return Err(self.api("writing the ConfigMap")(e)),
            }
        }
        Err(SecretStoreError::Contended {
            namespace: self.namespace.clone(),
        })
    }

    /// Watches the Secret and hands each changed set that validates to `swap` (with its
    /// anchors' PEM, after the ConfigMap has been brought in step), until `stopped` resolves;
    /// `refused` hears of each set that does not validate. See the module doc.
    pub async fn watch(
        self,
        probe_id: String,
        initial_ca: String,
        swap: impl Fn(Credentials) + Send,
        refused: impl Fn(&SecretStoreError) + Send,
        mismatch: impl Fn() + Send,
        stopped: impl Future<Output = ()>,
    ) {
        tokio::pin!(stopped);
        let config = watcher::Config::default().fields(&format!("metadata.name={TRUST_BUNDLE}"));
        // With kube-runtime's backoff: an API server that is down is retried with growing waits,
        // not in a loop.
        let events = watcher(self.secrets.clone(), config).default_backoff();
        tokio::pin!(events);
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        // The last set applied (or refused): an unchanged Secret is not judged again.
        let mut last = *self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut published = initial_ca;
        loop {
            let (seen, resynced) = tokio::select! {
                () = &mut stopped => return,
                event = events.next() => (match event {
                    Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => {
                        Some(contents_of(s, &self.namespace))
                    }
                    Some(Ok(watcher::Event::Delete(_))) => {
                        tracing::warn!(
                            namespace = %self.namespace,
                            "the credentials Secret was deleted; the loaded set keeps serving"
                        );
                        None
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watching the credentials Secret; it retries");
                        None
                    }
                    None => return,
                }, false),
                _ = resync.tick() => (match self.read().await {
                    Ok(c) => Some(Ok(c)),
                    Err(e) => {
                        tracing::warn!(error = %e, "re-reading the credentials Secret");
                        None
                    }
                }, true),
            };
            let set = match seen {
                Some(Ok(Contents::Set(set))) => set,
                Some(Ok(Contents::Missing | Contents::Empty(_))) | None => continue,
                Some(Err(e)) => {
                    refused(&e);
                    continue;
                }
            };
            let fingerprint = fingerprint(&set);
            if last == Some(fingerprint) {
                // Unchanged: only the periodic pass checks the ConfigMap again (someone may
                // have edited it).
                if !resynced {
                    continue;
                }
            } else {
                last = Some(fingerprint);
                match self.validate(&set, &probe_id) {
                    Ok(creds) => {
                        // Published as Sentry serves them (one encoding, whatever the
                        // Secret's line endings).
                        creds.anchors_pem().clone_into(&mut published);
                        swap(creds);
                    }
                    Err(e) => {
                        refused(&e);
                        continue;
                    }
                }
            }
            match self.publish_anchors(&published).await {
                Ok(Published::Corrected) => mismatch(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "keeping the ConfigMap in step"),
            }
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// A kube client for `api_server` (an `https://` URL), trusting the PEM roots `ca_pem` for its
/// certificate and authenticating with the bearer token in `token_file` (re-read when it
/// changes, as projected tokens rotate).
///
/// # Errors
///
/// A description of what is unusable.
pub fn client(
    api_server: &str,
    ca_pem: Option<&str>,
    token_file: &std::path::Path,
) -> Result<kube::Client, String> {
    let url: http::Uri = api_server
        .parse()
        .map_err(|e| format!("API server URL {api_server:?}: {e}"))?;
    let mut config = kube::Config::new(url);
    if let Some(pem) = ca_pem {
        let roots = crate::pki::pem_certificates(pem.as_bytes())
            .map_err(|e| format!("API server CA bundle: {e}"))?;
        config.root_cert = Some(roots);
    }
    // kube sends the file's bytes as they are (client-go trims them): a token written with a
    // trailing newline would fail every call, so it is refused here, by name.
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("token file {}: {e}", token_file.display()))?;
    if token.trim() != token || token.is_empty() {
        return Err(format!(
            "token file {}: empty, or has whitespace around the token (a trailing newline?); \
             write the token alone",
            token_file.display()
        ));
    }
    config.auth_info.token_file = Some(token_file.display().to_string());
    // No read timeout: it would cut the Secret's watch; single calls carry their own.
    config.connect_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::UNIX_EPOCH;

    use super::*;

    fn secret(keys: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                keys.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn a_secret_holds_all_three_keys_none_or_is_refused_naming_them() {
        let all = [
            (CA_KEY, "ca"),
            (ISSUER_CERT_KEY, "issuer"),
            (ISSUER_KEY_KEY, "key"),
        ];
        match contents_of(secret(&all), "ns").unwrap() {
            Contents::Set(s) => assert_eq!((s.ca.as_str(), s.issuer.as_str()), ("ca", "issuer")),
            _ => panic!("a complete set"),
        }
        // Dapr's Helm chart creates it empty; an empty value counts as absent.
        for empty in [secret(&[]), secret(&[(CA_KEY, "")]), Secret::default()] {
            assert!(matches!(
                contents_of(empty, "ns").unwrap(),
                Contents::Empty(_)
            ));
        }
        assert!(matches!(
            contents_of(secret(&[]), "ns").unwrap(),
            Contents::Empty(s) if s.metadata.resource_version.as_deref() == Some("7")
        ));
        let Err(e) = contents_of(secret(&all[..2]), "dapr-system") else {
            panic!("a partial set accepted");
        };
        assert!(
            matches!(&e, SecretStoreError::Partial { present, missing, .. }
                if present == &[CA_KEY, ISSUER_CERT_KEY] && missing == &[ISSUER_KEY_KEY]),
            "{e}"
        );
        assert!(
            e.to_string().contains("dapr-system/dapr-trust-bundle"),
            "{e}"
        );
    }

    #[test]
    fn the_written_secret_holds_the_set_at_the_version_read() {
        let set = Set {
            ca: "ca".into(),
            issuer: "issuer".into(),
            key: Zeroizing::new("key".into()),
            auto: Some("marker".into()),
            next: Some(Prepared {
                ca: "next ca".into(),
                issuer: "next issuer".into(),
                key: Zeroizing::new("next key".into()),
                prepared_for: "issuer".into(),
                since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            }),
            old: Some(Retiring {
                ca: "old ca".into(),
                issuer: "old issuer".into(),
                since: UNIX_EPOCH + Duration::from_secs(1_700_000_001),
            }),
            jwt: Some(JwtSlots {
                key: Zeroizing::new("jwt key".into()),
                jwks: "{\"keys\":[]}".into(),
                auto: Some("thumb".into()),
                next: Some(Zeroizing::new("next jwt key".into())),
                old_kid: Some("old kid".into()),
                next_wait: Some(Duration::from_secs(60)),
                old_wait: Some(Duration::from_secs(61)),
            }),
        };
        let s = secret_of(&set, Some("42".into()));
        assert_eq!(s.metadata.name.as_deref(), Some(TRUST_BUNDLE));
        assert_eq!(s.metadata.resource_version.as_deref(), Some("42"));
        match contents_of(s, "ns").unwrap() {
            Contents::Set(back) => {
                assert_eq!(fingerprint(&back), fingerprint(&set));
                assert_eq!(back.auto, set.auto);
                let (n, o) = (back.next.unwrap(), back.old.unwrap());
                assert_eq!((n.ca.as_str(), n.key.as_str()), ("next ca", "next key"));
                assert_eq!(n.since, set.next.as_ref().unwrap().since);
                assert_eq!(
                    (o.issuer.as_str(), o.since),
                    ("old issuer", set.old.unwrap().since)
                );
                let j = back.jwt.unwrap();
                assert_eq!(
                    (j.next_wait, j.old_wait),
                    (Some(Duration::from_secs(60)), Some(Duration::from_secs(61)))
                );
                assert_eq!(
                    (
                        j.key.as_str(),
                        j.jwks.as_str(),
                        j.auto.as_deref(),
                        j.next.as_deref().map(String::as_str),
                        j.old_kid.as_deref()
                    ),
                    (
                        "jwt key",
                        "{\"keys\":[]}",
                        Some("thumb"),
                        Some("next jwt key"),
                        Some("old kid")
                    )
                );
            }
            _ => panic!("round trip"),
        }
    }

    #[test]
    fn a_token_file_with_a_newline_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc\n").unwrap();
        let Err(e) = client("https://127.0.0.1:6443", None, &file) else {
            panic!("a token with a newline accepted");
        };
        assert!(e.contains("whitespace"), "{e}");
        assert!(client("not a url", None, &file).is_err());
    }
}
