#!/usr/bin/env bash
# sluice's hit path and cold misses with storage.backend = "s3" next to "disk", on 127.0.0.1 only.
#
#   SLUICE_FIXTURES=/path/to/packuments benches/fleet.sh                  # builds release, prints a table
#   SKIP_BUILD=1 SLUICE_BIN=target/debug/sluice SLUICE_FIXTURES=… benches/fleet.sh   # an existing binary
#
# One upstream (benches/upstream.py), one SeaweedFS (`weed mini`: master, volume, filer and S3
# gateway in one process, bucket `sluice` created at start) and two sluices in mirror mode,
# 2 server threads each, both running for the whole run:
#   disk   storage.dir on the local disk (cacache)
#   s3     storage.backend = "s3", the bucket on that SeaweedFS, [cluster] node = "bench"
# The same phases for each, disk first, then s3:
#   warm       /express, /@types%2fnode, /bench-big and its tarball fetched once (then cached)
#   hit        wrk -t$THREADS -c$CONNS -d$DURATION on (a) /express, abbreviated (Accept:
#              application/vnd.npm.install-v1+json) and gzip, (b) the ~300 KB bench-big tarball;
#              req/s, p50 and p99 through a wrk lua `done` hook (as benches/load.sh does)
#   cold miss  COLD sequential first requests: packument /bench-pkg-NNN (abbreviated, gzip), then
#              its tarball, NNN = 000, 001, …; curl's time_total per request, median and p90
#              (nearest rank) for packument misses and tarball misses apart. Each sluice has its
#              own store, so the same names are cold for both; x-cache-status and the upstream's
#              request counts are shown to prove they were misses.
# With sluice's default storage.memory (256 MiB) both hit targets fit in its in-memory hot cache,
# which is what a deployment serves hits from; MEMORY=0 turns that cache off so hits go to the
# store.
# Ends with a markdown table: target | disk | s3 | s3/disk, and the command line used.
# Needs: python3, curl (≥ 7.84), wrk (apt-get install -y wrk), the SeaweedFS binary `weed`
# (target/tools/seaweedfs/bin/weed). SLUICE_FIXTURES (required) names a folder of real gzipped
# packuments (express.json.gz, types__node.json.gz).
#
# Knobs (environment): SLUICE_BIN (target/release/sluice), SKIP_BUILD=1 (no cargo build),
# SLUICE_WEED (target/tools/seaweedfs/bin/weed), DURATION (wrk seconds, 5), CONNS (64),
# THREADS (wrk threads, 2), COLD (cold misses per sluice, 50, at most 500), MEMORY
# (storage.memory of both sluices; unset: sluice's default), SLUICE_LOG (RUST_LOG of sluice,
# warn), KEEP=1 keeps the work folder (logs, configs, raw timings). Everything started here is
# stopped on exit.
set -euo pipefail

# the command line, before any default is filled in
CMDLINE=""
for v in SKIP_BUILD SLUICE_FIXTURES SLUICE_BIN SLUICE_WEED DURATION CONNS THREADS COLD MEMORY SLUICE_LOG KEEP; do
    if [ -n "${!v+x}" ]; then CMDLINE+="$v=$(printf '%q' "${!v}") "; fi
done
CMDLINE+="bash $0${*:+ $*}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=${SLUICE_FIXTURES:-}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
COLD=${COLD:-50}
MEMORY=${MEMORY:-}
abs() { case $1 in /*) echo "$1" ;; *) if [ -e "$1" ]; then echo "$(pwd)/$1"; else echo "$ROOT/$1"; fi ;; esac; }
SLUICE=$(abs "${SLUICE_BIN:-target/release/sluice}")
WEED=$(abs "${SLUICE_WEED:-target/tools/seaweedfs/bin/weed}")

need() { command -v "$1" >/dev/null || { echo "fleet.sh: '$1' is missing ($2)" >&2; exit 1; }; }
need python3 "apt-get install -y python3"
need curl "apt-get install -y curl"
need wrk "apt-get install -y wrk"
die() { echo "fleet.sh: $*" >&2; exit 1; }
[ -f "$FIXTURES/express.json.gz" ] || die "set SLUICE_FIXTURES to a folder of real gzipped packuments (express.json.gz, types__node.json.gz)"
[ -x "$WEED" ] || die "$WEED is not an executable (set SLUICE_WEED to SeaweedFS's weed binary)"
[ "$COLD" -ge 1 ] && [ "$COLD" -le 500 ] || die "COLD must be between 1 and 500 (the upstream serves bench-pkg-000…499)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fleet.XXXXXX")
PIDS=()
cleanup() { # newest first, one by one: the sluices stop before the bucket they write to
    local i pid
    for (( i = ${#PIDS[@]} - 1; i >= 0; i-- )); do
        pid=${PIDS[$i]}
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-}" = 1 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

log() { printf '\n== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL [seconds]
    local deadline=$(( $(date +%s) + ${2:-30} ))
    until curl -sf -o /dev/null --max-time 2 "$1"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "$1 did not answer"
        sleep 0.05
    done
}

# ---------------------------------------------------------------- build
if [ "${SKIP_BUILD:-}" != 1 ]; then
    log "building sluice (release)"
    (cd "$ROOT" && cargo build --release --bin sluice)
fi
[ -x "$SLUICE" ] || die "$SLUICE is not an executable (set SLUICE_BIN, or drop SKIP_BUILD=1)"

# ---------------------------------------------------------------- upstream
log "starting the upstream (benches/upstream.py)"
python3 "$ROOT/benches/upstream.py" "$FIXTURES" "$WORK/upstream.port" 2>"$WORK/upstream.log" &
UP_PID=$!
PIDS+=("$UP_PID")
for _ in $(seq 600); do
    [ -f "$WORK/upstream.port" ] && break
    kill -0 "$UP_PID" 2>/dev/null || die "the upstream exited: $(tail -5 "$WORK/upstream.log")"
    sleep 0.1
done
[ -f "$WORK/upstream.port" ] || die "the upstream did not start within 60 s"
UP=$(cat "$WORK/upstream.port")
wait_http "http://127.0.0.1:$UP/-/ping"

# ---------------------------------------------------------------- SeaweedFS
# weed mini listens on 7 HTTP ports (B … B+6) and their gRPC twins (+10000): pick a B below
# 45000 with all 14 free
B=$(python3 - <<'EOF'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    b = random.randrange(20000, 34990)
    if all(free(b + d) and free(b + 10000 + d) for d in range(7)):
        print(b); break
EOF
)
[ -n "$B" ] || die "found no 7 free ports (and their +10000 twins) below 45000"
S3=$(( B + 3 ))
mkdir -p "$WORK/weed"
cat >"$WORK/identities.json" <<'EOF'
{"identities":[{"name":"sluice","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
log "starting SeaweedFS (weed mini) on 127.0.0.1:$B…$((B + 6)), S3 on $S3"
"$WEED" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$B" -volume.port=$((B + 1)) -filer.port=$((B + 2)) -s3.port="$S3" \
    -admin.port=$((B + 4)) -s3.port.iceberg=$((B + 5)) -s3.port.lance=$((B + 6)) \
    -webdav=false -admin.ui=false -master.telemetry=false \
    -bucket=sluice -s3.config="$WORK/identities.json" >"$WORK/weed.log" 2>&1 &
WEED_PID=$!
PIDS+=("$WEED_PID")
deadline=$(( $(date +%s) + 90 ))
until [ "$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$S3/" || true)" != 000 ]; do
    kill -0 "$WEED_PID" 2>/dev/null || die "weed exited: $(tail -5 "$WORK/weed.log")"
    [ "$(date +%s)" -lt "$deadline" ] || die "weed's S3 port $S3 did not open within 90 s: $(tail -5 "$WORK/weed.log")"
    sleep 0.2
done
echo "S3 port open" >&2

# ---------------------------------------------------------------- sluices
declare -A PORT=() PID=()
write_conf() { # NAME PORT
    local storage
    if [ "$1" = s3 ]; then
        storage="[storage]
backend = \"s3\"
dir = \"$WORK/s3-local\"
${MEMORY:+memory = \"$MEMORY\"}

[storage.s3]
endpoint = \"http://127.0.0.1:$S3\"
bucket = \"sluice\"
region = \"us-east-1\"
allow_http = true
access_key_id = \"bench\"
secret_access_key = \"bench-secret\"

[cluster]
node = \"bench\""
    else
        storage="[storage]
dir = \"$WORK/disk\"
${MEMORY:+memory = \"$MEMORY\"}"
    fi
    cat >"$WORK/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2/"
grace_period = "1s"
threads = 2

[upstream]
registry = "http://127.0.0.1:$UP/"

[policy]
mode = "mirror"

$storage
EOF
    "$SLUICE" check --config "$WORK/$1.toml" >"$WORK/$1.check" 2>&1 ||
        die "sluice check rejects the $1 configuration (a sluice without storage.backend = \"s3\"?): $(tail -5 "$WORK/$1.check")"
}
start_sluice() { # NAME: the bucket appears a moment after the S3 port opens; sluice refuses to
    # start without it, so a failed start is retried for up to a minute
    local name=$1 port pid deadline attempt
    port=$(free_port)
    PORT[$name]=$port
    write_conf "$name" "$port"
    deadline=$(( $(date +%s) + 60 ))
    for attempt in $(seq 30); do
        RUST_LOG=${SLUICE_LOG:-warn} "$SLUICE" serve --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
        pid=$!
        PIDS+=("$pid")
        while kill -0 "$pid" 2>/dev/null; do
            if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/-/ping"; then
                PID[$name]=$pid
                echo "sluice $name on 127.0.0.1:$port (attempt $attempt)" >&2
                return
            fi
            [ "$(date +%s)" -lt "$deadline" ] || die "sluice $name did not answer within 60 s: $(tail -5 "$WORK/$name.log")"
            sleep 0.1
        done
        echo "sluice $name exited (attempt $attempt): $(tail -1 "$WORK/$name.log")" >&2
        [ "$(date +%s)" -lt "$deadline" ] || die "sluice $name did not start within 60 s: $(tail -5 "$WORK/$name.log")"
        sleep 2
    done
    die "sluice $name did not start: $(tail -5 "$WORK/$name.log")"
}
log "starting the sluices ($SLUICE)"
start_sluice disk
start_sluice s3
SIDES=(disk s3)

# ---------------------------------------------------------------- phases
CORGI="Accept: application/vnd.npm.install-v1+json"
GZ="Accept-Encoding: gzip"
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout, summary.requests))
end
EOF
upstream_count() { # PATH… -> the upstream's requests for them, summed
    curl -sf "http://127.0.0.1:$UP/-/counts" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(sum(c.get(p, 0) for p in sys.argv[1:]))' "$@"
}
probe() { # URL [HEADER…] -> "code bytes cache-status" of one GET
    local url=$1
    shift
    local args=()
    for h in "$@"; do args+=(-H "$h"); done
    curl -s -o /dev/null --max-time 30 "${args[@]}" -w '%{http_code} %{size_download} %header{x-cache-status}' "$url" || echo "000 0 -"
}
RESULTS=$WORK/results.tsv # side kind name value…
: >"$RESULTS"
TARBALL_PATH=""
for side in "${SIDES[@]}"; do
    base="http://127.0.0.1:${PORT[$side]}"

    log "$side: warm"
    for t in "/express|$CORGI|$GZ" "/express|Accept: application/json|$GZ" "/@types%2fnode|$CORGI|$GZ" "/bench-big|$CORGI|$GZ"; do
        IFS='|' read -r path accept enc <<<"$t"
        echo "$path ($accept): $(probe "$base$path" "$accept" "$enc")" >&2
    done
    tb=$(curl -sf --max-time 30 "$base/bench-big" | python3 -c '
import json, sys, urllib.parse
d = json.load(sys.stdin)
print(urllib.parse.urlsplit(d["versions"][d["dist-tags"]["latest"]]["dist"]["tarball"]).path)')
    [ -n "$tb" ] || die "$side: no tarball link in /bench-big"
    [ -z "$TARBALL_PATH" ] || [ "$TARBALL_PATH" = "$tb" ] || echo "!! $side links the bench-big tarball at $tb, not $TARBALL_PATH" >&2
    TARBALL_PATH=$tb
    echo "$tb: $(probe "$base$tb")" >&2
    sleep 1 # let a background write to the store finish

    # name|path|accept|encoding
    for t in "express corgi gzip|/express|$CORGI|$GZ" "tarball 300 KB|$tb|Accept: */*|$GZ"; do
        IFS='|' read -r name path accept enc <<<"$t"
        read -r code bytes cs <<<"$(probe "$base$path" "$accept" "$enc")"
        log "$side: wrk $name ($code ${cs:--} $bytes bytes)"
        [ "$code" = 200 ] || echo "!! $side: $path answers $code before wrk" >&2
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 30s -s "$WORK/report.lua" \
            -H "$accept" -H "$enc" "$base$path" | grep '^RESULT' || echo "RESULT 0 0 0 -1 0")
        echo "$out" >&2
        read -r _ rps p50 p99 errors requests <<<"$out"
        printf '%s\thit\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$side" "$name" "$rps" "$p50" "$p99" "$errors" "$requests" "$bytes" "${cs:--}" >>"$RESULTS"
    done

    log "$side: $COLD cold misses (packument, then its tarball)"
    paths=()
    for i in $(seq 0 $(( COLD - 1 ))); do
        n=$(printf 'bench-pkg-%03d' "$i")
        paths+=("/$n" "/$n/-/$n-1.0.0.tgz")
    done
    before=$(upstream_count "${paths[@]}")
    for i in $(seq 0 $(( COLD - 1 ))); do
        n=$(printf 'bench-pkg-%03d' "$i")
        for kind in packument tarball; do
            if [ "$kind" = packument ]; then
                path=/$n
                w=$(curl -s -o /dev/null --max-time 30 -H "$CORGI" -H "$GZ" -w '%{http_code} %{time_total} %header{x-cache-status}' "$base$path" || echo "000 0 -")
            else
                path=/$n/-/$n-1.0.0.tgz
                w=$(curl -s -o /dev/null --max-time 30 -w '%{http_code} %{time_total} %header{x-cache-status}' "$base$path" || echo "000 0 -")
            fi
            read -r code secs cs <<<"$w"
            [ "$code" = 200 ] || echo "!! $side: $path answered $code" >&2
            printf '%s\tcold\t%s\t%s\t%s\t%s\t%s\n' "$side" "$kind" "$path" "$code" "$secs" "${cs:--}" >>"$RESULTS"
        done
    done
    after=$(upstream_count "${paths[@]}")
    printf '%s\tfetches\t%s\n' "$side" "$(( after - before ))" >>"$RESULTS"
    echo "upstream fetches for these ${#paths[@]} requests: $(( after - before ))" >&2
done
for side in "${SIDES[@]}"; do
    kill -0 "${PID[$side]}" 2>/dev/null || die "sluice $side died during the run: $(tail -5 "$WORK/$side.log")"
done

# ---------------------------------------------------------------- table
log "results"
python3 - "$RESULTS" "$SLUICE" "$("$WEED" version 2>/dev/null | head -1)" "$DURATION" "$CONNS" "$THREADS" "$COLD" "${MEMORY:-default}" "$CMDLINE" <<'EOF'
import math, sys
results, binary, weed, duration, conns, threads, cold, memory, cmdline = sys.argv[1:]
hit, times, codes, caches, fetches = {}, {}, {}, {}, {}
for line in open(results):
    f = line.rstrip("\n").split("\t")
    side, kind = f[0], f[1]
    if kind == "hit":
        name, rps, p50, p99, err, reqs, size, cs = f[2:]
        hit.setdefault(name, {})[side] = (float(rps), float(p50), float(p99), int(err), int(reqs), int(size), cs)
    elif kind == "cold":
        what, path, code, secs, cs = f[2:]
        times.setdefault(what, {}).setdefault(side, []).append(float(secs) * 1000)
        codes.setdefault(what, {}).setdefault(side, []).append(code)
        caches.setdefault(what, {}).setdefault(side, []).append(cs)
    elif kind == "fetches":
        fetches[side] = int(f[2])
def rank(xs, q):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(q * len(xs)) - 1)] if xs else float("nan")
def tally(xs):
    out = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return ", ".join(f"{k}×{v}" for k, v in sorted(out.items()))
def ratio(s, d):
    return f"**{s / d:.2f}×**" if d else "-"
rows = []
for name, by in hit.items():
    d, s = by.get("disk"), by.get("s3")
    if not d or not s:
        continue
    rows.append((f"hit {name}: req/s", f"{d[0]:,.0f}", f"{s[0]:,.0f}", ratio(s[0], d[0])))
    rows.append((f"hit {name}: p50 ms", f"{d[1]:.2f}", f"{s[1]:.2f}", ratio(s[1], d[1])))
    rows.append((f"hit {name}: p99 ms", f"{d[2]:.2f}", f"{s[2]:.2f}", ratio(s[2], d[2])))
    rows.append((f"hit {name}: errors / requests", f"{d[3]} / {d[4]:,}", f"{s[3]} / {s[4]:,}", ""))
    rows.append((f"hit {name}: body bytes, x-cache-status", f"{d[5]:,}, {d[6]}", f"{s[5]:,}, {s[6]}", ""))
for what in ("packument", "tarball"):
    by = times.get(what, {})
    d, s = by.get("disk", []), by.get("s3", [])
    for label, q in (("median", 0.5), ("p90", 0.9)):
        dv, sv = rank(d, q), rank(s, q)
        rows.append((f"cold {what} miss: {label} ms", f"{dv:.2f}", f"{sv:.2f}", ratio(sv, dv)))
    rows.append((f"cold {what} miss: statuses, x-cache-status",
                 f"{tally(codes[what]['disk'])}; {tally(caches[what]['disk'])}",
                 f"{tally(codes[what]['s3'])}; {tally(caches[what]['s3'])}", ""))
rows.append((f"cold: upstream fetches for the {2 * int(cold)} requests",
             str(fetches.get("disk", "-")), str(fetches.get("s3", "-")), ""))
print(f"\n### storage.backend = \"s3\" (SeaweedFS `weed mini`) next to \"disk\", 127.0.0.1\n")
print(f"`{binary}`; SeaweedFS {weed}; mirror mode, server.threads = 2, storage.memory = {memory}; "
      f"hit: wrk -t{threads} -c{conns} -d{duration}s; cold: {cold} sequential packument + tarball "
      f"misses (bench-pkg-000…), curl time_total, nearest-rank percentiles\n")
print("| target | disk | s3 | s3/disk |")
print("|---|---:|---:|---:|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print(f"\ncommand: `{cmdline}`")
EOF
