//! A flood of refused PROXY headers writes a bounded number of warnings, the rest at debug level, then one
//! "N more suppressed" line. Its own test binary: the limit is a process-wide static, shared with any test
//! running beside it.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_core::IpRange;
use portcullis_core::ratelimit::{DEFAULT_LINES_PER_WINDOW, DEFAULT_WINDOW};
use portcullis_proxy_protocol::{ProxyProtocolConfig, SourcePolicy};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_refused_headers_is_rate_limited() {
    let (captured, _guard) = portcullis_test_support::logs::capture(tracing::Level::DEBUG);
    let config = ProxyProtocolConfig::builder()
        .source("10.0.0.0/8".parse::<IpRange>().unwrap(), SourcePolicy::Required)
        .build()
        .unwrap();
    let peer: SocketAddr = "10.1.2.3:5000".parse().unwrap();
    let refuse = async || {
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(client);
        assert!(config.accept(server, peer).await.is_err());
    };
    let flood = 500;
    for _ in 0..flood {
        refuse().await;
    }
    tokio::time::sleep(DEFAULT_WINDOW + Duration::from_millis(100)).await;
    refuse().await;

    let log = captured.text();
    let count =
        |level: &str, text: &str| log.lines().filter(|l| l.contains(level) && l.contains(text)).count();
    let warned = count(" WARN ", "PROXY protocol header refused");
    let debugged = count("DEBUG ", "PROXY protocol header refused");
    // The flood (500 refusals in well under a second) plus one refusal a second later; a window edge during
    // the flood lets through one more budget at most.
    assert!(warned as u64 <= 2 * DEFAULT_LINES_PER_WINDOW + 1, "{warned} warnings");
    assert_eq!(warned + debugged, flood + 1, "every refusal is logged at one level or the other");
    let reported: usize = log
        .lines()
        .filter(|l| l.contains("more PROXY header lines suppressed"))
        .map(|l| {
            assert!(l.contains(" WARN "), "{l}");
            l.split(" more PROXY header")
                .next()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(reported, debugged, "the summary lines report every suppressed refusal:\n{log}");
}
