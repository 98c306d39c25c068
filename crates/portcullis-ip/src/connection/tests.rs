use std::net::SocketAddr;

use portcullis_core::{ConnInfo, ProxyInfo, ProxyVersion};

use super::*;
use crate::rules::IpRules;

fn rules() -> IpRules {
    IpRules::builder(Action::Deny).allow("127.0.0.1").allow("198.51.100.0/24").build().unwrap()
}

#[test]
fn admit_counts_and_folds() {
    let filter = ConnectionFilter::new(rules());
    assert!(filter.admit("127.0.0.1".parse().unwrap()));
    assert!(filter.admit("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!filter.admit("127.0.0.2".parse().unwrap()));
    assert!(!filter.admit("::ffff:127.0.0.2".parse().unwrap()));
    let stats = filter.clone().stats();
    assert_eq!((stats.admitted(), stats.dropped(), stats.would_drop()), (2, 2, 0));
}

#[test]
fn shadow_mode_admits_and_counts_what_it_would_drop() {
    let filter = ConnectionFilter::new(rules()).shadow();
    assert!(filter.admit("127.0.0.2".parse().unwrap()));
    assert!(filter.admit("127.0.0.1".parse().unwrap()));
    let stats = filter.stats();
    assert_eq!((stats.admitted(), stats.dropped(), stats.would_drop()), (2, 0, 1));
}

struct Proxied(Option<SocketAddr>);

impl ConnectionFacts for Proxied {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
        let info = ConnInfo::new(remote, None);
        match self.0 {
            Some(src) => info.with_proxy(ProxyInfo::new(ProxyVersion::V2, Some(src), None)),
            None => info.with_proxy(ProxyInfo::new(ProxyVersion::V2, None, None)),
        }
    }
}

#[test]
fn the_proxy_source_is_filtered_when_the_stream_has_one() {
    let filter = ConnectionFilter::new(rules());
    let lb: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    // The load balancer is allowed, the client behind it is not: dropped.
    assert!(!filter.admit_conn(&Proxied(Some("203.0.113.1:4000".parse().unwrap())), lb));
    assert!(filter.admit_conn(&Proxied(Some("198.51.100.9:4000".parse().unwrap())), lb));
    // A LOCAL header (health check, no source) is decided on the peer.
    assert!(filter.admit_conn(&Proxied(None), lb));
    assert!(!filter.admit_conn(&Proxied(None), "127.0.0.3:1".parse().unwrap()));
}

#[test]
fn stored_rules_apply_to_the_next_connection() {
    let handle = IpRulesHandle::new(rules());
    let filter = ConnectionFilter::new(handle.clone());
    assert!(!filter.admit("127.0.0.2".parse().unwrap()));
    handle.store(IpRules::uniform(Action::Allow));
    assert!(filter.admit("127.0.0.2".parse().unwrap()));
}
