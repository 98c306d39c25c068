//! The sidecar's settings, from the gateway configuration: each endpoint's `upstream` and
//! `upstream_protocol`, and the `[sidecar]` table. Checked by `portcullis check-config` as well as by
//! `portcullis serve`, with the file, line and key of every error.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderName;
use http::uri::{Authority, Scheme};
use portcullis::config::{ConfigError, GatewayConfig, Source};
use toml::Spanned;

/// The default name of the origin header towards the upstream.
pub const ORIGIN_HEADER: &str = "x-portcullis-origin";
/// The default name of the client-certificate header towards the upstream.
pub const CLIENT_CERT_HEADER: &str = "x-portcullis-client-cert";
/// The default connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default response-head timeout.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the sidecar talks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (WebSocket and other upgrades work over it).
    Http1,
    /// HTTP/2 without TLS (prior knowledge), for gRPC services.
    H2c,
}

/// One endpoint's upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http`.
    pub scheme: Scheme,
    /// `127.0.0.1:3000` (`localhost` for a Unix socket).
    pub authority: Authority,
    /// The Unix socket (`unix:/run/app.sock`), instead of TCP to the authority.
    pub unix: Option<std::path::PathBuf>,
    /// The protocol.
    pub protocol: UpstreamProtocol,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = match self.protocol {
            UpstreamProtocol::Http1 => "HTTP/1.1",
            UpstreamProtocol::H2c => "h2c",
        };
        match &self.unix {
            Some(path) => write!(f, "unix:{} ({protocol})", path.display()),
            None => write!(f, "{}://{} ({protocol})", self.scheme, self.authority),
        }
    }
}

/// Everything `portcullis serve` needs besides the gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Upstreams by endpoint name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// The origin header's name.
    pub origin_header: HeaderName,
    /// The client-certificate header's name.
    pub client_cert_header: HeaderName,
    /// Connecting to an upstream.
    pub connect_timeout: Duration,
    /// From the request to the upstream's response head.
    pub response_timeout: Duration,
}

/// Headers the proxy owns: a configured header name cannot be one of them.
const RESERVED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "content-length",
];

impl Settings {
    /// Reads the sidecar settings of `config`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and key: an upstream that is not `http://host:port`, an
    /// unknown protocol, a header name that is invalid or one the proxy sets itself, a zero timeout.
    pub fn from_config(config: &GatewayConfig, source: &Source) -> Result<Settings, ConfigError> {
        let mut upstreams = BTreeMap::new();
        for (name, endpoint) in &config.hosts.get_ref().endpoint {
            let e = endpoint.get_ref();
            let key = format!("hosts.endpoint.{name}");
            let protocol = match e.upstream_protocol.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
                None | Some(("http1", _)) => UpstreamProtocol::Http1,
                Some(("h2c", _)) => UpstreamProtocol::H2c,
                Some((other, span)) => {
                    return Err(source.error(
                        span,
                        format!("{key}.upstream_protocol"),
                        format!("`{other}`: http1 or h2c"),
                    ));
                }
            };
            let Some(upstream) = &e.upstream else {
                if let Some(p) = &e.upstream_protocol {
                    return Err(source.error(
                        p.span(),
                        format!("{key}.upstream_protocol"),
                        "no upstream to apply it to",
                    ));
                }
                continue;
            };
            upstreams.insert(
                name.clone(),
                parse_upstream(source, upstream, &format!("{key}.upstream"), protocol)?,
            );
        }
        let s = config.sidecar.clone().unwrap_or_default();
        let header = |v: &Option<Spanned<String>>, key: &str, default: &'static str| match v {
            None => Ok(HeaderName::from_static(default)),
            Some(v) => {
                let name = HeaderName::try_from(v.get_ref().as_str())
                    .map_err(|e| source.error(v.span(), format!("sidecar.{key}"), e))?;
                if RESERVED.contains(&name.as_str()) {
                    return Err(source.error(
                        v.span(),
                        format!("sidecar.{key}"),
                        format!("`{name}` is a header the proxy sets or removes itself"),
                    ));
                }
                Ok(name)
            }
        };
        let origin_header = header(&s.origin_header, "origin_header", ORIGIN_HEADER)?;
        let client_cert_header = header(&s.client_cert_header, "client_cert_header", CLIENT_CERT_HEADER)?;
        if origin_header == client_cert_header {
            let span = s.client_cert_header.as_ref().map_or(0..0, Spanned::span);
            return Err(source.error(span, "sidecar.client_cert_header", "the same name as origin_header"));
        }
        let millis = |v: &Option<Spanned<u64>>, key: &str, default: Duration| match v {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 => Err(source.error(
                v.span(),
                format!("sidecar.{key}"),
                "must be at least 1 ms: a deadline cannot be turned off",
            )),
            Some(v) => Ok(Duration::from_millis(*v.get_ref())),
        };
        Ok(Settings {
            upstreams,
            origin_header,
            client_cert_header,
            connect_timeout: millis(&s.connect_timeout_ms, "connect_timeout_ms", CONNECT_TIMEOUT)?,
            response_timeout: millis(&s.response_timeout_ms, "response_timeout_ms", RESPONSE_TIMEOUT)?,
        })
    }
}

fn parse_upstream(
    source: &Source,
    value: &Spanned<String>,
    key: &str,
    protocol: UpstreamProtocol,
) -> Result<Upstream, ConfigError> {
    let text = value.get_ref();
    let err = |msg: String| source.error(value.span(), key, msg);
    if let Some(path) = text.strip_prefix("unix:") {
        let path = std::path::Path::new(path);
        if !path.is_absolute() {
            return Err(err(format!("`{text}`: unix:/absolute/path/of/the/socket expected")));
        }
        return Ok(Upstream {
            scheme: Scheme::HTTP,
            authority: Authority::from_static("localhost"),
            unix: Some(path.to_path_buf()),
            protocol,
        });
    }
    let uri: http::Uri = text.parse().map_err(|e| err(format!("`{text}`: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(err(
                "https upstreams are not supported: the upstream listens on loopback or a pod-local address, in plain HTTP"
                    .into(),
            ));
        }
        _ => return Err(err(format!("`{text}`: http://host:port expected"))),
    }
    let Some(authority) = uri.authority().cloned() else {
        return Err(err(format!("`{text}`: http://host:port expected")));
    };
    if authority.as_str().contains('@') {
        return Err(err(format!("`{text}`: no user information in an upstream")));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(err(format!("`{text}`: no path: the request's path is forwarded as it is")));
    }
    Ok(Upstream { scheme: Scheme::HTTP, authority, unix: None, protocol })
}
