//! The `origin` group: tagging a request's origin with 100 private endpoint connections and 10,000 private
//! prefixes registered, and parsing a 60-byte PROXY v2 header with an Azure Private Link TLV.
//!
//! `origin_tag` is the per-request work of the origin layer (strip the client's copies of the origin
//! header, decide, record the `Origin` in the request's `Decisions`), measured through its `Gate` impl on a
//! request head with six typical headers that the client-address layer already handled, over a rotating mix
//! of the four paths: approved Azure and AWS connections, a private-network client and a public one. Each
//! path is also reported alone, with allocations per request.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::request::Parts;
use http::{Request, Uri};
use portcullis_core::{
    ClientAddr, ConnInfo, Decisions, IpRange, LearntVia, LinkId, MatchedHost, Origin, ProxyInfo,
    ProxyVersion, Rule,
};
use portcullis_origin::{Connection, Connections, OriginLayer, OriginPolicy, PrivateNetworks};
use portcullis_proxy_protocol::{Parsed, SAMPLE_V2_AZURE, parse};

use crate::alloc::count_allocs;
use crate::stats::{Rng, median_ns, report};

const CONNECTIONS: u32 = 100;
const PREFIXES: usize = 10_000;
const NETWORKS: usize = 100;

/// 10,000 distinct /24s spread over the IPv4 space (an odd multiplier is a bijection on 24-bit values),
/// in 100 named networks of 100 prefixes each.
fn networks() -> (PrivateNetworks, Vec<Ipv4Addr>) {
    let mut b = PrivateNetworks::builder();
    let mut inside = Vec::with_capacity(PREFIXES);
    for n in 0..NETWORKS {
        let ranges: Vec<IpRange> = (0..PREFIXES / NETWORKS)
            .map(|i| {
                let k = (n * (PREFIXES / NETWORKS) + i) as u32;
                let start = (k.wrapping_mul(0x9E37_79B1) & 0x00FF_FFFF) << 8;
                inside.push(Ipv4Addr::from(start | 0x2A));
                IpRange::V4 { start, end: start | 0xFF }
            })
            .collect();
        b = b.network(format!("net-{n}"), ranges);
    }
    (b.build().expect("10k distinct prefixes"), inside)
}

fn connections() -> Connections {
    Connections::builder()
        .extend((0..CONNECTIONS).map(|i| match i % 2 {
            0 => Connection::approved(format!("pe-az-{i}"), LinkId::Azure(0x2200_0000 + i)),
            _ => Connection::approved(format!("pe-aws-{i}"), LinkId::Aws(format!("vpce-{i:017x}").into())),
        }))
        .build()
        .expect("100 connections")
}

/// A request head as the client-address layer leaves it.
fn head(peer: IpAddr, link: Option<LinkId>) -> Parts {
    let (mut parts, ()) = Request::builder()
        .uri(Uri::from_static("/orders/42"))
        .header("host", "api.contoso.example")
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(())
        .unwrap()
        .into_parts();
    let lb: SocketAddr = "10.200.0.4:50000".parse().unwrap();
    let mut conn = ConnInfo::new(lb, None);
    if link.is_some() {
        let mut proxy = ProxyInfo::new(ProxyVersion::V2, Some(SocketAddr::new(peer, 40000)), None);
        proxy.link_id = link;
        conn = conn.with_proxy(proxy);
    } else {
        conn.peer = SocketAddr::new(peer, 40000);
    }
    parts.extensions.insert(conn);
    let decisions = Decisions::get_mut(&mut parts.extensions);
    decisions.client = Some(ClientAddr::new(peer, LearntVia::Peer));
    // The host layer runs before the origin layer and records the endpoint, which connections limited to
    // some endpoints (the default: `gateway`) are checked against.
    decisions.host = Some(MatchedHost {
        host: "api.contoso.example".into(),
        pattern: "api.contoso.example".into(),
        endpoint: "gateway".into(),
        endpoint_id: 0,
    });
    parts
}

pub(crate) fn run() {
    let (networks, inside) = networks();
    let layer = OriginLayer::new(OriginPolicy::new(networks, connections()));

    let mut rng = Rng::new(0x0_5EED);
    let public = loop {
        let ip = Ipv4Addr::from(rng.next_u32());
        if layer.policy().networks().get(ip.into()).is_none() {
            break ip;
        }
    };
    let mut heads = [
        ("connection_azure", head("203.0.113.7".parse().unwrap(), Some(LinkId::Azure(0x2200_0000 + 42)))),
        (
            "connection_aws",
            head("203.0.113.8".parse().unwrap(), Some(LinkId::Aws(format!("vpce-{:017x}", 77).into()))),
        ),
        ("network", head(inside[PREFIXES / 2].into(), None)),
        ("public", head(public.into(), None)),
    ];
    // Check every path decides as expected before timing it.
    for (name, parts) in heads.iter_mut() {
        layer.rule().check(parts).expect("served");
        let origin = Decisions::get(&parts.extensions).and_then(|d| d.origin.clone()).unwrap();
        let ok = match *name {
            "connection_azure" | "connection_aws" => origin.private_endpoint().is_some(),
            "network" => origin.is_private() && origin.private_endpoint().is_none(),
            _ => origin == Origin::Public,
        };
        assert!(ok, "{name}: {origin:?}");
    }

    const BATCHES: usize = 31;
    const ITERS: usize = 100_000;
    let ns = median_ns(BATCHES, ITERS, |i| {
        let parts = &mut heads[i & 3].1;
        black_box(layer.rule().check(black_box(parts))).ok();
    });
    report("origin_tag", ns, "ns");
    for (name, parts) in heads.iter_mut() {
        let ns = median_ns(BATCHES, ITERS, |_| {
            black_box(layer.rule().check(black_box(&mut *parts))).ok();
        });
        report(&format!("origin_tag_{name}"), ns, "ns");
    }
    let ((), allocs) = count_allocs(|| {
        for i in 0..1000 {
            layer.rule().check(&mut heads[i & 3].1).ok();
        }
    });
    report("origin_tag_allocs", allocs as f64 / 1000.0, "allocs/request");

    // A 60-byte v2 header: TCP over IPv6 and an Azure LinkID TLV.
    let Ok(Parsed::Complete { info, consumed: 60 }) = parse(&SAMPLE_V2_AZURE) else {
        panic!("the sample header must parse whole")
    };
    assert_eq!(info.link_id, Some(LinkId::Azure(0x2200_0011)));
    let ns = median_ns(BATCHES, ITERS, |_| {
        black_box(parse(black_box(&SAMPLE_V2_AZURE))).ok();
    });
    report("proxy_v2_parse", ns, "ns");
    let ((), allocs) = count_allocs(|| {
        for _ in 0..1000 {
            black_box(parse(black_box(&SAMPLE_V2_AZURE))).ok();
        }
    });
    report("proxy_v2_parse_allocs", allocs as f64 / 1000.0, "allocs/parse");
}
