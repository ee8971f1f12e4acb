#!/usr/bin/env python3
"""JWT-SVIDs from Sigil's Sentry checked by independent parties: PyJWT verifies the tokens
`sigil sign --jwt-audience` wrote with the keys it finds through the OIDC discovery document
(over TLS, the server's certificate made here with `cryptography`), for every signing
algorithm; and the OIDC server's host handling (dapr/dapr #10027) seen from a plain HTTP client.

Prints `ok NAME` or `FAIL NAME: DETAIL` per check and exits 0 only if all passed.
Usage: jwt_oidc.py --sigil PATH/TO/sigil --workdir DIR [--rotation]
(--rotation: only the automatic key rotation with the CA, about 95 s.)
"""

import argparse
import datetime as dt
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import jwt  # PyJWT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from checks import RESULTS, Failed, check, expect  # noqa: E402 - beside this script


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tls_files(dir_):
    """A self-signed P-256 certificate for localhost / 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dir_ / "oidc.crt", dir_ / "oidc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class Sentry:
    def __init__(self, sigil, dir_, args):
        self.dir = dir_
        dir_.mkdir(parents=True, exist_ok=True)
        self.log = open(dir_ / "sentry.log", "w")
        cmd = [sigil, "sentry", "--issuer-credentials", str(dir_ / "creds"), "--port", "0",
               "--listen-address", "127.0.0.1", "--healthz-port", "0", "--metrics-port", "0",
               "--jwt-enabled"] + args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"sentry exited: {self.lines} (see {dir_ / 'sentry.log'})")
            self.lines.append(line.strip())
            if "listening grpc=" in line:
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                self.grpc = fields["grpc"]
                self.oidc = fields["oidc"]
                return
        raise RuntimeError("sentry did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def sign(sigil, sentry, out, audiences):
    cmd = [sigil, "sign", "--sentry", sentry.grpc, "--anchors", str(sentry.dir / "creds" / "ca.crt"),
           "--id", "app1", "--out-dir", str(out), "--force"]
    for a in audiences:
        cmd += ["--jwt-audience", a]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    expect(r.returncode == 0, f"sigil sign: {r.stdout}{r.stderr}")
    return (out / "jwt.txt").read_text(), json.loads((out / "jwt-audiences.json").read_text())


def get(url, ctx=None, headers=None):
    """(status, headers, body) of a GET, with the Host/X-Forwarded-Host given."""
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, port = hostport.rsplit(":", 1)
    conn = (http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10) if scheme == "https"
            else http.client.HTTPConnection(host, int(port), timeout=10))
    conn.putrequest("GET", "/" + path, skip_host=bool(headers and "Host" in headers))
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def verify_with_discovery(sigil, work, alg, tls):
    """A Sentry signing with `alg`, OIDC over TLS; PyJWT verifies through discovery."""
    port = free_port()
    issuer = f"https://localhost:{port}"
    cert, key = tls
    s = Sentry(sigil, work / f"sentry-{alg}", [
        "--jwt-signing-algorithm", alg, "--jwt-issuer", issuer, "--oidc-enabled",
        "--oidc-server-listen-address", "127.0.0.1", "--oidc-server-listen-port", str(port),
        "--oidc-server-tls-cert-file", str(cert), "--oidc-server-tls-key-file", str(key),
    ])
    try:
        token, per_audience = sign(sigil, s, work / f"out-{alg}", ["api://x", "sts.example"])
        ctx = ssl.create_default_context(cafile=str(cert))
        status, headers, body = get(f"{issuer}/.well-known/openid-configuration", ctx)
        expect(status == 200, f"discovery: {status} {body[:200]}")
        expect(headers.get("content-type") == "application/json", headers)
        expect(headers.get("cache-control") == "public, max-age=3600", headers)
        doc = json.loads(body)
        expect(doc["issuer"] == issuer, doc)
        expect(doc["jwks_uri"] == f"{issuer}/jwks.json", doc)
        expect(doc["id_token_signing_alg_values_supported"] == [alg], doc)
        client = jwt.PyJWKClient(doc["jwks_uri"], ssl_context=ctx)
        signing_key = client.get_signing_key_from_jwt(token)
        header = jwt.get_unverified_header(token)
        expect(header["alg"] == alg and header["typ"] == "JWT", header)
        claims = jwt.decode(token, signing_key.key, algorithms=doc["id_token_signing_alg_values_supported"],
                            audience="api://x", issuer=issuer, options={"require": ["exp", "iat", "nbf", "sub", "aud"]})
        expect(claims["sub"] == "spiffe://public/ns/default/app1", claims)
        expect(claims["aud"] == ["public", "api://x", "sts.example"], claims)
        expect(claims["use"] == "sig" and len(claims["jti"]) == 32, claims)
        expect(claims["iat"] - claims["nbf"] == 900, f"nbf back-dated by the 15 min skew: {claims}")
        expect(abs(claims["exp"] - claims["iat"] - 86400) <= 1, f"24 h by default: {claims}")
        # One token per audience, each with exactly that audience.
        expect(sorted(per_audience) == ["api://x", "public", "sts.example"], per_audience)
        for aud, t in per_audience.items():
            c = jwt.decode(t, signing_key.key, algorithms=[alg], audience=aud, issuer=issuer)
            expect(c["aud"] == [aud], c)
        # A wrong audience, a changed payload: refused by PyJWT.
        try:
            jwt.decode(token, signing_key.key, algorithms=[alg], audience="api://other", issuer=issuer)
            raise Failed("a wrong audience verified")
        except jwt.InvalidAudienceError:
            pass
        h, p, sig = token.split(".")
        forged = h + "." + p[:-2] + ("A" if p[-2] != "A" else "B") + p[-1] + "." + sig
        try:
            jwt.decode(forged, signing_key.key, algorithms=[alg], audience="api://x", issuer=issuer)
            raise Failed("a changed payload verified")
        except (jwt.InvalidSignatureError, jwt.DecodeError):
            pass
        # The key files: jwt.key 0600, the set holds the key.
        mode = (s.dir / "creds" / "jwt.key").stat().st_mode & 0o777
        expect(mode == 0o600, f"jwt.key mode {oct(mode)}")
        expect(((work / f"out-{alg}" / "jwt.txt").stat().st_mode & 0o777) == 0o600, "jwt.txt is not 0600")
    finally:
        s.stop()


def host_handling(sigil, work):
    # No --jwt-issuer, no allow-list: only loopback hosts shape the issuer.
    s = Sentry(sigil, work / "sentry-hosts", [
        "--jwt-signing-algorithm", "ES256", "--oidc-enabled", "--oidc-server-tls-enabled=false",
        "--oidc-server-listen-address", "127.0.0.1", "--oidc-server-listen-port", "0",
    ])
    try:
        base = s.oidc
        port = base.rsplit(":", 1)[1]
        st, _, body = get(f"{base}/.well-known/openid-configuration", headers={"Host": f"localhost:{port}", "X-Forwarded-Host": "attacker.example.com"})
        doc = json.loads(body)
        expect(st == 200 and doc["issuer"] == f"http://localhost:{port}", (st, body))
        expect(doc["jwks_uri"] == f"http://localhost:{port}/jwks.json", doc)
        st, _, body = get(f"{base}/.well-known/openid-configuration", headers={"Host": "attacker.example.com"})
        expect(st == 403 and b"unauthorized domain" in body, (st, body))
        st, _, _ = get(f"{base}/jwks.json", headers={"Host": "attacker.example.com"})
        expect(st == 200, f"the key set does not depend on the host: {st}")
        # Methods other than GET.
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
        conn.request("POST", "/jwks.json", body=b"")
        expect(conn.getresponse().status == 405, "POST is not 405")
        conn.close()
    finally:
        s.stop()
    # Dapr's allow-list cases (tests/integration/suite/sentry/oidc/custom.go), with a prefix.
    s = Sentry(sigil, work / "sentry-allowed", [
        "--jwt-signing-algorithm", "ES256", "--oidc-enabled", "--oidc-server-tls-enabled=false",
        "--oidc-server-listen-address", "127.0.0.1", "--oidc-server-listen-port", "0",
        "--oidc-allowed-hosts", "localhost,example.com,api.example.com", "--oidc-path-prefix", "/auth/",
    ])
    try:
        url = f"{s.oidc}/auth/.well-known/openid-configuration"
        cases = [
            ({"Host": "localhost"}, 200, "http://localhost"),
            ({"Host": "example.com"}, 200, "http://example.com"),
            ({"Host": "forbidden.com"}, 403, None),
            ({"Host": "api.example.com:8443"}, 200, "http://api.example.com:8443"),
            ({"Host": "forbidden.com", "X-Forwarded-Host": "example.com"}, 200, "http://example.com"),
            ({"Host": "localhost", "X-Forwarded-Host": "forbidden.com"}, 403, None),
        ]
        for headers, want, issuer in cases:
            st, _, body = get(url, headers=headers)
            expect(st == want, f"{headers}: {st} {body[:120]}")
            if issuer:
                doc = json.loads(body)
                expect(doc["issuer"] == issuer and doc["jwks_uri"] == f"{issuer}/auth/jwks.json", (headers, doc))
        st, _, _ = get(f"{s.oidc}/.well-known/openid-configuration", headers={"Host": "localhost"})
        expect(st == 404, f"outside the prefix: {st}")
    finally:
        s.stop()


def hot_reload(sigil, work):
    """The key and its set replaced on disk while Sentry runs: the new key signs and is
    published (the old one kept in the set, as an overlap); a set without the key is refused
    and the key in use stays."""
    import base64

    s = Sentry(sigil, work / "sentry-reload", [
        "--jwt-signing-algorithm", "ES256", "--oidc-enabled", "--oidc-server-tls-enabled=false",
        "--oidc-server-listen-address", "127.0.0.1", "--oidc-server-listen-port", "0",
    ])
    try:
        creds = s.dir / "creds"
        old_set = json.loads((creds / "jwks.json").read_text())
        key = ec.generate_private_key(ec.SECP256R1())
        nums = key.public_key().public_numbers()
        b64 = lambda n: base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()  # noqa: E731
        new_jwk = {"kty": "EC", "crv": "P-256", "x": b64(nums.x), "y": b64(nums.y), "kid": "next", "alg": "ES256", "use": "sig"}
        # The set first (both keys), then the key.
        (creds / "jwks.json").write_text(json.dumps({"keys": old_set["keys"] + [new_jwk]}))
        (creds / "jwt.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st, _, body = get(f"{s.oidc}/jwks.json", headers={"Host": "localhost"})
            kids = [k.get("kid") for k in json.loads(body)["keys"]] if st == 200 else []
            if "next" in kids and len(kids) == 2:
                break
            time.sleep(0.2)
        else:
            raise Failed(f"the new set was not published: {kids}")
        token, _ = sign(sigil, s, work / "out-reload", ["api://x"])
        expect(jwt.get_unverified_header(token)["kid"] == "next", jwt.get_unverified_header(token))
        jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="api://x")
        # A set without the signing key: refused, the key in use keeps signing.
        (creds / "jwks.json").write_text(json.dumps(old_set))
        time.sleep(3)
        token, _ = sign(sigil, s, work / "out-reload", ["api://x"])
        expect(jwt.get_unverified_header(token)["kid"] == "next", "a refused set changed the signing key")
        st, _, body = get(f"{s.oidc}/jwks.json", headers={"Host": "localhost"})
        expect(len(json.loads(body)["keys"]) == 2, f"the refused set was published: {body[:200]}")
    finally:
        s.stop()


def automatic_rotation(sigil, work):
    """Sentry rotates the JWT key it generated with its CA (root and issuer of 60 s, tokens and
    certificates of 5 s): a relying party that fetched the set at least 4 s before a token was
    signed can verify it (the next key is published before it signs), every token still valid
    verifies with every set published meanwhile (the old key stays until its last token
    expired), and the key changes at least twice."""
    config = work / "rotation-config.yaml"
    config.write_text("kind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: 5s\n    allowedClockSkew: 0s\n")
    s = Sentry(sigil, work / "sentry-rotation", [
        "--jwt-signing-algorithm", "ES256", "--jwt-ttl", "5s", "--root-ttl", "60s", "--issuer-ttl", "60s",
        "--config", str(config), "--oidc-enabled", "--oidc-server-tls-enabled=false",
        "--oidc-server-listen-address", "127.0.0.1", "--oidc-server-listen-port", "0",
    ])
    try:
        st, _, body = get(f"{s.oidc}/.well-known/openid-configuration", headers={"Host": "localhost"})
        expect(st == 200, (st, body))
        jwks_path = "/" + json.loads(body)["jwks_uri"].split("://", 1)[1].split("/", 1)[1]
        snapshots = []  # (monotonic time, {kid: PyJWK})
        tokens = []  # (token, kid, exp as monotonic time)
        signed_kids = []
        start = time.monotonic()
        while time.monotonic() - start < 95:
            st, _, body = get(f"{s.oidc}{jwks_path}", headers={"Host": "localhost"})
            expect(st == 200, f"jwks: {st}")
            now = time.monotonic()
            keys = {k["kid"]: jwt.PyJWK(k) for k in json.loads(body)["keys"]}
            snapshots.append((now, keys))
            # Every token still valid verifies with the set published now.
            for token, kid, exp in tokens:
                if exp > now + 0.5:
                    expect(kid in keys, f"kid {kid} left the set {exp - now:.1f} s before its token expired")
                    jwt.decode(token, keys[kid].key, algorithms=["ES256"], audience="api://x", leeway=1)
            token, _ = sign(sigil, s, work / "out-rotation", ["api://x"])
            signed_at = time.monotonic()
            kid = jwt.get_unverified_header(token)["kid"]
            claims = jwt.decode(token, options={"verify_signature": False})
            tokens.append((token, kid, signed_at + claims["exp"] - claims["iat"]))
            if not signed_kids or signed_kids[-1] != kid:
                expect(kid not in signed_kids, f"kid {kid} signs again after another")
                signed_kids.append(kid)
                if len(signed_kids) > 1:
                    # A relying party that fetched the set at least 4 s earlier knows the key.
                    older = [k for t, k in snapshots if t <= signed_at - 4]
                    expect(older and kid in older[-1], f"kid {kid} signed less than 4 s after it was published")
                    jwt.decode(token, older[-1][kid].key, algorithms=["ES256"], audience="api://x")
            time.sleep(0.5)
        expect(len(signed_kids) >= 3, f"the key changed {len(signed_kids) - 1} times: {signed_kids}")
        st, _, body = get(f"{s.oidc}{jwks_path}", headers={"Host": "localhost"})
        published = [k["kid"] for k in json.loads(body)["keys"]]
        expect(len(published) <= 2, f"retired keys still published: {published}")
        print(f"jwt-rotation: tokens={len(tokens)} keys={len(signed_kids)} snapshots={len(snapshots)}", flush=True)
    finally:
        s.stop()


def refusals(sigil, work):
    """Flags Sentry refuses to start with, each with a message."""
    def refused(args, words):
        r = subprocess.run([sigil, "sentry", "--issuer-credentials", str(work / "creds-refused"), "--port", "0",
                            "--healthz-port", "0", "--metrics-port", "0"] + args,
                           capture_output=True, text=True, timeout=60)
        expect(r.returncode != 0 and words in r.stderr, f"{args}: rc {r.returncode}: {r.stderr[-300:]}")
    refused(["--jwt-issuer", "https://x"], "--jwt-issuer needs --jwt-enabled")
    refused(["--jwt-enabled", "--jwt-signing-algorithm", "ES512"], "unsupported JWT signing algorithm")
    refused(["--jwt-enabled", "--oidc-enabled"], "--oidc-server-tls-cert-file")
    refused(["--oidc-enabled", "--oidc-server-tls-enabled=false"], "--oidc-enabled needs --jwt-enabled")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sigil", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--rotation", action="store_true", help="only the automatic key rotation check (95 s)")
    a = p.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if a.rotation:
        check("jwt_key_rotates_with_the_ca", automatic_rotation, a.sigil, work)
        sys.exit(0 if RESULTS == [True] else 1)
    tls = tls_files(work)
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA"]:
        check(f"pyjwt_verifies_{alg}_through_oidc_discovery", verify_with_discovery, a.sigil, work, alg, tls)
    check("oidc_host_handling", host_handling, a.sigil, work)
    check("jwt_key_hot_reload", hot_reload, a.sigil, work)
    check("flag_refusals", refusals, a.sigil, work)
    failed = RESULTS.count(False)
    print(f"jwt-oidc: {RESULTS.count(True)} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not RESULTS else 0)


if __name__ == "__main__":
    main()
