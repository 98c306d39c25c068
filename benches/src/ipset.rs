//! The `ipset` group: the prefix table against a naive scan, memory, build time, and the client-address
//! resolver's allocations.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use http::{Extensions, HeaderMap, HeaderValue};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portcullis_core::{ClientAddrConfig, ConnInfo, ForwardedSource, IpRange, IpTable};

use crate::alloc::count_allocs;
use crate::stats::{Rng, median_ns, report};

/// `n` distinct random IPv4 prefixes with lengths spread like a routing table (mostly /16 to /24).
fn v4_prefixes(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = Rng::new(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = [8u8, 12, 16, 18, 20, 22, 24, 24, 24, 28, 32][(rng.next_u32() % 11) as usize];
        let net = Ipv4Net::new(Ipv4Addr::from(rng.next_u32()), len).unwrap().trunc();
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

fn v6_prefixes(n: usize, seed: u64) -> Vec<Ipv6Net> {
    let mut rng = Rng::new(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = [32u8, 40, 48, 48, 56, 64, 64, 128][(rng.next_u32() % 8) as usize];
        // Global unicast space, as real rules would be.
        let addr = (rng.next_u128() >> 3) | (1u128 << 125);
        let net = Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc();
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

fn table<N: Copy + Into<IpNet>>(nets: &[N]) -> IpTable<()> {
    IpTable::from_rules(nets.iter().map(|n| (IpRange::from((*n).into()), ()))).unwrap()
}

/// Probe addresses: half inside some rule, half random.
fn probes(nets: &[IpNet], count: usize, seed: u64) -> Vec<IpAddr> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let net = nets[(rng.next_u64() as usize) % nets.len()];
            if i % 2 == 0 {
                net.network()
            } else {
                match net {
                    IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(rng.next_u32())),
                    IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(rng.next_u128())),
                }
            }
        })
        .collect()
}

fn lookup_ns(t: &IpTable<()>, probes: &[IpAddr]) -> f64 {
    median_ns(15, 200_000, |i| {
        black_box(t.get(black_box(probes[i % probes.len()])));
    })
}

/// The baseline a hand-written allow-list would use: scan every `IpNet` and keep the longest match.
fn naive_ns(nets: &[IpNet], probes: &[IpAddr]) -> f64 {
    median_ns(5, 40, |i| {
        let ip = black_box(probes[i % probes.len()]);
        let best = nets.iter().filter(|n| n.contains(&ip)).max_by_key(|n| n.prefix_len());
        black_box(best);
    })
}

pub(crate) fn run() {
    let v4_100k = v4_prefixes(100_000, 1);
    let nets_100k: Vec<IpNet> = v4_100k.iter().map(|n| IpNet::V4(*n)).collect();
    let t_100k = table(&v4_100k);
    let p_100k = probes(&nets_100k, 4096, 2);
    let lookup_v4 = lookup_ns(&t_100k, &p_100k);
    report("lookup_v4_100k", lookup_v4, "ns");
    let naive = naive_ns(&nets_100k, &p_100k);
    report("naive_v4_100k", naive, "ns");
    report("naive_over_lookup_v4_100k", (naive / lookup_v4).round(), "x");
    report("bytes_v4_100k", t_100k.lookup_bytes() as f64, "bytes");

    // The same number of prefixes gathered inside one /8 (as an allow-list of internal networks would be):
    // the shape the IPv4 bucket index fits itself to.
    let packed: Vec<Ipv4Net> = v4_100k
        .iter()
        .map(|n| {
            let inside = (u32::from(n.network()) & 0x00ff_ffff) | 0x0a00_0000;
            Ipv4Net::new(Ipv4Addr::from(inside), n.prefix_len().max(9)).unwrap().trunc()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let nets_packed: Vec<IpNet> = packed.iter().map(|n| IpNet::V4(*n)).collect();
    let t_packed = table(&packed);
    let p_packed: Vec<IpAddr> = probes(&nets_packed, 4096, 7)
        .into_iter()
        .map(|ip| match ip {
            // Random probes kept inside the /8, where the rules are.
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from((u32::from(a) & 0x00ff_ffff) | 0x0a00_0000)),
            v6 => v6,
        })
        .collect();
    report("lookup_v4_100k_in_one_slash8", lookup_ns(&t_packed, &p_packed), "ns");
    report("rules_v4_in_one_slash8", packed.len() as f64, "count");

    let v6_100k = v6_prefixes(100_000, 3);
    let nets_v6: Vec<IpNet> = v6_100k.iter().map(|n| IpNet::V6(*n)).collect();
    let t_v6 = table(&v6_100k);
    let p_v6 = probes(&nets_v6, 4096, 4);
    let lookup_v6 = lookup_ns(&t_v6, &p_v6);
    report("lookup_v6_100k", lookup_v6, "ns");
    report("lookup_v6_over_v4_100k", lookup_v6 / lookup_v4, "ratio");

    let v4_1m = v4_prefixes(1_000_000, 5);
    let ranges: Vec<(IpRange, ())> = v4_1m.iter().map(|n| (IpRange::from(IpNet::V4(*n)), ())).collect();
    let start = Instant::now();
    let t_1m = IpTable::from_rules(ranges).unwrap();
    report("build_v4_1m", start.elapsed().as_secs_f64() * 1000.0, "ms");
    let nets_1m: Vec<IpNet> = v4_1m.iter().map(|n| IpNet::V4(*n)).collect();
    let p_1m = probes(&nets_1m, 4096, 6);
    report("lookup_v4_1m", lookup_ns(&t_1m, &p_1m), "ns");
    report("bytes_v4_1m", t_1m.lookup_bytes() as f64, "bytes");

    // Resolving a client address from a 3-entry X-Forwarded-For allocates nothing.
    let config = ClientAddrConfig::new()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .unwrap()
        .source(ForwardedSource::XForwardedFor);
    let mut ext = Extensions::new();
    ext.insert(ConnInfo::new("10.0.0.2:443".parse().unwrap(), None));
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7, 10.1.1.1, 10.2.2.2"));
    let (_, allocs) = count_allocs(|| {
        for _ in 0..1000 {
            black_box(config.resolve(black_box(&ext), black_box(&headers)).unwrap());
        }
    });
    report("xff3_resolve_allocs", allocs as f64 / 1000.0, "count");
    report(
        "xff3_resolve",
        median_ns(15, 100_000, |_| {
            black_box(config.resolve(black_box(&ext), black_box(&headers)).unwrap());
        }),
        "ns",
    );
}
