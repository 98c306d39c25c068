//! `portcullis check-config`: the configuration check, as `portcullis serve` would run it, without binding
//! anything.

use std::path::Path;

use portcullis::config::{ConfigError, GatewayConfig};

use crate::sidecar::Settings;

/// Checks the file at `path`: parse, build every part (certificate files read, truststores audited), the
/// management API's settings and state when enabled, and the sidecar settings. Returns a one-line summary.
///
/// # Errors
/// The first [`ConfigError`], as `file:line:col: key: message`.
pub fn check_config(path: &Path) -> Result<String, ConfigError> {
    let (config, source) = GatewayConfig::load(path)?;
    let built = config.check(&source)?;
    let settings = Settings::from_config(&config, &source)?;
    let listeners: Vec<String> =
        built.listeners.iter().map(|(addr, spec)| format!("{} {addr}", spec.name)).collect();
    let vhosts = built.virtual_hosts.as_ref().map_or(0, |v| v.names().len());
    let upstreams: Vec<String> = settings.upstreams.iter().map(|(e, u)| format!("{e} -> {u}")).collect();
    Ok(format!(
        "{}: ok: listeners [{}], {} virtual host(s), upstreams [{}]{}",
        source.file(),
        listeners.join(", "),
        vhosts,
        upstreams.join(", "),
        built.ops.map(|a| format!(", ops {a}")).unwrap_or_default(),
    ))
}
