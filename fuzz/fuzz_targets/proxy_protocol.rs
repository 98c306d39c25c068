//! PROXY protocol v1 lines and v2 headers with TLVs, as a peer on a PROXY listener sends them.
//!
//! Beyond "no panic": a complete header parses the same from exactly its own bytes, its strict
//! prefixes are never complete, and the TLV walk never reads past the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy_protocol::{LinkIdVendors, ParseOptions, Parsed, detect, parse, parse_with, tlvs};

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    match parse(data) {
        Ok(Parsed::Complete { info, consumed }) => {
            assert!(consumed <= data.len(), "consumed {consumed} of {}", data.len());
            let header = &data[..consumed];
            match parse(header) {
                Ok(Parsed::Complete { info: again, consumed: c }) => {
                    assert_eq!((&again, c), (&info, consumed), "the header alone parses the same")
                }
                other => panic!("the header alone: {other:?}"),
            }
            for cut in [consumed - 1, consumed / 2] {
                if let Ok(Parsed::Complete { .. }) = parse(&header[..cut]) {
                    panic!("a {cut}-byte prefix of a {consumed}-byte header is complete");
                }
            }
        }
        Ok(Parsed::Incomplete { needed }) => assert!(needed >= 1),
        Err(_) => {}
    }
    // The most permissive options: the full 64 KiB length, no vendor decoding.
    let wide = ParseOptions { max_v2_len: usize::from(u16::MAX), vendors: LinkIdVendors::NONE };
    let _ = parse_with(data, &wide);
    if let Ok(walk) = tlvs(data) {
        for tlv in walk.take(70_000) {
            match tlv {
                Ok(tlv) => assert!(tlv.value.len() <= data.len()),
                Err(_) => break,
            }
        }
    }
});
