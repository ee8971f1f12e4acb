#!/usr/bin/env python3
"""The sidecar's SPIFFE Workload API seen by an independent client: py-spiffe (the SPIFFE
project's Python library, `spiffe` on PyPI), which checks an X.509-SVID the way the
specification says (leaf profile, SPIFFE ID, key) and verifies JWT-SVIDs against the JWT
bundles it fetches.

Prints `ok NAME` or `FAIL NAME: DETAIL` per check and exits 0 only if all passed.
Usage: workload_api_client.py --socket PATH --id SPIFFE_ID --root ca.crt --audience AUD
"""

import argparse
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import JwtSvid, TrustDomain, WorkloadApiClient

from checks import RESULTS, Failed, check, expect  # noqa: E402 - beside this script


def public_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def x509_svid(client, spiffe_id, roots):
    svid = client.fetch_x509_svid()
    expect(str(svid.spiffe_id) == spiffe_id, f"SPIFFE ID {svid.spiffe_id}")
    expect(len(svid.cert_chain) == 2, f"chain of {len(svid.cert_chain)}")
    expect(public_der(svid.private_key.public_key()) == public_der(svid.leaf.public_key()), "the key is not the leaf's")
    bundles = client.fetch_x509_bundles()
    td = TrustDomain(spiffe_id.split("/")[2])
    bundle = bundles.get_bundle_for_trust_domain(td)
    expect(bundle is not None, f"no bundle for {td}")
    held = {c.fingerprint(c.signature_hash_algorithm) for c in bundle.x509_authorities}
    expect(all(r.fingerprint(r.signature_hash_algorithm) in held for r in roots), "Sentry's root is not in the bundle")
    # The issuer in the chain is signed by a root of the bundle.
    issuer = svid.cert_chain[1]
    expect(any(issuer.issuer == r.subject for r in bundle.x509_authorities), "the issuer does not chain to the bundle")


def jwt_svid(client, spiffe_id, audience):
    bundles = client.fetch_jwt_bundles()
    td = TrustDomain(spiffe_id.split("/")[2])
    bundle = bundles.get_bundle_for_trust_domain(td)
    expect(bundle is not None and bundle.jwt_authorities, f"no JWT bundle for {td}")
    # The audience asked for with the certificate, and one minted on demand.
    for aud in [audience, "api://on-demand"]:
        svid = client.fetch_jwt_svid({aud})
        expect(str(svid.spiffe_id) == spiffe_id, f"sub {svid.spiffe_id}")
        expect(aud in svid.audience, f"aud {svid.audience}")
        checked = JwtSvid.parse_and_validate(svid.token, bundle, {aud})
        expect(str(checked.spiffe_id) == spiffe_id, checked.spiffe_id)
        client.validate_jwt_svid(svid.token, aud)
    try:
        JwtSvid.parse_and_validate(svid.token, bundle, {"api://not-asked"})
        raise Failed("a wrong audience validated")
    except Failed:
        raise
    except Exception:  # noqa: BLE001 - py-spiffe's own refusal
        pass


def rotations(client, want):
    """Streams X.509 contexts until `want` different leaves have been seen."""
    leaves, errors = [], []
    done = threading.Event()

    def on_success(ctx):
        leaf = ctx.default_svid.leaf.public_bytes(serialization.Encoding.DER)
        if not leaves or leaves[-1] != leaf:
            leaves.append(leaf)
        if len(leaves) >= want:
            done.set()

    def on_error(e):
        errors.append(e)

    handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    try:
        done.wait(60)
    finally:
        handle.cancel()
    expect(not errors, f"stream errors: {errors}")
    expect(len(leaves) >= want, f"saw {len(leaves)} identities in 60 s")
    expect(len(set(leaves)) == len(leaves), "an identity came back")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--rotations", type=int, default=3)
    a = p.parse_args()
    roots = x509.load_pem_x509_certificates(open(a.root, "rb").read())
    client = WorkloadApiClient(socket_path=f"unix:{a.socket}", default_timeout=20)
    started = time.monotonic()
    try:
        check("py_spiffe_fetches_the_x509_svid_and_bundle", x509_svid, client, a.id, roots)
        check("py_spiffe_verifies_the_jwt_svid_with_the_jwt_bundle", jwt_svid, client, a.id, a.audience)
        check("py_spiffe_streams_every_rotation", rotations, client, a.rotations)
    finally:
        client.close()
    failed = RESULTS.count(False)
    print(f"py-spiffe: {RESULTS.count(True)} passed, {failed} failed in {time.monotonic() - started:.1f} s", flush=True)
    sys.exit(1 if failed or not RESULTS else 0)


if __name__ == "__main__":
    main()
