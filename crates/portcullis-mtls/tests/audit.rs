//! The truststore audit: weak, expired and non-CA anchors are configuration errors naming the file, the
//! subject and the rule, unless explicitly allowed.

mod support;

use portcullis_mtls::{
    AuditAllowances, ChainPolicy, ClientAuth, ConfigError, MtlsAcceptor, Rule, Truststore, VirtualHost,
    VirtualHosts,
};
use rustls::pki_types::UnixTime;
use support::*;

fn audit_err(ts: &Truststore) -> (String, String, Rule) {
    match ts.audit(&ChainPolicy::default(), UnixTime::now()) {
        Err(ConfigError::WeakAnchor(a)) => (a.file, a.subject, a.rule),
        other => panic!("expected a weak anchor, got {other:?}"),
    }
}

#[test]
fn rsa_1024_anchor_is_a_config_error_naming_file_subject_and_rule() {
    let pki = Pki::new();
    let root = pki.ca_of("weak-root", "rsa:1024", None);
    let mut ts = Truststore::new("partners");
    ts.add_pem_file(&root.cert).expect("load");
    let (file, subject, rule) = audit_err(&ts);
    assert_eq!(file, root.cert.display().to_string());
    assert!(subject.contains("CN=weak-root"), "{subject}");
    assert_eq!(rule, Rule::RsaKeySize { bits: 1024, min: 2048, max: 8192 });
    let msg = ts.audit(&ChainPolicy::default(), UnixTime::now()).unwrap_err().to_string();
    assert!(msg.contains("partners") && msg.contains("weak-root.crt") && msg.contains("1024"), "{msg}");
}

#[test]
fn sha1_self_signed_anchor_is_refused() {
    let pki = Pki::new();
    let root = pki.issue_named("sha1-root", "rsa:2048", None, &["-sha1"], CA_EXT);
    let (_, _, rule) = audit_err(&truststore("t", &[&root]));
    assert_eq!(rule, Rule::Signature("sha1WithRSAEncryption".into()));
}

#[test]
fn md5_self_signed_anchor_is_refused() {
    let pki = Pki::new();
    let root = pki.issue_named("md5-root", "rsa:2048", None, &["-md5"], CA_EXT);
    let (_, _, rule) = audit_err(&truststore("t", &[&root]));
    assert_eq!(rule, Rule::Signature("md5WithRSAEncryption".into()));
}

#[test]
fn expired_anchor_is_refused_unless_allowed() {
    let pki = Pki::new();
    let root = pki.rcgen_issue("old-root", None, true, (2015, 1, 1), (2020, 1, 1));
    let ts = truststore("t", &[&root]);
    let (_, subject, rule) = audit_err(&ts);
    assert!(subject.contains("old-root"));
    assert_eq!(rule.code(), "expired");
    let allowed = ts.allow(AuditAllowances { expired_anchors: true, ..AuditAllowances::default() });
    allowed.audit(&ChainPolicy::default(), UnixTime::now()).expect("explicitly allowed");
}

#[test]
fn non_ca_anchor_is_refused_unless_allowed() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let pinned = pki.leaf("pinned-leaf", "ec:P-256", &root);
    let ts = truststore("t", &[&pinned]);
    let (_, subject, rule) = audit_err(&ts);
    assert!(subject.contains("pinned-leaf"));
    assert_eq!(rule, Rule::AnchorNotCa);
    let allowed = ts.allow(AuditAllowances { non_ca_anchors: true, ..AuditAllowances::default() });
    allowed.audit(&ChainPolicy::default(), UnixTime::now()).expect("explicitly allowed");
}

#[test]
fn weak_anchor_allowed_explicitly_still_checks_the_rest() {
    let pki = Pki::new();
    let weak = pki.ca_of("weak-root", "rsa:1024", None);
    let weak_ts =
        truststore("t", &[&weak]).allow(AuditAllowances { weak_anchors: true, ..Default::default() });
    weak_ts.audit(&ChainPolicy::default(), UnixTime::now()).expect("allowed");
    // Allowing weak anchors does not allow non-CA ones.
    let root = pki.ca_of("root", "ec:P-256", None);
    let leaf = pki.leaf("leaf", "ec:P-256", &root);
    let ts =
        truststore("t", &[&root, &leaf]).allow(AuditAllowances { weak_anchors: true, ..Default::default() });
    let (_, subject, rule) = audit_err(&ts);
    assert!(subject.contains("CN=leaf"));
    assert_eq!(rule, Rule::AnchorNotCa);
}

#[test]
fn empty_and_unreadable_truststores_are_errors() {
    assert!(matches!(
        Truststore::new("e").audit(&ChainPolicy::default(), UnixTime::now()),
        Err(ConfigError::EmptyTruststore(_))
    ));
    let err = Truststore::new("x").add_pem_file("/nonexistent/ca.pem").expect_err("missing file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn replacing_a_truststore_with_a_weak_anchor_is_refused_and_the_old_one_keeps_serving() {
    let pki = Pki::new();
    let root = pki.ca_of("root", "ec:P-256", None);
    let leaf = pki.leaf("leaf", "ec:P-256", &root);
    let (hosts, server_ca) = single_host(&pki, &root, ChainPolicy::default());
    let weak = pki.ca_of("weak-root", "rsa:1024", None);
    let err = hosts.put_truststore(truststore("clients", &[&weak])).expect_err("weak anchor");
    assert!(matches!(err, ConfigError::WeakAnchor(_)), "{err}");
    let acceptor = MtlsAcceptor::new(hosts);
    let (seen, server) =
        handshake(&acceptor, client_config(&server_ca, &[&leaf], Some(&leaf)), "a.test").await;
    assert!(matches!(seen, Seen::Ok), "{seen:?}");
    assert!(server.is_ok());
}

#[test]
fn a_host_cannot_use_a_truststore_its_policy_finds_weak() {
    let pki = Pki::new();
    let root = pki.ca_of("root2048", "rsa:2048", None);
    let hosts = VirtualHosts::new();
    let (ks, _) = server_keystore(&pki, "a", &["a.test"]);
    hosts.put_keystore(ks).expect("ks");
    hosts.put_truststore(truststore("clients", &[&root])).expect("loads: audited per host policy");
    let vhost =
        VirtualHost::new("a", ["a.test"], "a").client_auth(ClientAuth::Required).truststore("clients");
    hosts.put(vhost.clone()).expect("default policy accepts RSA-2048");
    let err = hosts.put(vhost.policy(ChainPolicy::new("strict").min_rsa_bits(3072))).expect_err("strict");
    assert!(err.to_string().contains("root2048"), "{err}");
}

#[test]
fn every_weakness_of_a_refused_anchor_is_listed() {
    let pki = Pki::new();
    let root = pki.issue_named("weak-sha1-root", "rsa:1024", None, &["-sha1"], CA_EXT);
    let err = truststore("t", &[&root]).audit(&ChainPolicy::default(), UnixTime::now()).unwrap_err();
    let ConfigError::WeakAnchor(a) = &err else { panic!("expected a weak anchor, got {err:?}") };
    assert_eq!(a.rule, Rule::Signature("sha1WithRSAEncryption".into()));
    assert_eq!(a.more, [Rule::RsaKeySize { bits: 1024, min: 2048, max: 8192 }]);
    let msg = err.to_string();
    assert!(msg.contains("sha1WithRSAEncryption") && msg.contains("; also") && msg.contains("1024"), "{msg}");
}
