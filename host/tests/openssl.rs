//! The `sigil` CLI against `openssl` as the independent peer, on chains openssl makes:
//! for every case, `openssl verify -attime … -purpose …` and `sigil cert verify --at … --usage …`
//! must both give the expected verdict. Also: `openssl req -verify` accepts every CSR
//! `sigil csr new` makes, and `sigil` reads keys and CSRs openssl makes.
//!
//! openssl 3.0 cannot set notBefore explicitly, so certificates are issued "from now" and the
//! times checked are taken from the certificates themselves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use sigil_core::cert::Certificate;
use sigil_core::UnixTime;

const LEAF_ID: &str = "spiffe://example.org/ns/default/app";

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    run(Command::new("openssl").current_dir(dir).args(args))
}

fn openssl_ok(dir: &Path, args: &[&str]) {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sigil(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_sigil"))
        .current_dir(dir)
        .args(args))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl req` arguments that make a fresh P-256 key (unencrypted, written to `key`) and write
/// `out` for `subject`: a self-signed certificate with `kind` `-x509`, a CSR with `-new`.
fn p256_request<'a>(kind: &'a str, key: &'a str, out: &'a str, subject: &'a str) -> Vec<&'a str> {
    vec![
        "req",
        kind,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ]
}

/// A directory of openssl-made keys and certificates.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path().join(name), contents).unwrap();
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap()
    }

    /// A self-signed root `name` with extra `-addext` lines.
    fn root(&self, name: &str, subject: &str, exts: &[&str]) {
        let key = format!("{name}.key");
        let crt = format!("{name}.pem");
        let mut args = p256_request("-x509", &key, &crt, subject);
        args.extend(["-days", "3650"]);
        let mut all = vec![
            "basicConstraints=critical,CA:true",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ];
        all.extend_from_slice(exts);
        // A later -addext for the same extension replaces the default above.
        let mut seen = std::collections::HashSet::new();
        let mut chosen = Vec::new();
        for e in all.iter().rev() {
            let name = e.split('=').next().unwrap();
            if seen.insert(name) {
                chosen.push(*e);
            }
        }
        for e in chosen.iter().rev() {
            args.push("-addext");
            args.push(e);
        }
        openssl_ok(self.path(), &args);
    }

    /// A self-signed RSA-2048 root `name` (CA:true), whose key the core cannot use.
    fn rsa_root(&self, name: &str, subject: &str) {
        let key = format!("{name}.key");
        let crt = format!("{name}.pem");
        openssl_ok(
            self.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &crt,
                "-subj",
                subject,
                "-days",
                "3650",
                "-addext",
                "basicConstraints=critical,CA:true",
            ],
        );
    }

    /// A certificate `name` for a fresh key, signed by `issuer`, with the extensions in `ext`
    /// (an openssl extfile body) and `days` of validity from now.
    fn issue(&self, name: &str, subject: &str, issuer: &str, ext: &str, days: u32) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.pem");
        let extfile = format!("{name}.ext");
        self.write(&extfile, ext);
        openssl_ok(self.path(), &p256_request("-new", &key, &csr, subject));
        let (ca, ca_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
        let days = days.to_string();
        openssl_ok(
            self.path(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                &days,
                "-extfile",
                &extfile,
                "-out",
                &crt,
            ],
        );
    }

    fn cert(&self, name: &str) -> (UnixTime, UnixTime) {
        let pem_text = self.read(&format!("{name}.pem"));
        let mut buf = vec![0u8; 4096];
        let der =
            sigil_core::pem::decode_first(&pem_text, sigil_core::pem::Label::Certificate, &mut buf)
                .unwrap();
        let c = Certificate::parse(der).unwrap();
        (c.not_before(), c.not_after())
    }

    fn cat(&self, out: &str, parts: &[&str]) {
        let body: String = parts
            .iter()
            .map(|p| self.read(&format!("{p}.pem")))
            .collect();
        self.write(out, &body);
    }
}

const INT_EXT: &str = "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

fn leaf_ext(extra: &str) -> String {
    let mut e = format!(
        "subjectAltName=critical,URI:{LEAF_ID},DNS:app.example.org,IP:10.1.2.3\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\n"
    );
    // Later lines for the same key replace earlier ones.
    for line in extra.lines() {
        let key = line.split('=').next().unwrap();
        e = e
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}=")))
            .map(|l| format!("{l}\n"))
            .collect();
        e.push_str(line);
        e.push('\n');
    }
    e
}

/// root -> int -> leaf with the given overrides; anchors.pem, ints.pem and leaf.pem written.
fn standard(root_exts: &[&str], int_ext: &str, leaf_extra: &str) -> Pki {
    let pki = Pki::new();
    pki.root("root", "/O=example.org", root_exts);
    pki.issue(
        "int",
        "/O=spiffe:\\/\\/example.org\\/ns\\/dapr-system\\/dapr-sentry",
        "root",
        int_ext,
        3000,
    );
    pki.issue("leaf", "/", "int", &leaf_ext(leaf_extra), 1);
    pki.cat("anchors.pem", &["root"]);
    pki.cat("ints.pem", &["int"]);
    pki
}

/// [`standard`] without overrides: a chain both tools accept.
fn usual_chain() -> Pki {
    standard(&[], INT_EXT, "")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Valid,
    Invalid,
}

fn rfc3339(t: UnixTime) -> String {
    t.to_string()
}

/// `openssl verify` of leaf.pem against anchors.pem (trusted) and ints.pem (untrusted) at `at`,
/// with the further `options`.
fn openssl_verify(pki: &Pki, at: UnixTime, options: &[&str]) -> Output {
    let epoch = at.as_secs().to_string();
    let mut args = vec!["verify", "-attime", &epoch];
    args.extend_from_slice(options);
    args.extend([
        "-CAfile",
        "anchors.pem",
        "-untrusted",
        "ints.pem",
        "leaf.pem",
    ]);
    openssl(pki.path(), &args)
}

/// `sigil cert verify --anchors <anchors> --leaf <leaf>` with the further `options`.
fn sigil_verify(pki: &Pki, anchors: &str, leaf: &str, options: &[&str]) -> Output {
    let mut args = vec!["cert", "verify", "--anchors", anchors, "--leaf", leaf];
    args.extend_from_slice(options);
    sigil(pki.path(), &args)
}

/// Both tools' verdicts on (anchors.pem, ints.pem, leaf.pem) at `at`.
fn both(
    pki: &Pki,
    at: UnixTime,
    purpose: &str,
    sigil_extra: &[&str],
) -> (Verdict, Verdict, String) {
    let o = openssl_verify(pki, at, &["-purpose", purpose]);
    let usage = match purpose {
        "sslserver" => "server",
        "sslclient" => "client",
        _ => "any",
    };
    let at_text = rfc3339(at);
    let mut args = vec![
        "cert",
        "verify",
        "--anchors",
        "anchors.pem",
        "--intermediates",
        "ints.pem",
        "--leaf",
        "leaf.pem",
        "--at",
        &at_text,
        "--usage",
        usage,
    ];
    args.extend_from_slice(sigil_extra);
    let s = sigil(pki.path(), &args);
    let verdict = |ok: bool| if ok { Verdict::Valid } else { Verdict::Invalid };
    assert_ne!(
        s.status.code(),
        Some(2),
        "sigil found the input unusable: {}",
        text(&s)
    );
    (
        verdict(o.status.success()),
        verdict(s.status.success()),
        format!("openssl: {}\nsigil: {}", text(&o), text(&s)),
    )
}

fn expect(pki: &Pki, at: UnixTime, purpose: &str, want: Verdict, case: &str) {
    let (o, s, why) = both(pki, at, purpose, &[]);
    assert_eq!((o, s), (want, want), "case {case}:\n{why}");
}

/// An hour into the leaf's day of validity (read from the intermediate, issued just before it,
/// so that leaves sigil cannot parse still get a time).
fn mid(pki: &Pki) -> UnixTime {
    let (nb, _) = pki.cert("int");
    UnixTime::from_secs(nb.as_secs() + 3600)
}

/// [`expect`] at [`mid`], for any purpose.
fn expect_mid(pki: &Pki, want: Verdict, case: &str) {
    expect(pki, mid(pki), "any", want, case);
}

#[test]
fn valid_chain_and_peer_names() {
    let pki = usual_chain();
    let at = mid(&pki);
    for purpose in ["sslserver", "sslclient", "any"] {
        expect(&pki, at, purpose, Verdict::Valid, purpose);
    }
    // Peer names: openssl checks DNS and IP itself; SPIFFE only sigil does.
    for (flag, value, want) in [
        ("--spiffe-id", LEAF_ID, true),
        (
            "--spiffe-id",
            "spiffe://example.org/ns/default/other",
            false,
        ),
        ("--trust-domain", "example.org", true),
        ("--trust-domain", "other.org", false),
        ("--dns", "app.example.org", true),
        ("--dns", "other.example.org", false),
        ("--ip", "10.1.2.3", true),
        ("--ip", "10.1.2.4", false),
    ] {
        let (_, s, why) = both(&pki, at, "any", &[flag, value]);
        assert_eq!(s == Verdict::Valid, want, "{flag} {value}\n{why}");
        let openssl_flag = match flag {
            "--dns" => "-verify_hostname",
            "--ip" => "-verify_ip",
            _ => continue,
        };
        let o = openssl_verify(&pki, at, &[openssl_flag, value]);
        assert_eq!(
            o.status.success(),
            want,
            "openssl {openssl_flag} {value}: {}",
            text(&o)
        );
    }
}

#[test]
fn validity_and_skew() {
    let pki = usual_chain();
    let (nb, na) = pki.cert("leaf");
    expect(
        &pki,
        UnixTime::from_secs(na.as_secs() + 86_400),
        "any",
        Verdict::Invalid,
        "expired",
    );
    expect(
        &pki,
        UnixTime::from_secs(nb.as_secs() - 300),
        "any",
        Verdict::Invalid,
        "not yet valid",
    );
    // Inside the skew: openssl has no skew, so compare with openssl at the shifted time.
    let early = UnixTime::from_secs(nb.as_secs() - 300);
    let (_, s, why) = both(&pki, early, "any", &["--skew", "15m"]);
    assert_eq!(s, Verdict::Valid, "5 min early, skew 15m:\n{why}");
    expect(&pki, nb, "any", Verdict::Valid, "at notBefore");
    let too_early = UnixTime::from_secs(nb.as_secs() - 1200);
    let (o, s, why) = both(&pki, too_early, "any", &["--skew", "15m"]);
    assert_eq!(
        (o, s),
        (Verdict::Invalid, Verdict::Invalid),
        "20 min early, skew 15m:\n{why}"
    );
    assert!(
        why.contains("not yet valid") && why.contains("allowed skew 900s"),
        "{why}"
    );
}

#[test]
fn extended_key_usage() {
    let pki = standard(&[], INT_EXT, "extendedKeyUsage=clientAuth");
    let at = mid(&pki);
    expect(
        &pki,
        at,
        "sslserver",
        Verdict::Invalid,
        "clientAuth leaf used for server",
    );
    expect(
        &pki,
        at,
        "sslclient",
        Verdict::Valid,
        "clientAuth leaf used for client",
    );
}

#[test]
fn issuer_rules() {
    let cases = [
        (
            "CA:false intermediate",
            "basicConstraints=critical,CA:false\nkeyUsage=critical,keyCertSign,digitalSignature\n",
            &[][..],
        ),
        (
            "intermediate without basicConstraints",
            "keyUsage=critical,keyCertSign,digitalSignature\n",
            &[][..],
        ),
        (
            "intermediate keyUsage without keyCertSign",
            "basicConstraints=critical,CA:true\nkeyUsage=critical,digitalSignature\n",
            &[][..],
        ),
        (
            "root pathlen:0 with an intermediate",
            INT_EXT,
            &["basicConstraints=critical,CA:true,pathlen:0"][..],
        ),
    ];
    for (case, int_ext, root_exts) in cases {
        let pki = standard(root_exts, int_ext, "");
        expect_mid(&pki, Verdict::Invalid, case);
    }
}

#[test]
fn foreign_root_and_rotation_overlap() {
    let pki = usual_chain();
    let at = mid(&pki);
    // Root B (another name), its own issuer and leaf.
    pki.root("rootb", "/O=example.org rotated", &[]);
    pki.issue("intb", "/O=issuer b", "rootb", INT_EXT, 3000);
    pki.issue("leafb", "/", "intb", &leaf_ext(""), 1);
    pki.cat("anchors.pem", &["rootb"]);
    expect(&pki, at, "any", Verdict::Invalid, "foreign root");
    // Both roots trusted during a rotation: chains to either validate.
    pki.cat("anchors.pem", &["root", "rootb"]);
    pki.cat("ints.pem", &["int", "intb"]);
    expect(&pki, at, "any", Verdict::Valid, "old root during overlap");
    std::fs::copy(pki.path().join("leafb.pem"), pki.path().join("leaf.pem")).unwrap();
    expect(&pki, at, "any", Verdict::Valid, "new root during overlap");
}

#[test]
fn name_constraints() {
    let nc = |c: &str| format!("{INT_EXT}nameConstraints=critical,{c}\n");
    for (case, constraint, leaf_extra, want) in [
        (
            "URI permitted exact host",
            "permitted;URI:example.org",
            "",
            Verdict::Valid,
        ),
        (
            "URI permitted other host",
            "permitted;URI:other.org",
            "",
            Verdict::Invalid,
        ),
        (
            "URI excluded",
            "excluded;URI:example.org",
            "",
            Verdict::Invalid,
        ),
        (
            "DNS permitted",
            "permitted;DNS:example.org,permitted;URI:example.org",
            "",
            Verdict::Valid,
        ),
        (
            "DNS permitted elsewhere",
            "permitted;DNS:evil.com",
            "",
            Verdict::Invalid,
        ),
        (
            "IP excluded",
            "excluded;IP:10.0.0.0/255.0.0.0",
            "",
            Verdict::Invalid,
        ),
        (
            "IP permitted elsewhere",
            "permitted;IP:192.168.0.0/255.255.0.0",
            "",
            Verdict::Invalid,
        ),
        (
            "IP permitted",
            "permitted;IP:10.0.0.0/255.0.0.0",
            "",
            Verdict::Valid,
        ),
    ] {
        let pki = standard(&[], &nc(constraint), leaf_extra);
        expect_mid(&pki, want, case);
    }
    // directoryName: the leaf's subject O=Bad under a CA permitting O=Good.
    let pki = Pki::new();
    pki.root("root", "/O=example.org", &[]);
    pki.write("dn.cnf", "[good]\nO=Good\n");
    pki.issue(
        "int",
        "/O=Issuer",
        "root",
        &format!("{INT_EXT}nameConstraints=critical,permitted;dirName:good\n[good]\nO=Good\n"),
        3000,
    );
    pki.issue("leaf", "/O=Bad/CN=app", "int", &leaf_ext(""), 1);
    pki.cat("anchors.pem", &["root"]);
    pki.cat("ints.pem", &["int"]);
    expect_mid(&pki, Verdict::Invalid, "directoryName outside permitted");
    pki.issue("leaf", "/O=Good/CN=app", "int", &leaf_ext(""), 1);
    expect_mid(&pki, Verdict::Valid, "directoryName inside permitted");
}

#[test]
fn unknown_critical_extension() {
    let pki = standard(&[], INT_EXT, "1.2.3.4=critical,DER:05:00");
    expect_mid(&pki, Verdict::Invalid, "unknown critical extension");
    let pki = standard(&[], INT_EXT, "1.2.3.4=DER:05:00");
    expect_mid(&pki, Verdict::Valid, "unknown non-critical extension");
}

#[test]
fn bad_signature() {
    let pki = usual_chain();
    let at = mid(&pki);
    // Flip a bit near the end of the DER: inside the signature's BIT STRING.
    openssl_ok(
        pki.path(),
        &[
            "x509", "-in", "leaf.pem", "-outform", "der", "-out", "leaf.der",
        ],
    );
    let mut der = std::fs::read(pki.path().join("leaf.der")).unwrap();
    let i = der.len() - 5;
    der[i] ^= 0x01;
    std::fs::write(pki.path().join("leaf.der"), &der).unwrap();
    openssl_ok(
        pki.path(),
        &[
            "x509", "-inform", "der", "-in", "leaf.der", "-out", "leaf.pem",
        ],
    );
    expect(&pki, at, "any", Verdict::Invalid, "bad signature");
}

#[test]
fn unusable_input_exits_2() {
    let pki = usual_chain();
    pki.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
    );
    pki.write("text.txt", "not pem at all\n");
    for (anchors, leaf) in [
        ("missing.pem", "leaf.pem"),
        ("anchors.pem", "text.txt"),
        ("anchors.pem", "garbage.pem"),
    ] {
        let out = sigil_verify(&pki, anchors, leaf, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{anchors} {leaf}: {}",
            text(&out)
        );
        assert!(!text(&out).is_empty());
    }
    let out = sigil_verify(&pki, "anchors.pem", "leaf.pem", &["--at", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn csr_new_is_accepted_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, id) in [None, Some(LEAF_ID)].into_iter().enumerate() {
        let (key, csr) = (format!("k{i}.pem"), format!("c{i}.pem"));
        let mut args = vec!["csr", "new", "--key", key.as_str(), "--out", csr.as_str()];
        if let Some(id) = id {
            args.extend(["--spiffe-id", id]);
        }
        let out = sigil(d, &args);
        assert!(out.status.success(), "{}", text(&out));
        let v = openssl(d, &["req", "-in", &csr, "-noout", "-verify"]);
        assert!(
            v.status.success() && text(&v).contains("verify OK"),
            "{}",
            text(&v)
        );
        let t = text(&openssl(d, &["req", "-in", &csr, "-noout", "-text"]));
        assert!(
            t.contains("Subject: \n") || t.contains("Subject:\n") || !t.contains("Subject: C"),
            "{t}"
        );
        if let Some(id) = id {
            assert!(t.contains(&format!("URI:{id}")), "{t}");
        }
        // The key file: 0600, readable by openssl, and the CSR's key.
        assert_eq!(common::file_mode(&d.join(&key)), 0o600);
        let from_key = openssl(d, &["pkey", "-in", &key, "-pubout"]);
        let from_csr = openssl(d, &["req", "-in", &csr, "-noout", "-pubkey"]);
        assert!(from_key.status.success());
        assert_eq!(from_key.stdout, from_csr.stdout);
    }
    // Never over an existing file without --force; the old key is left as it was.
    let before = std::fs::read(d.join("k0.pem")).unwrap();
    let out = sigil(d, &["csr", "new", "--key", "k0.pem", "--out", "new.pem"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already exists"));
    assert_eq!(std::fs::read(d.join("k0.pem")).unwrap(), before);
    assert!(!d.join("new.pem").exists(), "nothing written when refusing");
    let out = sigil(
        d,
        &[
            "csr", "new", "--key", "k0.pem", "--out", "c0.pem", "--force",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(std::fs::read(d.join("k0.pem")).unwrap(), before);
    let out = sigil(
        d,
        &[
            "csr",
            "new",
            "--key",
            "k9.pem",
            "--out",
            "c9.pem",
            "--spiffe-id",
            "spiffe://Bad/x",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.join("k9.pem").exists());
}

#[test]
fn openssl_keys_and_csrs_are_read() {
    use sigil_core::crypto::{RustCryptoSignatureVerifier, Signer as _};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_ok(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
    );
    openssl_ok(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "sec1.pem",
            "-out",
            "pkcs8.pem",
        ],
    );
    let mut scratch = [0u8; 256];
    let a = sigil_core::key::SoftwareKey::from_pem(
        &std::fs::read_to_string(d.join("sec1.pem")).unwrap(),
        &mut scratch,
    )
    .unwrap();
    let b = sigil_core::key::SoftwareKey::from_pem(
        &std::fs::read_to_string(d.join("pkcs8.pem")).unwrap(),
        &mut scratch,
    )
    .unwrap();
    assert_eq!(a.public_key(), b.public_key());
    // An openssl CSR with a subject and a SAN: parsed, self-signature checked; tampered: refused.
    openssl_ok(
        d,
        &[
            "req",
            "-new",
            "-key",
            "sec1.pem",
            "-subj",
            "/CN=x/O=y",
            "-addext",
            &format!("subjectAltName=URI:{LEAF_ID}"),
            "-outform",
            "der",
            "-out",
            "req.der",
        ],
    );
    let der = std::fs::read(d.join("req.der")).unwrap();
    let csr = sigil_core::csr::Csr::parse(&der).unwrap();
    csr.verify_signature(&RustCryptoSignatureVerifier).unwrap();
    assert_eq!(csr.public_key(), a.public_key());
    let mut bad = der.clone();
    let pos = bad.windows(3).position(|w| w == b"app").unwrap();
    bad[pos] = b'b';
    let csr = sigil_core::csr::Csr::parse(&bad).unwrap();
    assert!(csr.verify_signature(&RustCryptoSignatureVerifier).is_err());
}

#[test]
fn inspect_lists_every_certificate() {
    let pki = standard(
        &[],
        &format!("{INT_EXT}nameConstraints=critical,permitted;URI:example.org\n"),
        "",
    );
    pki.cat("chain.pem", &["leaf", "int", "root"]);
    let out = sigil(pki.path(), &["cert", "inspect", "chain.pem"]);
    assert!(out.status.success());
    let t = text(&out);
    for want in [
        "certificate #0",
        "certificate #2",
        LEAF_ID,
        "DNS:app.example.org",
        "IP:10.1.2.3",
        "ECDSA P-256",
        "extKeyUsage: serverAuth, clientAuth",
        "basicConstraints (critical): CA:true",
        "nameConstraints (critical)",
        "O=example.org",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}

/// Issue 11 (7a): an anchors file holding certificates the core cannot use as anchors (an RSA
/// root first, a root with an unknown critical extension) and the right P-256 root last:
/// openssl accepts, and so does sigil, naming each one it skipped.
#[test]
fn anchors_the_core_cannot_use_are_skipped() {
    let pki = usual_chain();
    let at = mid(&pki);
    pki.rsa_root("rsa", "/O=RSA Root");
    pki.root("crit", "/O=Critical Root", &["1.2.3.4=critical,DER:05:00"]);
    pki.cat("anchors.pem", &["rsa", "crit", "root"]);
    let (o, s, why) = both(&pki, at, "any", &[]);
    assert_eq!((o, s), (Verdict::Valid, Verdict::Valid), "{why}");
    for want in [
        "warning: anchors.pem: certificate #0 (O=RSA Root) skipped: trust anchor key: unsupported",
        "warning: anchors.pem: certificate #1 (O=Critical Root) skipped: trust anchor: unknown critical extension",
        "trust anchor #2: subject=O=example.org",
    ] {
        assert!(why.contains(want), "missing {want:?} in:\n{why}");
    }
    // A certificate whose DER does not parse is skipped too; openssl refuses the whole file.
    pki.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
    );
    pki.cat("anchors.pem", &["garbage", "root"]);
    let (o, s, why) = both(&pki, at, "any", &[]);
    assert_eq!((o, s), (Verdict::Invalid, Verdict::Valid), "{why}");
    assert!(
        why.contains("certificate #0 ((unparseable)) skipped"),
        "{why}"
    );
    // Nothing usable at all is unusable input.
    pki.cat("anchors.pem", &["rsa", "crit"]);
    let out = sigil_verify(&pki, "anchors.pem", "leaf.pem", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no usable trust anchor"),
        "{}",
        text(&out)
    );
}

/// Issue 11 (7b): a self-issued intermediate (the root's name, another key) under a root with
/// pathlen:0 does not count toward the constraint; openssl agrees. For the depth cap, openssl's
/// -verify_depth counts it, sigil's --max-depth does not.
#[test]
fn self_issued_intermediates_do_not_count() {
    let pki = Pki::new();
    pki.root(
        "root",
        "/O=example.org",
        &["basicConstraints=critical,CA:true,pathlen:0"],
    );
    pki.issue("int", "/O=example.org", "root", INT_EXT, 3000);
    pki.issue("leaf", "/", "int", &leaf_ext(""), 1);
    pki.cat("anchors.pem", &["root"]);
    pki.cat("ints.pem", &["int"]);
    expect_mid(&pki, Verdict::Valid, "self-issued under pathlen:0");
    // Another name under pathlen:0: both refuse.
    pki.issue("int", "/O=Other", "root", INT_EXT, 3000);
    pki.issue("leaf", "/", "int", &leaf_ext(""), 1);
    expect_mid(&pki, Verdict::Invalid, "not self-issued");

    // root -> I -> I' (self-issued) -> leaf, with a cap of one intermediate.
    let pki = usual_chain();
    pki.issue("int2", "/O=I", "root", INT_EXT, 3000);
    pki.issue("int3", "/O=I", "int2", INT_EXT, 3000);
    pki.issue("leaf", "/", "int3", &leaf_ext(""), 1);
    pki.cat("ints.pem", &["int2", "int3"]);
    let at = mid(&pki);
    let (o, s, why) = both(&pki, at, "any", &["--max-depth", "1"]);
    assert_eq!(s, Verdict::Valid, "{why}");
    assert_eq!(o, Verdict::Valid, "openssl without a depth limit: {why}");
    let o = openssl_verify(&pki, at, &["-verify_depth", "1"]);
    assert!(!o.status.success(), "openssl -verify_depth 1: {}", text(&o));
}

/// Issue 11 (7c, 7d): wildcard and malformed names under nameConstraints. sigil refuses a
/// wildcard whose names an excluded subtree touches and any malformed dNSName or rfc822Name;
/// openssl 3.0 compares bytes and accepts both (the differences are asserted, not hidden).
#[test]
fn names_under_constraints_beyond_openssl() {
    let nc = |c: &str| format!("{INT_EXT}nameConstraints=critical,{c}\n");
    let san = |names: &str| format!("subjectAltName=critical,URI:{LEAF_ID},{names}");
    for (case, constraint, names, want_openssl, want_sigil) in [
        (
            "wildcard under an excluded name below it",
            "excluded;DNS:bad.example.com",
            "DNS:*.example.com",
            Verdict::Valid,
            Verdict::Invalid,
        ),
        (
            "wildcard under a permitted name below it",
            "permitted;DNS:www.example.com,permitted;URI:example.org",
            "DNS:*.example.com",
            Verdict::Invalid,
            Verdict::Invalid,
        ),
        (
            "wildcard under its own domain",
            "permitted;DNS:example.com,permitted;URI:example.org",
            "DNS:*.example.com",
            Verdict::Valid,
            Verdict::Valid,
        ),
        (
            "empty label",
            "permitted;DNS:example.com,permitted;URI:example.org",
            "DNS:a..example.com",
            Verdict::Valid,
            Verdict::Invalid,
        ),
        (
            "trailing dot",
            "permitted;DNS:example.com,permitted;URI:example.org",
            "DNS:x.example.com.",
            Verdict::Invalid,
            Verdict::Invalid,
        ),
        (
            "malformed dNSName under a URI constraint",
            "permitted;URI:example.org",
            "DNS:a..b",
            Verdict::Valid,
            Verdict::Invalid,
        ),
        (
            "space in a mailbox",
            "permitted;email:example.com,permitted;URI:example.org",
            "email:a b@example.com",
            Verdict::Valid,
            Verdict::Invalid,
        ),
        (
            "well-formed mailbox",
            "permitted;email:example.com,permitted;URI:example.org",
            "email:a@example.com",
            Verdict::Valid,
            Verdict::Valid,
        ),
    ] {
        let pki = standard(&[], &nc(constraint), &san(names));
        let (o, s, why) = both(&pki, mid(&pki), "any", &[]);
        assert_eq!((o, s), (want_openssl, want_sigil), "case {case}:\n{why}");
    }
}

/// Issue 11 (7e): key identifiers are not required (openssl agrees by default); an
/// authorityKeyIdentifier naming another key than the issuer's subjectKeyIdentifier rules
/// that issuer out (openssl agrees).
#[test]
fn key_identifiers() {
    let no_ids = "subjectKeyIdentifier=none\nauthorityKeyIdentifier=none";
    let int_ext = format!(
        "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n{no_ids}\n"
    );
    let pki = standard(&[], &int_ext, no_ids);
    for name in ["int", "leaf"] {
        let out = openssl(
            pki.path(),
            &["x509", "-in", &format!("{name}.pem"), "-noout", "-text"],
        );
        assert!(
            !text(&out).contains("Key Identifier"),
            "{name}: {}",
            text(&out)
        );
    }
    expect_mid(&pki, Verdict::Valid, "no key identifiers");
    let pki = standard(
        &[],
        INT_EXT,
        "authorityKeyIdentifier=none\n2.5.29.35=DER:30:16:80:14:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14",
    );
    expect_mid(&pki, Verdict::Invalid, "foreign authorityKeyIdentifier");
}

/// `sigil cert verify` with an anchors file of 40 certificates (an RSA root first, the right
/// root last): valid through the 40th, the first named as skipped; openssl agrees.
#[test]
fn forty_anchors_rsa_first_the_right_root_last() {
    let pki = usual_chain();
    let at = mid(&pki);
    let right = std::fs::read_to_string(pki.path().join("root.pem")).unwrap();
    let forty = common::forty_anchors(pki.path(), &right);
    std::fs::copy(&forty, pki.path().join("anchors.pem")).unwrap();
    let (o, s, why) = both(&pki, at, "any", &[]);
    assert_eq!((o, s), (Verdict::Valid, Verdict::Valid), "{why}");
    assert!(
        why.contains("certificate #0 (CN=an RSA root) skipped"),
        "{why}"
    );
    assert!(why.contains("trust anchor #39"), "{why}");
}
