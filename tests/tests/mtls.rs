//! mTLS virtual hosts through the whole stack, with real handshakes (a rustls client and curl): a good chain
//! is served with its identity, weak chains are refused (an RSA-1024 key in the handshake, a SHA-1 signed
//! leaf with a 403 in "refuse at HTTP" mode), a missing client certificate on a host that requires one is
//! refused, and a request whose Host belongs to another virtual host than the SNI gets 421.

use http::StatusCode;
use portcullis_tests::client::{TlsClient, get, h1, h2};
use portcullis_tests::configs::MTLS;
use portcullis_tests::pki::{Issued, Pki};
use portcullis_tests::server::TestGateway;
use portcullis_tests::{curl, skip_without};

const API: &str = "contoso.azure-api.net";
const MGMT: &str = "contoso.management.azure-api.net";

struct Certs {
    pki: Pki,
    ca: Issued,
    good: Issued,
    sha1: Issued,
    rsa1024: Issued,
    stranger: Issued,
}

/// The demo PKI: a client CA (also signing the server certificate), a good P-256 client, a SHA-1 signed leaf,
/// an RSA-1024 leaf, and a client from a CA the gateway does not trust.
fn certs() -> Certs {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    pki.server("server", &ca, &[API, MGMT, "contoso.developer.azure-api.net", "contoso.scm.azure-api.net"]);
    let good = pki.client("good", "partner-app", &ca, "ec", "-sha256");
    let sha1 = pki.client("sha1", "old-signer", &ca, "ec", "-sha1");
    let rsa1024 = pki.client("rsa1024", "legacy-app", &ca, "rsa:1024", "-sha256");
    let other_ca = pki.ca("other-ca");
    let stranger = pki.client("stranger", "stranger", &other_ca, "ec", "-sha256");
    Certs { pki, ca, good, sha1, rsa1024, stranger }
}

async fn start(c: &Certs) -> TestGateway {
    TestGateway::start(&MTLS.replace("{dir}", &c.pki.dir().display().to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_chain_is_served_with_its_identity() {
    if skip_without("openssl", "good_chain_is_served_with_its_identity") {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let addr = gw.addr("https");
    let client = TlsClient::new(&c.ca, Some(&c.good), &[b"http/1.1"]);
    for (sni, vhost, endpoint) in [(API, "api", "gateway"), (MGMT, "mgmt", "management")] {
        let r = client.get(addr, sni, sni).await.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(r.status, StatusCode::OK, "{sni}: {}", r.text());
        assert_eq!(r.field("vhost"), vhost);
        assert_eq!(r.field("sni"), sni);
        assert_eq!(r.field("served_by"), endpoint);
        let subject = r.field("client_subject");
        assert!(
            subject.contains("CN=partner-app") && subject.contains("O=Fabrikam"),
            "identity: {}",
            r.text()
        );
        assert_eq!(r.field("client_sha256").len(), 64, "{}", r.text());
    }
    // HTTP/2 over TLS (ALPN h2): the same identity, :authority routed.
    let client = TlsClient::new(&c.ca, Some(&c.good), &[b"h2"]);
    let tls = client.connect(addr, MGMT).await.expect("handshake");
    let r = h2(tls, get(&format!("https://{MGMT}/echo"), None, &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.field("version"), "HTTP/2.0");
    assert!(r.field("client_subject").contains("CN=partner-app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_untrusted_client_certificate_on_a_required_host_is_refused() {
    if skip_without("openssl", "missing_or_untrusted_client_certificate_on_a_required_host_is_refused") {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let addr = gw.addr("https");
    let anonymous = TlsClient::new(&c.ca, None, &[b"http/1.1"]);
    let err =
        anonymous.get(addr, MGMT, MGMT).await.expect_err("no client certificate on `mgmt` must be refused");
    assert!(err.contains("handshake") || err.contains("exchange"), "{err}");
    let stranger = TlsClient::new(&c.ca, Some(&c.stranger), &[b"http/1.1"]);
    stranger.get(addr, MGMT, MGMT).await.expect_err("a chain to an untrusted CA on `mgmt` must be refused");
    let sha1 = TlsClient::new(&c.ca, Some(&c.sha1), &[b"http/1.1"]);
    sha1.get(addr, MGMT, MGMT).await.expect_err("a SHA-1 leaf on `mgmt` must be refused in the handshake");
    // On `api` client certificates are optional: no certificate is served, without an identity.
    let r = anonymous.get(addr, API, API).await.expect("served");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["client_subject"].is_null(), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_chain_is_refused_at_http_with_the_reason() {
    if skip_without("openssl", "weak_chain_is_refused_at_http_with_the_reason") {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let addr = gw.addr("https");
    // `api` completes the handshake for refused chains and answers 403 with the reason.
    let sha1 = TlsClient::new(&c.ca, Some(&c.sha1), &[b"http/1.1"]);
    let r = sha1.get(addr, API, API).await.expect("the handshake completes in refuse-at-http mode");
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.denial(), "mtls.client-chain");
    let detail = r.field("detail");
    assert!(
        detail.to_ascii_lowercase().contains("sha-1") || detail.to_ascii_lowercase().contains("sha1"),
        "{detail}"
    );
    assert!(detail.contains("old-signer"), "the refused certificate is named: {detail}");
    // Every request on that connection is refused, whatever it asks for.
    let tls = sha1.connect(addr, API).await.expect("handshake");
    let r = h1(tls, get("/anything", Some(API), &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A chain to an untrusted CA: refused too, never served without identity.
    let stranger = TlsClient::new(&c.ca, Some(&c.stranger), &[b"http/1.1"]);
    let r = stranger.get(addr, API, API).await.expect("the handshake completes in refuse-at-http mode");
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.denial(), "mtls.client-chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_good_and_weak_chains() {
    if skip_without("openssl", "curl_with_good_and_weak_chains")
        || skip_without("curl", "curl_with_good_and_weak_chains")
    {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let port = gw.port("https");
    let seclevel0 = c.pki.seclevel0_conf();
    let ca = c.ca.cert.display().to_string();
    let run = |host: &'static str, cert: Option<&Issued>| {
        let mut args: Vec<String> = vec![
            "--cacert".into(),
            ca.clone(),
            "--resolve".into(),
            format!("{host}:{port}:127.0.0.1"),
            format!("https://{host}:{port}/echo"),
        ];
        if let Some(cert) = cert {
            args.extend([
                "--cert".into(),
                cert.cert.display().to_string(),
                "--key".into(),
                cert.key.display().to_string(),
            ]);
        }
        args
    };
    // The good chain, on the host that requires one: served with its identity.
    let args = run(MGMT, Some(&c.good));
    let r = curl(&args.iter().map(String::as_str).collect::<Vec<_>>(), None).await;
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.json()["client_subject"].as_str().unwrap_or("").contains("CN=partner-app"), "{r:?}");
    // RSA-1024 on the host that refuses in the handshake: no HTTP response at all.
    let args = run(MGMT, Some(&c.rsa1024));
    let r = curl(&args.iter().map(String::as_str).collect::<Vec<_>>(), Some(&seclevel0)).await;
    assert_eq!(r.code, 0, "the handshake must fail: {r:?}");
    assert_ne!(r.exit, Some(0), "{r:?}");
    // RSA-1024 on the refuse-at-http host: the handshake completes without an identity (the client's
    // signature is not checked once its chain is refused) and every request gets 403 naming the rule.
    let args = run(API, Some(&c.rsa1024));
    let r = curl(&args.iter().map(String::as_str).collect::<Vec<_>>(), Some(&seclevel0)).await;
    assert_eq!(r.code, 403, "an RSA-1024 chain must never be served: {r:?}");
    assert!(r.body.contains("rsa-key-size"), "the reason names the rule: {r:?}");
    // SHA-1 on the refuse-at-http host: 403.
    let args = run(API, Some(&c.sha1));
    let r = curl(&args.iter().map(String::as_str).collect::<Vec<_>>(), Some(&seclevel0)).await;
    assert_eq!(r.code, 403, "{r:?}");
    // No certificate on the host that requires one: no HTTP response.
    let args = run(MGMT, None);
    let r = curl(&args.iter().map(String::as_str).collect::<Vec<_>>(), None).await;
    assert_eq!(r.code, 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_of_one_virtual_host_and_host_of_another_is_misdirected() {
    if skip_without("openssl", "sni_of_one_virtual_host_and_host_of_another_is_misdirected") {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let addr = gw.addr("https");
    // The classic bypass: handshake on the host without required client auth, then ask for the mTLS host.
    for client in
        [TlsClient::new(&c.ca, None, &[b"http/1.1"]), TlsClient::new(&c.ca, Some(&c.good), &[b"http/1.1"])]
    {
        let r = client.get(addr, API, MGMT).await.expect("response");
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.text());
        assert_eq!(r.denial(), "host.sni-mismatch");
        // Case and trailing-dot spellings of the other host are the other host.
        let r = client.get(addr, API, "CONTOSO.MANAGEMENT.AZURE-API.NET.").await.expect("response");
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.text());
    }
    // The other way round: a client-auth connection to `mgmt` cannot be reused for `api`.
    let good = TlsClient::new(&c.ca, Some(&c.good), &[b"http/1.1"]);
    let r = good.get(addr, MGMT, API).await.expect("response");
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.text());
    // Over HTTP/2, :authority of the other virtual host.
    let h2c = TlsClient::new(&c.ca, None, &[b"h2"]);
    let tls = h2c.connect(addr, API).await.expect("handshake");
    let r = h2(tls, get(&format!("https://{MGMT}/echo"), None, &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.text());
    assert_eq!(r.denial(), "host.sni-mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_without_sni_never_reaches_the_client_auth_host() {
    if skip_without("openssl", "curl_without_sni_never_reaches_the_client_auth_host")
        || skip_without("curl", "curl_without_sni_never_reaches_the_client_auth_host")
    {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let port = gw.port("https");
    // curl sends no SNI for an IP literal: the default virtual host (`api`) answers the handshake.
    let r =
        curl(&["-k", "-H", &format!("Host: {MGMT}"), &format!("https://127.0.0.1:{port}/echo")], None).await;
    assert_eq!(r.code, 421, "{r:?}");
    assert_eq!(r.json()["type"], "urn:portcullis:denial:host.sni-mismatch");
    // SNI from the URL, Host header of the other virtual host.
    let r = curl(
        &[
            "--cacert",
            &c.ca.cert.display().to_string(),
            "--resolve",
            &format!("{API}:{port}:127.0.0.1"),
            "-H",
            &format!("Host: {MGMT}"),
            &format!("https://{API}:{port}/echo"),
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 421, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ticket_from_another_virtual_host_does_not_skip_client_auth() {
    use portcullis_tests::client::SharedTickets;
    use rustls::HandshakeKind;
    use std::sync::Arc;
    const PORTAL: &str = "contoso.developer.azure-api.net";
    if skip_without("openssl", "a_session_ticket_from_another_virtual_host_does_not_skip_client_auth") {
        return;
    }
    let c = certs();
    let gw = start(&c).await;
    let addr = gw.addr("https");
    let store = Arc::new(SharedTickets::default());
    let client = TlsClient::with_store(&c.ca, None, &[b"http/1.1"], store.clone());
    // A full handshake on `portal` (no client auth) earns tickets.
    let tls = client.connect(addr, PORTAL).await.expect("handshake");
    assert_eq!(tls.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    let r = h1(tls, get("/echo", Some(PORTAL), &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(store.inserted() > 0, "the portal virtual host issues TLS 1.3 tickets");
    // The store works: the next portal connection resumes.
    let tls = client.connect(addr, PORTAL).await.expect("handshake");
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "resumption works on the same host"
    );
    let r = h1(tls, get("/echo", Some(PORTAL), &[])).await.expect("response");
    assert_eq!(r.status, StatusCode::OK);
    // The attack: offer a portal ticket to `mgmt`, which requires a client certificate we do not have.
    let taken = store.taken();
    let outcome = client.get(addr, MGMT, MGMT).await;
    assert!(store.taken() > taken, "a portal ticket was offered to mgmt");
    assert!(outcome.is_err(), "a ticket from another virtual host must not skip client auth: {outcome:?}");
}
