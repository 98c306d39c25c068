//! The gateway's own run (`GatewayGate::check`: the request's parts borrowed, the headers walked once with
//! their values borrowed) against the same layers composed as separate gates (`Gates` of each layer's
//! `Gate::check_in`, through a `GateContext`) and against the gateway gate inside a `Gates` run
//! (`GatewayGate::check_in`): for every request, the same answer, the same decisions, the same headers.
//!
//! Requests vary over what each layer reads and what a client controls: the host (configured, wildcard,
//! upper case, trailing dot, port, bare IP, unknown, none, two lines), the forwarded header (public,
//! private, trusted hops, garbage, absent, two lines), a spoofed copy of the origin header, the peer (a
//! trusted proxy, an untrusted private address, a public one), a PROXY header with a private-link id, and
//! how the connection facts are wired (a `ConnInfo` copy, alone or beside another extension or an existing
//! `Decisions`, axum's `ConnectInfo<ConnInfo>` or `ConnectInfo<SocketAddr>`, none); the configuration over
//! the forwarded header read (`X-Forwarded-For`, `Forwarded`, none), trusted or fixed hops, shadow and
//! forwarding modes. A second property adds per-endpoint IP rules, which only the gateway expresses: there
//! the gateway's run is compared with the same gateway inside a `Gates` run.

use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Request};
use portcullis::Gateway;
use portcullis_core::{
    ClientAddrConfig, ConnInfo, Decisions, ForwardedSource, Gate, Gates, LinkId, ProxyInfo, ProxyVersion,
};
use portcullis_host::{Endpoint, HostFilterLayer, Hosts};
use portcullis_ip::{Action, IpFilterLayer, IpRules};
use portcullis_origin::{
    Connection, Connections, OriginLayer, OriginPolicy, PrivateNetworks, PublicAccessLayer,
};
use proptest::prelude::*;

struct Layers {
    client: ClientAddrConfig,
    hosts: HostFilterLayer,
    origin: OriginLayer,
    public: PublicAccessLayer,
    ip: IpFilterLayer,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    shadow: bool,
    forward: bool,
    source: u8,
    fixed_hops: u16,
}

fn config() -> impl Strategy<Value = Config> {
    (any::<bool>(), any::<bool>(), 0u8..3, 0u16..3).prop_map(|(shadow, forward, source, fixed_hops)| Config {
        shadow,
        forward,
        source,
        fixed_hops,
    })
}

fn layers(cfg: Config) -> Layers {
    let Config { shadow, forward, source, fixed_hops } = cfg;
    let source = match source {
        0 => ForwardedSource::XForwardedFor,
        1 => ForwardedSource::Forwarded,
        _ => ForwardedSource::None,
    };
    let mut client = ClientAddrConfig::new()
        .trusted_proxies(["10.0.0.0/24".parse().unwrap(), "127.0.0.1".parse().unwrap()])
        .unwrap()
        .source(source);
    if fixed_hops > 0 {
        client = client.fixed_hops(fixed_hops);
    }
    let hosts = Hosts::builder()
        .endpoint(Endpoint::new("gateway").host("api.contoso.example").host("*.apps.contoso.example"))
        .endpoint(Endpoint::new("management").host("management.contoso.example"))
        .build()
        .unwrap();
    let networks = PrivateNetworks::builder()
        .network("corp-vnet", ["10.0.0.0/8".parse().unwrap()])
        .network("branch", ["192.168.0.0/16".parse().unwrap()])
        .build()
        .unwrap();
    let connections = Connections::builder()
        .extend([
            Connection::approved("pe-approved", LinkId::Azure(7)),
            Connection::pending("pe-pending", LinkId::Azure(8)),
        ])
        .build()
        .unwrap();
    let policy = OriginPolicy::new(networks, connections);
    let public = PublicAccessLayer::disabled("Microsoft.ApiManagement/service/paths", &policy).unwrap();
    let mut rules = IpRules::builder(Action::Deny);
    rules.allow("10.0.0.0/8").allow("192.168.0.0/16").allow("198.51.100.0/24").deny("10.9.0.0/16");
    Layers {
        client,
        hosts: HostFilterLayer::new(hosts).shadow(shadow),
        origin: OriginLayer::new(policy).shadow(shadow).forward_header(forward),
        public: public.shadow(shadow),
        ip: match shadow {
            true => IpFilterLayer::new(rules.build().unwrap()).shadow(),
            false => IpFilterLayer::new(rules.build().unwrap()),
        },
    }
}

impl Layers {
    fn gateway(&self) -> Gateway {
        Gateway::builder()
            .client_address(self.client.clone())
            .hosts(self.hosts.clone())
            .origin(self.origin.clone())
            .public_access(self.public.clone())
            .ip(self.ip.clone())
            .build()
    }

    fn separate(&self) -> Gates {
        Gates::new([
            Arc::new(self.client.clone()) as Arc<dyn Gate>,
            Arc::new(self.hosts.clone()),
            Arc::new(self.origin.clone()),
            Arc::new(self.public.clone()),
            Arc::new(self.ip.clone()),
        ])
    }
}

#[derive(Debug, Clone)]
struct Case {
    hosts: Vec<&'static str>,
    forwarded: Vec<&'static str>,
    rfc7239: Vec<&'static str>,
    spoofed_origin: bool,
    peer: &'static str,
    link: Option<u32>,
    wiring: u8,
}

fn case() -> impl Strategy<Value = Case> {
    let host = prop::sample::select(vec![
        "api.contoso.example",
        "API.Contoso.Example",
        "api.contoso.example.",
        "api.contoso.example:443",
        "x.apps.contoso.example",
        "a.b.apps.contoso.example",
        "management.contoso.example",
        "unknown.example",
        "10.0.0.1",
        "[::1]",
        "",
        "api.contoso.example:99999",
    ]);
    let forwarded = prop::sample::select(vec![
        "198.51.100.7",
        " 198.51.100.7 ",
        "10.1.2.3",
        "10.9.1.1",
        "192.168.4.4",
        "203.0.113.5",
        "203.0.113.5, 10.0.0.7",
        "10.0.0.8",
        "::ffff:198.51.100.9",
        "198.51.100.7:8080",
        "garbage",
        "",
        "1.2.3.4, , 5.6.7.8",
    ]);
    let rfc7239 = prop::sample::select(vec![
        "for=198.51.100.7",
        "for=10.1.2.3;proto=https",
        "for=\"[2001:db8::1]:4711\"",
        "for=203.0.113.5, for=10.0.0.7",
        "for=unknown",
        "for=_hidden",
        "by=10.0.0.1",
        "garbage",
    ]);
    let peer = prop::sample::select(vec!["10.0.0.2:4000", "127.0.0.1:5000", "10.3.3.3:1", "203.0.113.77:2"]);
    (
        prop::collection::vec(host, 0..3),
        prop::collection::vec(forwarded, 0..3),
        prop::collection::vec(rfc7239, 0..2),
        any::<bool>(),
        peer,
        prop::option::of(prop::sample::select(vec![7u32, 8, 9])),
        0u8..6,
    )
        .prop_map(|(hosts, forwarded, rfc7239, spoofed_origin, peer, link, wiring)| Case {
            hosts,
            forwarded,
            rfc7239,
            spoofed_origin,
            peer,
            link,
            wiring,
        })
}

fn head(case: &Case) -> Parts {
    let mut req = Request::builder().uri("/status");
    for h in &case.hosts {
        req = req.header("host", HeaderValue::from_static(h));
    }
    req = req.header("user-agent", "paths/1").header("accept", "*/*");
    for f in &case.forwarded {
        req = req.header("x-forwarded-for", HeaderValue::from_static(f));
    }
    for f in &case.rfc7239 {
        req = req.header("forwarded", HeaderValue::from_static(f));
    }
    if case.spoofed_origin {
        req = req.header("x-portcullis-origin", "private");
    }
    let mut parts = req.body(()).unwrap().into_parts().0;
    let peer: SocketAddr = case.peer.parse().unwrap();
    let mut conn = ConnInfo::new(peer, Some("10.0.0.1:443".parse().unwrap()));
    if let Some(id) = case.link {
        conn = conn.with_proxy(ProxyInfo {
            version: ProxyVersion::V2,
            source: Some("172.16.0.9:3000".parse().unwrap()),
            destination: Some("10.0.0.1:443".parse().unwrap()),
            link_id: Some(LinkId::Azure(id)),
            unique_id: None,
            ssl: None,
        });
    }
    match case.wiring {
        0 => {
            parts.extensions.insert(conn);
        }
        1 => {
            parts.extensions.insert(axum::extract::ConnectInfo(conn));
        }
        2 => {}
        3 => {
            parts.extensions.insert(axum::extract::ConnectInfo(peer));
        }
        4 => {
            parts.extensions.insert(conn);
            parts.extensions.insert("another extension");
        }
        _ => {
            parts.extensions.insert(conn);
            let earlier = portcullis_core::Denial::new(
                "app",
                "app.earlier",
                http::StatusCode::FORBIDDEN,
                "recorded before the stack",
            );
            Decisions::record_shadow(&mut parts.extensions, earlier);
        }
    }
    parts
}

/// What a run decided, in comparable form.
fn outcome(result: Result<(), portcullis_core::Denial>, head: &Parts) -> String {
    let answer = match result {
        Ok(()) => "served".to_owned(),
        Err(d) => format!("{} {} {}", d.status(), d.code(), d.detail()),
    };
    let decisions = match Decisions::get(&head.extensions) {
        Some(d) => format!(
            "client={:?} host={:?} origin={:?} shadow={:?}",
            d.client,
            d.host,
            d.origin,
            d.shadow.iter().map(|s| (s.code(), s.detail().to_owned())).collect::<Vec<_>>()
        ),
        None => "none".to_owned(),
    };
    let mut headers: Vec<_> = head.headers.iter().map(|(n, v)| format!("{n}: {v:?}")).collect();
    headers.sort();
    format!("{answer} | {decisions} | {headers:?}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_gateway_run_decides_as_the_layers_do(case in case(), cfg in config()) {
        let layers = layers(cfg);
        let gateway = layers.gateway();

        let mut fused = head(&case);
        let fused_result = gateway.gate().check(&mut fused);
        let fused = outcome(fused_result, &fused);

        let mut separate = head(&case);
        let separate_result = layers.separate().check(&mut separate);
        let separate = outcome(separate_result, &separate);

        let mut nested = head(&case);
        let nested_result = Gates::new([gateway.gate() as Arc<dyn Gate>]).check(&mut nested);
        let nested = outcome(nested_result, &nested);

        prop_assert_eq!(&fused, &separate);
        prop_assert_eq!(&fused, &nested);
    }

    #[test]
    fn endpoint_rules_decide_alike_in_both_runs(case in case(), cfg in config()) {
        let layers = layers(cfg);
        let mut management = IpRules::builder(Action::Deny);
        management.allow("10.0.0.0/16");
        let gateway = Gateway::builder()
            .client_address(layers.client.clone())
            .hosts(layers.hosts.clone())
            .origin(layers.origin.clone())
            .ip(layers.ip.clone())
            .ip_for_endpoint("management", IpFilterLayer::new(management.build().unwrap()))
            .build();

        let mut fused = head(&case);
        let fused_result = gateway.gate().check(&mut fused);
        let mut nested = head(&case);
        let nested_result = Gates::new([gateway.gate() as Arc<dyn Gate>]).check(&mut nested);
        prop_assert_eq!(outcome(fused_result, &fused), outcome(nested_result, &nested));
    }
}

/// The differential property above compares three runs with each other; this pins a few of their answers,
/// so that all three cannot agree on a wrong one.
#[test]
fn the_gateway_run_answers_as_expected() {
    let layers = layers(Config { shadow: false, forward: false, source: 0, fixed_hops: 0 });
    let gateway = layers.gateway();
    let run = |hosts: Vec<&'static str>, forwarded: Vec<&'static str>, peer: &'static str, link| {
        let case = Case { hosts, forwarded, rfc7239: vec![], spoofed_origin: false, peer, link, wiring: 0 };
        let mut h = head(&case);
        let r = gateway.gate().check(&mut h);
        (r.map_err(|d| d.code().to_owned()), Decisions::get(&h.extensions).cloned())
    };
    // A private client through a trusted proxy, on a configured name: served and tagged.
    let (r, d) = run(vec!["api.contoso.example"], vec!["10.1.2.3"], "10.0.0.2:4000", None);
    assert_eq!(r, Ok(()));
    let d = d.unwrap();
    assert_eq!(d.client.unwrap().ip.to_string(), "10.1.2.3");
    assert_eq!(d.host.unwrap().endpoint.as_ref(), "gateway");
    assert!(matches!(d.origin, Some(portcullis_core::Origin::Private(_))));
    // A public client (public network access disabled): refused with Azure's 403.
    assert_eq!(
        run(vec!["api.contoso.example"], vec!["198.51.100.7"], "10.0.0.2:4000", None).0,
        Err("public-access.disabled".to_owned())
    );
    // A bare IP: 421 before anything else.
    assert_eq!(
        run(vec!["10.0.0.1"], vec!["10.1.2.3"], "10.0.0.2:4000", None).0,
        Err("host.ip-literal".to_owned())
    );
    // A forwarded header from an untrusted peer is ignored: the peer is the client (denied by rule).
    let (r, d) = run(vec!["api.contoso.example"], vec!["10.1.2.3"], "10.9.9.9:1", None);
    assert_eq!(d.unwrap().client.unwrap().ip.to_string(), "10.9.9.9");
    assert_eq!(r, Err("ip.denied".to_owned()));
    // A pending private endpoint connection is refused.
    assert_eq!(
        run(vec!["api.contoso.example"], vec![], "127.0.0.1:5000", Some(8)).0,
        Err("origin.connection-pending".to_owned())
    );
}
