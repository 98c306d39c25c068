//! The gateway configuration file (TOML), checked before anything starts.
//!
//! Every table and key is documented in `examples/gateway.toml`, the commented example in the repository.
//! [`GatewayConfig::parse`] (or [`GatewayConfig::load`]) reads it and [`GatewayConfig::build`] checks it;
//! every error names the file, the line and the key ([`ConfigError`]): unknown keys, duplicate host names, weak trust anchors, public access disabled without
//! a private path, a virtual host requiring client auth without a truststore, more than the allowed number of
//! private endpoint connections, and any value a layer refuses.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// A configuration error, with where it is: `file:line:col: key: message`, or `file: message` for an
/// error about the whole file (line 0: it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<embedded>`).
    pub file: String,
    /// 1-based line; 0 for an error about the whole file.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The dotted key the error is about (`virtual_host.api.truststore`), or `-` for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConfigError { file, line, column, key, message } = self;
        match (*line, key.as_str()) {
            (0, "-") => write!(f, "{file}: {message}"),
            (0, key) => write!(f, "{file}: {key}: {message}"),
            _ => write!(f, "{file}:{line}:{column}: {key}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a configuration came from, to turn spans into lines for errors.
#[derive(Debug, Clone)]
pub struct Source {
    file: String,
    text: String,
}

impl Source {
    /// A configuration text, named `file` in errors.
    pub fn new(file: impl Into<String>, text: impl Into<String>) -> Self {
        Source { file: file.into(), text: text.into() }
    }

    /// The file name given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The configuration text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The error at `span` about `key`.
    pub fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl fmt::Display,
    ) -> ConfigError {
        let before = text_before(&self.text, span.start);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError { file: self.file.clone(), line, column, key: key.into(), message: message.to_string() }
    }
}

// === the schema ===

/// The whole file. See `examples/gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The resource named in the public-access 403 (`Microsoft.ApiManagement/service/contoso`).
    pub resource: Spanned<String>,
    /// Listeners; at least one.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<ListenerConfig>>,
    /// Who is calling.
    #[serde(default)]
    pub client_address: ClientAddressConfig,
    /// Named private address spaces.
    #[serde(default)]
    pub private_networks: PrivateNetworksConfig,
    /// Private endpoint connections.
    #[serde(default, rename = "private_endpoint_connection")]
    pub private_endpoint_connections: Vec<Spanned<PrivateEndpointConfig>>,
    /// How private endpoint connections are handled.
    #[serde(default)]
    pub private_endpoints: PrivateEndpointsConfig,
    /// Public network access.
    #[serde(default)]
    pub public_access: PublicAccessConfig,
    /// IP allow/deny rules.
    #[serde(default)]
    pub ip: IpConfig,
    /// Host names per endpoint.
    pub hosts: Spanned<HostsConfig>,
    /// Keystores (a certificate chain and its key), by name.
    #[serde(default, rename = "keystore")]
    pub keystores: Vec<Spanned<KeystoreConfig>>,
    /// Truststores (client CA certificates), by name.
    #[serde(default, rename = "truststore")]
    pub truststores: Vec<Spanned<TruststoreConfig>>,
    /// Named chain policies (the presets `modern`, `strict`, `cnsa` and `default`, the `modern` rules, are
    /// always there).
    #[serde(default, rename = "policy")]
    pub policies: BTreeMap<String, Spanned<PolicyConfig>>,
    /// TLS virtual hosts.
    #[serde(default, rename = "virtual_host")]
    pub virtual_hosts: Vec<Spanned<VirtualHostConfig>>,
    /// Response overrides per denial code.
    #[serde(default)]
    pub responses: BTreeMap<String, Spanned<ResponseOverride>>,
    /// The ops listener (health, readiness, metrics); absent: none.
    #[serde(default)]
    pub ops: Option<OpsConfig>,
    /// The management API (`crate::management`); absent: off.
    #[serde(default)]
    pub management: Option<ManagementConfig>,
    /// The access log (one line per request with its decisions); absent: off.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// How `portcullis serve` talks to the endpoints' upstreams; absent: the defaults.
    #[serde(default)]
    pub sidecar: Option<SidecarConfig>,
}

/// `[access_log]`: one line per request (target `portcullis::access`, info level) with what the stack
/// decided, rate-limited. Present: on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Lines written per second at most; the others are counted into one "suppressed" line (default 1000;
    /// 0 is refused).
    pub lines_per_second: Option<Spanned<u64>>,
}

/// The default [`AccessLogConfig::lines_per_second`].
pub const DEFAULT_ACCESS_LOG_LINES_PER_SECOND: u64 = 1000;

impl GatewayConfig {
    /// The access log's rate (`None`: off), checked.
    ///
    /// # Errors
    /// A rate of 0.
    pub fn access_log_rate(&self, source: &Source) -> Result<Option<u64>, ConfigError> {
        let Some(access) = &self.access_log else { return Ok(None) };
        match &access.lines_per_second {
            None => Ok(Some(DEFAULT_ACCESS_LOG_LINES_PER_SECOND)),
            Some(n) if *n.get_ref() == 0 => Err(source.error(
                n.span(),
                "access_log.lines_per_second",
                "must be at least 1 (remove the [access_log] table to turn the log off)",
            )),
            Some(n) => Ok(Some(*n.get_ref())),
        }
    }
}

/// `[management]`: the management API, served on a management endpoint through the gateway stack. Checked
/// when a server starts from the configuration (`Bound::from_config`) and by [`GatewayConfig::check`]; changes
/// to this table need a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// Serve the API (default true when the table is there).
    #[serde(default = "yes_plain")]
    pub enabled: bool,
    /// The endpoint of `[hosts]` whose host names serve the API (default `management`).
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// `single` (default): API changes are persisted to `state_file`; `fleet`: the API is read-only and
    /// changes go through the configuration file every replica reloads.
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// The state file of `single` mode (required there), relative to the configuration file.
    #[serde(default)]
    pub state_file: Option<Spanned<PathBuf>>,
    /// A JSON-lines file every change is appended to (besides the log).
    #[serde(default)]
    pub audit_file: Option<PathBuf>,
    /// The client addresses that may call the API (default: loopback only).
    #[serde(default)]
    pub allow_from: Option<Vec<Spanned<String>>>,
    /// Refuse calls over a connection without TLS (default true): bearer tokens and changes never cross a
    /// network in clear. `false` only behind a proxy that terminates TLS for the management host.
    #[serde(default = "yes_plain")]
    pub require_tls: bool,
    /// Who may call, with which role.
    #[serde(default, rename = "grant")]
    pub grants: Vec<Spanned<GrantConfig>>,
}

/// `[[management.grant]]`: a role for a client-certificate identity and/or a bearer token (both needed when
/// both are named).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// A name for the audit log (`ops-automation`); default: the certificate's subject, or the grant's
    /// position for a token.
    #[serde(default)]
    pub name: Option<String>,
    /// `reader` or `admin`.
    pub role: Spanned<String>,
    /// A client certificate identity: `{ sha256 = "..." }`, `{ subject = "..." }`, `issuer`, `san`.
    #[serde(default)]
    pub identity: Option<BTreeMap<String, String>>,
    /// A file holding the bearer token (relative to the configuration file).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn yes_plain() -> bool {
    true
}

/// `[sidecar]`: the reverse proxy of `portcullis serve` (the endpoints' `upstream` keys say where to).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// The header that tells the upstream the request's origin (default `x-portcullis-origin`).
    pub origin_header: Option<Spanned<String>>,
    /// The header carrying the verified client certificate, URL-encoded PEM (default
    /// `x-portcullis-client-cert`).
    pub client_cert_header: Option<Spanned<String>>,
    /// Connecting to the upstream, in milliseconds (default 5000).
    pub connect_timeout_ms: Option<Spanned<u64>>,
    /// From sending the request to the upstream's response head, in milliseconds (default 60000).
    pub response_timeout_ms: Option<Spanned<u64>>,
}

/// `[ops]`: the ops listener, outside the host and IP layers, on its own port. It answers `/healthz`,
/// `/readyz` and `/metrics` and nothing else, and exposes nothing secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// The address to bind (`127.0.0.1:9901`). Keep it on loopback, or restrict the port (in Kubernetes,
    /// with a NetworkPolicy).
    pub listen: Spanned<SocketAddr>,
}

/// `[[listener]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs.
    pub name: String,
    /// The address to bind (`127.0.0.1:8080`).
    pub address: Spanned<SocketAddr>,
    /// Serve TLS with the virtual hosts.
    #[serde(default)]
    pub tls: bool,
    /// PROXY protocol from trusted load balancers.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocolListenerConfig>,
    /// Refuse connections from peers the connection rules deny, at accept (`[ip.connection]`).
    #[serde(default)]
    pub connection_filter: bool,
    /// The deadline of every step of a connection.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Connection, handshake and header size limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[listener.timeouts]`: milliseconds; every one has a default and none can be turned off (0 is refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// From TCP accept to the first byte (default 10000).
    pub first_byte_ms: Option<Spanned<u64>>,
    /// The TLS handshake (default 10000).
    pub tls_handshake_ms: Option<Spanned<u64>>,
    /// The start of HTTP: the first byte of HTTP/1, or the HTTP/2 preface and SETTINGS (default 10000).
    pub http_preface_ms: Option<Spanned<u64>>,
    /// An HTTP/1 request head, also the wait for the next request on a keep-alive connection (default 30000).
    pub header_read_ms: Option<Spanned<u64>>,
    /// While the application reads a request body, the longest wait for its next piece (default 30000).
    pub body_read_ms: Option<Spanned<u64>>,
    /// A connection without a request in flight is closed after this long (default 60000).
    pub idle_ms: Option<Spanned<u64>>,
    /// A connection older than this is closed gracefully (default: no maximum age).
    pub max_age_ms: Option<Spanned<u64>>,
    /// A connection being closed (idle, maximum age, or its TLS virtual host deleted or changed so that
    /// its handshake would be refused now) gets this long for its requests in flight (default 30000).
    pub drain_ms: Option<Spanned<u64>>,
    /// After a shutdown signal, open connections get this long for their requests in flight
    /// (default 10000).
    pub shutdown_grace_ms: Option<Spanned<u64>>,
}

/// `[listener.limits]`: every one has a default (see `examples/gateway.toml`); 0 is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections served at once by this listener (default 10000); further ones wait in the kernel's queue.
    pub max_connections: Option<Spanned<usize>>,
    /// Connections one client address may hold (default 256); behind a trusted PROXY load balancer the
    /// client is the header's source address.
    pub max_connections_per_peer: Option<Spanned<usize>>,
    /// Connections one trusted PROXY load balancer address may hold (default 4096).
    pub max_connections_per_load_balancer: Option<Spanned<usize>>,
    /// The IPv6 prefix length clients are counted by (default 64).
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// TLS handshakes in flight at once (default 1024).
    pub max_tls_handshakes: Option<Spanned<usize>>,
    /// TLS handshakes in flight at once from one client address (default 32).
    pub max_tls_handshakes_per_peer: Option<Spanned<usize>>,
    /// The request header list, each field counted as name + value + 32 bytes (default 32768).
    pub max_header_list_bytes: Option<Spanned<usize>>,
    /// One request header field, name + value (default 16384).
    pub max_header_bytes: Option<Spanned<usize>>,
}

/// `[listener.proxy_protocol]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolListenerConfig {
    /// Load balancers that always send a header.
    #[serde(default)]
    pub required_from: Vec<Spanned<String>>,
    /// Load balancers that may send a header.
    #[serde(default)]
    pub optional_from: Vec<Spanned<String>>,
    /// Time to deliver the header, in milliseconds (default 5000).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Cap on a v2 header's length (default 4096).
    #[serde(default)]
    pub max_v2_len: Option<u16>,
    /// How many connections from peers that are not these load balancers may wait for their first bytes at
    /// once (default 1024); past that they are closed at once.
    #[serde(default)]
    pub max_pending_untrusted: Option<usize>,
    /// How many of those one address may hold (default 64).
    #[serde(default)]
    pub max_pending_untrusted_per_peer: Option<Spanned<usize>>,
}

/// Which forwarded header trusted proxies set.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedConfig {
    /// None is read.
    #[default]
    None,
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// RFC 7239 `Forwarded`.
    Forwarded,
}

/// `[client_address]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientAddressConfig {
    /// Proxies whose forwarded headers are read.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// The header they set.
    #[serde(default)]
    pub forwarded: ForwardedConfig,
    /// Fixed-hop mode: the n-th entry from the right is the client.
    #[serde(default)]
    pub fixed_hops: Option<u16>,
    /// The longest walk accepted (default 20).
    #[serde(default)]
    pub max_entries: Option<usize>,
}

/// `[private_networks]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PrivateNetworksConfig {
    /// Opt-in presets: `rfc1918`, `unique-local`, `loopback`, `link-local`, `cgnat`.
    #[serde(default)]
    pub presets: Vec<Spanned<String>>,
    /// Named address spaces: `vnet = ["10.0.0.0/16"]`.
    #[serde(default)]
    pub networks: BTreeMap<String, Vec<Spanned<String>>>,
}

/// `[[private_endpoint_connection]]`: exactly one of the three link ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateEndpointConfig {
    /// The connection's name.
    pub name: String,
    /// Azure Private Link LinkID.
    #[serde(default)]
    pub azure_link_id: Option<u32>,
    /// AWS PrivateLink VPC endpoint id (`vpce-...`).
    #[serde(default)]
    pub aws_vpc_endpoint_id: Option<String>,
    /// GCP Private Service Connect connection id.
    #[serde(default)]
    pub gcp_psc_connection_id: Option<u64>,
    /// `pending`, `approved` or `rejected`.
    pub state: Spanned<String>,
    /// The endpoints it may reach (default `["gateway"]`).
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// The group id shown to handlers (default `Gateway`).
    #[serde(default)]
    pub group_id: Option<String>,
}

/// `[private_endpoints]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PrivateEndpointsConfig {
    /// At most this many connections (default 100).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// A link id that is not registered: `refuse` (default) or `public`.
    #[serde(default)]
    pub unknown_link: Option<Spanned<String>>,
}

/// `[public_access]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicAccessConfig {
    /// Public network access (default true).
    #[serde(default = "yes")]
    pub enabled: Spanned<bool>,
    /// Record, do not refuse.
    #[serde(default)]
    pub shadow: bool,
}

fn yes() -> Spanned<bool> {
    Spanned::new(0..0, true)
}

impl Default for PublicAccessConfig {
    fn default() -> Self {
        PublicAccessConfig { enabled: yes(), shadow: false }
    }
}

/// `[ip]` and `[ip.endpoint.<name>]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    /// Named address sets, referred to as `@name` in rules.
    #[serde(default)]
    pub sets: BTreeMap<String, Vec<Spanned<String>>>,
    /// Rules for every endpoint (absent: no IP filter).
    #[serde(default)]
    pub rules: Option<Spanned<IpRulesConfig>>,
    /// Rules per endpoint, applied after the global ones.
    #[serde(default)]
    pub endpoint: BTreeMap<String, Spanned<IpRulesConfig>>,
    /// Rules checked at accept on listeners with `connection_filter = true`.
    #[serde(default)]
    pub connection: Option<Spanned<IpRulesConfig>>,
}

/// One rule set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRulesConfig {
    /// `allow` or `deny`, for addresses no rule covers. Required: there is no implicit default.
    pub default: Spanned<String>,
    /// Allowed addresses, CIDRs, ranges or `@set`s.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Denied addresses, CIDRs, ranges or `@set`s.
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    /// Decide on the direct peer instead of the resolved client.
    #[serde(default)]
    pub direct_peer: bool,
    /// Record, do not refuse.
    #[serde(default)]
    pub shadow: bool,
}

/// `[hosts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsConfig {
    /// Default endpoint names from a service name and a base domain.
    #[serde(default)]
    pub service: Option<ServiceNamesConfig>,
    /// Endpoints and their host names (custom domains).
    #[serde(default)]
    pub endpoint: BTreeMap<String, Spanned<EndpointConfig>>,
    /// Record, do not refuse.
    #[serde(default)]
    pub shadow: bool,
}

/// `[hosts.service]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNamesConfig {
    /// `contoso`.
    pub name: String,
    /// `azure-api.net`.
    pub domain: String,
    /// Add `<name>.privatelink.<domain>` to the gateway.
    #[serde(default)]
    pub private_link: bool,
}

/// `[hosts.endpoint.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Host names (exact or `*.` wildcards), custom domains.
    #[serde(default)]
    pub names: Vec<Spanned<String>>,
    /// The TLS virtual host serving these names (for SNI ↔ Host binding).
    #[serde(default)]
    pub virtual_host: Option<String>,
    /// Where `portcullis serve` forwards this endpoint's requests: `http://127.0.0.1:3000` or
    /// `unix:/run/app.sock` (bind the
    /// service to loopback or a pod-local address only, so that it cannot be reached around the gateway).
    /// Libraries serving their own application ignore it.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    /// The protocol towards [`upstream`](Self::upstream): `http1` (default) or `h2c` (HTTP/2 without TLS,
    /// for gRPC services).
    #[serde(default)]
    pub upstream_protocol: Option<Spanned<String>>,
}

/// `[[keystore]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreConfig {
    /// Its name.
    pub name: String,
    /// PEM certificate chain file, leaf first.
    pub cert: Spanned<PathBuf>,
    /// PEM private key file.
    pub key: Spanned<PathBuf>,
}

/// `[[truststore]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruststoreConfig {
    /// Its name.
    pub name: String,
    /// PEM files of trusted client CAs.
    pub certs: Vec<Spanned<PathBuf>>,
    /// Allow weak anchors (short keys, SHA-1 self-signatures).
    #[serde(default)]
    pub allow_weak_anchors: bool,
    /// Allow expired anchors.
    #[serde(default)]
    pub allow_expired_anchors: bool,
    /// Allow non-CA certificates as anchors (leaf pinning).
    #[serde(default)]
    pub allow_leaf_anchors: bool,
}

/// `[policy.<name>]`: a named chain policy, starting from a preset (`base`) with any rule overridden. The
/// name cannot be a preset's (`modern`, `strict`, `cnsa`): those are used by name without a table.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The preset it starts from: `modern` (default), `strict` or `cnsa`.
    pub base: Option<Spanned<String>>,
    /// Minimum RSA key size.
    pub min_rsa_bits: Option<u32>,
    /// Maximum RSA key size.
    pub max_rsa_bits: Option<u32>,
    /// Accepted curves: any of `P-256`, `P-384`, `P-521`.
    pub curves: Option<Spanned<Vec<String>>>,
    /// Accept Ed25519 keys and signatures.
    pub allow_ed25519: Option<bool>,
    /// Allow SHA-1 signatures (only with `min_signature_hash = "sha256"`).
    pub allow_sha1: Option<bool>,
    /// The weakest signature hash: `sha256`, `sha384` or `sha512`.
    pub min_signature_hash: Option<Spanned<String>>,
    /// Allow DSA keys and signatures.
    pub allow_dsa: Option<bool>,
    /// Extended key usage: `if-present`, `required`, `ignore`.
    pub eku: Option<Spanned<String>>,
    /// Most certificates in the verified path, leaf included, anchor excluded.
    pub max_chain_len: Option<usize>,
    /// Most certificates a client may send, unused ones included.
    pub max_presented: Option<usize>,
    /// Check validity periods.
    pub check_validity: Option<bool>,
    /// Tolerated clock skew, seconds.
    pub clock_skew_secs: Option<u64>,
    /// Check CA constraints (CA:TRUE, keyCertSign, pathLenConstraint).
    pub check_ca_constraints: Option<bool>,
    /// Refuse a leaf with CA:TRUE or keyCertSign.
    pub refuse_ca_leaf: Option<bool>,
}

/// `[[virtual_host]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHostConfig {
    /// Its name.
    pub name: String,
    /// SNI names it answers.
    pub hosts: Vec<Spanned<String>>,
    /// The keystore it presents.
    pub keystore: Spanned<String>,
    /// `off` (default), `optional` or `required`.
    #[serde(default)]
    pub client_auth: Option<Spanned<String>>,
    /// The truststore for client certificates.
    #[serde(default)]
    pub truststore: Option<Spanned<String>>,
    /// The chain policy by name: a preset (`modern`, `strict`, `cnsa`), a `[policy.<name>]`, or `default`
    /// (the default, the `modern` rules).
    #[serde(default)]
    pub policy: Option<Spanned<String>>,
    /// Serve connections without SNI or with an unknown SNI.
    #[serde(default)]
    pub default: bool,
    /// Complete handshakes with refused chains and answer 403 at HTTP, with the reason.
    #[serde(default)]
    pub refuse_at_http: bool,
    /// Allowed client identities (at most 10): `{ sha256 = "..." }`, `{ subject = "..." }`, ...
    #[serde(default)]
    pub identities: Vec<Spanned<BTreeMap<String, String>>>,
}

/// `[responses."<code>"]`: replace the body of a refusal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseOverride {
    /// The status (default: the denial's).
    #[serde(default)]
    pub status: Option<u16>,
    /// The content type (default `text/plain; charset=utf-8`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// The body; `{detail}`, `{code}`, `{refused}` are replaced.
    pub body: String,
}

impl GatewayConfig {
    /// Parses a TOML text (syntax, types and unknown keys). Semantic checks happen when the gateway is
    /// built from it.
    ///
    /// # Errors
    /// [`ConfigError`] with the file, line and key.
    pub fn parse(source: &Source) -> Result<GatewayConfig, ConfigError> {
        toml::from_str::<GatewayConfig>(&source.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = key_at(&source.text, span.start);
            source.error(span, key, e.message().trim())
        })
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or parsed.
    pub fn load(path: impl AsRef<Path>) -> Result<(GatewayConfig, Source), ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            key: "-".into(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let source = Source::new(path.display().to_string(), text);
        let config = GatewayConfig::parse(&source)?;
        Ok((config, source))
    }
}

/// The text before byte `offset`, cut at the character boundary at or before it: an offset past the end or
/// inside a multi-byte character (from a parser's span) must not panic.
fn text_before(text: &str, offset: usize) -> &str {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.get(..at).unwrap_or("")
}

/// A best-effort dotted key for a byte offset: the enclosing `[table]` header plus the key on that line.
fn key_at(text: &str, offset: usize) -> String {
    let before = text_before(text, offset);
    let table = before
        .lines()
        .rev()
        .find_map(|l| {
            let t = l.trim();
            t.starts_with('[').then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        })
        .unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..).and_then(|rest| rest.lines().next()).unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    match (table.is_empty(), key.is_empty() || key.starts_with('[')) {
        (true, true) => "-".into(),
        (true, false) => key.into(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"

[hosts.endpoint.gateway]
names = ["api.contoso.example"]
"#;

    fn error_of(text: &str) -> ConfigError {
        let source = Source::new("gw.toml", text);
        match GatewayConfig::parse(&source) {
            Err(e) => e,
            Ok(c) => c.build(&source).expect_err("must be refused"),
        }
    }

    #[test]
    fn minimal_builds() {
        let source = Source::new("gw.toml", MINIMAL);
        let built = GatewayConfig::parse(&source).unwrap().build(&source).unwrap();
        assert_eq!(built.listeners.len(), 1);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = MINIMAL.replace("name = \"http\"", "name = \"http\"\nadress = \"x\"");
        let e = error_of(&text);
        assert_eq!((e.file.as_str(), e.line, e.key.as_str()), ("gw.toml", 5, "listener.adress"), "{e}");
        assert!(e.message.contains("adress"), "{e}");
        assert!(e.to_string().starts_with("gw.toml:5:1: listener.adress:"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_value() {
        let text = format!("{MINIMAL}\n[ip.rules]\ndefault = \"allow\"\ndeny = [\"10.0.0.1/8\"]\n");
        let e = error_of(&text);
        assert_eq!(e.line, 12, "{e}");
        assert_eq!(e.key, "ip.rules.deny");
        assert!(e.message.contains("10.0.0.0/8"), "the error suggests the network: {e}");

        let text = format!("{MINIMAL}\n[ip.rules]\ndefault = \"allow\"\nallow = [\"@admins\"]\n");
        let e = error_of(&text);
        assert_eq!((e.line, e.key.as_str()), (12, "ip.rules.allow"), "{e}");

        let text = format!("{MINIMAL}\n[public_access]\nenabled = false\n");
        let e = error_of(&text);
        assert_eq!((e.line, e.key.as_str()), (11, "public_access.enabled"), "{e}");
        assert!(e.message.contains("private"), "{e}");
    }

    #[test]
    fn duplicate_hosts_are_refused_at_the_second_name() {
        let text = format!("{MINIMAL}\n[hosts.endpoint.portal]\nnames = [\"API.contoso.example.\"]\n");
        let e = error_of(&text);
        assert_eq!(e.key, "hosts.endpoint.portal.names", "{e}");
        assert_eq!(e.line, 11, "{e}");
    }

    #[test]
    fn client_auth_without_truststore_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[keystore]]\nname = \"k\"\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n\n\
             [[virtual_host]]\nname = \"v\"\nhosts = [\"api.contoso.example\"]\nkeystore = \"k\"\nclient_auth = \"required\"\n"
        );
        let e = error_of(&text);
        // The keystore file is read first and is missing: that error names the keystore; without it the
        // virtual host's missing truststore is named. Both are located.
        assert!(e.key.starts_with("keystore.k") || e.key == "virtual_host.v.truststore", "{e}");
        assert!(e.line > 0, "{e}");
    }

    #[test]
    fn more_than_the_allowed_private_endpoint_connections() {
        let mut text = format!("{MINIMAL}\n[private_endpoints]\nmax_connections = 2\n");
        for i in 0..3 {
            text.push_str(&format!(
                "\n[[private_endpoint_connection]]\nname = \"pe{i}\"\nazure_link_id = {i}\nstate = \"approved\"\n"
            ));
        }
        let e = error_of(&text);
        assert_eq!(e.key, "private_endpoint_connection", "{e}");
        assert!(e.message.contains("at most 2"), "{e}");
        assert!(e.line > 20, "points at the third connection: {e}");
    }

    const VHOST: &str = "\n[[keystore]]\nname = \"k\"\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n\n\
                         [[virtual_host]]\nname = \"v\"\nhosts = [\"api.contoso.example\"]\nkeystore = \"k\"\n";

    #[test]
    fn an_unknown_preset_is_an_error_at_the_virtual_hosts_policy_key() {
        let text = format!("{MINIMAL}{VHOST}policy = \"lenient\"\n");
        let line = text.lines().position(|l| l.starts_with("policy = ")).expect("policy line") + 1;
        let e = error_of(&text);
        assert_eq!((e.line, e.column, e.key.as_str()), (line, 10, "virtual_host.v.policy"), "{e}");
        assert!(e.message.contains("`modern`, `strict`, `cnsa`"), "{e}");
        assert!(e.to_string().starts_with(&format!("gw.toml:{line}:10: virtual_host.v.policy:")), "{e}");
    }

    #[test]
    fn presets_are_selectable_by_name() {
        for preset in ["modern", "strict", "cnsa", "default"] {
            let text = format!("{MINIMAL}{VHOST}policy = \"{preset}\"\n");
            let e = error_of(&text);
            // The policy resolves; the next error is the missing keystore file.
            assert!(e.key.starts_with("keystore.k"), "{preset}: {e}");
        }
    }

    #[test]
    fn a_user_policy_starts_from_a_base_and_cannot_take_a_preset_name() {
        let text = format!("{MINIMAL}\n[policy.strict]\nmin_rsa_bits = 4096\n");
        let e = error_of(&text);
        assert_eq!(e.key, "policy.strict", "{e}");
        assert!(e.message.contains("is a preset") && e.message.contains("base = \"strict\""), "{e}");

        let text = format!("{MINIMAL}\n[policy.mine]\nbase = \"stric\"\n");
        let e = error_of(&text);
        assert_eq!((e.line, e.column, e.key.as_str()), (11, 8, "policy.mine.base"), "{e}");
        assert!(e.message.contains("unknown preset `stric`"), "{e}");

        let text = format!("{MINIMAL}\n[policy.mine]\nbase = \"strict\"\nmin_signature_hash = \"md5\"\n");
        let e = error_of(&text);
        assert_eq!((e.line, e.key.as_str()), (12, "policy.mine.min_signature_hash"), "{e}");
    }

    #[test]
    fn the_users_values_win_over_the_base() {
        let text = format!(
            "{MINIMAL}\n[policy.mine]\nbase = \"strict\"\nmax_chain_len = 5\ncurves = [\"P-256\", \"P-384\"]\n"
        );
        let source = Source::new("gw.toml", &text);
        let config = GatewayConfig::parse(&source).expect("parses");
        let cx = crate::build::Ctx { source: &source };
        let policy = config.policy(&cx, "mine", 0..0, "x").expect("builds");
        let strict = portcullis_mtls::ChainPolicy::preset("strict").expect("strict");
        assert_eq!(policy.name(), "mine");
        assert_eq!(policy.max_chain_len, 5);
        assert_eq!(policy.curves, [portcullis_mtls::Curve::P256, portcullis_mtls::Curve::P384]);
        assert_eq!((policy.min_rsa_bits, policy.eku), (strict.min_rsa_bits, strict.eku));
        assert_eq!(policy.min_signature_hash, strict.min_signature_hash);
    }

    #[test]
    fn listener_limits_and_deadlines_are_read_and_checked() {
        let text = MINIMAL.replace(
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\n[listener.timeouts]\nfirst_byte_ms = 250\nmax_age_ms = 60000\n\
             [listener.limits]\nmax_connections_per_peer = 7\nipv6_prefix = 56\nmax_header_list_bytes = 4096\n",
        );
        let source = Source::new("gw.toml", text.as_str());
        let built = GatewayConfig::parse(&source).unwrap().build(&source).unwrap();
        let spec = &built.listeners[0].1;
        assert_eq!(spec.timeouts.first_byte, std::time::Duration::from_millis(250));
        assert_eq!(spec.timeouts.max_age, Some(std::time::Duration::from_secs(60)));
        assert_eq!(spec.timeouts.idle, crate::limits::DEFAULT_IDLE, "unset keys keep their defaults");
        assert_eq!((spec.limits.limits().max_per_peer, spec.limits.limits().ipv6_prefix), (7, 56));
        assert_eq!(spec.headers.max_list_bytes, 4096);

        let zero = MINIMAL.replace(
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\n[listener.timeouts]\nidle_ms = 0\n",
        );
        let e = error_of(&zero);
        assert_eq!((e.line, e.key.as_str()), (7, "listener.http.timeouts.idle_ms"), "{e}");
        assert!(e.message.contains("cannot be turned off"), "{e}");
        let prefix = MINIMAL.replace(
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\n[listener.limits]\nipv6_prefix = 129\n",
        );
        let e = error_of(&prefix);
        assert_eq!((e.line, e.key.as_str()), (7, "listener.http.limits.ipv6_prefix"), "{e}");
        let unknown = MINIMAL.replace(
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\n[listener.timeouts]\nforever = true\n",
        );
        assert_eq!(error_of(&unknown).key, "listener.timeouts.forever");
    }

    #[test]
    fn key_at_reads_table_and_key() {
        let text = "a = 1\n[t.u]\nb = 2\n";
        assert_eq!(key_at(text, 0), "a");
        assert_eq!(key_at(text, text.find("b =").unwrap()), "t.u.b");
    }

    /// A host name with a multi-byte character after an IPv6 literal's `]` is a config error at its line,
    /// not a panic (this once made `--check-config` exit 101).
    #[test]
    fn non_ascii_after_ipv6_literal_is_a_config_error() {
        let text = MINIMAL.replace("\"api.contoso.example\"", "\"[::1]é\"");
        let e = error_of(&text);
        assert_eq!((e.line, e.key.as_str()), (8, "hosts.endpoint.gateway.names"), "{e}");
    }

    /// Offsets inside a multi-byte character or past the end are cut back, never sliced through.
    #[test]
    fn offsets_inside_a_character_do_not_panic() {
        let text = "[é]\nnamé = 1\n";
        for offset in 0..text.len() + 3 {
            let _ = key_at(text, offset);
            let before = text_before(text, offset);
            assert!(text.starts_with(before) && before.len() <= offset, "{offset}");
        }
        assert_eq!(text_before(text, 2), "[");
        let source = Source::new("t.toml", text);
        let e = source.error(2..3, "k", "m");
        assert_eq!((e.line, e.column), (1, 2));
    }
}
