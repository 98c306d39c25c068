use super::*;
use proptest::prelude::*;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(s: &str) -> IpRange {
    s.parse().unwrap()
}

/// The reference: the value of the smallest range containing `ip`, by a linear scan.
fn naive<T: Clone>(rules: &[(IpRange, T)], ip: IpAddr) -> Option<T> {
    rules.iter().filter(|(r, _)| r.contains(ip)).min_by_key(|(r, _)| r.span()).map(|(_, v)| v.clone())
}

#[test]
fn most_specific_rule_wins() {
    let t = IpTable::from_rules([
        (range("10.0.0.0/8"), "allow"),
        (range("10.0.66.0/24"), "deny"),
        (range("10.0.66.5"), "allow-one"),
        (range("0.0.0.0/0"), "default"),
        (range("::/0"), "v6-default"),
        (range("2001:db8::/32"), "doc"),
    ])
    .unwrap();
    assert_eq!(t.get(ip("10.0.66.4")), Some(&"deny"));
    assert_eq!(t.get(ip("10.0.66.5")), Some(&"allow-one"));
    assert_eq!(t.get(ip("10.0.66.6")), Some(&"deny"));
    assert_eq!(t.get(ip("10.0.67.0")), Some(&"allow"));
    assert_eq!(t.get(ip("11.0.0.0")), Some(&"default"));
    assert_eq!(t.get(ip("255.255.255.255")), Some(&"default"));
    assert_eq!(t.get(ip("2001:db8::1")), Some(&"doc"));
    assert_eq!(t.get(ip("2001:db9::1")), Some(&"v6-default"));
    // A mapped address is IPv4, whatever the IPv6 rules say.
    assert_eq!(t.get(ip("::ffff:10.0.66.5")), Some(&"allow-one"));
}

#[test]
fn ranges_and_edges() {
    let t = IpTable::from_rules([(range("192.0.2.10-192.0.2.20"), 1), (range("192.0.2.15"), 2)]).unwrap();
    assert_eq!(t.get(ip("192.0.2.9")), None);
    assert_eq!(t.get(ip("192.0.2.10")), Some(&1));
    assert_eq!(t.get(ip("192.0.2.15")), Some(&2));
    assert_eq!(t.get(ip("192.0.2.20")), Some(&1));
    assert_eq!(t.get(ip("192.0.2.21")), None);
    assert_eq!(t.get(ip("0.0.0.0")), None);
    let t = IpTable::from_rules([(range("255.255.255.255"), 1), (range("0.0.0.0"), 2)]).unwrap();
    assert_eq!(t.get(ip("255.255.255.255")), Some(&1));
    assert_eq!(t.get(ip("0.0.0.0")), Some(&2));
    assert_eq!(t.get(ip("0.0.0.1")), None);
    let t = IpTable::from_rules([(range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1)]).unwrap();
    assert_eq!(t.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), Some(&1));
    assert_eq!(t.get(ip("::")), None);
}

#[test]
fn same_prefix_with_different_values_is_an_error_naming_both() {
    let err = IpTable::from_rules([(range("10.0.0.0/8"), "a"), (range("10.0.0.0/8"), "b")]).unwrap_err();
    assert_eq!(err, IpTableError::Conflict { range: range("10.0.0.0/8"), first: 0, second: 1 });
    assert!(err.to_string().contains("#0") && err.to_string().contains("#1"));
    // The same prefix written as a mapped IPv6 prefix is the same rule.
    let err = IpTable::from_rules([(range("10.0.0.0/8"), "a"), (range("::ffff:10.0.0.0/104"), "b")]);
    assert!(matches!(err, Err(IpTableError::Conflict { .. })));
    // Same value: a harmless duplicate.
    let t = IpTable::from_rules([(range("10.0.0.0/8"), "a"), (range("10.0.0.0/8"), "a")]).unwrap();
    assert_eq!(t.get(ip("10.1.1.1")), Some(&"a"));
}

#[test]
fn equally_specific_partial_overlap_is_ambiguous() {
    let err =
        IpTable::from_rules([(range("10.0.0.1-10.0.0.5"), 1), (range("10.0.0.3-10.0.0.7"), 2)]).unwrap_err();
    assert!(matches!(err, IpTableError::Ambiguous { first: 0, second: 1, .. }), "{err}");
}

#[test]
fn hand_built_inverted_ranges_are_refused() {
    let err = IpTable::from_rules([(IpRange::V4 { start: 5, end: 1 }, ())]).unwrap_err();
    assert_eq!(err, IpTableError::Inverted { rule: 0 });
    let err = IpTable::from_rules([(range("::/0"), ()), (IpRange::V6 { start: 9, end: 2 }, ())]).unwrap_err();
    assert_eq!(err, IpTableError::Inverted { rule: 1 });
}

#[test]
fn parse_policy() {
    assert_eq!(range("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(range("10.0.0.1").to_string(), "10.0.0.1");
    assert_eq!(range("10.0.0.1-10.0.0.9").to_string(), "10.0.0.1-10.0.0.9");
    assert_eq!(range("10.0.0.0-10.0.0.255").to_string(), "10.0.0.0/24");
    assert_eq!(range("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
    assert_eq!(range("::/0").to_string(), "::/0");
    assert!(matches!("10.0.0.1/8".parse::<IpRange>(), Err(IpRangeError::HostBits { .. })));
    assert!(matches!("10.0.0.9-10.0.0.1".parse::<IpRange>(), Err(IpRangeError::BadRange(_))));
    assert!(matches!("10.0.0.1-::1".parse::<IpRange>(), Err(IpRangeError::BadRange(_))));
    for bad in ["010.0.0.1/8", "1.2.3.4/33", "2000::/129", "fe80::1%eth0", "10.0.0.0/8/8", "", "any"] {
        assert!(bad.parse::<IpRange>().is_err(), "{bad}");
    }
}

/// Vectors from Go net/netip and CPython (see tests/vectors/PROVENANCE.md).
#[test]
fn cidr_vectors() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/vectors/ip_cidr_vectors.json")).unwrap();
    for case in v["parse_addr_valid"].as_array().unwrap() {
        let input = case["in"].as_str().unwrap();
        let parsed = input.parse::<IpRange>();
        if case.get("zone").is_some() {
            // Policy: zones are link-local scoping, meaningless for rules; refused (Go accepts them).
            assert!(parsed.is_err(), "{input}");
            continue;
        }
        let r = parsed.unwrap_or_else(|e| panic!("{input}: {e}"));
        match case.get("unmap").and_then(|u| u.as_str()) {
            Some(unmapped) => assert_eq!(r.to_string(), unmapped, "{input} folds"),
            None => {
                if let Some(canon) = case.get("canonical").and_then(|c| c.as_str()) {
                    assert_eq!(r.to_string(), canon, "{input}");
                }
            }
        }
    }
    for case in v["parse_addr_invalid"].as_array().unwrap() {
        let input = case["in"].as_str().unwrap();
        // Policy: surrounding whitespace in configuration is trimmed (the vector leaves it to us).
        if input.trim() != input && input.trim().parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        assert!(input.parse::<IpRange>().is_err(), "{input} must be refused");
    }
    for case in v["v4_mapped_unmap"].as_array().unwrap() {
        let input = case["in"].as_str().unwrap();
        let Ok(addr) = input.parse::<std::net::IpAddr>() else {
            // Zones and 6-digit groups are refused by our parser (policy: refuse what std refuses).
            continue;
        };
        if let Some(unmapped) = case.get("unmap").and_then(|u| u.as_str()) {
            assert_eq!(crate::fold_ip(addr), ip(unmapped), "{input}");
        }
    }
    for case in v["prefix_contains"].as_array().unwrap() {
        let t = IpTable::from_rules([(range(case["prefix"].as_str().unwrap()), ())]).unwrap();
        for a in case["contains"].as_array().unwrap() {
            assert!(t.contains(ip(a.as_str().unwrap())), "{case}");
        }
        for a in case["not_contains"].as_array().unwrap() {
            assert!(!t.contains(ip(a.as_str().unwrap())), "{case}");
        }
    }
    for case in v["prefix_masking"].as_array().unwrap() {
        if let Some(p) = case.get("prefix").and_then(|p| p.as_str()) {
            // Policy: host bits after the prefix are refused, and the error names the masked network.
            match p.parse::<IpRange>() {
                Err(IpRangeError::HostBits { network, .. }) => {
                    assert_eq!(network, case["masked"].as_str().unwrap())
                }
                other => panic!("{p}: {other:?}"),
            }
        } else {
            let text = format!("{}/{}", case["addr"].as_str().unwrap(), case["bits"]);
            match case["masked"].as_str() {
                None => assert!(text.parse::<IpRange>().is_err(), "{text}"),
                Some(masked) => match text.parse::<IpRange>() {
                    Err(IpRangeError::HostBits { network, .. }) => assert_eq!(network, masked),
                    other => panic!("{text}: {other:?}"),
                },
            }
        }
    }
}

fn arb_v4_range() -> impl Strategy<Value = IpRange> {
    prop_oneof![
        // CIDRs, with prefixes clustered so that rules nest and overlap.
        (0u32..64, 0u8..=32).prop_map(|(hi, len)| {
            let addr = (hi << 26) | (hi.wrapping_mul(2654435761) >> 6);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let start = addr & mask;
            IpRange::V4 { start, end: start | !mask }
        }),
        // Arbitrary ranges.
        (0u32..64, 0u32..(1 << 27)).prop_map(|(hi, len)| {
            let start = hi << 26;
            IpRange::V4 { start, end: start.saturating_add(len) }
        }),
    ]
}

fn arb_v6_range() -> impl Strategy<Value = IpRange> {
    (0u128..16, 0u32..=128).prop_map(|(hi, len)| {
        let addr = (hi << 124) | (hi.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 60);
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
        let start = addr & mask;
        IpRange::V6 { start, end: start | !mask }
    })
}

fn probe_points(rules: &[(IpRange, usize)]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (r, _) in rules {
        for a in [r.start(), r.end()] {
            out.push(a);
            match a {
                IpAddr::V4(v) => {
                    let n = u32::from(v);
                    out.push(IpAddr::V4(n.wrapping_sub(1).into()));
                    out.push(IpAddr::V4(n.wrapping_add(1).into()));
                }
                IpAddr::V6(v) => {
                    let n = u128::from(v);
                    out.push(IpAddr::V6(n.wrapping_sub(1).into()));
                    out.push(IpAddr::V6(n.wrapping_add(1).into()));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The table agrees with a naive scan at every rule boundary and at random addresses; when it refuses
    /// to build, the naive list really is ambiguous.
    #[test]
    fn agrees_with_naive_scan(
        v4 in proptest::collection::vec(arb_v4_range(), 0..60),
        v6 in proptest::collection::vec(arb_v6_range(), 0..30),
        randoms in proptest::collection::vec(any::<u32>(), 50),
    ) {
        let rules: Vec<(IpRange, usize)> = v4.into_iter().chain(v6).enumerate().map(|(i, r)| (r, i)).collect();
        match IpTable::from_rules(rules.clone()) {
            Ok(table) => {
                let mut points = probe_points(&rules);
                points.extend(randoms.iter().map(|r| IpAddr::V4((*r).into())));
                for p in points {
                    let want = naive(&rules, p);
                    let got = table.get(p).copied();
                    // Ties between equal-span rules can only be duplicates of the same range (values
                    // differ here), which the build refuses, so the answer is unique.
                    prop_assert_eq!(got, want, "at {}", p);
                }
            }
            Err(IpTableError::Conflict { first, second, .. }) | Err(IpTableError::Ambiguous { first, second, .. }) => {
                let (a, b) = (rules[first].0, rules[second].0);
                prop_assert_eq!(a.span(), b.span());
                prop_assert!(a.contains(b.start()) || b.contains(a.start()));
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Large tables use the bucket index: same answers as the naive scan.
    #[test]
    fn indexed_table_agrees(seed in any::<u64>()) {
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let mut rules = Vec::new();
        for i in 0..6000usize {
            let len = 8 + (next() % 25) as u8;
            let mask = u32::MAX << (32 - len as u32);
            let start = (next() as u32) & mask;
            rules.push((IpRange::V4 { start, end: start | !mask }, i));
        }
        let rules: Vec<_> = {
            // Keep the first of identical ranges so the table builds.
            let mut seen = std::collections::HashSet::new();
            rules.into_iter().filter(|(r, _)| seen.insert(*r)).collect()
        };
        let table = IpTable::from_rules(rules.clone()).unwrap();
        prop_assert!(!table.v4.index.is_empty());
        for _ in 0..300 {
            let p = IpAddr::V4((next() as u32).into());
            prop_assert_eq!(table.get(p).copied(), naive(&rules, p));
        }
        for p in probe_points(&rules[..200]) {
            prop_assert_eq!(table.get(p).copied(), naive(&rules, p));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// IPv4 tables whose rules sit in a small part of the address space (one /8 or /20) get an index over
    /// that span only: same answers as the naive scan, inside, at the edges and outside it (IPv6 rules in
    /// one /48 ride along, unindexed at these sizes).
    #[test]
    fn concentrated_indexed_tables_agree(seed in any::<u64>(), narrow in any::<bool>(), count in 40usize..700) {
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let (v4_base, v4_bits) = if narrow { (0x0a14_0000u32, 12) } else { (0x0a00_0000u32, 24) };
        let v6_base: u128 = 0x2001_0db8_0042 << 80;
        let mut rules = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..count {
            let len = (next() % u64::from(v4_bits + 1)) as u32;
            let host_bits = v4_bits - len.min(v4_bits);
            let start = (v4_base | (next() as u32 & ((1 << v4_bits) - 1))) & (u32::MAX << host_bits);
            let r = IpRange::V4 { start, end: start | ((1u32 << host_bits) - 1) };
            if seen.insert(r) { rules.push((r, i)); }
            let host = (next() % 81) as u32;
            let start = (v6_base | (u128::from(next()) & ((1 << 80) - 1))) & (u128::MAX << host);
            let end = start | if host == 0 { 0 } else { (1u128 << host) - 1 };
            let r = IpRange::V6 { start, end };
            if seen.insert(r) { rules.push((r, count + i)); }
        }
        let table = IpTable::from_rules(rules.clone()).unwrap();
        let indexed = (!table.v4.index.is_empty(), !table.v6.index.is_empty());
        prop_assert_eq!(indexed, (!table.v4.starts.is_empty(), table.v6.starts.len() > V6_INDEX_THRESHOLD));
        let mut probes = probe_points(&rules);
        for _ in 0..300 {
            probes.push(IpAddr::V4((v4_base | (next() as u32 & ((1 << v4_bits) - 1))).into()));
            probes.push(IpAddr::V4((next() as u32).into()));
            probes.push(IpAddr::V6((v6_base | (u128::from(next()) & ((1 << 80) - 1))).into()));
            probes.push(IpAddr::V6((u128::from(next()) << 64 | u128::from(next())).into()));
        }
        probes.extend(["0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"].map(|s| s.parse::<IpAddr>().unwrap()));
        for p in probes {
            prop_assert_eq!(table.get(p).copied(), naive(&rules, p), "{}", p);
        }
    }
}

#[test]
fn a_concentrated_table_gets_fine_buckets() {
    // 1 000 /24s in 10.0.0.0/8: the index spans 10.0.0.0/8 only, so its buckets are far narrower than a /16.
    let rules = (0..1000u32)
        .map(|i| (IpRange::V4 { start: 0x0a00_0000 + i * 4096, end: 0x0a00_0000 + i * 4096 + 255 }, i));
    let table = IpTable::from_rules(rules).unwrap();
    assert!(!table.v4.index.is_empty());
    assert!(table.v4.shift < 16, "shift {}", table.v4.shift);
    assert_eq!(table.get("10.0.64.7".parse().unwrap()), Some(&4));
    assert_eq!(table.get("10.0.17.7".parse().unwrap()), None);
    assert_eq!(table.get("9.255.255.255".parse().unwrap()), None);
    assert_eq!(table.get("11.0.0.0".parse().unwrap()), None);
}

/// The general segment search, without the index: the reference for [`Segments::lookup_v4`].
fn unindexed_v4(seg: &Segments<u32>, key: u32) -> Option<usize> {
    let plain =
        Segments { starts: seg.starts.clone(), vals: seg.vals.clone(), index: Vec::new(), base: 0, shift: 0 };
    plain.lookup(key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The IPv4 fast path (`lookup_v4`: always indexed, scanning back from the bucket's end, searching
    /// large buckets) agrees with the general `lookup` through the same index and without any index, at
    /// every segment start, its neighbours, the ends of the address space and random keys; tables from one
    /// segment to a few thousand, spread or gathered in a small span (so that buckets hold from none to
    /// many more than `V4_LINEAR` starts).
    #[test]
    fn lookup_v4_agrees_with_the_general_lookup(
        seed in any::<u64>(),
        count in 1usize..3000,
        span_bits in 4u32..=32,
        randoms in proptest::collection::vec(any::<u32>(), 64),
    ) {
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let base = (next() as u32) & !((1u64 << span_bits) - 1) as u32;
        let mut seen = std::collections::HashSet::new();
        let mut rules = Vec::new();
        for i in 0..count {
            let host_bits = (next() % u64::from(span_bits.min(12) + 1)) as u32;
            let off = (next() as u32) & ((1u64 << span_bits) - 1) as u32;
            let start = (base | off) & !((1u64 << host_bits) - 1) as u32;
            let end = start | ((1u64 << host_bits) - 1) as u32;
            let r = IpRange::V4 { start, end };
            if seen.insert(r) {
                rules.push((r, i));
            }
        }
        let Ok(table) = IpTable::from_rules(rules) else { return Ok(()) };
        let seg = &table.v4;
        prop_assert!(!seg.index.is_empty());
        let mut keys: Vec<u32> = vec![0, 1, u32::MAX, u32::MAX - 1, base, base.wrapping_sub(1)];
        for s in &seg.starts {
            keys.extend([*s, s.wrapping_sub(1), s.wrapping_add(1)]);
        }
        keys.extend(randoms);
        keys.extend(randoms_in(&mut next, base, span_bits, 64));
        for k in keys {
            let want = unindexed_v4(seg, k);
            prop_assert_eq!(seg.lookup(k), want, "general, indexed, at {}", Ipv4Addr::from(k));
            prop_assert_eq!(seg.lookup_v4(k), want, "lookup_v4 at {}", Ipv4Addr::from(k));
            // And through the public entry points, IPv4-mapped IPv6 folded.
            prop_assert_eq!(table.get_index(IpAddr::V4(k.into())), want);
            prop_assert_eq!(table.get_index_v4(k.into()), want);
            prop_assert_eq!(table.get_index(IpAddr::V6(Ipv4Addr::from(k).to_ipv6_mapped())), want);
        }
    }
}

fn randoms_in(next: &mut impl FnMut() -> u64, base: u32, span_bits: u32, n: usize) -> Vec<u32> {
    (0..n).map(|_| base | ((next() as u32) & ((1u64 << span_bits) - 1) as u32)).collect()
}

#[test]
fn empty_and_tiny_v4_tables() {
    let empty: IpTable<u8> = IpTable::default();
    assert_eq!(empty.get("10.0.0.1".parse().unwrap()), None);
    assert_eq!(empty.get("::ffff:10.0.0.1".parse().unwrap()), None);
    let v6_only = IpTable::from_rules([(range("2001:db8::/32"), 1u8)]).unwrap();
    assert!(v6_only.v4.index.is_empty());
    assert_eq!(v6_only.get("0.0.0.0".parse().unwrap()), None);
    assert_eq!(v6_only.get("255.255.255.255".parse().unwrap()), None);
    assert_eq!(v6_only.get("2001:db8::1".parse().unwrap()), Some(&1));
    // One rule over everything: one segment, a two-bucket index, every key inside.
    let all = IpTable::from_rules([(range("0.0.0.0/0"), 7u8)]).unwrap();
    assert_eq!(all.v4.starts.len(), 1);
    for k in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "::ffff:1.2.3.4"] {
        assert_eq!(all.get(k.parse().unwrap()), Some(&7), "{k}");
    }
    // One address: keys on both sides miss.
    let one = IpTable::from_rules([(range("10.0.0.1"), 3u8)]).unwrap();
    assert_eq!(one.get("10.0.0.1".parse().unwrap()), Some(&3));
    for k in ["10.0.0.0", "10.0.0.2", "0.0.0.0", "255.255.255.255"] {
        assert_eq!(one.get(k.parse().unwrap()), None, "{k}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    /// Tables large enough to reach the IPv4 bucket cap (more than 65,536 segments: 131,072 buckets), spread
    /// over the whole space or gathered in one /8, with rules at 0.0.0.0 and ending at 255.255.255.255: the
    /// same answers as the general lookup without an index, at every segment start and its neighbours, and
    /// at random keys.
    #[test]
    fn tables_at_the_bucket_cap_agree(seed in any::<u64>(), gathered in any::<bool>()) {
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let mut seen = std::collections::HashSet::new();
        let mut rules = vec![
            (IpRange::V4 { start: 0, end: 0x00ff_ffff }, 0usize),
            (IpRange::V4 { start: 0xfe00_0000, end: u32::MAX }, 1),
        ];
        while rules.len() < 45_000 {
            let len = 16 + (next() % 17) as u32;
            let mask = u32::MAX << (32 - len);
            let raw = next() as u32;
            let start = if gathered { 0x0a00_0000 | (raw & 0x00ff_ffff) } else { raw } & mask;
            let r = IpRange::V4 { start, end: start | !mask };
            if seen.insert(r) {
                rules.push((r, rules.len()));
            }
        }
        let table = IpTable::from_rules(rules).unwrap();
        let seg = &table.v4;
        prop_assert!(seg.starts.len() > 65_536, "{} segments", seg.starts.len());
        prop_assert_eq!(seg.index.len(), 131_072 + 1);
        let mut keys: Vec<u32> = vec![0, 1, u32::MAX, u32::MAX - 1, 0x0a00_0000, 0x09ff_ffff, 0x0b00_0000];
        for &s in seg.starts.iter().step_by(7) {
            keys.extend([s.wrapping_sub(1), s, s.wrapping_add(1)]);
        }
        keys.extend((0..20_000).map(|_| next() as u32));
        for key in keys {
            prop_assert_eq!(seg.lookup_v4(key), unindexed_v4(seg, key), "key {:#010x}", key);
        }
    }
}
