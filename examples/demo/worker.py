"""The Python half of `make demo`: react to `temperature`, write `fan_speed`.

The Go controller tunes `temperature`; this worker watches it and answers
each change with a fan speed, tagged with the revision it answers and how
long the change took to reach this loop. It stops when `control` says "stop".
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


async def main(addr: str) -> None:
    async with varbridge.connect(addr) as bridge:
        session = await bridge.session("demo")
        await wait_for_variables(session, ["temperature", "fan_speed", "control"])
        answered = 0
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
                        break
                    continue
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
            f"[py] stopping after {answered} answers; {watch.reconnects} reconnects",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:50051")
    asyncio.run(main(parser.parse_args().addr))
