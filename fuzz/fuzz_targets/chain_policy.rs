//! The chain policy over arbitrary DER bundles: the leaf checks on every certificate a TLS client could
//! present (run before any path is built), and the audit of what an operator puts in a truststore.
//!
//! The input is split into certificates the way a DER bundle is laid out: each element's length is read
//! from its outer `SEQUENCE` header; the remainder, when the header does not fit, is one last element.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis_mtls::{ChainPolicy, EkuRule, Truststore};
use rustls_pki_types::{CertificateDer, UnixTime};

/// The length of the DER element at the start of `data` (header included), when its header is readable.
fn element_len(data: &[u8]) -> Option<usize> {
    let first = *data.get(1)?;
    let (header, content) = match first {
        0..=0x7f => (2, usize::from(first)),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let bytes = data.get(2..2 + n)?;
            (2 + n, bytes.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b)))
        }
        _ => return None,
    };
    header.checked_add(content)
}

fn split_bundle(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < 8 {
        let n = element_len(data).filter(|n| *n > 0 && *n <= data.len()).unwrap_or(data.len());
        out.push(&data[..n]);
        data = &data[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let bundle = split_bundle(data);
    // 2024-06-01, so that generated certificates are within their validity.
    let now = UnixTime::since_unix_epoch(Duration::from_secs(1_717_200_000));
    let strict = ChainPolicy::new("strict");
    let lax = ChainPolicy::new("lax")
        .min_rsa_bits(512)
        .allow_sha1(true)
        .allow_dsa(true)
        .check_validity(false)
        .check_ca_constraints(false)
        .refuse_ca_leaf(false)
        .eku(EkuRule::Ignore)
        .max_chain_len(8);
    for der in &bundle {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { continue };
        for policy in [&strict, &lax] {
            if let Err(rule) = policy.check_leaf(&cert, now) {
                let _ = (rule.to_string(), rule.code());
            }
        }
    }
    let mut store = Truststore::new("fuzz");
    for der in &bundle {
        let _ = store.add_der(CertificateDer::from(der.to_vec()), "fuzz.pem");
    }
    for policy in [&strict, &lax] {
        if let Err(e) = store.audit(policy, now) {
            let _ = e.to_string();
        }
    }
});
