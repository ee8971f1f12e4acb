//! Dapr's `Configuration` resource, as Sentry reads it (`--config FILE`): the `spec.mtls`
//! fields `workloadCertTTL`, `allowedClockSkew` and `tokenValidators`; sidecars read
//! `spec.mtls.enabled` from the same resource. Durations are Go
//! duration strings (`24h`, `15m`, `1h30m`, `1.5h`, `300ms`). Unknown fields are ignored, as
//! Kubernetes does; a malformed file is an error (Sentry does not start on a guess).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Defaults: 24 h certificates, back-dated 15 min.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Dapr's `allowedClockSkew` default.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The YAML does not parse or has wrong types.
    #[error("{path}: {source}")]
    Yaml {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_norway::Error,
    },
    /// A duration is not a Go duration.
    #[error("{field}: {value:?} is not a duration (Go syntax: 24h, 15m, 1h30m, 300ms)")]
    Duration {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A duration outside what Sentry accepts.
    #[error("{field}: {value:?} is out of range ({rule})")]
    Range {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// The rule.
        rule: &'static str,
    },
    /// A token validator other than `jwks` is listed (Dapr allows only that one here).
    #[error("spec.mtls.tokenValidators: {0:?} cannot be configured (only \"jwks\" can)")]
    Validator(String),
    /// The jwks validator has no `source`.
    #[error("spec.mtls.tokenValidators[jwks].options.source is required")]
    JwksSource,
}

/// What Sentry takes from the Configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentryConfig {
    /// Workload certificate lifetime.
    pub workload_cert_ttl: Duration,
    /// How far notBefore is back-dated.
    pub allowed_clock_skew: Duration,
    /// The JWKS validator's key source, if configured (then insecure is off and there is no
    /// default validator, as in Dapr).
    pub jwks_source: Option<String>,
    /// `spec.mtls.enabled` (sidecars: mutual TLS between them); on unless set to false.
    pub mtls_enabled: bool,
    /// `spec.accessControl` (sidecars: who may invoke this app; [`super::acl`]).
    pub access_control: Option<super::acl::AccessControlSpec>,
}

impl Default for SentryConfig {
    fn default() -> Self {
        Self {
            workload_cert_ttl: DEFAULT_TTL,
            allowed_clock_skew: DEFAULT_SKEW,
            jwks_source: None,
            mtls_enabled: true,
            access_control: None,
        }
    }
}

#[derive(Deserialize, Default)]
struct Document {
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    mtls: Option<Mtls>,
    #[serde(default)]
    access_control: Option<super::acl::AccessControlSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Mtls {
    enabled: Option<bool>,
    #[serde(rename = "workloadCertTTL")]
    workload_cert_ttl: Option<String>,
    allowed_clock_skew: Option<String>,
    #[serde(default)]
    token_validators: Vec<TokenValidator>,
}

#[derive(Deserialize)]
struct TokenValidator {
    name: String,
    #[serde(default)]
    options: std::collections::BTreeMap<String, serde_norway::Value>,
}

impl SentryConfig {
    /// Reads a Configuration file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Yaml { source, .. } => ConfigError::Yaml {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses a Configuration document.
    ///
    /// # Errors
    ///
    /// [`ConfigError`].
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let doc: Document = serde_norway::from_str(text).map_err(|source| ConfigError::Yaml {
            path: String::new(),
            source,
        })?;
        let mut out = Self {
            access_control: doc.spec.access_control,
            ..Self::default()
        };
        let Some(mtls) = doc.spec.mtls else {
            return Ok(out);
        };
        out.mtls_enabled = mtls.enabled.unwrap_or(true);
        if let Some(v) = mtls.workload_cert_ttl.filter(|v| !v.is_empty()) {
            let d = bounded(&v, "spec.mtls.workloadCertTTL")?;
            if d < Duration::from_secs(1) {
                return Err(ConfigError::Range {
                    field: "spec.mtls.workloadCertTTL",
                    value: v,
                    rule: "at least 1s",
                });
            }
            out.workload_cert_ttl = d;
        }
        if let Some(v) = mtls.allowed_clock_skew.filter(|v| !v.is_empty()) {
            out.allowed_clock_skew = bounded(&v, "spec.mtls.allowedClockSkew")?;
        }
        for v in mtls.token_validators {
            if !v.name.eq_ignore_ascii_case("jwks") {
                return Err(ConfigError::Validator(v.name));
            }
            let source = v
                .options
                .get("source")
                .and_then(|s| s.as_str())
                .filter(|s| !s.is_empty())
                .ok_or(ConfigError::JwksSource)?;
            out.jwks_source = Some(source.to_owned());
        }
        Ok(out)
    }
}

/// Go's largest duration, about 292 years: longer values are refused (Go cannot parse them).
const MAX_DURATION: Duration = Duration::from_secs(2_562_047 * 3600);

fn bounded(v: &str, field: &'static str) -> Result<Duration, ConfigError> {
    let d = go_duration(v).ok_or_else(|| ConfigError::Duration {
        field,
        value: v.to_owned(),
    })?;
    if d > MAX_DURATION {
        return Err(ConfigError::Range {
            field,
            value: v.to_owned(),
            rule: "at most 2562047h, Go's limit",
        });
    }
    Ok(d)
}

/// Parses a Go duration (`time.ParseDuration`): a sequence of decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is zero.
/// Negative durations are refused.
pub fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s| go_duration(s);
        assert_eq!(d("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(d("15m"), Some(Duration::from_secs(900)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5_400)));
        assert_eq!(d("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in ["", "h", "10", "-5m", "5 m", "1d", "1h-2m", "."] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn dapr_configuration() {
        let c = SentryConfig::parse(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\n\
             spec:\n  mtls:\n    enabled: true\n    workloadCertTTL: \"2h\"\n    allowedClockSkew: 1m\n\
             \x20   tokenValidators:\n      - name: jwks\n        options:\n          source: /etc/jwks.json\n",
        )
        .unwrap();
        assert_eq!(c.workload_cert_ttl, Duration::from_secs(7200));
        assert_eq!(c.allowed_clock_skew, Duration::from_secs(60));
        assert_eq!(c.jwks_source.as_deref(), Some("/etc/jwks.json"));
        assert_eq!(
            SentryConfig::parse("kind: Configuration\n").unwrap(),
            SentryConfig::default()
        );
        assert!(matches!(
            SentryConfig::parse("spec:\n  mtls:\n    workloadCertTTL: forever\n"),
            Err(ConfigError::Duration { .. })
        ));
        for bad in ["0s", "3000000000000000h"] {
            let doc = format!("spec:\n  mtls:\n    workloadCertTTL: {bad}\n");
            assert!(
                matches!(SentryConfig::parse(&doc), Err(ConfigError::Range { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            SentryConfig::parse("spec:\n  mtls:\n    tokenValidators:\n      - name: kubernetes\n"),
            Err(ConfigError::Validator(_))
        ));
        assert!(SentryConfig::parse("spec: [").is_err());
    }
}
