//! Host routing: normalising and matching a request authority against 10 000 exact names and 1 000
//! wildcards (`portcullis_host::Hosts::resolve`: parse into a stack buffer, lower-case, strip the trailing
//! dot and port, then look the borrowed name up in an open-addressing table).
//!
//! Figures:
//! - `match_exact_10k`: an exact name, spelled with upper-case letters, a trailing dot and a port (target
//!   ≤ 50 ns);
//! - `match_wildcard_10k`: a name covered by one of the wildcards (one exact miss, one wildcard hit;
//!   target ≤ 150 ns);
//! - `allocs_per_request`: allocations per match, over every input of both figures (target 0);
//! - `baseline_std_hashmap_10k`: a `std` `HashMap<String, usize>` lookup of the already-normalised name,
//!   the floor the matcher is compared with.

use std::collections::HashMap;
use std::hint::black_box;

use portcullis_host::{Endpoint, Hosts};

use crate::stats::{Rng, median_ns, report};

const EXACT: usize = 10_000;
const WILDCARDS: usize = 1_000;
const INPUTS: usize = 1024;
// Many short batches: the median then shrugs off bursts of other work on a shared machine.
const BATCHES: usize = 31;
const ITERS: usize = 50_000;

fn exact_name(i: usize) -> String {
    format!("api-{i:05}.tenant-{:02}.contoso.com", i % 97)
}

fn wildcard_suffix(i: usize) -> String {
    format!("zone-{i:04}.contoso.net")
}

/// Upper-cases every other letter, so normalisation has work to do.
fn shout(name: &str) -> String {
    name.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect()
}

/// Runs the host group.
pub(crate) fn run() {
    let hosts = Hosts::builder()
        .endpoint(Endpoint::new("exact").hosts((0..EXACT).map(exact_name)))
        .endpoint(
            Endpoint::new("wildcard").hosts((0..WILDCARDS).map(|i| format!("*.{}", wildcard_suffix(i)))),
        )
        .build()
        .expect("benchmark table builds");

    let mut rng = Rng::new(0x686f_7374);
    let pick = |rng: &mut Rng, n: usize| (rng.next_u32() as usize) % n;
    let exact: Vec<Vec<u8>> = (0..INPUTS)
        .map(|_| format!("{}.:443", shout(&exact_name(pick(&mut rng, EXACT)))).into_bytes())
        .collect();
    let wildcard: Vec<Vec<u8>> = (0..INPUTS)
        .map(|_| {
            let label = format!("svc-{}", rng.next_u32() % 1000);
            format!("{}.{}", shout(&label), wildcard_suffix(pick(&mut rng, WILDCARDS))).into_bytes()
        })
        .collect();

    // Every input must resolve, or the figures would time misses.
    for input in exact.iter().chain(&wildcard) {
        assert!(hosts.resolve(input).ok().flatten().is_some(), "{}", String::from_utf8_lossy(input));
    }

    let ns = median_ns(BATCHES, ITERS, |i| {
        black_box(hosts.resolve(black_box(&exact[i % INPUTS])).ok().flatten().map(|r| r.endpoint_index()));
    });
    report("match_exact_10k", ns, "ns");

    let ns = median_ns(BATCHES, ITERS, |i| {
        black_box(hosts.resolve(black_box(&wildcard[i % INPUTS])).ok().flatten().map(|r| r.endpoint_index()));
    });
    report("match_wildcard_10k", ns, "ns");

    // The counter must see an allocation, or the zero below would mean nothing.
    let (_, probe) = crate::alloc::count_allocs(|| black_box(Box::new(black_box(7u64))));
    assert!(probe >= 1, "the counting allocator is not installed");
    let ((), allocs) = crate::alloc::count_allocs(|| {
        for input in exact.iter().chain(&wildcard) {
            black_box(hosts.resolve(black_box(input)).ok().flatten().map(|r| r.endpoint_index()));
        }
    });
    let requests = (exact.len() + wildcard.len()) as u64;
    report("allocs_per_request", (allocs as f64 / requests as f64).ceil(), "count");

    // Baseline: the standard library's map (SipHash) on names that need no normalisation.
    let std_map: HashMap<String, usize> = (0..EXACT).map(|i| (exact_name(i), i)).collect();
    let plain: Vec<String> = (0..INPUTS).map(|_| exact_name(pick(&mut rng, EXACT))).collect();
    let ns = median_ns(BATCHES, ITERS, |i| {
        black_box(std_map.get(black_box(plain[i % INPUTS].as_str())));
    });
    report("baseline_std_hashmap_10k", ns, "ns");
}
