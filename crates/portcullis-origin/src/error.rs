//! Why a configuration could not be built.

use portcullis_core::{IpRange, LinkId};

/// Why an origin configuration ([`Connections`](crate::Connections), [`PrivateNetworks`](crate::PrivateNetworks),
/// [`PublicAccessLayer`](crate::PublicAccessLayer)) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A connection, network or group name outside the allowed alphabet or length.
    #[error(
        "{what} `{name}` is not valid: use 1 to 80 ASCII letters, digits, `_`, `.` or `-`, \
         starting with a letter or digit"
    )]
    InvalidName {
        /// What the name names (`connection name`, `network name`, `group id`, `endpoint name`).
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// Two private endpoint connections with the same name.
    #[error("private endpoint connection `{0}` is configured twice")]
    DuplicateConnectionName(String),
    /// Two private endpoint connections with the same link id.
    #[error("private endpoint connections `{first}` and `{second}` have the same link id {link_id}")]
    DuplicateLinkId {
        /// The link id.
        link_id: LinkId,
        /// The connection configured first.
        first: String,
        /// The connection configured second.
        second: String,
    },
    /// More private endpoint connections than the configured maximum.
    #[error("{count} private endpoint connections are configured, more than the maximum of {max}")]
    TooManyConnections {
        /// How many were configured.
        count: usize,
        /// The maximum ([`DEFAULT_MAX_CONNECTIONS`](crate::DEFAULT_MAX_CONNECTIONS) unless changed).
        max: usize,
    },
    /// A private endpoint connection whose target list is empty: it could reach nothing.
    #[error("private endpoint connection `{0}` targets no endpoint; name at least one (default: gateway)")]
    NoTargets(String),
    /// Two private networks with the same name.
    #[error("private network `{0}` is configured twice")]
    DuplicateNetwork(String),
    /// A private network without any address range.
    #[error("private network `{0}` has no address range")]
    EmptyNetwork(String),
    /// Two networks claim the same addresses with equal specificity, so neither wins.
    #[error(
        "private networks `{first}` ({first_range}) and `{second}` ({second_range}) claim the same addresses"
    )]
    OverlappingNetworks {
        /// The network configured first.
        first: String,
        /// Its range.
        first_range: IpRange,
        /// The network configured second.
        second: String,
        /// Its range.
        second_range: IpRange,
    },
    /// The prefix table refused the ranges for another reason.
    #[error("private network ranges: {0}")]
    Table(String),
    /// An empty resource name, or one with control characters.
    #[error("resource name `{0}` is empty or holds control characters")]
    InvalidResource(String),
    /// Public network access disabled while no private path exists: every request would be refused.
    #[error(
        "public network access on '{resource}' cannot be disabled: no private network and no approved \
         private endpoint connection is configured, so every request would be refused; add a private network \
         or approve a private endpoint connection first"
    )]
    NoPrivatePath {
        /// The resource name.
        resource: String,
    },
}

/// Checks a name: 1 to 80 ASCII letters, digits, `_`, `.`, `-`, starting with a letter or digit (the
/// alphabet Azure allows for private endpoint connection names). Names end up in header values and logs,
/// so the alphabet is kept small.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=80).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(ConfigError::InvalidName { what, name: name.to_owned() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "pe-1", "Corp_VNet.2", &"x".repeat(80)] {
            assert_eq!(check_name("n", good), Ok(()), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a;b", "a=b", "é", "a\r\nx: y", &"x".repeat(81)] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
    }
}
