"""Benchmark helper: a Python varbridge watcher, driven by bench/cmd/vbbench.

lat:  watch one variable whose values are CLOCK_MONOTONIC send timestamps
      (ns, written by the Go harness on this host); print "ready" once the
      watch is live, then record time.monotonic_ns() - value on receipt until
      the value -1 arrives; print one JSON line of samples (ns).
tput: replay a session's history from --start-revision and time --count
      value changes, from opening the watch (connection already up) to the
      last; print one JSON line.

--raw uses the generated stub directly (no varbridge.Watch on top), to tell
the client library's cost from grpc.aio's; with --batched it reads
WatchVariableBatches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc
import varbridge
from varbridge.v1 import varbridge_pb2 as pb
from varbridge.v1 import varbridge_pb2_grpc as pb_grpc

VALUE_CHANGE = pb.UPDATE_TYPE_VALUE_CHANGE


async def lat_lib(args: argparse.Namespace) -> dict:
    mono, wall = time.monotonic_ns, time.time_ns
    send: list[int] = []
    commit: list[int] = []
    async with varbridge.connect(args.addr) as bridge:
        session = await bridge.session(args.session)
        async with session.watch_variables([args.var], include_initial=True) as watch:
            async for u in watch:
                now, noww = mono(), wall()
                if u.initial:
                    print("ready", flush=True)
                    continue
                v = u.value
                if v < 0:
                    break
                send.append(now - v)
                if u.timestamp is not None:
                    commit.append(noww - int(u.timestamp.timestamp() * 1e6) * 1000)
    return {"send": send, "commit": commit}


async def lat_raw(args: argparse.Namespace) -> dict:
    mono, wall = time.monotonic_ns, time.time_ns
    send: list[int] = []
    commit: list[int] = []
    async with grpc.aio.insecure_channel(args.addr) as ch:
        stub = pb_grpc.BridgeServiceStub(ch)
        call = stub.WatchVariables(
            pb.WatchVariablesRequest(
                session_id=args.session,
                variable_identifiers=[args.var],
                include_initial_values=True,
            )
        )
        async for m in call:
            now, noww = mono(), wall()
            if m.update_type == pb.UPDATE_TYPE_INITIAL_VALUE:
                print("ready", flush=True)
                continue
            if m.update_type != VALUE_CHANGE:
                continue
            v = m.variable.value.int_value
            if v < 0:
                break
            send.append(now - v)
            commit.append(noww - m.timestamp.ToNanoseconds())
        call.cancel()
    return {"send": send, "commit": commit}


async def tput_lib(args: argparse.Namespace) -> dict:
    n = args.count
    got = 0
    acc = 0
    async with varbridge.connect(args.addr) as bridge:
        session = await bridge.session(args.session)
        t0 = time.perf_counter_ns()
        c0 = time.process_time()
        async with session.watch_variables(
            [], include_initial=False, start_revision=args.start_revision
        ) as watch:
            async for u in watch:
                if u.update_type != "value_change":
                    continue
                acc += u.value
                got += 1
                if got == n:
                    break
    el = time.perf_counter_ns() - t0
    return {"count": got, "seconds": el / 1e9, "cpu_seconds": time.process_time() - c0}


async def tput_raw(args: argparse.Namespace) -> dict:
    n = args.count
    got = 0
    acc = 0
    msgs = 0
    req = pb.WatchVariablesRequest(session_id=args.session, start_revision=args.start_revision)
    async with grpc.aio.insecure_channel(args.addr) as ch:
        await ch.channel_ready()
        stub = pb_grpc.BridgeServiceStub(ch)
        t0 = time.perf_counter_ns()
        c0 = time.process_time()
        if args.batched:
            call = stub.WatchVariableBatches(req)
            async for b in call:
                msgs += 1
                for m in b.updates:
                    if m.update_type != VALUE_CHANGE:
                        continue
                    acc += m.variable.value.int_value
                    got += 1
                    if got == n:
                        break
                if got == n:
                    break
        else:
            call = stub.WatchVariables(req)
            async for m in call:
                msgs += 1
                if m.update_type != VALUE_CHANGE:
                    continue
                acc += m.variable.value.int_value
                got += 1
                if got == n:
                    break
        call.cancel()
    el = time.perf_counter_ns() - t0
    return {
        "count": got,
        "seconds": el / 1e9,
        "messages": msgs,
        "cpu_seconds": time.process_time() - c0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["lat", "tput"])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--session", required=True)
    ap.add_argument("--var", default="x")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--start-revision", type=int, default=1)
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--batched", action="store_true", help="--raw tput: WatchVariableBatches")
    ap.add_argument("--cprofile", default="", help="write a cProfile of the run to this file")
    args = ap.parse_args()
    fn = {
        ("lat", False): lat_lib,
        ("lat", True): lat_raw,
        ("tput", False): tput_lib,
        ("tput", True): tput_raw,
    }[(args.mode, args.raw)]
    if args.cprofile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        out = asyncio.run(fn(args))
        prof.disable()
        prof.dump_stats(args.cprofile)
    else:
        out = asyncio.run(fn(args))
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
