"""The Python side of systest's crash test (crash_test.go).

Run by the Go test with the repository's virtualenv python, as one of:

    crash_client.py write ADDR SESSION WRITER VARS STOPFILE SEED
    crash_client.py watch ADDR SESSION START_REVISION STOPFILE

``write`` writes the variables VARS (comma separated, all of this writer's
own) while the server is SIGKILLed and restarted under it: single sets,
atomic set_variables batches of 2-4 variables, and compare-and-set writes
(expected_version; one in four deliberately stale), each value
"WRITER:SEQ". One JSON line per call: its outcome ("ok": the returned
revision and versions; "rejected": a version conflict; "unknown": the call
failed while the server was away, so it may or may not be applied). It
stops when STOPFILE exists.

``watch`` watches the whole session from START_REVISION (through the test's
cut proxy) and prints one JSON line per update, until STOPFILE exists; then
a summary line with the watch's counters.

Both print {"ready": true} once they are connected and about to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from typing import Any

import varbridge

# Errors after which a write is certainly not applied and that the run does
# not expect: they end the writer (the Go test reports them).
FATAL = (
    varbridge.errors.InvalidArgument,
    varbridge.errors.NotFound,
    varbridge.errors.AlreadyExists,
    varbridge.errors.PermissionDenied,
    varbridge.errors.Unauthenticated,
)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def write(
    addr: str, session_id: str, writer: str, names: list[str], stop: str, seed: int
) -> None:
    rng = random.Random(seed)
    async with varbridge.connect(addr, timeout=15.0) as bridge:
        s = await bridge.session(session_id)
        known: dict[str, int] = {}
        for v in (await s.get_variables(names)).found.values():
            known[v.name] = v.version
        dirty: set[str] = set()
        emit({"ready": True})
        seq = 0
        while not os.path.exists(stop):
            seq += 1
            value = f"{writer}:{seq}"
            roll = rng.randrange(100)
            rec: dict[str, Any] = {"writer": writer, "seq": seq, "value": value}
            try:
                if roll < 45:
                    name = rng.choice(names)
                    rec.update(op="set", vars=[name])
                    v = await s.set_variable(name, value)
                    rec.update(outcome="ok", rev=v.revision, versions={name: v.version})
                    known[name] = v.version
                elif roll < 75:
                    members = rng.sample(names, rng.randint(2, 4))
                    rec.update(op="batch", vars=members)
                    res = await s.set_variables({n: value for n in members})
                    rec.update(
                        outcome="ok",
                        rev=res.revision,
                        versions={n: v.version for n, v in res.variables.items()},
                    )
                    known.update({n: v.version for n, v in res.variables.items()})
                else:
                    name = rng.choice(names)
                    rec.update(op="cas", vars=[name])
                    if name in dirty:
                        # An earlier write of it has an unknown outcome.
                        known[name] = (await s.get_variable(name)).version
                        dirty.discard(name)
                    stale = rng.randrange(4) == 0 and known[name] > 1
                    expected = known[name] - 1 if stale else known[name]
                    rec.update(
                        op="stalecas" if stale else "cas",
                        vars=[name],
                        expected=expected,
                    )
                    v = await s.set_variable(name, value, expected_version=expected)
                    rec.update(outcome="ok", rev=v.revision, versions={name: v.version})
                    known[name] = v.version
            except varbridge.errors.VersionConflict as e:
                rec.update(outcome="rejected", err=str(e))
            except FATAL as e:
                rec.update(outcome="fatal", err=f"{type(e).__name__}: {e}")
                emit(rec)
                raise SystemExit(1) from e
            except varbridge.errors.VarbridgeError as e:
                rec.update(outcome="unknown", err=type(e).__name__)
                dirty.update(rec["vars"])
            emit(rec)


async def watch(addr: str, session_id: str, start: int, stop: str) -> None:
    async with varbridge.connect(addr, timeout=15.0) as bridge:
        s = await bridge.session(session_id)
        w = s.watch_variables(
            start_revision=start,
            max_retries=1_000_000,
            backoff_base=0.02,
            backoff_cap=0.2,
        )
        await w.start()
        emit({"ready": True})

        async def consume() -> None:
            async for u in w:
                emit(
                    {
                        "rev": u.revision,
                        "var": u.variable_name,
                        "val": u.value,
                        "type": u.update_type,
                        "ver": u.variable.version if u.variable is not None else 0,
                    }
                )

        task = asyncio.create_task(consume())
        while not os.path.exists(stop) and not task.done():
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # the watch ended: raise its error
        w.close()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        emit(
            {
                "summary": True,
                "reconnects": w.reconnects,
                "duplicates_skipped": w.duplicates_skipped,
                "mid_group_resumes": w.mid_group_resumes,
                "incarnation_changes": w.incarnation_changes,
            }
        )


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "write":
        addr, session_id, writer, names, stop, seed = args
        asyncio.run(write(addr, session_id, writer, names.split(","), stop, int(seed)))
    elif mode == "watch":
        addr, session_id, start, stop = args
        asyncio.run(watch(addr, session_id, int(start), stop))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
