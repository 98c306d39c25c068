//! Every default rule of the chain policy, over real TLS handshakes on loopback: the server's typed reason
//! and the alert the client receives. Chains come from the `openssl` CLI (weak algorithms, RSA-1024, PSS)
//! and rcgen (validity dates).

mod support;

use std::time::{Duration, SystemTime};

use portcullis_mtls::{
    AcceptError, AllowedIdentity, ChainPolicy, ChainRefusal, ClientAuth, EkuRule, MtlsAcceptor,
    PolicyVerifier, Role, Rule, VirtualHost,
};
use rustls::AlertDescription;
use rustls::pki_types::UnixTime;
use support::*;

/// Runs a handshake presenting `chain` (leaf first) to a host trusting `root` under `policy`.
async fn present(
    pki: &Pki,
    root: &Issued,
    policy: ChainPolicy,
    chain: &[&Issued],
) -> (Seen, Result<std::sync::Arc<portcullis_core::TlsInfo>, AcceptError>) {
    let (hosts, server_ca) = single_host(pki, root, policy);
    let acceptor = MtlsAcceptor::new(hosts);
    handshake(&acceptor, client_config(&server_ca, chain, Some(chain[0])), "a.test").await
}

/// Asserts a refusal at `depth` by `rule_code`, with the client seeing `alert`.
fn assert_refused(
    result: (Seen, Result<std::sync::Arc<portcullis_core::TlsInfo>, AcceptError>),
    depth: impl Into<Option<usize>>,
    rule_code: &str,
    alert: AlertDescription,
) -> ChainRefusal {
    let (seen, server) = result;
    let refusal = match server {
        Err(AcceptError::ClientChain { refusal, .. }) => refusal,
        other => panic!("expected a chain refusal, got {other:?}"),
    };
    assert_eq!(refusal.rule.code(), rule_code, "{refusal}");
    assert_eq!(refusal.depth, depth.into(), "{refusal}");
    match seen {
        Seen::Alert(a) => assert_eq!(a, alert, "{refusal}"),
        other => panic!("client should see alert {alert:?}, saw {other:?}"),
    }
    refusal
}

fn assert_accepted(result: (Seen, Result<std::sync::Arc<portcullis_core::TlsInfo>, AcceptError>)) {
    let (seen, server) = result;
    let info = server.unwrap_or_else(|e| panic!("refused: {e}"));
    assert!(matches!(seen, Seen::Ok), "client saw {seen:?}");
    assert!(info.client_cert.is_some(), "no identity");
    assert!(info.refused.is_none());
}

#[tokio::test]
async fn good_rsa_2048_chain_is_accepted_with_identity() {
    let pki = Pki::new();
    let root = pki.ca_of("rsa-root", "rsa:2048", None);
    let int = pki.ca_of("rsa-int", "rsa:2048", Some(&root));
    let leaf = pki.leaf("rsa-leaf", "rsa:2048", &int);
    let (hosts, server_ca) = single_host(&pki, &root, ChainPolicy::default());
    let acceptor = MtlsAcceptor::new(hosts);
    let (seen, server) =
        handshake(&acceptor, client_config(&server_ca, &[&leaf, &int], Some(&leaf)), "a.test").await;
    assert!(matches!(seen, Seen::Ok), "{seen:?}");
    let info = server.expect("accepted");
    assert_eq!(info.sni.as_deref(), Some("a.test"));
    assert_eq!(info.vhost.as_deref(), Some("a"));
    assert_eq!(info.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let cert = info.client_cert.as_ref().expect("identity");
    assert!(cert.subject.contains("CN=rsa-leaf"), "{}", cert.subject);
    assert!(cert.issuer.contains("CN=rsa-int"), "{}", cert.issuer);
    assert_eq!(cert.sha256.len(), 64);
    assert_eq!(cert.sans, ["client.test", "alice@client.test"]);
    assert_eq!(cert.chain.len(), 2);
    assert_eq!(&*cert.chain[0], leaf.der.as_ref());
    assert!(cert.not_after > SystemTime::now());
    // The thumbprint is the SHA-256 of the DER, as openssl computes it.
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&leaf.cert)
        .output()
        .expect("openssl");
    let fp: String = String::from_utf8_lossy(&out.stdout)
        .split('=')
        .nth(1)
        .expect("fingerprint")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(cert.sha256, fp.to_ascii_lowercase());
}

#[tokio::test]
async fn good_p256_chain_is_accepted() {
    let pki = Pki::new();
    let root = pki.ca_of("ec-root", "ec:P-256", None);
    let int = pki.ca_of("ec-int", "ec:P-384", Some(&root));
    let leaf = pki.leaf("ec-leaf", "ec:P-256", &int);
    assert_accepted(present(&pki, &root, ChainPolicy::default(), &[&leaf, &int]).await);
}

#[tokio::test]
async fn good_rsa_pss_signed_chain_is_accepted() {
    let pki = Pki::new();
    let pss = ["-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"];
    let root = pki.issue_named("pss-root", "rsa:2048", None, &pss, CA_EXT);
    let leaf = pki.issue_named("pss-leaf", "rsa:2048", Some(&root), &pss, LEAF_EXT);
    assert!(
        leaf.der.as_ref().windows(11).any(|w| w == [6, 9, 42, 134, 72, 134, 247, 13, 1, 1, 10]),
        "PSS OID"
    );
    assert_accepted(present(&pki, &root, ChainPolicy::default(), &[&leaf]).await);
}

#[tokio::test]
async fn ed25519_leaf_is_accepted_unless_the_knob_refuses_it() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let leaf = pki.leaf("ed-leaf", "ed25519", &root);
    assert_accepted(present(&pki, &root, ChainPolicy::default(), &[&leaf]).await);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::new("no-ed").allow_ed25519(false), &[&leaf]).await,
        0,
        "key-algorithm",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.rule, Rule::KeyAlgorithm("Ed25519".into()));
}

#[tokio::test]
async fn md5_signed_leaf_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "rsa:2048", None);
    let leaf = pki.issue_named("md5-leaf", "rsa:2048", Some(&root), &["-md5"], LEAF_EXT);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf]).await,
        0,
        "signature",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.rule, Rule::Signature("md5WithRSAEncryption".into()));
    assert!(r.subject.contains("CN=md5-leaf"));
    assert_eq!(r.role, Some(Role::Leaf));
}

#[tokio::test]
async fn sha1_signed_intermediate_is_refused_and_allow_sha1_lets_it_through() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "rsa:2048", None);
    let int = pki.issue_named("sha1-int", "rsa:2048", Some(&root), &["-sha1"], CA_EXT);
    let leaf = pki.leaf("leaf", "ec:P-256", &int);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &int]).await,
        1,
        "signature",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.rule, Rule::Signature("sha1WithRSAEncryption".into()));
    assert_eq!(r.role, Some(Role::Intermediate));
    // The knob lets the policy pass; webpki then refuses SHA-1 itself (it has no SHA-1 support), somewhere
    // in the path: the policy is on top of webpki, never instead of it.
    let (_, server) = present(&pki, &root, ChainPolicy::new("legacy").allow_sha1(true), &[&leaf, &int]).await;
    let r = server.expect_err("webpki refuses SHA-1");
    let refusal = r.refusal().expect("typed");
    assert_eq!((refusal.rule.code(), refusal.depth), ("signature", None), "{r}");
    assert!(
        r.to_string().contains("in the path: signature algorithm (not supported by path validation)"),
        "{r}"
    );
}

#[tokio::test]
async fn rsa_1024_leaf_is_refused_with_its_size() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "rsa:2048", None);
    let leaf = pki.leaf("rsa1024-leaf", "rsa:1024", &root);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf]).await,
        0,
        "rsa-key-size",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.rule, Rule::RsaKeySize { bits: 1024, min: 2048, max: 8192 });
}

#[tokio::test]
async fn rsa_1024_intermediate_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "rsa:2048", None);
    let int = pki.ca_of("int1024", "rsa:1024", Some(&root));
    let leaf = pki.leaf("leaf", "ec:P-256", &int);
    assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &int]).await,
        1,
        "rsa-key-size",
        AlertDescription::UnsupportedCertificate,
    );
}

#[tokio::test]
async fn min_rsa_3072_knob_refuses_rsa_2048_and_the_audit_names_weak_anchors() {
    let pki = Pki::new();
    let root = pki.ca_of("root3072", "rsa:3072", None);
    let leaf = pki.leaf("leaf2048", "rsa:2048", &root);
    // The default accepts RSA-2048 (positive control) ...
    assert_accepted(present(&pki, &root, ChainPolicy::default(), &[&leaf]).await);
    // ... a policy with a 3072-bit minimum refuses it.
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::new("min3072").min_rsa_bits(3072), &[&leaf]).await,
        0,
        "rsa-key-size",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.policy.as_ref(), "min3072");
    assert_eq!(r.rule, Rule::RsaKeySize { bits: 2048, min: 3072, max: 8192 });
    // A 2048-bit anchor under that policy is a configuration error, and so is one above the maximum.
    let root2048 = pki.ca_of("root2048", "rsa:2048", None);
    let err = single_host_err(&pki, &root2048, ChainPolicy::new("min3072").min_rsa_bits(3072));
    assert!(err.contains("RSA key of 2048 bits") && err.contains("root2048.crt"), "{err}");
    let err = single_host_err(&pki, &root2048, ChainPolicy::new("max").max_rsa_bits(2047).min_rsa_bits(1024));
    assert!(err.contains("RSA key of 2048 bits is outside 1024..=2047"), "{err}");
}

fn single_host_err(pki: &Pki, root: &Issued, policy: ChainPolicy) -> String {
    let hosts = portcullis_mtls::VirtualHosts::new();
    let (ks, _) = server_keystore(pki, "a", &["a.test"]);
    hosts.put_keystore(ks).expect("ks");
    hosts.put_truststore(truststore("clients", &[root])).expect("ts");
    let err = hosts
        .put(
            VirtualHost::new("a", ["a.test"], "a")
                .client_auth(ClientAuth::Required)
                .truststore("clients")
                .policy(policy),
        )
        .expect_err("audit");
    err.to_string()
}

#[tokio::test]
async fn non_nist_curve_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let leaf = pki.leaf("k1-leaf", "ec:secp256k1", &root);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf]).await,
        0,
        "curve",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.rule, Rule::Curve("1.3.132.0.10".into()));
}

#[tokio::test]
async fn p384_leaf_refused_when_the_curve_list_excludes_it() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let leaf = pki.leaf("p384-leaf", "ec:P-384", &root);
    let policy = ChainPolicy::new("p256-only").curves(vec![portcullis_mtls::Curve::P256]);
    let r = assert_refused(
        present(&pki, &root, policy, &[&leaf]).await,
        0,
        "curve",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.rule, Rule::Curve("P-384".into()));
}

#[tokio::test]
async fn dsa_leaf_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let leaf = pki.leaf("dsa-leaf", "dsa:2048", &root);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf]).await,
        0,
        "key-algorithm",
        AlertDescription::UnsupportedCertificate,
    );
    assert_eq!(r.rule, Rule::KeyAlgorithm("DSA".into()));
}

#[tokio::test]
async fn dsa_signed_intermediate_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("dsa-root", "dsa:2048", None);
    let int = pki.ca_of("int", "ec:P-256", Some(&root));
    let leaf = pki.leaf("leaf", "ec:P-256", &int);
    // The DSA root is already refused by the truststore audit ...
    let err = single_host_err(&pki, &root, ChainPolicy::default());
    assert!(err.contains("dsa-root") && err.contains("not accepted"), "{err}");
    drop((int, leaf));
}

#[tokio::test]
async fn expired_and_not_yet_valid_leaves_are_refused_with_certificate_expired() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let expired = pki.rcgen_issue("expired-leaf", Some(&root), false, (2020, 1, 1), (2021, 1, 1));
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&expired]).await,
        0,
        "expired",
        AlertDescription::CertificateExpired,
    );
    assert!(r.subject.contains("expired-leaf"));
    let future = pki.rcgen_issue("future-leaf", Some(&root), false, (2090, 1, 1), (2091, 1, 1));
    assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&future]).await,
        0,
        "not-yet-valid",
        AlertDescription::CertificateExpired,
    );
}

#[tokio::test]
async fn expired_intermediate_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let int = pki.rcgen_issue("expired-int", Some(&root), true, (2020, 1, 1), (2021, 1, 1));
    let leaf = pki.leaf("leaf", "ec:P-256", &int);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &int]).await,
        1,
        "expired",
        AlertDescription::CertificateExpired,
    );
    assert_eq!(r.role, Some(Role::Intermediate));
}

#[tokio::test]
async fn intermediate_without_ca_or_keycertsign_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let not_ca = pki.issue_named(
        "not-ca",
        "ec:P-256",
        Some(&root),
        &["-sha256"],
        "basicConstraints=critical,CA:FALSE\n",
    );
    let leaf = pki.leaf("leaf", "ec:P-256", &not_ca);
    assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &not_ca]).await,
        1,
        "not-ca",
        AlertDescription::BadCertificate,
    );
    let no_kcs = pki.issue_named(
        "no-kcs",
        "ec:P-256",
        Some(&root),
        &["-sha256"],
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature\n",
    );
    let leaf = pki.leaf("leaf2", "ec:P-256", &no_kcs);
    assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &no_kcs]).await,
        1,
        "no-key-cert-sign",
        AlertDescription::BadCertificate,
    );
}

#[tokio::test]
async fn path_len_violations_are_refused_on_intermediates_and_anchors() {
    let pki = Pki::new();
    // An anchor with pathlen:0 may only sign leaves; an intermediate below it breaks the constraint.
    let root = pki.issue_named(
        "root-pl0",
        "ec:P-256",
        None,
        &["-sha256"],
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\n",
    );
    let int = pki.ca_of("int", "ec:P-256", Some(&root));
    let leaf = pki.leaf("leaf", "ec:P-256", &int);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &int]).await,
        2,
        "path-len",
        AlertDescription::BadCertificate,
    );
    assert_eq!(r.role, Some(Role::Anchor));
    assert_eq!(r.rule, Rule::PathLen { limit: 0, below: 1 });

    // An intermediate with pathlen:0 above another intermediate.
    let root = pki.ca_of("root2", "ec:P-256", None);
    let upper = pki.issue_named(
        "upper-pl0",
        "ec:P-256",
        Some(&root),
        &["-sha256"],
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\n",
    );
    let lower = pki.ca_of("lower", "ec:P-256", Some(&upper));
    let leaf = pki.leaf("leaf2", "ec:P-256", &lower);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf, &lower, &upper]).await,
        2,
        "path-len",
        AlertDescription::BadCertificate,
    );
    assert_eq!(r.role, Some(Role::Intermediate));
}

#[tokio::test]
async fn ca_leaf_is_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let leaf = pki.issue_named(
        "ca-leaf",
        "ec:P-256",
        Some(&root),
        &["-sha256"],
        "basicConstraints=critical,CA:TRUE\n",
    );
    assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf]).await,
        0,
        "leaf-is-ca",
        AlertDescription::BadCertificate,
    );
}

#[tokio::test]
async fn leaf_eku_without_client_auth_is_refused_and_strict_needs_an_eku() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let server_only = pki.issue_named(
        "server-eku",
        "ec:P-256",
        Some(&root),
        &["-sha256"],
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&server_only]).await,
        0,
        "eku-client-auth",
        AlertDescription::UnsupportedCertificate,
    );
    let no_eku = pki.issue_named(
        "no-eku",
        "ec:P-256",
        Some(&root),
        &["-sha256"],
        "basicConstraints=critical,CA:FALSE\n",
    );
    // Default: a leaf without EKU passes ...
    assert_accepted(present(&pki, &root, ChainPolicy::default(), &[&no_eku]).await);
    // ... the strict variant refuses it.
    assert_refused(
        present(&pki, &root, ChainPolicy::new("strict").eku(EkuRule::Required), &[&no_eku]).await,
        0,
        "eku-missing",
        AlertDescription::UnsupportedCertificate,
    );
}

#[tokio::test]
async fn chains_longer_than_the_maximum_are_refused() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let i1 = pki.ca_of("i1", "ec:P-256", Some(&root));
    let i2 = pki.ca_of("i2", "ec:P-256", Some(&i1));
    let leaf = pki.leaf("leaf", "ec:P-256", &i2);
    assert_accepted(present(&pki, &root, ChainPolicy::default(), &[&leaf, &i2, &i1]).await);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::new("short").max_chain_len(2), &[&leaf, &i2, &i1]).await,
        None,
        "too-deep",
        AlertDescription::BadCertificate,
    );
    assert_eq!(r.rule, Rule::TooDeep { presented: 3, max: 2 });
}

#[tokio::test]
async fn unknown_issuer_is_refused_by_path_validation() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let other = pki.ca_of("other-root", "ec:P-256", None);
    let leaf = pki.leaf("stranger", "ec:P-256", &other);
    let r = assert_refused(
        present(&pki, &root, ChainPolicy::default(), &[&leaf]).await,
        0,
        "unknown-issuer",
        AlertDescription::UnknownCA,
    );
    assert!(!format!("{r}").contains("UnknownIssuer"), "no Debug text: {r}");
    assert!(r.subject.contains("CN=stranger"), "the leaf whose issuer is unknown is named: {r}");
}

#[tokio::test]
async fn forged_chain_with_a_trusted_issuer_name_is_refused_by_webpki() {
    // A self-made CA with the same subject as the trusted root: every policy rule passes, only the
    // signature check (webpki) can catch it.
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let pki2 = Pki::new();
    let fake_root = pki2.ca_of("root", "ec:P-256", None);
    let leaf = pki2.leaf("forged", "ec:P-256", &fake_root);
    let (_, server) = present(&pki, &root, ChainPolicy::default(), &[&leaf]).await;
    let err = server.expect_err("forged chain");
    assert_eq!(err.refusal().map(|r| r.rule.code()), Some("bad-signature"), "{err}");
}

#[tokio::test]
async fn no_client_certificate_on_a_required_host_fails_the_handshake() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let (hosts, server_ca) = single_host(&pki, &root, ChainPolicy::default());
    let (seen, server) =
        handshake(&MtlsAcceptor::new(hosts), client_config(&server_ca, &[], None), "a.test").await;
    assert!(matches!(server, Err(AcceptError::Handshake { .. })), "{server:?}");
    assert!(matches!(seen, Seen::Alert(AlertDescription::CertificateRequired)), "{seen:?}");
}

#[tokio::test]
async fn allowed_identities_admit_only_the_listed_thumbprint() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let alice = pki.leaf("alice", "ec:P-256", &root);
    let bob = pki.leaf("bob", "ec:P-256", &root);
    let alice_sha = portcullis_mtls::client_cert(std::slice::from_ref(&alice.der)).expect("cert").sha256;
    let hosts = portcullis_mtls::VirtualHosts::new();
    let (ks, server_ca) = server_keystore(&pki, "a", &["a.test"]);
    hosts.put_keystore(ks).expect("ks");
    hosts.put_truststore(truststore("clients", &[&root])).expect("ts");
    hosts
        .put(
            VirtualHost::new("a", ["a.test"], "a")
                .client_auth(ClientAuth::Required)
                .truststore("clients")
                .allowed_identities(vec![AllowedIdentity::thumbprint(&alice_sha.to_uppercase())]),
        )
        .expect("vhost");
    let acceptor = MtlsAcceptor::new(hosts.clone());
    assert_accepted(handshake(&acceptor, client_config(&server_ca, &[&alice], Some(&alice)), "a.test").await);
    assert_refused(
        handshake(&acceptor, client_config(&server_ca, &[&bob], Some(&bob)), "a.test").await,
        0,
        "identity",
        AlertDescription::AccessDenied,
    );
    // More than ten identities is a configuration error.
    let many = vec![AllowedIdentity::default().subject("CN=x"); 11];
    let err = hosts
        .put(
            VirtualHost::new("b", ["b.test"], "a")
                .client_auth(ClientAuth::Required)
                .truststore("clients")
                .allowed_identities(many),
        )
        .expect_err("11 identities");
    assert!(err.to_string().contains("at most 10"), "{err}");
}

#[test]
fn an_anchor_expired_at_verification_time_is_refused() {
    // The root is valid when loaded (the audit passes) but has expired by the time the chain is verified,
    // while the leaf is still valid: webpki does not look at the anchor's validity, the policy does.
    let pki = Pki::new();
    let root = pki.rcgen_issue("short-root", None, true, (2020, 1, 1), (2090, 1, 1));
    let leaf = pki.rcgen_issue("long-leaf", Some(&root), false, (2020, 1, 1), (2095, 1, 1));
    let verifier =
        PolicyVerifier::builder(ChainPolicy::default(), truststore("t", &[&root])).build().expect("audit");
    let now = UnixTime::now();
    verifier.verify(&leaf.der, &[], now).map_err(|(r, _)| r).expect("valid today");
    let y2092 = UnixTime::since_unix_epoch(Duration::from_secs(3_849_000_000));
    let (refusal, err) = verifier.verify(&leaf.der, &[], y2092).expect_err("anchor expired");
    assert_eq!(refusal.role, Some(Role::Anchor));
    assert_eq!(refusal.depth, Some(1));
    assert_eq!(refusal.rule.code(), "expired");
    assert!(refusal.subject.contains("short-root"));
    assert!(matches!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
    ));
}

#[test]
fn policy_checks_run_before_signatures() {
    // A chain whose signatures are garbage but whose leaf is RSA-1024 is refused for the key, by the
    // parse-only checks, without reaching webpki.
    let pki = Pki::new();
    let root = pki.ca_of("root", "rsa:2048", None);
    let leaf = pki.leaf("weak", "rsa:1024", &root);
    let mut tampered = leaf.der.to_vec();
    let n = tampered.len();
    tampered[n - 5] ^= 0xff; // inside the signature value
    let tampered = rustls::pki_types::CertificateDer::from(tampered);
    let verifier =
        PolicyVerifier::builder(ChainPolicy::default(), truststore("t", &[&root])).build().expect("audit");
    let (refusal, _) = verifier.verify(&tampered, &[], UnixTime::now()).expect_err("refused");
    assert_eq!(refusal.rule.code(), "rsa-key-size");
    // With a strong key the same tampering is caught by webpki's signature check.
    let good = pki.leaf("good", "rsa:2048", &root);
    let mut tampered = good.der.to_vec();
    let n = tampered.len();
    tampered[n - 5] ^= 0xff;
    let tampered = rustls::pki_types::CertificateDer::from(tampered);
    let (refusal, err) = verifier.verify(&tampered, &[], UnixTime::now()).expect_err("bad signature");
    assert_eq!(refusal.rule.code(), "bad-signature");
    assert_eq!(err, rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature));
}
