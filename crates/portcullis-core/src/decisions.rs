//! The per-request decision context shared by every layer.

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
        crate::ConnInfo::in_request(ext).and_then(|c| c.decisions.as_deref()).filter(|d| !d.is_empty())
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
        conn.decisions.get_or_insert_default()
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
