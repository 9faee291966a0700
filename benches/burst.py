#!/usr/bin/env python3
"""Open N connections to 127.0.0.1:PORT, then send `GET PATH` on all of them at once; print
JSON {"n", "ok", "statuses", "distinct_bodies", "bytes", "seconds"} (bodies compared by sha256).

With HOLD (seconds), connections are kept alive after their answer: the JSON line is printed
(and flushed) once every answer is in, then the connections stay open HOLD seconds, so a caller
can measure the memory of N open connections.

usage: burst.py PORT PATH N [HOLD]
"""

import asyncio
import hashlib
import json
import sys
import time


async def one(port, path, start, results, hold):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        results.append(("connect:" + type(e).__name__, None))
        return
    await start.wait()
    close = "" if hold else "Connection: close\r\n"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{close}\r\n".encode())
    try:
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        length = None
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        body = await (reader.readexactly(length) if length is not None else reader.read())
        results.append((status, hashlib.sha256(body).hexdigest()))
        if hold:
            await hold.wait()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        results.append(("error:" + type(e).__name__, None))
    finally:
        writer.close()


async def main():
    port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    hold_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 0
    start = asyncio.Event()
    hold = asyncio.Event() if hold_seconds else None
    results = []
    tasks = [asyncio.create_task(one(port, path, start, results, hold)) for _ in range(n)]
    await asyncio.sleep(1.0)  # let every connection open
    t0 = time.monotonic()
    start.set()
    if hold:
        while len(results) < n:
            await asyncio.sleep(0.05)
    else:
        await asyncio.gather(*tasks)
    statuses = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    bodies = {h for s, h in results if s == "200"}
    print(json.dumps({
        "n": n,
        "ok": statuses.get("200", 0),
        "statuses": statuses,
        "distinct_bodies": len(bodies),
        "seconds": round(time.monotonic() - t0, 3),
    }), flush=True)
    if hold:
        await asyncio.sleep(hold_seconds)
        hold.set()
        await asyncio.gather(*tasks)


asyncio.run(main())
