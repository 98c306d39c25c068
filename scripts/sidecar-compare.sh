#!/usr/bin/env bash
# `portcullis serve` against NGINX, both in front of the same application, with the same rules, over
# loopback, interleaved in one run.
#
#   scripts/sidecar-compare.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds, 5 s per run)
#
# The application is `portcullis-overhead-server --bare` (axum, `GET /` answering `ok`). In front of it:
# - `portcullis serve` (crates/portcullis-cli, release) with a generated configuration: the client address
#   from `X-Forwarded-For` of the trusted peer 127.0.0.1, 1,000 host names, an IP allow-list of 100,000 /24
#   networks plus the client's (default deny), the upstream http://127.0.0.1:<app>;
# - NGINX (Debian package `nginx`, installed by the script when missing): the same 1,000 names in
#   `server_name` (any other host: 421), `real_ip_header X-Forwarded-For` from `set_real_ip_from 127.0.0.1`,
#   the same allow-list in a `geo` block (`if ($allowed = 0) { return 403; }`), `proxy_pass` to the app with
#   an upstream keepalive pool and HTTP/1.1. The generated nginx.conf is printed with `--print-nginx-conf`.
# Both run one worker (NGINX `worker_processes 1`, `portcullis serve --workers 1`); the app is
# single-threaded.
#
# Each round runs wrk (`-t1 -c16 -d${SECONDS}s`) against the app alone, portcullis → app and NGINX → app,
# rotating the order per round. CPU per request is the user + system time of the server processes
# (/proc/<pid>/stat of the app, portcullis, NGINX's master and worker), over the requests wrk counted.
# Output: per round and variant `rps` and `cpu_us_per_request`, then medians and
#   portcullis_over_nginx_throughput <median ratio> ratio        (target ≥ 1.0)
#   portcullis_over_nginx_cpu_per_request <median ratio> ratio   (target ≤ 1.0)
# Sanity checks first: 200 for the allowed client on a configured name from both proxies, 403 for a client
# outside the list, 421 for an unknown name. Only 127.0.0.1 is contacted; everything started is stopped.
set -euo pipefail

if [[ ${1:-} == --print-nginx-conf ]]; then PRINT_CONF=1; shift; else PRINT_CONF=0; fi
ROUNDS=${1:-5}
SECS=${2:-5}
if (( ROUNDS < 1 || ROUNDS > 50 || SECS < 1 || SECS > 60 )); then
    echo "usage: $0 [--print-nginx-conf] [ROUNDS 1..50] [SECONDS 1..60]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
install() {  # command, Debian package
    command -v "$1" >/dev/null 2>&1 && return
    [[ -x /usr/sbin/$1 ]] && return
    echo "$1 is not installed: installing the Debian package '$2' with apt-get" >&2
    $SUDO apt-get install -y "$2" >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y "$2" >&2; }
}
install wrk wrk
install nginx nginx
install curl curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q -p portcullis-benches --bin portcullis-overhead-server
cargo build --release -q -p portcullis-cli --bin portcullis
APP_BIN=target/release/portcullis-overhead-server
PORTCULLIS=target/release/portcullis

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

# The application.
"$APP_BIN" --bare >"$WORK/app.out" 2>"$WORK/app.err" &
APP_PID=$!; PIDS+=("$APP_PID")
for _ in $(seq 1 100); do [[ -s $WORK/app.out ]] && break; sleep 0.1; done
APP_PORT=$(sed -E 's/.*port=([0-9]+).*/\1/' <"$WORK/app.out")
[[ $APP_PORT =~ ^[0-9]+$ ]] || { echo "the app did not start: $(cat "$WORK/app.err")" >&2; exit 1; }

CLIENT=10.0.0.7
HOST_HDR=api-0500.bench.example
P_PORT=$(free_port)
N_PORT=$(free_port)

# The same rules for both.
python3 - "$WORK" "$APP_PORT" "$P_PORT" "$N_PORT" <<'PY'
import sys
work, app, pport, nport = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
names = [f"api-{i:04d}.bench.example" for i in range(1000)]
nets = ["10.0.0.0/24"] + [f"{20 + i // 65536}.{(i // 256) % 256}.{i % 256}.0/24" for i in range(100000)]
with open(f"{work}/portcullis.toml", "w") as f:
    f.write('resource = "bench"\n\n[[listener]]\nname = "http"\n')
    f.write(f'address = "127.0.0.1:{pport}"\n\n')
    f.write('[client_address]\ntrusted_proxies = ["127.0.0.1"]\nforwarded = "x-forwarded-for"\n\n')
    f.write('[ip.rules]\ndefault = "deny"\nallow = [\n')
    f.writelines(f'  "{n}",\n' for n in nets)
    f.write(']\n\n[hosts.endpoint.gateway]\nnames = [\n')
    f.writelines(f'  "{n}",\n' for n in names)
    f.write(f']\nupstream = "http://127.0.0.1:{app}"\n')
with open(f"{work}/nginx.conf", "w") as f:
    f.write(f"""worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server_names_hash_max_size 4096;
    server_names_hash_bucket_size 128;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    geo $allowed {{
        default 0;
""")
    f.writelines(f"        {n} 1;\n" for n in nets)
    f.write(f"""    }}
    upstream app {{
        server 127.0.0.1:{app};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{nport} default_server;
        return 421;
    }}
    server {{
        listen 127.0.0.1:{nport};
        server_name {' '.join(names)};
        location / {{
            if ($allowed = 0) {{ return 403; }}
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
""")
PY
if (( PRINT_CONF )); then
    grep -v '^        [0-9].* 1;$' "$WORK/nginx.conf" \
        | sed -E 's/server_name (api-0000[^ ]+) .* (api-0999[^ ]+);/server_name \1 ... \2;  # 1,000 names/'
    echo "(and 100,001 geo entries: 10.0.0.0/24 and 100,000 /24 networks from 20.0.0.0)"
    exit 0
fi

"$PORTCULLIS" check-config "$WORK/portcullis.toml" >/dev/null
RUST_LOG=error "$PORTCULLIS" serve --workers 1 --config "$WORK/portcullis.toml" >"$WORK/p.out" 2>"$WORK/p.err" &
P_PID=$!; PIDS+=("$P_PID")
"$NGINX" -t -q -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon off;' >&2
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon off;' 2>"$WORK/nginx.err" &
N_PID=$!; PIDS+=("$N_PID")
wait_port "$P_PORT"; wait_port "$N_PORT"

status() {  # port, host, client
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $2" -H "X-Forwarded-For: $3" "http://127.0.0.1:$1/"
}
for port in "$P_PORT" "$N_PORT"; do
    [[ $(status "$port" "$HOST_HDR" "$CLIENT") == 200 ]] || { echo "port $port: the allowed client is not served" >&2; exit 1; }
    [[ $(status "$port" "$HOST_HDR" 9.9.9.9) == 403 ]] || { echo "port $port: a client outside the list is not refused" >&2; exit 1; }
    [[ $(status "$port" unknown.example "$CLIENT") == 421 ]] || { echo "port $port: an unknown host is not refused" >&2; exit 1; }
done

# CPU ticks (user + system) of a set of processes; NGINX's are its master and its children.
ticks() {
    local total=0 pid
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
nginx_pids() { echo "$N_PID" $(pgrep -P "$N_PID" || true); }
HZ=$(getconf CLK_TCK)

# One run: prints "rps cpu_us_per_request".
run() {  # port, pids...
    local port=$1; shift
    local before after out requests rps
    before=$(ticks "$@")
    out=$(wrk -t1 -c16 -d"${SECS}s" --timeout 2s -H "Host: $HOST_HDR" -H "X-Forwarded-For: $CLIENT" "http://127.0.0.1:$port/")
    after=$(ticks "$@")
    if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers on port $port: $out" >&2; exit 1; fi
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    awk -v r="$rps" -v n="$requests" -v t=$((after - before)) -v hz="$HZ" 'BEGIN { printf "%s %.2f\n", r, t / hz / n * 1e6 }'
}

# Warm-up (not measured).
for port in "$APP_PORT" "$P_PORT" "$N_PORT"; do
    wrk -t1 -c16 -d1s -H "Host: $HOST_HDR" -H "X-Forwarded-For: $CLIENT" "http://127.0.0.1:$port/" >/dev/null
done

declare -A RPS CPU
TP=(); CP=()
for round in $(seq 1 "$ROUNDS"); do
    case $((round % 3)) in
        1) order="app portcullis nginx" ;;
        2) order="portcullis nginx app" ;;
        0) order="nginx app portcullis" ;;
    esac
    for v in $order; do
        case $v in
            app) read -r r c < <(run "$APP_PORT" "$APP_PID") ;;
            portcullis) read -r r c < <(run "$P_PORT" "$P_PID" "$APP_PID") ;;
            nginx) read -r r c < <(run "$N_PORT" $(nginx_pids) "$APP_PID") ;;
        esac
        RPS[$v]=$r; CPU[$v]=$c
        echo "round_${round}_${v}_rps $r requests/s"
        echo "round_${round}_${v}_cpu_us_per_request $c us"
    done
    TP+=("$(awk -v p="${RPS[portcullis]}" -v n="${RPS[nginx]}" 'BEGIN { printf "%.4f", p / n }')")
    CP+=("$(awk -v p="${CPU[portcullis]}" -v n="${CPU[nginx]}" 'BEGIN { printf "%.4f", p / n }')")
    APP_R+=("$(awk -v p="${RPS[portcullis]}" -v a="${RPS[app]}" 'BEGIN { printf "%.4f", p / a }')")
    NGX_R+=("$(awk -v p="${RPS[nginx]}" -v a="${RPS[app]}" 'BEGIN { printf "%.4f", p / a }')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "portcullis_over_app_throughput $(median "${APP_R[@]}") ratio"
echo "nginx_over_app_throughput $(median "${NGX_R[@]}") ratio"
echo "portcullis_over_nginx_throughput $(median "${TP[@]}") ratio"
echo "portcullis_over_nginx_cpu_per_request $(median "${CP[@]}") ratio"
