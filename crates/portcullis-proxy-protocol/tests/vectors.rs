//! Every vector of tests/vectors/proxy_protocol_vectors.json (provenance in tests/vectors/PROVENANCE.md) must
//! behave as marked: accepted with the decoded fields it lists, or rejected.
//!
//! A "reject" vector is fed as the whole input: an error, or a header still incomplete when the input ends
//! (the reader closes such a connection at end of stream or at the deadline). Which vectors are rejected for
//! being incomplete is pinned below, so that an error turning into "wait for more" is noticed.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_core::{LinkId, ProxyInfo, fold_socket_addr};
use portcullis_proxy_protocol::{ParseError, Parsed, parse, tlv, tlvs};
use serde_json::Value;

/// Reject vectors whose input is a valid beginning of a header that never ends.
const REJECTED_AS_INCOMPLETE: &[&str] = &[
    "PROX",
    "missing CRLF",
    "signature only",
    "TCP4 no length",
    "TCP4 length 12 but no address bytes",
    "TCP6 length 36 but no address bytes",
    "TCP6 length 36 but only 12 bytes of IPv4 block",
    "UNIX length 216 but no bytes",
];

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/proxy_protocol_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("vector JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn addr(v: &Value) -> Option<SocketAddr> {
    v.as_str().map(|s| fold_socket_addr(s.parse().expect("vector address")))
}

enum Outcome {
    Accepted(ProxyInfo, usize),
    Incomplete,
    Error,
}

fn run(input: &[u8]) -> Outcome {
    match parse(input) {
        Ok(Parsed::Complete { info, consumed }) => Outcome::Accepted(info, consumed),
        Ok(Parsed::Incomplete { .. }) => Outcome::Incomplete,
        Err(_) => Outcome::Error,
    }
}

fn check_reject(name: &str, input: &[u8], incomplete: &mut Vec<String>) {
    match run(input) {
        Outcome::Accepted(info, _) => panic!("{name}: accepted, expected a rejection: {info:?}"),
        Outcome::Incomplete => incomplete.push(name.to_owned()),
        Outcome::Error => {}
    }
}

#[test]
fn v1_vectors() {
    let v = vectors();
    let mut incomplete = Vec::new();
    let cases = v["v1"].as_array().expect("v1 array");
    assert_eq!(cases.len(), 30);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let input = case["input"].as_str().expect("input").as_bytes();
        match case["expect"].as_str() {
            Some("accept") => {
                let Outcome::Accepted(info, consumed) = run(input) else {
                    panic!("{name}: expected accept, got {:?}", parse(input))
                };
                assert_eq!(info.version, portcullis_core::ProxyVersion::V1, "{name}");
                let line_end = input.windows(2).position(|w| w == b"\r\n").expect("CRLF") + 2;
                assert_eq!(consumed, line_end, "{name}: consumed");
                if let Some(trailing) = case["trailing"].as_str() {
                    assert_eq!(&input[consumed..], trailing.as_bytes(), "{name}: trailing");
                }
                if case["src"].is_string() {
                    assert_eq!(info.source, addr(&case["src"]), "{name}: src");
                }
                if case["dst"].is_string() {
                    assert_eq!(info.destination, addr(&case["dst"]), "{name}: dst");
                }
                if name.starts_with("UNKNOWN") {
                    assert_eq!((info.source, info.destination), (None, None), "{name}: UNKNOWN");
                }
            }
            Some("reject") => check_reject(name, input, &mut incomplete),
            other => panic!("{name}: unknown expectation {other:?}"),
        }
    }
    let expected: Vec<_> = ["PROX", "missing CRLF"].iter().map(|s| s.to_string()).collect();
    assert_eq!(incomplete, expected);
}

#[test]
fn v2_vectors() {
    let v = vectors();
    let mut incomplete = Vec::new();
    let cases = v["v2"].as_array().expect("v2 array");
    assert_eq!(cases.len(), 29);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let input = match (case["hex"].as_str(), case["hex_prefix"].as_str()) {
            (Some(hex), _) => unhex(hex),
            (None, Some(prefix)) => {
                let mut bytes = unhex(prefix);
                let zeros = case["payload_zero_bytes"].as_u64().expect("payload_zero_bytes");
                bytes.resize(bytes.len() + usize::try_from(zeros).unwrap(), 0);
                bytes
            }
            _ => panic!("{name}: no input"),
        };
        match case["expect"].as_str() {
            Some("accept") => {
                let Outcome::Accepted(info, consumed) = run(&input) else {
                    panic!("{name}: expected accept, got {:?}", parse(&input))
                };
                check_accepted_v2(name, case, &input, &info, consumed);
            }
            Some("reject" | "reject_tlvs") => check_reject(name, &input, &mut incomplete),
            other => panic!("{name}: unknown expectation {other:?}"),
        }
    }
    let expected: Vec<_> = REJECTED_AS_INCOMPLETE
        .iter()
        .filter(|n| !["PROX", "missing CRLF"].contains(n))
        .map(|s| s.to_string())
        .collect();
    assert_eq!(incomplete, expected);
}

fn check_accepted_v2(name: &str, case: &Value, input: &[u8], info: &ProxyInfo, consumed: usize) {
    assert_eq!(info.version, portcullis_core::ProxyVersion::V2, "{name}");
    assert_eq!(consumed, input.len(), "{name}: each v2 vector is exactly one header");
    let local = input[12] & 0x0f == 0;
    let unix = input[13] >> 4 == 3;
    if local || unix {
        assert_eq!((info.source, info.destination), (None, None), "{name}: no addresses");
    } else {
        assert!(info.source.is_some() && info.destination.is_some(), "{name}: addresses");
    }
    if case["src"].is_string() {
        assert_eq!(info.source, addr(&case["src"]), "{name}: src");
    }
    if case["dst"].is_string() {
        assert_eq!(info.destination, addr(&case["dst"]), "{name}: dst");
    }
    if let Some(family) = case["family"].as_str() {
        let is_v4 = info.source.map(|s| s.is_ipv4());
        // TCP6 with v4-mapped addresses is folded to IPv4.
        let mapped = case["src"].as_str().is_some_and(|s| s.contains("::ffff:"));
        match family {
            "TCP4" => assert_eq!(is_v4, Some(true), "{name}"),
            "TCP6" => assert_eq!(is_v4, Some(mapped), "{name}"),
            other => panic!("{name}: family {other}"),
        }
    }
    if case["command"].as_str() == Some("PROXY") {
        assert!(!local, "{name}: command");
    }

    let raw: Vec<_> =
        tlvs(input).expect("tlvs").collect::<Result<_, _>>().expect("tlvs of an accepted header");
    let mut link_expected = None;
    for tlv in case["tlvs"].as_array().into_iter().flatten() {
        let kind = tlv["type"].as_str().expect("type");
        let code = u8::from_str_radix(&kind[2..4], 16).expect("type code");
        let found =
            raw.iter().find(|t| t.kind == code).unwrap_or_else(|| panic!("{name}: TLV {kind} missing"));
        if let Some(hex) = tlv["value_hex"].as_str() {
            assert_eq!(found.value, unhex(hex), "{name}: {kind} value");
        }
        if let Some(len) = tlv["len"].as_u64() {
            assert_eq!(found.value.len() as u64, len, "{name}: {kind} length");
        }
        if tlv["crc_valid"].as_bool() == Some(true) {
            assert_eq!(code, tlv::CRC32C);
            // Accepted means the checksum matched; a flipped payload bit must now be caught.
            let mut bad = input.to_vec();
            bad[17] ^= 0x01;
            assert!(matches!(parse(&bad), Err(ParseError::Crc32c { .. })), "{name}: CRC32C not checked");
        }
        match (code, tlv["value"].as_str()) {
            (tlv::AWS, Some(value)) => {
                assert_eq!(tlv["subtype"].as_str().map(|s| &s[..4]), Some("0x01"));
                assert_eq!(&found.value[1..], value.as_bytes(), "{name}: AWS value");
                link_expected = Some(LinkId::Aws(Arc::from(value)));
            }
            (_, Some(value)) => assert_eq!(found.value, value.as_bytes(), "{name}: {kind} value"),
            (_, None) => {}
        }
    }
    assert_eq!(info.link_id, link_expected, "{name}: link id");

    match case.get("ssl") {
        None => assert_eq!(info.ssl, None, "{name}: ssl"),
        Some(ssl) => {
            let got = info.ssl.as_ref().unwrap_or_else(|| panic!("{name}: SSL TLV not decoded"));
            let bits = ssl["client_bits"].as_str().expect("client_bits");
            let bits = u8::from_str_radix(&bits[2..4], 16).expect("bits");
            assert_eq!(got.client_ssl, bits & 1 != 0, "{name}: client_ssl");
            assert_eq!(got.client_cert_conn, bits & 2 != 0, "{name}: cert_conn");
            assert_eq!(got.client_cert_sess, bits & 4 != 0, "{name}: cert_sess");
            assert_eq!(u64::from(got.verify), ssl["verify"].as_u64().expect("verify"), "{name}: verify");
            assert_eq!(got.version.as_deref(), ssl["version"].as_str(), "{name}: version");
            assert_eq!(got.common_name.as_deref(), ssl["cn"].as_str(), "{name}: cn");
            assert_eq!(got.cipher.as_deref(), ssl["cipher"].as_str(), "{name}: cipher");
        }
    }
}

#[test]
fn spec_limits_match_the_parser() {
    let v = vectors();
    let limits = &v["spec_limits"];
    assert_eq!(
        limits["v1_max_line_incl_crlf"].as_u64(),
        Some(portcullis_proxy_protocol::parse::V1_MAX_LEN as u64)
    );
    assert_eq!(
        limits["v2_fixed_header_bytes"].as_u64(),
        Some(portcullis_proxy_protocol::parse::V2_FIXED_LEN as u64)
    );
    assert_eq!(unhex(v["signature_hex"].as_str().unwrap()), portcullis_proxy_protocol::parse::V2_SIGNATURE);
    // A v1 line of exactly 107 bytes is accepted, 108 is not.
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(105, b'x');
    line.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&line), Ok(Parsed::Complete { consumed: 107, .. })));
    line.insert(20, b'x');
    assert_eq!(parse(&line), Err(ParseError::V1TooLong));
}

#[test]
fn every_strict_prefix_of_an_accepted_vector_is_incomplete() {
    let v = vectors();
    for case in v["v2"].as_array().unwrap().iter().filter(|c| c["expect"] == "accept") {
        let input = unhex(case["hex"].as_str().unwrap());
        for cut in 0..input.len() {
            assert!(
                matches!(parse(&input[..cut]), Ok(Parsed::Incomplete { .. })),
                "{}: prefix of {cut} bytes",
                case["name"]
            );
        }
    }
}
