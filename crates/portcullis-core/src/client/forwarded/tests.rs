use super::*;

/// RFC 7239 syntax vectors from forwarded-parse (see tests/vectors/PROVENANCE.md).
#[test]
fn forwarded_parse_vectors() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../../tests/vectors/forwarded-parse_cases.json")).unwrap();
    for case in v["valid"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let got = parse_forwarded(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        let want: Vec<Vec<(String, String)>> = case["parsed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|el| {
                let mut pairs: Vec<(String, String)> = el
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                pairs.sort();
                pairs
            })
            .collect();
        let got: Vec<Vec<(String, String)>> = got
            .into_iter()
            .map(|mut el| {
                el.sort();
                el
            })
            .collect();
        assert_eq!(got, want, "{input:?}");
    }
    for case in v["invalid"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let result = parse_forwarded(input);
        if input == "foo=\"Ω\", foo=baz" {
            // Policy difference: forwarded-parse checks JavaScript characters (≤ U+00FF is obs-text), we check
            // header bytes as HTTP does: UTF-8 bytes ≥ 0x80 are obs-text, allowed inside a quoted-string.
            assert!(result.is_ok(), "{input:?}");
            continue;
        }
        let err = result.expect_err(input);
        let want = match &case["error_index"] {
            serde_json::Value::String(s) if s == "end" => input.len(),
            n => n.as_u64().unwrap() as usize,
        };
        assert_eq!(err.index, want, "{input:?}");
    }
}

#[test]
fn nodes() {
    let ok = |s: &str, want: &str| assert_eq!(parse_node(s), Ok(want.parse().unwrap()), "{s}");
    ok("192.0.2.43", "192.0.2.43");
    ok("192.0.2.43:47011", "192.0.2.43");
    ok("[2001:db8:cafe::17]", "2001:db8:cafe::17");
    ok("[2001:db8:cafe::17]:4711", "2001:db8:cafe::17");
    ok("2001:db8::1", "2001:db8::1");
    ok("::ffff:10.0.0.1", "10.0.0.1");
    ok("[::ffff:10.0.0.1]:80", "10.0.0.1");
    ok("::ffff:a00:1", "10.0.0.1");
    let bad = |s: &str, want: EntryError| assert_eq!(parse_node(s), Err(want), "{s}");
    bad("", EntryError::Empty);
    bad("unknown", EntryError::Unknown);
    bad("UNKNOWN", EntryError::Unknown);
    bad("_hidden", EntryError::Obfuscated);
    for garbage in [
        "1.2.3.4:",
        "1.2.3.4:65536",
        "1.2.3.4:_port",
        "1.2.3.4:+80",
        "[2001:db8::1]:",
        "[2001:db8::1",
        "2001:db8::1]",
        "[1.2.3.4]",
        "fe80::1%eth0",
        "[fe80::1%2]:80",
        "010.0.0.1",
        "1.2.3",
        "127.1",
        "0x7f.0.0.1",
        "1.2.3.4.5",
        "example.com",
        "1.2.3.4 5.6.7.8",
        "1.2.3.4;for=5.6.7.8",
        "[::1]x",
    ] {
        bad(garbage, EntryError::Garbage);
    }
    assert_eq!(parse_xff_entry("  203.0.113.9\t"), Ok("203.0.113.9".parse().unwrap()));
}

#[test]
fn scan_reports_pairs_in_order_without_allocating_values() {
    let line = br#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8::1]:4711", proto=https"#;
    let mut pairs = Vec::new();
    let n = scan_forwarded(line, |p| pairs.push((p.element, p.name.to_vec(), p.value.to_vec()))).unwrap();
    assert_eq!(n, 3);
    assert_eq!(pairs[0], (0, b"for".to_vec(), b"192.0.2.60".to_vec()));
    assert_eq!(pairs[3], (1, b"for".to_vec(), b"[2001:db8::1]:4711".to_vec()));
    assert_eq!(pairs[4], (2, b"proto".to_vec(), b"https".to_vec()));
}

#[test]
fn truncated_and_odd_lines_are_errors_not_panics() {
    let line = br#"for="[2001:db8::1]:4711";proto=https, for=1.2.3.4"#;
    for end in 0..line.len() {
        // Every prefix either parses or errors inside the input; none panics.
        if let Err(e) = scan_forwarded(&line[..end], |_| {}) {
            assert!(e.index <= end);
        }
    }
    assert!(scan_forwarded(b"for=\"\\", |_| {}).is_err());
    assert!(scan_forwarded(b",", |_| {}).is_err());
    assert!(scan_forwarded(b"for=1.2.3.4,,for=5.6.7.8", |_| {}).is_err());
    assert!(scan_forwarded(b"for=1.2.3.4\x00", |_| {}).is_err());
}

proptest::proptest! {
    /// Arbitrary bytes never panic the scanner, and an error always points inside the input (or at its end).
    #[test]
    fn arbitrary_forwarded_bytes_never_panic(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        if let Err(e) = scan_forwarded(&line, |_| {}) {
            proptest::prop_assert!(e.index <= line.len());
        }
        if let Ok(s) = std::str::from_utf8(&line) {
            let _ = parse_xff_entry(s);
            let _ = parse_forwarded(s);
        }
    }
}

/// Dotted quads are std's: no leading zeros, no octet above 255.
#[test]
fn dotted_quads_are_read_as_std_reads_them() {
    assert_eq!(parse_xff_entry(" 10.20.30.40\t"), Ok(IpAddr::V4(Ipv4Addr::new(10, 20, 30, 40))));
    assert_eq!(parse_node("01.2.3.4"), Err(EntryError::Garbage));
    assert_eq!(parse_node("256.1.1.1"), Err(EntryError::Garbage));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_node_takes_what_std_takes(s in "([0-9]{0,4}\\.){0,5}[0-9]{0,4}|[0-9.]{0,20}") {
        proptest::prop_assert_eq!(parse_node(&s).ok(), s.parse::<Ipv4Addr>().ok().map(IpAddr::V4));
    }
}

mod fast_paths {
    use super::super::{parse_xff_bytes, parse_xff_entry};
    use proptest::prelude::*;

    fn check(line: &[u8]) {
        // The bytes path (trim, dotted-quad shortcut, then the general parser) answers what the general
        // parser answers on the trimmed text, and fails (never panics) on bytes that are not UTF-8.
        match std::str::from_utf8(line) {
            Ok(text) => {
                let want = super::super::parse_node(text.trim_matches([' ', '\t']));
                assert_eq!(parse_xff_bytes(line), want, "{line:?}");
                assert_eq!(parse_xff_entry(text), want, "{line:?}");
            }
            Err(_) => assert!(parse_xff_bytes(line).is_err(), "{line:?}"),
        }
    }

    #[test]
    fn entries_with_blanks() {
        for s in [
            "a, 10.0.0.1",
            "1.2.3.4,",
            ",",
            " ,1.1.1.1 ",
            "::ffff:1.2.3.4",
            "[::1]:80",
            " \t",
            "1.2.3.4 ",
            "2001:db8::1\t",
            " [::1]:80 ",
        ] {
            check(s.as_bytes());
        }
        check(b"10.0.0.\xff");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_bytes_path_agrees_with_the_general_path(line in "[0-9., \t,:a\\[\\]f]{0,24}") {
            check(line.as_bytes());
        }

        /// Addresses of every shape with blanks on either side, as proxies write them.
        #[test]
        fn blank_padded_addresses(
            addr in "(25[0-5]|1?[0-9]{1,2})(\\.(25[0-5]|1?[0-9]{1,2})){3}(:[0-9]{1,5})?|\\[?::(ffff:)?[0-9a-f]{1,4}\\]?",
            pre in "[ \t]{0,2}",
            post in "[ \t]{0,2}",
        ) {
            check(format!("{pre}{addr}{post}").as_bytes());
        }

        #[test]
        fn the_bytes_path_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            check(&bytes);
        }

    }
}
