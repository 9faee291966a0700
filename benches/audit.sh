#!/usr/bin/env bash
# What one maximal `npm audit` body costs sluice, on 127.0.0.1 only (issue "Hostile input",
# case 1): peak RSS over the idle RSS, and `/-/ping`'s latency while it is handled.
#
#   benches/audit.sh                                   # builds release, prints a table
#   SKIP_BUILD=1 SLUICE_BIN=target/debug/sluice benches/audit.sh
#
# Three bodies, each sent ROUNDS (3) times, one at a time, while a client asks `/-/ping` every
# 10 ms on its own connection:
#   bomb       129 KB of gzip that inflates to 127 MiB (refused with 413 past server.max_audit_body)
#   maximal    a bulk advisory body just under 16 MiB once inflated (~230,000 names), gzipped
#   quick      a quick-audit tree just under 16 MiB, gzipped
# The sluice process's VmRSS is sampled every 5 ms; the table gives the idle RSS, the peak over
# it, and the ping latencies (median, p99, max) during each phase. The upstream is
# benches/upstream.py (it answers audits with 404; what sluice does before relaying is measured).
# Knobs: SLUICE_BIN (target/release/sluice), SKIP_BUILD=1, ROUNDS (3), KEEP=1 (work folder).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE=${SLUICE_BIN:-target/release/sluice}
case $SLUICE in /*) ;; *) SLUICE=$ROOT/$SLUICE ;; esac
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-audit.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-}" = 1 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bin sluice)
fi
# No fixtures: the upstream serves its generated packages only (audits are what is measured).
python3 "$ROOT/benches/upstream.py" "$WORK" "$WORK/upstream.port" 2>"$WORK/upstream.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/upstream.port" ] && break; sleep 0.1; done
UPSTREAM_PORT=$(cat "$WORK/upstream.port")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/data"
cat >"$WORK/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[upstream]
registry = "http://127.0.0.1:$UPSTREAM_PORT/"
[storage]
dir = "data"
[policy]
whitelist = "whitelist"
[log]
level = "warn"
TOML
: >"$WORK/whitelist"
"$SLUICE" serve --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
SLUICE_PID=$!
PIDS+=($SLUICE_PID)

python3 - "$PORT" "$SLUICE_PID" "$ROUNDS" <<'PY'
import gzip, http.client, json, statistics, sys, threading, time
port, pid, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
for _ in range(200):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5); c.request("GET", "/-/ping"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.05)
time.sleep(1.0)
idle = rss_kib()
limit = 16 << 20
pad = b'{"left":["1.0.0"],"pad":"' + b" " * (127 << 20) + b'"}'
bomb = gzip.compress(pad, 9); del pad
names, size, parts = {}, 2, []
i = 0
while True:
    entry = json.dumps(f"bench-audit-package-{i:07d}") + ':["1.0.0","1.0.1"]'
    if size + len(entry) + 1 > limit - 64: break
    parts.append(entry); size += len(entry) + 1; i += 1
maximal = gzip.compress(("{" + ",".join(parts) + "}").encode(), 6)
deps, size, j = [], 64, 0
while True:
    d = json.dumps(f"bench-quick-{j:07d}") + ':{"version":"1.0.0","requires":{"left":"1.0.0"}}'
    if size + len(d) + 1 > limit - 64: break
    deps.append(d); size += len(d) + 1; j += 1
quick = gzip.compress(('{"name":"app","version":"1.0.0","requires":{},"dependencies":{' + ",".join(deps) + "}}").encode(), 6)
bodies = [("bomb", "/-/npm/v1/security/advisories/bulk", bomb),
          ("maximal", "/-/npm/v1/security/advisories/bulk", maximal),
          ("quick", "/-/npm/v1/security/audits/quick", quick)]
print(f"idle RSS: {idle/1024:.1f} MiB; bodies: bomb {len(bomb)//1024} KiB gzip, maximal {len(maximal)//1024} KiB gzip ({i} names), quick {len(quick)//1024} KiB gzip ({j} dependencies)")
print("| body | status | peak RSS over idle (MiB) | ping median (ms) | ping p99 (ms) | ping max (ms) |")
print("|---|---|---:|---:|---:|---:|")
for name, path, body in bodies:
    for _ in range(rounds):
        stop = threading.Event(); pings = []; peak = [idle]
        def pinger():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                t = time.perf_counter(); c.request("GET", "/-/ping"); c.getresponse().read()
                pings.append((time.perf_counter() - t) * 1000); time.sleep(0.01)
        def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib()); time.sleep(0.005)
        threads = [threading.Thread(target=pinger), threading.Thread(target=sampler)]
        for t in threads: t.start()
        time.sleep(0.1)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("POST", path, body=body, headers={"content-type": "application/json", "content-encoding": "gzip"})
        status = c.getresponse().status
        time.sleep(0.1); stop.set()
        for t in threads: t.join()
        pings.sort()
        p99 = pings[min(len(pings) - 1, int(len(pings) * 0.99))] if pings else 0
        print(f"| {name} | {status} | {(peak[0]-idle)/1024:.1f} | {statistics.median(pings) if pings else 0:.2f} | {p99:.2f} | {max(pings) if pings else 0:.2f} |")
PY
