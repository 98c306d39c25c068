//! Request authorities (Host header, :authority, absolute-form URI) and configured host patterns.
//!
//! Beyond "no panic": an accepted authority or pattern prints a canonical form that parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_host::{HostPattern, RequestHost};

fuzz_target!(|data: &[u8]| {
    if let Ok(host) = RequestHost::parse(data) {
        // Display is the normalised host alone; the port is put back to compare.
        let text = match host.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let again = RequestHost::parse(text.as_bytes()).expect("a parsed host's text parses");
        assert_eq!(again, host, "{text}");
        assert_eq!(again.to_string(), host.to_string());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pattern) = HostPattern::parse(text) {
            let canonical = pattern.to_string();
            let again = HostPattern::parse(&canonical).expect("a pattern's canonical text parses");
            assert_eq!(again, pattern, "{text:?} -> {canonical:?}");
        }
    }
});
