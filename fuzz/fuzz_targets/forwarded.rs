//! `X-Forwarded-For` entries and `Forwarded` (RFC 7239) lines, as any client may send them.
//!
//! Beyond "no panic": the allocation-free scan and the owned parser agree on the elements, and every
//! pair's value lies inside the line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::client::forwarded::{parse_forwarded, parse_node, parse_xff_entry, scan_forwarded};

fuzz_target!(|data: &[u8]| {
    let mut pairs = 0usize;
    let mut last_element = 0usize;
    let scanned = scan_forwarded(data, |p| {
        assert!(p.element >= last_element, "elements go left to right");
        assert!(p.value.len() <= data.len() && p.name.len() <= data.len());
        last_element = p.element;
        pairs += 1;
    });
    if let Ok(elements) = scanned {
        assert_eq!(elements, last_element + 1);
        assert!(pairs >= elements);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        match (parse_forwarded(text), scanned) {
            (Ok(owned), Ok(n)) => {
                assert_eq!(owned.len(), n);
                assert_eq!(owned.iter().map(Vec::len).sum::<usize>(), pairs);
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("the scan and the parser disagree: {a:?} / {b:?}"),
        }
        let _ = parse_node(text);
        let _ = parse_xff_entry(text);
        for entry in text.split(',') {
            if let Ok(ip) = parse_xff_entry(entry) {
                // An accepted entry's address reads back as itself.
                assert_eq!(parse_xff_entry(&ip.to_string()), Ok(ip), "{entry:?}");
            }
        }
    }
});
