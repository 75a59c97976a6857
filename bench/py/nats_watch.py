"""Benchmark helper: a nats-py JetStream KV watcher, the NATS side of the
grpc_set_to_py_watcher workload (see vb_watch.py lat: the same protocol).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import nats


async def lat(args: argparse.Namespace) -> dict:
    mono, wall = time.monotonic_ns, time.time_ns
    send: list[int] = []
    commit: list[int] = []
    nc = await nats.connect(args.url)
    try:
        js = nc.jetstream()
        kv = await js.key_value(args.bucket)
        w = await kv.watch(args.key)
        # The current value, then None: the watch is live.
        async for e in w:
            if e is None:
                break
        print("ready", flush=True)
        async for e in w:
            now, noww = mono(), wall()
            if e is None:
                continue
            v = int(e.value)
            if v < 0:
                break
            send.append(now - v)
            if e.created is not None:
                commit.append(noww - int(e.created.timestamp() * 1e6) * 1000)
        await w.stop()
    finally:
        await nc.close()
    return {"send": send, "commit": commit}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--key", default="x")
    args = ap.parse_args()
    out = asyncio.run(lat(args))
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
