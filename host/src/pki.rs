//! Files of keys and certificates on a host: PEM in, owned DER out; secret files written
//! atomically with mode 0600 and never over an existing file unless asked; certificates
//! described for people.
//!
//! The rule for trust anchors is [`anchor_bundle`]: a certificate the core cannot use as an
//! anchor (it does not parse, has an unknown critical extension, or a key signatures cannot be
//! verified with, such as RSA) is skipped and the others are kept, so one such certificate in a
//! bundle never makes validation through the others fail. [`crate::trust::Anchors`] applies
//! it once per set of anchors and warns about each skipped one.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sigil_core::cert::{Certificate, Purpose};
use sigil_core::chain::{BundleError, TrustBundle};
use sigil_core::names::GeneralName;
use sigil_core::pem;

/// Why an input could not be used at all (as opposed to being invalid).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's PEM was malformed.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: pem::Error,
    },
    /// A file held no block of the kind needed.
    #[error("{path}: no {label} PEM block found")]
    NoBlock {
        /// The file.
        path: PathBuf,
        /// The label looked for.
        label: &'static str,
    },
    /// A certificate in a file did not parse.
    #[error("{path}: certificate #{index}: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Which certificate (0-based).
        index: usize,
        /// The cause.
        source: sigil_core::cert::Error,
    },
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists and overwriting was not asked for.
    #[error("{0}: already exists (use --force to replace it)")]
    Exists(PathBuf),
}

/// A certificate left out of a trust bundle, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedAnchor {
    /// Its position among the certificates given (0-based, as in the file).
    pub index: usize,
    /// Its subject (RFC 4514), or `(unparseable)`.
    pub subject: String,
    /// Why the core cannot use it.
    pub reason: BundleError,
}

impl std::fmt::Display for SkippedAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate #{} ({}) skipped: {}",
            self.index, self.subject, self.reason
        )
    }
}

/// The host's one rule for trust anchors: a bundle of the certificates in `ders` the core can
/// use as anchors ([`TrustBundle::add`]), in order, and the ones skipped: a certificate that
/// does not parse, has an unknown critical extension or a key signatures cannot be verified
/// with (RSA, P-384, ...), or does not fit the capacity `N`. Nothing is logged here:
/// [`crate::trust::Anchors`] logs the skipped ones once, when it loads them.
pub fn anchor_bundle<const N: usize>(ders: &[Vec<u8>]) -> (TrustBundle<'_, N>, Vec<SkippedAnchor>) {
    let mut bundle = TrustBundle::new();
    let mut skipped = Vec::new();
    for (index, der) in ders.iter().enumerate() {
        if let Err(reason) = bundle.add(der) {
            skipped.push(SkippedAnchor {
                index,
                subject: anchor_subject(der),
                reason,
            });
        }
    }
    (bundle, skipped)
}

/// A certificate's subject for a message, even when the core cannot parse the certificate.
fn anchor_subject(der: &[u8]) -> String {
    use x509_cert::der::Decode as _;
    match Certificate::parse(der) {
        Ok(c) => name_to_string(c.subject()),
        Err(_) => x509_cert::Certificate::from_der(der).map_or_else(
            |_| "(unparseable)".to_owned(),
            |c| c.tbs_certificate.subject.to_string(),
        ),
    }
}

/// A malformed PEM block: which (1-based, counting the blocks of the label looked for that
/// came before it), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PEM block #{index}: {source}")]
pub struct PemError {
    /// The block's position.
    pub index: usize,
    /// The core's reason.
    pub source: pem::Error,
}

/// The one PEM reader of the host: every block labelled `label` in `text`, decoded, in order;
/// blocks with other labels are passed over.
///
/// # Errors
///
/// [`PemError`] for the first malformed block.
pub fn decode_pem(text: &str, label: pem::Label) -> Result<Vec<Vec<u8>>, PemError> {
    let mut out = Vec::new();
    for block in pem::blocks(text) {
        let index = out.len() + 1;
        let decoded = block.and_then(|block| {
            if block.label() != Some(label) {
                return Ok(None);
            }
            let mut buf = vec![0u8; block.decoded_len_max()];
            let len = block.decode(&mut buf)?.len();
            buf.truncate(len);
            Ok(Some(buf))
        });
        match decoded {
            Ok(Some(der)) => out.push(der),
            Ok(None) => {}
            Err(source) => return Err(PemError { index, source }),
        }
    }
    Ok(out)
}

/// Every certificate in PEM `bytes` (a file's contents, a gRPC field), DER.
///
/// # Errors
///
/// A description if it is not UTF-8 PEM, a block is malformed, or it holds no certificate.
pub fn pem_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 PEM".to_owned())?;
    let out = decode_pem(text, pem::Label::Certificate).map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Err("no certificate".into());
    }
    Ok(out)
}

/// Every block labelled `label` in the PEM file at `path`, decoded ([`decode_pem`]).
///
/// # Errors
///
/// [`InputError`] if the file cannot be read, its PEM is malformed, or it holds no such block.
pub fn read_pem_blocks(path: &Path, label: pem::Label) -> Result<Vec<Vec<u8>>, InputError> {
    let text = fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    let out = decode_pem(&text, label).map_err(|e| InputError::Pem {
        path: path.to_owned(),
        source: e.source,
    })?;
    if out.is_empty() {
        return Err(InputError::NoBlock {
            path: path.to_owned(),
            label: label.as_str(),
        });
    }
    Ok(out)
}

/// PEM text for `der` under `label`.
pub fn to_pem(label: pem::Label, der: &[u8]) -> String {
    let mut buf = vec![0u8; pem::encoded_len(label, der.len())];
    // The buffer has exactly the encoded length, so encoding cannot fail.
    pem::encode(label, der, &mut buf)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory with
/// `mode`, flushed to disk, then moved into place, and the directory flushed. Without `force`,
/// an existing file is never replaced (the move is a hard link, which fails if the name
/// exists). The temporary file's name is this process's and this call's: one a crash left
/// behind (a restarted container has the same process ID) is removed, not tripped over.
///
/// # Errors
///
/// [`InputError::Exists`] or [`InputError::Write`]; `path` is untouched then.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    force: bool,
) -> Result<(), InputError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let werr = |source| InputError::Write {
        path: path.to_owned(),
        source,
    };
    if !force && path.exists() {
        return Err(InputError::Exists(path.to_owned()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}-{call}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        if force {
            fs::rename(&tmp, path)?;
        } else {
            fs::hard_link(&tmp, path)?;
        }
        // The new name survives a power loss only once the directory is on disk too.
        fs::File::open(dir)?.sync_all()
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(InputError::Exists(path.to_owned()))
        }
        Err(e) => Err(werr(e)),
    }
}

/// A `Name` (whole DER) in RFC 4514 form, or `(empty)`.
pub fn name_to_string(name: &[u8]) -> String {
    use x509_cert::der::Decode as _;
    if name == [0x30, 0x00] {
        return "(empty)".to_owned();
    }
    x509_cert::name::Name::from_der(name)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "(unreadable name)".to_owned())
}

/// One line per subjectAltName entry.
pub fn describe_names<'a>(names: impl Iterator<Item = GeneralName<'a>>) -> Vec<String> {
    names
        .map(|n| match n {
            GeneralName::Dns(d) => format!("DNS:{d}"),
            GeneralName::Uri(u) => format!("URI:{u}"),
            GeneralName::Email(e) => format!("email:{e}"),
            GeneralName::Ip(ip) => match <[u8; 4]>::try_from(ip) {
                Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
                Err(_) => match <[u8; 16]>::try_from(ip) {
                    Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                    // A name constraint: address and mask.
                    Err(_) => match (<[u8; 8]>::try_from(ip), <[u8; 32]>::try_from(ip)) {
                        (Ok(v4), _) => format!(
                            "IP:{}/{}",
                            std::net::Ipv4Addr::new(v4[0], v4[1], v4[2], v4[3]),
                            std::net::Ipv4Addr::new(v4[4], v4[5], v4[6], v4[7])
                        ),
                        (_, Ok(v6)) => {
                            let (a, m) = v6.split_at(16);
                            let a: [u8; 16] = a.try_into().unwrap_or_default();
                            let m: [u8; 16] = m.try_into().unwrap_or_default();
                            format!(
                                "IP:{}/{}",
                                std::net::Ipv6Addr::from(a),
                                std::net::Ipv6Addr::from(m)
                            )
                        }
                        _ => format!("IP:{}", hex(ip)),
                    },
                },
            },
            GeneralName::DirectoryName(dn) => format!("DirName:{}", name_to_string(dn)),
            GeneralName::Unsupported(tag) => format!("(unsupported name type [{tag}])"),
            _ => "(unknown name)".to_owned(),
        })
        .collect()
}

/// Lower-case hex with `:` between bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A one-line summary of a certificate: subject, SPIFFE ID, validity.
pub fn summary(cert: &Certificate<'_>) -> String {
    let mut s = format!("subject={}", name_to_string(cert.subject()));
    if let Some(id) = cert.spiffe_ids().next() {
        let _ = write!(s, " spiffe_id={id}");
    }
    let _ = write!(
        s,
        " not_before={} not_after={}",
        cert.not_before(),
        cert.not_after()
    );
    s
}

/// A multi-line description of a certificate, for `sigil cert inspect`.
pub fn describe(der: &[u8]) -> String {
    let cert = match Certificate::parse(der) {
        Ok(c) => c,
        Err(e) => return format!("  unparsable certificate: {e}\n"),
    };
    let mut s = String::new();
    let _ = writeln!(s, "  subject:     {}", name_to_string(cert.subject()));
    let _ = writeln!(s, "  issuer:      {}", name_to_string(cert.issuer()));
    let _ = writeln!(s, "  serial:      {}", hex(cert.serial()));
    let _ = writeln!(s, "  not before:  {}", cert.not_before());
    let _ = writeln!(s, "  not after:   {}", cert.not_after());
    let _ = writeln!(
        s,
        "  key:         {}",
        cert.public_key()
            .map_or_else(|e| format!("unsupported ({e})"), |k| k.kind().to_owned())
    );
    let _ = writeln!(
        s,
        "  signature:   {}",
        cert.signature_scheme()
            .map_or_else(|e| format!("unsupported ({e})"), |k| k.to_string())
    );
    let spiffe: Vec<String> = cert.spiffe_ids().map(|i| i.to_string()).collect();
    let _ = writeln!(
        s,
        "  SPIFFE ID:   {}",
        if spiffe.is_empty() {
            "(none)".to_owned()
        } else {
            spiffe.join(", ")
        }
    );
    let sans = cert
        .subject_alt_names()
        .map(|n| describe_names(n.iter()))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "  SANs:        {}",
        if sans.is_empty() {
            "(none)".to_owned()
        } else {
            sans.join(", ")
        }
    );
    let _ = writeln!(s, "  extensions:");
    for line in describe_extensions(&cert) {
        let _ = writeln!(s, "    {line}");
    }
    s
}

fn describe_extensions(cert: &Certificate<'_>) -> Vec<String> {
    use x509_cert::der::Decode as _;
    let mut out = Vec::new();
    let parsed = x509_cert::Certificate::from_der(cert.der()).ok();
    let exts = parsed
        .as_ref()
        .and_then(|c| c.tbs_certificate.extensions.as_ref());
    for ext in exts.into_iter().flatten() {
        let crit = if ext.critical { " (critical)" } else { "" };
        let oid = ext.extn_id.to_string();
        let text = match oid.as_str() {
            "2.5.29.19" => cert.basic_constraints().map_or_else(String::new, |b| {
                format!(
                    "basicConstraints{crit}: CA:{}{}",
                    b.ca,
                    b.path_len
                        .map(|p| format!(", pathLen:{p}"))
                        .unwrap_or_default()
                )
            }),
            "2.5.29.15" => cert.key_usage().map_or_else(String::new, |k| {
                format!(
                    "keyUsage{crit}: {}",
                    k.names().collect::<Vec<_>>().join(", ")
                )
            }),
            "2.5.29.37" => cert.ext_key_usage().map_or_else(String::new, |e| {
                let names: Vec<String> = e
                    .purposes()
                    .map(|p| match p {
                        Purpose::ServerAuth => "serverAuth".to_owned(),
                        Purpose::ClientAuth => "clientAuth".to_owned(),
                        Purpose::Any => "anyExtendedKeyUsage".to_owned(),
                        Purpose::Other(o) => format!("OID({})", hex(o)),
                        _ => "(unknown)".to_owned(),
                    })
                    .collect();
                format!("extKeyUsage{crit}: {}", names.join(", "))
            }),
            "2.5.29.17" => format!("subjectAltName{crit}"),
            "2.5.29.30" => cert.name_constraints().map_or_else(String::new, |nc| {
                let p = describe_names(nc.permitted());
                let x = describe_names(nc.excluded());
                format!(
                    "nameConstraints{crit}: permitted [{}] excluded [{}]",
                    p.join(", "),
                    x.join(", ")
                )
            }),
            "2.5.29.35" => format!(
                "authorityKeyIdentifier{crit}: {}",
                cert.authority_key_id()
                    .map(hex)
                    .unwrap_or_else(|| "(no keyIdentifier)".to_owned())
            ),
            "2.5.29.14" => format!(
                "subjectKeyIdentifier{crit}: {}",
                cert.subject_key_id().map(hex).unwrap_or_default()
            ),
            _ => format!("{oid}{crit}"),
        };
        out.push(text);
    }
    out
}
