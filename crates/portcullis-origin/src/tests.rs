//! Layer tests over `oneshot` (the loopback tests are in `tests/`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_core::{
    ClientAddrConfig, ConnInfo, Decisions, Denial, LinkId, MatchedHost, Origin, PrivateVia, ProxyInfo,
    ProxyVersion, ResolveClientAddrLayer, Responder,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::*;

const RESOURCE: &str = "Microsoft.ApiManagement/service/my-apim-service";

/// What the application saw.
#[derive(Debug, Clone)]
struct Seen {
    decisions: Decisions,
    headers: HeaderMap,
}

struct Answer {
    status: StatusCode,
    seen: Option<Seen>,
    denial: Option<Denial>,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn origin(&self) -> Option<Origin> {
        self.seen.as_ref().and_then(|s| s.decisions.origin.clone())
    }

    fn code(&self) -> Option<&'static str> {
        self.denial.as_ref().map(Denial::code)
    }

    fn problem(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn policy() -> OriginPolicy {
    OriginPolicy::new(
        PrivateNetworks::builder()
            .network("corp-vnet", ["10.1.0.0/16".parse().unwrap(), "fd00:1::/64".parse().unwrap()])
            .build()
            .unwrap(),
        Connections::builder()
            .connection(Connection::approved("pe-azure", LinkId::Azure(0x2200_0011)))
            .connection(
                Connection::approved("pe-aws", LinkId::Aws("vpce-0123456789abcdef0".into()))
                    .with_group_id("gw"),
            )
            .connection(
                Connection::approved("psc-gcp", LinkId::Gcp(0x0102_0304_0506_0708))
                    .with_targets(Targets::Any),
            )
            .connection(Connection::pending("pe-pending", LinkId::Azure(1)))
            .connection(Connection::rejected("pe-rejected", LinkId::Aws("vpce-rejected".into())))
            .connection(
                Connection::approved("pe-mgmt", LinkId::Azure(2))
                    .with_targets(Targets::endpoints(["gateway", "management"])),
            )
            .build()
            .unwrap(),
    )
}

/// client-addr → origin → public access → an app that reports what it saw.
async fn send(origin: OriginLayer, access: PublicAccessLayer, req: Request<()>) -> Answer {
    let svc = ServiceBuilder::new()
        .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
        .layer(origin)
        .layer(access)
        .service(service_fn(|req: Request<()>| async move {
            let seen = Seen {
                decisions: Decisions::get(req.extensions()).cloned().unwrap_or_default(),
                headers: req.headers().clone(),
            };
            let mut res = Response::new(Full::new(Bytes::from_static(b"app")));
            res.extensions_mut().insert(seen);
            Ok::<_, Infallible>(res)
        }));
    into_answer(svc.oneshot(req).await.unwrap()).await
}

async fn into_answer<B>(res: Response<B>) -> Answer
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let status = res.status();
    let seen = res.extensions().get::<Seen>().cloned();
    let denial = res.extensions().get::<Denial>().cloned();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer { status, seen, denial, headers, body }
}

fn disabled() -> PublicAccessLayer {
    PublicAccessLayer::disabled(RESOURCE, &policy()).unwrap()
}

fn direct(peer: &str) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(ConnInfo::new(peer.parse().unwrap(), None));
    req
}

/// A request for the gateway endpoint over a connection through a trusted load balancer whose PROXY header
/// carries `link`.
fn over_link(source: &str, link: Option<LinkId>) -> Request<()> {
    for_endpoint(over_link_without_host(source, link), "gateway")
}

/// As [`over_link`], without a host decision (no host router in front).
fn over_link_without_host(source: &str, link: Option<LinkId>) -> Request<()> {
    let mut proxy = ProxyInfo::new(ProxyVersion::V2, Some(source.parse().unwrap()), None);
    proxy.link_id = link;
    let mut req = Request::new(());
    req.extensions_mut().insert(ConnInfo::new("10.0.0.4:50000".parse().unwrap(), None).with_proxy(proxy));
    req
}

fn exact_message(ip: &str) -> String {
    format!(
        "Request originated from client public IP address {ip}, public network access on this \
         'Microsoft.ApiManagement/service/my-apim-service' is disabled. To connect to \
         'Microsoft.ApiManagement/service/my-apim-service', please use the Private Endpoint from inside your \
         virtual network."
    )
}

// === private callers ===

#[tokio::test]
async fn network_callers_are_private_via_their_network() {
    for peer in ["10.1.2.3:1000", "[fd00:1::9]:1000", "[::ffff:10.1.0.1]:1000"] {
        let a = send(OriginLayer::new(policy()), disabled(), direct(peer)).await;
        assert_eq!(a.status, StatusCode::OK, "{peer}");
        assert_eq!(a.origin(), Some(Origin::Private(PrivateVia::Network("corp-vnet".into()))), "{peer}");
    }
}

#[tokio::test]
async fn approved_connections_of_every_vendor_are_private_via_the_connection() {
    let cases = [
        (LinkId::Azure(0x2200_0011), "pe-azure", "Gateway"),
        (LinkId::Aws("vpce-0123456789abcdef0".into()), "pe-aws", "gw"),
        (LinkId::Gcp(0x0102_0304_0506_0708), "psc-gcp", "Gateway"),
    ];
    for (link, name, group) in cases {
        let a =
            send(OriginLayer::new(policy()), disabled(), over_link("198.51.100.9:3000", Some(link.clone())))
                .await;
        assert_eq!(a.status, StatusCode::OK, "{name}");
        let origin = a.origin().unwrap();
        let pe = origin.private_endpoint().expect("over a connection");
        assert_eq!((&*pe.name, &*pe.group_id, &pe.link_id), (name, group, &link));
    }
}

// === refused connections ===

#[tokio::test]
async fn pending_and_rejected_connections_are_refused_naming_them() {
    let cases = [
        (LinkId::Azure(1), "pe-pending", "Pending", "origin.connection-pending"),
        (LinkId::Aws("vpce-rejected".into()), "pe-rejected", "Rejected", "origin.connection-rejected"),
    ];
    for (link, name, state, code) in cases {
        // Public access enabled, and a source inside the private network: still refused.
        let a = send(
            OriginLayer::new(policy()),
            PublicAccessLayer::enabled(),
            over_link("10.1.2.3:3000", Some(link)),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{name}");
        assert!(a.seen.is_none(), "the application never ran");
        assert_eq!(a.code(), Some(code));
        let detail = a.problem()["detail"].as_str().unwrap().to_owned();
        assert_eq!(
            detail,
            format!("private endpoint connection '{name}' is {state}: only Approved connections are served")
        );
        let reason = a.denial.as_ref().unwrap().reason::<OriginRefusal>().unwrap();
        assert!(matches!(reason, OriginRefusal::NotApproved { name: n, .. } if &**n == name));
    }
}

#[tokio::test]
async fn unknown_links_are_refused_or_public_as_configured() {
    let unknown = || over_link("10.1.2.3:3000", Some(LinkId::Azure(999)));
    let a = send(OriginLayer::new(policy()), PublicAccessLayer::enabled(), unknown()).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), Some("origin.unknown-link"));
    assert_eq!(a.denial.unwrap().refused(), Some("azure:999"));

    // Treated as public: never as the private network its (consumer-side) source address falls in.
    let layer = || OriginLayer::new(policy().unknown_link(UnknownLink::Public));
    let a = send(layer(), PublicAccessLayer::enabled(), unknown()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.origin(), Some(Origin::Public));
    let a = send(layer(), disabled(), unknown()).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), Some("public-access.disabled"));
}

#[tokio::test]
async fn a_link_id_decides_alone() {
    // The approved connection wins over a public source address.
    let a = send(
        OriginLayer::new(policy()),
        disabled(),
        over_link("192.0.2.1:1", Some(LinkId::Azure(0x2200_0011))),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.origin().unwrap().private_endpoint().is_some());
    // No link id: the PROXY source is the client, looked up in the networks.
    let a = send(OriginLayer::new(policy()), disabled(), over_link("10.1.9.9:1", None)).await;
    assert_eq!(a.origin(), Some(Origin::Private(PrivateVia::Network("corp-vnet".into()))));
    let a = send(OriginLayer::new(policy()), disabled(), over_link("192.0.2.1:1", None)).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("public-access.disabled")));
    // The load balancer's own (private-network) address does not make a PROXY-fronted client private.
    let mut req = over_link("192.0.2.1:1", None);
    let mut conn = req.extensions_mut().remove::<ConnInfo>().unwrap();
    conn.peer = "10.1.0.4:9".parse().unwrap();
    req.extensions_mut().insert(conn);
    let a = send(OriginLayer::new(policy()), disabled(), req).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

fn for_endpoint(mut req: Request<()>, endpoint: &str) -> Request<()> {
    Decisions::get_mut(req.extensions_mut()).host = Some(MatchedHost {
        host: "h.example".into(),
        pattern: "h.example".into(),
        endpoint: endpoint.into(),
        endpoint_id: 0,
    });
    req
}

#[tokio::test]
async fn connections_reach_only_their_targets() {
    let send_for = |link: LinkId, endpoint: Option<&'static str>| async move {
        let req = over_link_without_host("192.0.2.1:1", Some(link));
        let req = match endpoint {
            Some(e) => for_endpoint(req, e),
            None => req,
        };
        send(OriginLayer::new(policy()), disabled(), req).await
    };
    let azure = || LinkId::Azure(0x2200_0011);
    assert_eq!(send_for(azure(), Some("gateway")).await.status, StatusCode::OK);
    // Default targets: the gateway only.
    for other in ["portal", "management", "scm", "Gateway"] {
        let a = send_for(azure(), Some(other)).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::FORBIDDEN, Some("origin.endpoint-not-targeted")),
            "{other}"
        );
        assert_eq!(
            a.problem()["detail"],
            format!(
                "private endpoint connection 'pe-azure' may not reach endpoint '{other}' (it targets gateway)"
            )
        );
    }
    assert_eq!(send_for(LinkId::Azure(2), Some("management")).await.status, StatusCode::OK);
    assert_eq!(send_for(LinkId::Azure(2), Some("portal")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send_for(LinkId::Gcp(0x0102_0304_0506_0708), Some("scm")).await.status, StatusCode::OK);
    // Without host routing nothing says which endpoint this is: a connection limited to some endpoints is
    // refused (fail closed, a wiring error naming the fix)...
    let a = send_for(azure(), None).await;
    assert_eq!((a.status, a.code()), (StatusCode::INTERNAL_SERVER_ERROR, Some("origin.no-endpoint")));
    // Network callers are not restricted by connection targets.
    let a = send(OriginLayer::new(policy()), disabled(), for_endpoint(direct("10.1.0.1:1"), "scm")).await;
    assert_eq!(a.status, StatusCode::OK);
}

// === spoofed origin headers ===

#[tokio::test]
async fn spoofed_origin_headers_are_stripped_before_anything_reads_them() {
    let spoofed = |peer: &str| {
        let mut req = direct(peer);
        let h = req.headers_mut();
        h.append("x-portcullis-origin", "private; network=corp-vnet".parse().unwrap());
        h.append("X-Portcullis-Origin", "private; connection=pe-azure; group-id=Gateway".parse().unwrap());
        h.append("x_portcullis_origin", "private".parse().unwrap());
        h.append("x-internal", "true".parse().unwrap());
        h.append("x_internal", "true".parse().unwrap());
        req
    };
    // The header is no evidence: a public client stays public, and is refused.
    let a = send(OriginLayer::new(policy()), disabled(), spoofed("192.0.2.12:1")).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("public-access.disabled")));

    // Served (public access enabled): the application sees none of the client's copies.
    let layer = || OriginLayer::new(policy()).strip_header(http::HeaderName::from_static("x-internal"));
    let a = send(layer(), PublicAccessLayer::enabled(), spoofed("192.0.2.12:1")).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = a.seen.unwrap().headers;
    for name in ["x-portcullis-origin", "x_portcullis_origin", "x-internal", "x_internal"] {
        assert!(!seen.contains_key(name), "{name} reached the application");
    }

    // Forwarding on: exactly our value, once.
    let cases = [("192.0.2.12:1", "public"), ("10.1.0.1:1", "private; network=corp-vnet")];
    for (peer, want) in cases {
        let a = send(layer().forward_header(true), PublicAccessLayer::enabled(), spoofed(peer)).await;
        let seen = a.seen.unwrap().headers;
        let values: Vec<_> = seen.get_all(ORIGIN_HEADER).iter().collect();
        assert_eq!(values, [want], "{peer}");
        assert!(!seen.contains_key("x_portcullis_origin"));
    }
    let mut req = over_link("192.0.2.1:1", Some(LinkId::Aws("vpce-0123456789abcdef0".into())));
    req.headers_mut().insert("x-portcullis-origin", "public".parse().unwrap());
    let a = send(layer().forward_header(true), disabled(), req).await;
    let values: Vec<_> = a.seen.unwrap().headers.get_all(ORIGIN_HEADER).iter().cloned().collect();
    assert_eq!(values, ["private; connection=pe-aws; group-id=gw"]);
}

/// In a list of rules after the client-address rule, the client's copies of the origin header are
/// removed, whatever their spelling or position, and nothing else is.
#[test]
fn stripping_in_a_list_of_rules_misses_nothing() {
    use portcullis_core::{ForwardedSource, Rule, Rules};
    use std::sync::Arc;
    let client = ClientAddrConfig::new()
        .trusted_proxies(["10.9.0.0/16".parse().unwrap()])
        .unwrap()
        .source(ForwardedSource::XForwardedFor);
    let origin = OriginLayer::new(policy()).strip_header(http::HeaderName::from_static("x-internal"));
    let gates = Rules::new([Arc::new(client) as Arc<dyn Rule>, origin.rule().clone()]);
    for spoofed in
        ["x-portcullis-origin", "X-Portcullis-Origin", "x_portcullis_origin", "x-internal", "x_internal"]
    {
        let mut req = Request::builder()
            .header("x-forwarded-for", "10.1.0.1")
            .header("accept", "*/*")
            .header(spoofed, "private")
            .header("x-keep-me-please-1", "kept") // same length as x-portcullis-origin
            .body(())
            .unwrap();
        req.extensions_mut().insert(ConnInfo::new("10.9.0.1:4000".parse().unwrap(), None));
        let (mut head, ()) = req.into_parts();
        gates.check(&mut head).expect("a private client is served");
        assert!(!head.headers.contains_key(spoofed), "{spoofed} survived");
        assert_eq!(head.headers["x-keep-me-please-1"], "kept");
        assert_eq!(head.headers.len(), 3, "{spoofed}");
        let d = Decisions::get(&head.extensions).unwrap();
        assert_eq!(d.origin.as_ref().and_then(Origin::network), Some("corp-vnet"));
    }
}

// === the public-access 403 ===

#[tokio::test]
async fn public_callers_get_azures_403_word_for_word() {
    for (peer, ip) in [
        ("192.0.2.12:1", "192.0.2.12"),
        ("[2001:db8::12]:1", "2001:db8::12"),
        ("[::ffff:203.0.113.5]:1", "203.0.113.5"),
    ] {
        let a = send(OriginLayer::new(policy()), disabled(), direct(peer)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{peer}");
        assert!(a.seen.is_none());
        assert_eq!(a.headers["content-type"], "application/problem+json");
        let problem = a.problem();
        assert_eq!(problem["detail"].as_str().unwrap(), exact_message(ip));
        assert_eq!(problem["status"], 403);
        assert_eq!(problem["type"], "urn:portcullis:denial:public-access.disabled");
        assert_eq!(problem["layer"], "public-access");
        assert_eq!(problem["refused"], ip);
        let denial = a.denial.unwrap();
        assert_eq!(
            denial.reason::<PublicAccessRefusal>(),
            Some(&PublicAccessRefusal::Disabled { ip: ip.parse().unwrap(), resource: RESOURCE.into() })
        );
    }
    // The example, literally.
    assert_eq!(
        PublicAccessRefusal::Disabled { ip: "192.0.2.12".parse().unwrap(), resource: RESOURCE.into() }
            .to_string(),
        "Request originated from client public IP address 192.0.2.12, public network access on this \
         'Microsoft.ApiManagement/service/my-apim-service' is disabled. To connect to \
         'Microsoft.ApiManagement/service/my-apim-service', please use the Private Endpoint from inside your \
         virtual network."
    );
}

#[tokio::test]
async fn public_access_enabled_serves_public_callers() {
    let a = send(OriginLayer::new(policy()), PublicAccessLayer::enabled(), direct("192.0.2.12:1")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.origin(), Some(Origin::Public));
    let layer =
        PublicAccessLayer::new(PublicNetworkAccess::Enabled, RESOURCE, &OriginPolicy::default()).unwrap();
    assert_eq!(layer.access(), PublicNetworkAccess::Enabled);
    let a = send(OriginLayer::new(OriginPolicy::default()), layer, direct("10.1.0.1:1")).await;
    assert_eq!((a.status, a.origin()), (StatusCode::OK, Some(Origin::Public)));
}

#[tokio::test]
async fn the_response_is_replaceable() {
    let responder = Responder::new(|d: &Denial| {
        let mut res = Response::new(Full::new(Bytes::from(format!("<h1>{}</h1>", d.detail()))));
        *res.status_mut() = d.status();
        res.headers_mut().insert("content-type", "text/html".parse().unwrap());
        res
    });
    let a = send(OriginLayer::new(policy()), disabled().responder(responder.clone()), direct("192.0.2.12:1"))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.headers["content-type"], "text/html");
    assert_eq!(a.body, format!("<h1>{}</h1>", exact_message("192.0.2.12")));
    assert_eq!(a.code(), Some("public-access.disabled"));
    let a = send(
        OriginLayer::new(policy()).responder(responder),
        disabled(),
        over_link("192.0.2.1:1", Some(LinkId::Azure(1))),
    )
    .await;
    assert_eq!(a.headers["content-type"], "text/html");
    assert_eq!(a.code(), Some("origin.connection-pending"));
}

// === shadow mode ===

#[tokio::test]
async fn shadow_mode_records_and_serves() {
    let a = send(OriginLayer::new(policy()), disabled().shadow(true), direct("192.0.2.12:1")).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = a.seen.unwrap();
    assert_eq!(seen.decisions.shadow.len(), 1);
    assert_eq!(seen.decisions.shadow[0].code(), "public-access.disabled");
    assert_eq!(seen.decisions.shadow[0].detail(), exact_message("192.0.2.12"));

    // Origin shadow: a pending connection is served as public, and then refused by public access.
    let req = || over_link("192.0.2.1:1", Some(LinkId::Azure(1)));
    let a = send(OriginLayer::new(policy()).shadow(true), PublicAccessLayer::enabled(), req()).await;
    assert_eq!((a.status, a.origin()), (StatusCode::OK, Some(Origin::Public)));
    assert_eq!(a.seen.unwrap().decisions.shadow[0].code(), "origin.connection-pending");
    let a = send(OriginLayer::new(policy()).shadow(true), disabled(), req()).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("public-access.disabled")));
}

// === wiring ===

#[tokio::test]
async fn missing_wiring_fails_closed_even_in_shadow_mode() {
    // No connection info: the client-address layer already fails closed; the origin layer alone does too.
    let svc = ServiceBuilder::new().layer(OriginLayer::new(policy()).shadow(true)).service(service_fn(
        |_req: Request<()>| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) },
    ));
    let a = into_answer(svc.clone().oneshot(Request::new(())).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (StatusCode::INTERNAL_SERVER_ERROR, Some("origin.no-connection-info")));
    // Connection info but no client-address layer.
    let a = into_answer(svc.oneshot(direct("10.1.0.1:1")).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (StatusCode::INTERNAL_SERVER_ERROR, Some("origin.no-client-addr")));
    assert!(a.problem()["detail"].as_str().unwrap().contains("ResolveClientAddrLayer"));

    // Public access without the origin layer, or without the client-address layer.
    let app =
        service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) });
    for layer in [disabled().shadow(true), PublicAccessLayer::enabled()] {
        let svc = ServiceBuilder::new()
            .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
            .layer(layer.clone())
            .service(app);
        let a = into_answer(svc.oneshot(direct("10.1.0.1:1")).await.unwrap()).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("public-access.no-origin"))
        );
        assert!(a.problem()["detail"].as_str().unwrap().contains("OriginLayer"));
        let svc = ServiceBuilder::new().layer(layer).service(app);
        let mut req = direct("10.1.0.1:1");
        Decisions::get_mut(req.extensions_mut()).origin = Some(Origin::Public);
        let a = into_answer(svc.oneshot(req).await.unwrap()).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("public-access.no-client-addr"))
        );
    }
}

#[tokio::test]
async fn axum_connect_info_is_understood() {
    let mut req = Request::new(());
    req.extensions_mut().insert(axum::extract::ConnectInfo("10.1.0.7:1".parse::<SocketAddr>().unwrap()));
    let a = send(OriginLayer::new(policy()), disabled(), req).await;
    assert_eq!(a.origin(), Some(Origin::Private(PrivateVia::Network("corp-vnet".into()))));
}

// === building ===

#[test]
fn disabling_public_access_needs_a_private_path() {
    let err = PublicAccessLayer::disabled(RESOURCE, &OriginPolicy::default()).unwrap_err();
    assert_eq!(err, ConfigError::NoPrivatePath { resource: RESOURCE.into() });
    assert!(
        err.to_string().contains("no private network and no approved private endpoint connection"),
        "{err}"
    );
    // Connections that are not approved are no private path.
    let only_pending = OriginPolicy::new(
        PrivateNetworks::none(),
        Connections::builder()
            .connection(Connection::pending("a", LinkId::Azure(1)))
            .connection(Connection::rejected("b", LinkId::Azure(2)))
            .build()
            .unwrap(),
    );
    assert!(PublicAccessLayer::disabled(RESOURCE, &only_pending).is_err());
    // One approved connection, or one network, is.
    let one_approved = OriginPolicy::new(
        PrivateNetworks::none(),
        Connections::builder().connection(Connection::approved("a", LinkId::Azure(1))).build().unwrap(),
    );
    assert!(PublicAccessLayer::disabled(RESOURCE, &one_approved).is_ok());
    let one_network = OriginPolicy::new(
        PrivateNetworks::builder().preset(Preset::Rfc1918).build().unwrap(),
        Connections::none(),
    );
    assert!(PublicAccessLayer::disabled(RESOURCE, &one_network).is_ok());
    // Enabled needs none.
    assert!(PublicAccessLayer::new(PublicNetworkAccess::Enabled, RESOURCE, &OriginPolicy::default()).is_ok());
    for bad in ["", "  ", "a\nb"] {
        assert!(matches!(
            PublicAccessLayer::disabled(bad, &one_network),
            Err(ConfigError::InvalidResource(_))
        ));
    }
}

// === as rules in one service ===

#[tokio::test]
async fn both_rules_run_in_one_service() {
    use portcullis_core::{GateLayer, Rule, Rules};
    use std::sync::Arc;

    let policy = policy();
    let gates = Rules::new([
        OriginLayer::new(policy.clone()).forward_header(true).rule().clone() as Arc<dyn Rule>,
        disabled().rule().clone(),
    ]);
    let svc = ServiceBuilder::new()
        .layer(ResolveClientAddrLayer::new(ClientAddrConfig::new()))
        .layer(GateLayer::new(gates))
        .service(service_fn(|req: Request<()>| async move {
            let tag = req.headers().get(ORIGIN_HEADER).cloned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{tag:?}")))))
        }));
    let mut req = direct("10.1.0.1:1");
    req.headers_mut().insert("x_portcullis_origin", "public".parse().unwrap());
    let a = into_answer(svc.clone().oneshot(req).await.unwrap()).await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"Some(\"private; network=corp-vnet\")"[..]));
    let a = into_answer(svc.clone().oneshot(direct("192.0.2.12:1")).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("public-access.disabled")));
    assert_eq!(a.problem()["detail"], exact_message("192.0.2.12"));
    let a = into_answer(svc.oneshot(over_link("10.1.0.1:1", Some(LinkId::Azure(1)))).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("origin.connection-pending")));
}

/// The rule and the policy's own `decide` agree on every combination: clients in and out of the networks (IPv4,
/// IPv6, IPv4-mapped, none), no connection info, no PROXY header, link ids approved, limited, pending,
/// rejected and unknown, with and without a host decision, under both unknown-link settings; and the
/// rule records exactly the origin it decides, and nothing on a refusal.
#[test]
fn the_rule_decides_as_the_policy() {
    let clients = [
        None,
        Some("10.1.2.3"),
        Some("10.2.0.1"),
        Some("203.0.113.9"),
        Some("::ffff:10.1.2.3"),
        Some("fd00:1::7"),
        Some("fd00:2::7"),
    ];
    let links = [
        None,
        Some(LinkId::Azure(0x2200_0011)),
        Some(LinkId::Aws("vpce-0123456789abcdef0".into())),
        Some(LinkId::Gcp(0x0102_0304_0506_0708)),
        Some(LinkId::Azure(1)),
        Some(LinkId::Aws("vpce-rejected".into())),
        Some(LinkId::Azure(2)),
        Some(LinkId::Azure(99)),
    ];
    let mut cases = 0;
    for unknown in [UnknownLink::Refuse, UnknownLink::Public] {
        let policy = policy().unknown_link(unknown);
        for conn in [0, 1, 2] {
            for link in &links {
                for client in clients {
                    for host in [None, Some("gateway"), Some("management"), Some("portal")] {
                        let conn_info = match conn {
                            0 => None,
                            1 => Some(ConnInfo::new("10.1.9.9:4000".parse().unwrap(), None)),
                            _ => {
                                let mut proxy = ProxyInfo::new(
                                    ProxyVersion::V2,
                                    Some("192.0.2.1:1".parse().unwrap()),
                                    None,
                                );
                                proxy.link_id = link.clone();
                                Some(ConnInfo::new("10.0.0.4:50000".parse().unwrap(), None).with_proxy(proxy))
                            }
                        };
                        let mut ext = http::Extensions::new();
                        if let Some(c) = &conn_info {
                            ext.insert(c.clone());
                        }
                        let decisions = Decisions::get_mut(&mut ext);
                        decisions.client = client.map(|c| {
                            portcullis_core::ClientAddr::new(
                                c.parse().unwrap(),
                                portcullis_core::LearntVia::Peer,
                            )
                        });
                        decisions.host = host.map(|e| MatchedHost {
                            host: "h.example".into(),
                            pattern: "h.example".into(),
                            endpoint: e.into(),
                            endpoint_id: 0,
                        });
                        let general = policy.decide(&ext);
                        let (mut head, ()) = Request::new(()).into_parts();
                        head.extensions = ext;
                        let rule = OriginLayer::new(policy.clone()).forward_header(true);
                        let gate = portcullis_core::Rule::check(&**rule.rule(), &mut head)
                            .map(|()| head.headers[ORIGIN_HEADER].clone())
                            .map_err(|d| d.reason::<crate::OriginRefusal>().cloned().unwrap());
                        let recorded = Decisions::get(&head.extensions).cloned().unwrap_or_default();
                        let what =
                            format!("conn {conn} link {link:?} client {client:?} host {host:?} {unknown:?}");
                        assert_eq!(gate.as_ref().err(), general.as_ref().err(), "{what}");
                        match &general {
                            Ok(origin) => {
                                assert_eq!(recorded.origin.as_ref(), Some(origin), "{what}");
                                let header = gate.as_ref().unwrap().to_str().unwrap();
                                match origin {
                                    Origin::Public => assert_eq!(header, "public", "{what}"),
                                    Origin::Private(PrivateVia::Network(n)) => {
                                        assert_eq!(header, format!("private; network={n}"), "{what}")
                                    }
                                    Origin::Private(PrivateVia::Connection(c)) => assert_eq!(
                                        header,
                                        format!("private; connection={}; group-id={}", c.name, c.group_id),
                                        "{what}"
                                    ),
                                }
                            }
                            Err(_) => assert_eq!(recorded.origin, None, "{what}"),
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 2 * 3 * 8 * 7 * 4);
}
