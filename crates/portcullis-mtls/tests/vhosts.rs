//! Virtual hosts: SNI selection, the default host and unrecognized_name, per-SNI truststores, runtime
//! create/update/delete, store rotation and session resumption across a policy change.

mod support;

use portcullis_mtls::{
    AcceptError, ChainPolicy, ClientAuth, ConfigError, MtlsAcceptor, VirtualHost, VirtualHosts,
};
use rustls::{AlertDescription, HandshakeKind};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Two {
    _pki: Pki,
    hosts: VirtualHosts,
    server_ca_a: Issued,
    server_ca_b: Issued,
    client_a: Issued,
    client_b: Issued,
}

/// Host `a` (a.test, A.example wildcard) trusts client CA A; host `b` (b.test) trusts client CA B; `pub`
/// (pub.test, 127.0.0.1) has no client auth.
fn two_hosts() -> Two {
    let pki = Pki::new();
    let ca_a = pki.ca_of("client-ca-a", "ec:P-256", None);
    let ca_b = pki.ca_of("client-ca-b", "ec:P-256", None);
    let client_a = pki.leaf("client-a", "ec:P-256", &ca_a);
    let client_b = pki.leaf("client-b", "ec:P-256", &ca_b);
    let hosts = VirtualHosts::new();
    let (ks_a, server_ca_a) = server_keystore(&pki, "a", &["a.test", "x.w.test", "pub.test", "IP:127.0.0.1"]);
    let (ks_b, server_ca_b) = server_keystore(&pki, "b", &["b.test"]);
    hosts.put_keystore(ks_a).expect("ks a");
    hosts.put_keystore(ks_b).expect("ks b");
    hosts.put_truststore(truststore("ta", &[&ca_a])).expect("ta");
    hosts.put_truststore(truststore("tb", &[&ca_b])).expect("tb");
    let a =
        VirtualHost::new("a", ["a.test", "*.w.test"], "a").client_auth(ClientAuth::Required).truststore("ta");
    let b = VirtualHost::new("b", ["b.test"], "b").client_auth(ClientAuth::Required).truststore("tb");
    hosts.put(a).expect("a");
    hosts.put(b).expect("b");
    hosts.put(VirtualHost::new("pub", ["pub.test"], "a")).expect("pub");
    Two { _pki: pki, hosts, server_ca_a, server_ca_b, client_a, client_b }
}

#[tokio::test]
async fn sni_picks_the_host_without_case_or_trailing_dot() {
    let t = two_hosts();
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    let cfg = client_config(&t.server_ca_a, &[&t.client_a], Some(&t.client_a));
    for sni in ["a.test", "A.TEST", "a.test."] {
        let (seen, server) = handshake(&acceptor, cfg.clone(), sni).await;
        let info = server.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(matches!(seen, Seen::Ok), "{sni}: {seen:?}");
        assert_eq!(info.sni.as_deref(), Some("a.test"), "{sni}");
        assert_eq!(info.vhost.as_deref(), Some("a"));
    }
    // The wildcard covers one label.
    let (_, server) = handshake(&acceptor, cfg.clone(), "x.w.test").await;
    assert_eq!(server.expect("wildcard").vhost.as_deref(), Some("a"));
}

#[tokio::test]
async fn per_sni_truststores_refuse_another_hosts_clients() {
    let t = two_hosts();
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    // Client A on host B: B's server certificate is fine, A's client CA is not B's.
    let cfg = client_config(&t.server_ca_b, &[&t.client_a], Some(&t.client_a));
    let (seen, server) = handshake(&acceptor, cfg, "b.test").await;
    match server {
        Err(AcceptError::ClientChain { vhost, refusal }) => {
            assert_eq!(vhost, "b");
            assert_eq!(refusal.rule.code(), "unknown-issuer");
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    assert!(matches!(seen, Seen::Alert(AlertDescription::UnknownCA)), "{seen:?}");
    // Client B on host B is fine.
    let cfg = client_config(&t.server_ca_b, &[&t.client_b], Some(&t.client_b));
    let (seen, server) = handshake(&acceptor, cfg, "b.test").await;
    assert!(matches!(seen, Seen::Ok) && server.is_ok(), "{seen:?}");
}

#[tokio::test]
async fn unknown_or_missing_sni_without_default_gets_unrecognized_name() {
    let t = two_hosts();
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    let cfg = client_config(&t.server_ca_a, &[&t.client_a], Some(&t.client_a));
    for sni in ["nowhere.test", "w.test", "y.x.w.test", "127.0.0.1"] {
        let (seen, server) = handshake(&acceptor, cfg.clone(), sni).await;
        assert!(matches!(server, Err(AcceptError::UnknownHost { .. })), "{sni}: {server:?}");
        assert!(matches!(seen, Seen::Alert(AlertDescription::UnrecognisedName)), "{sni}: {seen:?}");
    }
}

#[tokio::test]
async fn without_sni_only_the_default_host_is_reached() {
    let t = two_hosts();
    t.hosts.set_default(Some("pub")).expect("default");
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    // No SNI (an IP address): the default host, which does not ask for a client certificate, answers; the
    // connection is labelled `pub` so host routing can refuse a `Host: a.test` request on it (421).
    let cfg = client_config(&t.server_ca_a, &[], None);
    let (seen, server) = handshake(&acceptor, cfg.clone(), "127.0.0.1").await;
    let info = server.expect("default host");
    assert!(matches!(seen, Seen::Ok), "{seen:?}");
    assert_eq!(info.sni, None);
    assert_eq!(info.vhost.as_deref(), Some("pub"));
    assert!(info.client_cert.is_none());
    // An unknown name goes to the default too.
    let (_, server) = handshake(&acceptor, client_config(&t.server_ca_a, &[], None), "pub.test").await;
    assert_eq!(server.expect("pub").vhost.as_deref(), Some("pub"));
    // A client-auth host as default: a client without SNI must then pass its client auth.
    t.hosts.set_default(Some("a")).expect("default a");
    let (seen, server) = handshake(&acceptor, cfg, "127.0.0.1").await;
    assert!(server.is_err(), "no certificate on the required default host");
    assert!(matches!(seen, Seen::Alert(AlertDescription::CertificateRequired)), "{seen:?}");
}

#[tokio::test]
async fn runtime_update_applies_to_new_connections_and_leaves_open_ones_alone() {
    let t = two_hosts();
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    // An echo server for one long-lived connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acc = acceptor.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut s = acc.accept(tcp).await.expect("handshake");
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let cfg = client_config(&t.server_ca_a, &[&t.client_a], Some(&t.client_a));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("a.test").expect("name");
    let mut open = tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp).await.expect("tls");
    let mut buf = [0u8; 4];
    open.write_all(b"one!").await.expect("write");
    open.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"one!");

    // Update host `a`: its clients' P-256 keys are no longer accepted.
    let strict = ChainPolicy::new("rsa-only").curves(vec![]);
    let err = t.hosts.put(
        VirtualHost::new("a", ["a.test", "*.w.test"], "a")
            .client_auth(ClientAuth::Required)
            .truststore("ta")
            .policy(strict.clone()),
    );
    // The client CA itself is P-256, so the audit refuses the change and nothing changes ...
    assert!(matches!(err, Err(ConfigError::WeakAnchor(_))), "{err:?}");
    let (seen, _) = handshake(&acceptor, cfg.clone(), "a.test").await;
    assert!(matches!(seen, Seen::Ok), "unchanged after a refused update: {seen:?}");
    // ... an update that passes the audit but refuses the client's leaf takes effect.
    let strict = ChainPolicy::new("strict-eku").eku(portcullis_mtls::EkuRule::Required).max_chain_len(1);
    t.hosts
        .put(
            VirtualHost::new("a", ["a.test", "*.w.test"], "a")
                .client_auth(ClientAuth::Required)
                .truststore("ta")
                .allowed_identities(vec![portcullis_mtls::AllowedIdentity::default().subject("CN=nobody")])
                .policy(strict),
        )
        .expect("update");
    let (seen, server) = handshake(&acceptor, cfg.clone(), "a.test").await;
    assert!(matches!(seen, Seen::Alert(AlertDescription::AccessDenied)), "{seen:?}");
    assert_eq!(server.expect_err("refused").refusal().map(|r| r.rule.code()), Some("identity"));

    // The connection opened before the update still works.
    open.write_all(b"two!").await.expect("write");
    open.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"two!");
}

#[tokio::test]
async fn delete_removes_a_host_but_not_the_default_one() {
    let t = two_hosts();
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    t.hosts.set_default(Some("pub")).expect("default");
    let err = t.hosts.delete("pub").expect_err("default");
    assert!(matches!(&err, ConfigError::Refused(m) if m.contains("default")), "{err}");
    assert!(t.hosts.names().contains(&"pub".to_string()));
    t.hosts.delete("b").expect("delete b");
    assert!(matches!(t.hosts.delete("b"), Err(ConfigError::Refused(_))));
    // b.test now lands on the default host `pub` (whose certificate does not name b.test).
    let cfg = client_config(&t.server_ca_a, &[], None);
    let (_, server) = handshake(&acceptor, cfg.clone(), "b.test").await;
    match server {
        // The client refuses pub's certificate for b.test, after the server picked `pub`.
        Err(AcceptError::Handshake { vhost, .. }) => assert_eq!(vhost, "pub"),
        other => panic!("expected the default host, got {other:?}"),
    }
    // Without a default, b.test gets unrecognized_name; now `pub` can be deleted.
    t.hosts.set_default(None).expect("no default");
    let (seen, _) = handshake(&acceptor, client_config(&t.server_ca_b, &[], None), "b.test").await;
    assert!(matches!(seen, Seen::Alert(AlertDescription::UnrecognisedName)), "{seen:?}");
    t.hosts.delete("pub").expect("no longer default");
    // A store in use cannot be removed; an unused one can.
    assert!(matches!(t.hosts.remove_keystore("a"), Err(ConfigError::Refused(_))));
    t.hosts.remove_keystore("b").expect("b is unused now");
    assert!(matches!(t.hosts.remove_truststore("ta"), Err(ConfigError::Refused(_))));
}

#[tokio::test]
async fn a_host_name_belongs_to_one_host() {
    let t = two_hosts();
    let err = t.hosts.put(VirtualHost::new("c", ["A.test."], "a")).expect_err("duplicate");
    assert!(err.to_string().contains("already served by `a`"), "{err}");
}

#[tokio::test]
async fn keystore_rotation_updates_every_host_using_it() {
    let t = two_hosts();
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    // pub and a share keystore `a`; rotate it to a certificate from a new server CA.
    let pki2 = Pki::new();
    let (new_ks, new_ca) = server_keystore(&pki2, "a", &["a.test", "pub.test"]);
    assert_eq!(new_ks.name(), "a");
    t.hosts.put_keystore(new_ks).expect("rotate");
    for (sni, client) in [("pub.test", None), ("a.test", Some(&t.client_a))] {
        let chain: Vec<&Issued> = client.into_iter().collect();
        let cfg = client_config(&new_ca, &chain, client);
        let (seen, server) = handshake(&acceptor, cfg, sni).await;
        assert!(matches!(seen, Seen::Ok), "{sni}: {seen:?}");
        assert!(server.is_ok());
    }
    // The old server CA is no longer what the hosts present.
    let (seen, _) = handshake(&acceptor, client_config(&t.server_ca_a, &[], None), "pub.test").await;
    assert!(!matches!(seen, Seen::Ok), "{seen:?}");
}

#[tokio::test]
async fn a_resumed_session_cannot_skip_a_changed_policy() {
    let t = two_hosts();
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    let (addr, mut rx) = spawn_server(acceptor.clone(), 4).await;
    let cfg = client_config(&t.server_ca_a, &[&t.client_a], Some(&t.client_a));
    // Control: the second connection resumes (so resumption really is on).
    let (seen, kind) = connect_with_kind(addr, cfg.clone(), "a.test").await;
    assert!(matches!(seen, Seen::Ok) && kind == Some(HandshakeKind::Full), "{seen:?} {kind:?}");
    rx.recv().await.expect("server").expect("first");
    let (seen, kind) = connect_with_kind(addr, cfg.clone(), "a.test").await;
    assert!(matches!(seen, Seen::Ok) && kind == Some(HandshakeKind::Resumed), "{seen:?} {kind:?}");
    let info = rx.recv().await.expect("server").expect("resumed");
    assert!(info.client_cert.is_some(), "a resumed session keeps its identity");
    // The policy changes: client-a is no longer allowed.
    t.hosts
        .put(
            VirtualHost::new("a", ["a.test", "*.w.test"], "a")
                .client_auth(ClientAuth::Required)
                .truststore("ta")
                .allowed_identities(vec![portcullis_mtls::AllowedIdentity::default().subject("CN=nobody")]),
        )
        .expect("update");
    // The client still holds a ticket; the server's ticket keys and session cache were replaced, so it gets
    // a full handshake and the new policy refuses it.
    let (seen, _) = connect_with_kind(addr, cfg.clone(), "a.test").await;
    assert!(matches!(seen, Seen::Alert(AlertDescription::AccessDenied)), "{seen:?}");
    let refused = rx.recv().await.expect("server").expect_err("refused");
    assert_eq!(refused.refusal().map(|r| r.rule.code()), Some("identity"), "{refused}");
}

#[tokio::test]
async fn optional_client_auth_lets_anonymous_clients_through_but_not_bad_chains() {
    let t = two_hosts();
    let pki = Pki::new();
    let (ks, server_ca) = server_keystore(&pki, "opt", &["opt.test"]);
    t.hosts.put_keystore(ks).expect("ks");
    t.hosts
        .put(VirtualHost::new("opt", ["opt.test"], "opt").client_auth(ClientAuth::Optional).truststore("ta"))
        .expect("opt");
    let acceptor = MtlsAcceptor::new(t.hosts.clone());
    // Anonymous: served, without identity and without a refusal.
    let (seen, server) = handshake(&acceptor, client_config(&server_ca, &[], None), "opt.test").await;
    let info = server.expect("anonymous");
    assert!(matches!(seen, Seen::Ok), "{seen:?}");
    assert!(info.client_cert.is_none() && info.refused.is_none());
    // A good chain: identity.
    let cfg = client_config(&server_ca, &[&t.client_a], Some(&t.client_a));
    let (_, server) = handshake(&acceptor, cfg, "opt.test").await;
    assert!(server.expect("client a").client_cert.is_some());
    // A chain from another CA is refused, not downgraded to anonymous.
    let cfg = client_config(&server_ca, &[&t.client_b], Some(&t.client_b));
    let (seen, server) = handshake(&acceptor, cfg, "opt.test").await;
    assert!(matches!(seen, Seen::Alert(AlertDescription::UnknownCA)), "{seen:?}");
    assert!(server.is_err());
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_with_certificate_revoked() {
    use rcgen::{
        CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
    };
    let pki = Pki::new();
    let ca = pki.ca_of("crl-ca", "ec:P-256", None);
    let alice = pki.leaf("alice", "ec:P-256", &ca);
    let bob = pki.leaf("bob", "ec:P-256", &ca);
    let bob_serial = portcullis_mtls::client_cert(std::slice::from_ref(&bob.der)).expect("bob").serial;
    let serial_bytes: Vec<u8> = (0..bob_serial.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&bob_serial[i..i + 2], 16).expect("hex"))
        .collect();
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem).expect("key")).expect("issuer");
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2090, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial_bytes),
            revocation_time: rcgen::date_time_ymd(2024, 6, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .expect("crl");

    let hosts = VirtualHosts::new();
    let (ks, server_ca) = server_keystore(&pki, "srv", &["a.test"]);
    hosts.put_keystore(ks).expect("ks");
    hosts.put_truststore(truststore("clients", &[&ca])).expect("ts");
    let revocation = portcullis_mtls::Revocation { crls: vec![crl.der().clone()], ..Default::default() };
    hosts
        .put(
            VirtualHost::new("a", ["a.test"], "srv")
                .client_auth(ClientAuth::Required)
                .truststore("clients")
                .revocation(revocation),
        )
        .expect("vhost");
    let acceptor = MtlsAcceptor::new(hosts);
    let (seen, server) =
        handshake(&acceptor, client_config(&server_ca, &[&alice], Some(&alice)), "a.test").await;
    assert!(matches!(seen, Seen::Ok) && server.is_ok(), "alice is not revoked: {seen:?}");
    let (seen, server) = handshake(&acceptor, client_config(&server_ca, &[&bob], Some(&bob)), "a.test").await;
    assert!(matches!(seen, Seen::Alert(AlertDescription::CertificateRevoked)), "{seen:?}");
    let err = server.expect_err("bob is revoked");
    assert_eq!(err.refusal().map(|r| r.rule.code()), Some("revoked"), "{err}");
    assert!(err.to_string().ends_with("a certificate in the path: certificate is revoked"), "{err}");
}
