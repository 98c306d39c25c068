//! Whole-stack tests of portcullis live in this package's test targets (`tests/*.rs` next to this file).
#![forbid(unsafe_code)]
