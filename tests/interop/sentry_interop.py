#!/usr/bin/env python3
"""Sigil's Sentry against independent peers: Python's grpcio (the client), openssl (CSRs and
chain verification), `cryptography` (certificate parsing) and PyJWT (tokens for the jwks
validator).

Starts its own Sentry processes (one with the default insecure validator, one with a jwks
validator from a Dapr Configuration), runs every check, prints one line per check
(`ok NAME` or `FAIL NAME: DETAIL`) and a closing `interop: N passed, N failed`, and exits 0 only
if every check passed.

Usage: sentry_interop.py --sigil PATH/TO/sigil --workdir DIR [--stubs DIR]
(the stubs come from ci/python-venv.sh; by default target/python-stubs of this repository).
"""

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import grpc
import jwt  # PyJWT
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

REPO = Path(__file__).resolve().parents[2]

# The generated stubs, imported in main() once their directory is on sys.path.
pb = None
pb_grpc = None

SENTRY_TD = "localhost"
SENTRY_AUDIENCE = f"spiffe://{SENTRY_TD}/ns/default/dapr-sentry"
RPC_TIMEOUT = 20.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TOLERANCE = dt.timedelta(minutes=2)

# Validator enum numbers (SignCertificateRequest.TokenValidator).
UNKNOWN, INSECURE, KUBERNETES, JWKS = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------
# Check bookkeeping


class Failed(Exception):
    """A check's expectation not met."""


RESULTS = []


def check(name, fn, *args, **kwargs):
    """Runs one check: prints `ok NAME` or `FAIL NAME: DETAIL`."""
    try:
        fn(*args, **kwargs)
    except Failed as e:
        RESULTS.append((name, False))
        print(f"FAIL {name}: {e}", flush=True)
    except Exception as e:  # a check that crashes is a failed check, not a crashed run
        RESULTS.append((name, False))
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        print(f"FAIL {name}: unexpected {detail}", flush=True)
    else:
        RESULTS.append((name, True))
        print(f"ok {name}", flush=True)


def expect(cond, detail):
    if not cond:
        raise Failed(detail)


# ---------------------------------------------------------------------------------------------
# openssl and PEM helpers


def run(cmd, cwd=None, check_rc=True):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check_rc and p.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def pem(block_type, der):
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {block_type}-----\n" + "\n".join(lines) + f"\n-----END {block_type}-----\n").encode()


def pem_der(data):
    """The DER of the first PEM block of `data`."""
    m = re.search(rb"-----BEGIN [A-Z0-9 ]+-----\s*(.*?)-----END [A-Z0-9 ]+-----", data, re.S)
    if not m:
        raise Failed("no PEM block")
    return base64.b64decode(b"".join(m.group(1).split()))


def certs_der(data):
    """The DER of every certificate in a PEM bundle."""
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(data)]


class Csrs:
    """CSRs made by openssl in the work directory."""

    def __init__(self, workdir):
        self.dir = workdir / "csr"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _req_newkey(self, name, newkey_args):
        key, csr = self.dir / f"{name}.key", self.dir / f"{name}.csr"
        run(["openssl", "req", "-new", *newkey_args, "-nodes", "-subj", "/", "-keyout", str(key), "-out", str(csr)])
        return csr.read_bytes()

    def p256(self, name="p256"):
        return self._req_newkey(name, ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])

    def p384(self):
        return self._req_newkey("p384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"])

    def rsa2048(self):
        return self._req_newkey("rsa2048", ["-newkey", "rsa:2048"])

    def ed25519(self):
        key, csr = self.dir / "ed25519.key", self.dir / "ed25519.csr"
        run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)])
        run(["openssl", "req", "-new", "-key", str(key), "-subj", "/", "-out", str(csr)])
        return csr.read_bytes()

    def big(self, approx_der_len):
        """A valid P-256 CSR made large by a subjectAltName of many DNS names."""
        names, size, i = [], 0, 0
        while size < approx_der_len:
            n = f"host-{i:05d}.padding.example.org"
            names.append(f"DNS:{n}")
            size += len(n) + 2
            i += 1
        key, csr = self.dir / "big.key", self.dir / "big.csr"
        run([
            "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/", "-addext", "subjectAltName=" + ",".join(names),
            "-keyout", str(key), "-out", str(csr),
        ])
        return csr.read_bytes()


# ---------------------------------------------------------------------------------------------
# Sentry processes


class Sentry:
    def __init__(self, name, sigil, workdir, config=None):
        self.name = name
        self.creds = workdir / f"{name}-creds"
        self.creds.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.stdout_lines = []
        self.grpc_addr = None
        cmd = [
            str(sigil), "sentry",
            "--issuer-credentials", str(self.creds),
            "--trust-domain", SENTRY_TD,
            "--port", "0", "--listen-address", "127.0.0.1",
            "--healthz-port", "0", "--healthz-listen-address", "127.0.0.1",
            "--metrics-port", "0", "--metrics-listen-address", "127.0.0.1",
        ]
        if config is not None:
            cmd += ["--config", str(config)]
        env = dict(os.environ)
        env.pop("NAMESPACE", None)  # Sentry's own namespace: "default", so its audience is known
        env["NO_COLOR"] = "1"  # plain logs in the log file
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            if not self._listening.wait(START_TIMEOUT) or self.grpc_addr is None:
                raise RuntimeError(f"sentry {name} did not report listening (exit {self.proc.poll()}):\n{self.output()}")
            self.ca_pem = (self.creds / "ca.crt").read_bytes()
            self.issuer_pem = (self.creds / "issuer.crt").read_bytes()
            creds = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
            self.channel = grpc.secure_channel(
                self.grpc_addr, creds, options=[("grpc.ssl_target_name_override", "localhost")]
            )
            grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT)
            self.stub = pb_grpc.CAStub(self.channel)
        except BaseException:
            self.kill()
            raise

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stdout_lines.append(line)
            m = re.match(r"sentry: listening grpc=(\S+)", line)
            if m:
                self.grpc_addr = m.group(1)
                self._listening.set()
        self._listening.set()  # stdout closed: the process is gone

    def output(self):
        if not self.log.closed:
            self.log.flush()
        err = self.log_path.read_text(errors="replace")
        return "stdout:\n" + "\n".join(self.stdout_lines) + "\nstderr:\n" + err[-4000:]

    def sign(self, **fields):
        return self.stub.SignCertificate(pb.SignCertificateRequest(**fields), timeout=RPC_TIMEOUT)

    def stop(self):
        """SIGTERM; the exit code (None if still running after STOP_TIMEOUT, then killed)."""
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        self._reader.join(5)
        self.log.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# Expectations on responses


def expect_status(sentry, code_name, request, contains=None, startswith=None):
    code = getattr(grpc.StatusCode, code_name)
    try:
        resp = sentry.sign(**request)
    except grpc.RpcError as e:
        got, details = e.code(), e.details() or ""
        expect(got == code, f"want {code_name}, got {got.name}: {details!r}")
        if contains is not None:
            expect(contains in details, f"{code_name} as expected, but message {details!r} lacks {contains!r}")
        if startswith is not None:
            expect(details.startswith(startswith), f"{code_name} as expected, but message {details!r} does not start with {startswith!r}")
        return
    leaf = x509.load_pem_x509_certificates(resp.workload_certificate)[0]
    raise Failed(f"want {code_name}, got OK (leaf {leaf_spiffe_ids(leaf)})")


def leaf_spiffe_ids(leaf):
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def sign_ok(sentry, request):
    try:
        return sentry.sign(**request)
    except grpc.RpcError as e:
        raise Failed(f"want OK, got {e.code().name}: {e.details()!r}")


def expect_spiffe(resp, want_id):
    certs = x509.load_pem_x509_certificates(resp.workload_certificate)
    ids = leaf_spiffe_ids(certs[0])
    expect(ids == [want_id], f"leaf URI SANs {ids}, want [{want_id!r}]")
    return certs


def utc(d):
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------------------------------
# Insecure Sentry


def insecure_checks(s, csrs, workdir):
    csr = csrs.p256()
    csr_pub = x509.load_pem_x509_csr(csr).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    base = dict(id="myapp", namespace="default", certificate_signing_request=csr, token_validator=INSECURE)
    state = {}

    def happy(validator):
        sent_at = dt.datetime.now(dt.timezone.utc)
        resp = sign_ok(s, dict(base, token_validator=validator))
        state[validator] = (resp, sent_at)

    check("insecure: sign myapp/default, validator INSECURE", happy, INSECURE)
    check("insecure: sign myapp/default, validator UNKNOWN (default insecure)", happy, UNKNOWN)

    def with_resp(validator, fn):
        def inner():
            expect(validator in state, "no response (the signing check failed)")
            fn(*state[validator])
        return inner

    for validator, vname in ((INSECURE, "INSECURE"), (UNKNOWN, "UNKNOWN")):
        def chain_verifies(resp, _sent_at, vname=vname):
            chain = workdir / f"chain-{vname}.pem"
            chain.write_bytes(resp.workload_certificate)
            p = run(["openssl", "verify", "-CAfile", str(s.creds / "ca.crt"), "-untrusted", str(chain), str(chain)],
                    check_rc=False)
            out = (p.stdout + p.stderr).strip()
            expect(p.returncode == 0 and out.endswith(": OK"), f"openssl verify: rc {p.returncode}: {out}")

        check(f"insecure/{vname}: openssl verify of the workload chain", with_resp(validator, chain_verifies))

    def profile(resp, sent_at):
        certs = x509.load_pem_x509_certificates(resp.workload_certificate)
        expect(len(certs) == 2, f"workload_certificate has {len(certs)} certificates, want leaf + issuer")
        leaf = certs[0]
        expect(certs[1].public_bytes(serialization.Encoding.DER) == certs_der(s.issuer_pem)[0],
               "second certificate is not issuer.crt")
        expect(len(leaf.subject.rdns) == 0, f"subject {leaf.subject.rfc4514_string()!r}, want empty")
        expect(leaf.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo) == csr_pub,
               "leaf key is not the CSR's key")
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        expect(san.critical, "SAN not critical (empty subject)")
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        expect(uris == ["spiffe://public/ns/default/myapp"], f"URI SANs {uris}")
        expect(len(list(san.value)) == 1, f"SAN has other names: {list(san.value)}")
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        expect(set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH},
               f"EKU {[o.dotted_string for o in eku]}")
        ku_ext = leaf.extensions.get_extension_for_class(x509.KeyUsage)
        expect(ku_ext.critical, "key usage not critical")
        expect(ku_ext.value.digital_signature, "key usage lacks digitalSignature")
        try:
            bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
            expect(not bc.ca, "leaf is a CA")
        except x509.ExtensionNotFound:
            pass
        nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        want_nb = sent_at - dt.timedelta(minutes=15)
        want_na = sent_at + dt.timedelta(hours=24)
        issuer_na = certs[1].not_valid_after_utc
        if issuer_na < want_na:
            want_na = issuer_na
        expect(abs(nb - want_nb) <= TOLERANCE, f"notBefore {nb.isoformat()}, want ~{want_nb.isoformat()}")
        expect(abs(na - want_na) <= TOLERANCE, f"notAfter {na.isoformat()}, want ~{want_na.isoformat()}")
        expect(resp.HasField("valid_until"), "valid_until not set")
        vu = resp.valid_until
        expect(vu.seconds == int(na.timestamp()) and vu.nanos == 0,
               f"valid_until {vu.seconds}.{vu.nanos:09d}, leaf notAfter {int(na.timestamp())}")

    def trust_chain(resp, _sent_at):
        tc = list(resp.trust_chain_certificates)
        expect(len(tc) == 1, f"trust_chain_certificates has {len(tc)} elements, want 1")
        expect(certs_der(tc[0]) == certs_der(s.ca_pem), "trust_chain_certificates != ca.crt's certificates")

    for validator, vname in ((INSECURE, "INSECURE"), (UNKNOWN, "UNKNOWN")):
        check(f"insecure/{vname}: leaf profile (SPIFFE SAN, EKU, KU, subject, validity, valid_until)",
              with_resp(validator, profile))
        check(f"insecure/{vname}: trust_chain_certificates = ca.crt", with_resp(validator, trust_chain))

    check("insecure: trust_domain example.org -> spiffe://example.org/ns/default/myapp",
          lambda: expect_spiffe(sign_ok(s, dict(base, trust_domain="example.org")),
                                "spiffe://example.org/ns/default/myapp"))

    def ed():
        resp = sign_ok(s, dict(base, certificate_signing_request=csrs.ed25519()))
        leaf = expect_spiffe(resp, "spiffe://public/ns/default/myapp")[0]
        expect(isinstance(leaf.public_key(), ed25519.Ed25519PublicKey),
               f"leaf key is {type(leaf.public_key()).__name__}, want Ed25519")
    check("insecure: Ed25519 CSR (openssl genpkey) accepted", ed)

    id64 = "a" * 64
    check("insecure: 64-character id accepted",
          lambda: expect_spiffe(sign_ok(s, dict(base, id=id64)), f"spiffe://public/ns/default/{id64}"))

    der = pem_der(csr)

    def cert_block():
        expect_spiffe(sign_ok(s, dict(base, certificate_signing_request=pem("CERTIFICATE", der))),
                      "spiffe://public/ns/default/myapp")
    check("insecure: CSR in a CERTIFICATE PEM block accepted (pre-1.12 daprd)", cert_block)

    # --- validator choice
    NOT_ENABLED = "the requested validator is not enabled"
    for number, label in ((KUBERNETES, "KUBERNETES(2)"), (JWKS, "JWKS(3)"), (-1, "-1"), (7, "7")):
        check(f"insecure: validator {label} -> INVALID_ARGUMENT not enabled",
              expect_status, s, "INVALID_ARGUMENT", dict(base, token_validator=number), contains=NOT_ENABLED)

    check("insecure: validator KUBERNETES(2) with no CSR -> INVALID_ARGUMENT not enabled (validator choice first)",
          expect_status, s, "INVALID_ARGUMENT", dict(base, token_validator=KUBERNETES, certificate_signing_request=b""),
          contains=NOT_ENABLED)

    # --- the validator's common checks
    IR = "invalid request: "
    for label, req in (
        ("missing CSR", dict(base, certificate_signing_request=b"")),
        ("missing namespace", dict(base, namespace="")),
        ("empty id", dict(base, id="")),
        ("id with a dot", dict(base, id="my.app")),
        ("65-character id", dict(base, id="a" * 65)),
    ):
        check(f"insecure: {label} -> PERMISSION_DENIED", expect_status, s, "PERMISSION_DENIED", req, startswith=IR)

    # --- CSR checks
    BAD_CSR = "invalid certificate signing request"
    PARSE = "failed to parse certificate signing request"
    check("insecure: garbage bytes as CSR -> INVALID_ARGUMENT",
          expect_status, s, "INVALID_ARGUMENT",
          dict(base, certificate_signing_request=b"this is not a CSR \x00\xff\x10 at all"), contains=BAD_CSR)
    check("insecure: CSR in a PUBLIC KEY PEM block -> INVALID_ARGUMENT",
          expect_status, s, "INVALID_ARGUMENT", dict(base, certificate_signing_request=pem("PUBLIC KEY", der)),
          contains=BAD_CSR)
    check("insecure: CERTIFICATE REQUEST block of garbage DER -> INVALID_ARGUMENT parse",
          expect_status, s, "INVALID_ARGUMENT",
          dict(base, certificate_signing_request=pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x05garbage")),
          startswith=PARSE)
    check("insecure: P-384 CSR (openssl) -> INVALID_ARGUMENT parse",
          expect_status, s, "INVALID_ARGUMENT", dict(base, certificate_signing_request=csrs.p384()),
          startswith=PARSE)
    check("insecure: RSA-2048 CSR (openssl) -> INVALID_ARGUMENT parse",
          expect_status, s, "INVALID_ARGUMENT", dict(base, certificate_signing_request=csrs.rsa2048()),
          startswith=PARSE)

    def tampered():
        bad = bytearray(der)
        bad[-1] ^= 0x01  # the last byte of the signature BIT STRING (ECDSA's s)
        x509.load_der_x509_csr(bytes(bad))  # still parses
        expect_status(s, "INVALID_ARGUMENT", dict(base, certificate_signing_request=pem("CERTIFICATE REQUEST", bytes(bad))),
                      contains="invalid signature")
    check("insecure: CSR with a tampered signature -> INVALID_ARGUMENT invalid signature", tampered)

    def huge():
        filler = os.urandom(768 * 1024)  # ~1 MB once PEM-encoded
        body = pem("CERTIFICATE REQUEST", filler)
        expect(len(body) > 1_000_000, f"only {len(body)} bytes")
        expect_status(s, "RESOURCE_EXHAUSTED", dict(base, certificate_signing_request=body))
    check("insecure: 1 MB CSR -> RESOURCE_EXHAUSTED", huge)

    def twenty_kb():
        body = csrs.big(20 * 1024)
        d = pem_der(body)
        x509.load_der_x509_csr(d)
        expect(16 * 1024 < len(d) and len(body) < 60 * 1024, f"CSR DER {len(d)} bytes, PEM {len(body)} bytes")
        expect_status(s, "INVALID_ARGUMENT", dict(base, certificate_signing_request=body))
    check("insecure: 20 KB (valid) CSR -> INVALID_ARGUMENT", twenty_kb)

    # --- names that cannot be SPIFFE path segments: refused before the validator (Sigil's own
    # check; Dapr lets them through and fails issuance with INTERNAL)
    check("insecure: namespace with '/' -> INVALID_ARGUMENT",
          expect_status, s, "INVALID_ARGUMENT", dict(base, namespace="a/b"), startswith="namespace")
    check("insecure: id with a space -> INVALID_ARGUMENT",
          expect_status, s, "INVALID_ARGUMENT", dict(base, id="a b"), startswith="app ID")
    check("insecure: 64-character namespace -> INVALID_ARGUMENT",
          expect_status, s, "INVALID_ARGUMENT", dict(base, namespace="n" * 64), startswith="namespace")
    check("insecure: namespace with a newline -> INVALID_ARGUMENT",
          expect_status, s, "INVALID_ARGUMENT", dict(base, namespace="ns\nfake"), startswith="namespace")
    check("insecure: 63-character namespace accepted",
          lambda: expect_spiffe(sign_ok(s, dict(base, namespace="n" * 63)), f"spiffe://public/ns/{'n' * 63}/myapp"))

    # --- control-plane IDs: Sentry's own never, the others only in its namespace and trust domain
    check("insecure: id dapr-sentry -> PERMISSION_DENIED",
          expect_status, s, "PERMISSION_DENIED", dict(base, id="dapr-sentry", trust_domain=SENTRY_TD),
          contains="never issued")
    check("insecure: id dapr-operator in another namespace -> PERMISSION_DENIED",
          expect_status, s, "PERMISSION_DENIED", dict(base, id="dapr-operator", namespace="shop", trust_domain=SENTRY_TD),
          contains="control-plane")
    check("insecure: id dapr-placement in the public trust domain -> PERMISSION_DENIED",
          expect_status, s, "PERMISSION_DENIED", dict(base, id="dapr-placement"), contains="control-plane")
    check("insecure: id dapr-placement in Sentry's namespace and trust domain accepted",
          lambda: expect_spiffe(sign_ok(s, dict(base, id="dapr-placement", trust_domain=SENTRY_TD)),
                                f"spiffe://{SENTRY_TD}/ns/default/dapr-placement"))
    # A trust domain cannot smuggle path segments in (spiffe://evil/ns/x/ns/default/myapp).
    check("insecure: trust domain with '/' -> PERMISSION_DENIED",
          expect_status, s, "PERMISSION_DENIED", dict(base, trust_domain="evil/ns/x"),
          contains="trust domain")


# ---------------------------------------------------------------------------------------------
# jwks Sentry


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks_setup(workdir):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="interop-key", use="sig", alg="ES256")
    jwks_path = workdir / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [jwk]}))
    config = workdir / "jwks-config.yaml"
    config.write_text(
        "apiVersion: dapr.io/v1alpha1\n"
        "kind: Configuration\n"
        "metadata:\n"
        "  name: daprsystem\n"
        "spec:\n"
        "  mtls:\n"
        "    tokenValidators:\n"
        "      - name: jwks\n"
        "        options:\n"
        f"          source: {json.dumps(str(jwks_path))}\n"
    )
    return key, config


def jwks_checks(s, csrs, key):
    csr = csrs.p256("p256-jwks")
    sub = "spiffe://public/ns/default/myapp"
    now = int(time.time())

    def token(claims=None, signing_key=key, **overrides):
        c = {"aud": [SENTRY_AUDIENCE], "sub": sub, "iat": now, "exp": now + 300}
        c.update(claims or {})
        for k, v in overrides.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return jwt.encode(c, signing_key, algorithm="ES256", headers={"kid": "interop-key"})

    def req(tok, validator=JWKS, **kw):
        return dict(dict(id="myapp", namespace="default", certificate_signing_request=csr,
                         token_validator=validator, token=tok), **kw)

    check("jwks: valid ES256 token, validator JWKS -> OK, spiffe://public/ns/default/myapp",
          lambda: expect_spiffe(sign_ok(s, req(token())), sub))

    def other_td():
        t = token(sub="spiffe://example.org/ns/default/myapp")
        expect_spiffe(sign_ok(s, req(t, trust_domain="example.org")), "spiffe://example.org/ns/default/myapp")
    check("jwks: valid token for trust domain example.org -> OK", other_td)

    check("jwks: validator UNKNOWN(0) -> INVALID_ARGUMENT must be specified",
          expect_status, s, "INVALID_ARGUMENT", req(token(), UNKNOWN),
          contains="a validator name must be specified in this environment")
    check("jwks: validator INSECURE(1) -> INVALID_ARGUMENT not enabled",
          expect_status, s, "INVALID_ARGUMENT", req(token(), INSECURE),
          contains="the requested validator is not enabled")

    TVF = "token validation failed: "
    other_key = ec.generate_private_key(ec.SECP256R1())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def unsigned(alg, secret=None):
        header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": "interop-key"}).encode())
        body = b64url(json.dumps({"aud": [SENTRY_AUDIENCE], "sub": sub, "iat": now, "exp": now + 300}).encode())
        signing_input = f"{header}.{body}".encode()
        sig = b"" if secret is None else hmac.new(secret, signing_input, hashlib.sha256).digest()
        return f"{header}.{body}.{b64url(sig)}"

    denied = (
        ("wrong aud", token(aud=["spiffe://localhost/ns/default/someone-else"])),
        ("wrong sub", token(sub="spiffe://public/ns/default/otherapp")),
        ("expired 10 min ago", token(iat=now - 3600, exp=now - 600)),
        ("nbf 10 min in the future", token(nbf=now + 600)),
        ("no exp", token(exp=None)),
        ("signed by another key", token(signing_key=other_key)),
        ("alg none", unsigned("none")),
        ("HS256 keyed with the public key", unsigned("HS256", pub_pem)),
    )
    for label, tok in denied:
        check(f"jwks: {label} -> PERMISSION_DENIED", expect_status, s, "PERMISSION_DENIED", req(tok), startswith=TVF)
    # Dapr refuses an empty token before parsing it ("the request does not contain a token").
    check("jwks: empty token -> PERMISSION_DENIED", expect_status, s, "PERMISSION_DENIED", req(""))

    # Dapr forms the expected subject with spiffeid.FromSegments, which refuses a "/" in a segment
    # (PERMISSION_DENIED there); Sigil refuses the name before any validator runs.
    check("jwks: namespace with '/' (token sub spiffe://public/ns/a/b/myapp) -> INVALID_ARGUMENT",
          expect_status, s, "INVALID_ARGUMENT", req(token(sub="spiffe://public/ns/a/b/myapp"), namespace="a/b"))

    # Order: the validator runs before the CSR checks.
    check("jwks: bad token with a garbage CSR -> PERMISSION_DENIED (validator first)",
          expect_status, s, "PERMISSION_DENIED",
          req(token(signing_key=other_key), certificate_signing_request=b"garbage"), startswith=TVF)

    check("jwks: missing CSR with a valid token -> PERMISSION_DENIED",
          expect_status, s, "PERMISSION_DENIED", req(token(), certificate_signing_request=b""))

    check("jwks: expired 2 min ago (within 5 min leeway) -> OK",
          lambda: expect_spiffe(sign_ok(s, req(token(iat=now - 3600, exp=now - 120))), sub))


# ---------------------------------------------------------------------------------------------


def main():
    global pb, pb_grpc
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigil", required=True, type=Path, help="the sigil binary")
    ap.add_argument("--workdir", required=True, type=Path, help="an empty directory for keys, certificates, logs")
    ap.add_argument("--stubs", type=Path, default=REPO / "target" / "python-stubs",
                    help="generated Python stubs (ci/python-venv.sh)")
    args = ap.parse_args()

    sys.path.insert(0, str(args.stubs.resolve()))
    from dapr.proto.sentry.v1 import sentry_pb2, sentry_pb2_grpc

    pb, pb_grpc = sentry_pb2, sentry_pb2_grpc

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sigil = args.sigil.resolve()
    csrs = Csrs(workdir)
    t0 = time.monotonic()

    sentries = []
    try:
        insecure = Sentry("insecure", sigil, workdir)
        sentries.append(insecure)
        insecure_checks(insecure, csrs, workdir)

        key, config = jwks_setup(workdir)
        with_jwks = Sentry("jwks", sigil, workdir, config=config)
        sentries.append(with_jwks)
        jwks_checks(with_jwks, csrs, key)
    except Exception as e:
        RESULTS.append(("setup", False))
        print(f"FAIL setup: {''.join(traceback.format_exception(type(e), e, e.__traceback__))}", flush=True)
    finally:
        for s in sentries:
            rc = s.stop()

            def exited(rc=rc, s=s):
                expect(rc == 0, f"exit {'still running after %ds (killed)' % STOP_TIMEOUT if rc is None else rc}\n"
                       + s.output())
            check(f"{s.name}: SIGTERM -> exit 0 within {STOP_TIMEOUT:.0f} s", exited)

    passed = sum(1 for _, ok in RESULTS if ok)
    failed = len(RESULTS) - passed
    if failed:
        for s in sentries:
            print(f"--- sentry {s.name} output ---\n{s.output()}", flush=True)
    print(f"interop: checks took {time.monotonic() - t0:.1f} s", flush=True)
    print(f"interop: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
