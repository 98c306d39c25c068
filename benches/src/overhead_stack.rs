//! The application and the gateway stacks measured by the `overhead` group and served by
//! `portcullis-overhead-server` (shared by both binaries, so the in-process figures and the loopback wrk
//! comparison run exactly the same stacks).
//!
//! - **bare**: an axum `Router` with one route, `GET /` answering `ok`.
//! - **stack**: the same router behind [`Gateway::layer`] with every layer on: client address (trusted
//!   proxies, `X-Forwarded-For`), host filter with 1 000 host names over four endpoints, origin with
//!   10 000 private-network prefixes and 100 approved private endpoint connections, public network access
//!   disabled, 100 000 global IP rules and 1 000 IP rules for the `gateway` endpoint.
//! - **layers**: the same five layers (without the per-endpoint rules, which only the gateway can express)
//!   added one by one with `Router::layer`, the shape the issue compares against.
//!
//! Every request of the benchmark is the same: `GET /` for `api-0042.contoso.com` with
//! `X-Forwarded-For: 10.20.30.40` from the trusted peer 127.0.0.1: the client is in the `corp-vnet` private
//! network and allowed by both IP rule sets, so every gate does its full allow-path work.

use std::net::{IpAddr, Ipv4Addr};

use axum::Router;
use axum::routing::get;
use portcullis::Gateway;
use portcullis_core::{ClientAddrConfig, ForwardedSource, IpRange, LinkId, ResolveClientAddrLayer};
use portcullis_host::{Endpoint, HostFilterLayer, Hosts};
use portcullis_ip::{Action, IpFilterLayer, IpRules};
use portcullis_origin::{
    Connection, Connections, OriginLayer, OriginPolicy, PrivateNetworks, PublicAccessLayer,
};

/// The host every benchmark request names.
pub(crate) const HOST: &str = "api-0042.contoso.com";
/// The client address the trusted peer forwards.
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 20, 30, 40);

const GLOBAL_RULES: usize = 100_000;
const ENDPOINT_RULES: usize = 1_000;
const HOSTS_PER_ENDPOINT: [(&str, &str, usize); 4] =
    [("gateway", "api", 700), ("portal", "portal", 100), ("management", "mgmt", 100), ("scm", "scm", 100)];

/// The bare application.
pub(crate) fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// Each layer of the stack, configured once.
#[derive(Clone)]
pub(crate) struct Layers {
    pub(crate) client: ClientAddrConfig,
    pub(crate) hosts: HostFilterLayer,
    pub(crate) origin: OriginLayer,
    pub(crate) public: PublicAccessLayer,
    pub(crate) ip: IpFilterLayer,
    ip_gateway: IpFilterLayer,
}

/// A tiny deterministic xorshift generator (the same inputs on every run).
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 32) as u32
    }
}

/// `count` rules in 10.0.0.0/8 (allow `10.0.0.0/8` first, then random /24s and /32s allowed or denied),
/// never covering [`CLIENT`], default deny.
fn rules(name: &str, count: usize, seed: u64) -> IpRules {
    let client = u32::from(CLIENT);
    let mut rng = Rng(seed | 1);
    let mut seen = std::collections::HashSet::new();
    let mut b = IpRules::builder(Action::Deny);
    b.name(name).allow("10.0.0.0/8");
    while b.len() < count {
        let addr = 0x0a00_0000 | (rng.next_u32() & 0x00ff_ffff);
        let range = if rng.next_u32().is_multiple_of(3) {
            IpRange::V4 { start: addr, end: addr }
        } else {
            IpRange::V4 { start: addr & !0xff, end: addr | 0xff }
        };
        let IpRange::V4 { start, end } = range else { unreachable!("v4") };
        if (start..=end).contains(&client) || !seen.insert(range) {
            continue;
        }
        if rng.next_u32().is_multiple_of(2) {
            b.allow(range);
        } else {
            b.deny(range);
        }
    }
    let rules = b.build().expect("benchmark rules build");
    assert!(rules.allows(IpAddr::V4(CLIENT)), "the benchmark client must be allowed");
    rules
}

impl Layers {
    /// Builds every layer (100k rules take a few tens of milliseconds).
    pub(crate) fn new() -> Layers {
        let client = ClientAddrConfig::new()
            .trusted_proxies(["127.0.0.1".parse().expect("ip"), "10.0.0.0/24".parse().expect("cidr")])
            .expect("trusted proxies")
            .source(ForwardedSource::XForwardedFor);

        let mut hosts = Hosts::builder();
        for (endpoint, prefix, n) in HOSTS_PER_ENDPOINT {
            hosts = hosts.endpoint(
                Endpoint::new(endpoint).hosts((0..n).map(|i| format!("{prefix}-{i:04}.contoso.com"))),
            );
        }
        let hosts = HostFilterLayer::new(hosts.build().expect("1k hosts"));

        // corp-vnet, then 99 networks of 100 /24s each in 100.64.0.0/10: 9 901 prefixes in all.
        let mut networks =
            PrivateNetworks::builder().network("corp-vnet", ["10.0.0.0/8".parse().expect("cidr")]);
        for n in 0..99u32 {
            let ranges = (0..100u32).map(|i| {
                let start = 0x6440_0000 + ((n * 100 + i) << 8);
                IpRange::V4 { start, end: start | 0xff }
            });
            networks = networks.network(format!("net-{n:02}"), ranges);
        }
        let connections = Connections::builder()
            .extend(
                (0..100u32)
                    .map(|i| Connection::approved(format!("pe-{i:03}"), LinkId::Azure(0x2200_0000 + i))),
            )
            .build()
            .expect("100 connections");
        let policy = OriginPolicy::new(networks.build().expect("networks"), connections);
        let public = PublicAccessLayer::disabled("Microsoft.ApiManagement/service/bench", &policy)
            .expect("a private path exists");
        let origin = OriginLayer::new(policy);

        let ip = IpFilterLayer::new(rules("global", GLOBAL_RULES, 0x6970_6669));
        let ip_gateway = IpFilterLayer::new(rules("gateway", ENDPOINT_RULES, 0x6777_6179));
        Layers { client, hosts, origin, public, ip, ip_gateway }
    }

    /// The gateway with every layer on.
    pub(crate) fn gateway(&self) -> Gateway {
        Gateway::builder()
            .client_address(self.client.clone())
            .hosts(self.hosts.clone())
            .origin(self.origin.clone())
            .public_access(self.public.clone())
            .ip(self.ip.clone())
            .ip_for_endpoint("gateway", self.ip_gateway.clone())
            .build()
    }

    /// The five layers added one by one with `Router::layer` (the last added runs first).
    pub(crate) fn router_layers(&self, app: Router) -> Router {
        app.layer(self.ip.clone())
            .layer(self.public.clone())
            .layer(self.origin.clone())
            .layer(self.hosts.clone())
            .layer(ResolveClientAddrLayer::new(self.client.clone()))
    }
}
