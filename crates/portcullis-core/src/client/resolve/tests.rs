use super::*;
use crate::proxy::{ProxyInfo, ProxyVersion};
use http::HeaderValue;
use proptest::prelude::*;

fn cfg(source: ForwardedSource) -> ClientAddrConfig {
    ClientAddrConfig::new()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap(), "2001:db8:ffff::/48".parse().unwrap()])
        .unwrap()
        .source(source)
}

fn ext(peer: &str) -> Extensions {
    let mut e = Extensions::new();
    e.insert(ConnInfo::new(peer.parse().unwrap(), None));
    e
}

fn headers(name: &'static str, lines: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for l in lines {
        h.append(name, HeaderValue::from_str(l).unwrap());
    }
    h
}

fn resolve(
    c: &ClientAddrConfig,
    peer: &str,
    name: &'static str,
    lines: &[&str],
) -> Result<ClientAddr, ResolveError> {
    c.resolve(&ext(peer), &headers(name, lines))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const XFF: &str = "x-forwarded-for";

#[test]
fn untrusted_peer_headers_are_ignored() {
    let c = cfg(ForwardedSource::XForwardedFor);
    let a = resolve(&c, "203.0.113.5:1234", XFF, &["10.0.0.1"]).unwrap();
    assert_eq!(a, ClientAddr { ip: ip("203.0.113.5"), learnt_via: LearntVia::Peer });
    // Even garbage is not read from an untrusted peer: it is not our business.
    assert!(resolve(&c, "203.0.113.5:1234", XFF, &["garbage"]).is_ok());
}

#[test]
fn walk_right_to_left_skipping_trusted() {
    let c = cfg(ForwardedSource::XForwardedFor);
    let a = resolve(&c, "10.0.0.2:1", XFF, &["1.1.1.1, 198.51.100.7, 10.9.9.9"]).unwrap();
    assert_eq!(a.ip, ip("198.51.100.7"), "the leftmost entry is client-controlled and never chosen");
    assert_eq!(
        a.learnt_via,
        LearntVia::Forwarded { header: ForwardedHeader::XForwardedFor, trusted_hops: 2 }
    );
    // Every hop trusted: the leftmost.
    let a = resolve(&c, "10.0.0.2:1", XFF, &["10.1.1.1, 10.2.2.2"]).unwrap();
    assert_eq!(a.ip, ip("10.1.1.1"));
    // No header from a trusted peer: the peer itself.
    let a = c.resolve(&ext("10.0.0.2:1"), &HeaderMap::new()).unwrap();
    assert_eq!(a, ClientAddr { ip: ip("10.0.0.2"), learnt_via: LearntVia::Peer });
}

#[test]
fn several_lines_are_joined_in_order() {
    let c = cfg(ForwardedSource::XForwardedFor);
    let a = resolve(&c, "10.0.0.2:1", XFF, &["198.51.100.1, 198.51.100.2", "10.3.3.3"]).unwrap();
    assert_eq!(a.ip, ip("198.51.100.2"));
    let a = resolve(&c, "10.0.0.2:1", XFF, &["198.51.100.1", "10.3.3.3, 10.4.4.4"]).unwrap();
    assert_eq!(a.ip, ip("198.51.100.1"));
}

#[test]
fn ports_brackets_and_mapped_addresses() {
    let c = cfg(ForwardedSource::XForwardedFor);
    assert_eq!(resolve(&c, "10.0.0.2:1", XFF, &["1.2.3.4:5678"]).unwrap().ip, ip("1.2.3.4"));
    assert_eq!(resolve(&c, "10.0.0.2:1", XFF, &["[2001:db8::1]:443"]).unwrap().ip, ip("2001:db8::1"));
    // A mapped client is folded to IPv4 ...
    assert_eq!(resolve(&c, "10.0.0.2:1", XFF, &["::ffff:192.0.2.9"]).unwrap().ip, ip("192.0.2.9"));
    // ... and a mapped trusted proxy is still trusted, so it cannot be used to pose as the client.
    let a = resolve(&c, "10.0.0.2:1", XFF, &["192.0.2.9, ::ffff:10.7.7.7"]).unwrap();
    assert_eq!(a.ip, ip("192.0.2.9"));
    // A mapped peer is the same peer.
    let a = resolve(&c, "[::ffff:10.0.0.2]:1", XFF, &["192.0.2.9"]).unwrap();
    assert_eq!(a.ip, ip("192.0.2.9"));
    // An IPv6 trusted range works the same.
    let a = resolve(&c, "[2001:db8:ffff::2]:1", XFF, &["2001:db8:1::5, 2001:db8:ffff::9"]).unwrap();
    assert_eq!(a.ip, ip("2001:db8:1::5"));
}

#[test]
fn garbage_stops_the_walk_with_a_typed_error() {
    let c = cfg(ForwardedSource::XForwardedFor);
    for (line, want) in [
        ("1.2.3.4, nonsense", EntryError::Garbage),
        ("1.2.3.4, unknown", EntryError::Unknown),
        ("1.2.3.4, _hidden", EntryError::Obfuscated),
        ("1.2.3.4,", EntryError::Empty),
        ("1.2.3.4, fe80::1%eth0", EntryError::Garbage),
        ("1.2.3.4, 010.0.0.1", EntryError::Garbage),
    ] {
        match resolve(&c, "10.0.0.2:1", XFF, &[line]) {
            Err(ResolveError::BadEntry { error, position: 1, .. }) => assert_eq!(error, want, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
    // Garbage to the left of the client is never read.
    assert_eq!(resolve(&c, "10.0.0.2:1", XFF, &["nonsense, 198.51.100.3"]).unwrap().ip, ip("198.51.100.3"));
    // Garbage behind a trusted hop is reached and refused.
    assert!(resolve(&c, "10.0.0.2:1", XFF, &["nonsense, 10.1.1.1"]).is_err());
}

#[test]
fn walk_longer_than_the_cap_is_refused() {
    let c = cfg(ForwardedSource::XForwardedFor).max_entries(3);
    let line = "10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4";
    assert!(matches!(
        resolve(&c, "10.0.0.2:1", XFF, &[line]),
        Err(ResolveError::TooManyEntries { cap: 3, .. })
    ));
    // A short walk in a long header is fine: the cap bounds the work done, not the header.
    let line = "10.0.0.1, 10.0.0.2, 10.0.0.3, 198.51.100.1";
    assert_eq!(resolve(&c, "10.0.0.2:1", XFF, &[line]).unwrap().ip, ip("198.51.100.1"));
}

#[test]
fn fixed_hops() {
    let c = cfg(ForwardedSource::XForwardedFor).fixed_hops(2);
    let a = resolve(&c, "10.0.0.2:1", XFF, &["1.1.1.1, 198.51.100.7, 203.0.113.1"]).unwrap();
    assert_eq!(a.ip, ip("198.51.100.7"));
    assert_eq!(
        a.learnt_via,
        LearntVia::Forwarded { header: ForwardedHeader::XForwardedFor, trusted_hops: 2 }
    );
    assert!(matches!(
        resolve(&c, "10.0.0.2:1", XFF, &["203.0.113.1"]),
        Err(ResolveError::NotEnoughHops { expected: 2, found: 1, .. })
    ));
    // Still gated on a trusted peer.
    let a = resolve(&c, "203.0.113.200:1", XFF, &["1.1.1.1, 198.51.100.7"]).unwrap();
    assert_eq!(a.ip, ip("203.0.113.200"));
}

#[test]
fn only_the_configured_header_is_read() {
    let xff = cfg(ForwardedSource::XForwardedFor);
    let a = resolve(&xff, "10.0.0.2:1", "forwarded", &["for=198.51.100.1"]).unwrap();
    assert_eq!(a.ip, ip("10.0.0.2"));
    let fwd = cfg(ForwardedSource::Forwarded);
    let a = resolve(&fwd, "10.0.0.2:1", XFF, &["198.51.100.1"]).unwrap();
    assert_eq!(a.ip, ip("10.0.0.2"));
    let none = cfg(ForwardedSource::None);
    let a = resolve(&none, "10.0.0.2:1", XFF, &["198.51.100.1"]).unwrap();
    assert_eq!(a, ClientAddr { ip: ip("10.0.0.2"), learnt_via: LearntVia::Peer });
}

#[test]
fn rfc7239_forwarded() {
    let c = cfg(ForwardedSource::Forwarded);
    let f = "forwarded";
    let a = resolve(&c, "10.0.0.2:1", f, &[r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711""#])
        .unwrap();
    assert_eq!(a.ip, ip("2001:db8:cafe::17"));
    assert_eq!(a.learnt_via, LearntVia::Forwarded { header: ForwardedHeader::Forwarded, trusted_hops: 1 });
    let a = resolve(&c, "10.0.0.2:1", f, &["for=198.51.100.1", r#"For="10.1.1.1:80";by=10.0.0.2"#]).unwrap();
    assert_eq!(a.ip, ip("198.51.100.1"));
    assert!(matches!(
        resolve(&c, "10.0.0.2:1", f, &["for=198.51.100.1, by=10.1.1.1"]),
        Err(ResolveError::BadEntry { error: EntryError::Unknown, .. })
    ));
    assert!(matches!(resolve(&c, "10.0.0.2:1", f, &["for=_hidden"]), Err(ResolveError::BadEntry { .. })));
    assert!(matches!(resolve(&c, "10.0.0.2:1", f, &["for=unknown"]), Err(ResolveError::BadEntry { .. })));
    assert!(matches!(resolve(&c, "10.0.0.2:1", f, &["for=1.2.3.4 ;"]), Err(ResolveError::Syntax(_))));
    assert!(matches!(resolve(&c, "10.0.0.2:1", f, &["for=2001:db8::1"]), Err(ResolveError::Syntax(_))));
    assert!(matches!(
        resolve(&c, "10.0.0.2:1", f, &[r#"for="\1.2.3.4""#]),
        Err(ResolveError::BadEntry { .. })
    ));
    let many = vec!["for=10.1.1.1"; 70].join(", ");
    assert!(matches!(resolve(&c, "10.0.0.2:1", f, &[&many]), Err(ResolveError::TooManyEntries { .. })));
}

#[test]
fn proxy_protocol_source_is_the_peer() {
    let c = cfg(ForwardedSource::XForwardedFor);
    let mut e = Extensions::new();
    let proxy = ProxyInfo::new(ProxyVersion::V2, Some("198.51.100.44:5555".parse().unwrap()), None);
    e.insert(ConnInfo::new("10.0.0.2:1".parse().unwrap(), None).with_proxy(proxy));
    let h = headers(XFF, &["1.1.1.1"]);
    let a = c.resolve(&e, &h).unwrap();
    assert_eq!(a, ClientAddr { ip: ip("198.51.100.44"), learnt_via: LearntVia::ProxyProtocol });
}

#[test]
fn missing_connection_info_fails_closed() {
    let c = cfg(ForwardedSource::XForwardedFor);
    let err = c.resolve(&Extensions::new(), &headers(XFF, &["1.1.1.1"])).unwrap_err();
    assert_eq!(err, ResolveError::NoConnInfo);
    let d = err.to_denial();
    assert_eq!(d.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(d.detail().contains("into_make_service_with_connect_info"));
}

#[cfg(feature = "axum")]
#[test]
fn axum_connect_info_socket_addr_is_understood() {
    let c = cfg(ForwardedSource::XForwardedFor);
    let mut e = Extensions::new();
    e.insert(axum::extract::ConnectInfo("[::ffff:10.0.0.2]:9".parse::<std::net::SocketAddr>().unwrap()));
    let a = c.resolve(&e, &headers(XFF, &["198.51.100.8"])).unwrap();
    assert_eq!(a.ip, ip("198.51.100.8"));
}

#[test]
fn non_ascii_header_is_refused() {
    let c = cfg(ForwardedSource::XForwardedFor);
    let mut h = HeaderMap::new();
    h.append(XFF, HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap());
    assert!(matches!(c.resolve(&ext("10.0.0.2:1"), &h), Err(ResolveError::NotAscii(_))));
}

proptest! {
    /// Whatever chain a client sends, the resolved address is the rightmost untrusted entry, or the
    /// leftmost when all are trusted; never a trusted proxy while an untrusted entry stands to its right.
    #[test]
    fn walk_matches_the_reference(chain in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<bool>()), 1..12)) {
        let c = cfg(ForwardedSource::XForwardedFor);
        let entries: Vec<(String, IpAddr)> = chain.iter().map(|(trusted, n, port)| {
            let a: IpAddr = if *trusted { format!("10.0.0.{n}") } else { format!("198.51.100.{n}") }.parse().unwrap();
            let text = if *port { format!("{a}:{}", 1000 + u16::from(*n)) } else { a.to_string() };
            (text, a)
        }).collect();
        let line = entries.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(", ");
        let got = resolve(&c, "10.0.0.2:1", XFF, &[&line]).unwrap();
        let want = entries.iter().rev().map(|(_, a)| *a).find(|a| !c.is_trusted(*a)).unwrap_or(entries[0].1);
        prop_assert_eq!(got.ip, want);
    }
}

#[cfg(feature = "tonic")]
#[test]
fn tonic_connect_info_is_understood() {
    use tonic::transport::server::TcpConnectInfo;
    let c = cfg(ForwardedSource::XForwardedFor);
    let mut e = Extensions::new();
    e.insert(TcpConnectInfo {
        local_addr: Some("127.0.0.1:50051".parse().unwrap()),
        remote_addr: Some("10.0.0.2:40000".parse().unwrap()),
    });
    let a = c.resolve(&e, &headers(XFF, &["198.51.100.11"])).unwrap();
    assert_eq!(a.ip, ip("198.51.100.11"));
    // tonic without a remote address (a non-TCP transport): fail closed.
    let mut e = Extensions::new();
    e.insert(TcpConnectInfo { local_addr: None, remote_addr: None });
    assert_eq!(c.resolve(&e, &HeaderMap::new()), Err(ResolveError::NoConnInfo));
}

#[test]
fn a_repeated_for_in_one_element_is_refused() {
    let c = cfg(ForwardedSource::Forwarded);
    let r = resolve(&c, "10.0.0.2:1", "forwarded", &["for=198.51.100.1;for=10.1.1.1"]);
    assert_eq!(r, Err(ResolveError::DuplicateFor));
}

#[test]
fn private_link_consumers_cannot_forward_addresses() {
    use crate::proxy::LinkId;
    // The consumer's source lies in a trusted-proxy range of ours, but in its own address space.
    let c = cfg(ForwardedSource::XForwardedFor);
    let mut proxy = ProxyInfo::new(ProxyVersion::V2, Some("10.0.9.5:40000".parse().unwrap()), None);
    proxy.link_id = Some(LinkId::Azure(7));
    let mut e = Extensions::new();
    e.insert(ConnInfo::new("10.200.0.1:1".parse().unwrap(), None).with_proxy(proxy));
    let a = c.resolve(&e, &headers(XFF, &["203.0.113.50"])).unwrap();
    assert_eq!(a, ClientAddr { ip: ip("10.0.9.5"), learnt_via: LearntVia::ProxyProtocol });
}
