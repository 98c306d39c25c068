use super::*;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn most_specific_rule_wins_whatever_the_order() {
    let orders: [&[(Action, &str)]; 2] = [
        &[(Action::Allow, "10.0.0.0/8"), (Action::Deny, "10.0.66.0/24"), (Action::Allow, "10.0.66.5")],
        &[(Action::Allow, "10.0.66.5"), (Action::Deny, "10.0.66.0/24"), (Action::Allow, "10.0.0.0/8")],
    ];
    for order in orders {
        let mut b = IpRules::builder(Action::Deny);
        for (a, e) in order {
            b.rules(*a, [*e]);
        }
        let rules = b.build().unwrap();
        assert_eq!(rules.check(ip("10.1.2.3")).action, Action::Allow);
        assert_eq!(rules.check(ip("10.0.66.4")).action, Action::Deny);
        assert_eq!(rules.check(ip("10.0.66.5")).action, Action::Allow);
        assert_eq!(rules.check(ip("11.0.0.1")).action, Action::Deny);
        let v = rules.check(ip("10.0.66.4"));
        assert_eq!(rules.describe(&v), "deny 10.0.66.0/24");
        assert_eq!(rules.describe(&rules.check(ip("11.0.0.1"))), "no rule matched (default deny)");
    }
}

#[test]
fn ranges_and_cidrs_mix_and_the_smaller_wins() {
    let rules =
        IpRules::builder(Action::Allow).deny("192.0.2.0/24").allow("192.0.2.10-192.0.2.20").build().unwrap();
    assert!(rules.allows(ip("192.0.2.15")));
    assert!(!rules.allows(ip("192.0.2.21")));
    assert!(rules.allows(ip("192.0.3.1")));
    assert_eq!(rules.describe(&rules.check(ip("192.0.2.10"))), "allow 192.0.2.10-192.0.2.20");
}

#[test]
fn empty_rules_follow_the_default() {
    let deny = IpRules::builder(Action::Deny).build().unwrap();
    let allow = IpRules::builder(Action::Allow).build().unwrap();
    for a in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "::", "::1", "2001:db8::1", "::ffff:1.2.3.4"] {
        assert_eq!(deny.check(ip(a)), Verdict { action: Action::Deny, matched: None });
        assert_eq!(allow.check(ip(a)), Verdict { action: Action::Allow, matched: None });
    }
    assert!(!IpRules::uniform(Action::Deny).allows(ip("10.0.0.1")));
}

#[test]
fn mapped_addresses_are_folded_in_rules_and_lookups() {
    let rules = IpRules::builder(Action::Allow).deny("::ffff:10.0.0.0/104").build().unwrap();
    assert!(!rules.allows(ip("10.1.2.3")));
    assert!(!rules.allows(ip("::ffff:10.1.2.3")));
    let rules = IpRules::builder(Action::Allow).deny("10.0.0.0/8").build().unwrap();
    assert!(!rules.allows(ip("::ffff:10.1.2.3")));
    // The IPv4-compatible (deprecated) form is a different IPv6 address, not folded.
    assert!(rules.allows(ip("::10.1.2.3")));
}

#[test]
fn same_range_allowed_and_denied_is_a_build_error_naming_both() {
    let err = IpRules::builder(Action::Deny).allow("10.0.0.0/8").deny("10.0.0.0/8").build().unwrap_err();
    assert_eq!(
        err,
        IpRulesError::Conflict {
            range: "10.0.0.0/8".parse().unwrap(),
            first: "allow 10.0.0.0/8".into(),
            second: "deny 10.0.0.0/8".into(),
        }
    );
    // Written differently, the same range.
    let err = IpRules::builder(Action::Deny).allow("10.0.0.5").deny("10.0.0.5-10.0.0.5").build().unwrap_err();
    assert!(matches!(err, IpRulesError::Conflict { .. }), "{err}");
    let err =
        IpRules::builder(Action::Deny).allow("10.0.0.0/8").deny("::ffff:10.0.0.0/104").build().unwrap_err();
    assert!(err.to_string().contains("`allow 10.0.0.0/8` and `deny ::ffff:10.0.0.0/104`"), "{err}");
    // Through a set: the member is named.
    let err = IpRules::builder(Action::Deny)
        .set("management", ["10.9.0.0/24", "10.0.66.5"])
        .deny("10.0.66.5")
        .allow_set("management")
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`deny 10.0.66.5` and `allow set management (10.0.66.5)` both cover exactly 10.0.66.5, one allowing and one denying it"
    );
}

#[test]
fn equally_specific_partial_overlap_is_a_build_error() {
    let err = IpRules::builder(Action::Deny)
        .allow("10.0.0.0-10.0.0.9")
        .deny("10.0.0.5-10.0.0.14")
        .build()
        .unwrap_err();
    assert!(matches!(err, IpRulesError::Ambiguous { .. }), "{err}");
}

#[test]
fn same_range_same_action_is_fine_and_the_first_is_named() {
    let rules = IpRules::builder(Action::Deny)
        .allow("10.0.0.0/8")
        .set("corp", ["10.0.0.0/8"])
        .allow_set("corp")
        .build()
        .unwrap();
    let v = rules.check(ip("10.1.1.1"));
    assert_eq!(v.action, Action::Allow);
    assert_eq!(rules.describe(&v), "allow 10.0.0.0/8");
}

#[test]
fn bad_entries_and_unknown_sets_are_build_errors() {
    let err = IpRules::builder(Action::Deny).allow("10.0.0.1/8").build().unwrap_err();
    assert!(matches!(&err, IpRulesError::BadEntry { rule, .. } if rule == "allow 10.0.0.1/8"), "{err}");
    for bad in ["fe80::1%eth0", "010.0.0.1", "10.0.0.256", "10.0.0.9-10.0.0.1", "10.0.0.1-::1", "", "*"] {
        assert!(IpRules::builder(Action::Allow).deny(bad).build().is_err(), "{bad:?} must not parse");
    }
    let err = IpRules::builder(Action::Deny).allow_set("admins").build().unwrap_err();
    assert_eq!(err, IpRulesError::UnknownSet { rule: "allow set admins".into(), set: "admins".into() });
    // A bad member is an error even in a set no rule names yet.
    let err = IpRules::builder(Action::Deny).set("x", ["nope"]).build().unwrap_err();
    assert!(matches!(err, IpRulesError::BadSetEntry { .. }), "{err}");
}

#[test]
fn one_set_change_updates_every_rule_naming_it() {
    let mut b = IpRules::builder(Action::Deny);
    b.set("management", ["10.9.0.0/24"]).allow_set("management").deny("10.9.0.0/16").allow("10.0.0.0/8");
    let rules = b.build().unwrap();
    assert!(rules.allows(ip("10.9.0.7")));
    assert!(!rules.allows(ip("10.9.1.7")));
    assert_eq!(rules.describe(&rules.check(ip("10.9.0.7"))), "allow set management (10.9.0.0/24)");
    assert_eq!(rules.rule(RuleId(0)).unwrap().set(), Some("management"));

    b.set("management", ["10.9.1.0/24", "192.0.2.1"]);
    let rules = b.build().unwrap();
    assert!(!rules.allows(ip("10.9.0.7")));
    assert!(rules.allows(ip("10.9.1.7")));
    assert!(rules.allows(ip("192.0.2.1")));

    // A set named by two rules of opposite actions on different sizes: deny the set's /24s inside
    // another allowed set.
    let mut b = IpRules::builder(Action::Deny);
    b.set("office", ["198.51.100.0/24"])
        .set("blocked", ["198.51.100.128/25"])
        .allow_set("office")
        .deny_set("blocked");
    let rules = b.build().unwrap();
    assert!(rules.allows(ip("198.51.100.1")));
    assert!(!rules.allows(ip("198.51.100.200")));
    b.set("blocked", Vec::<&str>::new());
    assert!(b.build().unwrap().allows(ip("198.51.100.200")));
}

#[test]
fn ipv6_rules() {
    let rules = IpRules::builder(Action::Deny)
        .allow("2001:db8::/32")
        .deny("2001:db8:66::/48")
        .allow("::1")
        .build()
        .unwrap();
    assert!(rules.allows(ip("2001:db8:1::1")));
    assert!(!rules.allows(ip("2001:db8:66::1")));
    assert!(rules.allows(ip("::1")));
    assert!(!rules.allows(ip("127.0.0.1")));
    assert!(!rules.allows(ip("2001:db9::1")));
}

// === property test: the table resolves as a naive list would ===

#[derive(Debug, Clone)]
struct NaiveRule {
    action: Action,
    start: u32,
    end: u32,
}

/// The naive reading of the rules: among rules covering the address, the smallest wins; the default when
/// none covers it. `Err` when the smallest covering rules disagree (an ambiguity the build must refuse).
fn naive(rules: &[NaiveRule], default: Action, a: u32) -> Result<Verdict, ()> {
    let covering: Vec<(usize, &NaiveRule)> =
        rules.iter().enumerate().filter(|(_, r)| r.start <= a && a <= r.end).collect();
    let Some(min) = covering.iter().map(|(_, r)| r.end - r.start).min() else {
        return Ok(Verdict { action: default, matched: None });
    };
    let best: Vec<&(usize, &NaiveRule)> = covering.iter().filter(|(_, r)| r.end - r.start == min).collect();
    if best.iter().any(|(_, r)| r.action != best[0].1.action) {
        return Err(());
    }
    let (i, r) = best[0];
    Ok(Verdict {
        action: r.action,
        matched: Some(Matched { rule: RuleId(*i as u32), range: IpRange::V4 { start: r.start, end: r.end } }),
    })
}

/// Whether two equally large rules with opposite actions overlap anywhere (the build must fail then).
fn naive_conflict(rules: &[NaiveRule]) -> bool {
    rules.iter().enumerate().any(|(i, a)| {
        rules[i + 1..].iter().any(|b| {
            a.action != b.action && a.end - a.start == b.end - b.start && a.start <= b.end && b.start <= a.end
        })
    })
}

fn arb_rule() -> impl Strategy<Value = NaiveRule> {
    // A small space (10.0.0.0/26) so that rules overlap often: CIDRs of /26../32 and arbitrary ranges.
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let action = prop_oneof![Just(Action::Allow), Just(Action::Deny)];
    let cidr = (26u32..=32, 0u32..64).prop_map(move |(len, off)| {
        let size = 1u32 << (32 - len);
        let start = base + (off / size) * size;
        (start, start + size - 1)
    });
    let range = (0u32..64, 0u32..64).prop_map(move |(a, b)| (base + a.min(b), base + a.max(b)));
    (action, prop_oneof![3 => cidr, 1 => range]).prop_map(|(action, (start, end))| NaiveRule {
        action,
        start,
        end,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn resolves_as_a_naive_list(
        rules in proptest::collection::vec(arb_rule(), 0..12),
        default in prop_oneof![Just(Action::Allow), Just(Action::Deny)],
        as_text in any::<bool>(),
    ) {
        let mut b = IpRules::builder(default);
        for r in &rules {
            let range = IpRange::V4 { start: r.start, end: r.end };
            if as_text {
                b.rules(r.action, [range.to_string()]);
            } else {
                b.rules(r.action, [range]);
            }
        }
        match b.build() {
            Err(e) => {
                prop_assert!(naive_conflict(&rules), "build refused a consistent rule list: {e}");
            }
            Ok(table) => {
                prop_assert!(!naive_conflict(&rules), "build accepted conflicting rules");
                let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
                for a in base.saturating_sub(2)..base + 66 {
                    let want = naive(&rules, default, a).expect("no conflict, no ambiguity");
                    let got = table.check(IpAddr::V4(a.into()));
                    prop_assert_eq!(got.action, want.action, "address {}", Ipv4Addr::from(a));
                    prop_assert_eq!(table.action(IpAddr::V4(a.into())), want.action);
                    // The named rule covers the address with the smallest range (duplicates: the first).
                    match (got.matched, want.matched) {
                        (None, None) => {}
                        (Some(g), Some(w)) => {
                            prop_assert_eq!(g.range.span(), w.range.span());
                            prop_assert!(g.range.contains(IpAddr::V4(a.into())));
                            prop_assert_eq!(table.rule(g.rule).unwrap().action(), want.action);
                        }
                        (g, w) => prop_assert!(false, "matched {:?} vs naive {:?}", g, w),
                    }
                    // The mapped form of the address resolves the same.
                    let mapped = IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped());
                    prop_assert_eq!(table.check(mapped), got);
                }
            }
        }
    }
}
