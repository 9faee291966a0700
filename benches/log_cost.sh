#!/usr/bin/env bash
# What the shipped access log costs (issue "A full mirror's scale", item 3), on 127.0.0.1 only:
# cached-tarball throughput with the log at `info` (the shipped default: a line per request,
# written by the buffered writer) against `warn` (no access log), the same binary and store,
# ROUNDS interleaved pairs of wrk runs.
#
#   benches/log_cost.sh                                  # builds release
#   SKIP_BUILD=1 benches/log_cost.sh
#
# Knobs: SLUICE_BIN (target/release/sluice), SKIP_BUILD=1, ROUNDS (3), DURATION (10 s),
# CONNS (64), THREADS (2), KEEP=1. Needs wrk and python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE=${SLUICE_BIN:-target/release/sluice}
case $SLUICE in /*) ;; *) SLUICE=$ROOT/$SLUICE ;; esac
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; CONNS=${CONNS:-64}; THREADS=${THREADS:-2}
command -v wrk >/dev/null || { echo "log_cost.sh: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-logcost.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-}" = 1 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
[ "${SKIP_BUILD:-}" = 1 ] || (cd "$ROOT" && cargo build --release --bin sluice)
python3 "$ROOT/benches/upstream.py" "$WORK" "$WORK/upstream.port" 2>"$WORK/upstream.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/upstream.port" ] && break; sleep 0.1; done
UP=$(cat "$WORK/upstream.port")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'bench-big\n' >"$WORK/whitelist"
cat >"$WORK/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[upstream]
registry = "http://127.0.0.1:$UP/"
[storage]
dir = "data"
[policy]
whitelist = "whitelist"
TOML
run() { # $1 = RUST_LOG level; prints requests/s
    RUST_LOG=$1 "$SLUICE" serve --config "$WORK/sluice.toml" 2>"$WORK/sluice-$1.log" &
    local pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/-/ping" >/dev/null && break; sleep 0.1; done
    local url="http://127.0.0.1:$PORT/bench-big/-/bench-big-1.0.0.tgz"
    curl -sf "$url" -o /dev/null
    wrk -t"$THREADS" -c"$CONNS" -d2s "$url" >/dev/null
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "$url" | awk '/Requests\/sec/ {print $2}'
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
echo "| round | access log at info (req/s) | no access log (req/s) | info / none |"
echo "|---|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    on=$(run info); off=$(run warn)
    echo "| $round | $on | $off | $(python3 -c "print(f'{$on/$off:.3f}')") |"
done
