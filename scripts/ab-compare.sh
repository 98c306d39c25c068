#!/usr/bin/env bash
# Runs one benchmark group of an earlier commit and of the working tree, interleaved, on the same machine in
# the same window, and prints each run and the median of every figure for both.
#
#   scripts/ab-compare.sh REV GROUP [RUNS]      (RUNS: 1..15, default 3)
#
# REV is any commit (e.g. 46c82a1); GROUP a group of `cargo run --release -p portcullis-benches -- GROUP`
# (ipset, host, ipfilter, origin, mtls, overhead). The commit is checked out into a temporary git worktree
# and built into target/ab-<commit> (kept, so a second comparison against the same commit does not rebuild);
# the working tree's benches are built as usual. Runs alternate: REV first in odd runs, the working tree first
# in even ones, so that a change of machine load hits both sides.
#
# Output: `before <figure> <value> <unit>` and `now <figure> <value> <unit>` for every run, then
# `median before|now <figure> <value>` per figure. A figure the earlier commit does not have prints for `now`
# only. Wall-time figures on a shared machine move from run to run: compare the medians, and prefer the
# groups' instruction counts (overhead, mtls) where they exist.
set -euo pipefail

REV=${1:?usage: $0 REV GROUP [RUNS]}
GROUP=${2:?usage: $0 REV GROUP [RUNS]}
RUNS=${3:-3}
if (( RUNS < 1 || RUNS > 15 )); then
    echo "RUNS must be 1..15" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
ROOT=$(pwd)
COMMIT=$(git rev-parse --short "$REV^{commit}")
TREE=$(mktemp -d)
OUT=$(mktemp)
cleanup() {
    git -C "$ROOT" worktree remove --force "$TREE/src" >/dev/null 2>&1 || true
    rm -rf "$TREE" "$OUT"
}
trap cleanup EXIT

git worktree add -q --detach "$TREE/src" "$COMMIT"
echo "building $COMMIT into target/ab-$COMMIT" >&2
(cd "$TREE/src" && CARGO_TARGET_DIR="$ROOT/target/ab-$COMMIT" cargo build --release -q -p portcullis-benches --bin portcullis-benches)
echo "building the working tree" >&2
cargo build --release -q -p portcullis-benches --bin portcullis-benches

BEFORE="$ROOT/target/ab-$COMMIT/release/portcullis-benches"
NOW="$ROOT/target/release/portcullis-benches"
run() { # label binary
    "$2" "$GROUP" 2>/dev/null | awk -v l="$1" 'NF == 3 { print l, $1, $2, $3 }' | tee -a "$OUT"
}
for i in $(seq 1 "$RUNS"); do
    if (( i % 2 == 1 )); then
        run before "$BEFORE"
        run now "$NOW"
    else
        run now "$NOW"
        run before "$BEFORE"
    fi
done

# Medians per side and figure.
sort -k1,1 -k2,2 -k3,3g "$OUT" | awk '
    function flush() { if (n) printf "median %s %s %s\n", side, fig, (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) }
    { if ($1 != side || $2 != fig) { flush(); side = $1; fig = $2; n = 0 } v[++n] = $3 }
    END { flush() }'
