"""The asyncio client: :func:`connect`, :class:`Bridge` and :class:`SessionContext`."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import grpc
import grpc.aio
from google.protobuf import duration_pb2

from varbridge import _convert as cv
from varbridge import _writes
from varbridge._mux import MuxCall, MuxStream
from varbridge._options import WatchArgs, WatchOptions, with_option_keywords
from varbridge._targets import channel_target
from varbridge._typecache import TypeCache, TypeInfo
from varbridge.errors import (
    ConstraintViolation,
    SessionNotFound,
    VariableNotFound,
    from_rpc_error,
)
from varbridge.models import (
    Constraints,
    GetVariablesResult,
    SessionInfo,
    SetVariablesResult,
    Variable,
    VariableTypeAlias,
    VariableTypeName,
)
from varbridge.v1 import varbridge_pb2 as pb
from varbridge.v1 import varbridge_pb2_grpc as pb_grpc
from varbridge.watch import BatchWatch, Watch, _DebouncedWatch

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "BALANCED_SERVICE_CONFIG",
    "DEFAULT_OPTIONS",
    "SERVICE_CONFIG",
    "Bridge",
    "SessionContext",
    "SessionOpening",
    "connect",
]

R = TypeVar("R")

_SERVICE = "varbridge.v1.BridgeService"

# Calls that read (or only extend a TTL): repeating one changes nothing, so a
# retry after UNAVAILABLE is safe.
_IDEMPOTENT_READS = (
    "GetSession",
    "GetVariable",
    "GetVariables",
    "ListVariables",
    "ListSessions",
    "Heartbeat",
)
_OTHER_UNARY = (
    "InitializeSession",
    "CleanupSession",
    "RegisterVariable",
    "SetVariable",
    "SetVariables",
    "DeleteVariable",
)

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            # Wait for the connection within the call's deadline (a server
            # restarting, or not up yet when connect() is called) rather than
            # failing at once with "connection refused"; and retry UNAVAILABLE
            # by gRPC's own retry machinery, the same policy as the Go client.
            "name": [{"service": _SERVICE, "method": m} for m in _IDEMPOTENT_READS],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        },
        {
            # Writes wait for the connection too, but are never repeated: a
            # write whose answer was lost may have been applied.
            "name": [{"service": _SERVICE, "method": m} for m in _OTHER_UNARY],
            "waitForReady": True,
        },
        # The watch streams are absent on purpose: they carry no deadline, so
        # waiting for a connection would never end; the watch's own
        # reconnect schedule paces and bounds them instead.
    ]
}
"""The gRPC service config every channel gets (wait-for-ready on unary calls,
a retryPolicy for idempotent reads); override with the ``grpc.service_config``
channel option. A bridge on several servers gets :data:`BALANCED_SERVICE_CONFIG`."""

BALANCED_SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    **SERVICE_CONFIG,
}
"""The service config of a bridge on several servers: :data:`SERVICE_CONFIG`
with gRPC's ``round_robin`` policy. Each call, and each stream when it opens,
goes to the next server that is up; a server whose connection drops leaves
the rotation at once (gRPC redials it in the background). A stream stays on
its server for its life: a watch whose server dies resumes on another from
its revision and incarnation, a read cut off is retried there, and a write
in flight fails with :class:`~varbridge.errors.Unavailable` (it may or may
not have been applied, so it is never sent again)."""

# Deliberate keepalive settings, matched by the server, which permits client
# pings every 10 s: ping an idle connection every 30 s, give up on a peer
# that does not answer in 10 s, also while no call is open, and without the
# default limit on pings without data (long idle watches).
DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # grpcio 1.85 waits for an unanswered ping by this setting, not by the
    # keepalive timeout above (whose default would leave a blackholed peer
    # undetected for a minute): the same 10 s.
    ("grpc.http2.ping_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Reconnect soon after a dropped connection; the watch's own backoff
    # paces the retries.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
)


def connect(
    target: str | Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    options: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    timeout: float | None = 30.0,
    source: str | None = None,
) -> Bridge:
    """Open a channel to a varbridge server.

    Use as ``async with varbridge.connect("127.0.0.1:50051") as bridge:`` (or
    ``bridge = await varbridge.connect(...)`` and ``await bridge.close()``).

    ``target``: the server's ``"host:port"`` (or any gRPC target), or several
    servers that share their sessions (varbridge servers over one etcd
    cluster): a list ``["h1:p1", "h2:p2"]``, the same as one string
    ``"h1:p1,h2:p2"``, or ``"dns:///name:port"`` with a record per server.
    Calls and watches then spread over the servers that are up
    (:data:`BALANCED_SERVICE_CONFIG`), and a watch whose server dies resumes
    on another at once, from its revision and incarnation, nothing lost or
    repeated, without counting towards its ``max_retries``. Host names in a
    list are resolved when the bridge is made (gRPC's address lists take IP
    addresses); a malformed list raises
    :class:`~varbridge.errors.InvalidArgument`. A list's first address is the
    channel's authority: with TLS, the servers' certificates must carry its
    host name (or set the ``grpc.ssl_target_name_override`` option).

    ``credentials``: TLS channel credentials (plaintext when None).
    ``token``: a bearer token sent on every call (sessions created with auth
    on return their own, which is used automatically).
    ``options``: gRPC channel options, overriding :data:`DEFAULT_OPTIONS`.
    ``timeout``: per-call deadline in seconds for unary calls; watches never
    carry a deadline. Unary calls wait for the connection within it
    (wait-for-ready), so a first call made while the server is still starting
    or restarting succeeds once it is up; idempotent reads also retry
    UNAVAILABLE (see :data:`SERVICE_CONFIG`).
    ``source``: the default ``source`` recorded on writes.
    """
    return Bridge(
        target,
        credentials=credentials,
        token=token,
        options=options,
        timeout=timeout,
        source=source,
    )


def _merge_options(
    options: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
    *,
    balanced: bool = False,
    authority: str | None = None,
) -> list[tuple[str, Any]]:
    merged = dict(DEFAULT_OPTIONS)
    if balanced:
        merged["grpc.service_config"] = json.dumps(BALANCED_SERVICE_CONFIG)
    if authority is not None:
        merged["grpc.default_authority"] = authority
    if options:
        items = options.items() if isinstance(options, Mapping) else options
        merged.update(dict(items))
    return list(merged.items())


class Bridge:
    """A connection to a varbridge server, or to several (see :func:`connect`):
    one gRPC channel shared by all calls."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        options: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        timeout: float | None = 30.0,
        source: str | None = None,
    ) -> None:
        dial = channel_target(target)
        self.target = dial.target
        """The gRPC target the channel dials (an ``ipv4:``/``ipv6:`` list for
        a list of servers)."""
        self.balanced = dial.balanced
        """Whether the bridge names several servers (see :func:`connect`)."""
        self.token = token
        self.timeout = timeout
        self.source = source
        self._credentials = credentials
        self._options = _merge_options(options, balanced=dial.balanced, authority=dial.authority)
        # Made on first use, inside the event loop that uses it (a grpc.aio
        # channel belongs to the loop it was created in).
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._writes = _writes.WriteStreams()
        self._closed = False
        # The shared watch streams (varbridge._mux), one per token, and
        # whether the server lacks them.
        self._muxes: dict[str | None, MuxStream] = {}
        self._no_mux = False

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self._closed:
                raise RuntimeError("the bridge is closed")
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        return self._channel

    def _failover_ready(self) -> bool:
        """Whether a watch that just lost its stream can resume at once on
        another server: the bridge names several and one of them is up (the
        one that failed has left gRPC's rotation)."""
        return (
            self.balanced
            and self._channel is not None
            and self._channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY
        )

    @property
    def stub(self) -> Any:
        if self._stub is None:
            self._stub = pb_grpc.BridgeServiceStub(self.channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def __aenter__(self) -> Bridge:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, Bridge]:
        async def _self() -> Bridge:
            return self

        return _self().__await__()

    async def close(self, grace: float | None = None) -> None:
        """Close every watch and the channel."""
        if self._closed:
            return
        self._closed = True
        for w in list(self._watches):
            await w.aclose()
        for m in list(self._muxes.values()):
            await m.aclose()
        await self._writes.close()
        if self._channel is not None:
            await self._channel.close(grace)

    def _watch_on_mux(self, request: pb.WatchVariablesRequest, token: str | None) -> MuxCall:
        """Create a watch on the shared stream for ``token``, opening it
        if there is none."""
        tok = token or self.token
        m = self._muxes.get(tok)
        if m is None or m.error is not None:

            def ended(stream: MuxStream) -> None:
                if self._muxes.get(tok) is stream:
                    del self._muxes[tok]
                if (
                    stream.error is not None
                    and stream.error.code() == grpc.StatusCode.UNIMPLEMENTED
                ):
                    self._no_mux = True

            m = MuxStream(self.stub, self._metadata(tok), ended)
            self._muxes[tok] = m
        return m.open(request)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the channel is connected (raises TimeoutError)."""
        import asyncio

        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    def _metadata(self, token: str | None) -> tuple[tuple[str, str], ...] | None:
        tok = token or self.token
        if not tok:
            return None
        return (("authorization", f"Bearer {tok}"),)

    async def _unary(
        self,
        method: Callable[..., Awaitable[R]],
        request: Any,
        *,
        token: str | None = None,
        write: bool = False,
        session_rpc: bool = False,
    ) -> R:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata(token))
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, write=write, session_rpc=session_rpc) from e

    async def _stream_write(
        self, req: pb.WriteRequest, token: str | None
    ) -> pb.WriteResponse | None:
        """Send a write on the bridge's write stream for token (see
        :mod:`varbridge._writes`) and return its ack; None when it must go
        unary. A failed write raises as the unary call would."""
        size = req.ByteSize()
        if size > _writes.MAX_STREAMED_WRITE_BYTES:
            return None
        tok = token or self.token
        s = self._writes.stream(self.channel, self.stub, tok, self._metadata(tok))
        if s is None:
            return None
        try:
            ack = await s.write(req, size, self.timeout)
        except _writes.NotStreamed:
            return None
        if ack.HasField("error"):
            raise _writes.ack_error(ack.error)
        return ack

    # -- sessions ---------------------------------------------------------

    def session(
        self,
        session_id: str | None = None,
        *,
        ttl: float | _dt.timedelta | None = None,
        metadata: Mapping[str, str] | None = None,
        token: str | None = None,
        cleanup: bool = False,
    ) -> SessionOpening:
        """Create the session, or join it if it exists (InitializeSession).

        ``session_id`` None: the server generates one. ``ttl`` in seconds or a
        timedelta (server default 1 h). ``token``: the session's token, when
        joining a session another client created with auth on.

        Await the result for the :class:`SessionContext`, or use it as
        ``async with bridge.session("id") as session:``: leaving the block
        closes the watches opened on that context, and with ``cleanup=True``
        also removes the session (CleanupSession). Cleanup is opt-in because
        a session is usually shared: joining one must not end it for others.
        """
        return SessionOpening(
            lambda: self._open_session(session_id, ttl=ttl, metadata=metadata, token=token),
            cleanup=cleanup,
        )

    async def _open_session(
        self,
        session_id: str | None,
        *,
        ttl: float | _dt.timedelta | None = None,
        metadata: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> SessionContext:
        req = pb.InitializeSessionRequest(session_id=session_id or "", metadata=metadata or {})
        if ttl is not None:
            d = duration_pb2.Duration()
            d.FromTimedelta(ttl if isinstance(ttl, _dt.timedelta) else _dt.timedelta(seconds=ttl))
            req.ttl.CopyFrom(d)
        resp = await self._unary(self.stub.InitializeSession, req, token=token, session_rpc=True)
        info = SessionInfo.from_pb(resp.session)
        return SessionContext(
            self,
            info.session_id,
            token=resp.session_token or token,
            info=info,
            created=resp.created,
        )

    async def get_session(self, session_id: str, *, token: str | None = None) -> SessionInfo:
        """Describe a session without extending its TTL (GetSession)."""
        resp = await self._unary(
            self.stub.GetSession,
            pb.GetSessionRequest(session_id=session_id),
            token=token,
            session_rpc=True,
        )
        return SessionInfo.from_pb(resp.session)

    async def cleanup_session(self, session_id: str, *, token: str | None = None) -> int:
        """Remove a session and end its watches; returns the variables removed."""
        resp = await self._unary(
            self.stub.CleanupSession,
            pb.CleanupSessionRequest(session_id=session_id),
            token=token,
            session_rpc=True,
        )
        return int(resp.variables_removed)


class SessionOpening:
    """What :meth:`Bridge.session` returns: awaitable (the
    :class:`SessionContext`) and an async context manager (the same
    context, closed on exit; removed too if opened with ``cleanup=True``)."""

    def __init__(self, opener: Callable[[], Awaitable[SessionContext]], *, cleanup: bool) -> None:
        self._open = opener
        self._cleanup = cleanup
        self._ctx: SessionContext | None = None

    async def _get(self) -> SessionContext:
        ctx = await self._open()
        ctx.cleanup_on_exit = self._cleanup
        return ctx

    def __await__(self) -> Generator[Any, None, SessionContext]:
        return self._get().__await__()

    async def __aenter__(self) -> SessionContext:
        self._ctx = await self._get()
        return self._ctx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ctx is not None:
            await self._ctx.__aexit__(exc_type, exc, tb)


class SessionContext:
    """Variables of one session. Get one with ``await bridge.session("id")``.

    Usable as ``async with``: leaving the block closes the watches opened
    on this context and, when ``cleanup_on_exit`` is set (``bridge.session(id,
    cleanup=True)``), removes the session.
    """

    def __init__(
        self,
        bridge: Bridge,
        session_id: str,
        *,
        token: str | None = None,
        info: SessionInfo | None = None,
        created: bool = False,
        cleanup: bool = False,
    ) -> None:
        self.bridge = bridge
        self.session_id = session_id
        self.token = token
        self.info = info
        """The session as last reported (InitializeSession, Heartbeat, get_info)."""
        self.created = created
        """True when this client's InitializeSession created the session."""
        self.cleanup_on_exit = cleanup
        """Remove the session when an ``async with`` block on this context ends."""
        self._types = TypeCache()
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"SessionContext({self.session_id!r})"

    @property
    def incarnation(self) -> str:
        """The session's incarnation as last reported ("" if the server sent none)."""
        return self.info.incarnation if self.info is not None else ""

    async def __aenter__(self) -> SessionContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for w in list(self._watches):
            await w.aclose()
        if self.cleanup_on_exit:
            # Already gone (expired, or cleaned up by someone else) is the
            # state asked for.
            with contextlib.suppress(SessionNotFound):
                await self.cleanup()

    # -- helpers ----------------------------------------------------------

    async def _call(
        self,
        method: Callable[..., Awaitable[R]],
        request: Any,
        *,
        write: bool = False,
        session_rpc: bool = False,
    ) -> R:
        return await self.bridge._unary(
            method, request, token=self.token, write=write, session_rpc=session_rpc
        )

    async def _set_one(self, req: pb.SetVariableRequest) -> pb.SetVariableResponse:
        ack = await self.bridge._stream_write(pb.WriteRequest(set_variable=req), self.token)
        if ack is None:
            return await self._call(self.bridge.stub.SetVariable, req, write=True)
        return ack.set_variable

    async def _set_many(self, req: pb.SetVariablesRequest) -> pb.SetVariablesResponse:
        ack = await self.bridge._stream_write(pb.WriteRequest(set_variables=req), self.token)
        if ack is None:
            return await self._call(self.bridge.stub.SetVariables, req, write=True)
        return ack.set_variables

    def _source(self, source: str | None) -> str:
        return source if source is not None else (self.bridge.source or "")

    async def _type_of(self, identifier: str, *, refresh: bool = False) -> TypeInfo:
        if not refresh and identifier in self._types:
            return self._types[identifier]
        resp = await self._call(
            self.bridge.stub.GetVariable,
            pb.GetVariableRequest(session_id=self.session_id, variable_identifier=identifier),
        )
        self._types.remember(resp.variable, identifier)
        return self._types[identifier]

    # -- session ----------------------------------------------------------

    async def get_info(self) -> SessionInfo:
        """The session's current description (GetSession; does not extend the TTL)."""
        self.info = await self.bridge.get_session(self.session_id, token=self.token)
        return self.info

    async def heartbeat(self) -> SessionInfo:
        """Extend the session's TTL."""
        resp = await self._call(
            self.bridge.stub.Heartbeat,
            pb.HeartbeatRequest(session_id=self.session_id),
            session_rpc=True,
        )
        self.info = SessionInfo.from_pb(resp.session)
        return self.info

    async def cleanup(self) -> int:
        """Remove the session, its variables and its watches; returns the variables removed."""
        n = await self.bridge.cleanup_session(self.session_id, token=self.token)
        self._types.clear()
        return n

    # -- variables --------------------------------------------------------

    async def register_variable(
        self,
        name: str,
        type: VariableTypeName | VariableTypeAlias | int,
        initial_value: Any = None,
        *,
        constraints: Constraints | None = None,
        metadata: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> Variable:
        """Create a typed variable; its name must be new in the session.

        ``type`` is a :data:`~varbridge.models.VariableTypeName` (or an alias
        such as "int", or a VariableType enum value); ``constraints`` a
        :class:`~varbridge.models.Constraints` dict. An unknown type name or
        constraint key raises :class:`InvalidArgument` (a ``ValueError``)
        before anything is sent.
        """
        t = cv.type_enum(type)
        cons = cv.constraints_to_pb(constraints)
        req = pb.RegisterVariableRequest(
            session_id=self.session_id,
            name=name,
            type=t,  # type: ignore[arg-type]
            metadata=metadata or {},
            source=self._source(source),
        )
        if cons is not None:
            req.constraints.CopyFrom(cons)
        if initial_value is not None:
            dtype = cons.dtype if cons is not None and cons.HasField("dtype") else None
            req.initial_value.CopyFrom(cv.to_value(t, initial_value, dtype=dtype, name=name))
        resp = await self._call(self.bridge.stub.RegisterVariable, req, write=True)
        self._types.remember(resp.variable)
        return Variable.from_pb(resp.variable)

    async def get_variable(self, identifier: str) -> Variable:
        """Read one variable by id or name."""
        resp = await self._call(
            self.bridge.stub.GetVariable,
            pb.GetVariableRequest(session_id=self.session_id, variable_identifier=identifier),
        )
        self._types.remember(resp.variable, identifier)
        return Variable.from_pb(resp.variable)

    async def get_variables(self, identifiers: Iterable[str]) -> GetVariablesResult:
        """Read many variables at one revision; unknown identifiers are listed in ``missing``."""
        ids = list(identifiers)
        resp = await self._call(
            self.bridge.stub.GetVariables,
            pb.GetVariablesRequest(session_id=self.session_id, variable_identifiers=ids),
        )
        found: dict[str, Variable] = {}
        for ident, v in resp.variables.items():
            self._types.remember(v, ident)
            found[ident] = Variable.from_pb(v)
        return GetVariablesResult(found=found, missing=list(resp.missing), revision=resp.revision)

    async def list_variables(self, pattern: str | None = None) -> list[Variable]:
        """The session's variables sorted by name, optionally by glob on names."""
        resp = await self._call(
            self.bridge.stub.ListVariables,
            pb.ListVariablesRequest(session_id=self.session_id, pattern=pattern or ""),
        )
        out = []
        for v in resp.variables:
            self._types.remember(v)
            out.append(Variable.from_pb(v))
        return out

    async def set_variable(
        self,
        identifier: str,
        value: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        expected_version: int | None = None,
        source: str | None = None,
    ) -> Variable:
        """Write one variable; with ``expected_version``, only at that version
        (else :class:`VersionConflict`). Writing the current value is a no-op.

        Returns the variable after the write.
        """
        cached = identifier in self._types
        t, dtype = await self._type_of(identifier)

        def build(t: int, dtype: str | None) -> pb.SetVariableRequest:
            req = pb.SetVariableRequest(
                session_id=self.session_id,
                variable_identifier=identifier,
                value=cv.to_value(t, value, dtype=dtype, name=identifier),
                metadata=metadata or {},
                source=self._source(source),
            )
            if expected_version is not None:
                req.expected_version = expected_version
            return req

        try:
            resp = await self._set_one(build(t, dtype))
        except (ConstraintViolation, VariableNotFound):
            if not cached:
                raise
            # The cached type may be stale (deleted and registered again).
            fresh = await self._type_of(identifier, refresh=True)
            if fresh == (t, dtype):
                raise
            resp = await self._set_one(build(*fresh))
        self._types.remember(resp.variable, identifier)
        return Variable.from_pb(resp.variable)

    async def set_variables(
        self,
        updates: Mapping[str, Any],
        *,
        metadata: Mapping[str, str] | None = None,
        expected_versions: Mapping[str, int] | None = None,
        source: str | None = None,
    ) -> SetVariablesResult:
        """Write many variables atomically: all or nothing, at one revision."""
        idents = list(updates)
        unknown = [i for i in idents if i not in self._types]
        if unknown:
            await self._fetch_types(unknown)

        def build() -> pb.SetVariablesRequest:
            req = pb.SetVariablesRequest(
                session_id=self.session_id,
                metadata=metadata or {},
                expected_versions=expected_versions or {},
                source=self._source(source),
            )
            for ident, val in updates.items():
                # An identifier the server does not know: guess from the value
                # and let the server report it missing.
                t, dtype = self._types.get(ident) or (cv.infer_type(val), None)
                req.updates[ident].CopyFrom(cv.to_value(t, val, dtype=dtype, name=ident))
            return req

        before = {i: self._types.get(i) for i in idents}
        try:
            resp = await self._set_many(build())
        except (ConstraintViolation, VariableNotFound):
            if len(unknown) == len(idents):
                raise  # every type was just fetched: not stale
            await self._fetch_types(idents)
            if all(self._types.get(i) == before[i] for i in idents):
                raise
            resp = await self._set_many(build())
        variables = {}
        for ident, v in resp.variables.items():
            self._types.remember(v, ident)
            variables[ident] = Variable.from_pb(v)
        return SetVariablesResult(
            variables=variables, revision=resp.revision, changed=list(resp.changed)
        )

    async def _fetch_types(self, idents: list[str]) -> None:
        resp = await self._call(
            self.bridge.stub.GetVariables,
            pb.GetVariablesRequest(session_id=self.session_id, variable_identifiers=idents),
        )
        for ident, v in resp.variables.items():
            self._types.remember(v, ident)
        self._types.forget(*resp.missing)

    async def delete_variable(
        self,
        identifier: str,
        *,
        metadata: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> Variable:
        """Remove a variable (watchers get a "deleted" update); returns it as it was."""
        resp = await self._call(
            self.bridge.stub.DeleteVariable,
            pb.DeleteVariableRequest(
                session_id=self.session_id,
                variable_identifier=identifier,
                metadata=metadata or {},
                source=self._source(source),
            ),
            write=True,
        )
        self._types.forget(identifier, resp.variable.id, resp.variable.name)
        return Variable.from_pb(resp.variable)

    # -- watching ---------------------------------------------------------

    @overload
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        batch_window: None = None,
        **kwargs: Unpack[WatchArgs],
    ) -> Watch: ...

    @overload
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        batch_window: float,
        **kwargs: Unpack[WatchArgs],
    ) -> BatchWatch: ...

    @overload
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        batch_window: float | None = None,
        options: WatchOptions | None = None,
        **kwargs: Unpack[WatchArgs],
    ) -> Watch | BatchWatch: ...

    @with_option_keywords
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        options: WatchOptions | None = None,
        **kwargs: Any,
    ) -> Watch | BatchWatch:
        """Watch variables (all of the session's when ``identifiers`` is empty).

        Returns an async iterator of :class:`VariableUpdate` that is also an
        async context manager. See :class:`varbridge.watch.Watch`.

        The keyword arguments are the fields of :class:`WatchOptions` (with
        its defaults); ``options=`` passes them as one object, which keywords
        given too override. With ``batch_window`` the watch yields lists (a
        :class:`~varbridge.watch.BatchWatch`).
        """
        opts = WatchOptions.of(options, kwargs)
        cls = _DebouncedWatch if opts.debounce is not None else Watch
        w = cls(self, list(identifiers or ()), opts, self._types)
        self.bridge._watches.add(w)
        self._watches.add(w)
        if opts.batch_window is not None:
            return BatchWatch(w, opts.batch_window)
        return w

    def _failover_ready(self) -> bool:
        """See :class:`varbridge.watch.WatchSource`."""
        return self.bridge._failover_ready()

    def _open_watch_stream(
        self, request: pb.WatchVariablesRequest, *, batched: bool, shared: bool = False
    ) -> Any:
        """Open the watch stream (see :class:`varbridge.watch.WatchSource`)."""
        if shared and not self.bridge._no_mux:
            return self.bridge._watch_on_mux(request, self.token)
        stub = self.bridge.stub
        rpc = stub.WatchVariableBatches if batched else stub.WatchVariables
        # No timeout: a deadline would become grpc-timeout and kill the stream.
        call: grpc.aio.UnaryStreamCall[pb.WatchVariablesRequest, Any] = rpc(
            request, metadata=self.bridge._metadata(self.token), timeout=None
        )
        return call
