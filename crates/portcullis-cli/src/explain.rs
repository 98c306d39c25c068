//! `portcullis explain`: runs the configured stack on one described request, without any network, and
//! says what each step decided and why.
//!
//! Every verdict comes from the objects `portcullis serve` runs, built from the same file by the same code
//! ([`GatewayConfig::build`]):
//!
//! - the connection filter ([`ConnectionFilter::admit`](portcullis::ip::ConnectionFilter::admit)) and its
//!   rule set's own description of the rule that matched;
//! - the PROXY protocol reader ([`ProxyProtocolConfig::accept`](portcullis::proxy_protocol::ProxyProtocolConfig::accept)),
//!   fed the header the flags describe, encoded as a load balancer sends it;
//! - the TLS virtual hosts ([`MtlsAcceptor::explain`](portcullis::mtls::MtlsAcceptor::explain)): the
//!   virtual host SNI selects, the chain verifier (rustls-webpki and the chain policy);
//! - the request rules, one step at a time ([`GatewayRules::check_step`]), reading what each recorded in
//!   the request's [`Decisions`], or its [`Denial`];
//! - the refusal's response from the configured [`Responder`](portcullis::Responder).
//!
//! What it cannot show: connection limits and deadlines (they depend on the traffic), and the client's
//! proof of key possession in a TLS handshake.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use portcullis::config::GatewayConfig;
use portcullis::gateway::STEPS;
use portcullis::{ConnInfo, Decisions, Denial};
use serde_json::{Value, json};

use crate::args::{Args, Usage};
use crate::sidecar::Settings;

/// The flags `explain` takes a value for.
pub const VALUED: &[&str] = &[
    "config", "listener", "peer", "proxy", "source", "link-id", "vendor", "sni", "cert", "host", "header",
    "method", "path", "at",
];

/// What `explain` found: the steps in order and the outcome.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// One entry per step: `{"step", "verdict", "detail": [..]}` and step-specific fields.
    pub steps: Vec<Value>,
    /// The outcome: `{"outcome": "served" | "refused" | "closed", ...}`.
    pub outcome: Value,
}

impl Explanation {
    /// Whether the request would reach the application.
    pub fn served(&self) -> bool {
        self.outcome["outcome"] == "served"
    }

    /// The explanation for machines.
    pub fn json(&self) -> Value {
        json!({ "steps": self.steps, "result": self.outcome })
    }

    /// The explanation for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "{:>2}. {:<20} {}\n",
                i + 1,
                s["step"].as_str().unwrap_or(""),
                s["verdict"].as_str().unwrap_or("")
            ));
            for line in s["detail"].as_array().into_iter().flatten() {
                out.push_str(&format!("      {}\n", line.as_str().unwrap_or("")));
            }
        }
        out.push('\n');
        for line in self.outcome["text"].as_array().into_iter().flatten() {
            out.push_str(line.as_str().unwrap_or(""));
            out.push('\n');
        }
        out
    }
}

fn step(name: &str, verdict: &str, detail: Vec<String>) -> Value {
    json!({ "step": name, "verdict": verdict, "detail": detail })
}

fn denial_json(d: &Denial) -> Value {
    json!({
        "layer": d.layer(),
        "code": d.code(),
        "status": d.status().as_u16(),
        "detail": d.detail(),
        "rule": d.rule(),
        "refused": d.refused(),
    })
}

fn denial_lines(d: &Denial) -> Vec<String> {
    let mut lines =
        vec![format!("{} {} ({})", d.status().as_u16(), d.code(), d.layer()), d.detail().to_owned()];
    if let Some(rule) = d.rule() {
        lines.push(format!("rule: {rule}"));
    }
    if let Some(refused) = d.refused() {
        lines.push(format!("refused: {refused}"));
    }
    lines
}

fn socket(s: &str, default_port: u16, what: &str) -> Result<SocketAddr, Usage> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| Usage(format!("--{what} {s}: IP or IP:PORT expected")))
}

/// A PROXY protocol header as a load balancer sends it: v1 text, or v2 with the vendor's link-id TLV.
fn proxy_header(
    version: &str,
    source: SocketAddr,
    destination: SocketAddr,
    link: Option<(&str, &str)>,
) -> Result<Vec<u8>, Usage> {
    if source.is_ipv4() != destination.is_ipv4() {
        return Err(Usage("--source and the listener's address must be of the same IP family".into()));
    }
    match version {
        "v1" => {
            if link.is_some() {
                return Err(Usage("--link-id needs --proxy v2".into()));
            }
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            Ok(format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes())
        }
        "v2" => {
            let mut body = Vec::new();
            let family = match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                    0x11
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                    0x21
                }
                _ => return Err(Usage("mixed address families".into())),
            };
            body.extend_from_slice(&source.port().to_be_bytes());
            body.extend_from_slice(&destination.port().to_be_bytes());
            if let Some((vendor, id)) = link {
                let bad = || Usage(format!("--link-id {id}: not a {vendor} link id"));
                let (kind, value) = match vendor {
                    "azure" => {
                        let mut v = vec![0x01];
                        v.extend_from_slice(&id.parse::<u32>().map_err(|_| bad())?.to_le_bytes());
                        (0xEE, v)
                    }
                    "aws" => {
                        let mut v = vec![0x01];
                        v.extend_from_slice(id.as_bytes());
                        (0xEA, v)
                    }
                    "gcp" => (0xE0, id.parse::<u64>().map_err(|_| bad())?.to_be_bytes().to_vec()),
                    other => return Err(Usage(format!("--vendor {other}: azure, aws or gcp"))),
                };
                body.push(kind);
                body.extend_from_slice(&u16::try_from(value.len()).map_err(|_| bad())?.to_be_bytes());
                body.extend_from_slice(&value);
            }
            let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            out.push(0x21);
            out.push(family);
            out.extend_from_slice(
                &u16::try_from(body.len()).map_err(|_| Usage("header too long".into()))?.to_be_bytes(),
            );
            out.extend_from_slice(&body);
            Ok(out)
        }
        other => Err(Usage(format!("--proxy {other}: v1 or v2"))),
    }
}

/// The error of `explain`: a usage error (exit 2) or a configuration or input error (exit 2 too).
#[derive(Debug)]
pub enum ExplainError {
    /// Wrong flags.
    Usage(Usage),
    /// The configuration or an input file.
    Input(String),
}

impl From<Usage> for ExplainError {
    fn from(u: Usage) -> Self {
        ExplainError::Usage(u)
    }
}

/// Explains the request `args` describes.
///
/// # Errors
/// [`ExplainError`].
pub async fn explain(args: &Args) -> Result<Explanation, ExplainError> {
    let config_path = args.value("config").ok_or_else(|| Usage("--config FILE is required".into()))?;
    let (config, source) =
        GatewayConfig::load(config_path).map_err(|e| ExplainError::Input(e.to_string()))?;
    let built = config.build(&source).map_err(|e| ExplainError::Input(e.to_string()))?;
    let settings = Settings::from_config(&config, &source).map_err(|e| ExplainError::Input(e.to_string()))?;
    let now = args.now()?;
    let (address, spec) = match args.value("listener") {
        None => built.listeners.first(),
        Some(name) => built.listeners.iter().find(|(_, s)| s.name == name),
    }
    .ok_or_else(|| {
        let names: Vec<&str> = built.listeners.iter().map(|(_, s)| s.name.as_str()).collect();
        Usage(format!("no such listener (there are: {})", names.join(", ")))
    })?;
    let peer = socket(
        args.value("peer").ok_or_else(|| Usage("--peer IP[:PORT] is required".into()))?,
        50000,
        "peer",
    )?;
    let mut steps = Vec::new();
    let closed = |steps: Vec<Value>, why: String| Explanation {
        steps,
        outcome: json!({
            "outcome": "closed",
            "reason": why,
            "text": [format!("result: connection closed before HTTP, no response: {why}")],
        }),
    };

    // 1. The listener.
    steps.push(step(
        "listener",
        "accepted",
        vec![format!(
            "`{}` on {address}: {}{}{}",
            spec.name,
            if spec.tls.is_some() { "TLS" } else { "plain HTTP" },
            if spec.proxy.is_some() { ", PROXY protocol" } else { "" },
            if spec.filter.is_some() { ", connection filter" } else { "" },
        )],
    ));

    // 2. The connection filter on the socket peer (listeners without PROXY protocol).
    let filter_step = |ip: IpAddr, on: &str| -> (bool, Value) {
        let Some(filter) = &spec.filter else {
            return (true, step("connection-filter", "not configured", vec![]));
        };
        let admitted = filter.admit(ip);
        let rules = filter.rules().current();
        let rule = rules.describe(&rules.check(ip));
        let verdict = if admitted { "pass" } else { "dropped" };
        (admitted, step("connection-filter", verdict, vec![format!("{ip} ({on}): {rule}")]))
    };
    if spec.proxy.is_none() {
        let (admitted, s) = filter_step(peer.ip(), "the socket peer");
        steps.push(s);
        if !admitted {
            return Ok(closed(steps, format!("the connection filter dropped {} at accept", peer.ip())));
        }
    }

    // 3. PROXY protocol.
    let header = match args.value("proxy") {
        None => None,
        Some(version) => {
            let source_addr = socket(
                args.value("source").ok_or_else(|| Usage("--proxy needs --source IP[:PORT]".into()))?,
                50000,
                "source",
            )?;
            let link = args.value("link-id").map(|id| (args.value("vendor").unwrap_or("azure"), id));
            Some(proxy_header(version, source_addr, *address, link)?)
        }
    };
    let mut info = ConnInfo::new(peer, Some(*address));
    match (&spec.proxy, header) {
        (None, Some(_)) => {
            steps.push(step(
                "proxy-protocol",
                "closed",
                vec!["this listener reads no PROXY protocol: the header is not HTTP".into()],
            ));
            return Ok(closed(steps, "a PROXY header on a listener without PROXY protocol".into()));
        }
        (None, None) => {}
        (Some(proxy), header) => {
            let mut bytes = header.clone().unwrap_or_default();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let policy = proxy.policy_for(peer.ip());
            match proxy.accept(&bytes[..], peer).await {
                Err(e) => {
                    steps.push(step(
                        "proxy-protocol",
                        "closed",
                        vec![format!("peer {} is {policy:?} here: {e}", peer.ip())],
                    ));
                    return Ok(closed(steps, format!("PROXY protocol: {e}")));
                }
                Ok(stream) => {
                    let detail = match stream.proxy_info() {
                        None => vec![format!(
                            "peer {} is {policy:?} here; no header: a plain connection",
                            peer.ip()
                        )],
                        Some(p) => {
                            let mut d = vec![format!(
                                "header from trusted load balancer {} ({policy:?}): {:?}, source {}",
                                peer.ip(),
                                p.version,
                                p.source.map_or("none (LOCAL)".into(), |s| s.to_string())
                            )];
                            if let Some(link) = &p.link_id {
                                d.push(format!("private link id {link}"));
                            }
                            info.proxy = Some(p.clone());
                            d
                        }
                    };
                    steps.push(step("proxy-protocol", "pass", detail));
                }
            }
            let client = info.proxy.as_ref().and_then(|p| p.source).map_or(peer.ip(), |s| s.ip());
            let (admitted, s) = filter_step(client, "the connection's client");
            steps.push(s);
            if !admitted {
                return Ok(closed(
                    steps,
                    format!("the connection filter dropped {client} after the PROXY header"),
                ));
            }
        }
    }

    // 4. TLS.
    let chain = match args.value("cert") {
        None => Vec::new(),
        Some(path) => crate::chain::read_chain(Path::new(path)).map_err(ExplainError::Input)?,
    };
    match &spec.tls {
        None => {
            if args.value("sni").is_some() || !chain.is_empty() {
                steps.push(step(
                    "tls",
                    "not configured",
                    vec!["plain HTTP listener: --sni and --cert do not apply".into()],
                ));
            }
        }
        Some(acceptor) => match acceptor.explain(args.value("sni"), &chain, now) {
            Err(e) => {
                steps.push(step("tls", "handshake refused", vec![e.to_string()]));
                return Ok(closed(steps, format!("TLS: {e}")));
            }
            Ok(tls) => {
                let mut d = vec![format!(
                    "SNI {} selects virtual host `{}`",
                    tls.sni.as_deref().unwrap_or("(none)"),
                    tls.vhost.as_deref().unwrap_or("")
                )];
                match (&tls.client_cert, &tls.refused) {
                    (Some(c), _) => {
                        d.push(format!("client certificate verified: {} (issuer {})", c.subject, c.issuer))
                    }
                    (None, Some(r)) => {
                        d.push(format!("handshake completes; refused at HTTP: {}", r.detail()))
                    }
                    (None, None) => d.push(if chain.is_empty() {
                        "no client certificate".into()
                    } else {
                        "client certificate not requested (client_auth off)".into()
                    }),
                }
                steps.push(step("tls", "pass", d));
                info = info.with_tls(tls);
            }
        },
    }

    // 5. The request head.
    let method = args.value("method").unwrap_or("GET");
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Usage(format!("--method {method}")))?;
    let path = args.value("path").unwrap_or("/");
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(host) = args.value("host") {
        builder = builder.header(http::header::HOST, host);
    }
    for h in args.values("header") {
        let (name, value) =
            h.split_once(':').ok_or_else(|| Usage(format!("--header {h}: 'Name: value' expected")))?;
        let name = HeaderName::try_from(name.trim()).map_err(|e| Usage(format!("--header {h}: {e}")))?;
        let value = HeaderValue::try_from(value.trim()).map_err(|e| Usage(format!("--header {h}: {e}")))?;
        builder = builder.header(name, value);
    }
    let (mut head, ()) = builder.body(()).map_err(|e| Usage(format!("request: {e}")))?.into_parts();
    head.extensions.insert(info);

    // 6. The request rules, one step at a time.
    let rules = built.gateway.rules();
    let mut denial = None;
    for (i, name) in STEPS.iter().enumerate() {
        let before = Decisions::get(&head.extensions).cloned().unwrap_or_default();
        match rules.check_step(i, &mut head) {
            None => steps.push(step(name, "not configured", vec![])),
            Some(Ok(())) => steps.push(step(name, "pass", recorded(&before, &head))),
            Some(Err(d)) => {
                let mut s = step(name, "refused", denial_lines(&d));
                s["denial"] = denial_json(&d);
                steps.push(s);
                denial = Some(d);
                break;
            }
        }
    }

    // 7. The outcome.
    let outcome = match denial {
        Some(d) => {
            let response = spec.responder.respond(d, &head);
            let status = response.status();
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body = String::from_utf8_lossy(&body).into_owned();
            json!({
                "outcome": "refused",
                "status": status.as_u16(),
                "content_type": content_type,
                "body": body,
                "text": [format!("result: refused, {status}"), format!("content-type: {content_type}"), body.trim_end().to_owned()],
            })
        }
        None => {
            let endpoint = Decisions::get(&head.extensions)
                .and_then(|d| d.host.as_ref())
                .map(|h| h.endpoint.to_string());
            let upstream = endpoint.as_ref().and_then(|e| settings.upstreams.get(e));
            let mut text = vec![match (&endpoint, upstream) {
                (Some(e), Some(u)) => format!("result: served: endpoint `{e}`, forwarded to {u}"),
                (Some(e), None) => format!(
                    "result: served: endpoint `{e}` (no upstream configured: `portcullis serve` answers 502)"
                ),
                (None, _) => "result: served: no endpoint recorded (no host rule)".into(),
            }];
            let mut forwarded = head.clone();
            crate::proxy::forward_headers(&mut forwarded, &settings, false);
            let headers: Vec<String> = forwarded
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            text.push("headers towards the upstream:".into());
            text.extend(headers.iter().map(|h| format!("  {h}")));
            json!({
                "outcome": "served",
                "endpoint": endpoint,
                "upstream": upstream.map(|u| u.to_string()),
                "upstream_headers": headers,
                "text": text,
            })
        }
    };
    Ok(Explanation { steps, outcome })
}

/// What one step recorded, from the decisions before and after it.
fn recorded(before: &Decisions, head: &Parts) -> Vec<String> {
    let Some(after) = Decisions::get(&head.extensions) else { return vec![] };
    let mut lines = Vec::new();
    if let (None, Some(c)) = (&before.client, &after.client) {
        lines.push(format!("client {} (learnt via {})", c.ip, c.learnt_via));
    }
    if let (None, Some(h)) = (&before.host, &after.host) {
        lines.push(format!("host {} matched `{}`: endpoint `{}`", h.host, h.pattern, h.endpoint));
    }
    if let (None, Some(o)) = (&before.origin, &after.origin) {
        lines.push(format!("origin: {o}"));
    }
    for ip in after.ip.iter().skip(before.ip.len()) {
        lines.push(format!(
            "{} allowed by {}{}",
            ip.ip,
            ip.rule,
            ip.rules.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        ));
    }
    for d in after.shadow.iter().skip(before.shadow.len()) {
        lines.push(format!("shadow: would refuse {} {}: {}", d.status().as_u16(), d.code(), d.detail()));
        if let Some(rule) = d.rule() {
            lines.push(format!("shadow rule: {rule}"));
        }
    }
    lines
}
