#!/usr/bin/env bash
# sluice's load benchmark, side by side with peers, on 127.0.0.1 only.
#
#   benches/load.sh            # from a clean checkout; prints a table, keeps nothing
#
# Peers: nginx as a caching reverse proxy (proxy_cache + sub_filter rewriting tarball links to
# itself + gzip on) in front of the same upstream, and the upstream itself (benches/upstream.py).
# Needs: cargo, python3, curl, npm, wrk (apt-get install -y wrk), nginx (apt-get install -y
# nginx-light). Everything started here is stopped on exit.
#
# SLUICE_FIXTURES (required) names a folder of real gzipped packuments (express.json.gz,
# types__node.json.gz). Knobs (environment): DURATION (wrk seconds, 10), CONNS (64), THREADS (wrk threads, 2),
# INSTALL_RUNS (measured npm installs per peer, 2), SEED (stored packuments for the start-up
# measurement, 100000; 0 skips it), BURST (concurrent requests for single-flight, 1000),
# HOLD (keep-alive connections held open at once for the memory-per-connection phase: one
# count or several, "2000 5000"; each measured on a freshly started sluice), ONLY (an extended
# regular expression: only the throughput targets whose names match), KEEP=1 keeps the work
# folder, SKIP_BUILD=1 uses the existing release build. INSTALL_RUNS=0, BURST=0, HOLD=0 and
# SEED=0 skip their phases. Logging is each peer's shipped default with its access log on: sluice
# at `info` (SLUICE_LOG overrides: `warn` has no access log), nginx with a buffered access log
# (`buffer=64k flush=1s`; NGINX_ACCESS_LOG=off turns it off).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=${SLUICE_FIXTURES:-}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
INSTALL_RUNS=${INSTALL_RUNS:-2}
SEED=${SEED:-100000}
BURST=${BURST:-1000}
HOLD=${HOLD:-2000 5000}
ONLY=${ONLY:-}

need() { command -v "$1" >/dev/null || { echo "load.sh: '$1' is missing ($2)" >&2; exit 1; }; }
need cargo "https://rustup.rs"
need python3 "apt-get install -y python3"
need curl "apt-get install -y curl"
need npm "apt-get install -y npm"
need wrk "apt-get install -y wrk"
need openssl "apt-get install -y openssl"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "load.sh: nginx is missing (apt-get install -y nginx-light)" >&2; exit 1; }
[ -f "$FIXTURES/express.json.gz" ] || { echo "load.sh: set SLUICE_FIXTURES to a folder of real gzipped packuments (express.json.gz, types__node.json.gz)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sluice-load.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-}" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

log() { printf '\n== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
wait_http() { # URL [seconds]
    local deadline=$(( $(date +%s) + ${2:-30} ))
    until curl -sf -o /dev/null --max-time 2 "$1"; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "load.sh: $1 did not answer" >&2; exit 1; }
        sleep 0.05
    done
}
cpu_read() { # PID... -> "TICKS NS": utime+stime of the processes in clock ticks (exited
    # threads included, to the tick), and their live threads' time on CPU in ns (exact)
    local ticks=0 ns=0 pid f
    for pid in "$@"; do
        f=$(sed 's/^.*) //' "/proc/$pid/stat")
        ticks=$(( ticks + $(echo "$f" | awk '{print $12 + $13}') ))
        ns=$(( ns + $(cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}') ))
    done
    echo "$ticks $ns"
}
cpu_seconds() { # "BEFORE" "AFTER" NPIDS -> CPU seconds between two cpu_read: the exact figure,
    # unless threads that exited in between took more than the ticks' rounding (then the ticks)
    python3 - "$1" "$2" "$3" "$TICK" <<'PY'
import sys
(t0, n0), (t1, n1) = (map(int, a.split()) for a in sys.argv[1:3])
pids, tick = int(sys.argv[3]), int(sys.argv[4])
exact, coarse = (n1 - n0) / 1e9, (t1 - t0) / tick
print(coarse if coarse - exact > pids / tick else exact)
PY
}
rss_kb() { local t=0 pid; for pid in "$@"; do t=$(( t + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") )); done; echo "$t"; }
TICK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- build
if [ "${SKIP_BUILD:-}" != 1 ]; then
    log "building sluice (release)"
    (cd "$ROOT" && cargo build --release --bin sluice --example seed_store)
fi
SLUICE=$ROOT/target/release/sluice
SEEDER=$ROOT/target/release/examples/seed_store

# ---------------------------------------------------------------- upstream
log "starting the upstream (benches/upstream.py)"
python3 "$ROOT/benches/upstream.py" "$FIXTURES" "$WORK/upstream.port" 2>"$WORK/upstream.log" &
UP_PID=$!
PIDS+=("$UP_PID")
for _ in $(seq 600); do [ -f "$WORK/upstream.port" ] && break; sleep 0.1; done
UP=$(cat "$WORK/upstream.port")
wait_http "http://127.0.0.1:$UP/-/ping"

# ---------------------------------------------------------------- TLS certificate (both peers)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null

# ---------------------------------------------------------------- nginx
NG=$(free_port)
NGS=$(free_port)
mkdir -p "$WORK/nginx/cache" "$WORK/nginx/tmp"
USER_LINE=""
if [ "${NGINX_ACCESS_LOG:-on}" = off ]; then NGINX_ACCESS_LOG=off
else NGINX_ACCESS_LOG="$WORK/nginx/access.log combined buffer=64k flush=1s"; fi
[ "$(id -u)" = 0 ] && USER_LINE="user $(id -un) $(id -gn);"
cat >"$WORK/nginx/nginx.conf" <<EOF
$USER_LINE
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log $NGINX_ACCESS_LOG;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=npm:50m max_size=4g inactive=1d use_temp_path=off;
    map \$http_accept \$npm_variant {
        default full;
        ~application/vnd\.npm\.install-v1\+json corgi;
    }
    gzip on;
    gzip_proxied any;
    gzip_vary on;
    gzip_types application/json application/vnd.npm.install-v1+json;
    upstream registry { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NG backlog=4096;
        include $WORK/nginx/location.conf;
    }
    server {
        listen 127.0.0.1:$NGS ssl backlog=4096;
        ssl_certificate $WORK/tls.crt;
        ssl_certificate_key $WORK/tls.key;
        ssl_protocols TLSv1.3;
        include $WORK/nginx/location.conf;
    }
}
EOF
cat >"$WORK/nginx/location.conf" <<EOF
        location / {
            proxy_pass http://registry;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            proxy_cache npm;
            proxy_cache_key \$request_uri|\$npm_variant;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 60s;
            proxy_cache_lock_age 60s;
            proxy_cache_use_stale error timeout updating;
            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;
            proxy_buffers 64 64k;
            sub_filter 'http://127.0.0.1:$UP/' 'http://127.0.0.1:$NG/';
            sub_filter_once off;
            sub_filter_types application/json application/vnd.npm.install-v1+json;
            add_header X-Cache-Status \$upstream_cache_status;
        }
EOF
log "starting nginx on 127.0.0.1:$NG"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" 2>>"$WORK/nginx/error.log" &
NG_PID=$!
PIDS+=("$NG_PID")
wait_http "http://127.0.0.1:$NG/bench-pkg-499"
ng_pids() { echo "$NG_PID $(pgrep -P "$NG_PID" | tr '\n' ' ')"; }

# ---------------------------------------------------------------- sluice
SL=$(free_port)
write_sluice_conf() { # FILE PORT STORE
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2/"
grace_period = "1s"
threads = 2

[upstream]
registry = "http://127.0.0.1:$UP/"

[storage]
dir = "$3"
memory = "256MiB"

[policy]
mode = "mirror"
EOF
}
write_sluice_conf "$WORK/sluice.toml" "$SL" "$WORK/sluice-store"
log "starting sluice on 127.0.0.1:$SL"
RUST_LOG=${SLUICE_LOG:-info} "$SLUICE" serve --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
SL_PID=$!
PIDS+=("$SL_PID")
wait_http "http://127.0.0.1:$SL/-/ping"

SLS=$(free_port)
write_sluice_conf "$WORK/sluice-tls.toml" "$SLS" "$WORK/sluice-store"
sed -i "s#^public_url = .*#public_url = \"https://127.0.0.1:$SLS/\"\ntls_cert = \"$WORK/tls.crt\"\ntls_key = \"$WORK/tls.key\"#" "$WORK/sluice-tls.toml"
log "starting sluice over TLS on 127.0.0.1:$SLS"
RUST_LOG=${SLUICE_LOG:-info} "$SLUICE" serve --config "$WORK/sluice-tls.toml" 2>"$WORK/sluice-tls.log" &
SLS_PID=$!
PIDS+=("$SLS_PID")
until curl -skf -o /dev/null --max-time 2 "https://127.0.0.1:$SLS/-/ping"; do sleep 0.05; done

declare -A PORT=([sluice]=$SL [nginx]=$NG [upstream]=$UP)
PEERS=(sluice nginx upstream)

# ---------------------------------------------------------------- targets
FULL="Accept: application/json"
CORGI="Accept: application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
GZ="Accept-Encoding: gzip"
ID="Accept-Encoding: identity"
# name|path|accept|encoding
TARGETS=(
    "express full gzip|/express|$FULL|$GZ"
    "express corgi gzip|/express|$CORGI|$GZ"
    "@types/node full gzip|/@types%2fnode|$FULL|$GZ"
    "@types/node corgi gzip|/@types%2fnode|$CORGI|$GZ"
    "express full identity|/express|$FULL|$ID"
    "express corgi identity|/express|$CORGI|$ID"
    "@types/node full identity|/@types%2fnode|$FULL|$ID"
    "@types/node corgi identity|/@types%2fnode|$CORGI|$ID"
    "tarball 300 KB|/bench-big/-/bench-big-1.0.0.tgz|Accept: */*|$GZ"
    "tarball 5 MB|/bench-huge/-/bench-huge-1.0.0.tgz|Accept: */*|$GZ"
)
if [ -n "$ONLY" ]; then
    kept=()
    for t in "${TARGETS[@]}"; do
        if [[ "${t%%|*}" =~ $ONLY ]]; then kept+=("$t"); fi
    done
    TARGETS=("${kept[@]}")
fi

cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout, summary.requests))
end
EOF

# wrk_run URL ACCEPT ENCODING PID... -> "req/s p50_ms p99_ms errors server_cpu_us_per_request"
wrk_run() {
    local url=$1 accept=$2 enc=$3
    shift 3
    local cpu0 cpu1 out rps p50 p99 errors requests us
    cpu0=$(cpu_read "$@")
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 30s -s "$WORK/report.lua" \
        -H "$accept" -H "$enc" "$url" | grep '^RESULT' || echo "RESULT 0 0 0 -1 0")
    cpu1=$(cpu_read "$@")
    read -r _ rps p50 p99 errors requests <<<"$out"
    us=$(python3 -c "print(f'{$(cpu_seconds "$cpu0" "$cpu1" $#) * 1e6 / max($requests, 1):.0f}')")
    echo "$out (server CPU $us us/request)" >&2
    echo "$rps $p50 $p99 $errors $us"
}

# ---------------------------------------------------------------- npm install
cat >"$WORK/package.json.in" <<'EOF'
{ "name": "bench-project", "version": "1.0.0", "private": true,
  "dependencies": { "bench-pkg-000": "^1.0.0" } }
EOF
INSTALLS=$WORK/installs.tsv
: >"$INSTALLS"
npm_install() { # PEER RUN -> "wall_s packages"
    local dir="$WORK/project-$1-$2"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$WORK/package.json.in" "$dir/package.json"
    local t0 t1
    t0=$(now_ns)
    (cd "$dir" && npm install --registry "http://127.0.0.1:${PORT[$1]}/" --cache "$WORK/npm-cache-$1-$2" \
        --no-audit --no-fund --ignore-scripts --no-update-notifier --loglevel=error >"$WORK/npm-$1-$2.log" 2>&1) \
        || { echo "npm install via $1 failed: $(tail -5 "$WORK/npm-$1-$2.log")" >&2; echo "0 0"; return; }
    t1=$(now_ns)
    local n
    n=$(find "$dir/node_modules" -maxdepth 1 -name 'bench-pkg-*' | wc -l)
    rm -rf "$dir" "$WORK/npm-cache-$1-$2"
    echo "$(( (t1 - t0) / 1000000 )) $n"
}
for peer in "${PEERS[@]}"; do
    [ "$INSTALL_RUNS" -gt 0 ] || break
    log "npm install via $peer (priming run)"
    read -r ms n <<<"$(npm_install "$peer" prime)"
    echo "prime: ${ms} ms, $n packages" >&2
    for run in $(seq "$INSTALL_RUNS"); do
        case $peer in
            sluice) pids="$SL_PID" ;;
            nginx) pids=$(ng_pids) ;;
            *) pids="" ;;
        esac
        # shellcheck disable=SC2086
        before=$( [ -n "$pids" ] && cpu_read $pids || echo "0 0")
        read -r ms n <<<"$(npm_install "$peer" "$run")"
        # shellcheck disable=SC2086
        after=$( [ -n "$pids" ] && cpu_read $pids || echo "0 0")
        # shellcheck disable=SC2086
        cpu=$(python3 -c "print(f'{$(cpu_seconds "$before" "$after" "$(echo $pids | wc -w)"):.3f}')")
        [ -n "$pids" ] || cpu="-"
        echo "run $run: ${ms} ms, $n packages, proxy CPU ${cpu} s" >&2
        printf '%s\t%s\t%s\t%s\t%s\n' "$peer" "$run" "$ms" "$n" "$cpu" >>"$INSTALLS"
    done
done

log "idle memory after the installs"
sleep 5
hot_bytes() { curl -sf "http://127.0.0.1:$SL/-/sluice/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hot_cache_bytes"])'; }
SL_RSS=$(rss_kb "$SL_PID")
NG_RSS=$(rss_kb $(ng_pids))
HOT=$(hot_bytes)


log "priming"
for peer in "${PEERS[@]}"; do
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r _ path accept enc <<<"$t"
        for _ in 1 2; do
            curl -sf -o /dev/null -H "$accept" -H "$enc" "http://127.0.0.1:${PORT[$peer]}$path"
        done
    done
done

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for t in "${TARGETS[@]}"; do
    IFS='|' read -r name path accept enc <<<"$t"
    for peer in "${PEERS[@]}"; do
        url="http://127.0.0.1:${PORT[$peer]}$path"
        # what one client gets: status, bytes on the wire, encoding, cache status
        probe=$(curl -s -o /dev/null -D "$WORK/headers" -w '%{http_code} %{size_download}' -H "$accept" -H "$enc" "$url")
        ce=$(grep -i '^content-encoding:' "$WORK/headers" | tr -d '\r' | awk '{print $2}' || true)
        cs=$(grep -i '^x-cache-status:' "$WORK/headers" | tr -d '\r' | awk '{print $2}' || true)
        log "wrk: $name via $peer ($probe ${ce:-identity} ${cs:--})"
        case $peer in sluice) pids="$SL_PID" ;; nginx) pids=$(ng_pids) ;; *) pids="$UP_PID" ;; esac
        read -r rps p50 p99 errors us <<<"$(wrk_run "$url" "$accept" "$enc" $pids)"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$peer" "$rps" "$p50" "$p99" "$errors" \
            "${probe#* }" "${ce:-identity}" "$us" >>"$RESULTS"
    done
done

# ---------------------------------------------------------------- over TLS
TLS_TARGETS=(
    "tarball 300 KB|/bench-big/-/bench-big-1.0.0.tgz|Accept: */*|$GZ"
    "express corgi gzip|/express|$CORGI|$GZ"
)
declare -A TLS_PORT=([sluice]=$SLS [nginx]=$NGS)
TLSRESULTS=$WORK/tls.tsv
: >"$TLSRESULTS"
for t in "${TLS_TARGETS[@]}"; do
    IFS='|' read -r name path accept enc <<<"$t"
    if [ -n "$ONLY" ] && ! [[ "$name over TLS" =~ $ONLY ]]; then continue; fi
    for peer in sluice nginx; do
        url="https://127.0.0.1:${TLS_PORT[$peer]}$path"
        for _ in 1 2; do curl -skf -o /dev/null -H "$accept" -H "$enc" "$url"; done
        proto=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' -H "$accept" -H "$enc" "$url")
        log "wrk over TLS: $name via $peer ($proto)"
        case $peer in sluice) pids="$SLS_PID" ;; nginx) pids=$(ng_pids) ;; esac
        read -r rps p50 p99 errors us <<<"$(wrk_run "$url" "$accept" "$enc" $pids)"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$peer" "$rps" "$p99" "$errors" "$us" >>"$TLSRESULTS"
    done
done

log "idle memory after the throughput runs"
sleep 5
SL_RSS2=$(rss_kb "$SL_PID")
NG_RSS2=$(rss_kb $(ng_pids))
HOT2=$(hot_bytes)

# ---------------------------------------------------------------- single-flight
log "single-flight: $BURST concurrent requests for one uncached packument and tarball"
BURSTS=$WORK/bursts.tsv
: >"$BURSTS"
for peer in sluice nginx; do
    [ "$BURST" -gt 0 ] || break
    for kind in packument tarball; do
        name="bench-sf-$peer-$kind"
        if [ "$kind" = packument ]; then path="/$name"; else path="/$name/-/$name-1.0.0.tgz"; fi
        res=$(python3 "$ROOT/benches/burst.py" "${PORT[$peer]}" "$path" "$BURST")
        hits=$(curl -sf "http://127.0.0.1:$UP/-/counts" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$path', 0))")
        echo "$peer $kind: $res, upstream fetches: $hits" >&2
        printf '%s\t%s\t%s\t%s\n' "$peer" "$kind" "$hits" "$res" >>"$BURSTS"
    done
done

# ---------------------------------------------------------------- open connections
log "memory of keep-alive connections held open after one cached tarball each ($HOLD)"
CONNMEM=$WORK/connmem.tsv
: >"$CONNMEM"
small=/bench-pkg-000/-/bench-pkg-000-1.0.0.tgz
HOLD_SECS=${HOLD_SECS:-15}
for n in $HOLD; do
    [ "$n" -gt 0 ] || continue
    # Each count on a fresh sluice (the same store), so no phase before leaves memory behind.
    HP=$(free_port)
    write_sluice_conf "$WORK/hold.toml" "$HP" "$WORK/sluice-store"
    RUST_LOG=warn "$SLUICE" serve --config "$WORK/hold.toml" 2>"$WORK/hold-sluice.log" &
    HOLD_PID=$!
    PIDS+=("$HOLD_PID")
    wait_http "http://127.0.0.1:$HP/-/ping"
    for peer in sluice nginx; do
        case $peer in sluice) port=$HP pids=$HOLD_PID ;; nginx) port=${PORT[nginx]} pids=$(ng_pids) ;; esac
        curl -sf -o /dev/null "http://127.0.0.1:$port$small"
        sleep 2
        before=$(rss_kb $pids)
        python3 "$ROOT/benches/burst.py" "$port" "$small" "$n" "$HOLD_SECS" >"$WORK/hold.json" &
        holder=$!
        until [ -s "$WORK/hold.json" ]; do sleep 0.05; done
        held=$(rss_kb $pids)
        sleep $(( HOLD_SECS - 3 ))
        idle=$(rss_kb $pids)
        wait "$holder"
        sleep 2
        after=$(rss_kb $pids)
        echo "$peer: $(cat "$WORK/hold.json") RSS KiB before $before, answered $held, idle $idle, after $after" >&2
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$before" "$held" "$idle" "$after" "$(cat "$WORK/hold.json")" >>"$CONNMEM"
    done
    kill "$HOLD_PID"
    wait "$HOLD_PID" 2>/dev/null || true
done

# ---------------------------------------------------------------- start-up
STARTUP=""
if [ "$SEED" -gt 0 ]; then
    log "start-up with $SEED stored packuments"
    t0=$(now_ns)
    "$SEEDER" "$WORK/seed-store" "$SEED"
    seed_s=$(( ($(now_ns) - t0) / 1000000 ))
    P2=$(free_port)
    write_sluice_conf "$WORK/seed.toml" "$P2" "$WORK/seed-store"
    last=$(printf 'seed-pkg-%06d' $(( SEED - 1 )))
    sync
    t0=$(now_ns)
    RUST_LOG=warn "$SLUICE" serve --config "$WORK/seed.toml" 2>"$WORK/seed-sluice.log" &
    SEED_PID=$!
    PIDS+=("$SEED_PID")
    until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$P2/-/ping"; do sleep 0.005; done
    ping_ms=$(( ($(now_ns) - t0) / 1000000 ))
    until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$P2/$last"; do sleep 0.005; done
    doc_ms=$(( ($(now_ns) - t0) / 1000000 ))
    upstream_hits=$(curl -sf "http://127.0.0.1:$UP/-/counts" | python3 -c "import json,sys; print(json.load(sys.stdin).get('/$last', 0))")
    SEED_RSS=$(rss_kb "$SEED_PID")
    kill "$SEED_PID"
    STARTUP="$SEED $seed_s $ping_ms $doc_ms $upstream_hits $SEED_RSS"
fi

# ---------------------------------------------------------------- table
log "results"
python3 - "$RESULTS" "$INSTALLS" "$BURSTS" "$SL_RSS" "$NG_RSS" "$HOT" "$SL_RSS2 $NG_RSS2 $HOT2" "$STARTUP" "$DURATION" "$CONNS" "$CONNMEM" "$TLSRESULTS" <<'EOF'
import json, statistics, sys
results, installs, bursts, sl_rss, ng_rss, hot, after, startup, duration, conns, connmem, tls = sys.argv[1:]
sl_rss2, ng_rss2, hot2 = after.split()
rows = {}
for line in open(results):
    name, peer, rps, p50, p99, err, size, ce, us = line.rstrip("\n").split("\t")
    rows.setdefault(name, {})[peer] = (float(rps), float(p50), float(p99), int(err), int(size), ce, int(us))
print(f"\n### Throughput (wrk, {conns} connections, {duration} s each, 127.0.0.1)\n")
print("| target | sluice req/s | nginx req/s | upstream req/s | sluice/nginx | sluice p99 ms | nginx p99 ms | server CPU µs/request (sluice / nginx) | body bytes (sluice / nginx) | errors (s/n/u) |")
print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
for name, peers in rows.items():
    s, n, u = peers["sluice"], peers["nginx"], peers["upstream"]
    ratio = s[0] / n[0] if n[0] else float("inf")
    print(f"| {name} | {s[0]:,.0f} | {n[0]:,.0f} | {u[0]:,.0f} | **{ratio:.2f}×** | {s[2]:.2f} | {n[2]:.2f} "
          f"| {s[6]} / {n[6]} | {s[4]:,} {s[5]} / {n[4]:,} {n[5]} | {s[3]}/{n[3]}/{u[3]} |")
tls_rows = {}
for line in open(tls):
    name, peer, rps, p99, err, us = line.rstrip("\n").split("\t")
    tls_rows.setdefault(name, {})[peer] = (float(rps), float(p99), int(err), int(us))
if tls_rows:
    print(f"\n### Over TLS 1.3 (the same P-256 certificate; wrk, {conns} connections, {duration} s each)\n")
    print("| target | sluice req/s | nginx req/s | sluice/nginx | sluice p99 ms | nginx p99 ms | server CPU µs/request (sluice / nginx) | errors (s/n) |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name, peers in tls_rows.items():
        s, n = peers["sluice"], peers["nginx"]
        ratio = s[0] / n[0] if n[0] else float("inf")
        print(f"| {name} | {s[0]:,.0f} | {n[0]:,.0f} | **{ratio:.2f}×** | {s[1]:.2f} | {n[1]:.2f} | {s[3]} / {n[3]} | {s[2]}/{n[2]} |")
print("\n### npm install, 500 packages, proxy warm, client cache empty\n")
print("| peer | runs | wall s (median) | wall s (each) | proxy CPU s per install (each) | packages | proxy CPU s (median) |")
print("|---|---:|---:|---|---|---:|---:|")
per = {}
for line in open(installs):
    peer, run, ms, n, cpu = line.rstrip("\n").split("\t")
    per.setdefault(peer, []).append((int(ms) / 1000, int(n), cpu))
for peer, runs in per.items():
    walls = [r[0] for r in runs]
    cpus = [r[2] for r in runs]
    median_cpu = f"{statistics.median(float(c) for c in cpus):.3f}" if "-" not in cpus else "-"
    print(f"| {peer} | {len(runs)} | {statistics.median(walls):.2f} | {', '.join(f'{w:.2f}' for w in walls)} "
          f"| {', '.join(cpus)} | {runs[0][1]} | {median_cpu} |")
print("\n### Memory (idle, 5 s after the phase; hot cache bound storage.memory = 256 MiB)\n")
print("| after | sluice RSS MiB | sluice hot cache MiB | nginx RSS MiB (master + workers) |")
print("|---|---:|---:|---:|")
print(f"| the npm installs (first phase) | {int(sl_rss) / 1024:.1f} | {int(hot) / 1048576:.1f} | {int(ng_rss) / 1024:.1f} |")
print(f"| the throughput runs (9 MB documents too) | {int(sl_rss2) / 1024:.1f} | {int(hot2) / 1048576:.1f} | {int(ng_rss2) / 1024:.1f} |")
print("\n### Single-flight\n\n| peer | uncached | concurrent requests | 200s | distinct bodies | upstream fetches | seconds |")
print("|---|---|---:|---:|---:|---:|---:|")
for line in open(bursts):
    peer, kind, hits, res = line.rstrip("\n").split("\t")
    r = json.loads(res)
    print(f"| {peer} | {kind} | {r['n']} | {r['ok']} | {r['distinct_bodies']} | {hits} | {r['seconds']} |")
print("\n### Open keep-alive connections (all answered at once, then held idle)\n\n| peer | connections | 200s | RSS MiB before | RSS MiB once answered | RSS MiB idle (held open) | KiB per idle connection | RSS MiB after close |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for line in open(connmem):
    peer, before, held, idle, after_close, res = line.rstrip("\n").split("\t")
    r = json.loads(res)
    per_conn = (int(idle) - int(before)) / r["n"]
    print(f"| {peer} | {r['n']} | {r['ok']} | {int(before) / 1024:.1f} | {int(held) / 1024:.1f} | {int(idle) / 1024:.1f} | {per_conn:.1f} | {int(after_close) / 1024:.1f} |")
if startup:
    n, seed_ms, ping_ms, doc_ms, hits, rss = startup.split()
    print(f"\n### Start-up with {int(n):,} stored packuments\n\n"
          f"seeding: {int(seed_ms) / 1000:.1f} s; process start → `/-/ping` answers: {ping_ms} ms; "
          f"→ a stored packument answers: {doc_ms} ms (upstream asked {hits}×); RSS then {int(rss) / 1024:.1f} MiB")
EOF
