//! [`IpRulesHandle`]: the live rule set, swapped whole while serving.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::rules::{IpRules, Verdict};

/// A shared, swappable [`IpRules`]: every [`IpFilterLayer`](crate::IpFilterLayer) and
/// [`ConnectionFilter`](crate::ConnectionFilter) built from (a clone of) one handle sees the rules last
/// [stored](IpRulesHandle::store).
///
/// The rule set is immutable; a new one replaces it atomically (`arc-swap`). Each request or connection
/// loads the current set **once** and decides on that snapshot alone, so no decision ever mixes two rule
/// sets, and a store never waits for requests in flight.
///
/// ```
/// use portcullis_ip::{Action, IpRules, IpRulesHandle};
///
/// let handle = IpRulesHandle::new(IpRules::builder(Action::Deny).allow("10.0.0.0/8").build()?);
/// assert_eq!(handle.check("10.1.1.1".parse()?).action, Action::Allow);
/// handle.store(IpRules::builder(Action::Deny).allow("192.0.2.0/24").build()?);
/// assert_eq!(handle.check("10.1.1.1".parse()?).action, Action::Deny);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct IpRulesHandle {
    current: Arc<ArcSwap<IpRules>>,
}

impl IpRulesHandle {
    /// A handle serving `rules` until another set is stored.
    pub fn new(rules: impl Into<Arc<IpRules>>) -> Self {
        IpRulesHandle { current: Arc::new(ArcSwap::new(rules.into())) }
    }

    /// Replaces the rules for every filter sharing this handle. Requests already decided keep their
    /// decision; the next ones use `rules`.
    pub fn store(&self, rules: impl Into<Arc<IpRules>>) {
        let rules = rules.into();
        tracing::info!(name = rules.name(), rules = rules.len(), "portcullis ip rules replaced");
        self.current.store(rules);
    }

    /// The current rule set (a snapshot: later stores do not change it).
    pub fn current(&self) -> Arc<IpRules> {
        self.current.load_full()
    }

    /// The current rule set, for one decision (an `arc-swap` guard: no reference count is taken).
    pub fn load(&self) -> arc_swap::Guard<Arc<IpRules>> {
        self.current.load()
    }

    /// The verdict of the current rule set for `ip`.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        self.current.load().check(ip)
    }
}

impl From<IpRules> for IpRulesHandle {
    fn from(rules: IpRules) -> Self {
        IpRulesHandle::new(rules)
    }
}

impl From<Arc<IpRules>> for IpRulesHandle {
    fn from(rules: Arc<IpRules>) -> Self {
        IpRulesHandle::new(rules)
    }
}

impl fmt::Debug for IpRulesHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("IpRulesHandle")
            .field("name", &current.name())
            .field("rules", &current.len())
            .field("default", &current.default_action())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::rules::{Action, Matched, RuleId};

    #[test]
    fn concurrent_checks_during_stores_see_one_rule_set_each() {
        let mut a = IpRules::builder(Action::Allow);
        a.name("A").deny("10.0.0.0/8");
        let mut b = IpRules::builder(Action::Deny);
        b.name("B").allow("10.0.0.0/16").deny("10.0.0.0/8");
        let (a, b) = (Arc::new(a.build().unwrap()), Arc::new(b.build().unwrap()));
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let want_a = (Some("A"), a.check(ip));
        let want_b = (Some("B"), b.check(ip));
        assert_eq!(want_a.1.matched, Some(Matched { rule: RuleId(0), range: "10.0.0.0/8".parse().unwrap() }));
        assert_eq!(
            want_b.1.matched,
            Some(Matched { rule: RuleId(0), range: "10.0.0.0/16".parse().unwrap() })
        );

        let handle = IpRulesHandle::new(a.clone());
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000 {
                    handle.store(if i % 2 == 0 { b.clone() } else { a.clone() });
                }
            });
            for _ in 0..2 {
                s.spawn(|| {
                    let (mut saw_a, mut saw_b) = (0, 0);
                    for _ in 0..50_000 {
                        let r = handle.current();
                        let got = (r.name().map(str::to_owned), r.check(ip));
                        let got = (got.0.as_deref(), got.1);
                        if got == want_a {
                            saw_a += 1;
                        } else if got == want_b {
                            saw_b += 1;
                        } else {
                            panic!("mixed decision: {got:?}");
                        }
                    }
                    assert_eq!(saw_a + saw_b, 50_000);
                });
            }
        });
    }
}
