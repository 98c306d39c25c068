//! The per-request decision context shared by every layer.

use std::cell::Cell;

use http::Extensions;

use crate::{ClientAddr, Denial, MatchedHost, Origin};

/// What the portcullis layers decided about one request, in one place.
///
/// Each layer fills in its part ([`client`](Decisions::client), [`host`](Decisions::host),
/// [`origin`](Decisions::origin)) and layers in shadow mode append what they would have refused to
/// [`shadow`](Decisions::shadow).
///
/// Where they live: in the request's copy of [`ConnInfo`](crate::ConnInfo) when the request has one (what
/// `portcullis::serve`, [`AddConnInfo`](crate::AddConnInfo) and axum's `ConnectInfo<ConnInfo>` give every
/// request), so recording them costs no allocation; otherwise in an extension of their own. Read them with
/// [`Decisions::get`] (or the axum extractors), which looks in both places, not with
/// `extensions().get::<Decisions>()`.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// Who is calling, as resolved by the client-address layer.
    pub client: Option<crate::ClientAddr>,
    /// The host pattern and endpoint the host router matched.
    pub host: Option<MatchedHost>,
    /// Whether the request came through a private path.
    pub origin: Option<Origin>,
    /// What layers in shadow mode would have refused.
    pub shadow: Vec<Denial>,
}

impl Decisions {
    /// The decisions of a request, if any layer recorded something.
    pub fn get(ext: &Extensions) -> Option<&Decisions> {
        // An extension of their own, when something put one there, takes precedence (as in `get_mut`).
        if let Some(own) = ext.get::<Decisions>() {
            return Some(own);
        }
        crate::ConnInfo::in_request(ext).and_then(|c| c.decisions.0.as_deref()).filter(|d| !d.is_empty())
    }

    /// The decisions of a request, created empty if no layer ran yet: in the request's
    /// [`ConnInfo`](crate::ConnInfo) copy if it has one and no extension of their own, else in their own
    /// extension.
    pub fn get_mut(ext: &mut Extensions) -> &mut Decisions {
        if ext.get::<Decisions>().is_some() || crate::ConnInfo::in_request(ext).is_none() {
            return ext.get_or_insert_default::<Decisions>();
        }
        // `in_request` just found the copy, and nothing can remove it while `ext` is borrowed here.
        let conn = crate::ConnInfo::in_request_mut(ext).expect("the request's ConnInfo was just found");
        conn.decisions.0.get_or_insert_with(new_record)
    }

    /// The resolved client address of a request, if the client-address layer ran.
    pub fn client_of(ext: &Extensions) -> Option<&ClientAddr> {
        Decisions::get(ext).and_then(|d| d.client.as_ref())
    }

    /// Records a shadow-mode denial: logged at info level and kept in [`Decisions::shadow`].
    pub fn record_shadow(ext: &mut Extensions, denial: Denial) {
        Decisions::get_mut(ext).push_shadow(denial);
    }

    /// Records a shadow-mode denial in these decisions: logged at info level and kept in
    /// [`Decisions::shadow`] (what [`Decisions::record_shadow`] does on a request's extensions).
    pub fn push_shadow(&mut self, denial: Denial) {
        denial.log(true);
        self.shadow.push(denial);
    }

    /// Whether any layer recorded anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.client.is_none() && self.host.is_none() && self.origin.is_none() && self.shadow.is_empty()
    }
}

/// The boxed decisions of the request whose [`ConnInfo`](crate::ConnInfo) copy holds them (`None` until a
/// gate records something).
///
/// When the request is done and its copy dropped, the box is emptied and kept, one per thread, for the next
/// record made on that thread ([`new_record`]): a steady stream of requests records its decisions without
/// an allocation each. Nothing recorded survives: the box is cleared before it is kept, and a new record
/// starts empty.
#[derive(Default)]
pub(crate) struct Record(pub(crate) Option<Box<Decisions>>);

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(boxed) = self.0.take() {
            recycle(boxed);
        }
    }
}

thread_local! {
    /// The box of the last record dropped on this thread, emptied, for the next one.
    static SPARE: Cell<Option<Box<Decisions>>> = const { Cell::new(None) };
}

/// An empty record: the thread's spare box if it has one, else a new one. Out of line: once per request,
/// and not in the code of every gate that records.
#[inline(never)]
pub(crate) fn new_record() -> Box<Decisions> {
    match SPARE.try_with(Cell::take) {
        Ok(Some(spare)) => spare,
        _ => Box::default(),
    }
}

/// Empties `boxed` and keeps it as the thread's spare (the spare it replaces, if any, is freed).
pub(crate) fn recycle(mut boxed: Box<Decisions>) {
    // A long shadow list is not kept around; an ordinary one keeps its capacity.
    if boxed.shadow.capacity() > 8 {
        *boxed = Decisions::default();
    } else {
        let Decisions { client, host, origin, shadow } = &mut *boxed;
        *client = None;
        *host = None;
        *origin = None;
        shadow.clear();
    }
    // During thread teardown the spare is gone: the box is then simply freed.
    let _ = SPARE.try_with(move |spare| spare.replace(Some(boxed)));
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use http::{Extensions, StatusCode};

    use super::*;
    use crate::{ClientAddr, ConnInfo, Denial, LearntVia, MatchedHost, Origin};

    fn request_extensions() -> Extensions {
        let mut ext = Extensions::new();
        ext.insert(ConnInfo::new("127.0.0.1:40000".parse().unwrap(), None));
        ext
    }

    /// Records everything a stack records, and returns where the record lives.
    fn record_all(ext: &mut Extensions) -> *const Decisions {
        let d = Decisions::get_mut(ext);
        d.client =
            Some(ClientAddr { ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), learnt_via: LearntVia::Peer });
        let name: Arc<str> = Arc::from("api.contoso.example");
        d.host = Some(MatchedHost { host: name.clone(), pattern: name, endpoint: Arc::from("gateway") });
        d.origin = Some(Origin::Public);
        d.push_shadow(Denial::new("test", "test.shadow", StatusCode::FORBIDDEN, "would refuse"));
        d
    }

    #[test]
    fn a_dropped_record_is_reused_empty_on_the_same_thread() {
        let mut first = request_extensions();
        let first_box = record_all(&mut first);
        drop(first);
        // The next request on this thread records into the same box, which holds nothing of the first.
        let mut second = request_extensions();
        assert!(Decisions::get(&second).is_none(), "nothing recorded yet");
        let d = Decisions::get_mut(&mut second);
        assert!(d.is_empty(), "a reused record starts empty: {d:?}");
        assert!(std::ptr::eq(d, first_box), "the first request's box is reused");
        // A third request while the second is alive gets a box of its own.
        let mut third = request_extensions();
        let third_box: *const Decisions = Decisions::get_mut(&mut third);
        assert!(!std::ptr::eq(third_box, first_box));
    }

    #[test]
    fn a_record_dropped_on_another_thread_is_kept_there() {
        let mut ext = request_extensions();
        let recorded = record_all(&mut ext) as usize;
        std::thread::spawn(move || {
            drop(ext);
            let mut next = request_extensions();
            let d = Decisions::get_mut(&mut next);
            assert!(d.is_empty());
            assert_eq!(std::ptr::from_ref(d) as usize, recorded, "kept by the thread that dropped it");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_long_shadow_list_is_not_kept() {
        let mut ext = request_extensions();
        let d = Decisions::get_mut(&mut ext);
        for _ in 0..20 {
            d.shadow.push(Denial::new("test", "test.shadow", StatusCode::FORBIDDEN, "would refuse"));
        }
        drop(ext);
        let mut next = request_extensions();
        assert_eq!(Decisions::get_mut(&mut next).shadow.capacity(), 0);
    }
}
