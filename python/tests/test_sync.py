"""The blocking facade, varbridge.sync (plain functions, no event loop in the test)."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

import varbridge
import varbridge.sync

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def wait_watch_count(session: varbridge.sync.SyncSession, n: int, timeout: float = 5) -> int:
    end = time.monotonic() + timeout
    while True:
        got = session.get_info().watch_count
        if got == n or time.monotonic() > end:
            return got
        time.sleep(0.02)


def test_sync_roundtrip(addr: str) -> None:
    with varbridge.sync.connect(addr) as bridge:
        s = bridge.session(f"sync-{uuid.uuid4().hex[:8]}")
        assert s.created
        s.register_variable("temperature", "float", 0.7, constraints={"min": 0.0, "max": 2.0})
        v = s.set_variable("temperature", 0.9, metadata={"source": "py"})
        assert v.value == 0.9
        assert v.source == "py"
        assert s.get_variable("temperature").version == 2
        s.register_variable("vec", "embedding", [1.0, 2.0])
        assert isinstance(s.get_variable("vec").value, np.ndarray)
        res = s.set_variables({"temperature": 1.0, "vec": [3.0, 4.0]})
        assert sorted(res.changed) == ["temperature", "vec"]
        found, missing = s.get_variables(["temperature", "nope"])
        assert list(found) == ["temperature"]
        assert missing == ["nope"]
        assert [x.name for x in s.list_variables()] == ["temperature", "vec"]
        with pytest.raises(varbridge.ConstraintViolation):
            s.set_variable("temperature", 5.0)
        with pytest.raises(varbridge.VersionConflict):
            s.set_variable("temperature", 1.5, expected_version=1)
        with pytest.raises(varbridge.VariableNotFound):
            s.get_variable("nope")
        assert s.delete_variable("vec").name == "vec"
        assert s.heartbeat().variable_count == 1
        assert s.cleanup() == 1
        with pytest.raises(varbridge.SessionNotFound):
            s.get_info()


def test_sync_watch_iterator(addr: str) -> None:
    with varbridge.sync.connect(addr) as bridge:
        s = bridge.session()
        s.register_variable("n", "integer", 0)

        def writer() -> None:
            for i in range(1, 6):
                s.set_variable("n", i)

        t = threading.Thread(target=writer)
        got = []
        with s.watch_variables(["n"], include_initial=True) as w:
            for u in w:
                got.append((u.initial, u.value))
                if len(got) == 1:
                    t.start()  # after the initial value: the rest are changes
                if len(got) == 6:
                    break
        t.join()
        assert got == [(True, 0), (False, 1), (False, 2), (False, 3), (False, 4), (False, 5)]
        assert wait_watch_count(s, 0) == 0

        # a plain for loop that breaks, without `with`, also ends the RPC
        for _ in s.watch_variables(["n"], include_initial=True):
            break
        assert wait_watch_count(s, 0) == 0

        # next() with a timeout raises TimeoutError; the watch goes on
        w2 = s.watch_variables(["n"], include_initial=False).start()
        with pytest.raises(TimeoutError):
            w2.next(timeout=0.3)
        assert not w2.watch.closed
        s.set_variable("n", 42)
        assert w2.next(timeout=10).value == 42
        w2.close()
        assert w2.watch.closed
        with pytest.raises(StopIteration):
            next(w2)
        assert wait_watch_count(s, 0) == 0
        s.cleanup()


def test_sync_close_ends_watches(addr: str) -> None:
    bridge = varbridge.sync.connect(addr)
    s = bridge.session()
    s.register_variable("n", "integer", 0)
    w = s.watch_variables(["n"], include_initial=True)
    assert next(w).initial
    observer = varbridge.sync.connect(addr)
    try:
        obs = observer.session(s.session_id)
        assert wait_watch_count(obs, 1) == 1
        bridge.close()
        assert wait_watch_count(obs, 0) == 0
        obs.cleanup()
    finally:
        observer.close()
    assert not bridge._lt.thread.is_alive()
