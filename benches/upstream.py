#!/usr/bin/env python3
"""A local npm upstream for benches/load.sh (127.0.0.1 only, standard library only).

Serves:
  /express, /@types%2fnode   the real fixtures (FIXTURES_DIR), links -> itself
  /bench-big                 one version whose tarball is ~300 KB of incompressible bytes
  /bench-huge                one version whose tarball is ~5 MB of incompressible bytes
  /bench-pkg-NNN             a generated 500-package dependency tree (bench-pkg-000 is the root
                             dependency; pkg i depends on pkg 2i+1 and 2i+2), small real tarballs
  /bench-sf-*                any name: generated on first request, answered after a delay
                             (single-flight measurements), ~300 KB tarball
  /-/counts                  JSON {path: requests} since start
  /-/ping                    {}
Abbreviated documents for `Accept: application/vnd.npm.install-v1+json`; gzip when asked.
Every tarball is a real gzipped tar with correct sha512 integrity and sha1 shasum.

usage: upstream.py FIXTURES_DIR PORT_FILE   (binds 127.0.0.1:0, writes the port to PORT_FILE)
"""

import base64
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PACKAGES = 500
CORGI = "application/vnd.npm.install-v1+json"
CORGI_FIELDS = [
    "name", "version", "deprecated", "dependencies", "optionalDependencies", "devDependencies",
    "bundleDependencies", "bundledDependencies", "peerDependencies", "peerDependenciesMeta",
    "acceptDependencies", "bin", "directories", "dist", "engines", "_hasShrinkwrap",
    "hasInstallScript", "cpu", "os", "libc", "funding",
]
SF_DELAY = 0.3  # seconds before answering a bench-sf-* request

LOCK = threading.Lock()
COUNTS = {}
DOCS = {}  # name -> {(abbreviated, gzip): bytes}
TARBALLS = {}  # "/name/-/file.tgz" -> bytes
BASE = ""


def make_tarball(name, version, payload):
    """A real npm tarball: package/package.json + package/index.js (+ payload), gzipped."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        files = [
            ("package/package.json",
             json.dumps({"name": name, "version": version, "main": "index.js",
                         "license": "MIT"}, indent=2).encode()),
            ("package/index.js", f"module.exports = {json.dumps(name)};\n".encode()),
        ]
        if payload:
            files.append(("package/data.bin", payload))
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 499162500
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def version_doc(name, version, tgz, deps):
    file = f"{name.split('/')[-1]}-{version}.tgz"
    TARBALLS[f"/{name}/-/{file}"] = tgz
    manifest = {
        "name": name,
        "version": version,
        "description": f"generated package {name}",
        "main": "index.js",
        "license": "MIT",
        "dist": {
            "tarball": f"{BASE}{name}/-/{file}",
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode(),
            "shasum": hashlib.sha1(tgz).hexdigest(),
        },
    }
    if deps:
        manifest["dependencies"] = deps
    return manifest


def packument(name, versions):
    t = "2024-01-01T00:00:00.000Z"
    return {
        "_id": name,
        "name": name,
        "dist-tags": {"latest": list(versions)[-1]},
        "versions": versions,
        "time": {"created": t, "modified": t, **{v: t for v in versions}},
        "readme": f"# {name}\n",
    }


def abbreviate(doc):
    out = {"name": doc["name"]}
    modified = doc.get("time", {}).get("modified") or doc.get("modified")
    if modified:
        out["modified"] = modified
    out["dist-tags"] = doc.get("dist-tags", {})
    out["versions"] = {
        v: {k: m[k] for k in CORGI_FIELDS if k in m}
        for v, m in doc.get("versions", {}).items()
    }
    return out


def publish(name, doc):
    full = json.dumps(doc, separators=(",", ":")).encode()
    corgi = json.dumps(abbreviate(doc), separators=(",", ":")).encode()
    DOCS[name] = {
        (False, False): full,
        (True, False): corgi,
        (False, True): gzip.compress(full, 6, mtime=0),
        (True, True): gzip.compress(corgi, 6, mtime=0),
    }


def generate_sf(name):
    rng = random.Random(name)
    tgz = make_tarball(name, "1.0.0", rng.randbytes(300_000))
    publish(name, packument(name, {"1.0.0": version_doc(name, "1.0.0", tgz, None)}))


def build(fixtures):
    for fname, name in (("express.json.gz", "express"), ("types__node.json.gz", "@types/node")):
        path = os.path.join(fixtures, fname)
        if not os.path.exists(path):
            print(f"upstream.py: {path} is missing, {name} is not served", file=sys.stderr)
            continue
        text = gzip.decompress(open(path, "rb").read()).decode()
        publish(name, json.loads(text.replace("https://upstream.invalid/", BASE)))
    rng = random.Random(42)
    tgz = make_tarball("bench-big", "1.0.0", rng.randbytes(300_000))
    publish("bench-big", packument("bench-big", {"1.0.0": version_doc("bench-big", "1.0.0", tgz, None)}))
    # The size of a large real tarball (typescript's is ~5 MB).
    tgz = make_tarball("bench-huge", "1.0.0", rng.randbytes(5_000_000))
    publish("bench-huge", packument("bench-huge", {"1.0.0": version_doc("bench-huge", "1.0.0", tgz, None)}))
    for i in range(PACKAGES):
        name = f"bench-pkg-{i:03}"
        deps = {f"bench-pkg-{c:03}": "^1.0.0" for c in (2 * i + 1, 2 * i + 2) if c < PACKAGES}
        # a few KB of source per package, like a small real library
        src = ("// " + "x" * 70 + "\n") * rng.randint(20, 120)
        tgz = make_tarball(name, "1.0.0", src.encode())
        publish(name, packument(name, {"1.0.0": version_doc(name, "1.0.0", tgz, deps)}))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json", encoding=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
        if path == "/-/counts":
            with LOCK:
                body = json.dumps(COUNTS).encode()
            return self.send(200, body)
        if path == "/-/ping":
            return self.send(200, b"{}")
        name = urllib.parse.unquote(path[1:])
        if "/-/" in name:
            tname = name.split("/-/", 1)[0]
            if tname.startswith("bench-sf-"):
                time.sleep(SF_DELAY)
                with LOCK:
                    if tname not in DOCS:
                        generate_sf(tname)
            body = TARBALLS.get(urllib.parse.unquote(path))
            if body is None:
                return self.send(404, b'{"error":"not found"}')
            return self.send(200, body, "application/octet-stream")
        if name.startswith("bench-sf-"):
            time.sleep(SF_DELAY)
            with LOCK:
                if name not in DOCS:
                    generate_sf(name)
        docs = DOCS.get(name)
        if docs is None:
            return self.send(404, b'{"error":"not found"}')
        corgi = CORGI in (self.headers.get("Accept") or "")
        gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
        ctype = CORGI if corgi else "application/json"
        return self.send(200, docs[(corgi, gz)], ctype, "gzip" if gz else None)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096


def main():
    global BASE
    fixtures, port_file = sys.argv[1], sys.argv[2]
    server = Server(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    BASE = f"http://127.0.0.1:{port}/"
    build(fixtures)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
