//! [`IpRules`]: allow and deny rules over CIDRs, single addresses, ranges and named address sets.
//!
//! A rule set is written with [`IpRules::builder`], which takes the **default action** as its argument:
//! there is no implicit default. Rules are `allow` or `deny` entries, each a CIDR (`10.0.0.0/8`), a single
//! address (`10.0.66.5`), a `from-to` range (`192.0.2.10-192.0.2.20`) or a named address set
//! ([`allow_set`](IpRulesBuilder::allow_set)). The **most specific rule wins**: the rule covering the fewest
//! addresses, which for CIDRs is the longest prefix. So
//!
//! ```text
//! allow 10.0.0.0/8
//! deny  10.0.66.0/24
//! allow 10.0.66.5
//! ```
//!
//! allows `10.1.2.3`, refuses `10.0.66.4` and allows `10.0.66.5`, whatever order the rules were written in.
//!
//! Building fails (never guesses) when:
//! - one range is both allowed and denied (the error names both rules),
//! - two equally large ranges overlap partially with different actions (neither is more specific),
//! - an entry does not parse, or a rule names a set that is not defined.
//!
//! Two rules with the same action covering the same range are fine: the first one listed is the one named
//! in refusals and verdicts.
//!
//! **An empty rule set with [`Action::Deny`] as default refuses every address**, and one with
//! [`Action::Allow`] lets every address through.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are folded to IPv4 in rules and in lookups, so a rule
//! written for `10.0.0.0/8` covers `::ffff:10.1.2.3`, and a rule written as `::ffff:10.0.0.0/104` is the same
//! rule as `10.0.0.0/8`.
//!
//! ```
//! use portcullis_ip::{Action, IpRules};
//!
//! let rules = IpRules::builder(Action::Deny)
//!     .allow("10.0.0.0/8")
//!     .deny("10.0.66.0/24")
//!     .allow("10.0.66.5")
//!     .build()?;
//! assert_eq!(rules.check("10.1.2.3".parse()?).action, Action::Allow);
//! assert_eq!(rules.check("10.0.66.4".parse()?).action, Action::Deny);
//! assert_eq!(rules.check("10.0.66.5".parse()?).action, Action::Allow);
//! assert_eq!(rules.check("::ffff:10.0.66.4".parse()?).action, Action::Deny);
//! assert_eq!(rules.check("192.0.2.1".parse()?).action, Action::Deny); // the default
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Named address sets
//!
//! A set is defined once and named by any number of rules; redefining it and rebuilding changes every rule
//! that names it (swap the result in with [`IpRulesHandle::store`](crate::IpRulesHandle::store)).
//!
//! ```
//! use portcullis_ip::{Action, IpRules};
//!
//! let mut b = IpRules::builder(Action::Deny);
//! b.set("management", ["10.9.0.0/24", "192.0.2.7"]).allow_set("management").deny("10.9.0.66");
//! let rules = b.build()?;
//! assert_eq!(rules.check("192.0.2.7".parse()?).action, Action::Allow);
//!
//! // The management network moves: one change, every rule naming the set follows.
//! b.set("management", ["10.8.0.0/24"]);
//! let rules = b.build()?;
//! assert_eq!(rules.check("192.0.2.7".parse()?).action, Action::Deny);
//! assert_eq!(rules.check("10.8.0.1".parse()?).action, Action::Allow);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use portcullis_core::iptable::IpRangeError;
use portcullis_core::{IpRange, IpTable, IpTableError};

/// What a rule (or the default) does with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the request or connection through.
    Allow,
    /// Refuse it.
    Deny,
}

impl Action {
    /// `"allow"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Entry ===

/// The addresses one rule (or one member of a set) covers: text to parse (`10.0.0.0/8`, `10.0.0.1`,
/// `10.0.0.1-10.0.0.9`, IPv6 forms) or an already parsed range.
///
/// Text is parsed with [`IpRange`]'s `FromStr` when the rules are built: leading zeros in IPv4 octets, IPv6
/// zone ids and host bits after a prefix (`10.0.0.1/8`) are build errors naming the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Text, parsed at build time.
    Text(String),
    /// A parsed range.
    Range(IpRange),
}

impl Entry {
    fn range(&self) -> Result<IpRange, IpRangeError> {
        match self {
            Entry::Text(s) => s.parse(),
            Entry::Range(r) => Ok(*r),
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Text(s) => f.write_str(s.trim()),
            Entry::Range(r) => fmt::Display::fmt(r, f),
        }
    }
}

impl From<&str> for Entry {
    fn from(s: &str) -> Self {
        Entry::Text(s.to_owned())
    }
}

impl From<String> for Entry {
    fn from(s: String) -> Self {
        Entry::Text(s)
    }
}

impl From<&String> for Entry {
    fn from(s: &String) -> Self {
        Entry::Text(s.clone())
    }
}

impl From<IpRange> for Entry {
    fn from(r: IpRange) -> Self {
        Entry::Range(r)
    }
}

impl From<IpNet> for Entry {
    fn from(n: IpNet) -> Self {
        Entry::Range(n.into())
    }
}

impl From<IpAddr> for Entry {
    fn from(ip: IpAddr) -> Self {
        Entry::Range(IpRange::single(ip))
    }
}

impl From<Ipv4Addr> for Entry {
    fn from(ip: Ipv4Addr) -> Self {
        Entry::Range(IpRange::single(ip.into()))
    }
}

impl From<Ipv6Addr> for Entry {
    fn from(ip: Ipv6Addr) -> Self {
        Entry::Range(IpRange::single(ip.into()))
    }
}

// === impl IpRulesBuilder ===

#[derive(Debug, Clone)]
enum Target {
    Entry(Entry),
    Set(String),
}

#[derive(Debug, Clone)]
struct RuleSpec {
    action: Action,
    target: Target,
}

impl RuleSpec {
    fn label(&self) -> String {
        match &self.target {
            Target::Entry(e) => format!("{} {e}", self.action),
            Target::Set(name) => format!("{} set {name}", self.action),
        }
    }
}

/// Why an [`IpRules`] could not be built. Every variant names the rules involved, as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRulesError {
    /// A rule's entry is not an address, a CIDR or a range.
    #[error("rule `{rule}`: {error}")]
    BadEntry {
        /// The rule, as written (`allow 10.0.0.1/8`).
        rule: String,
        /// Why the entry does not parse.
        error: IpRangeError,
    },
    /// A member of a named set is not an address, a CIDR or a range.
    #[error("address set `{set}`: {error}")]
    BadSetEntry {
        /// The set's name.
        set: String,
        /// Why the member does not parse.
        error: IpRangeError,
    },
    /// A rule names a set that is not defined.
    #[error("rule `{rule}` names the address set `{set}`, which is not defined")]
    UnknownSet {
        /// The rule, as written.
        rule: String,
        /// The missing set.
        set: String,
    },
    /// The same range is both allowed and denied.
    #[error("`{first}` and `{second}` both cover exactly {range}, one allowing and one denying it")]
    Conflict {
        /// The range both rules cover.
        range: IpRange,
        /// The first rule (with the set member in parentheses for set rules).
        first: String,
        /// The second rule.
        second: String,
    },
    /// Two equally large ranges overlap partially with opposite actions, so neither is more specific.
    #[error("`{first}` and `{second}` overlap and are equally specific, one allowing and one denying")]
    Ambiguous {
        /// The first rule (with the set member in parentheses for set rules).
        first: String,
        /// The second rule.
        second: String,
    },
    /// A hand-built range whose start is after its end.
    #[error("{0} is a range whose start is after its end")]
    Inverted(String),
    /// More rules (after expanding sets) than the table can hold.
    #[error("too many rules")]
    TooMany,
}

/// Collects rules for an [`IpRules`]; made by [`IpRules::builder`], which takes the default action.
///
/// Keep the builder to change the rules later: redefine a [set](IpRulesBuilder::set), rebuild, and
/// [store](crate::IpRulesHandle::store) the result.
#[derive(Debug, Clone)]
pub struct IpRulesBuilder {
    default: Action,
    name: Option<String>,
    rules: Vec<RuleSpec>,
    sets: BTreeMap<String, Vec<Entry>>,
}

impl IpRulesBuilder {
    /// Allows `entry` (a CIDR, an address, a range) unless a more specific rule covers the address.
    pub fn allow(&mut self, entry: impl Into<Entry>) -> &mut Self {
        self.push(Action::Allow, Target::Entry(entry.into()))
    }

    /// Refuses `entry` (a CIDR, an address, a range) unless a more specific rule covers the address.
    pub fn deny(&mut self, entry: impl Into<Entry>) -> &mut Self {
        self.push(Action::Deny, Target::Entry(entry.into()))
    }

    /// Adds one rule with `action` for each of `entries`.
    pub fn rules<E: Into<Entry>>(
        &mut self,
        action: Action,
        entries: impl IntoIterator<Item = E>,
    ) -> &mut Self {
        for e in entries {
            self.push(action, Target::Entry(e.into()));
        }
        self
    }

    /// Allows every member of the named set (each member is as specific as its own range).
    pub fn allow_set(&mut self, name: &str) -> &mut Self {
        self.push(Action::Allow, Target::Set(name.to_owned()))
    }

    /// Refuses every member of the named set (each member is as specific as its own range).
    pub fn deny_set(&mut self, name: &str) -> &mut Self {
        self.push(Action::Deny, Target::Set(name.to_owned()))
    }

    /// Defines (or redefines) the named address set. The set may be defined before or after the rules that
    /// name it; an empty set makes the rules naming it match nothing.
    pub fn set<E: Into<Entry>>(&mut self, name: &str, entries: impl IntoIterator<Item = E>) -> &mut Self {
        self.sets.insert(name.to_owned(), entries.into_iter().map(Into::into).collect());
        self
    }

    /// Names the rule set (for example a version); the name is shown in refusals.
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = Some(name.into());
        self
    }

    /// Changes the default action, the answer for addresses no rule covers.
    pub fn default_action(&mut self, action: Action) -> &mut Self {
        self.default = action;
        self
    }

    /// The number of rules (a set rule counts once).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule was added.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn push(&mut self, action: Action, target: Target) -> &mut Self {
        self.rules.push(RuleSpec { action, target });
        self
    }

    /// Parses the entries, expands the sets and builds the lookup table.
    ///
    /// # Errors
    /// [`IpRulesError`]: an entry that does not parse, an undefined set, the same range both allowed and
    /// denied, or equally specific overlapping ranges with opposite actions.
    pub fn build(&self) -> Result<IpRules, IpRulesError> {
        let mut sets: BTreeMap<&str, Vec<IpRange>> = BTreeMap::new();
        for (name, members) in &self.sets {
            let ranges = members
                .iter()
                .map(Entry::range)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| IpRulesError::BadSetEntry { set: name.clone(), error })?;
            sets.insert(name, ranges);
        }
        let mut infos = Vec::with_capacity(self.rules.len());
        let mut entries: Vec<(RuleId, IpRange)> = Vec::with_capacity(self.rules.len());
        let mut table = IpTable::builder();
        for (i, spec) in self.rules.iter().enumerate() {
            let id = RuleId(u32::try_from(i).map_err(|_| IpRulesError::TooMany)?);
            let label = spec.label();
            let set = match &spec.target {
                Target::Entry(e) => {
                    let range =
                        e.range().map_err(|error| IpRulesError::BadEntry { rule: label.clone(), error })?;
                    entries.push((id, range));
                    table.insert(range, spec.action);
                    None
                }
                Target::Set(name) => {
                    let members = sets
                        .get(name.as_str())
                        .ok_or_else(|| IpRulesError::UnknownSet { rule: label.clone(), set: name.clone() })?;
                    for &range in members {
                        entries.push((id, range));
                        table.insert(range, spec.action);
                    }
                    Some(Arc::from(name.as_str()))
                }
            };
            infos.push(RuleInfo { action: spec.action, label: Arc::from(label), set });
        }
        let describe = |idx: usize| {
            let (id, range) = entries[idx];
            describe_rule(&infos[id.index()], range)
        };
        let table = table.build().map_err(|e| match e {
            IpTableError::Conflict { range, first, second } => {
                IpRulesError::Conflict { range, first: describe(first), second: describe(second) }
            }
            IpTableError::Ambiguous { first, second, .. } => {
                IpRulesError::Ambiguous { first: describe(first), second: describe(second) }
            }
            IpTableError::Inverted { rule } => IpRulesError::Inverted(describe(rule)),
            _ => IpRulesError::TooMany,
        })?;
        Ok(IpRules {
            name: self.name.as_deref().map(Arc::from),
            default: self.default,
            table,
            entries,
            rules: infos,
            default_label: default_label(self.default),
        })
    }
}

fn default_label(default: Action) -> Arc<str> {
    Arc::from(format!("default {default}"))
}

fn describe_rule(info: &RuleInfo, range: IpRange) -> String {
    match info.set {
        Some(_) => format!("{} ({range})", info.label),
        None => info.label.to_string(),
    }
}

// === impl IpRules ===

/// The index of a rule in its [`IpRules`], in the order the rules were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub(crate) u32);

impl RuleId {
    /// The rule's position (from 0) in the order the rules were added.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One rule of an [`IpRules`]: its action and how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    action: Action,
    label: Arc<str>,
    set: Option<Arc<str>>,
}

impl RuleInfo {
    /// Allow or deny.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The rule as written: `deny 10.0.66.0/24`, `allow set management`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The named set the rule refers to, if any.
    pub fn set(&self) -> Option<&str> {
        self.set.as_deref()
    }
}

/// The rule that decided an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Matched {
    /// The rule.
    pub rule: RuleId,
    /// The range of the rule (for a set rule, the set member) that covers the address.
    pub range: IpRange,
}

/// What a rule set says about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// Allow or deny.
    pub action: Action,
    /// The most specific rule covering the address; `None` when the default action applied.
    pub matched: Option<Matched>,
}

/// An immutable, compiled rule set: the most specific rule covering an address decides, the default action
/// decides the rest. See the [module docs](self).
///
/// Lookups allocate nothing and take a binary search over the flattened table. Share it with `Arc` (or an
/// [`IpRulesHandle`](crate::IpRulesHandle) to swap it while serving).
#[derive(Debug, Clone)]
pub struct IpRules {
    name: Option<Arc<str>>,
    default: Action,
    table: IpTable<Action>,
    /// `(rule, range)` by table insertion index.
    entries: Vec<(RuleId, IpRange)>,
    rules: Vec<RuleInfo>,
    /// `default allow` or `default deny`.
    default_label: Arc<str>,
}

impl IpRules {
    /// A builder whose addresses no rule covers get `default`. There is no implicit default.
    ///
    /// With no rules, [`Action::Deny`] refuses every address and [`Action::Allow`] lets every address through.
    pub fn builder(default: Action) -> IpRulesBuilder {
        IpRulesBuilder { default, name: None, rules: Vec::new(), sets: BTreeMap::new() }
    }

    /// A rule set without rules: every address gets `default`.
    pub fn uniform(default: Action) -> Self {
        IpRules {
            name: None,
            default,
            table: IpTable::default(),
            entries: Vec::new(),
            rules: Vec::new(),
            default_label: default_label(default),
        }
    }

    /// The verdict for `ip` (IPv4-mapped IPv6 addresses are folded first). Allocates nothing.
    #[inline]
    pub fn check(&self, ip: IpAddr) -> Verdict {
        match self.table.get_index(ip) {
            Some(i) => {
                let (rule, range) = self.entries[i];
                Verdict { action: self.table.values()[i], matched: Some(Matched { rule, range }) }
            }
            None => Verdict { action: self.default, matched: None },
        }
    }

    /// The action for `ip`, without naming the rule: the fast path, which reads only the lookup table.
    #[inline]
    pub fn action(&self, ip: IpAddr) -> Action {
        self.table.get(ip).copied().unwrap_or(self.default)
    }

    /// Whether `ip` is allowed.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.action(ip) == Action::Allow
    }

    /// The action for addresses no rule covers.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The rule set's name, if [given](IpRulesBuilder::name).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// One rule.
    pub fn rule(&self, id: RuleId) -> Option<&RuleInfo> {
        self.rules.get(id.index())
    }

    /// The number of rules (a set rule counts once).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule (every address gets the default action).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule set's name, shared.
    pub fn name_arc(&self) -> Option<Arc<str>> {
        self.name.clone()
    }

    /// The rule that decided `verdict` as written (`allow 10.0.0.0/8`, `allow set corp`), or
    /// `default allow` / `default deny`: shared text, no allocation.
    pub fn label(&self, verdict: &Verdict) -> Arc<str> {
        match verdict.matched.and_then(|m| self.rule(m.rule)) {
            Some(info) => info.label.clone(),
            None => self.default_label.clone(),
        }
    }

    /// The rule that decided `verdict`, as written: `deny 10.0.66.0/24`, `allow set management (10.9.0.0/24)`,
    /// or `no rule matched (default deny)`.
    pub fn describe(&self, verdict: &Verdict) -> String {
        match verdict.matched.and_then(|m| self.rule(m.rule).map(|info| (info, m.range))) {
            Some((info, range)) => describe_rule(info, range),
            None => format!("no rule matched (default {})", self.default),
        }
    }
}

#[cfg(test)]
mod tests;
