//! [`Decisions`]: what the layers decided about one request, in one request extension.

use std::net::IpAddr;
use std::sync::Arc;

use http::Extensions;

use crate::{ClientAddr, Denial, MatchedHost, Origin};

/// What the portcullis layers decided about one request, in one place: a request extension of its own,
/// inserted by the first rule that records something (one allocation per request).
///
/// Each built-in rule fills in its typed field ([`client`](Decisions::client), [`host`](Decisions::host),
/// [`origin`](Decisions::origin), [`ip`](Decisions::ip)); rules in shadow mode append what they would have
/// refused to [`shadow`](Decisions::shadow). An application's own rules keep what they learn in
/// [`extensions`](Decisions::extensions), so that a new rule needs no change here.
///
/// Read them with [`Decisions::get`] (or the axum extractors); rules record with [`Decisions::get_mut`].
///
/// ```
/// use http::Request;
/// use portcullis_core::Decisions;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Tenant(&'static str);
///
/// let mut req = Request::new(());
/// Decisions::get_mut(req.extensions_mut()).extensions.insert(Tenant("contoso"));
/// let d = Decisions::get(req.extensions()).unwrap();
/// assert_eq!(d.extensions.get::<Tenant>(), Some(&Tenant("contoso")));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Decisions {
    /// Who is calling, as resolved by the client-address rule.
    pub client: Option<ClientAddr>,
    /// The host pattern and endpoint the host rule matched.
    pub host: Option<MatchedHost>,
    /// Whether the request came through a private path, and which one.
    pub origin: Option<Origin>,
    /// Why each IP rule set that ran let the request through (in the order they ran).
    pub ip: Vec<IpAllowed>,
    /// What rules in shadow mode would have refused.
    pub shadow: Vec<Denial>,
    /// What applications' own rules recorded, by type.
    pub extensions: Extensions,
}

/// Why an IP rule set let a request through: the address it checked and the rule that allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowed {
    /// The address checked (the client address, or the direct peer).
    pub ip: IpAddr,
    /// The rule set's name, if it has one.
    pub rules: Option<Arc<str>>,
    /// The rule that allowed it (`allow 10.0.0.0/8`, `allow set corp`), or `default allow` when no rule
    /// matched and the set's default action is allow.
    pub rule: Arc<str>,
}

impl Decisions {
    /// The decisions of a request, if any rule recorded something.
    pub fn get(ext: &Extensions) -> Option<&Decisions> {
        ext.get::<Decisions>()
    }

    /// The decisions of a request, inserted empty if no rule recorded anything yet.
    pub fn get_mut(ext: &mut Extensions) -> &mut Decisions {
        ext.get_or_insert_default::<Decisions>()
    }

    /// The resolved client address of a request, if the client-address rule ran.
    pub fn client_of(ext: &Extensions) -> Option<&ClientAddr> {
        Decisions::get(ext).and_then(|d| d.client.as_ref())
    }

    /// Records a shadow-mode denial in a request's decisions (see [`push_shadow`](Self::push_shadow)).
    pub fn record_shadow(ext: &mut Extensions, denial: Denial) {
        Decisions::get_mut(ext).push_shadow(denial);
    }

    /// Records a shadow-mode denial: logged (as a shadow refusal) and kept in [`Decisions::shadow`].
    pub fn push_shadow(&mut self, denial: Denial) {
        denial.log(true);
        crate::telemetry::shadow_refused(&denial);
        self.shadow.push(denial);
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::LearntVia;

    #[test]
    fn recorded_once_and_read_back() {
        let mut ext = Extensions::new();
        assert!(Decisions::get(&ext).is_none());
        let d = Decisions::get_mut(&mut ext);
        d.client = Some(ClientAddr { ip: "192.0.2.1".parse().unwrap(), learnt_via: LearntVia::Peer });
        Decisions::record_shadow(
            &mut ext,
            Denial::new("test", "test.shadow", StatusCode::FORBIDDEN, "would refuse"),
        );
        let d = Decisions::get(&ext).unwrap();
        assert_eq!(d.shadow.len(), 1);
        assert_eq!(Decisions::client_of(&ext).map(|c| c.ip.to_string()).as_deref(), Some("192.0.2.1"));
        // Cloned extensions carry the decisions too: they are an ordinary extension.
        assert!(Decisions::client_of(&ext.clone()).is_some());
    }
}
