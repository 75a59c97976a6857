"""Variable and VariableUpdate: lazy views of the wire messages that behave as
the frozen dataclasses they replaced."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest
from google.protobuf import timestamp_pb2

import varbridge
from varbridge import _convert as cv
from varbridge.models import _wrap_update
from varbridge.v1 import varbridge_pb2 as pb

TS = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_456_789)
TS_DT = datetime(2023, 11, 14, 22, 13, 20, 123_456, tzinfo=timezone.utc)


@pytest.fixture
def no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv, "_np", None)


def wire(msg: pb.VariableUpdate) -> pb.VariableUpdate:
    """As a watch gets it: parsed from bytes, inside a batch."""
    batch = pb.VariableUpdateBatch(updates=[msg]).SerializeToString()
    return pb.VariableUpdateBatch.FromString(batch).updates[0]


def variable(type_: Any, value: pb.Value, **kw: object) -> pb.Variable:
    return pb.Variable(
        id="var_1",
        name="x",
        type=type_,
        value=value,
        version=4,
        revision=7,
        source="go",
        metadata={"k": "v"},
        updated_at=TS,
        created_at=TS,
        **kw,  # type: ignore[arg-type]
    )


def change(var: pb.Variable, old: pb.Value | None = None, **kw: object) -> pb.VariableUpdate:
    u = pb.VariableUpdate(
        variable_id=var.id,
        variable=var,
        update_type=pb.UPDATE_TYPE_VALUE_CHANGE,
        revision=var.revision,
        update_source="go",
        update_metadata={"why": "test"},
        timestamp=TS,
        variable_name=var.name,
        last_in_revision=True,
        **kw,  # type: ignore[arg-type]
    )
    if old is not None:
        u.old_value.CopyFrom(old)
    return wire(u)


EMB = pb.Value(embedding_value=pb.Embedding(values=[1.0, 2.5]))
EMB_OLD = pb.Value(embedding_value=pb.Embedding(values=[0.0, 0.5]))
TENSOR = pb.Value(
    tensor_value=pb.Tensor(shape=[2, 2], dtype="int32", data=np.arange(4, dtype="<i4").tobytes())
)

SCALARS = [
    (pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=-(2**63)), -(2**63), "integer"),
    (pb.VARIABLE_TYPE_FLOAT, pb.Value(float_value=0.25), 0.25, "float"),
    (pb.VARIABLE_TYPE_STRING, pb.Value(string_value="héllo"), "héllo", "string"),
    (pb.VARIABLE_TYPE_BOOLEAN, pb.Value(bool_value=True), True, "boolean"),
    (pb.VARIABLE_TYPE_CHOICE, pb.Value(string_value="a"), "a", "choice"),
    (pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=0), 0, "integer"),
    (pb.VARIABLE_TYPE_BOOLEAN, pb.Value(bool_value=False), False, "boolean"),
]


@pytest.mark.parametrize(("type_", "value", "want", "name"), SCALARS)
def test_scalar_values_on_access(type_: int, value: pb.Value, want: object, name: str) -> None:
    u = varbridge.VariableUpdate.from_pb(change(variable(type_, value), old=value))
    assert u.value == want
    assert type(u.value) is type(want)
    assert u.old_value == want
    assert type(u.old_value) is type(want)
    assert u.variable is not None
    assert u.variable.type == name
    assert u.variable.value == want


def test_every_field_of_an_update() -> None:
    var = variable(
        pb.VARIABLE_TYPE_FLOAT, pb.Value(float_value=0.9), constraints=pb.Constraints(max=2)
    )
    u = varbridge.VariableUpdate.from_pb(change(var, old=pb.Value(float_value=0.7)))
    assert u.variable_id == "var_1"
    assert u.variable_name == "x"
    assert (u.value, u.old_value) == (0.9, 0.7)
    assert u.update_type == "value_change"
    assert u.revision == 7
    assert u.source == "go"
    assert u.metadata == {"why": "test"}
    assert u.timestamp == TS_DT
    assert (u.initial, u.resync, u.deleted, u.last_in_revision) == (False, False, False, True)
    v = u.variable
    assert v is not None
    assert (v.id, v.name, v.type, v.value, v.version) == ("var_1", "x", "float", 0.9, 4)
    assert (v.source, v.revision, v.metadata, v.constraints) == ("go", 7, {"k": "v"}, {"max": 2.0})
    assert v.updated_at == TS_DT
    assert v.created_at == TS_DT


def test_unset_fields() -> None:
    u = varbridge.VariableUpdate.from_pb(
        wire(pb.VariableUpdate(update_type=pb.UPDATE_TYPE_RESYNC, revision=3))
    )
    assert u.resync
    assert u.update_type == "resync"
    assert (u.value, u.old_value, u.variable, u.timestamp) == (None, None, None, None)
    assert (u.variable_id, u.variable_name, u.source, u.metadata) == ("", "", "", {})
    v = varbridge.Variable.from_pb(pb.Variable(id="var_1", name="x"))
    assert (v.value, v.updated_at, v.created_at, v.constraints, v.metadata) == (
        None,
        None,
        None,
        {},
        {},
    )
    assert v.type == "unspecified"
    odd = varbridge.VariableUpdate.from_pb(pb.VariableUpdate(update_type=42))  # type: ignore[arg-type]
    assert odd.update_type == "unknown(42)"


def test_name_falls_back_to_the_variables() -> None:
    var = variable(pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=1))
    u = varbridge.VariableUpdate.from_pb(
        pb.VariableUpdate(
            variable_id="var_1", variable=var, update_type=pb.UPDATE_TYPE_VALUE_CHANGE
        )
    )
    assert u.variable_name == "x"


def test_embedding_and_tensor_with_numpy() -> None:
    u = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_EMBEDDING, EMB), EMB_OLD))
    assert isinstance(u.value, np.ndarray)
    assert u.value.dtype == np.float64
    assert u.value.tolist() == [1.0, 2.5]
    assert u.old_value.tolist() == [0.0, 0.5]
    t = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_TENSOR, TENSOR)))
    assert isinstance(t.value, np.ndarray)
    assert t.value.dtype == np.int32
    assert t.value.tolist() == [[0, 1], [2, 3]]
    assert t.old_value is None


@pytest.mark.usefixtures("no_numpy")
def test_embedding_and_tensor_without_numpy() -> None:
    u = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_EMBEDDING, EMB), EMB_OLD))
    assert u.value == [1.0, 2.5]
    assert u.old_value == [0.0, 0.5]
    t = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_TENSOR, TENSOR)))
    assert isinstance(t.value, varbridge.Tensor)
    assert t.value.tolist() == [[0, 1], [2, 3]]
    assert t.value.dtype == "int32"


def test_conversion_waits_for_access_and_happens_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_value, real_ts = cv.from_value, cv.timestamp_to_datetime

    def from_value(v: pb.Value | None) -> object:
        calls.append("value")
        return real_value(v)

    def timestamp_to_datetime(ts: object) -> datetime | None:
        calls.append("timestamp")
        return real_ts(ts)

    monkeypatch.setattr(cv, "from_value", from_value)
    monkeypatch.setattr(cv, "timestamp_to_datetime", timestamp_to_datetime)
    u = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_EMBEDDING, EMB), EMB_OLD))
    assert calls == []
    first = u.value
    assert calls == ["value"]
    assert u.value is first
    assert calls == ["value"]
    assert u.timestamp == TS_DT
    assert u.timestamp == TS_DT
    assert calls == ["value", "timestamp"]
    # The variable shares the value already converted: one array, as before.
    assert u.variable is not None
    assert u.variable.value is first
    assert u.metadata is u.metadata
    assert calls == ["value", "timestamp"]


def test_value_is_the_variables_value_either_way_round() -> None:
    u = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_EMBEDDING, EMB)))
    assert u.variable is not None
    assert u.value is u.variable.value
    u = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_EMBEDDING, EMB)))
    assert u.variable is not None
    v = u.variable.value
    assert u.value is v


def test_deleted() -> None:
    var = variable(pb.VARIABLE_TYPE_EMBEDDING, EMB)
    d = varbridge.VariableUpdate.from_pb(
        wire(
            pb.VariableUpdate(variable_id="var_1", variable=var, update_type=pb.UPDATE_TYPE_DELETED)
        )
    )
    assert d.deleted
    assert d.update_type == "deleted"
    assert d.value is None
    assert d.old_value.tolist() == [1.0, 2.5]
    assert d.variable is not None
    assert d.old_value is d.variable.value
    assert d.variable_name == "x"
    # With an old_value of its own, that one is reported.
    d = varbridge.VariableUpdate.from_pb(
        wire(
            pb.VariableUpdate(
                variable_id="var_1",
                variable=var,
                old_value=EMB_OLD,
                update_type=pb.UPDATE_TYPE_DELETED,
            )
        )
    )
    assert d.old_value.tolist() == [0.0, 0.5]
    assert d.variable is not None
    assert d.variable.value.tolist() == [1.0, 2.5]
    assert d.value is None


def test_initial_value() -> None:
    var = variable(pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=3))
    u = varbridge.VariableUpdate.from_pb(
        pb.VariableUpdate(
            variable_id="var_1",
            variable=var,
            update_type=pb.UPDATE_TYPE_INITIAL_VALUE,
            revision=7,
            variable_name="x",
        )
    )
    assert u.initial
    assert not u.resync
    assert u.update_type == "initial_value"
    assert (u.value, u.old_value) == (3, None)


def test_read_only_identity_equality_and_repr() -> None:
    m = change(variable(pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=3)))
    a, b = varbridge.VariableUpdate.from_pb(m), varbridge.VariableUpdate.from_pb(m)
    with pytest.raises(AttributeError):
        a.value = 4  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.whatever = 4  # type: ignore[attr-defined]
    assert a == a
    assert a != b  # as the eq=False dataclass: numpy values have no plain ==
    assert len({a, b}) == 2
    r = repr(a)
    assert r.startswith("VariableUpdate(variable_id='var_1', variable_name='x', value=3, ")
    assert "variable=Variable(id='var_1', name='x', type='integer', value=3, version=4" in r
    assert "last_in_revision=True)" in r


def test_keyword_construction_and_dataclass_functions() -> None:
    v = varbridge.Variable(id="var_1", name="x", type="float", value=0.5, version=1)
    assert (v.constraints, v.metadata, v.source, v.revision, v.updated_at) == ({}, {}, "", 0, None)
    u = varbridge.VariableUpdate(
        variable_id="var_1",
        variable_name="x",
        value=0.5,
        old_value=None,
        update_type="initial_value",
        revision=1,
        source="py",
        metadata={},
        timestamp=None,
        variable=v,
        initial=True,
    )
    assert (u.value, u.update_type, u.initial, u.resync, u.last_in_revision) == (
        0.5,
        "initial_value",
        True,
        False,
        False,
    )
    assert u.variable is v
    assert not u.deleted
    assert dataclasses.is_dataclass(u)
    assert [f.name for f in dataclasses.fields(v)] == [
        "id",
        "name",
        "type",
        "value",
        "version",
        "constraints",
        "metadata",
        "source",
        "revision",
        "updated_at",
        "created_at",
    ]
    w = dataclasses.replace(u, value=0.75)
    assert isinstance(w, varbridge.VariableUpdate)
    assert (w.value, w.variable_name, w.initial) == (0.75, "x", True)
    lazy = varbridge.VariableUpdate.from_pb(
        change(variable(pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=3)))
    )
    d = dataclasses.asdict(lazy)
    assert d["value"] == 3
    assert d["timestamp"] == TS_DT
    assert d["variable"]["metadata"] == {"k": "v"}
    assert dataclasses.replace(lazy, revision=8).revision == 8


def test_pickle_and_copy() -> None:
    u = varbridge.VariableUpdate.from_pb(change(variable(pb.VARIABLE_TYPE_EMBEDDING, EMB), EMB_OLD))
    for c in (pickle.loads(pickle.dumps(u)), copy.copy(u), copy.deepcopy(u)):
        assert isinstance(c, varbridge.VariableUpdate)
        assert c.value.tolist() == [1.0, 2.5]
        assert c.old_value.tolist() == [0.0, 0.5]
        assert c.timestamp == TS_DT
        assert c.variable is not None
        assert c.variable.metadata == {"k": "v"}
        assert (c.revision, c.update_type, c.last_in_revision) == (7, "value_change", True)


def test_wrap_update_takes_the_watchs_reads() -> None:
    m = change(variable(pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=3)))
    u = _wrap_update(m, m.update_type, m.revision)
    assert (u.update_type, u.revision, u.value) == ("value_change", 7, 3)


def test_match_positional_fields() -> None:
    u = varbridge.VariableUpdate.from_pb(
        change(variable(pb.VARIABLE_TYPE_INTEGER, pb.Value(int_value=3)))
    )
    match u:
        case varbridge.VariableUpdate(vid, name, value, old, kind):
            assert (vid, name, value, old, kind) == ("var_1", "x", 3, None, "value_change")
        case _:
            pytest.fail("no match")
    assert u.variable is not None
    match u.variable:
        case varbridge.Variable(vid, name, kind, value, version):
            assert (vid, name, kind, value, version) == ("var_1", "x", "integer", 3, 4)
        case _:
            pytest.fail("no match")
