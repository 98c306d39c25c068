#!/usr/bin/env python3
"""The hostile half of scripts/soak.sh: floods and a private probe against a gateway on 127.0.0.1.

    soak.py PORT HOST SECONDS quiet|flood [IDLE_CONNECTIONS] [SLOW_CONNECTIONS]

- quiet: only the private probe runs.
- flood: the public address 127.0.0.2 keeps IDLE_CONNECTIONS (default 10000) connections open that never
  send a byte, and SLOW_CONNECTIONS (default 200) that send a request head one byte every two seconds
  (slowloris); connections the server closes are re-opened every 5 s, for SECONDS, never more than the
  target at once. Meanwhile the private probe runs.

The private probe: one request at a time from 127.0.0.1 (a new connection each, as a fresh client would),
`GET /echo` with `Host: HOST`, for SECONDS. It prints one line of JSON: requests, non-200 answers, errors,
p50 and p99 latency in milliseconds, and the flood's connection counts. Only 127.0.0.1 and 127.0.0.2 are
contacted.
"""

import asyncio
import json
import resource
import sys
import time

PUBLIC = "127.0.0.2"
PRIVATE = "127.0.0.1"


async def probe(port, host, seconds, out):
    latencies, bad, errors = [], 0, 0
    end = time.monotonic() + seconds
    request = f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < end:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(PRIVATE, port, local_addr=(PRIVATE, 0)), 10
            )
            writer.write(request)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            parts = status_line.split()
            if len(parts) < 2 or parts[1] != b"200":
                bad += 1
            latencies.append((time.monotonic() - start) * 1000)
        except (OSError, asyncio.TimeoutError):
            errors += 1
        await asyncio.sleep(0.01)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None
    out.update(requests=len(latencies) + errors, non_200=bad, errors=errors, p50_ms=pick(0.5), p99_ms=pick(0.99))


async def hold_idle(port, stop, counts):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(PRIVATE, port, local_addr=(PUBLIC, 0)), 5
        )
    except (OSError, asyncio.TimeoutError):
        counts["refused_connect"] += 1
        return
    counts["opened"] += 1
    try:
        await asyncio.wait_for(reader.read(1), max(0.1, stop - time.monotonic()))
        counts["closed_by_server"] += 1
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()


async def slowloris(port, host, stop, counts):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(PRIVATE, port, local_addr=(PUBLIC, 0)), 5
        )
    except (OSError, asyncio.TimeoutError):
        counts["refused_connect"] += 1
        return
    counts["slow_opened"] += 1
    head = f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Pad: ".encode() + b"a" * 4000
    try:
        for byte in head:
            if time.monotonic() > stop:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(2)
        counts["slow_survived"] += 1
    except OSError:
        counts["slow_closed_by_server"] += 1
    finally:
        writer.close()


async def flood(port, host, seconds, idle, slow, counts):
    stop = time.monotonic() + seconds
    tasks = set()
    while time.monotonic() < stop:
        live_idle = sum(1 for t in tasks if t.get_name() == "idle" and not t.done())
        live_slow = sum(1 for t in tasks if t.get_name() == "slow" and not t.done())
        for _ in range(idle - live_idle):
            tasks.add(asyncio.create_task(hold_idle(port, stop, counts), name="idle"))
        for _ in range(slow - live_slow):
            tasks.add(asyncio.create_task(slowloris(port, host, stop, counts), name="slow"))
        tasks = {t for t in tasks if not t.done()}
        await asyncio.sleep(5)
    await asyncio.gather(*tasks, return_exceptions=True)


async def main():
    port, host, seconds, mode = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    idle = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
    slow = int(sys.argv[6]) if len(sys.argv) > 6 else 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    out = {"mode": mode}
    counts = {k: 0 for k in ["opened", "closed_by_server", "refused_connect", "slow_opened",
                             "slow_closed_by_server", "slow_survived"]}
    jobs = [probe(port, host, seconds, out)]
    if mode == "flood":
        jobs.append(flood(port, host, seconds, idle, slow, counts))
    await asyncio.gather(*jobs)
    if mode == "flood":
        out["flood"] = counts
    print(json.dumps(out))


asyncio.run(main())
