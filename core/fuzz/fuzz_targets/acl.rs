//! The service-invocation access-control matcher (the host's `dapr::acl`, compiled in here by
//! path: it is pure, on serde and sigil-core). The input is split on newlines: the first line
//! is the path a call asks for, every other line an operation rule (`name verb action`), all
//! in one policy for the caller. Invariants: no panic; a normalised path without `%` normalises
//! to itself; the path re-encoded for the app normalises back to the one that was checked; the
//! decision on a path and on its re-encoded delivery form is the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sigil_core::spiffe::SpiffeId;

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../../../host/src/dapr/acl.rs"]
mod acl;

use acl::{AccessControl, AccessControlSpec, AppPolicySpec, OperationSpec, Verb};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let raw = lines.next().unwrap_or("");
    let operations: Vec<OperationSpec> = lines
        .take(32)
        .map(|l| {
            let mut f = l.split(' ');
            OperationSpec {
                name: f.next().unwrap_or("").to_owned(),
                http_verb: f.next().map(|v| vec![v.to_owned()]).unwrap_or_default(),
                action: f.next().map(str::to_owned),
            }
        })
        .collect();
    let spec = AccessControlSpec {
        default_action: Some("deny".into()),
        trust_domain: None,
        policies: Some(vec![AppPolicySpec {
            app_id: "caller".into(),
            default_action: Some("allow".into()),
            trust_domain: Some("public".into()),
            namespace: Some("default".into()),
            operations,
        }]),
    };
    let caller = SpiffeId::parse("spiffe://public/ns/default/caller").expect("a SPIFFE ID");
    for http in [true, false] {
        let Ok(Some(policy)) = AccessControl::parse(&spec, http) else {
            continue;
        };
        let _ = policy.decide(Some(&caller), raw, Verb::Http("GET"));
        let Ok(path) = acl::normalize(raw) else {
            continue;
        };
        // Normalising is idempotent on what it gives, unless that holds a `%` (decoded from
        // `%25`): then only the re-encoded form below spells the same path.
        if !path.contains('%') {
            assert_eq!(acl::normalize(&path).as_deref(), Ok(path.as_str()));
        }
        let delivered = acl::encode_path(&path);
        assert_eq!(acl::normalize(&delivered).as_deref(), Ok(path.as_str()));
        let checked = policy.decide(Some(&caller), &path, Verb::Http("GET"));
        let again = policy.decide(
            Some(&caller),
            &acl::normalize(&delivered).unwrap_or_default(),
            Verb::Http("GET"),
        );
        assert_eq!(checked.action, again.action);
    }
});
