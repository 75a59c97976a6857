"""The Python example in README.md, verbatim."""

import asyncio
import os

import varbridge


async def main() -> None:
    async with varbridge.connect(os.environ.get("VARBRIDGE_ADDR", "127.0.0.1:50051")) as bridge:
        session = await bridge.session("readme-py")  # create or join
        await session.register_variable("temperature", "float", 0.7, constraints={"min": 0.0, "max": 2.0})
        async with session.watch_variables(["temperature"], include_initial=True) as watch:
            await watch.start()  # registered: nothing written from now on is missed
            await session.set_variable("temperature", 0.9, metadata={"source": "py"})
            async for update in watch:
                print(update.variable_name, update.old_value, "->", update.value, "at", update.revision)
                if update.value == 0.9:
                    break
        try:
            await session.set_variable("temperature", 3.5)
        except varbridge.ConstraintViolation as e:
            print("rejected:", e)
        await session.cleanup()


asyncio.run(main())
