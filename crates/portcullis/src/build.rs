//! From a checked [`GatewayConfig`] to the running parts: the [`Gateway`] stack, the listeners' accept
//! paths and the virtual hosts. Every semantic error names the file, line and key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{ClientAddrConfig, ForwardedSource, IpRange, LinkId};
use portcullis_host::{Endpoint, EndpointKind, HostFilterLayer, Hosts, ServiceNames};
use portcullis_ip::{
    Action, ConnectionFilter, ConnectionLimits, IpFilterLayer, IpRules, IpRulesHandle, PeerBudget,
};
use portcullis_origin::{
    Connection, ConnectionState, Connections, OriginLayer, OriginPolicy, Preset, PrivateNetworks,
    PublicAccessLayer, Targets, UnknownLink,
};
use portcullis_proxy_protocol::{ProxyProtocolConfig, SourcePolicy};
use toml::Spanned;

use crate::config::{ConfigError, ForwardedConfig, GatewayConfig, IpRulesConfig, ListenerConfig, Source};
use crate::gateway::{Gateway, GatewayBuilder};
use crate::serve::ListenerSpec;

/// The parts a configuration builds.
pub struct Built {
    /// The request-level stack.
    pub gateway: Gateway,
    /// Each listener's address and accept path.
    pub listeners: Vec<(SocketAddr, ListenerSpec)>,
    /// The live IP rule sets by name (`global`, `connection`, `endpoint.<name>`), to swap at runtime.
    pub ip_rules: BTreeMap<String, IpRulesHandle>,
    /// The TLS virtual hosts, to change at runtime (None without TLS listeners).
    pub virtual_hosts: Option<portcullis_mtls::VirtualHosts>,
    /// The ops listener's address (`[ops] listen`), if any.
    pub ops: Option<SocketAddr>,
    /// Every file the configuration references (keystores, truststores), as the configuration names them
    /// (relative paths resolved against the configuration file's directory): a reload watches them.
    pub files: Vec<std::path::PathBuf>,
}

/// Everything a configuration builds, before the request rules are put in a [`Gateway`]: a reload gives
/// the rules to the running gateway instead.
pub(crate) struct Prepared {
    pub(crate) builder: GatewayBuilder,
    pub(crate) listeners: Vec<(SocketAddr, ListenerSpec)>,
    pub(crate) ip_rules: BTreeMap<String, IpRulesHandle>,
    pub(crate) virtual_hosts: Option<portcullis_mtls::VirtualHosts>,
    pub(crate) ops: Option<SocketAddr>,
    pub(crate) files: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built").field("gateway", &self.gateway).field("listeners", &self.listeners).finish()
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) source: &'a Source,
}

impl Ctx<'_> {
    /// A path from the configuration: relative paths are relative to the configuration file's directory.
    fn path(&self, p: &std::path::Path) -> std::path::PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match std::path::Path::new(self.source.file()).parent() {
            Some(dir) if std::path::Path::new(self.source.file()).is_file() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    fn err(&self, span: Range<usize>, key: impl Into<String>, msg: impl std::fmt::Display) -> ConfigError {
        self.source.error(span, key, msg)
    }

    fn range(&self, s: &Spanned<String>, key: &str) -> Result<IpRange, ConfigError> {
        s.get_ref().parse::<IpRange>().map_err(|e| self.err(s.span(), key, e))
    }
}

impl GatewayConfig {
    /// Builds the stack, the listeners and the virtual hosts, checking everything a layer checks.
    ///
    /// # Errors
    /// The first [`ConfigError`], naming the file, line and key.
    pub fn build(&self, source: &Source) -> Result<Built, ConfigError> {
        let p = self.prepare(source)?;
        Ok(Built {
            gateway: p.builder.build(),
            listeners: p.listeners,
            ip_rules: p.ip_rules,
            virtual_hosts: p.virtual_hosts,
            ops: p.ops,
            files: p.files,
        })
    }

    /// Everything a server started from this configuration checks, without binding anything: the build,
    /// and with `[management]` its settings, its state file and the configuration merged with that state
    /// (what the server would run). Returns what was built from the configuration that would run.
    ///
    /// # Errors
    /// The first [`ConfigError`], naming the file, line and key.
    pub fn check(&self, source: &Source) -> Result<Built, ConfigError> {
        let built = self.build(source)?;
        #[cfg(feature = "management")]
        if let Some(prepared) = crate::management::Prepared::new(self, source)? {
            let (config, effective) = prepared.effective();
            return config.build(effective);
        }
        Ok(built)
    }

    /// Every file this configuration references (keystore certificates and keys, truststore
    /// certificates), relative paths resolved as [`build`](Self::build) resolves them.
    pub fn files(&self, source: &Source) -> Vec<std::path::PathBuf> {
        let cx = Ctx { source };
        let mut files = Vec::new();
        for k in &self.keystores {
            files.push(cx.path(k.get_ref().cert.get_ref()));
            files.push(cx.path(k.get_ref().key.get_ref()));
        }
        for t in &self.truststores {
            files.extend(t.get_ref().certs.iter().map(|c| cx.path(c.get_ref())));
        }
        files
    }

    /// Checks and builds every part (see [`build`](Self::build)), the request rules still in their builder.
    pub(crate) fn prepare(&self, source: &Source) -> Result<Prepared, ConfigError> {
        let cx = Ctx { source };
        self.access_log_rate(source)?;
        if self.listeners.is_empty() {
            return Err(cx.err(0..0, "listener", "at least one [[listener]] is needed"));
        }
        let client = self.client_address(&cx)?;
        let hosts = self.hosts(&cx)?;
        let origin = self.origin_policy(&cx)?;
        let mut builder: GatewayBuilder = Gateway::builder().client_address(client);
        let host_layer = HostFilterLayer::new(hosts.clone()).shadow(self.hosts.get_ref().shadow);
        builder = builder.hosts(host_layer);
        let public = self.public_access.enabled.get_ref();
        // The origin layer always runs: besides tagging, it strips client-sent copies of the origin header.
        {
            let public_layer = if *public {
                PublicAccessLayer::enabled()
            } else {
                PublicAccessLayer::disabled(self.resource.get_ref().clone(), &origin)
                    .map_err(|e| cx.err(self.public_access.enabled.span(), "public_access.enabled", e))?
            };
            builder = builder
                .origin(OriginLayer::new(origin))
                .public_access(public_layer.shadow(self.public_access.shadow));
        }
        let mut ip_rules = BTreeMap::new();
        if let Some(rules) = &self.ip.rules {
            let (layer, handle) = self.ip_layer(&cx, rules, "ip.rules")?;
            ip_rules.insert("global".to_owned(), handle);
            builder = builder.ip(layer);
        }
        let endpoints: Vec<&str> = hosts.endpoints().collect();
        for (name, rules) in &self.ip.endpoint {
            if !endpoints.contains(&name.as_str()) {
                return Err(cx.err(
                    rules.span(),
                    format!("ip.endpoint.{name}"),
                    "no such endpoint in [hosts]",
                ));
            }
            let (layer, handle) = self.ip_layer(&cx, rules, &format!("ip.endpoint.{name}"))?;
            ip_rules.insert(format!("endpoint.{name}"), handle);
            builder = builder.ip_for_endpoint(name.clone(), layer);
        }
        let connection_filter = match &self.ip.connection {
            Some(rules) => {
                let handle = IpRulesHandle::new(self.ip_rules(&cx, rules, "ip.connection")?);
                ip_rules.insert("connection".to_owned(), handle.clone());
                let filter = ConnectionFilter::new(handle);
                Some(if rules.get_ref().shadow { filter.shadow() } else { filter })
            }
            None => None,
        };
        let virtual_hosts = self.virtual_hosts(&cx, &hosts)?;
        if let Some(v) = &virtual_hosts {
            builder = builder.virtual_hosts(v.clone());
        }
        let responder = self.responder(&cx)?;
        let mut listeners = Vec::new();
        for l in &self.listeners {
            let lc = l.get_ref();
            let key = format!("listener.{}", lc.name);
            let tls = match (lc.tls, &virtual_hosts) {
                (false, _) => None,
                (true, Some(v)) => Some(portcullis_mtls::MtlsAcceptor::new(v.clone())),
                (true, None) => {
                    return Err(cx.err(l.span(), key, "tls = true needs at least one [[virtual_host]]"));
                }
            };
            let proxy = match &lc.proxy_protocol {
                None => None,
                Some(p) => {
                    let mut b = ProxyProtocolConfig::builder();
                    for r in &p.required_from {
                        b = b.source(
                            cx.range(r, &format!("{key}.proxy_protocol.required_from"))?,
                            SourcePolicy::Required,
                        );
                    }
                    for r in &p.optional_from {
                        b = b.source(
                            cx.range(r, &format!("{key}.proxy_protocol.optional_from"))?,
                            SourcePolicy::Optional,
                        );
                    }
                    if let Some(ms) = p.deadline_ms {
                        b = b.header_timeout(Duration::from_millis(ms));
                    }
                    if let Some(len) = p.max_v2_len {
                        b = b.max_v2_len(len);
                    }
                    Some(Arc::new(
                        b.build().map_err(|e| cx.err(l.span(), format!("{key}.proxy_protocol"), e))?,
                    ))
                }
            };
            let filter = match (lc.connection_filter, &connection_filter) {
                (false, _) => None,
                (true, Some(f)) => Some(f.clone()),
                (true, None) => {
                    return Err(cx.err(
                        l.span(),
                        key,
                        "connection_filter = true needs [ip.connection] rules",
                    ));
                }
            };
            let mut spec = ListenerSpec::new(lc.name.clone());
            let untrusted = lc
                .proxy_protocol
                .as_ref()
                .map(|p| (p.max_pending_untrusted, p.max_pending_untrusted_per_peer.as_ref()));
            if let Some((total, per_peer)) = untrusted {
                if total == Some(0) {
                    return Err(cx.err(
                        l.span(),
                        format!("{key}.proxy_protocol.max_pending_untrusted"),
                        "must be at least 1",
                    ));
                }
                let total = total.unwrap_or(crate::serve::MAX_PENDING_UNTRUSTED);
                let per_peer = match per_peer {
                    Some(n) => {
                        positive(&cx, n, &format!("{key}.proxy_protocol.max_pending_untrusted_per_peer"))?
                    }
                    None => crate::serve::MAX_PENDING_UNTRUSTED_PER_PEER,
                };
                spec.untrusted = PeerBudget::new(total, per_peer);
            }
            listener_limits(&cx, lc, &key, &mut spec)?;
            spec.responder = responder.clone();
            spec.tls = tls.map(|t| t.handshake_timeout(spec.timeouts.tls_handshake));
            spec.proxy = proxy;
            spec.filter = filter;
            listeners.push((*lc.address.get_ref(), spec));
        }
        builder = builder.responder(responder);
        let ops = self.ops.as_ref().map(|o| *o.listen.get_ref());
        Ok(Prepared { builder, listeners, ip_rules, virtual_hosts, ops, files: self.files(source) })
    }

    fn responder(&self, cx: &Ctx<'_>) -> Result<portcullis_core::Responder, ConfigError> {
        use bytes::Bytes;
        use http::{HeaderValue, Response, StatusCode, header};
        use http_body_util::Full;
        use portcullis_core::{Denial, ProblemJson, RespondDenial, Responder};
        if self.responses.is_empty() {
            return Ok(Responder::default());
        }
        let mut overrides = HashMap::new();
        for (code, o) in &self.responses {
            let oc = o.get_ref();
            let key = format!("responses.{code}");
            let status = match oc.status {
                None => None,
                Some(s) => {
                    Some(StatusCode::from_u16(s).map_err(|e| cx.err(o.span(), format!("{key}.status"), e))?)
                }
            };
            let ct = oc.content_type.as_deref().unwrap_or("text/plain; charset=utf-8");
            let ct =
                HeaderValue::from_str(ct).map_err(|e| cx.err(o.span(), format!("{key}.content_type"), e))?;
            overrides.insert(code.clone(), (status, ct, oc.body.clone()));
        }
        Ok(Responder::new(move |d: &Denial| match overrides.get(d.code()) {
            None => ProblemJson.respond(d),
            Some((status, ct, body)) => {
                let body = body
                    .replace("{detail}", d.detail())
                    .replace("{code}", d.code())
                    .replace("{refused}", d.refused().unwrap_or(""));
                let mut res = Response::new(Full::new(Bytes::from(body)));
                *res.status_mut() = status.unwrap_or(d.status());
                res.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                res
            }
        }))
    }

    fn client_address(&self, cx: &Ctx<'_>) -> Result<ClientAddrConfig, ConfigError> {
        let c = &self.client_address;
        let ranges = c
            .trusted_proxies
            .iter()
            .map(|r| {
                let range = cx.range(r, "client_address.trusted_proxies")?;
                if range.as_net().is_some_and(|n| n.prefix_len() == 0) {
                    return Err(cx.err(
                        r.span(),
                        "client_address.trusted_proxies",
                        "trusting every address lets any client write its own address: name the proxies",
                    ));
                }
                Ok(range)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = ClientAddrConfig::new()
            .trusted_proxies(ranges)
            .map_err(|e| cx.err(0..0, "client_address.trusted_proxies", e))?
            .source(match c.forwarded {
                ForwardedConfig::None => ForwardedSource::None,
                ForwardedConfig::XForwardedFor => ForwardedSource::XForwardedFor,
                ForwardedConfig::Forwarded => ForwardedSource::Forwarded,
            });
        if let Some(n) = c.fixed_hops {
            config = config.fixed_hops(n);
        }
        if let Some(n) = c.max_entries {
            config = config.max_entries(n);
        }
        Ok(config)
    }

    fn hosts(&self, cx: &Ctx<'_>) -> Result<Hosts, ConfigError> {
        let h = self.hosts.get_ref();
        let mut endpoints: Vec<(String, Endpoint)> = Vec::new();
        if let Some(s) = &h.service {
            let names = ServiceNames::new(&s.name, &s.domain).private_link(s.private_link);
            for kind in
                [EndpointKind::Gateway, EndpointKind::Portal, EndpointKind::Management, EndpointKind::Scm]
            {
                endpoints.push((kind.name().to_owned(), names.endpoint(kind)));
            }
        }
        for (name, e) in &h.endpoint {
            let ec = e.get_ref();
            let mut endpoint = match endpoints.iter().position(|(n, _)| n == name) {
                Some(i) => endpoints.remove(i).1,
                None => Endpoint::new(name.clone()),
            };
            for n in &ec.names {
                endpoint = endpoint.host(n.get_ref().clone());
            }
            if let Some(v) = &ec.virtual_host {
                endpoint = endpoint.vhost(v.clone());
            }
            endpoints.push((name.clone(), endpoint));
        }
        if endpoints.is_empty() {
            return Err(cx.err(
                self.hosts.span(),
                "hosts",
                "no endpoint: add [hosts.service] or [hosts.endpoint.<name>]",
            ));
        }
        let mut b = Hosts::builder();
        for (_, e) in endpoints {
            b = b.endpoint(e);
        }
        b.build().map_err(|e| {
            // Point at the configured name the error is about, when there is one.
            let text = e.to_string();
            let span = h
                .endpoint
                .iter()
                .flat_map(|(name, ec)| ec.get_ref().names.iter().map(move |n| (name, n)))
                .rfind(|(_, n)| text.contains(n.get_ref().to_ascii_lowercase().trim_end_matches('.')))
                .map(|(name, n)| (n.span(), format!("hosts.endpoint.{name}.names")));
            match span {
                Some((span, key)) => cx.err(span, key, e),
                None => cx.err(self.hosts.span(), "hosts", e),
            }
        })
    }

    fn origin_policy(&self, cx: &Ctx<'_>) -> Result<OriginPolicy, ConfigError> {
        let pn = &self.private_networks;
        let mut nb = PrivateNetworks::builder();
        for p in &pn.presets {
            let preset = match p.get_ref().as_str() {
                "rfc1918" => Preset::Rfc1918,
                "unique-local" => Preset::UniqueLocal,
                "loopback" => Preset::Loopback,
                "link-local" => Preset::LinkLocal,
                "cgnat" => Preset::Cgnat,
                other => {
                    return Err(cx.err(
                        p.span(),
                        "private_networks.presets",
                        format!(
                            "unknown preset `{other}` (rfc1918, unique-local, loopback, link-local, cgnat)"
                        ),
                    ));
                }
            };
            nb = nb.preset(preset);
        }
        for (name, ranges) in &pn.networks {
            let key = format!("private_networks.networks.{name}");
            let ranges = ranges.iter().map(|r| cx.range(r, &key)).collect::<Result<Vec<_>, _>>()?;
            nb = nb.network(name.as_str(), ranges);
        }
        let networks = nb.build().map_err(|e| cx.err(0..0, "private_networks", e))?;
        let mut cb = Connections::builder();
        if let Some(max) = self.private_endpoints.max_connections {
            cb = cb.max(max);
        }
        let max = self.private_endpoints.max_connections.unwrap_or(100);
        if self.private_endpoint_connections.len() > max {
            let extra = &self.private_endpoint_connections[max];
            return Err(cx.err(
                extra.span(),
                "private_endpoint_connection",
                format!(
                    "{} private endpoint connections configured, at most {max} are allowed",
                    self.private_endpoint_connections.len()
                ),
            ));
        }
        for c in &self.private_endpoint_connections {
            let pc = c.get_ref();
            let key = format!("private_endpoint_connection.{}", pc.name);
            let link = match (pc.azure_link_id, &pc.aws_vpc_endpoint_id, pc.gcp_psc_connection_id) {
                (Some(id), None, None) => LinkId::Azure(id),
                (None, Some(id), None) => LinkId::Aws(Arc::from(id.as_str())),
                (None, None, Some(id)) => LinkId::Gcp(id),
                _ => {
                    return Err(cx.err(
                        c.span(),
                        key,
                        "exactly one of azure_link_id, aws_vpc_endpoint_id, gcp_psc_connection_id is needed",
                    ));
                }
            };
            let state = match pc.state.get_ref().as_str() {
                "approved" => ConnectionState::Approved,
                "pending" => ConnectionState::Pending,
                "rejected" => ConnectionState::Rejected,
                other => {
                    return Err(cx.err(
                        pc.state.span(),
                        format!("{key}.state"),
                        format!("unknown state `{other}` (pending, approved, rejected)"),
                    ));
                }
            };
            let mut conn = Connection::new(pc.name.as_str(), link, state);
            if let Some(t) = &pc.targets {
                conn = conn.with_targets(Targets::endpoints(t.iter().map(String::as_str)));
            }
            if let Some(g) = &pc.group_id {
                conn = conn.with_group_id(g.as_str());
            }
            cb = cb.connection(conn);
        }
        let connections = cb.build().map_err(|e| cx.err(0..0, "private_endpoint_connection", e))?;
        let unknown = match self.private_endpoints.unknown_link.as_ref() {
            None => UnknownLink::Refuse,
            Some(s) => match s.get_ref().as_str() {
                "refuse" => UnknownLink::Refuse,
                "public" => UnknownLink::Public,
                other => {
                    return Err(cx.err(
                        s.span(),
                        "private_endpoints.unknown_link",
                        format!("`{other}`: use refuse or public"),
                    ));
                }
            },
        };
        Ok(OriginPolicy::new(networks, connections).unknown_link(unknown))
    }

    fn ip_rules(
        &self,
        cx: &Ctx<'_>,
        rules: &Spanned<IpRulesConfig>,
        key: &str,
    ) -> Result<IpRules, ConfigError> {
        let rc = rules.get_ref();
        let default = match rc.default.get_ref().as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => {
                return Err(cx.err(
                    rc.default.span(),
                    format!("{key}.default"),
                    format!("`{other}`: allow or deny"),
                ));
            }
        };
        let mut b = IpRules::builder(default);
        b.name(key);
        let mut used_sets: HashMap<&str, Range<usize>> = HashMap::new();
        for (list, action) in [(&rc.allow, Action::Allow), (&rc.deny, Action::Deny)] {
            for entry in list {
                let text = entry.get_ref();
                let which = if action == Action::Allow { "allow" } else { "deny" };
                if let Some(set) = text.strip_prefix('@') {
                    if !self.ip.sets.contains_key(set) {
                        return Err(cx.err(
                            entry.span(),
                            format!("{key}.{which}"),
                            format!("no set `{set}` in [ip.sets]"),
                        ));
                    }
                    used_sets.insert(set, entry.span());
                    if action == Action::Allow {
                        b.allow_set(set);
                    } else {
                        b.deny_set(set);
                    }
                } else {
                    let range = cx.range(entry, &format!("{key}.{which}"))?;
                    if action == Action::Allow {
                        b.allow(range);
                    } else {
                        b.deny(range);
                    }
                }
            }
        }
        for (set, entries) in &self.ip.sets {
            if used_sets.contains_key(set.as_str()) {
                let ranges = entries
                    .iter()
                    .map(|r| cx.range(r, &format!("ip.sets.{set}")))
                    .collect::<Result<Vec<_>, _>>()?;
                b.set(set, ranges);
            }
        }
        b.build().map_err(|e| cx.err(rules.span(), key, e))
    }

    fn ip_layer(
        &self,
        cx: &Ctx<'_>,
        rules: &Spanned<IpRulesConfig>,
        key: &str,
    ) -> Result<(IpFilterLayer, IpRulesHandle), ConfigError> {
        let handle = IpRulesHandle::new(self.ip_rules(cx, rules, key)?);
        let mut layer = IpFilterLayer::new(handle.clone());
        if rules.get_ref().direct_peer {
            layer = layer.direct_peer();
        }
        if rules.get_ref().shadow {
            layer = layer.shadow();
        }
        Ok((layer, handle))
    }
}

// === listener limits ===

/// A configured count that must be at least 1.
fn positive(cx: &Ctx<'_>, n: &Spanned<usize>, key: &str) -> Result<usize, ConfigError> {
    match *n.get_ref() {
        0 => Err(cx.err(n.span(), key, "must be at least 1")),
        v => Ok(v),
    }
}

/// A configured number of milliseconds that must be at least 1.
fn millis(cx: &Ctx<'_>, n: &Spanned<u64>, key: &str) -> Result<Duration, ConfigError> {
    match *n.get_ref() {
        0 => Err(cx.err(n.span(), key, "must be at least 1 ms: a deadline cannot be turned off")),
        v => Ok(Duration::from_millis(v)),
    }
}

/// `[listener.timeouts]` and `[listener.limits]` into the listener's spec.
fn listener_limits(
    cx: &Ctx<'_>,
    lc: &ListenerConfig,
    key: &str,
    spec: &mut ListenerSpec,
) -> Result<(), ConfigError> {
    let t = &lc.timeouts;
    let timeouts = &mut spec.timeouts;
    for (value, field, slot) in [
        (&t.first_byte_ms, "first_byte_ms", &mut timeouts.first_byte),
        (&t.tls_handshake_ms, "tls_handshake_ms", &mut timeouts.tls_handshake),
        (&t.http_preface_ms, "http_preface_ms", &mut timeouts.http_preface),
        (&t.header_read_ms, "header_read_ms", &mut timeouts.header_read),
        (&t.body_read_ms, "body_read_ms", &mut timeouts.body_read),
        (&t.idle_ms, "idle_ms", &mut timeouts.idle),
        (&t.drain_ms, "drain_ms", &mut timeouts.drain),
        (&t.shutdown_grace_ms, "shutdown_grace_ms", &mut timeouts.shutdown_grace),
    ] {
        if let Some(v) = value {
            *slot = millis(cx, v, &format!("{key}.timeouts.{field}"))?;
        }
    }
    if let Some(v) = &t.max_age_ms {
        timeouts.max_age = Some(millis(cx, v, &format!("{key}.timeouts.max_age_ms"))?);
    }
    let l = &lc.limits;
    let k = |field: &str| format!("{key}.limits.{field}");
    let mut limits = ConnectionLimits::default();
    for (value, field, slot) in [
        (&l.max_connections, "max_connections", &mut limits.max_connections),
        (&l.max_connections_per_peer, "max_connections_per_peer", &mut limits.max_per_peer),
        (
            &l.max_connections_per_load_balancer,
            "max_connections_per_load_balancer",
            &mut limits.max_per_load_balancer,
        ),
    ] {
        if let Some(v) = value {
            *slot = positive(cx, v, &k(field))?;
        }
    }
    if let Some(p) = &l.ipv6_prefix {
        if *p.get_ref() > 128 {
            return Err(cx.err(p.span(), k("ipv6_prefix"), "an IPv6 prefix is at most 128 bits"));
        }
        limits.ipv6_prefix = *p.get_ref();
    }
    spec.limits = limits.limiter();
    let handshakes = match &l.max_tls_handshakes {
        Some(v) => positive(cx, v, &k("max_tls_handshakes"))?,
        None => crate::serve::MAX_TLS_HANDSHAKES,
    };
    let per_peer = match &l.max_tls_handshakes_per_peer {
        Some(v) => positive(cx, v, &k("max_tls_handshakes_per_peer"))?,
        None => crate::serve::MAX_TLS_HANDSHAKES_PER_PEER,
    };
    spec.handshakes = PeerBudget::with_ipv6_prefix(handshakes, per_peer, limits.ipv6_prefix);
    if let Some(v) = &l.max_header_list_bytes {
        spec.headers.max_list_bytes = positive(cx, v, &k("max_header_list_bytes"))?;
    }
    if let Some(v) = &l.max_header_bytes {
        spec.headers.max_field_bytes = positive(cx, v, &k("max_header_bytes"))?;
    }
    // A bound on what one head may make hyper buffer: the configured list plus hyper's headroom.
    if spec.headers.max_list_bytes > 1024 * 1024 {
        let span = l.max_header_list_bytes.as_ref().map_or(0..0, Spanned::span);
        return Err(cx.err(span, k("max_header_list_bytes"), "at most 1 MiB (1048576)"));
    }
    Ok(())
}

// === TLS virtual hosts ===

impl GatewayConfig {
    /// The chain policy named `name` (a preset or a `[policy.<name>]` over its base).
    pub(crate) fn policy(
        &self,
        cx: &Ctx<'_>,
        name: &str,
        at: Range<usize>,
        key: &str,
    ) -> Result<portcullis_mtls::ChainPolicy, ConfigError> {
        use portcullis_mtls::{ChainPolicy, Curve, EkuRule, PRESETS, SignatureHash};
        let presets = || PRESETS.iter().map(|p| format!("`{}`", p.name)).collect::<Vec<_>>().join(", ");
        let Some(p) = self.policies.get(name) else {
            if name == "default" {
                return Ok(ChainPolicy::new("default"));
            }
            return ChainPolicy::preset(name).ok_or_else(|| {
                cx.err(
                    at,
                    key,
                    format!("no [policy.{name}] and no preset of that name (presets: {})", presets()),
                )
            });
        };
        let pc = p.get_ref();
        let mut policy = match &pc.base {
            None => ChainPolicy::new(name),
            Some(base) => ChainPolicy::preset(base.get_ref()).map(|b| b.renamed(name)).ok_or_else(|| {
                cx.err(
                    base.span(),
                    format!("policy.{name}.base"),
                    format!("unknown preset `{}` (presets: {})", base.get_ref(), presets()),
                )
            })?,
        };
        if let Some(v) = pc.min_rsa_bits {
            policy = policy.min_rsa_bits(v);
        }
        if let Some(v) = pc.max_rsa_bits {
            policy = policy.max_rsa_bits(v);
        }
        if let Some(list) = &pc.curves {
            let mut curves = Vec::new();
            for c in list.get_ref() {
                curves.push(match c.as_str() {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    "P-521" => Curve::P521,
                    other => {
                        return Err(cx.err(
                            list.span(),
                            format!("policy.{name}.curves"),
                            format!("`{other}`: P-256, P-384 or P-521"),
                        ));
                    }
                });
            }
            policy = policy.curves(curves);
        }
        if let Some(v) = pc.allow_ed25519 {
            policy = policy.allow_ed25519(v);
        }
        if let Some(v) = pc.allow_sha1 {
            policy = policy.allow_sha1(v);
        }
        if let Some(h) = &pc.min_signature_hash {
            policy = policy.min_signature_hash(match h.get_ref().as_str() {
                "sha256" => SignatureHash::Sha256,
                "sha384" => SignatureHash::Sha384,
                "sha512" => SignatureHash::Sha512,
                other => {
                    return Err(cx.err(
                        h.span(),
                        format!("policy.{name}.min_signature_hash"),
                        format!("`{other}`: sha256, sha384 or sha512"),
                    ));
                }
            });
        }
        if let Some(v) = pc.allow_dsa {
            policy = policy.allow_dsa(v);
        }
        if let Some(v) = pc.max_chain_len {
            policy = policy.max_chain_len(v);
        }
        if let Some(v) = pc.max_presented {
            policy = policy.max_presented(v);
        }
        if let Some(v) = pc.check_validity {
            policy = policy.check_validity(v);
        }
        if let Some(v) = pc.clock_skew_secs {
            policy = policy.clock_skew(std::time::Duration::from_secs(v));
        }
        if let Some(v) = pc.check_ca_constraints {
            policy = policy.check_ca_constraints(v);
        }
        if let Some(v) = pc.refuse_ca_leaf {
            policy = policy.refuse_ca_leaf(v);
        }
        if let Some(e) = &pc.eku {
            policy = policy.eku(match e.get_ref().as_str() {
                "if-present" => EkuRule::IfPresent,
                "required" => EkuRule::Required,
                "ignore" => EkuRule::Ignore,
                other => {
                    return Err(cx.err(
                        e.span(),
                        format!("policy.{name}.eku"),
                        format!("`{other}`: if-present, required or ignore"),
                    ));
                }
            });
        }
        Ok(policy)
    }

    /// Every `[policy.<name>]`: not a preset's name, and buildable (a policy no virtual host uses is still
    /// checked, so that a typo is found before it is used); every virtual host's `policy` names a preset or
    /// a table. Runs before any certificate file is read.
    fn check_policies(&self, cx: &Ctx<'_>) -> Result<(), ConfigError> {
        for (name, p) in &self.policies {
            if portcullis_mtls::ChainPolicy::preset(name).is_some() {
                return Err(cx.err(
                    p.span(),
                    format!("policy.{name}"),
                    format!(
                        "`{name}` is a preset: use `policy = \"{name}\"` as it is, or name this table otherwise \
                         and start it from the preset with `base = \"{name}\"`"
                    ),
                ));
            }
            self.policy(cx, name, p.span(), &format!("policy.{name}"))?;
        }
        for v in &self.virtual_hosts {
            let vc = v.get_ref();
            if let Some(p) = &vc.policy {
                self.policy(cx, p.get_ref(), p.span(), &format!("virtual_host.{}.policy", vc.name))?;
            }
        }
        Ok(())
    }

    /// A `[[truststore]]` with its certificate files read.
    fn truststore(
        &self,
        cx: &Ctx<'_>,
        tc: &crate::config::TruststoreConfig,
    ) -> Result<portcullis_mtls::Truststore, ConfigError> {
        use portcullis_mtls::{AuditAllowances, Truststore};
        let key = format!("truststore.{}", tc.name);
        let mut ts = Truststore::new(tc.name.as_str()).allow(AuditAllowances {
            weak_anchors: tc.allow_weak_anchors,
            expired_anchors: tc.allow_expired_anchors,
            non_ca_anchors: tc.allow_leaf_anchors,
        });
        for path in &tc.certs {
            ts.add_pem_file(cx.path(path.get_ref()))
                .map_err(|e| cx.err(path.span(), format!("{key}.certs"), e))?;
        }
        Ok(ts)
    }

    /// The chain policy of the virtual host `name` and its truststore (`None` without one), built as
    /// [`build`](Self::build) builds them: for tools that judge a chain offline (`portcullis check-chain`).
    ///
    /// # Errors
    /// No such virtual host, or the [`ConfigError`] of its policy or truststore.
    pub fn virtual_host_policy(
        &self,
        source: &Source,
        name: &str,
    ) -> Result<(portcullis_mtls::ChainPolicy, Option<portcullis_mtls::Truststore>), ConfigError> {
        let cx = Ctx { source };
        let Some(v) = self.virtual_hosts.iter().find(|v| v.get_ref().name == name) else {
            let names: Vec<&str> = self.virtual_hosts.iter().map(|v| v.get_ref().name.as_str()).collect();
            return Err(cx.err(
                0..0,
                "virtual_host",
                format!("no [[virtual_host]] named `{name}` (there are: {names:?})"),
            ));
        };
        let vc = v.get_ref();
        let key = format!("virtual_host.{name}");
        let policy = match &vc.policy {
            Some(p) => self.policy(&cx, p.get_ref(), p.span(), &format!("{key}.policy"))?,
            None => self.policy(&cx, "default", v.span(), &format!("{key}.policy"))?,
        };
        let truststore = match &vc.truststore {
            None => None,
            Some(ts) => {
                let tc =
                    self.truststores.iter().find(|t| t.get_ref().name == *ts.get_ref()).ok_or_else(|| {
                        cx.err(
                            ts.span(),
                            format!("{key}.truststore"),
                            format!("no [[truststore]] named `{}`", ts.get_ref()),
                        )
                    })?;
                Some(self.truststore(&cx, tc.get_ref())?)
            }
        };
        Ok((policy, truststore))
    }

    fn virtual_hosts(
        &self,
        cx: &Ctx<'_>,
        hosts: &Hosts,
    ) -> Result<Option<portcullis_mtls::VirtualHosts>, ConfigError> {
        use portcullis_mtls::{ClientAuth, Keystore, VirtualHost, VirtualHosts};
        let _ = hosts;
        self.check_policies(cx)?;
        let vhosts = VirtualHosts::new();
        fn no_duplicates<'a>(
            cx: &Ctx<'_>,
            what: &str,
            items: impl Iterator<Item = (&'a str, Range<usize>)>,
        ) -> Result<(), ConfigError> {
            let mut seen = std::collections::HashSet::new();
            for (name, span) in items {
                if !seen.insert(name) {
                    return Err(cx.err(
                        span,
                        format!("{what}.{name}"),
                        format!("a second [[{what}]] named `{name}`"),
                    ));
                }
            }
            Ok(())
        }
        no_duplicates(cx, "keystore", self.keystores.iter().map(|k| (k.get_ref().name.as_str(), k.span())))?;
        no_duplicates(
            cx,
            "truststore",
            self.truststores.iter().map(|t| (t.get_ref().name.as_str(), t.span())),
        )?;
        no_duplicates(
            cx,
            "virtual_host",
            self.virtual_hosts.iter().map(|v| (v.get_ref().name.as_str(), v.span())),
        )?;
        for (name, e) in &self.hosts.get_ref().endpoint {
            if let Some(tag) = &e.get_ref().virtual_host
                && !self.virtual_hosts.iter().any(|v| v.get_ref().name == *tag)
            {
                return Err(cx.err(
                    e.span(),
                    format!("hosts.endpoint.{name}.virtual_host"),
                    format!("no [[virtual_host]] named `{tag}`"),
                ));
            }
        }
        for k in &self.keystores {
            let kc = k.get_ref();
            // A file that cannot be read is named with the key that references it.
            for (field, file) in [("cert", &kc.cert), ("key", &kc.key)] {
                let path = cx.path(file.get_ref());
                if let Err(e) = std::fs::File::open(&path) {
                    let at = format!("keystore.{}.{field}", kc.name);
                    return Err(cx.err(file.span(), at, format!("cannot read {}: {e}", path.display())));
                }
            }
            let ks = Keystore::from_pem_files(
                kc.name.as_str(),
                cx.path(kc.cert.get_ref()),
                cx.path(kc.key.get_ref()),
            )
            .map_err(|e| cx.err(kc.cert.span(), format!("keystore.{}", kc.name), e))?;
            vhosts.put_keystore(ks).map_err(|e| cx.err(k.span(), format!("keystore.{}", kc.name), e))?;
        }
        for t in &self.truststores {
            let ts = self.truststore(cx, t.get_ref())?;
            vhosts
                .put_truststore(ts)
                .map_err(|e| cx.err(t.span(), format!("truststore.{}", t.get_ref().name), e))?;
        }
        // The stores are read and checked even when no virtual host uses them yet.
        if self.virtual_hosts.is_empty() {
            if let Some((name, e)) =
                self.hosts.get_ref().endpoint.iter().find(|(_, e)| e.get_ref().virtual_host.is_some())
            {
                return Err(cx.err(
                    e.span(),
                    format!("hosts.endpoint.{name}.virtual_host"),
                    "no [[virtual_host]] is configured",
                ));
            }
            return Ok(None);
        }
        let mut default = None;
        for v in &self.virtual_hosts {
            let vc = v.get_ref();
            let key = format!("virtual_host.{}", vc.name);
            let auth = match vc.client_auth.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
                None | Some(("off", _)) => ClientAuth::Off,
                Some(("optional", _)) => ClientAuth::Optional,
                Some(("required", _)) => ClientAuth::Required,
                Some((other, span)) => {
                    return Err(cx.err(
                        span,
                        format!("{key}.client_auth"),
                        format!("`{other}`: off, optional or required"),
                    ));
                }
            };
            if auth != ClientAuth::Off && vc.truststore.is_none() {
                return Err(cx.err(
                    v.span(),
                    format!("{key}.truststore"),
                    "client_auth needs a truststore to verify client certificates against",
                ));
            }
            let mut vh = VirtualHost::new(
                vc.name.as_str(),
                vc.hosts.iter().map(|h| h.get_ref().clone()),
                vc.keystore.get_ref().as_str(),
            )
            .client_auth(auth)
            .refuse_at_http(vc.refuse_at_http);
            if let Some(ts) = &vc.truststore {
                if !self.truststores.iter().any(|t| t.get_ref().name == *ts.get_ref()) {
                    return Err(cx.err(
                        ts.span(),
                        format!("{key}.truststore"),
                        format!("no [[truststore]] named `{}`", ts.get_ref()),
                    ));
                }
                vh = vh.truststore(ts.get_ref().as_str());
            }
            if !self.keystores.iter().any(|k| k.get_ref().name == *vc.keystore.get_ref()) {
                return Err(cx.err(
                    vc.keystore.span(),
                    format!("{key}.keystore"),
                    format!("no [[keystore]] named `{}`", vc.keystore.get_ref()),
                ));
            }
            let (pname, pspan) = match &vc.policy {
                Some(p) => (p.get_ref().as_str(), p.span()),
                None => ("default", v.span()),
            };
            vh = vh.policy(self.policy(cx, pname, pspan, &format!("{key}.policy"))?);
            if vc.identities.len() > 10 {
                return Err(cx.err(v.span(), format!("{key}.identities"), "at most 10 allowed identities"));
            }
            let mut ids = Vec::new();
            for id in &vc.identities {
                ids.push(
                    allowed_identity(id.get_ref())
                        .map_err(|e| cx.err(id.span(), format!("{key}.identities"), e))?,
                );
            }
            if !ids.is_empty() {
                vh = vh.allowed_identities(ids);
            }
            vhosts.put(vh).map_err(|e| {
                // A weak anchor is audited against this virtual host's policy, but what must change is the
                // truststore: point at the `certs` entry of the file that holds it.
                let anchor_entry = match &e {
                    portcullis_mtls::ConfigError::WeakAnchor(a) => self
                        .truststores
                        .iter()
                        .filter(|t| t.get_ref().name == a.store)
                        .flat_map(|t| t.get_ref().certs.iter())
                        .find(|p| cx.path(p.get_ref()).display().to_string() == a.file)
                        .map(|p| (p.span(), format!("truststore.{}.certs", a.store))),
                    _ => None,
                };
                match anchor_entry {
                    Some((span, at)) => {
                        cx.err(span, at, format!("{e} (audited for virtual host `{}`)", vc.name))
                    }
                    None => cx.err(v.span(), key.clone(), e),
                }
            })?;
            if vc.default {
                if default.is_some() {
                    return Err(cx.err(
                        v.span(),
                        format!("{key}.default"),
                        "only one virtual host can be the default",
                    ));
                }
                default = Some(vc.name.clone());
            }
        }
        if let Some(d) = &default {
            vhosts.set_default(Some(d)).map_err(|e| cx.err(0..0, "virtual_host", e))?;
        }
        Ok(Some(vhosts))
    }
}

/// An identity table of the configuration (`{ sha256 = "…", subject = "…", issuer = "…", san = "…" }`, for
/// virtual hosts' allowed identities and the management API's grants).
///
/// # Errors
/// An unknown field, no field, an empty value (it would match only an empty subject, issuer or name: a
/// variable left unexpanded, a key misspelt), or a `sha256` that is not 64 hex digits.
pub(crate) fn allowed_identity(
    fields: &BTreeMap<String, String>,
) -> Result<portcullis_mtls::AllowedIdentity, String> {
    let mut a = portcullis_mtls::AllowedIdentity::default();
    for (field, value) in fields {
        a = match field.as_str() {
            "sha256" => a.sha256(value),
            "subject" => a.subject(value.clone()),
            "issuer" => a.issuer(value.clone()),
            "san" => a.san(value.clone()),
            other => return Err(format!("`{other}`: sha256, subject, issuer or san")),
        };
    }
    let sha_ok = a.sha256.as_ref().is_none_or(|h| h.len() == 64);
    let empty = [&a.subject, &a.issuer, &a.san].into_iter().flatten().any(String::is_empty);
    if fields.is_empty() || empty || !sha_ok {
        return Err("an identity needs at least one field, none empty, and sha256 is 64 hex digits".into());
    }
    Ok(a)
}
