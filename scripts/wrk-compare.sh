#!/usr/bin/env bash
# Loopback throughput of the full gateway stack against the bare axum application, with wrk.
#
#   scripts/wrk-compare.sh [PAIRS] [SECONDS]      (defaults: 5 pairs, 5 s per run)
#
# Builds `portcullis-overhead-server` (benches/src/bin/overhead_server.rs) in release mode, starts one
# `--bare` and one `--stack` server on 127.0.0.1 (port 0, the server prints the port it got), then runs wrk
# against them in ALTERNATING pairs (bare then stack, stack then bare, ...) so that a change of machine load
# hits both sides of a pair. Every run is short and bounded: `wrk -t1 -c16 -d${SECONDS}s --timeout 2s`.
# Every request names the benchmark host and forwards the private client address from the trusted
# loopback peer, so the stack serves it after running every gate (the script checks one request per
# server first: 200 from both, and 403 from the stack for a public client).
#
# Output: one `pair_<n>_ratio <stack/bare> ratio` line per pair (requests/s of stack over bare), then
#   stack_over_bare_throughput <median ratio> ratio        (target ≥ 0.97)
#
# CPU placement is left to the scheduler by default. With `taskset` (util-linux), WRK_PIN=split pins both
# servers (single-threaded runtimes) to the last CPU and wrk to CPU 0; WRK_PIN=same pins everything to
# CPU 0. On small virtual machines `split` is dominated by cross-CPU wake-ups (throughput drops several
# times and the ratio says little about the stack's CPU cost), so it is not the default.
#
# wrk comes from the Debian package `wrk`; when it is missing the script says so and installs it with
# apt-get (sudo when not root). Only 127.0.0.1 is ever contacted; both servers are stopped on exit.
set -euo pipefail

PAIRS=${1:-5}
SECS=${2:-5}
CONNS=${WRK_CONNECTIONS:-16}
if (( PAIRS < 1 || PAIRS > 50 || SECS < 1 || SECS > 60 )); then
    echo "usage: $0 [PAIRS 1..50] [SECONDS 1..60]" >&2
    exit 2
fi

cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk is not installed: installing the Debian package 'wrk' with apt-get" >&2
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get install -y wrk >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y wrk >&2; }
fi
command -v curl >/dev/null 2>&1 || { echo "curl is needed for the sanity checks" >&2; exit 1; }

cargo build --release -q -p portcullis-benches --bin portcullis-overhead-server
SERVER=target/release/portcullis-overhead-server

PIN_SERVER=()
PIN_WRK=()
CPUS=$(nproc 2>/dev/null || echo 1)
case ${WRK_PIN:-} in
    "") ;;
    split | same)
        command -v taskset >/dev/null 2>&1 || { echo "WRK_PIN needs taskset (util-linux)" >&2; exit 2; }
        server_cpu=0
        [[ $WRK_PIN == split ]] && server_cpu=$((CPUS - 1))
        PIN_SERVER=(taskset -c "$server_cpu")
        PIN_WRK=(taskset -c 0)
        echo "pinning: servers on CPU $server_cpu, wrk on CPU 0" >&2
        ;;
    *) echo "WRK_PIN must be split or same" >&2; exit 2 ;;
esac

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a server variant; sets PORT, HOST_HDR and XFF from its first output line.
start() {
    local variant=$1 out="$WORK/$1.out"
    "${PIN_SERVER[@]}" "$SERVER" "--$variant" >"$out" 2>"$WORK/$variant.err" &
    PIDS+=($!)
    for _ in $(seq 1 300); do   # up to 30 s (the stack builds 100k IP rules first)
        [[ -s $out ]] && break
        sleep 0.1
    done
    local line
    line=$(head -n1 "$out")
    [[ $line == port=* ]] || { echo "server --$variant did not start: $(cat "$WORK/$variant.err")" >&2; exit 1; }
    PORT=$(sed -E 's/.*port=([0-9]+).*/\1/' <<<"$line")
    HOST_HDR=$(sed -E 's/.*host=([^ ]+).*/\1/' <<<"$line")
    XFF=$(sed -E 's/.*x-forwarded-for=([^ ]+).*/\1/' <<<"$line")
}

start bare;  BARE_PORT=$PORT
start stack; STACK_PORT=$PORT

status() {  # port, client address
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $HOST_HDR" -H "X-Forwarded-For: $2" \
        "http://127.0.0.1:$1/"
}
[[ $(status "$BARE_PORT" "$XFF") == 200 ]] || { echo "bare server does not answer 200" >&2; exit 1; }
[[ $(status "$STACK_PORT" "$XFF") == 200 ]] || { echo "stack server does not answer 200" >&2; exit 1; }
[[ $(status "$STACK_PORT" 203.0.113.9) == 403 ]] || { echo "stack server does not refuse a public client" >&2; exit 1; }

# Requests per second of one bounded wrk run against a port.
rps() {
    local out
    out=$("${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 2s -H "Host: $HOST_HDR" -H "X-Forwarded-For: $XFF" \
        "http://127.0.0.1:$1/")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "non-2xx answers during the run on port $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}

# Warm both servers up (not measured).
"${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d1s -H "Host: $HOST_HDR" -H "X-Forwarded-For: $XFF" "http://127.0.0.1:$BARE_PORT/" >/dev/null
"${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d1s -H "Host: $HOST_HDR" -H "X-Forwarded-For: $XFF" "http://127.0.0.1:$STACK_PORT/" >/dev/null

RATIOS=()
for pair in $(seq 1 "$PAIRS"); do
    if (( pair % 2 == 1 )); then
        bare=$(rps "$BARE_PORT"); stack=$(rps "$STACK_PORT")
    else
        stack=$(rps "$STACK_PORT"); bare=$(rps "$BARE_PORT")
    fi
    ratio=$(awk -v s="$stack" -v b="$bare" 'BEGIN { printf "%.4f", s / b }')
    RATIOS+=("$ratio")
    echo "pair_${pair}_bare_rps $bare requests/s"
    echo "pair_${pair}_stack_rps $stack requests/s"
    echo "pair_${pair}_ratio $ratio ratio"
done

median=$(printf '%s\n' "${RATIOS[@]}" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo "stack_over_bare_throughput $median ratio"
