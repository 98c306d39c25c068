//! Private networks: named address spaces whose clients are private.
//!
//! A private network is a name (the virtual network, a peered network, on-premises ranges reached over VPN
//! or ExpressRoute) and the address ranges it covers. A request whose resolved client address
//! ([`ClientAddr`](portcullis_core::ClientAddr), from the client-address layer) falls in one is private via
//! that network; the most specific range wins when networks nest (`10.0.0.0/8` on-premises, `10.1.0.0/16`
//! the virtual network). Two networks claiming exactly the same addresses are a build error.
//!
//! ## No default
//! Nothing is private unless you say so. [`Preset`]s name the well-known private-use ranges (RFC 1918,
//! unique-local, loopback, link-local, CGNAT) for you to opt into, but none is applied implicitly, because
//! **a private address alone does not prove a private path**: a load balancer, NAT gateway or sidecar in
//! front of the service connects from a private address on behalf of public clients; a cloud provider's
//! shared address space (CGNAT `100.64.0.0/10`) carries other tenants' traffic; and a private address on
//! the far side of a peering is someone else's network. Envoy learned this the hard way and is removing its
//! "RFC 1918 means internal" default for the same reason. Name the ranges that are really yours (and that
//! really reach you without being translated), or use a preset knowingly.
//!
//! Behind a private link, the client address in the PROXY header is the consumer's, in the consumer's own
//! address space: it may overlap yours. The origin layer therefore never consults private networks for a
//! connection that carries a link id; the private endpoint connection decides alone.
//!
//! ```
//! use portcullis_origin::{Preset, PrivateNetworks};
//!
//! let networks = PrivateNetworks::builder()
//!     .network("corp-vnet", ["10.1.0.0/16".parse()?, "fd12:3456:789a::/48".parse()?])
//!     .network("on-prem", ["10.0.0.0/8".parse()?, "192.168.10.0-192.168.10.99".parse()?])
//!     .preset(Preset::Loopback)
//!     .build()?;
//! assert_eq!(networks.get("10.1.2.3".parse()?), Some("corp-vnet")); // most specific
//! assert_eq!(networks.get("10.9.0.1".parse()?), Some("on-prem"));
//! assert_eq!(networks.get("::ffff:10.1.0.1".parse()?), Some("corp-vnet")); // mapped addresses fold
//! assert_eq!(networks.get("127.0.0.1".parse()?), Some("loopback"));
//! assert_eq!(networks.get("172.16.0.1".parse()?), None); // private-use, but not declared
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use portcullis_core::{IpRange, IpTable, IpTableError};

use crate::error::{ConfigError, check_name};

/// A well-known private-use address block, to opt into with [`PrivateNetworksBuilder::preset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// RFC 1918: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`. Named `rfc1918`.
    Rfc1918,
    /// RFC 4193 unique local addresses: `fc00::/7`. Named `unique-local`.
    UniqueLocal,
    /// Loopback: `127.0.0.0/8`, `::1/128`. Named `loopback`.
    Loopback,
    /// Link-local: `169.254.0.0/16`, `fe80::/10`. Named `link-local`.
    LinkLocal,
    /// RFC 6598 shared address space (carrier-grade NAT): `100.64.0.0/10`. Named `cgnat`.
    Cgnat,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u32) -> IpRange {
    let start = u32::from_be_bytes([a, b, c, d]);
    let host = if len >= 32 { 0 } else { u32::MAX >> len };
    IpRange::V4 { start, end: start | host }
}

const fn v6(start: u128, len: u32) -> IpRange {
    let host = if len >= 128 { 0 } else { u128::MAX >> len };
    IpRange::V6 { start, end: start | host }
}

const RFC1918: [IpRange; 3] = [v4(10, 0, 0, 0, 8), v4(172, 16, 0, 0, 12), v4(192, 168, 0, 0, 16)];
const UNIQUE_LOCAL: [IpRange; 1] = [v6(0xfc00 << 112, 7)];
const LOOPBACK: [IpRange; 2] = [v4(127, 0, 0, 0, 8), v6(1, 128)];
const LINK_LOCAL: [IpRange; 2] = [v4(169, 254, 0, 0, 16), v6(0xfe80 << 112, 10)];
const CGNAT: [IpRange; 1] = [v4(100, 64, 0, 0, 10)];

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 5] =
        [Preset::Rfc1918, Preset::UniqueLocal, Preset::Loopback, Preset::LinkLocal, Preset::Cgnat];

    /// The network name the preset is registered under.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Rfc1918 => "rfc1918",
            Preset::UniqueLocal => "unique-local",
            Preset::Loopback => "loopback",
            Preset::LinkLocal => "link-local",
            Preset::Cgnat => "cgnat",
        }
    }

    /// The preset's ranges.
    pub fn ranges(self) -> &'static [IpRange] {
        match self {
            Preset::Rfc1918 => &RFC1918,
            Preset::UniqueLocal => &UNIQUE_LOCAL,
            Preset::Loopback => &LOOPBACK,
            Preset::LinkLocal => &LINK_LOCAL,
            Preset::Cgnat => &CGNAT,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One named private network, with what the origin layer hands out for it built once.
#[derive(Debug)]
pub(crate) struct Network {
    /// The name; the origin layer records `Origin::Private(PrivateVia::Network(name))` (a reference count).
    pub(crate) name: Arc<str>,
    /// The value of the origin header for the upstream.
    pub(crate) header: HeaderValue,
}

impl PartialEq for Network {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// The private networks: a prefix table from address to network. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct PrivateNetworks {
    table: Arc<IpTable<Arc<Network>>>,
    names: Arc<[(Arc<str>, Vec<IpRange>)]>,
}

impl PrivateNetworks {
    /// A builder.
    pub fn builder() -> PrivateNetworksBuilder {
        PrivateNetworksBuilder::default()
    }

    /// No private network: every client without a private endpoint connection is public.
    pub fn none() -> Self {
        PrivateNetworks::default()
    }

    /// The name of the network `ip` belongs to, if any (most specific range wins).
    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<&str> {
        self.table.get(ip).map(|n| &*n.name)
    }

    #[inline]
    pub(crate) fn lookup(&self, ip: IpAddr) -> Option<&Network> {
        self.table.get(ip).map(|n| &**n)
    }

    /// The networks and their ranges, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[IpRange])> {
        self.names.iter().map(|(n, r)| (&**n, r.as_slice()))
    }

    /// How many networks are configured.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl fmt::Debug for PrivateNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Collects networks for [`PrivateNetworks`].
#[derive(Debug, Clone, Default)]
pub struct PrivateNetworksBuilder {
    networks: Vec<(Arc<str>, Vec<IpRange>)>,
}

impl PrivateNetworksBuilder {
    /// Adds a network called `name` covering `ranges`.
    pub fn network(mut self, name: impl Into<Arc<str>>, ranges: impl IntoIterator<Item = IpRange>) -> Self {
        self.networks.push((name.into(), ranges.into_iter().collect()));
        self
    }

    /// Adds a preset under its own name ([`Preset::name`]).
    pub fn preset(self, preset: Preset) -> Self {
        self.network(preset.name(), preset.ranges().iter().copied())
    }

    /// Builds the table.
    ///
    /// # Errors
    /// [`ConfigError::InvalidName`], [`ConfigError::DuplicateNetwork`], [`ConfigError::EmptyNetwork`], and
    /// [`ConfigError::OverlappingNetworks`] when two networks claim the same addresses equally specifically.
    pub fn build(self) -> Result<PrivateNetworks, ConfigError> {
        let mut table = IpTable::builder();
        // Rule index -> (network index, range), to name both sides of a conflict.
        let mut rules: Vec<(usize, IpRange)> = Vec::new();
        for (i, (name, ranges)) in self.networks.iter().enumerate() {
            check_name("network name", name)?;
            if self.networks[..i].iter().any(|(n, _)| n == name) {
                return Err(ConfigError::DuplicateNetwork(name.to_string()));
            }
            if ranges.is_empty() {
                return Err(ConfigError::EmptyNetwork(name.to_string()));
            }
            let header = HeaderValue::try_from(format!("private; network={name}"))
                .map_err(|_| ConfigError::InvalidName { what: "network name", name: name.to_string() })?;
            let network = Arc::new(Network { name: name.clone(), header });
            for range in ranges {
                table.insert(*range, network.clone());
                rules.push((i, *range));
            }
        }
        let name_of = |rule: usize| self.networks[rules[rule].0].0.to_string();
        let table = table.build().map_err(|e| match e {
            IpTableError::Conflict { range, first, second } => ConfigError::OverlappingNetworks {
                first: name_of(first),
                first_range: range,
                second: name_of(second),
                second_range: range,
            },
            IpTableError::Ambiguous { first, first_range, second, second_range } => {
                ConfigError::OverlappingNetworks {
                    first: name_of(first),
                    first_range,
                    second: name_of(second),
                    second_range,
                }
            }
            other => ConfigError::Table(other.to_string()),
        })?;
        Ok(PrivateNetworks { table: Arc::new(table), names: self.networks.into() })
    }
}

#[cfg(test)]
mod tests;
