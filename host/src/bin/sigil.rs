//! The `sigil` command line. Only argument parsing lives here; the work is in
//! `sigil_host::commands`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sigil_core::path::Usage;
use sigil_core::UnixTime;
use sigil_host::commands::{self, ExpectedName, VerifyArgs, VerifyOutcome};

/// Sigil: workload identity and mutual TLS, Dapr Sentry-compatible, from MCU to server.
#[derive(Parser)]
#[command(name = "sigil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certificate signing requests.
    #[command(subcommand)]
    Csr(CsrCommand),
    /// Certificates: validate and inspect.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CsrCommand {
    /// Make a new ECDSA P-256 key (PKCS#8 PEM, mode 0600) and a CSR for it, with an empty
    /// subject as Dapr sends and optionally a SPIFFE ID as URI SAN.
    New {
        /// Where to write the private key (refused if it exists, unless --force).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the CSR, PEM (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        /// SPIFFE ID to request, e.g. spiffe://example.org/ns/default/app.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Validate a certificate path (RFC 5280). Exit 0: valid (the path is printed);
    /// 1: invalid (the reason is printed); 2: unusable input.
    Verify(VerifyCli),
    /// Describe every certificate in a PEM file.
    Inspect {
        /// PEM file with one or more certificates.
        file: PathBuf,
    },
}

#[derive(Args)]
struct VerifyCli {
    /// PEM file with one or more trust anchors.
    #[arg(long)]
    anchors: PathBuf,
    /// PEM file with untrusted intermediates, in any order.
    #[arg(long)]
    intermediates: Option<PathBuf>,
    /// PEM file whose first certificate is the leaf.
    #[arg(long)]
    leaf: PathBuf,
    /// Validate at this time (RFC 3339, e.g. 2026-11-22T12:00:00Z) instead of now.
    #[arg(long, value_parser = parse_time)]
    at: Option<UnixTime>,
    /// Allowed clock skew, e.g. 15m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    skew: Duration,
    /// What the leaf is for.
    #[arg(long, value_enum, default_value_t = UsageArg::Any)]
    usage: UsageArg,
    /// The leaf's SPIFFE ID must be exactly this.
    #[arg(long, group = "name")]
    spiffe_id: Option<String>,
    /// The leaf's SPIFFE ID must be in this trust domain.
    #[arg(long, group = "name")]
    trust_domain: Option<String>,
    /// The leaf must carry this DNS name (RFC 6125 wildcards).
    #[arg(long, group = "name")]
    dns: Option<String>,
    /// The leaf must carry this IP address.
    #[arg(long, group = "name")]
    ip: Option<std::net::IpAddr>,
    /// Most intermediates in a path.
    #[arg(long, default_value_t = sigil_core::path::DEFAULT_MAX_DEPTH)]
    max_depth: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum UsageArg {
    Server,
    Client,
    Any,
}

fn parse_time(s: &str) -> Result<UnixTime, String> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("not an RFC 3339 time: {e}"))?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "times before 1970 are not supported".to_owned())?
        .as_secs();
    Ok(UnixTime::from_secs(secs))
}

fn now() -> UnixTime {
    UnixTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Csr(CsrCommand::New {
            key,
            out,
            spiffe_id,
            force,
        }) => match commands::csr_new(&key, &out, spiffe_id.as_deref(), force) {
            Ok(_) => {
                println!(
                    "wrote key {} (mode 0600) and CSR {}",
                    key.display(),
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Cert(CertCommand::Verify(v)) => {
            let name = match (v.spiffe_id, v.trust_domain, v.dns, v.ip) {
                (Some(id), ..) => ExpectedName::SpiffeId(id),
                (_, Some(td), ..) => ExpectedName::TrustDomain(td),
                (_, _, Some(dns), _) => ExpectedName::Dns(dns),
                (_, _, _, Some(ip)) => ExpectedName::Ip(ip),
                _ => ExpectedName::None,
            };
            let args = VerifyArgs {
                anchors: v.anchors,
                intermediates: v.intermediates,
                leaf: v.leaf,
                at: v.at.unwrap_or_else(now),
                skew: v.skew,
                usage: match v.usage {
                    UsageArg::Server => Usage::ServerAuth,
                    UsageArg::Client => Usage::ClientAuth,
                    UsageArg::Any => Usage::Any,
                },
                name,
                max_depth: v.max_depth,
            };
            match commands::cert_verify(&args) {
                Ok(VerifyOutcome::Valid(text)) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Ok(VerifyOutcome::Invalid(reason)) => {
                    println!("{reason}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Cert(CertCommand::Inspect { file }) => match commands::cert_inspect(&file) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
