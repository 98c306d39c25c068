//! The default host names of a managed gateway's endpoints, built from a service name and a base domain.
//!
//! `contoso` + `azure-api.net` gives
//!
//! | endpoint     | default name                        |
//! |--------------|-------------------------------------|
//! | `gateway`    | `contoso.azure-api.net` (and `contoso.privatelink.azure-api.net` with private endpoints) |
//! | `portal`     | `contoso.developer.azure-api.net`   |
//! | `management` | `contoso.management.azure-api.net`  |
//! | `scm`        | `contoso.scm.azure-api.net`         |
//!
//! Custom domains are added per endpoint; [`ServiceNames::without_default`] drops an endpoint's default
//! names when its custom domains replace them.

use crate::hosts::Endpoint;

/// The endpoints of a managed gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// The API gateway (`contoso.azure-api.net`).
    Gateway,
    /// The developer portal (`contoso.developer.azure-api.net`).
    Portal,
    /// The management API (`contoso.management.azure-api.net`).
    Management,
    /// The git / source-control endpoint (`contoso.scm.azure-api.net`).
    Scm,
}

impl EndpointKind {
    /// Every endpoint, in the order above.
    pub const ALL: [EndpointKind; 4] =
        [EndpointKind::Gateway, EndpointKind::Portal, EndpointKind::Management, EndpointKind::Scm];

    /// The endpoint name recorded in [`MatchedHost::endpoint`](portcullis_core::MatchedHost):
    /// `gateway`, `portal`, `management`, `scm`.
    pub fn name(self) -> &'static str {
        match self {
            EndpointKind::Gateway => "gateway",
            EndpointKind::Portal => "portal",
            EndpointKind::Management => "management",
            EndpointKind::Scm => "scm",
        }
    }

    /// The label between the service name and the base domain (`developer`, `management`, `scm`; none for
    /// the gateway).
    pub fn label(self) -> Option<&'static str> {
        match self {
            EndpointKind::Gateway => None,
            EndpointKind::Portal => Some("developer"),
            EndpointKind::Management => Some("management"),
            EndpointKind::Scm => Some("scm"),
        }
    }
}

/// The host names of a managed gateway's endpoints.
///
/// ```
/// use portcullis_host::{EndpointKind, ServiceNames};
///
/// let names = ServiceNames::new("contoso", "azure-api.net")
///     .private_link(true)
///     .custom_domain(EndpointKind::Gateway, "api.contoso.com")
///     .custom_domain(EndpointKind::Portal, "developer.contoso.com")
///     .without_default(EndpointKind::Portal);
/// assert_eq!(
///     names.host_names(EndpointKind::Gateway),
///     ["contoso.azure-api.net", "contoso.privatelink.azure-api.net", "api.contoso.com"]
/// );
/// assert_eq!(names.host_names(EndpointKind::Portal), ["developer.contoso.com"]);
/// assert_eq!(names.host_names(EndpointKind::Scm), ["contoso.scm.azure-api.net"]);
/// let gateway = names.endpoint(EndpointKind::Gateway); // an `Endpoint` named "gateway"
/// assert_eq!(gateway.name(), "gateway");
/// ```
#[derive(Debug, Clone)]
pub struct ServiceNames {
    service: String,
    base_domain: String,
    private_link: bool,
    custom: Vec<(EndpointKind, String)>,
    without_default: Vec<EndpointKind>,
}

impl ServiceNames {
    /// The names of service `service` under `base_domain` (checked when the router is built).
    pub fn new(service: impl Into<String>, base_domain: impl Into<String>) -> Self {
        ServiceNames {
            service: service.into(),
            base_domain: base_domain.into(),
            private_link: false,
            custom: Vec::new(),
            without_default: Vec::new(),
        }
    }

    /// Whether the gateway is also reached through private endpoints, which adds
    /// `<service>.privatelink.<base domain>` to the gateway's names.
    pub fn private_link(mut self, private_link: bool) -> Self {
        self.private_link = private_link;
        self
    }

    /// Adds a custom domain (a name or a `*.` wildcard) to an endpoint.
    pub fn custom_domain(mut self, kind: EndpointKind, name: impl Into<String>) -> Self {
        self.custom.push((kind, name.into()));
        self
    }

    /// Drops the default names of an endpoint (its custom domains replace them).
    pub fn without_default(mut self, kind: EndpointKind) -> Self {
        self.without_default.push(kind);
        self
    }

    /// The default names of an endpoint, whether or not they are dropped.
    pub fn default_names(&self, kind: EndpointKind) -> Vec<String> {
        let (service, base) = (&self.service, &self.base_domain);
        match kind.label() {
            Some(label) => vec![format!("{service}.{label}.{base}")],
            None if self.private_link => {
                vec![format!("{service}.{base}"), format!("{service}.privatelink.{base}")]
            }
            None => vec![format!("{service}.{base}")],
        }
    }

    /// The names an endpoint answers on: its default names (unless dropped), then its custom domains.
    pub fn host_names(&self, kind: EndpointKind) -> Vec<String> {
        let mut names =
            if self.without_default.contains(&kind) { Vec::new() } else { self.default_names(kind) };
        names.extend(self.custom.iter().filter(|(k, _)| *k == kind).map(|(_, n)| n.clone()));
        names
    }

    /// The [`Endpoint`] of `kind`, named [`EndpointKind::name`], with its [`host_names`](Self::host_names).
    pub fn endpoint(&self, kind: EndpointKind) -> Endpoint {
        Endpoint::new(kind.name()).hosts(self.host_names(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hosts;

    #[test]
    fn default_names() {
        let names = ServiceNames::new("contoso", "azure-api.net");
        let all: Vec<_> = EndpointKind::ALL.iter().flat_map(|k| names.host_names(*k)).collect();
        assert_eq!(
            all,
            [
                "contoso.azure-api.net",
                "contoso.developer.azure-api.net",
                "contoso.management.azure-api.net",
                "contoso.scm.azure-api.net"
            ]
        );
        let hosts = EndpointKind::ALL
            .iter()
            .fold(Hosts::builder(), |b, k| b.endpoint(names.endpoint(*k)))
            .build()
            .unwrap();
        let ep = |h: &str| hosts.resolve(h.as_bytes()).unwrap().map(|r| r.endpoint().to_owned());
        assert_eq!(ep("Contoso.Management.Azure-Api.net").as_deref(), Some("management"));
        assert_eq!(ep("contoso.privatelink.azure-api.net"), None);
        // A name without endpoints: an error when built, not a silently empty endpoint.
        let dropped = ServiceNames::new("c", "example").without_default(EndpointKind::Scm);
        assert!(Hosts::builder().endpoint(dropped.endpoint(EndpointKind::Scm)).build().is_err());
    }
}
