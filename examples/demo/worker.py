"""The Python half of `make demo` and `make cluster-demo`.

The Go controller tunes `temperature`; this worker watches it and answers
each change with a fan speed, tagged with the revision it answers and how
long the change took to reach this loop. When `control` says "stop" (with
how many changes the controller wrote), it reports what its watch saw as
`control` = "worker-done": each change once, in order, is what the demo
checks. Given several servers (--addr h1:p1,h2:p2) it carries on when one
dies: its watch resumes on another.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import varbridge


async def wait_for_variables(
    session: varbridge.SessionContext, names: list[str]
) -> None:
    deadline = time.monotonic() + 20
    while True:
        found = await session.get_variables(names)
        if not found.missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"[py] the controller never registered {found.missing}")
        await asyncio.sleep(0.05)


async def main(addr: str) -> int:
    async with varbridge.connect(addr) as bridge:
        session = await bridge.session("demo")
        await wait_for_variables(session, ["temperature", "fan_speed", "control"])
        answered = repeated = out_of_order = 0
        seen: set[int] = set()  # revisions of the temperature changes seen
        last = 0
        writes = -1  # how many the controller says it wrote, from "stop"
        async with session.watch_variables(
            ["temperature", "control"], include_initial=False
        ) as watch:
            # The watch is registered once the call is open: tell the controller.
            await watch.start()
            await session.set_variable(
                "control", "worker-ready", metadata={"source": "py-worker"}
            )
            async for update in watch:
                if update.variable_name == "control":
                    if update.value == "stop":
                        writes = int(update.metadata.get("temperature_writes", "-1"))
                        break
                    continue
                if update.revision in seen:
                    repeated += 1
                    continue
                if update.revision < last:
                    out_of_order += 1
                seen.add(update.revision)
                last = max(last, update.revision)
                committed = (
                    update.timestamp.timestamp() if update.timestamp else time.time()
                )
                reaction_us = max(0, int((time.time() - committed) * 1e6))
                fan = int(1000 + 1500 * update.value)
                print(
                    f"[py] temperature {update.old_value} -> {update.value} "
                    f"(revision {update.revision}, by {update.source}, reached Python in {reaction_us} µs)"
                    f" => fan_speed {fan}",
                    flush=True,
                )
                await session.set_variable(
                    "fan_speed",
                    fan,
                    metadata={
                        "source": "py-worker",
                        "temperature_revision": str(update.revision),
                        "reaction_us": str(reaction_us),
                    },
                )
                answered += 1
        print(
            f"[py] stopping: saw {len(seen)} of {writes} temperature changes "
            f"({repeated} repeated, {out_of_order} out of order), answered {answered}; "
            f"failovers {watch.failovers}, reconnects {watch.reconnects}",
            flush=True,
        )
        await session.set_variable(
            "control",
            "worker-done",
            metadata={
                "source": "py-worker",
                "temperature_seen": str(len(seen)),
                "repeated": str(repeated),
                "out_of_order": str(out_of_order),
                "fan_speed_writes": str(answered),
                "failovers": str(watch.failovers),
                "reconnects": str(watch.reconnects),
            },
        )
        ok = len(seen) == writes and repeated == 0 and out_of_order == 0
        return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--addr",
        default="127.0.0.1:50051",
        help="varbridge server, or several that share their sessions: host:port,host:port",
    )
    raise SystemExit(asyncio.run(main(parser.parse_args().addr)))
