#!/usr/bin/env bash
# sluice at scale: a store seeded with N packuments (examples/seed_store.rs), on 127.0.0.1 only.
#
#   benches/scale.sh                      # SIZES="10000 100000 1000000"; prints a markdown table
#   SIZES="10000 100000" benches/scale.sh
#
# For each size: seeding rate, disk per packument, start → /-/ping, the search index's build
# time and size, idle RSS with the index open, search p50/p99 over 30 fixed queries (exact
# names, prefixes, words, no match; ROUNDS rounds), the first /-/sluice/status and /-/metrics
# and their p99, a stored packument's p99 alone and while four clients search, and `verify`'s
# rate, and the console's pages (home, search with a word and with no match, a package, login,
# the admin overview logged in; PAGES_EACH requests each, time to first byte). Needs: cargo,
# python3, curl. SKIP_BUILD=1 uses the existing release build (the build
# runs under /tmp/cargo.lock when that file exists); KEEP=1 keeps the work folder;
# PERF_DIR=/some/dir records a `perf` profile of sluice while its hits are measured beside the
# searches (busy-N.perf; read it with `perf report -i … --sort comm,dso`). Everything started
# here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES:-10000 100000 1000000}
ROUNDS=${ROUNDS:-5}
PAGES_EACH=${PAGES_EACH:-30}

need() { command -v "$1" >/dev/null || { echo "scale.sh: '$1' is missing ($2)" >&2; exit 1; }; }
need cargo "https://rustup.rs"
need python3 "apt-get install -y python3"
need curl "apt-get install -y curl"

WORK=$(mktemp -d /tmp/sluice-scale.XXXXXX)
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

log() { printf '== %s\n' "$*" >&2; }
now_ns() { date +%s%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

if [ "${SKIP_BUILD:-}" != 1 ]; then
    log "building (release)"
    if [ -e /tmp/cargo.lock ]; then
        (cd "$ROOT" && flock /tmp/cargo.lock cargo build --release --bin sluice --example seed_store)
    else
        (cd "$ROOT" && cargo build --release --bin sluice --example seed_store)
    fi
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=$TARGET/release/sluice
SEEDER=$TARGET/release/examples/seed_store

write_conf() { # FILE PORT STORE
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2/"
grace_period = "1s"
threads = 2

[upstream]
registry = "http://127.0.0.1:9/"

[storage]
dir = "$3"
memory = "256MiB"

[policy]
mode = "mirror"
refresh = "30d"

[auth]
users = "$3.users"
EOF
}

# The latency phases: 30 fixed queries (exact names, prefixes, words, pairs, no match), status,
# metrics, and a packument's p99 alone and beside four searching clients; one JSON line out.
cat >"$WORK/measure.py" <<'EOF'
import http.client, json, multiprocessing, os, signal, subprocess, sys, time
port, size, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def name(i): return "seed-pkg-%06d" % (i % size)
queries = ([name(i * 7919) for i in range(10)] +
           ["seed-pkg-0001", "seed-pkg-00", "seed-pkg-0000", "seed-pkg-000",
            "seed-pkg-1", "seed-pkg-00012", "seed", "seed-pkg-0"] +
           ["hammer", "cloud", "quartz", "unicorn", "maintainer-42",
            "river stream", "rocket engine", "castle dragon"] +
           ["zzzqqq", "no-such-package", "xylophone", "qwertyuiop"])
assert len(queries) == 30
def conn(): return http.client.HTTPConnection("127.0.0.1", port, timeout=120)
def get(c, path):
    t = time.perf_counter(); c.request("GET", path); r = c.getresponse(); body = r.read()
    return (time.perf_counter() - t) * 1000, r.status, body
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
c = conn()
status = [get(c, "/-/sluice/status")[0] for _ in range(20)]
metrics = [get(c, "/-/metrics")[0] for _ in range(20)]
search = []
found = {}
for _ in range(rounds):
    for q in queries:
        ms, code, body = get(c, "/-/v1/search?text=" + q.replace(" ", "+"))
        assert code == 200, (q, code, body[:200])
        found[q] = json.loads(body)["total"]
        search.append(ms)
# The console's pages: time to the first byte of the answer (the server's time, as curl's
# time_starttransfer), PAGES_EACH requests each, the admin page with a logged-in session.
def first_byte(c, path, headers={}, method="GET", body=None):
    t = time.perf_counter(); c.request(method, path, body=body, headers=headers)
    r = c.getresponse(); ms = (time.perf_counter() - t) * 1000; data = r.read()
    return ms, r, data
def cookie(r, name):
    for k, v in r.getheaders():
        if k.lower() == "set-cookie" and v.startswith(name + "="): return v.split(";")[0]
    raise SystemExit("no %s cookie" % name)
_, r, html = first_byte(c, "/-/ui/login")
csrf = html.decode().split('name="csrf" value="')[1].split('"')[0]
form = "name=bench&password=bench-password-1&session=&next=%2F-%2Fui%2Fadmin&csrf=" + csrf
_, r, _ = first_byte(c, "/-/ui/login", method="POST", body=form, headers={
    "cookie": cookie(r, "sluice_login"), "content-type": "application/x-www-form-urlencoded"})
assert r.status == 303, r.status
session = {"cookie": cookie(r, "sluice_session")}
pages = {"home": "/-/ui/", "search_word": "/-/ui/search?q=hammer",
         "search_none": "/-/ui/search?q=zzzqqq", "package": "/-/ui/package/" + name(4242),
         "login": "/-/ui/login", "admin": "/-/ui/admin"}
console = {}
for page, path in pages.items():
    times = []
    for _ in range(int(sys.argv[4])):
        ms, r, body = first_byte(c, path, headers=session if page == "admin" else {})
        assert r.status == 200, (page, r.status, body[:300])
        times.append(ms)
    console[page] = [pct(times, 50), pct(times, 99), times[0]]
hit_alone = [get(c, "/" + name(i * 104729))[0] for i in range(300)]
# The four searching clients are processes of their own: as threads of this one they held
# the interpreter's lock while reading their answers, and the hits measured waited for it.
# Forked (not the forkserver of newer Pythons, which would re-run this file) and daemons, so a
# failure below cannot leave them searching with the script waiting for them.
mp = multiprocessing.get_context("fork")
stop = mp.Event()
def searching(k):
    # SEARCHERS_NICE=N: the searching clients at that niceness (to tell what they cost the
    # hit in sluice from what they cost it as processes sharing the same cores).
    if os.environ.get("SEARCHERS_NICE"): os.nice(int(os.environ["SEARCHERS_NICE"]))
    s = conn(); i = k
    while not stop.is_set():
        get(s, "/-/v1/search?text=" + queries[i % 30].replace(" ", "+")); i += 1
searchers = [mp.Process(target=searching, args=(k,), daemon=True) for k in range(4)]
for p in searchers: p.start()
try:
    time.sleep(0.5)
    # PERF_DIR set: a profile of sluice (every thread, call graphs) while the hits are measured.
    perf = None
    if os.environ.get("PERF_DIR"):
        out = "%s/busy-%d.perf" % (os.environ["PERF_DIR"], size)
        os.makedirs(os.environ["PERF_DIR"], exist_ok=True)
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", os.environ["SLUICE_PID"],
                                 "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)
    hit_busy = [get(c, "/" + name(i * 104729 + 1))[0] for i in range(300)]
    if perf:
        perf.send_signal(signal.SIGINT)
        _, err = perf.communicate()
        if not os.path.exists(out):
            print("scale.sh: perf wrote no profile: %s" % err.decode(errors="replace"), file=sys.stderr)
finally:
    stop.set()
    for p in searchers: p.join(timeout=130)
print(json.dumps({
    "search_p50": pct(search, 50), "search_p99": pct(search, 99),
    "status_p99": pct(status, 99), "metrics_p99": pct(metrics, 99),
    "hit_p99": pct(hit_alone, 99), "hit_p99_busy": pct(hit_busy, 99),
    "totals": {q: found[q] for q in ["seed-pkg-0001", "hammer", "river stream", "zzzqqq"]},
    "console": console,
}))
EOF

ROWS=()
for SIZE in $SIZES; do
    STORE="$WORK/store-$SIZE"
    # The store takes about 8.5 KB of blocks a packument (two files, a 4 KiB block each), the
    # index 100 bytes, and reindex writes a second index beside the first: ask for 10 KB.
    need=$(( SIZE * 10000 ))
    free=$(df --output=avail -B1 "$WORK" | tail -1)
    if [ "$free" -lt "$need" ]; then
        log "skipping $SIZE packuments: about $(( need >> 20 )) MiB needed, $(( free >> 20 )) MiB free in $WORK"
        continue
    fi
    log "seeding $SIZE packuments"
    t0=$(now_ns)
    "$SEEDER" "$STORE" "$SIZE" 2>/dev/null
    seed_ms=$(( ($(now_ns) - t0) / 1000000 ))
    sync
    # Two figures: the blocks the files take (cacache writes two files a packument, each at
    # least a 4 KiB block) and the bytes the files hold; `du -sb` counted neither (the apparent
    # sizes of files and of the 2 x 65,536 bucket folders, so it did not grow with the count).
    disk=$(du -s -B1 "$STORE" | cut -f1)
    content=$(find "$STORE" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    PORT=$(free_port)
    write_conf "$WORK/scale-$SIZE.toml" "$PORT" "$STORE"
    # An admin for the console's admin page (the measure logs in as it).
    echo bench-password-1 | "$SLUICE" user add bench --password-stdin --admin \
        --config "$WORK/scale-$SIZE.toml" >/dev/null
    log "starting sluice on $SIZE packuments"
    t0=$(now_ns)
    RUST_LOG=info "$SLUICE" serve --config "$WORK/scale-$SIZE.toml" 2>"$WORK/sluice-$SIZE.log" &
    PID=$!
    PIDS+=("$PID")
    until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/-/ping"; do sleep 0.005; done
    ping_ms=$(( ($(now_ns) - t0) / 1000000 ))
    # The first status and metrics of the process: nothing measured before them.
    status_first=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/-/sluice/status")
    metrics_first=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/-/metrics")
    log "waiting for the search index"
    until curl -sf --max-time 60 "http://127.0.0.1:$PORT/-/sluice/status" \
        | python3 -c 'import json,sys; s=json.load(sys.stdin)["search"]; sys.exit(0 if s["state"]=="ready" and s["documents"]>0 else 1)'; do
        sleep 0.2
    done
    build_ms=$(( ($(now_ns) - t0) / 1000000 ))
    documents=$(curl -sf "http://127.0.0.1:$PORT/-/sluice/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["search"]["documents"])')
    sleep 3
    rss=$(rss_kb "$PID")
    index_bytes=$(du -sb "$STORE/search-index" | cut -f1)
    log "measuring latencies"
    M=$(SLUICE_PID=$PID python3 "$WORK/measure.py" "$PORT" "$SIZE" "$ROUNDS" "$PAGES_EACH")
    echo "$M" >&2
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    log "verify"
    t0=$(now_ns)
    "$SLUICE" verify --config "$WORK/scale-$SIZE.toml" >/dev/null 2>&1 || true
    verify_ms=$(( ($(now_ns) - t0) / 1000000 ))
    log "reindex (no server running)"
    t0=$(now_ns)
    "$SLUICE" reindex --config "$WORK/scale-$SIZE.toml" >/dev/null 2>&1
    reindex_ms=$(( ($(now_ns) - t0) / 1000000 ))
    ROWS+=("$(python3 - "$SIZE" "$seed_ms" "$disk" "$ping_ms" "$build_ms" "$documents" "$rss" "$index_bytes" "$verify_ms" "$reindex_ms" "$M" "$status_first" "$metrics_first" "$content" <<'EOF'
import json, sys
size, seed_ms, disk, ping, build, docs, rss, index, verify, reindex = map(int, sys.argv[1:11])
m = json.loads(sys.argv[11])
m["status_first"], m["metrics_first"] = float(sys.argv[12]) * 1000, float(sys.argv[13]) * 1000
print(json.dumps({"size": size, "seed_rate": size / max(seed_ms, 1) * 1000, "disk_per": disk / size,
    "content_per": int(sys.argv[14]) / size,
    "ping_ms": ping, "build_s": build / 1000, "documents": docs, "rss_mib": rss / 1024,
    "index_mib": index / 2**20, "index_per": index / size, "verify_rate": size / max(verify, 1) * 1000,
    "reindex_s": reindex / 1000, **m}))
EOF
)")
    # Each size's figures as soon as they are known (a later size may not fit).
    echo "${ROWS[-1]}" >&2
    rm -rf "$STORE"
done
[ "${#ROWS[@]}" -gt 0 ] || { echo "scale.sh: no size was measured" >&2; exit 1; }

python3 - "${ROWS[@]}" <<'EOF'
import json, sys
rows = [json.loads(r) for r in sys.argv[1:]]
lines = [
    ("seeding rate (packuments/s)", lambda r: "%.0f" % r["seed_rate"]),
    ("disk per packument: blocks / file bytes (store, bytes)", lambda r: "%.0f / %.0f" % (r["disk_per"], r["content_per"])),
    ("start → /-/ping (ms)", lambda r: "%d" % r["ping_ms"]),
    ("index built at start (s, start included)", lambda r: "%.1f" % r["build_s"]),
    ("`sluice reindex`, no server (s)", lambda r: "%.1f" % r["reindex_s"]),
    ("documents indexed", lambda r: "%d" % r["documents"]),
    ("index size (MiB; bytes per package)", lambda r: "%.1f; %.0f" % (r["index_mib"], r["index_per"])),
    ("idle RSS, index open (MiB)", lambda r: "%.0f" % r["rss_mib"]),
    ("search p50 / p99, 30 queries (ms)", lambda r: "%.1f / %.1f" % (r["search_p50"], r["search_p99"])),
    ("first status (right after start) / p99 (ms)", lambda r: "%.1f / %.1f" % (r["status_first"], r["status_p99"])),
    ("first metrics / p99 (ms)", lambda r: "%.1f / %.1f" % (r["metrics_first"], r["metrics_p99"])),
    ("packument hit p99 alone / with 4 searching (ms)", lambda r: "%.1f / %.1f" % (r["hit_p99"], r["hit_p99_busy"])),
    ("`verify` (entries/s)", lambda r: "%.0f" % r["verify_rate"]),
] + [("console %s: first / p50 / p99 to first byte (ms)" % title,
      lambda r, k=k: "%.1f / %.1f / %.1f" % (r["console"][k][2], r["console"][k][0], r["console"][k][1]))
     for k, title in [("home", "home"), ("search_word", "search, a word (hammer)"),
                      ("search_none", "search, no match"), ("package", "package page"),
                      ("login", "login page"), ("admin", "admin overview, logged in")]]
print("| what | " + " | ".join("{:,}".format(r["size"]) for r in rows) + " |")
print("|---|" + "---|" * len(rows))
for title, f in lines:
    print("| %s | %s |" % (title, " | ".join(f(r) for r in rows)))
for r in rows:
    print("\n%d: totals %s" % (r["size"], r["totals"]))
EOF
