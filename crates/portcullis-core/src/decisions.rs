//! The per-request decision context shared by every layer.

use http::Extensions;

use crate::{ClientAddr, Denial, MatchedHost, Origin};

/// What the portcullis layers decided about one request, in one extension.
///
/// Each layer fills in its part ([`client`](Decisions::client), [`host`](Decisions::host),
/// [`origin`](Decisions::origin)) and layers in shadow mode append what they would have refused to
/// [`shadow`](Decisions::shadow). Keeping one context rather than one extension per layer costs one
/// allocation per request for the whole stack.
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
    /// The decisions of a request, if any layer ran.
    pub fn get(ext: &Extensions) -> Option<&Decisions> {
        ext.get::<Decisions>()
    }

    /// The decisions of a request, created empty if no layer ran yet.
    pub fn get_mut(ext: &mut Extensions) -> &mut Decisions {
        ext.get_or_insert_default::<Decisions>()
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
