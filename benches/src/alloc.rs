//! Counting allocations, so benchmarks can report allocations per operation.
//!
//! The counting global allocator comes from the `stats_alloc` crate, so this workspace stays free of
//! `unsafe` code.

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `f` and returns its result and how many allocations (and reallocations) it made on this process.
pub(crate) fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let region = Region::new(GLOBAL);
    let r = f();
    let stats = region.change();
    (r, (stats.allocations + stats.reallocations) as u64)
}
