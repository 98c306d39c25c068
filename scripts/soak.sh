#!/usr/bin/env bash
# Soak: the release demo under mixed allowed and refused traffic plus idle and slowloris floods from the
# public address, for a given number of minutes.
#
#   scripts/soak.sh [MINUTES]      (default 2; 1..60)
#
# 1. Builds and starts the release demo (`portcullis-demo --http-port P`, the embedded config: 127.0.0.1
#    is the virtual network, 127.0.0.2 the public internet).
# 2. Quiet phase (30 s): the private probe alone (scripts/soak.py: one request at a time from 127.0.0.1,
#    a new connection each), for its p99 without a flood.
# 3. Flood phase (60 s): the probe while 127.0.0.2 holds 10,000 idle connections and 200 slowloris ones
#    (re-opened as the server closes them): the probe's p99 against the quiet one.
# 4. Soak phase (MINUTES): wrk from 127.0.0.1 on an allowed host (200 expected) and on an unknown host
#    (421 expected), the same floods, and the probe.
# 5. Checks, and exits non-zero on a failure: no unexpected status (the allowed wrk all 2xx, the refused
#    wrk all 421, the probe all 200), RSS growth from a quarter into the soak to its end at most 5 %, no
#    ERROR line in the demo's log, private probe p99 under the flood at most twice its quiet p99.
#
# Prints one `name value unit` line per figure. wrk comes from the Debian package `wrk` (installed when
# missing). Only 127.0.0.1 and 127.0.0.2 are contacted; everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${1:-2}
if (( MINUTES < 1 || MINUTES > 60 )); then
    echo "usage: $0 [MINUTES 1..60]" >&2
    exit 2
fi
SOAK=$(( MINUTES * 60 ))
HOST=contoso.azure-api.net

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

cargo build --release -q -p portcullis-examples --bin portcullis-demo
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HTTPS=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$(mktemp)
WORK=$(mktemp -d)
ulimit -n 65536 2>/dev/null || true
./target/release/portcullis-demo --http-port "$PORT" --https-port "$HTTPS" >"$LOG" 2>&1 &
DEMO=$!
cleanup() {
    kill "$DEMO" 2>/dev/null || true
    wait "$DEMO" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for _ in $(seq 100); do
    grep -q "listening: http" "$LOG" && break
    sleep 0.2
done
grep -q "listening: http" "$LOG" || { cat "$LOG"; echo "the demo did not start" >&2; exit 1; }
curl -sf -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$PORT/echo" || { echo "warm-up request refused" >&2; exit 1; }

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$DEMO/status"; }

echo "quiet phase: 30 s" >&2
python3 scripts/soak.py "$PORT" "$HOST" 30 quiet >"$WORK/quiet.json"

echo "flood phase: 60 s" >&2
python3 scripts/soak.py "$PORT" "$HOST" 60 flood 10000 200 >"$WORK/flood.json"

echo "soak phase: $SOAK s" >&2
wrk -t1 -c16 -d"${SOAK}s" --timeout 5s -H "Host: $HOST" "http://127.0.0.1:$PORT/echo" >"$WORK/allowed.txt" &
WRK_OK=$!
wrk -t1 -c16 -d"${SOAK}s" --timeout 5s -H "Host: unknown.example" "http://127.0.0.1:$PORT/echo" >"$WORK/refused.txt" &
WRK_NO=$!
python3 scripts/soak.py "$PORT" "$HOST" "$SOAK" flood 10000 200 >"$WORK/soak.json" &
FLOOD=$!
sleep $(( SOAK / 4 ))
RSS_START=$(rss_kb)
wait "$WRK_OK" "$WRK_NO" "$FLOOD"
RSS_END=$(rss_kb)

python3 - "$WORK" "$LOG" "$RSS_START" "$RSS_END" <<'EOF'
import json, re, sys
work, log, rss_start, rss_end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
quiet = json.load(open(f"{work}/quiet.json"))
flood = json.load(open(f"{work}/flood.json"))
soak = json.load(open(f"{work}/soak.json"))

def wrk(path):
    text = open(path).read()
    total = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    return total, int(non2xx.group(1)) if non2xx else 0, sum(map(int, errors.groups())) if errors else 0, rps

ok_total, ok_non2xx, ok_errors, ok_rps = wrk(f"{work}/allowed.txt")
no_total, no_non2xx, no_errors, no_rps = wrk(f"{work}/refused.txt")
private_bad = sum(r["non_200"] + r["errors"] for r in (quiet, flood, soak))
errors_logged = sum(1 for line in open(log, errors="replace") if " ERROR " in line)
growth = (rss_end - rss_start) / rss_start * 100
ratio = flood["p99_ms"] / quiet["p99_ms"]
figures = [
    ("private_p99_quiet_ms", quiet["p99_ms"], "ms"),
    ("private_p99_flood_ms", flood["p99_ms"], "ms"),
    ("private_p99_flood_over_quiet", ratio, "ratio"),
    ("private_requests_during_flood", flood["requests"], "count"),
    ("private_p99_soak_ms", soak["p99_ms"], "ms"),
    ("private_refused_or_failed", private_bad, "count"),
    ("allowed_requests_per_s", ok_rps, "req/s"),
    ("allowed_unexpected", ok_non2xx + ok_errors, "count"),
    ("refused_requests_per_s", no_rps, "req/s"),
    ("refused_unexpected", (no_total - no_non2xx) + no_errors, "count"),
    ("flood_idle_opened", flood["flood"]["opened"] + soak["flood"]["opened"], "count"),
    ("flood_idle_closed_by_server", flood["flood"]["closed_by_server"] + soak["flood"]["closed_by_server"], "count"),
    ("flood_slowloris_opened", flood["flood"]["slow_opened"] + soak["flood"]["slow_opened"], "count"),
    ("flood_slowloris_closed_by_server",
     flood["flood"]["slow_closed_by_server"] + soak["flood"]["slow_closed_by_server"], "count"),
    ("rss_start_kb", rss_start, "KiB"),
    ("rss_end_kb", rss_end, "KiB"),
    ("rss_growth", growth, "percent"),
    ("error_log_lines", errors_logged, "count"),
]
for name, value, unit in figures:
    print(f"{name} {value:.3f} {unit}" if isinstance(value, float) else f"{name} {value} {unit}")
failures = []
if private_bad:
    failures.append("private requests refused or failed")
if ok_non2xx + ok_errors:
    failures.append("unexpected statuses or errors on the allowed traffic")
if no_total != no_non2xx or no_errors:
    failures.append("a refused request was served, or errors on the refused traffic")
if growth > 5:
    failures.append(f"RSS grew {growth:.1f} % (at most 5 %)")
if errors_logged:
    failures.append(f"{errors_logged} ERROR lines in the log")
if ratio > 2:
    failures.append(f"private p99 under the flood is {ratio:.2f} times the quiet p99 (at most 2)")
for f in failures:
    print(f"FAILED: {f}", file=sys.stderr)
sys.exit(1 if failures else 0)
EOF
