use super::*;

const VECTORS: &str = include_str!("../../../portcullis-core/tests/vectors/ip_cidr_vectors.json");

fn vectors() -> serde_json::Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

fn presets(list: &[Preset]) -> PrivateNetworks {
    list.iter().fold(PrivateNetworks::builder(), |b, p| b.preset(*p)).build().unwrap()
}

/// Whether the whole of `range` lies in one network (presets are CIDRs, so both ends in the same CIDR
/// means every address between is too; the check is exact for the blocks tested here).
fn covered(networks: &PrivateNetworks, range: IpRange) -> Option<&str> {
    let (a, b) = (networks.get(range.start())?, networks.get(range.end())?);
    (a == b).then_some(a)
}

/// Go's `netip.Addr.IsPrivate` is RFC 1918 + RFC 4193 (v4-mapped forms included): our `rfc1918` and
/// `unique-local` presets together answer exactly like it on Go's vectors.
#[test]
fn go_is_private_equals_rfc1918_plus_unique_local() {
    let v = vectors();
    let go = &v["go_netip_IsPrivate_rfc1918_rfc4193"];
    let nets = presets(&[Preset::Rfc1918, Preset::UniqueLocal]);
    for ip in strings(&go["true"]) {
        assert!(nets.get(ip.parse().unwrap()).is_some(), "{ip} is private in Go");
    }
    for ip in strings(&go["false"]) {
        assert_eq!(nets.get(ip.parse().unwrap()), None, "{ip} is not private in Go");
    }
}

/// Policy difference with Go: loopback and link-local are separate predicates there (`IsLoopback`,
/// `IsLinkLocalUnicast`); here they are presets of their own, private only when opted into.
#[test]
fn go_false_vectors_with_every_preset() {
    let v = vectors();
    let nets = presets(&Preset::ALL);
    let expected = |ip: &str| match ip {
        "169.254.0.1" | "fe80::1" => Some("link-local"),
        "127.0.0.1" | "::1" => Some("loopback"),
        _ => None,
    };
    for ip in strings(&v["go_netip_IsPrivate_rfc1918_rfc4193"]["false"]) {
        assert_eq!(nets.get(ip.parse().unwrap()), expected(ip), "{ip}");
    }
}

/// CPython's `is_private` is the IANA special-purpose registry's "not globally reachable", broader than any
/// of our presets: documentation (TEST-NET, 2001:db8::/32), benchmarking, reserved and protocol-assignment
/// blocks are private there. None of them is a network a client reaches you from, so none is a preset;
/// declare one with [`PrivateNetworksBuilder::network`] if you really serve from it. CGNAT
/// (`100.64.0.0/10`) is neither private nor global in Python; here it is the opt-in `cgnat` preset.
#[test]
fn cpython_is_private_networks_with_every_preset() {
    let v = vectors();
    let py = &v["cpython_3_11_is_private_networks"];
    let nets = presets(&Preset::ALL);
    let ours = |net: &str| match net {
        "10.0.0.0/8" | "172.16.0.0/12" | "192.168.0.0/16" => Some("rfc1918"),
        "127.0.0.0/8" | "::1/128" => Some("loopback"),
        "169.254.0.0/16" | "fe80::/10" => Some("link-local"),
        "fc00::/7" => Some("unique-local"),
        _ => None, // a policy difference: private in Python, not a preset here
    };
    let mut differences = 0;
    for net in strings(&py["true"]) {
        let range: IpRange = net.parse().unwrap();
        assert_eq!(covered(&nets, range), ours(net), "{net}");
        differences += usize::from(ours(net).is_none());
    }
    assert_eq!(differences, 16, "the documented differences");
    for net in strings(&py["false"]) {
        let range: IpRange = net.parse().unwrap();
        assert_eq!(covered(&nets, range), None, "{net} is not private in Python");
    }
    assert_eq!(nets.get("100.64.0.1".parse().unwrap()), Some("cgnat"));
    assert_eq!(nets.get("100.128.0.1".parse().unwrap()), None);
}

#[test]
fn preset_boundaries() {
    let nets = presets(&Preset::ALL);
    let cases = [
        ("9.255.255.255", None),
        ("10.0.0.0", Some("rfc1918")),
        ("10.255.255.255", Some("rfc1918")),
        ("11.0.0.0", None),
        ("172.15.255.255", None),
        ("172.16.0.0", Some("rfc1918")),
        ("172.31.255.255", Some("rfc1918")),
        ("172.32.0.0", None),
        ("192.167.255.255", None),
        ("192.168.255.255", Some("rfc1918")),
        ("192.169.0.0", None),
        ("100.63.255.255", None),
        ("100.64.0.0", Some("cgnat")),
        ("100.127.255.255", Some("cgnat")),
        ("fbff:ffff::1", None),
        ("fc00::", Some("unique-local")),
        ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("unique-local")),
        ("fe00::", None),
        ("fe7f:ffff::1", None),
        ("fe80::", Some("link-local")),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("link-local")),
        ("fec0::", None),
        ("::2", None),
        ("::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:169.254.1.1", Some("link-local")),
        ("8.8.8.8", None),
        ("2001:4860::8888", None),
    ];
    for (ip, want) in cases {
        assert_eq!(nets.get(ip.parse().unwrap()), want, "{ip}");
    }
}

#[test]
fn nothing_is_private_by_default() {
    let nets = PrivateNetworks::none();
    assert!(nets.is_empty());
    for ip in ["10.0.0.1", "127.0.0.1", "::1", "fd00::1", "192.168.1.1"] {
        assert_eq!(nets.get(ip.parse().unwrap()), None, "{ip}");
    }
    assert_eq!(PrivateNetworks::builder().build().unwrap().len(), 0);
}

#[test]
fn most_specific_network_wins_and_conflicts_are_errors() {
    let nets = PrivateNetworks::builder()
        .preset(Preset::Rfc1918)
        .network("vnet", ["10.1.0.0/16".parse().unwrap()])
        .network("subnet", ["10.1.2.0/24".parse().unwrap()])
        .build()
        .unwrap();
    assert_eq!(nets.get("10.1.2.9".parse().unwrap()), Some("subnet"));
    assert_eq!(nets.get("10.1.3.9".parse().unwrap()), Some("vnet"));
    assert_eq!(nets.get("10.2.0.1".parse().unwrap()), Some("rfc1918"));

    let err = PrivateNetworks::builder()
        .network("a", ["10.0.0.0/8".parse().unwrap()])
        .preset(Preset::Rfc1918)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::OverlappingNetworks { first, second, .. } if first == "a" && second == "rfc1918"),
        "{err}"
    );
    // Equally large, overlapping ranges (neither more specific).
    let err = PrivateNetworks::builder()
        .network("a", ["10.0.0.0-10.0.0.9".parse().unwrap()])
        .network("b", ["10.0.0.5-10.0.0.14".parse().unwrap()])
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::OverlappingNetworks { .. }), "{err}");
    // The same range twice in one network is fine.
    let nets = PrivateNetworks::builder()
        .network("a", ["10.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()])
        .build()
        .unwrap();
    assert_eq!(nets.get("10.0.0.1".parse().unwrap()), Some("a"));
}

#[test]
fn names_are_checked() {
    let r = || ["10.0.0.0/8".parse::<IpRange>().unwrap()];
    assert!(matches!(
        PrivateNetworks::builder().network("a b", r()).build(),
        Err(ConfigError::InvalidName { .. })
    ));
    assert_eq!(
        PrivateNetworks::builder()
            .network("a", r())
            .network("a", ["192.0.2.0/24".parse().unwrap()])
            .build()
            .unwrap_err(),
        ConfigError::DuplicateNetwork("a".into())
    );
    assert_eq!(
        PrivateNetworks::builder().network("a", []).build().unwrap_err(),
        ConfigError::EmptyNetwork("a".into())
    );
}

#[test]
fn header_values() {
    let nets = PrivateNetworks::builder().preset(Preset::Cgnat).build().unwrap();
    let n = nets.lookup("100.64.1.1".parse().unwrap()).unwrap();
    assert_eq!(n.header, "private; network=cgnat");
    assert_eq!(&*n.name, "cgnat");
    // The origin the policy records for it names the network.
    use portcullis_core::{ClientAddr, ConnInfo, Decisions, LearntVia, Origin, PrivateVia};
    let policy = crate::OriginPolicy::new(nets, crate::Connections::none());
    let mut ext = http::Extensions::new();
    ext.insert(ConnInfo::new("100.64.1.1:4000".parse().unwrap(), None));
    Decisions::get_mut(&mut ext).client =
        Some(ClientAddr::new("100.64.1.1".parse().unwrap(), LearntVia::Peer));
    assert_eq!(policy.decide(&ext), Ok(Origin::Private(PrivateVia::Network("cgnat".into()))));
}
