#!/usr/bin/env bash
# Where the gateway stack's instructions go: callgrind's self cost per function and request, stack minus
# bare, for the `overhead` group's request.
#
#   scripts/cg-profile.sh [OUT_DIR] [ROWS]       (defaults: /tmp/cg-profile, 40 rows printed)
#   CG_VARIANT=plumbing scripts/cg-profile.sh     (another variant against bare: `plumbing` is the gate
#                                                  service with no gate, `client` the client-address gate,
#                                                  `refused` the stack refusing a public client)
#
# Builds the bench in release mode WITH line tables (CARGO_PROFILE_RELEASE_DEBUG=1) into
# target/cg-profile (its own directory, so the plain release build used by the report command is not
# touched), runs the `bare` and the `stack` variant under `valgrind --tool=callgrind` for 500 and for 2,500
# requests after the group's warm-up (PORTCULLIS_OVERHEAD_CALLGRIND, as the report command does), and
# divides every function's difference by 2,000, so setup cancels. Prints
#   bare <instructions per request> stack <…> extra <…>
# then one row per function: `extra stack bare name`, largest extra first; the full table is written to
# OUT_DIR/functions.txt and the callgrind files stay in OUT_DIR for callgrind_annotate. Inlined code counts
# for the function it was inlined into. Needs valgrind (Debian package: `apt-get install valgrind`) and
# python3.
set -euo pipefail

OUT=${1:-/tmp/cg-profile}
VARIANT=${CG_VARIANT:-stack}
ROWS=${2:-40}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

CARGO_PROFILE_RELEASE_DEBUG=1 CARGO_TARGET_DIR=target/cg-profile \
    cargo build --release -q -p portcullis-benches --bin portcullis-benches
BIN=target/cg-profile/release/portcullis-benches

for variant in bare "$VARIANT"; do
    for n in 500 2500; do
        PORTCULLIS_OVERHEAD_CALLGRIND="$variant:$n" valgrind --tool=callgrind \
            --collect-atstart=no --toggle-collect='*callgrind_measured_requests*' \
            --callgrind-out-file="$OUT/$variant.$n.out" "$BIN" overhead 2>"$OUT/$variant.$n.log"
        callgrind_annotate --inclusive=no --threshold=100 "$OUT/$variant.$n.out" >"$OUT/$variant.$n.txt" 2>/dev/null
    done
done

python3 - "$OUT" "$ROWS" "$VARIANT" <<'PY'
import re
import sys

out, rows, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def total(name):
    text = open(f"{out}/{name}.log").read()
    return int(re.search(r"Collected : (\d+)", text).group(1))


def functions(name):
    """Self cost per function name (file prefixes and object suffixes dropped, inlined parts summed)."""
    costs = {}
    for line in open(f"{out}/{name}.txt"):
        if "annotated source" in line.lower():
            break
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*)$", line)
        if m:
            fn = re.sub(r"\s*\[[^\]]*\]\s*$", "", m.group(2))
            fn = re.sub(r"^[^ :<]*\.(rs|S|c|h):", "", fn)
            costs[fn] = costs.get(fn, 0) + int(m.group(1).replace(",", ""))
    return costs


per = {v: (total(f"{v}.2500") - total(f"{v}.500")) / 2000 for v in ("bare", variant)}
print(f"bare {per['bare']:.1f} {variant} {per[variant]:.1f} extra {per[variant] - per['bare']:.1f}")
f = {(v, n): functions(f"{v}.{n}") for v in ("bare", variant) for n in (500, 2500)}
f.update({("stack", n): f[variant, n] for n in (500, 2500)})
table = []
for fn in set(f["stack", 2500]) | set(f["bare", 2500]):
    s = (f["stack", 2500].get(fn, 0) - f["stack", 500].get(fn, 0)) / 2000
    b = (f["bare", 2500].get(fn, 0) - f["bare", 500].get(fn, 0)) / 2000
    if abs(s - b) >= 3 and fn != "PROGRAM TOTALS":
        table.append((s - b, s, b, fn))
table.sort(reverse=True)
with open(f"{out}/functions.txt", "w") as t:
    t.write("extra stack bare function   (self instructions per request)\n")
    for e, s, b, fn in table:
        t.write(f"{e:8.1f} {s:8.1f} {b:8.1f} {fn}\n")
for e, s, b, fn in table[:rows]:
    print(f"{e:8.1f} {s:8.1f} {b:8.1f} {fn[:150]}")
PY
