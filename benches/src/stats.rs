//! Small timing helpers shared by the groups.

use std::time::Instant;

/// A tiny deterministic xorshift generator, so every run measures the same inputs.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    pub(crate) fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
}

/// Runs `op(i)` for `iters` iterations per batch, `batches` times, and returns the median nanoseconds per
/// iteration.
pub(crate) fn median_ns(batches: usize, iters: usize, mut op: impl FnMut(usize)) -> f64 {
    let mut per_iter: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for i in 0..iters {
                op(i);
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per_iter.sort_by(f64::total_cmp);
    per_iter[per_iter.len() / 2]
}

/// Prints one `name value unit` line.
pub(crate) fn report(name: &str, value: f64, unit: &str) {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        println!("{name} {value:.0} {unit}");
    } else {
        println!("{name} {value:.2} {unit}");
    }
}
