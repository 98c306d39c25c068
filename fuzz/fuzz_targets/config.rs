//! The gateway's TOML configuration, parsed and built as `--check-config` does, from any text.
//!
//! Keystores and truststores are dropped before the build: they name files, and the fuzzer must not read
//! whatever path it invents. Everything else (listeners, hosts, IP rules, networks, policies, virtual hosts,
//! responses) is built.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::{GatewayConfig, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = Source::new("fuzz.toml", text);
    let error = match GatewayConfig::parse(&source) {
        Ok(mut config) => {
            config.keystores.clear();
            config.truststores.clear();
            config.build(&source).err()
        }
        Err(e) => Some(e),
    };
    if let Some(e) = error {
        assert!(e.line >= 1 && e.column >= 1, "{e}");
        let _ = e.to_string();
    }
});
