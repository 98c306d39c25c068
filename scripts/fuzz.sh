#!/usr/bin/env bash
# Runs one fuzz target for a given time, with the nightly toolchain and cargo-fuzz:
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]
#   scripts/fuzz.sh list
#
# Targets live in fuzz/fuzz_targets/ (their own workspace). The working corpus is fuzz/corpus/TARGET
# (not committed); fuzz/seeds/TARGET (committed, from the test vectors) is read as a second corpus.
# A crash, a leak (AddressSanitizer's leak checker), a run over 10 s on one input, or more than 2 GB of
# memory stops the run with a non-zero status and leaves the input in fuzz/artifacts/TARGET.
# The last line is libFuzzer's "Done N runs in S second(s)".
# FUZZ_NICE sets the niceness of the run (default 10).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if [ "${1:-}" = list ]; then
  exec cargo +nightly fuzz list
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 TARGET SECONDS [libFuzzer options...] | $0 list" >&2
  exit 2
fi
target=$1
seconds=$2
shift 2
mkdir -p "corpus/$target"
exec nice -n "${FUZZ_NICE:-10}" cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
