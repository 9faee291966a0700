#!/usr/bin/env bash
# sluice's memory while it serves large tarballs, on 127.0.0.1 only.
#
#   benches/stream.sh                                        # builds release, prints a table
#   SKIP_BUILD=1 SLUICE_BIN=target/debug/sluice benches/stream.sh   # an existing binary
#
# Generates COUNT (8) different real npm tarballs of SIZE_MIB (64) MiB each — gzipped tar of
# package/package.json + an incompressible payload — as packages bench-huge-0 … bench-huge-7
# 1.0.0 with correct sha512 integrity and sha1 shasum, served from disk by
# benches/huge_upstream.py. sluice runs in whitelist + read-through mode with a 32 MiB hot
# cache (storage.memory), so no tarball fits in it. Two phases, each COUNT concurrent curl
# downloads of the COUNT different tarballs through sluice:
#   cold        every tarball is fetched from upstream, verified and stored
#   store       the same downloads again, nothing restarted: answered from the store
# For each phase: wall time, peak RSS of the sluice process (VmRSS sampled every ~20 ms), its
# VmHWM (reset before the phase through /proc/PID/clear_refs when the kernel allows it),
# upstream tarball fetches, x-cache-status of the answers, and whether every downloaded body is
# byte-identical to the generated file (sha512; the script exits 1 if one is not).
# Needs: python3, curl, sha512sum; ~4 × COUNT × SIZE_MIB MiB free in $TMPDIR (1.5 GB by default).
#
# Knobs (environment): SLUICE_BIN (target/release/sluice), SKIP_BUILD=1 (no cargo build),
# COUNT (8), SIZE_MIB (64), MEMORY (storage.memory, 32MiB), HOT_TARBALL_MAX
# (storage.hot_tarball_max, 1MiB, written only when `sluice check` accepts the key),
# TIMEOUT (seconds per download, 600), SLUICE_LOG (RUST_LOG of sluice, warn),
# KEEP=1 keeps the work folder (downloads, logs, RSS samples). Everything started here is stopped
# on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${COUNT:-8}
SIZE_MIB=${SIZE_MIB:-64}
MEMORY=${MEMORY:-32MiB}
HOT_TARBALL_MAX=${HOT_TARBALL_MAX:-1MiB}
TIMEOUT=${TIMEOUT:-600}
SLUICE=${SLUICE_BIN:-target/release/sluice}
case $SLUICE in
    /*) ;;
    *) if [ -e "$SLUICE" ]; then SLUICE=$(pwd)/$SLUICE; else SLUICE=$ROOT/$SLUICE; fi ;;
esac

need() { command -v "$1" >/dev/null || { echo "stream.sh: '$1' is missing ($2)" >&2; exit 1; }; }
need python3 "apt-get install -y python3"
need curl "apt-get install -y curl"
need sha512sum "apt-get install -y coreutils"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-stream.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-}" = 1 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "stream.sh: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
wait_http() { # URL [seconds]
    local deadline=$(( $(date +%s) + ${2:-30} ))
    until curl -sf -o /dev/null --max-time 2 "$1"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "$1 did not answer"
        sleep 0.05
    done
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; } # PID FIELD -> KiB
mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; } # KiB -> MiB

need_mib=$(( COUNT * SIZE_MIB * 4 + 256 ))
avail_mib=$(( $(df -Pk "$WORK" | awk 'NR == 2 {print $4}') / 1024 ))
[ "$avail_mib" -ge "$need_mib" ] || die "$WORK has $avail_mib MiB free, needs ~$need_mib MiB"

# ---------------------------------------------------------------- build
if [ "${SKIP_BUILD:-}" != 1 ]; then
    log "building sluice (release)"
    (cd "$ROOT" && cargo build --release --bin sluice)
fi
[ -x "$SLUICE" ] || die "$SLUICE is not an executable (set SLUICE_BIN, or drop SKIP_BUILD=1)"

# ---------------------------------------------------------------- upstream
log "generating $COUNT tarballs of $SIZE_MIB MiB and starting the upstream (benches/huge_upstream.py)"
t0=$(now_ns)
python3 "$ROOT/benches/huge_upstream.py" "$WORK/huge" "$WORK/upstream.port" "$COUNT" "$SIZE_MIB" \
    2>"$WORK/upstream.log" &
UP_PID=$!
PIDS+=("$UP_PID")
deadline=$(( $(date +%s) + 60 + COUNT * SIZE_MIB / 2 )) # generous: ~2 MiB/s at the slowest
until [ -f "$WORK/upstream.port" ]; do
    kill -0 "$UP_PID" 2>/dev/null || die "the upstream exited: $(tail -5 "$WORK/upstream.log")"
    [ "$(date +%s)" -lt "$deadline" ] || die "generating the tarballs took too long"
    sleep 0.2
done
UP=$(cat "$WORK/upstream.port")
wait_http "http://127.0.0.1:$UP/-/ping"
echo "generated in $(( ($(now_ns) - t0) / 1000000 )) ms: $(du -sh "$WORK/huge" | cut -f1)" >&2
declare -A WANT=()
while read -r sum file; do WANT[$file]=$sum; done <"$WORK/huge/SHA512SUMS"
[ "${#WANT[@]}" = "$COUNT" ] || die "SHA512SUMS lists ${#WANT[@]} tarballs, not $COUNT"

# ---------------------------------------------------------------- sluice
SL=$(free_port)
write_conf() { # FILE [EXTRA STORAGE LINE]
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:$SL"
public_url = "http://127.0.0.1:$SL/"
grace_period = "1s"
threads = 2
send_timeout = "${TIMEOUT}s"

[upstream]
registry = "http://127.0.0.1:$UP/"
timeout = "${TIMEOUT}s"
max_tarball = "1GiB"

[storage]
dir = "$WORK/store"
memory = "$MEMORY"
${2:-}

[policy]
mode = "whitelist"
read_through = true
whitelist = "$WORK/whitelist"
EOF
}
CONF=$WORK/sluice.toml
HOT_KEY="hot_tarball_max = \"$HOT_TARBALL_MAX\""
write_conf "$CONF" "$HOT_KEY"
if "$SLUICE" check --config "$CONF" >"$WORK/check.log" 2>&1; then
    echo "storage.hot_tarball_max accepted: $HOT_TARBALL_MAX" >&2
else
    HOT_KEY=""
    write_conf "$CONF"
    "$SLUICE" check --config "$CONF" >"$WORK/check.log" 2>&1 || die "sluice check rejects $CONF: $(cat "$WORK/check.log")"
    echo "storage.hot_tarball_max not known to this sluice: left out" >&2
fi
log "starting sluice on 127.0.0.1:$SL ($SLUICE)"
RUST_LOG=${SLUICE_LOG:-warn} "$SLUICE" serve --config "$CONF" 2>"$WORK/sluice.log" &
SL_PID=$!
PIDS+=("$SL_PID")
wait_http "http://127.0.0.1:$SL/-/ping" 60
sleep 1
IDLE_RSS=$(status_kb "$SL_PID" VmRSS)
HWM_ALL=$(status_kb "$SL_PID" VmHWM)
echo "idle RSS $(mib "$IDLE_RSS") MiB" >&2

# ---------------------------------------------------------------- phases
# a VmRSS sampler of PID every ~20 ms until STOP exists; writes "t_ms kib" lines to OUT and the
# maximum to OUT.max
cat >"$WORK/sampler.py" <<'EOF'
import os, sys, time
pid, out, stop = sys.argv[1:]
peak, start = 0, time.monotonic()
with open(out, "w") as f:
    while not os.path.exists(stop):
        try:
            with open(f"/proc/{pid}/status") as s:
                kib = next(int(l.split()[1]) for l in s if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            break
        peak = max(peak, kib)
        f.write(f"{(time.monotonic() - start) * 1000:.0f} {kib}\n")
        time.sleep(0.02)
with open(out + ".max", "w") as f:
    f.write(str(peak))
EOF
upstream_tarball_fetches() {
    curl -sf "http://127.0.0.1:$UP/-/counts" |
        python3 -c 'import json,sys; print(sum(n for p, n in json.load(sys.stdin).items() if p.endswith(".tgz")))'
}
store_bytes() { du -sb "$WORK/store" 2>/dev/null | cut -f1; }
settle() { # until the store stops growing for 1 s (at most 60 s)
    local last="" cur
    for _ in $(seq 60); do
        cur=$(store_bytes)
        [ "$cur" = "$last" ] && return
        last=$cur
        sleep 1
    done
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
FAILED=0
run_phase() { # NAME
    local phase=$1 dir="$WORK/dl-$1" i name url t0 t1 fetches0 fetches1 hwm_reset=no ok=yes
    mkdir -p "$dir"
    log "phase $phase: $COUNT concurrent downloads of $COUNT different $SIZE_MIB MiB tarballs"
    HWM_ALL=$(( $(status_kb "$SL_PID" VmHWM) > HWM_ALL ? $(status_kb "$SL_PID" VmHWM) : HWM_ALL ))
    if { echo 5 >"/proc/$SL_PID/clear_refs"; } 2>/dev/null; then hwm_reset=yes; fi
    fetches0=$(upstream_tarball_fetches)
    python3 "$WORK/sampler.py" "$SL_PID" "$WORK/rss-$phase.txt" "$WORK/stop-$phase" &
    local sampler=$!
    PIDS+=("$sampler")
    sleep 0.1
    local curls=()
    t0=$(now_ns)
    for i in $(seq 0 $(( COUNT - 1 ))); do
        name=bench-huge-$i
        url="http://127.0.0.1:$SL/$name/-/$name-1.0.0.tgz"
        curl -sS --max-time "$TIMEOUT" -o "$dir/$name-1.0.0.tgz" -D "$dir/$name.headers" \
            -w '%{http_code} %{size_download} %{time_total}\n' "$url" >"$dir/$name.curl" 2>&1 &
        curls+=($!)
        PIDS+=($!)
    done
    local rc=0
    for i in "${!curls[@]}"; do wait "${curls[$i]}" || { rc=$?; echo "download $i: curl exit $rc" >&2; ok=no; }; done
    t1=$(now_ns)
    touch "$WORK/stop-$phase"
    wait "$sampler" || true
    local peak hwm wall
    peak=$(cat "$WORK/rss-$phase.txt.max")
    hwm=$(status_kb "$SL_PID" VmHWM)
    HWM_ALL=$(( hwm > HWM_ALL ? hwm : HWM_ALL ))
    wall=$(python3 -c "print(f'{($t1 - $t0) / 1e9:.2f}')")
    settle
    fetches1=$(upstream_tarball_fetches)
    local statuses=() code got
    for i in $(seq 0 $(( COUNT - 1 ))); do
        name=bench-huge-$i
        code=$(awk '{print $1}' "$dir/$name.curl" | tail -1)
        statuses+=("$(grep -i '^x-cache-status:' "$dir/$name.headers" 2>/dev/null | tr -d '\r' | awk '{print $2}' | tail -1 || true)")
        got=$(sha512sum "$dir/$name-1.0.0.tgz" 2>/dev/null | cut -d' ' -f1 || true)
        if [ "$code" != 200 ] || [ "$got" != "${WANT[$name-1.0.0.tgz]}" ]; then
            echo "!! $phase: $name: HTTP ${code:-none}, body $(stat -c %s "$dir/$name-1.0.0.tgz" 2>/dev/null || echo 0) bytes, sha512 ${got:0:16}… ≠ ${WANT[$name-1.0.0.tgz]:0:16}… ($(head -c 300 "$dir/$name.curl"))" >&2
            ok=no
        fi
    done
    [ "$ok" = yes ] || FAILED=1
    local cache
    cache=$(printf '%s\n' "${statuses[@]}" | sed 's/^$/-/' | sort | uniq -c | awk '{printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1}')
    echo "wall ${wall} s, peak RSS $(mib "$peak") MiB, VmHWM $(mib "$hwm") MiB (reset before: $hwm_reset)," \
        "upstream tarball fetches $(( fetches1 - fetches0 )), x-cache-status $cache, identical: $ok" >&2
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$wall" "$peak" "$hwm" "$hwm_reset" \
        "$(( fetches1 - fetches0 ))" "$cache" "$ok" >>"$RESULTS"
    [ "${KEEP:-}" = 1 ] || rm -rf "$dir"
}

run_phase cold
run_phase store
sleep 1
END_RSS=$(status_kb "$SL_PID" VmRSS)
HWM_END=$(status_kb "$SL_PID" VmHWM)
HWM_ALL=$(( HWM_END > HWM_ALL ? HWM_END : HWM_ALL ))

# ---------------------------------------------------------------- table
log "results"
python3 - "$RESULTS" "$IDLE_RSS" "$END_RSS" "$HWM_ALL" "$COUNT" "$SIZE_MIB" "$MEMORY" "${HOT_KEY:-}" "$SLUICE" <<'EOF'
import sys
results, idle, end, hwm, count, size, memory, hot_key, binary = sys.argv[1:]
mib = lambda kib: f"{int(kib) / 1024:.1f}"
print(f"\n### Large tarballs: {count} concurrent downloads of {count} different {size} MiB tarballs\n")
print(f"`{binary}`, storage.memory = {memory}" + (f", storage.{hot_key}" if hot_key else "")
      + ", whitelist + read-through, 127.0.0.1\n")
print("| phase | wall s | peak RSS MiB | bodies identical | VmHWM MiB (phase) | upstream tarball fetches | x-cache-status |")
print("|---|---:|---:|---|---:|---:|---|")
for line in open(results):
    phase, wall, peak, phwm, reset, fetches, cache, ok = line.rstrip("\n").split("\t")
    label = {"cold": "cold (from upstream)", "store": "from the store"}.get(phase, phase)
    print(f"| {label} | {wall} | {mib(peak)} | {ok} | {mib(phwm)}{'' if reset == 'yes' else ' (cumulative)'} "
          f"| {fetches} | {cache} |")
print(f"\nRSS idle before: {mib(idle)} MiB; 1 s after the last phase: {mib(end)} MiB; "
      f"overall VmHWM: **{mib(hwm)} MiB**")
EOF
[ "$FAILED" = 0 ] || die "some downloaded bodies were not byte-identical to the generated tarballs (see above)"
