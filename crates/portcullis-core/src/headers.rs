//! [`HeaderIndex`]: the request headers portcullis' gates read, found in one pass over the header names.
//!
//! The client-address gate reads `X-Forwarded-For` or `Forwarded`, the host gate reads `Host`, the origin
//! gate looks for client copies of the headers it strips. Looking each up in the [`HeaderMap`] hashes the
//! name every time (a non-standard name such as `x-forwarded-for` byte by byte); one walk over the names a
//! request actually carries finds all of them at once, and is cheaper for every request of ordinary size.
//!
//! The index is exact, not a heuristic: [`Lines`] holds the one value of a header sent once (in the order
//! the map yields it, which is the order of [`HeaderMap::get_all`]) or how many lines there are, and
//! [`HeaderIndex::may_contain`] answers "no" only for names that are certainly absent.

use http::header::{FORWARDED, HOST, HeaderName};
use http::{HeaderMap, HeaderValue};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// How many lines of one header a request carries: with the value of a header sent once, owned
/// (`Lines<HeaderValue>`, in a [`HeaderIndex`]) or borrowed from the request (`Lines<&HeaderValue>`, in a
/// [`HeaderScan`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lines<V = HeaderValue> {
    /// None.
    #[default]
    None,
    /// Exactly one, with its value.
    One(V),
    /// More than one (read them with [`HeaderMap::get_all`]).
    Many(usize),
}

impl<V> Lines<V> {
    /// The number of lines.
    pub fn count(&self) -> usize {
        match self {
            Lines::None => 0,
            Lines::One(_) => 1,
            Lines::Many(n) => *n,
        }
    }

    /// The same lines, the value borrowed.
    #[inline]
    pub fn as_ref(&self) -> Lines<&V> {
        match self {
            Lines::None => Lines::None,
            Lines::One(v) => Lines::One(v),
            Lines::Many(n) => Lines::Many(*n),
        }
    }
}

/// The headers the portcullis gates read, found in one pass (see the [module docs](self)), with the values
/// of headers sent once cloned (`HeaderIndex`, the default) or borrowed from the request ([`HeaderScan`]).
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::HOST};
/// use portcullis_core::headers::{HeaderIndex, Lines};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(HOST, HeaderValue::from_static("api.contoso.com"));
/// headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
/// headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
/// let index = HeaderIndex::scan(&headers);
/// assert_eq!(index.host(), &Lines::One(HeaderValue::from_static("api.contoso.com")));
/// assert_eq!(index.x_forwarded_for(), &Lines::Many(2));
/// assert!(!index.may_contain(&http::header::HeaderName::from_static("x-portcullis-origin")));
/// // The same pass, borrowing the values.
/// let scan = HeaderIndex::borrowed(&headers);
/// assert_eq!(scan.host(), &Lines::One(&HeaderValue::from_static("api.contoso.com")));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HeaderIndex<V = HeaderValue> {
    host: Lines<V>,
    x_forwarded_for: Lines<V>,
    forwarded: Lines<V>,
    /// Bit `n` is set when some header name has length `n` (names of 63 bytes or more share bit 63).
    lengths: u64,
    /// The map the index was made from, as its address and its number of values then: an index (or its
    /// [`HeaderLengths`]) is only ever trusted for that map, unchanged in size.
    made_from: MapId,
}

/// Which map an index describes (see [`HeaderIndex::made_from`]). Not a borrow: an owned index outlives
/// the borrow it was made in, so it is checked against the map it is used with instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MapId {
    addr: usize,
    len: usize,
}

impl MapId {
    #[inline]
    fn of(map: &HeaderMap) -> MapId {
        MapId { addr: std::ptr::from_ref(map).addr(), len: map.len() }
    }
}

impl<V> Default for HeaderIndex<V> {
    fn default() -> Self {
        HeaderIndex {
            host: Lines::None,
            x_forwarded_for: Lines::None,
            forwarded: Lines::None,
            lengths: 0,
            made_from: MapId::default(),
        }
    }
}

/// A [`HeaderIndex`] whose values are borrowed from the request's headers: no value is cloned, and the
/// index lives no longer than the borrow.
pub type HeaderScan<'h> = HeaderIndex<&'h HeaderValue>;

impl HeaderIndex {
    /// Walks the request's header names once.
    pub fn scan(headers: &HeaderMap) -> HeaderIndex {
        let mut index = HeaderIndex::default();
        index.fill(headers);
        index
    }

    /// [`scan`](Self::scan) into this (empty) index, where it lives: it is 128 bytes, not worth copying.
    #[inline]
    pub(crate) fn fill(&mut self, headers: &HeaderMap) {
        fill(self, headers, HeaderValue::clone);
    }

    /// The index with its values borrowed from this one.
    #[inline]
    pub fn as_scan(&self) -> HeaderScan<'_> {
        HeaderIndex {
            host: self.host.as_ref(),
            x_forwarded_for: self.x_forwarded_for.as_ref(),
            forwarded: self.forwarded.as_ref(),
            lengths: self.lengths,
            made_from: self.made_from,
        }
    }

    /// The mask [`may_contain_any`](Self::may_contain_any) takes, for a fixed set of names.
    pub fn length_mask<'a>(names: impl IntoIterator<Item = &'a HeaderName>) -> u64 {
        names.into_iter().fold(0, |mask, name| mask | length_bit(name.as_str().len()))
    }
}

impl<'h> HeaderIndex<&'h HeaderValue> {
    /// Walks the request's header names once, borrowing the values it keeps.
    #[inline]
    pub fn borrowed(headers: &'h HeaderMap) -> HeaderScan<'h> {
        let mut index = HeaderIndex::default();
        fill(&mut index, headers, |v| v);
        index
    }
}

impl<V> HeaderIndex<V> {
    /// The `Host` lines.
    pub fn host(&self) -> &Lines<V> {
        &self.host
    }

    /// The `X-Forwarded-For` lines.
    pub fn x_forwarded_for(&self) -> &Lines<V> {
        &self.x_forwarded_for
    }

    /// The RFC 7239 `Forwarded` lines.
    pub fn forwarded(&self) -> &Lines<V> {
        &self.forwarded
    }

    /// `false` when the request certainly carries no header named `name`; `true` when it may (no header
    /// name of the same length is absent), to be checked in the map.
    pub fn may_contain(&self, name: &HeaderName) -> bool {
        self.may_contain_any(HeaderIndex::length_mask([name]))
    }

    /// [`may_contain`](Self::may_contain) for any of the names of a mask made once with
    /// [`length_mask`](HeaderIndex::length_mask).
    #[inline]
    pub fn may_contain_any(&self, mask: u64) -> bool {
        self.lengths & mask != 0
    }

    /// The lengths of the request's header names, for [`HeaderLengths::may_contain_any`]: trusted only for
    /// the map this index was made from, and only while its size is unchanged.
    #[inline]
    pub fn lengths(&self) -> HeaderLengths {
        HeaderLengths { mask: self.lengths, made_from: self.made_from }
    }

    /// Whether this index was made from `map` as it is now (same map, same number of values). An index of
    /// another map, or of this one before a header was added or removed, says `false`.
    #[inline]
    pub fn describes(&self, map: &HeaderMap) -> bool {
        self.made_from == MapId::of(map)
    }
}

/// The one pass behind both forms: `keep` turns a value sent once into what the index holds.
#[inline]
fn fill<'h, V>(index: &mut HeaderIndex<V>, headers: &'h HeaderMap, keep: impl Fn(&'h HeaderValue) -> V) {
    index.made_from = MapId::of(headers);
    for (name, value) in headers {
        let text = name.as_str();
        index.lengths |= length_bit(text.len());
        // By length first: most names are none of the three, and their length says so.
        let lines = match text.len() {
            4 if *name == HOST => &mut index.host,
            9 if *name == FORWARDED => &mut index.forwarded,
            15 if text == X_FORWARDED_FOR => &mut index.x_forwarded_for,
            _ => continue,
        };
        match lines {
            Lines::None => *lines = Lines::One(keep(value)),
            other => other.push_more(),
        }
    }
}

/// The lengths of a request's header names when an index was made (see [`HeaderIndex::lengths`]), tied to
/// the map they describe: a question about another map, or about this one after its size changed, gets the
/// safe answer "may contain".
#[derive(Debug, Clone, Copy)]
pub struct HeaderLengths {
    mask: u64,
    made_from: MapId,
}

impl HeaderLengths {
    /// `false` when `map` certainly carries none of the names of `mask` (made with
    /// [`HeaderIndex::length_mask`]); `true` when it may, or when these lengths are not of `map` as it is.
    #[inline]
    pub fn may_contain_any(&self, map: &HeaderMap, mask: u64) -> bool {
        self.mask & mask != 0 || self.made_from != MapId::of(map)
    }
}

/// A request's headers together with the index of the ones portcullis reads, made from them: what the
/// layers' `decide` functions take, so that an index can never describe another map than the one they
/// read. Build it with [`Scanned::indexed`] (one pass), [`Scanned::plain`] (no index: each reader looks its
/// header up), or from an owned index with [`HeaderIndex::scanned`].
#[derive(Debug, Clone, Copy)]
pub struct Scanned<'h> {
    map: &'h HeaderMap,
    index: Option<HeaderScan<'h>>,
}

impl<'h> Scanned<'h> {
    /// Walks `map` once for the headers the gates read, borrowing their values.
    #[inline]
    pub fn indexed(map: &'h HeaderMap) -> Scanned<'h> {
        Scanned { map, index: Some(HeaderIndex::borrowed(map)) }
    }

    /// `map` without an index.
    #[inline]
    pub fn plain(map: &'h HeaderMap) -> Scanned<'h> {
        Scanned { map, index: None }
    }

    /// The headers.
    #[inline]
    pub fn map(&self) -> &'h HeaderMap {
        self.map
    }

    /// Their index, if one was made.
    #[inline]
    pub fn index(&self) -> Option<&HeaderScan<'h>> {
        self.index.as_ref()
    }
}

impl HeaderIndex {
    /// `map` with this index, if this index was made from `map` as it is now ([`describes`](Self::describes));
    /// otherwise `map` alone, so that a stale index is never read.
    #[inline]
    pub fn scanned<'a>(&'a self, map: &'a HeaderMap) -> Scanned<'a> {
        match self.describes(map) {
            true => Scanned { map, index: Some(self.as_scan()) },
            false => Scanned::plain(map),
        }
    }
}

impl<V> Lines<V> {
    /// One more line, when there is one already (no value kept).
    fn push_more(&mut self) {
        *self = Lines::Many(self.count().saturating_add(1));
    }
}

#[inline]
fn length_bit(len: usize) -> u64 {
    1u64 << len.min(63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_get_all() {
        let mut h = HeaderMap::new();
        assert_eq!(HeaderIndex::scan(&h).host().count(), 0);
        h.append(HOST, HeaderValue::from_static("a.example"));
        h.append("accept", HeaderValue::from_static("*/*"));
        h.append("X-Forwarded-For", HeaderValue::from_static("192.0.2.1"));
        h.append(FORWARDED, HeaderValue::from_static("for=192.0.2.9"));
        let ix = HeaderIndex::scan(&h);
        assert_eq!(ix.host(), &Lines::One(HeaderValue::from_static("a.example")));
        assert_eq!(ix.x_forwarded_for(), &Lines::One(HeaderValue::from_static("192.0.2.1")));
        assert_eq!(ix.forwarded(), &Lines::One(HeaderValue::from_static("for=192.0.2.9")));
        h.append(HOST, HeaderValue::from_static("b.example"));
        h.append(HOST, HeaderValue::from_static("c.example"));
        let ix = HeaderIndex::scan(&h);
        assert_eq!(ix.host(), &Lines::Many(3));
        assert_eq!(ix.host().count(), h.get_all(HOST).iter().count());
    }

    /// An index, or the lengths it found, is only ever trusted for the map it was made from, as it was.
    #[test]
    fn an_index_is_not_trusted_for_another_map_or_a_changed_one() {
        let mut a = HeaderMap::new();
        a.append(HOST, HeaderValue::from_static("a.example"));
        a.append("x-forwarded-for", HeaderValue::from_static("10.1.2.3"));
        let mut b = HeaderMap::new();
        b.append(HOST, HeaderValue::from_static("b.example"));
        b.append("x-forwarded-for", HeaderValue::from_static("203.0.113.66"));
        b.append("x-portcullis-origin", HeaderValue::from_static("private"));
        let index = HeaderIndex::scan(&a);
        assert!(index.describes(&a));
        assert!(!index.describes(&b));
        // Another map: read without the index, so its own values count.
        let scanned = index.scanned(&b);
        assert!(scanned.index().is_none());
        assert_eq!(scanned.map().get(HOST).unwrap(), "b.example");
        // Lengths of `a` say nothing about `b`, nor about `a` once a header was added.
        let spoof = HeaderIndex::length_mask([&HeaderName::from_static("x-portcullis-origin")]);
        let lengths = index.lengths();
        assert!(!lengths.may_contain_any(&a, spoof));
        assert!(lengths.may_contain_any(&b, spoof));
        a.append("x-portcullis-origin", HeaderValue::from_static("private"));
        assert!(lengths.may_contain_any(&a, spoof));
        assert!(!index.describes(&a));
        // The borrowed form is made from its map in the same borrow.
        let scanned = Scanned::indexed(&b);
        assert_eq!(
            scanned.index().map(|ix| *ix.x_forwarded_for()),
            Some(Lines::One(b.get("x-forwarded-for").unwrap()))
        );
    }

    #[test]
    fn may_contain_never_misses_a_present_name() {
        let names = ["x-portcullis-origin", "x_portcullis_origin", "content-disposition", "a", "x"];
        let long = "x".repeat(80);
        for present in names.iter().copied().chain([long.as_str()]) {
            let mut h = HeaderMap::new();
            h.append(HeaderName::try_from(present).unwrap(), HeaderValue::from_static("v"));
            let ix = HeaderIndex::scan(&h);
            assert!(ix.may_contain(&HeaderName::try_from(present).unwrap()), "{present}");
        }
        let ix = HeaderIndex::scan(&HeaderMap::new());
        assert!(!ix.may_contain(&HeaderName::from_static("x-portcullis-origin")));
    }
}
