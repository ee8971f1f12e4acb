//! One answer, one verdict: the same bad answer from Sentry (a certificate for another
//! workload, a chain from a foreign root of the same name, a certificate for another key) is
//! the same refusal on a sidecar (its identity driver, fed through its transport) and on a
//! device (the core's device agent, fed through its link answer), because the rotation
//! machine is the only judge on both. Sentry's own issuance code makes the certificates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sigil_core::agent::{DeviceAgent, Event, Workload};
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::crypto::{PublicKey, RustCryptoSignatureVerifier};
use sigil_core::csr::Csr;
use sigil_core::key::SoftwareKey;
use sigil_core::link::{self, Answer, Frame, MAX_FRAME};
use sigil_core::rotation::{Clock, Policy, Rejection, Rotation};
use sigil_core::spiffe::SpiffeId;
use sigil_core::Instant;
use sigil_host::ca::Credentials;
use sigil_host::client::{ClientError, SignRequest};
use sigil_host::key::P256Key;
use sigil_host::sidecar::identity::{
    self, AnchorSource, Answer as SidecarAnswer, IdentityConfig, IdentityState, Transport,
};

const SENTRY: &str = "spiffe://public/ns/default/dapr-sentry";

/// A kind of bad answer.
#[derive(Clone, Copy, Debug)]
enum Bad {
    /// A certificate for `spiffe://public/ns/default/someone-else`.
    WrongWorkload,
    /// The right name, from another root of the same name.
    ForeignRoot,
    /// The right name, for a key the workload never made.
    OtherKey,
}

struct Cas {
    ours: Credentials,
    foreign: Credentials,
    other_key: P256Key,
}

impl Cas {
    fn new() -> Self {
        let now = SystemTime::now();
        let ca = || {
            Credentials::generate("public", SENTRY, now, Duration::ZERO)
                .unwrap()
                .0
        };
        Self {
            ours: ca(),
            foreign: ca(),
            other_key: P256Key::generate().unwrap(),
        }
    }

    /// The bad answer of kind `bad` to a CSR for `point` by `app`: DER, leaf first.
    fn answer(&self, bad: Bad, point: &[u8], app: &str) -> Vec<Vec<u8>> {
        let (creds, app, point) = match bad {
            Bad::WrongWorkload => (&self.ours, "someone-else", point),
            Bad::ForeignRoot => (&self.foreign, app, point),
            Bad::OtherKey => (&self.ours, app, self.other_key.public_point()),
        };
        let issued = creds
            .issue_workload(
                PublicKey::EcP256(point),
                &format!("spiffe://public/ns/default/{app}"),
                &[],
                SystemTime::now(),
                Duration::from_secs(3600),
                Duration::from_secs(60),
            )
            .unwrap();
        let mut chain = vec![issued.der];
        chain.extend(creds.issuer_chain().iter().cloned());
        chain
    }
}

/// The device's verdict: the agent, configured as the device image configures it, asks; the
/// bad answer comes back in a link frame.
fn device_verdict(cas: &Cas, bad: Bad) -> Rejection {
    let mut bundle = OwnedTrustBundle::<2, 2048>::new();
    bundle.replace(&[cas.ours.anchors()[0].as_slice()]).unwrap();
    let id = SpiffeId::parse("spiffe://public/ns/default/device").unwrap();
    let rotation = Rotation::<'_, SoftwareKey, 2048, 2, 2048>::new(
        Policy::default(),
        Clock::Monotonic,
        7,
        Some(id),
        bundle,
    );
    let workload = Workload {
        app_id: "device",
        namespace: "default",
        token: "",
    };
    let mut agent = DeviceAgent::new(rotation, workload, RustCryptoSignatureVerifier);
    let now = Instant::from_millis(1);
    agent.handle_timeout(now);
    let mut buf = [0u8; MAX_FRAME];
    let frame = agent
        .poll_transmit(&mut rand_core::OsRng, &mut buf)
        .expect("a request")
        .to_vec();
    let Ok((
        Frame::SignRequest {
            request, csr, id, ..
        },
        _,
    )) = Frame::parse(&frame)
    else {
        panic!("a sign request");
    };
    let csr = Csr::parse(csr).unwrap();
    let PublicKey::EcP256(point) = csr.public_key() else {
        panic!("P-256");
    };
    let chain = cas.answer(bad, point, id);
    let mut payload = vec![0u8; link::MAX_PAYLOAD];
    let encoded = link::encode_chain(chain.iter().map(Vec::as_slice), &mut payload).unwrap();
    agent.handle_answer(now, request, Answer::Chain(encoded));
    std::iter::from_fn(|| agent.poll_event())
        .find_map(|e| match e {
            Event::Rejected { reason, .. } => Some(reason),
            _ => None,
        })
        .expect("the answer is rejected")
}

/// A transport whose Sentry answers every request with a bad answer of one kind.
struct BadSentry {
    cas: Arc<Cas>,
    bad: Bad,
    asked: Mutex<u32>,
}

impl Transport for BadSentry {
    fn sign(
        &self,
        req: SignRequest,
        _anchors: std::sync::Arc<sigil_host::trust::Anchors>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = SidecarAnswer> + Send>> {
        *self.asked.lock().unwrap() += 1;
        let csr = Csr::parse(&req.csr_der).unwrap();
        let PublicKey::EcP256(point) = csr.public_key() else {
            panic!("P-256");
        };
        let chain = self.cas.answer(self.bad, point, &req.id);
        // The bad answers carry no bundle: the chain alone is judged.
        let signed = sigil_host::client::Signed {
            chain,
            trust_bundle: Vec::new(),
            valid_until: std::time::SystemTime::now(),
            jwt: None,
            per_audience_jwts: Default::default(),
        };
        Box::pin(async move { Ok::<_, ClientError>(signed) })
    }
}

/// The sidecar's verdict: its identity driver, with the bad Sentry behind its transport.
async fn sidecar_verdict(cas: Arc<Cas>, bad: Bad) -> (Rejection, String) {
    let config = IdentityConfig {
        app_id: "device".into(),
        namespace: "default".into(),
        sentry_address: "unused".into(),
        sentry_id: SENTRY.into(),
        token_file: None,
        token_validator: sigil_host::pb::sign_certificate_request::TokenValidator::Unknown,
        anchors: AnchorSource::Pem(cas.ours.anchors_pem().to_owned()),
        output_dir: None,
        policy: Policy::default(),
        jwt_audiences: Vec::new(),
    };
    let state = Arc::new(IdentityState::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let transport = Arc::new(BadSentry {
        cas,
        bad,
        asked: Mutex::new(0),
    });
    let task = tokio::spawn(identity::drive_with(
        config,
        state.clone(),
        transport,
        Arc::new(identity::SystemWall),
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let verdict = loop {
        if let Some(r) = state.last_rejection() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no verdict");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    (verdict, state.metrics().render())
}

#[tokio::test]
async fn the_same_bad_answer_is_the_same_refusal_on_a_sidecar_and_on_a_device() {
    let cas = Arc::new(Cas::new());
    for bad in [Bad::WrongWorkload, Bad::ForeignRoot, Bad::OtherKey] {
        let device = device_verdict(&cas, bad);
        let (sidecar, metrics) = sidecar_verdict(cas.clone(), bad).await;
        assert_eq!(sidecar, device, "{bad:?}");
        // The sidecar counts it as Dapr's invalid certificate, whatever the kind.
        assert!(
            metrics.contains("dapr_runtime_mtls_init_fail_total{reason=\"invalid_cert\"}"),
            "{bad:?}: {metrics}"
        );
        match bad {
            Bad::WrongWorkload => assert_eq!(
                device,
                Rejection::Profile(sigil_core::profile::Error::UnexpectedId)
            ),
            Bad::OtherKey => assert_eq!(
                device,
                Rejection::Profile(sigil_core::profile::Error::KeyMismatch)
            ),
            Bad::ForeignRoot => assert!(matches!(device, Rejection::Path(_)), "{device:?}"),
        }
    }
}
