//! The portcullis benchmark report: `cargo run --release -p portcullis-benches -- <group>`.
//!
//! Each group prints one `name value unit` line per figure. Figures are medians of repeated batches, and
//! every target is stated against a baseline measured in the same run (see BENCHMARKS.md).
#![forbid(unsafe_code)]

mod alloc;
mod host;
mod ipfilter;
mod ipset;
mod management;
mod mtls;
mod origin;
mod overhead;
mod overhead_stack;
mod reload;
mod stats;

fn main() {
    let groups: Vec<String> = std::env::args().skip(1).collect();
    let all = ["ipset", "host", "ipfilter", "origin", "mtls", "overhead", "recorder", "reload", "management"];
    let selected: Vec<&str> =
        if groups.is_empty() { all.to_vec() } else { groups.iter().map(String::as_str).collect() };
    for g in selected {
        match g {
            "ipset" => ipset::run(),
            "host" => host::run(),
            "ipfilter" => ipfilter::run(),
            "origin" => origin::run(),
            "mtls" => mtls::run(),
            "overhead" => overhead::run(),
            "recorder" => overhead::run_recorder(),
            "reload" => reload::run(),
            "management" => management::run(),
            other => {
                eprintln!("unknown group `{other}`; groups: {}", all.join(", "));
                std::process::exit(2);
            }
        }
    }
}
