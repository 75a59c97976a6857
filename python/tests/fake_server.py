"""A scripted in-process BridgeService for deterministic watch tests.

Each WatchVariables call takes the next script: a list of steps, each a
VariableUpdate to send, an ``Abort(code)`` to fail the stream with, or
``HANG`` to stay open until cancelled. The requests are recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from varbridge import _status
from varbridge.v1 import varbridge_pb2 as pb
from varbridge.v1 import varbridge_pb2_grpc as pb_grpc


@dataclass
class Abort:
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    message: str = "scripted failure"
    reason: str = ""  # ErrorInfo reason sent in grpc-status-details-bin, as the server does

    async def send(self, context: grpc.aio.ServicerContext) -> None:
        trailers: tuple[tuple[str, bytes], ...] = ()
        if self.reason:
            info = _status._ErrorInfo(reason=self.reason, domain=_status.DOMAIN)
            st = _status._Status(code=self.code.value[0], message=self.message)
            st.details.add(
                type_url="type.googleapis.com/google.rpc.ErrorInfo",
                value=info.SerializeToString(),
            )
            trailers = ((_status.DETAILS_KEY, st.SerializeToString()),)
        await context.abort(self.code, self.message, trailing_metadata=trailers)


HANG = object()

Step = Any


def upd(
    rev: int,
    vid: str,
    value: float = 0.0,
    *,
    last: bool = True,
    kind: int = pb.UPDATE_TYPE_VALUE_CHANGE,
    old: float | None = None,
    var_rev: int | None = None,
    incarnation: str = "",
) -> pb.VariableUpdate:
    var = pb.Variable(
        id=vid,
        name=vid.removeprefix("var_"),
        type=pb.VARIABLE_TYPE_FLOAT,
        value=pb.Value(float_value=value),
        revision=var_rev if var_rev is not None else rev,
    )
    u = pb.VariableUpdate(
        variable_id=vid,
        variable=var,
        update_type=kind,
        revision=rev,
        variable_name=var.name,
        last_in_revision=last,
        incarnation=incarnation,
    )
    if old is not None:
        u.old_value.CopyFrom(pb.Value(float_value=old))
    return u


def heartbeat(rev: int, incarnation: str = "") -> pb.VariableUpdate:
    return pb.VariableUpdate(
        update_type=pb.UPDATE_TYPE_HEARTBEAT, revision=rev, incarnation=incarnation
    )


@dataclass
class FakeBridge(pb_grpc.BridgeServiceServicer):
    scripts: list[list[Step]] = field(default_factory=list)
    requests: list[pb.WatchVariablesRequest] = field(default_factory=list)
    session_revision: int = 0
    session_incarnation: str = ""
    active: int = 0
    cancelled: int = 0
    # Serve WatchVariableBatches (script steps that are lists go as one batch);
    # off: it is UNIMPLEMENTED, as on an older server.
    batches: bool = False
    batch_requests: list[pb.WatchVariablesRequest] = field(default_factory=list)

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        return pb.GetSessionResponse(
            session=pb.Session(
                session_id=request.session_id,
                revision=self.session_revision,
                incarnation=self.session_incarnation,
            )
        )

    async def InitializeSession(
        self, request: pb.InitializeSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.InitializeSessionResponse:
        return pb.InitializeSessionResponse(
            session=pb.Session(session_id=request.session_id), created=True
        )

    async def WatchVariables(
        self, request: pb.WatchVariablesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.VariableUpdate]:
        self.requests.append(request)
        script = self.scripts.pop(0) if self.scripts else [HANG]
        self.active += 1
        try:
            for step in script:
                if step is HANG:
                    await asyncio.Event().wait()
                elif isinstance(step, Abort):
                    await step.send(context)
                else:
                    yield step
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1

    async def WatchVariableBatches(
        self, request: pb.WatchVariablesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.VariableUpdateBatch]:
        if not self.batches:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no batches here")
        self.batch_requests.append(request)
        script = self.scripts.pop(0) if self.scripts else [HANG]
        self.active += 1
        try:
            for step in script:
                if step is HANG:
                    await asyncio.Event().wait()
                elif isinstance(step, Abort):
                    await step.send(context)
                elif isinstance(step, list):
                    yield pb.VariableUpdateBatch(updates=step)
                else:
                    yield pb.VariableUpdateBatch(updates=[step])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


class FakeServer:
    def __init__(self, servicer: FakeBridge) -> None:
        self.servicer = servicer
        self.server = grpc.aio.server()
        pb_grpc.add_BridgeServiceServicer_to_server(servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeServer:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(None)
