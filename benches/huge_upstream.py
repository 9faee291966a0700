#!/usr/bin/env python3
"""A local npm upstream of large tarballs for benches/stream.sh (127.0.0.1 only, standard library).

Generates COUNT packages `bench-huge-0` … `bench-huge-<COUNT-1>`, version 1.0.0, into DIR: each
tarball is a real npm tarball (gzipped tar of package/package.json + package/data.bin), the
payload SIZE_MIB MiB of incompressible bytes (seeded by the package name, so reruns give the same
files), so the .tgz is ~SIZE_MIB MiB too. Written and hashed in 1 MiB chunks: generating and
serving never hold a whole tarball in memory.

Serves:
  /bench-huge-N                        the packument (dist.tarball -> itself, sha512 integrity,
                                       sha1 shasum), gzip when asked
  /bench-huge-N/-/bench-huge-N-1.0.0.tgz   the tarball, streamed from disk with sendfile
  /-/counts                            JSON {path: requests} since start
  /-/ping                              {}

Also writes DIR/SHA512SUMS (`sha512sum` format) for the bench to compare downloads against.

usage: huge_upstream.py DIR PORT_FILE [COUNT=8] [SIZE_MIB=64]
       (binds 127.0.0.1:0, generates, then writes the port to PORT_FILE and serves)
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
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MIB = 1 << 20
CHUNK = MIB

LOCK = threading.Lock()
COUNTS = {}
DOCS = {}  # name -> {gzip: bytes}
TARBALLS = {}  # "/name/-/file.tgz" -> (path on disk, size)


class RandomReader:
    """A file-like object of `size` pseudo-random bytes, produced a chunk at a time."""

    def __init__(self, seed, size):
        self.rng = random.Random(seed)
        self.left = size

    def read(self, n=-1):
        if n < 0 or n > self.left:
            n = self.left
        self.left -= n
        return self.rng.randbytes(n)


def make_tarball(path, name, version, payload_size):
    """A real npm tarball at `path`: package/package.json + package/data.bin, gzipped."""
    manifest = json.dumps({"name": name, "version": version, "main": "index.js",
                           "license": "MIT"}, indent=2).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT, bufsize=CHUNK) as tar:
        for member, size, data in (
            ("package/package.json", len(manifest), io.BytesIO(manifest)),
            ("package/data.bin", payload_size, RandomReader(f"{name}@{version}", payload_size)),
        ):
            info = tarfile.TarInfo(member)
            info.size = size
            info.mtime = 499162500
            info.mode = 0o644
            tar.addfile(info, data)
    os.rename(tmp, path)


def digests(path):
    sha512, sha1 = hashlib.sha512(), hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha512.update(chunk)
            sha1.update(chunk)
    return sha512, sha1


def build(folder, base, count, size_mib):
    os.makedirs(folder, exist_ok=True)
    sums = []
    # a little under SIZE_MIB so the tar headers and the gzip framing land the .tgz at ~SIZE_MIB
    payload = size_mib * MIB - 8192
    for i in range(count):
        name, version = f"bench-huge-{i}", "1.0.0"
        file = f"{name}-{version}.tgz"
        path = os.path.join(folder, file)
        make_tarball(path, name, version, payload)
        sha512, sha1 = digests(path)
        size = os.path.getsize(path)
        TARBALLS[f"/{name}/-/{file}"] = (path, size)
        sums.append(f"{sha512.hexdigest()}  {file}\n")
        t = "2024-01-01T00:00:00.000Z"
        doc = {
            "_id": name,
            "name": name,
            "dist-tags": {"latest": version},
            "versions": {version: {
                "name": name,
                "version": version,
                "description": f"generated {size_mib} MiB package {name}",
                "main": "index.js",
                "license": "MIT",
                "dist": {
                    "tarball": f"{base}{name}/-/{file}",
                    "integrity": "sha512-" + base64.b64encode(sha512.digest()).decode(),
                    "shasum": sha1.hexdigest(),
                    "unpackedSize": payload,
                },
            }},
            "time": {"created": t, "modified": t, version: t},
            "readme": f"# {name}\n",
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        DOCS[name] = {False: body, True: gzip.compress(body, 6, mtime=0)}
        print(f"huge_upstream.py: {file} {size} bytes", file=sys.stderr, flush=True)
    with open(os.path.join(folder, "SHA512SUMS"), "w") as f:
        f.writelines(sums)


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
            entry = TARBALLS.get(urllib.parse.unquote(path))
            if entry is None:
                return self.send(404, b'{"error":"not found"}')
            file, size = entry
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command != "HEAD":
                with open(file, "rb") as f:
                    try:
                        self.connection.sendfile(f)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
            return None
        docs = DOCS.get(name)
        if docs is None:
            return self.send(404, b'{"error":"not found"}')
        gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
        return self.send(200, docs[gz], "application/json", "gzip" if gz else None)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    folder, port_file = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    size_mib = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    server = Server(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    build(folder, f"http://127.0.0.1:{port}/", count, size_mib)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
