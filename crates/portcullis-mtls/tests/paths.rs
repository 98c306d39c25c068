//! Chains are judged by the path rustls-webpki verified, over real TLS handshakes on loopback (a rustls
//! client and curl): bundles in every order, an unused expired cross-sign, RFC 5280 path length with
//! self-issued intermediates, the leaf's CA flags, every `EkuRule` variant, the presets, the truststore
//! audit's critical extensions and audit time. Certificates from rcgen.

mod support;

use std::time::Duration;

use portcullis_mtls::{
    AcceptError, AuditAllowances, ChainPolicy, ConfigError, EkuRule, MtlsAcceptor, PolicyVerifier, Role, Rule,
};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::AlertDescription;
use rustls::pki_types::UnixTime;
use support::*;

type Outcome = (Seen, Result<std::sync::Arc<portcullis_core::TlsInfo>, AcceptError>);

/// A key of `alg` (P-256 with SHA-256 by default).
fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).expect("key")
}

/// A certificate with subject CN `cn` for `key`, shaped by `shape`, signed by `issuer` (self-signed when
/// `None`), written to `file`.crt/.key in the scratch directory.
fn cert(
    pki: &Pki,
    file: &str,
    cn: &str,
    key: &KeyPair,
    issuer: Option<&Issued>,
    shape: impl FnOnce(&mut CertificateParams),
) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Portcullis Test");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    shape(&mut params);
    let cert = match issuer {
        Some(ca) => {
            let ca_key = KeyPair::from_pem(&ca.key_pem).expect("issuer key");
            let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).expect("issuer");
            params.signed_by(key, &issuer).expect("sign")
        }
        None => params.self_signed(key).expect("self-sign"),
    };
    let (cert_path, key_path) = (pki.path(&format!("{file}.crt")), pki.path(&format!("{file}.key")));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    Issued {
        name: file.into(),
        cert: cert_path,
        key: key_path,
        der: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn ca_shape(path_len: Option<u8>) -> impl FnOnce(&mut CertificateParams) {
    move |p| {
        p.is_ca = IsCa::Ca(match path_len {
            Some(n) => BasicConstraints::Constrained(n),
            None => BasicConstraints::Unconstrained,
        });
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    }
}

fn leaf_shape(eku: Vec<ExtendedKeyUsagePurpose>) -> impl FnOnce(&mut CertificateParams) {
    move |p| {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = eku;
        p.subject_alt_names = vec![rcgen::SanType::DnsName("client.test".try_into().expect("dns"))];
    }
}

/// root → i1 → i2 → leaf, and `i1x`: i1's subject and key cross-signed by another root, expired in 2021.
struct ThreeDeep {
    pki: Pki,
    root: Issued,
    i1: Issued,
    i2: Issued,
    leaf: Issued,
    i1x: Issued,
}

fn three_deep() -> ThreeDeep {
    let pki = Pki::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root = cert(&pki, "root", "root", &key(alg), None, ca_shape(None));
    let i1_key = key(alg);
    let i1 = cert(&pki, "i1", "i1", &i1_key, Some(&root), ca_shape(None));
    let i2 = cert(&pki, "i2", "i2", &key(alg), Some(&i1), ca_shape(None));
    let leaf = cert(
        &pki,
        "leaf",
        "leaf",
        &key(alg),
        Some(&i2),
        leaf_shape(vec![ExtendedKeyUsagePurpose::ClientAuth]),
    );
    let old_root = cert(&pki, "old-root", "old-root", &key(alg), None, ca_shape(None));
    let i1x = cert(&pki, "i1-cross", "i1", &i1_key, Some(&old_root), |p| {
        ca_shape(None)(p);
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    ThreeDeep { pki, root, i1, i2, leaf, i1x }
}

async fn present(pki: &Pki, root: &Issued, policy: ChainPolicy, chain: &[&Issued]) -> Outcome {
    let (hosts, server_ca) = single_host(pki, root, policy);
    handshake(&MtlsAcceptor::new(hosts), client_config(&server_ca, chain, Some(chain[0])), "a.test").await
}

fn accepted(outcome: Outcome, what: &str) {
    let (seen, server) = outcome;
    let info = server.unwrap_or_else(|e| panic!("{what}: refused: {e}"));
    assert!(matches!(seen, Seen::Ok), "{what}: client saw {seen:?}");
    assert!(info.client_cert.is_some() && info.refused.is_none(), "{what}");
}

fn refused(
    outcome: Outcome,
    rule: &str,
    depth: Option<usize>,
    alert: AlertDescription,
) -> portcullis_mtls::ChainRefusal {
    let (seen, server) = outcome;
    let refusal = match server {
        Err(AcceptError::ClientChain { refusal, .. }) => refusal,
        other => panic!("expected a chain refusal ({rule}), got {other:?}"),
    };
    assert_eq!((refusal.rule.code(), refusal.depth), (rule, depth), "{refusal}");
    assert!(matches!(seen, Seen::Alert(a) if a == alert), "{refusal}: client saw {seen:?}");
    let text = refusal.to_string();
    assert!(!text.contains("Other(") && !text.contains("Error("), "Debug text in {text}");
    refusal
}

fn permutations<'a>(items: &[&'a Issued]) -> Vec<Vec<&'a Issued>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn bundles_in_every_order_are_accepted_and_an_unused_expired_cross_sign_is_ignored() {
    let t = three_deep();
    let policy = ChainPolicy::new("three").max_chain_len(3);
    let mut orders = permutations(&[&t.i1, &t.i2]);
    orders.extend(permutations(&[&t.i1, &t.i2, &t.i1x]));
    assert_eq!(orders.len(), 8);
    for order in orders {
        let mut chain = vec![&t.leaf];
        chain.extend(order);
        let names: Vec<&str> = chain.iter().map(|c| c.name.as_str()).collect();
        accepted(present(&t.pki, &t.root, policy.clone(), &chain).await, &names.join(","));
    }
    // The expired cross-sign as the only way up is refused (its issuer is not trusted either; webpki reports
    // the more specific reason): the path that was verified decides.
    refused(
        present(&t.pki, &t.root, policy.clone(), &[&t.leaf, &t.i2, &t.i1x]).await,
        "expired",
        None,
        AlertDescription::CertificateExpired,
    );
}

#[tokio::test]
async fn curl_sends_a_reversed_bundle_with_an_unused_expired_cross_sign_and_is_accepted() {
    if !std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: curl is not installed; this test drives `curl --cert bundle --key` against the server"
        );
        return;
    }
    let t = three_deep();
    let bundle = t.pki.path("bundle.pem");
    // Leaf first (curl requires it), then the intermediates in reverse, the stale cross-sign in between.
    std::fs::write(&bundle, [&t.leaf, &t.i1, &t.i1x, &t.i2].map(|c| c.cert_pem.as_str()).concat())
        .expect("bundle");
    let (hosts, server_ca) = single_host(&t.pki, &t.root, ChainPolicy::new("three").max_chain_len(3));
    let (addr, mut results) = spawn_server(MtlsAcceptor::new(hosts), 1).await;
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&server_ca.cert)
        .arg("--resolve")
        .arg(format!("a.test:{}:127.0.0.1", addr.port()))
        .arg("--cert")
        .arg(&bundle)
        .arg("--key")
        .arg(&t.leaf.key)
        .arg(format!("https://a.test:{}/", addr.port()))
        .output()
        .await
        .expect("curl");
    let info = results.recv().await.expect("server result").unwrap_or_else(|e| panic!("refused: {e}"));
    let cert = info.client_cert.as_ref().expect("identity");
    assert!(cert.subject.contains("CN=leaf"), "{}", cert.subject);
    // The server answers a bare "ok" (not HTTP); curl reports that, but the handshake completed.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("alert"), "curl saw a TLS alert: {stderr}");
}

#[tokio::test]
async fn rfc5280_self_issued_intermediates_do_not_count_against_path_len() {
    let pki = Pki::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    // A root that may only sign leaves, a key rollover certificate (same name, new key) below it.
    let root = cert(&pki, "root", "root", &key(alg), None, ca_shape(Some(0)));
    let rollover = cert(&pki, "rollover", "root", &key(alg), Some(&root), ca_shape(None));
    let leaf = cert(&pki, "leaf", "leaf", &key(alg), Some(&rollover), leaf_shape(vec![]));
    accepted(present(&pki, &root, ChainPolicy::default(), &[&leaf, &rollover]).await, "self-issued");
    // A certificate with another name in the same place counts, and the anchor's pathLenConstraint refuses.
    let other = cert(&pki, "other", "other", &key(alg), Some(&root), ca_shape(None));
    let leaf2 = cert(&pki, "leaf2", "leaf2", &key(alg), Some(&other), leaf_shape(vec![]));
    let r = refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf2, &other]).await,
        "path-len",
        Some(2),
        AlertDescription::BadCertificate,
    );
    assert_eq!((r.role, r.rule), (Some(Role::Anchor), Rule::PathLen { limit: 0, below: 1 }));
}

#[tokio::test]
async fn a_path_len_violation_of_the_built_path_is_found_in_any_order() {
    let pki = Pki::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root = cert(&pki, "root", "root", &key(alg), None, ca_shape(None));
    let upper = cert(&pki, "upper", "upper", &key(alg), Some(&root), ca_shape(Some(0)));
    let lower = cert(&pki, "lower", "lower", &key(alg), Some(&upper), ca_shape(None));
    let leaf = cert(&pki, "leaf", "leaf", &key(alg), Some(&lower), leaf_shape(vec![]));
    for chain in [[&leaf, &lower, &upper], [&leaf, &upper, &lower]] {
        let r = refused(
            present(&pki, &root, ChainPolicy::default(), &chain).await,
            "path-len",
            Some(2),
            AlertDescription::BadCertificate,
        );
        assert_eq!(r.role, Some(Role::Intermediate));
        assert!(r.subject.contains("CN=upper"), "{r}");
    }
}

#[tokio::test]
async fn a_leaf_with_key_cert_sign_or_ca_true_is_refused() {
    let pki = Pki::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root = cert(&pki, "root", "root", &key(alg), None, ca_shape(None));
    // No basicConstraints at all, but a CA key usage.
    let kcs = cert(&pki, "kcs", "kcs", &key(alg), Some(&root), |p| {
        leaf_shape(vec![])(p);
        p.is_ca = IsCa::NoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign];
    });
    let r = refused(
        present(&pki, &root, ChainPolicy::default(), &[&kcs]).await,
        "leaf-key-cert-sign",
        Some(0),
        AlertDescription::BadCertificate,
    );
    assert_eq!(r.role, Some(Role::Leaf));
    let ca = cert(&pki, "ca-leaf", "ca-leaf", &key(alg), Some(&root), ca_shape(None));
    refused(
        present(&pki, &root, ChainPolicy::default(), &[&ca]).await,
        "leaf-is-ca",
        Some(0),
        AlertDescription::BadCertificate,
    );
}

#[tokio::test]
async fn every_eku_rule_does_what_its_documentation_says() {
    use ExtendedKeyUsagePurpose::{Any, ClientAuth, ServerAuth};
    let pki = Pki::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root = cert(&pki, "root", "root", &key(alg), None, ca_shape(None));
    let leaves = [
        ("none", vec![]),
        ("client-auth", vec![ClientAuth]),
        ("any", vec![Any]),
        ("server-auth", vec![ServerAuth]),
    ]
    .map(|(name, eku)| (name, cert(&pki, name, name, &key(alg), Some(&root), leaf_shape(eku))));
    // (leaf, IfPresent, Required, Ignore): None = accepted, Some(rule code) = refused.
    let expected = [
        ("none", None, Some("eku-missing"), None),
        ("client-auth", None, None, None),
        ("any", None, Some("eku-client-auth"), None),
        ("server-auth", Some("eku-client-auth"), Some("eku-client-auth"), None),
    ];
    for ((name, leaf), (ename, if_present, required, ignore)) in leaves.iter().zip(expected) {
        assert_eq!(*name, ename);
        for (rule, want) in
            [(EkuRule::IfPresent, if_present), (EkuRule::Required, required), (EkuRule::Ignore, ignore)]
        {
            let outcome = present(&pki, &root, ChainPolicy::new("eku").eku(rule), &[leaf]).await;
            match want {
                None => accepted(outcome, &format!("{name} under {rule:?}")),
                Some(code) => {
                    refused(outcome, code, Some(0), AlertDescription::UnsupportedCertificate);
                }
            }
        }
    }
    // An intermediate whose EKU lacks clientAuth is refused by path validation, except under `Ignore`.
    let int = cert(&pki, "server-int", "server-int", &key(alg), Some(&root), |p| {
        ca_shape(None)(p);
        p.extended_key_usages = vec![ServerAuth];
    });
    let leaf = cert(&pki, "below-server-int", "below", &key(alg), Some(&int), leaf_shape(vec![ClientAuth]));
    refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &int]).await,
        "eku-client-auth",
        None,
        AlertDescription::UnsupportedCertificate,
    );
    accepted(
        present(&pki, &root, ChainPolicy::new("x").eku(EkuRule::Ignore), &[&leaf, &int]).await,
        "ignore",
    );
}

#[tokio::test]
async fn presets_refuse_what_their_table_refuses() {
    let pki = Pki::new();
    let p384 = &rcgen::PKCS_ECDSA_P384_SHA384;
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root = cert(&pki, "root384", "root384", &key(p384), None, ca_shape(None));
    let strict = || ChainPolicy::preset("strict").expect("strict");
    let cnsa = || ChainPolicy::preset("cnsa").expect("cnsa");
    let good = cert(
        &pki,
        "good",
        "good",
        &key(p384),
        Some(&root),
        leaf_shape(vec![ExtendedKeyUsagePurpose::ClientAuth]),
    );
    accepted(present(&pki, &root, strict(), &[&good]).await, "strict P-384");
    accepted(present(&pki, &root, cnsa(), &[&good]).await, "cnsa P-384");
    // strict: clientAuth EKU required.
    let no_eku = cert(&pki, "no-eku", "no-eku", &key(p384), Some(&root), leaf_shape(vec![]));
    refused(
        present(&pki, &root, strict(), &[&no_eku]).await,
        "eku-missing",
        Some(0),
        AlertDescription::UnsupportedCertificate,
    );
    accepted(present(&pki, &root, cnsa(), &[&no_eku]).await, "cnsa without EKU");
    // A P-256 leaf: refused by both.
    let small = cert(
        &pki,
        "p256",
        "p256",
        &key(p256),
        Some(&root),
        leaf_shape(vec![ExtendedKeyUsagePurpose::ClientAuth]),
    );
    for policy in [strict(), cnsa()] {
        let r = refused(
            present(&pki, &root, policy, &[&small]).await,
            "curve",
            Some(0),
            AlertDescription::UnsupportedCertificate,
        );
        assert_eq!(r.rule, Rule::Curve("P-256".into()));
    }
    // An Ed25519 leaf: strict accepts it, cnsa refuses it.
    let ed = cert(
        &pki,
        "ed",
        "ed",
        &key(&rcgen::PKCS_ED25519),
        Some(&root),
        leaf_shape(vec![ExtendedKeyUsagePurpose::ClientAuth]),
    );
    accepted(present(&pki, &root, strict(), &[&ed]).await, "strict Ed25519");
    refused(
        present(&pki, &root, cnsa(), &[&ed]).await,
        "key-algorithm",
        Some(0),
        AlertDescription::UnsupportedCertificate,
    );
    // A P-384 leaf signed with SHA-256 by a P-384 CA: below the SHA-384 floor of both.
    let root_sha256 = cert(&pki, "root-sha256", "root-sha256", &key(p384), None, ca_shape(None));
    let int_sha256 = {
        let k = KeyPair::generate_for(p384).expect("key");
        // rcgen signs with the issuer key's algorithm; a P-256 issuer gives ecdsa-with-SHA256.
        let p256_ca = cert(&pki, "p256-ca", "p256-ca", &key(p256), Some(&root_sha256), ca_shape(None));
        cert(
            &pki,
            "p384-under-p256",
            "p384-under-p256",
            &k,
            Some(&p256_ca),
            leaf_shape(vec![ExtendedKeyUsagePurpose::ClientAuth]),
        )
    };
    let r = ChainPolicy::preset("strict")
        .expect("strict")
        .check_leaf(&x509_parser::parse_x509_certificate(&int_sha256.der).expect("parse").1, UnixTime::now());
    assert_eq!(r, Err(Rule::Signature("ecdsa-with-SHA256 (below SHA-384)".into())));
}

#[test]
fn the_audit_refuses_an_anchor_with_an_unknown_critical_extension() {
    let pki = Pki::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root = cert(&pki, "odd-root", "odd-root", &key(alg), None, |p| {
        ca_shape(None)(p);
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions = vec![ext];
    });
    let everything = AuditAllowances { weak_anchors: true, expired_anchors: true, non_ca_anchors: true };
    let ts = truststore("t", &[&root]).allow(everything);
    match ts.audit(&ChainPolicy::default(), UnixTime::now()) {
        Err(ConfigError::WeakAnchor(a)) => {
            assert_eq!(a.rule, Rule::CriticalExtension("1.3.6.1.4.1.99999.1".into()));
            assert!(a.to_string().contains("odd-root.crt"), "{a}");
        }
        other => panic!("expected a refused anchor, got {other:?}"),
    }
    // The same anchor with the extension not critical passes.
    let plain = cert(&pki, "plain-root", "plain-root", &key(alg), None, |p| {
        ca_shape(None)(p);
        p.custom_extensions =
            vec![CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00])];
    });
    truststore("t", &[&plain]).audit(&ChainPolicy::default(), UnixTime::now()).expect("non-critical");
}

#[test]
fn the_builder_audits_at_the_time_it_is_given_and_allowances_never_reach_the_chains() {
    let pki = Pki::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root = cert(&pki, "root", "root", &key(alg), None, |p| {
        ca_shape(None)(p);
        p.not_after = rcgen::date_time_ymd(2080, 1, 1);
    });
    let leaf = cert(&pki, "leaf", "leaf", &key(alg), Some(&root), leaf_shape(vec![]));
    let y2085 = UnixTime::since_unix_epoch(Duration::from_secs(3_629_000_000));
    // Audited in 2085 the anchor has expired: a configuration error, though it is valid today.
    let err = PolicyVerifier::builder(ChainPolicy::default(), truststore("t", &[&root]))
        .audit_at(y2085)
        .build()
        .expect_err("expired at the audit time");
    assert!(matches!(&err, ConfigError::WeakAnchor(a) if a.rule.code() == "expired"), "{err}");
    // Allowed at the audit: it loads, but a chain verified in 2085 still ends at an expired anchor.
    let allowed = AuditAllowances { expired_anchors: true, ..AuditAllowances::default() };
    let verifier = PolicyVerifier::builder(ChainPolicy::default(), truststore("t", &[&root]).allow(allowed))
        .audit_at(y2085)
        .build()
        .expect("allowed at load");
    verifier.verify(&leaf.der, &[], UnixTime::now()).map_err(|(r, _)| r).expect("valid today");
    let (refusal, _) = verifier.verify(&leaf.der, &[], y2085).expect_err("anchor expired in 2085");
    assert_eq!((refusal.role, refusal.depth, refusal.rule.code()), (Some(Role::Anchor), Some(1), "expired"));
}
