//! [`IpTable`]: the prefix table behind every CIDR and range rule.
//!
//! Rules (CIDRs, single addresses, `from-to` ranges) are flattened once, at build time, into sorted disjoint
//! segments per address family; a lookup is a search that allocates nothing, narrowed by a bucket index:
//! for IPv4 (every table) about one segment per bucket, at most 131,072 buckets, laid over the span of
//! addresses the rules actually cover; for IPv6 (above 4,096 segments) the top 16 bits. The most specific
//! rule wins: the rule covering the fewest addresses, which for CIDRs is the longest prefix.
//!
//! ```
//! use portcullis_core::{IpTable, IpRange};
//!
//! let mut b = IpTable::builder();
//! b.insert("10.0.0.0/8".parse::<IpRange>()?, "allow");
//! b.insert("10.0.66.0/24".parse::<IpRange>()?, "deny");
//! b.insert("10.0.66.5".parse::<IpRange>()?, "allow");
//! b.insert("192.0.2.10-192.0.2.20".parse::<IpRange>()?, "range");
//! let table = b.build()?;
//! assert_eq!(table.get("10.1.2.3".parse()?), Some(&"allow"));
//! assert_eq!(table.get("10.0.66.4".parse()?), Some(&"deny"));
//! assert_eq!(table.get("10.0.66.5".parse()?), Some(&"allow"));
//! assert_eq!(table.get("::ffff:10.0.66.4".parse()?), Some(&"deny")); // mapped addresses are folded
//! assert_eq!(table.get("192.0.2.15".parse()?), Some(&"range"));
//! assert_eq!(table.get("172.16.0.1".parse()?), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::client::addr::fold_ip;

/// An inclusive range of addresses of one family: a CIDR, a single address or a `from-to` range.
///
/// IPv4-mapped IPv6 ranges (inside `::ffff:0:0/96`) are folded to IPv4 when parsed or converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpRange {
    /// An IPv4 range, `start..=end`.
    V4 {
        /// First address.
        start: u32,
        /// Last address (inclusive).
        end: u32,
    },
    /// An IPv6 range, `start..=end`.
    V6 {
        /// First address.
        start: u128,
        /// Last address (inclusive).
        end: u128,
    },
}

/// Why an [`IpRange`] could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRangeError {
    /// Not an address, a CIDR or a range.
    #[error("`{0}` is not an IP address, a CIDR (a.b.c.d/n) or a range (a.b.c.d-e.f.g.h)")]
    Syntax(String),
    /// A CIDR with bits set after the prefix, such as `10.0.0.1/8`; write the network address.
    #[error("`{input}` has host bits set after the prefix; write `{network}`")]
    HostBits {
        /// The text given.
        input: String,
        /// The network it probably meant.
        network: String,
    },
    /// A range whose ends are of different families, or whose start is after its end.
    #[error("`{0}` is not a range: both ends must be of one family and the first must not be after the last")]
    BadRange(String),
}

const MAPPED_PREFIX: u128 = 0xffff_0000_0000;

impl IpRange {
    /// The range holding exactly `ip` (folded).
    pub fn single(ip: IpAddr) -> Self {
        match fold_ip(ip) {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                IpRange::V4 { start: a, end: a }
            }
            IpAddr::V6(v6) => {
                let a = u128::from(v6);
                IpRange::V6 { start: a, end: a }
            }
        }
    }

    /// The range from `start` to `end` inclusive (both folded).
    ///
    /// # Errors
    /// [`IpRangeError::BadRange`] when the families differ or `start > end`.
    pub fn from_bounds(start: IpAddr, end: IpAddr) -> Result<Self, IpRangeError> {
        match (fold_ip(start), fold_ip(end)) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => Ok(IpRange::V4 { start: a.into(), end: b.into() }),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => Ok(IpRange::V6 { start: a.into(), end: b.into() }),
            _ => Err(IpRangeError::BadRange(format!("{start}-{end}"))),
        }
    }

    /// The first address.
    pub fn start(&self) -> IpAddr {
        match *self {
            IpRange::V4 { start, .. } => IpAddr::V4(Ipv4Addr::from(start)),
            IpRange::V6 { start, .. } => IpAddr::V6(Ipv6Addr::from(start)),
        }
    }

    /// The last address.
    pub fn end(&self) -> IpAddr {
        match *self {
            IpRange::V4 { end, .. } => IpAddr::V4(Ipv4Addr::from(end)),
            IpRange::V6 { end, .. } => IpAddr::V6(Ipv6Addr::from(end)),
        }
    }

    /// Whether `ip` (folded) is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, fold_ip(ip)) {
            (IpRange::V4 { start, end }, IpAddr::V4(a)) => (start..=end).contains(&u32::from(a)),
            (IpRange::V6 { start, end }, IpAddr::V6(a)) => (start..=end).contains(&u128::from(a)),
            _ => false,
        }
    }

    /// The number of addresses in the range, minus one (so that `::/0` fits).
    pub fn span(&self) -> u128 {
        match *self {
            IpRange::V4 { start, end } => u128::from(end - start),
            IpRange::V6 { start, end } => end - start,
        }
    }

    /// The CIDR this range is exactly, if it is one.
    pub fn as_net(&self) -> Option<IpNet> {
        match *self {
            IpRange::V4 { start, end } => {
                let size = u64::from(end - start) + 1;
                if !size.is_power_of_two() || u64::from(start) % size != 0 {
                    return None;
                }
                let len = 32 - size.trailing_zeros() as u8;
                Ipv4Net::new(Ipv4Addr::from(start), len).ok().map(IpNet::V4)
            }
            IpRange::V6 { start, end } => {
                let len = if start == 0 && end == u128::MAX {
                    0
                } else {
                    let size = end - start + 1;
                    if !size.is_power_of_two() || start % size != 0 {
                        return None;
                    }
                    128 - size.trailing_zeros() as u8
                };
                Ipv6Net::new(Ipv6Addr::from(start), len).ok().map(IpNet::V6)
            }
        }
    }
}

impl From<IpNet> for IpRange {
    fn from(net: IpNet) -> Self {
        match net {
            IpNet::V4(n) => IpRange::V4 { start: n.network().into(), end: n.broadcast().into() },
            IpNet::V6(n) => {
                let (start, end) = (u128::from(n.network()), u128::from(n.broadcast()));
                // Fold a range inside ::ffff:0:0/96 to IPv4.
                if start >> 32 == MAPPED_PREFIX >> 32 && end >> 32 == MAPPED_PREFIX >> 32 {
                    IpRange::V4 { start: start as u32, end: end as u32 }
                } else {
                    IpRange::V6 { start, end }
                }
            }
        }
    }
}

impl From<IpAddr> for IpRange {
    fn from(ip: IpAddr) -> Self {
        IpRange::single(ip)
    }
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    /// Parses `a.b.c.d`, `a.b.c.d/n`, `a.b.c.d-e.f.g.h` and the IPv6 forms. Leading zeros in IPv4 octets,
    /// IPv6 zone ids and host bits after a prefix are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let syntax = || IpRangeError::Syntax(s.to_owned());
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| syntax())?;
            let b: IpAddr = b.trim().parse().map_err(|_| syntax())?;
            return IpRange::from_bounds(a, b);
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| syntax())?;
            if net.addr() != net.network() {
                return Err(IpRangeError::HostBits { input: s.to_owned(), network: net.trunc().to_string() });
            }
            return Ok(IpRange::from(net));
        }
        let ip: IpAddr = s.parse().map_err(|_| syntax())?;
        Ok(IpRange::single(ip))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.span() == 0 {
            return write!(f, "{}", self.start());
        }
        match self.as_net() {
            Some(net) => write!(f, "{net}"),
            None => write!(f, "{}-{}", self.start(), self.end()),
        }
    }
}

// === impl IpTable ===

/// Why an [`IpTable`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpTableError {
    /// The same range was given twice with different values.
    #[error("rules #{first} and #{second} both cover exactly {range} with different values")]
    Conflict {
        /// The range both rules cover.
        range: IpRange,
        /// Insertion index of the first rule.
        first: usize,
        /// Insertion index of the second rule.
        second: usize,
    },
    /// Two ranges of the same size overlap without being equal, so neither is more specific.
    #[error("rules #{first} ({first_range}) and #{second} ({second_range}) overlap and are equally specific")]
    Ambiguous {
        /// Insertion index of the first rule.
        first: usize,
        /// Its range.
        first_range: IpRange,
        /// Insertion index of the second rule.
        second: usize,
        /// Its range.
        second_range: IpRange,
    },
    /// A range whose start is after its end (only possible for ranges built by hand).
    #[error("rule #{rule} is a range whose start is after its end")]
    Inverted {
        /// Insertion index of the rule.
        rule: usize,
    },
    /// More rules than the table can index (2^32 - 1).
    #[error("too many rules")]
    TooMany,
}

/// Collects rules for an [`IpTable`].
#[derive(Debug, Clone)]
pub struct IpTableBuilder<T> {
    rules: Vec<(IpRange, T)>,
}

impl<T> Default for IpTableBuilder<T> {
    fn default() -> Self {
        IpTableBuilder { rules: Vec::new() }
    }
}

impl<T: PartialEq> IpTableBuilder<T> {
    /// Adds a rule: addresses in `range` map to `value` unless a more specific rule covers them.
    pub fn insert(&mut self, range: impl Into<IpRange>, value: T) -> &mut Self {
        self.rules.push((range.into(), value));
        self
    }

    /// The number of rules added so far.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule was added.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Flattens the rules into a table.
    ///
    /// # Errors
    /// [`IpTableError::Conflict`] when one range is given twice with different values,
    /// [`IpTableError::Ambiguous`] when two equally large ranges overlap partially with different values.
    pub fn build(self) -> Result<IpTable<T>, IpTableError> {
        if self.rules.len() >= u32::MAX as usize {
            return Err(IpTableError::TooMany);
        }
        let mut v4: Vec<Rule<u32>> = Vec::new();
        let mut v6: Vec<Rule<u128>> = Vec::new();
        for (i, (range, _)) in self.rules.iter().enumerate() {
            // The fields are public, so a hand-built range may be upside down: refuse it rather than let it
            // match nothing (or overflow the span arithmetic).
            if range.start() > range.end() {
                return Err(IpTableError::Inverted { rule: i });
            }
            match *range {
                IpRange::V4 { start, end } => v4.push(Rule { start, end, idx: i as u32 }),
                IpRange::V6 { start, end } => v6.push(Rule { start, end, idx: i as u32 }),
            }
        }
        let values: Vec<T> = self.rules.into_iter().map(|(_, v)| v).collect();
        let v4 = Segments::build(v4, &values)?;
        let v6 = Segments::build(v6, &values)?;
        Ok(IpTable { v4, v6, values })
    }
}

/// A prefix table: the value of the most specific rule covering an address.
///
/// Built with [`IpTable::builder`]; immutable once built (share it with `Arc`, swap it whole to reload).
/// Lookups fold IPv4-mapped IPv6 addresses and allocate nothing.
#[derive(Debug, Clone)]
pub struct IpTable<T> {
    v4: Segments<u32>,
    v6: Segments<u128>,
    values: Vec<T>,
}

impl<T: PartialEq> IpTable<T> {
    /// A builder.
    pub fn builder() -> IpTableBuilder<T> {
        IpTableBuilder::default()
    }

    /// A table from `(range, value)` pairs.
    ///
    /// # Errors
    /// As [`IpTableBuilder::build`].
    pub fn from_rules(rules: impl IntoIterator<Item = (IpRange, T)>) -> Result<Self, IpTableError> {
        let mut b = IpTableBuilder::default();
        for (r, v) in rules {
            b.insert(r, v);
        }
        b.build()
    }
}

impl<T> IpTable<T> {
    /// The value of the most specific rule covering `ip`, if any.
    #[inline(always)]
    pub fn get(&self, ip: IpAddr) -> Option<&T> {
        self.get_index(ip).map(|i| &self.values[i])
    }

    /// The insertion index of the most specific rule covering `ip`, if any.
    ///
    /// IPv4 addresses take the inlined [`get_index_v4`](Self::get_index_v4) path; IPv6 ones (IPv4-mapped
    /// addresses folded) [`get_index_v6`](Self::get_index_v6).
    #[inline(always)]
    pub fn get_index(&self, ip: IpAddr) -> Option<usize> {
        match ip {
            IpAddr::V4(a) => self.get_index_v4(a),
            IpAddr::V6(a) => self.get_index_v6(a),
        }
    }

    /// [`get_index`](Self::get_index) for an IPv4 address: the most specific rule covering `ip`, if any.
    #[inline(always)]
    pub fn get_index_v4(&self, ip: Ipv4Addr) -> Option<usize> {
        self.v4.lookup_v4(u32::from(ip))
    }

    /// [`get_index`](Self::get_index) for an IPv6 address: an IPv4-mapped address (`::ffff:a.b.c.d`) is
    /// looked up as the IPv4 address it maps, as everywhere else.
    #[inline]
    pub fn get_index_v6(&self, ip: Ipv6Addr) -> Option<usize> {
        match ip.to_ipv4_mapped() {
            Some(a) => self.v4.lookup_v4(u32::from(a)),
            None => self.v6.lookup(u128::from(ip)),
        }
    }

    /// The value of the most specific rule covering the IPv4 address `ip`, if any.
    #[inline(always)]
    pub fn get_v4(&self, ip: Ipv4Addr) -> Option<&T> {
        self.get_index_v4(ip).map(|i| &self.values[i])
    }

    /// Whether some rule covers `ip`.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.get_index(ip).is_some()
    }

    /// The rules' values, in insertion order.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table has no rule.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bytes held by the table's lookup structures (segments and index), excluding the values.
    pub fn lookup_bytes(&self) -> usize {
        self.v4.bytes() + self.v6.bytes()
    }

    /// Bytes held by the table in all (segments, index and the values' inline size).
    pub fn heap_bytes(&self) -> usize {
        self.lookup_bytes() + self.values.capacity() * std::mem::size_of::<T>()
    }
}

impl<T> Default for IpTable<T> {
    fn default() -> Self {
        IpTable { v4: Segments::empty(), v6: Segments::empty(), values: Vec::new() }
    }
}

// === flattening ===

trait Key: Copy + Ord + fmt::Debug {
    const MAX: Self;
    fn succ(self) -> Self;
    fn span(start: Self, end: Self) -> u128;
    fn range(start: Self, end: Self) -> IpRange;
    /// `(self - base) >> shift`, at most `last`; 0 below `base`.
    fn bucket(self, base: Self, shift: u32, last: usize) -> usize;
    /// The index for these sorted segment starts: (buckets, base, shift), or `None` for no index.
    fn index_shape(starts: &[Self]) -> Option<(usize, Self, u32)>;
}

impl Key for u32 {
    const MAX: Self = u32::MAX;
    fn succ(self) -> Self {
        self + 1
    }
    #[inline]
    fn bucket(self, base: Self, shift: u32, last: usize) -> usize {
        ((self.saturating_sub(base) >> shift) as usize).min(last)
    }
    /// IPv4: any non-empty table, about one segment per bucket (at least 2, at most 131,072 buckets: a
    /// lookup in a 100k-rule table then scans one or two starts, and its index stays at 512 KiB) over
    /// the span the segments cover, so that rules gathered in one /8 still spread over many buckets. Small
    /// tables get a small index too: the lookup then has one shape ([`Segments::lookup_v4`]).
    fn index_shape(starts: &[Self]) -> Option<(usize, Self, u32)> {
        if starts.is_empty() {
            return None;
        }
        // At least two buckets keep the shift below 32.
        let buckets = starts.len().next_power_of_two().clamp(2, V4_MAX_BUCKETS);
        let base = starts[0];
        // The bits of the offset of the last start *minus one*: rules filling a prefix end with a start at
        // the address after it (`11.0.0.0` for `10.0.0.0/8`), which would double the span for one segment;
        // keys (and that start) past the span fall in the last bucket.
        let span_bits = 32 - (starts[starts.len() - 1] - base).saturating_sub(1).leading_zeros();
        Some((buckets, base, span_bits.saturating_sub(buckets.trailing_zeros())))
    }
    fn span(start: Self, end: Self) -> u128 {
        u128::from(end - start)
    }
    fn range(start: Self, end: Self) -> IpRange {
        IpRange::V4 { start, end }
    }
}

impl Key for u128 {
    const MAX: Self = u128::MAX;
    fn succ(self) -> Self {
        self + 1
    }
    /// Always the top 16 bits (see [`index_shape`](Key::index_shape)): the general form costs IPv6
    /// lookups about twice their time (a 128-bit subtraction and variable shift in the hot path).
    #[inline]
    fn bucket(self, base: Self, shift: u32, last: usize) -> usize {
        debug_assert!(base == 0 && shift == 112 && last == MAX_BUCKETS - 1);
        (self >> 112) as usize
    }
    /// IPv6: above 4,096 segments, 65,536 buckets on the top 16 bits. Real IPv6 rules sit under 2000::/3,
    /// where this spreads them well; fitting the buckets to the span measured slower on large random
    /// tables (wall time, not instructions), so IPv6 keeps the fixed split.
    fn index_shape(starts: &[Self]) -> Option<(usize, Self, u32)> {
        (starts.len() > V6_INDEX_THRESHOLD).then_some((MAX_BUCKETS, 0, 112))
    }
    fn span(start: Self, end: Self) -> u128 {
        end - start
    }
    fn range(start: Self, end: Self) -> IpRange {
        IpRange::V6 { start, end }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rule<K> {
    start: K,
    end: K,
    idx: u32,
}

const NONE: u32 = u32::MAX;
/// IPv6 tables with more segments than this get a bucket index.
const V6_INDEX_THRESHOLD: usize = 4096;
/// The buckets of an IPv6 index (256 KiB of `u32`).
const MAX_BUCKETS: usize = 1 << 16;
/// The most buckets an IPv4 index has (512 KiB of `u32`).
const V4_MAX_BUCKETS: usize = 1 << 17;

/// Sorted disjoint segments: `starts[i]..starts[i+1]` maps to `vals[i]` (`NONE` for no rule).
///
/// IPv4 tables and larger IPv6 tables have a bucket index ([`Key::index_shape`]). IPv4 buckets cover the
/// span the segments cover (from the first segment's start to the last one's), not the whole address
/// space: a table whose rules sit in one /8 gets buckets of a few hundred addresses rather than of a /16,
/// so a lookup searches a handful of segments. Bucket `b` holds the keys `base + (b << shift)` up to the next bucket; keys below
/// `base` fall in bucket 0 and keys past the span in the last one. IPv6 keeps buckets on the top 16 bits.
#[derive(Debug, Clone)]
struct Segments<K> {
    starts: Vec<K>,
    vals: Vec<u32>,
    /// `index[b]` = the first segment whose start's bucket is ≥ b; one entry more than there are buckets,
    /// or empty (no index).
    index: Vec<u32>,
    /// The first segment's start (the index's origin).
    base: K,
    /// log2 of the addresses per bucket.
    shift: u32,
}

impl<K: Key> Segments<K> {
    fn empty() -> Self {
        Segments { starts: Vec::new(), vals: Vec::new(), index: Vec::new(), base: K::MAX, shift: 0 }
    }

    fn bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<K>() + (self.vals.capacity() + self.index.capacity()) * 4
    }

    fn build<T: PartialEq>(mut rules: Vec<Rule<K>>, values: &[T]) -> Result<Self, IpTableError> {
        if rules.is_empty() {
            return Ok(Segments::empty());
        }
        // Conflicts: among equally large ranges sorted by start, any overlap shows between neighbours.
        rules.sort_unstable_by(|a, b| {
            K::span(a.start, a.end)
                .cmp(&K::span(b.start, b.end))
                .then(a.start.cmp(&b.start))
                .then(a.idx.cmp(&b.idx))
        });
        let mut keep = vec![true; rules.len()];
        for i in 1..rules.len() {
            let (a, b) = (rules[i - 1], rules[i]);
            if K::span(a.start, a.end) != K::span(b.start, b.end) || b.start > a.end {
                continue;
            }
            let same_value = values[a.idx as usize] == values[b.idx as usize];
            if a.start == b.start {
                if !same_value {
                    return Err(IpTableError::Conflict {
                        range: K::range(a.start, a.end),
                        first: a.idx as usize,
                        second: b.idx as usize,
                    });
                }
                keep[i] = false; // exact duplicate: keep the first
            } else if !same_value {
                return Err(IpTableError::Ambiguous {
                    first: a.idx as usize,
                    first_range: K::range(a.start, a.end),
                    second: b.idx as usize,
                    second_range: K::range(b.start, b.end),
                });
            }
        }
        let mut rules: Vec<Rule<K>> =
            rules.into_iter().zip(keep).filter_map(|(r, k)| k.then_some(r)).collect();
        rules.sort_unstable_by_key(|r| r.start);

        // Sweep the boundaries left to right, keeping the active rules in a heap ordered by specificity.
        let mut bounds: Vec<K> = Vec::with_capacity(rules.len() * 2);
        for r in &rules {
            bounds.push(r.start);
            if r.end != K::MAX {
                bounds.push(r.end.succ());
            }
        }
        bounds.sort_unstable();
        bounds.dedup();

        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // (span, start, idx, end) with the smallest span on top; ties cannot overlap (checked above)
        // except equal-valued ones, where either answer is the same value.
        let mut heap: BinaryHeap<Reverse<(u128, K, u32, K)>> = BinaryHeap::new();
        let mut starts = Vec::with_capacity(bounds.len() + 1);
        let mut vals = Vec::with_capacity(bounds.len() + 1);
        let mut next = 0;
        let mut last = NONE;
        let mut first = true;
        for b in bounds {
            while next < rules.len() && rules[next].start == b {
                let r = rules[next];
                heap.push(Reverse((K::span(r.start, r.end), r.start, r.idx, r.end)));
                next += 1;
            }
            while let Some(Reverse((_, _, _, end))) = heap.peek() {
                if *end < b {
                    heap.pop();
                } else {
                    break;
                }
            }
            let winner = heap.peek().map_or(NONE, |Reverse((_, _, idx, _))| *idx);
            if first || winner != last {
                starts.push(b);
                vals.push(winner);
                last = winner;
                first = false;
            }
        }
        starts.shrink_to_fit();
        vals.shrink_to_fit();
        let mut seg = Segments { starts, vals, index: Vec::new(), base: K::MAX, shift: 0 };
        if let Some((buckets, base, shift)) = K::index_shape(&seg.starts) {
            let last = buckets - 1;
            let mut index = Vec::with_capacity(buckets + 1);
            let mut i = 0usize;
            for bucket in 0..=buckets {
                while i < seg.starts.len() && seg.starts[i].bucket(base, shift, last) < bucket {
                    i += 1;
                }
                index.push(i as u32);
            }
            seg.index = index;
            seg.base = base;
            seg.shift = shift;
        }
        Ok(seg)
    }

    /// The general lookup (used for IPv6; IPv4 has [`Segments::lookup_v4`], pinned to this by a test).
    #[inline]
    fn lookup(&self, key: K) -> Option<usize> {
        let (lo, hi) = if self.index.is_empty() {
            (0, self.starts.len())
        } else {
            // Keys below `base` fall in bucket 0, whose segments all start above them: `n` is 0 below.
            let b = key.bucket(self.base, self.shift, self.index.len() - 2);
            (self.index[b] as usize, self.index[b + 1] as usize)
        };
        // Number of segments starting at or before `key`, counting all of those before `lo`.
        let n = lo + self.starts[lo..hi].partition_point(|s| *s <= key);
        if n == 0 {
            return None;
        }
        match self.vals[n - 1] {
            NONE => None,
            v => Some(v as usize),
        }
    }
}

/// Buckets with at most this many segment starts are scanned linearly by [`Segments::lookup_v4`].
const V4_LINEAR: usize = 8;

impl Segments<u32> {
    /// [`Segments::lookup`] for IPv4 (pinned to it by a property test), shaped for the hot path: every
    /// non-empty IPv4 table has an index, so there is one shape; the bucket's two bounds are read with one
    /// bounds check; the segment is found scanning back from the bucket's end (all later segments start
    /// after the key, all earlier ones at or before the bucket's start), usually in one or two compares;
    /// buckets with more than [`V4_LINEAR`] starts are searched.
    #[inline(always)]
    fn lookup_v4(&self, key: u32) -> Option<usize> {
        let b = key.bucket(self.base, self.shift, self.index.len().wrapping_sub(2));
        // Only an empty table has no index (and no segment for any key).
        let Some(&[lo, hi]) = self.index.get(b..b + 2) else { return None };
        let (lo, hi) = (lo as usize, hi as usize);
        let starts = &self.starts[..hi];
        // Number of segments starting at or before `key`.
        let n = if hi.wrapping_sub(lo) <= V4_LINEAR {
            let mut n = hi;
            while n > 0 && starts[n - 1] > key {
                n -= 1;
            }
            n
        } else {
            lo + starts[lo..].partition_point(|s| *s <= key)
        };
        // `n == 0` (a key before the first segment) wraps to an index `get` refuses.
        match self.vals.get(n.wrapping_sub(1)) {
            None | Some(&NONE) => None,
            Some(&v) => Some(v as usize),
        }
    }
}

#[cfg(test)]
mod tests;
