"""Value conversion, without a server: with numpy and, monkeypatched, without."""

from __future__ import annotations

import math
import struct
from datetime import timezone

import numpy as np
import pytest
from google.protobuf import timestamp_pb2

import varbridge
from varbridge import _convert as cv
from varbridge.v1 import varbridge_pb2 as pb

T = pb


@pytest.fixture
def no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv, "_np", None)


def roundtrip(type_: int, value: object, **kw: object) -> object:
    v = cv.to_value(type_, value, **kw)  # type: ignore[arg-type]
    wire = pb.Value.FromString(v.SerializeToString())
    return cv.from_value(wire)


@pytest.mark.parametrize(
    ("name", "enum"),
    [
        ("integer", T.VARIABLE_TYPE_INTEGER),
        ("int", T.VARIABLE_TYPE_INTEGER),
        ("float", T.VARIABLE_TYPE_FLOAT),
        ("string", T.VARIABLE_TYPE_STRING),
        ("str", T.VARIABLE_TYPE_STRING),
        ("boolean", T.VARIABLE_TYPE_BOOLEAN),
        ("bool", T.VARIABLE_TYPE_BOOLEAN),
        ("choice", T.VARIABLE_TYPE_CHOICE),
        ("module", T.VARIABLE_TYPE_MODULE),
        ("embedding", T.VARIABLE_TYPE_EMBEDDING),
        ("tensor", T.VARIABLE_TYPE_TENSOR),
        ("Float", T.VARIABLE_TYPE_FLOAT),
        ("VARIABLE_TYPE_TENSOR", T.VARIABLE_TYPE_TENSOR),
        (T.VARIABLE_TYPE_CHOICE, T.VARIABLE_TYPE_CHOICE),
    ],
)
def test_type_names(name: str | int, enum: int) -> None:
    assert cv.type_enum(name) == enum


@pytest.mark.parametrize("bad", ["number", "", 0, 99, True, None])
def test_unknown_type_names(bad: object) -> None:
    # A malformed argument (ValueError), not a value breaking a rule.
    with pytest.raises(varbridge.InvalidArgument) as ei:
        cv.type_enum(bad)  # type: ignore[arg-type]
    assert isinstance(ei.value, ValueError)
    assert not isinstance(ei.value, varbridge.ConstraintViolation)


def test_canonical_names() -> None:
    assert cv.type_name(T.VARIABLE_TYPE_INTEGER) == "integer"
    assert cv.type_name(T.VARIABLE_TYPE_BOOLEAN) == "boolean"


@pytest.mark.parametrize("x", [0, 1, -1, 2**63 - 1, -(2**63), 123456789012345678])
def test_int64_exact(x: int) -> None:
    out = roundtrip(T.VARIABLE_TYPE_INTEGER, x)
    assert out == x
    assert type(out) is int


@pytest.mark.parametrize("x", [2**63, -(2**63) - 1, 10**30])
def test_int64_out_of_range(x: int) -> None:
    with pytest.raises(varbridge.InvalidValue, match="out of range"):
        cv.to_value(T.VARIABLE_TYPE_INTEGER, x)


@pytest.mark.parametrize("x", [True, False, np.bool_(True), 1.0, "1", None])
def test_integer_refuses_bool_float_str(x: object) -> None:
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_INTEGER, x)


def test_integer_accepts_numpy_ints() -> None:
    assert roundtrip(T.VARIABLE_TYPE_INTEGER, np.int64(-(2**63))) == -(2**63)
    assert roundtrip(T.VARIABLE_TYPE_INTEGER, np.uint8(200)) == 200


@pytest.mark.parametrize(
    "x",
    [0.0, -0.0, 0.1, 1e308, 5e-324, -1.5, math.inf, -math.inf, 2.0**-1074, 1 / 3],
)
def test_float_exact(x: float) -> None:
    out = roundtrip(T.VARIABLE_TYPE_FLOAT, x)
    assert isinstance(out, float)
    assert struct.pack("<d", out) == struct.pack("<d", x)


def test_float_nan() -> None:
    out = roundtrip(T.VARIABLE_TYPE_FLOAT, math.nan)
    assert isinstance(out, float)
    assert math.isnan(out)


def test_float_accepts_int_and_numpy() -> None:
    assert roundtrip(T.VARIABLE_TYPE_FLOAT, 3) == 3.0
    assert roundtrip(T.VARIABLE_TYPE_FLOAT, np.float32(0.5)) == 0.5
    assert roundtrip(T.VARIABLE_TYPE_FLOAT, np.int16(-2)) == -2.0


@pytest.mark.parametrize("x", [True, "0.5", None, [1.0], 10**400])
def test_float_refuses(x: object) -> None:
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_FLOAT, x)


@pytest.mark.parametrize(
    "s", ["", "hello", "héllo wörld", "日本語", "emoji 🚀🧪", "nul\x00byte", "a" * 10000]
)
@pytest.mark.parametrize(
    "t", [T.VARIABLE_TYPE_STRING, T.VARIABLE_TYPE_CHOICE, T.VARIABLE_TYPE_MODULE]
)
def test_strings(s: str, t: int) -> None:
    assert roundtrip(t, s) == s


def test_string_refuses_non_str() -> None:
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_STRING, 1)
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_CHOICE, b"bytes")


def test_bool() -> None:
    assert roundtrip(T.VARIABLE_TYPE_BOOLEAN, True) is True
    assert roundtrip(T.VARIABLE_TYPE_BOOLEAN, False) is False
    assert roundtrip(T.VARIABLE_TYPE_BOOLEAN, np.bool_(True)) is True
    for bad in (1, 0, "true", None):
        with pytest.raises(varbridge.InvalidValue):
            cv.to_value(T.VARIABLE_TYPE_BOOLEAN, bad)


def test_embedding_numpy() -> None:
    vec = [0.1, -2.5, 1e-300, math.inf]
    out = roundtrip(T.VARIABLE_TYPE_EMBEDDING, vec)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    assert out.tolist() == vec
    arr = np.arange(5, dtype=np.float32) / 3
    out = roundtrip(T.VARIABLE_TYPE_EMBEDDING, arr)
    assert np.array_equal(out, arr.astype(np.float64))
    assert roundtrip(T.VARIABLE_TYPE_EMBEDDING, (1, 2)).tolist() == [1.0, 2.0]


def test_embedding_without_numpy(no_numpy: None) -> None:
    out = roundtrip(T.VARIABLE_TYPE_EMBEDDING, [1, 2.5, -3])
    assert out == [1.0, 2.5, -3.0]
    assert all(type(x) is float for x in out)  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [[True, 1.0], ["a"], "abc", 1.0, np.zeros((2, 2))])
def test_embedding_refuses(bad: object) -> None:
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_EMBEDDING, bad)


TENSOR_DTYPES = [
    "float32",
    "float64",
    "float16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
]
SHAPES = [(), (0,), (1,), (5,), (2, 3), (3, 1, 2), (2, 2, 2, 2), (4, 0)]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    n = math.prod(shape)
    rng = np.random.default_rng(n + len(dtype))
    if dtype == "bool":
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if dtype.startswith("float"):
        a = rng.standard_normal(n).astype(dtype)
        if n >= 3:
            a[0], a[1], a[2] = np.nan, np.inf, -np.inf
        return a.reshape(shape)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    if n >= 2:
        a[0], a[1] = info.min, info.max
    return a.reshape(shape)


@pytest.mark.parametrize("dtype", TENSOR_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tensor_numpy_roundtrip(dtype: str, shape: tuple[int, ...]) -> None:
    arr = sample(dtype, shape)
    out = roundtrip(T.VARIABLE_TYPE_TENSOR, arr)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == shape
    assert out.tobytes() == arr.tobytes()
    assert out.flags.writeable


def test_tensor_wire_is_little_endian() -> None:
    arr = np.array([1, 256], dtype=">u2")  # big-endian in memory
    v = cv.to_value(T.VARIABLE_TYPE_TENSOR, arr)
    assert v.tensor_value.dtype == "uint16"
    assert v.tensor_value.data == b"\x01\x00\x00\x01"
    assert list(v.tensor_value.shape) == [2]


def test_tensor_noncontiguous() -> None:
    arr = np.arange(12, dtype=np.int32).reshape(3, 4).T
    out = roundtrip(T.VARIABLE_TYPE_TENSOR, arr)
    assert np.array_equal(out, arr)


def test_tensor_from_lists_uses_dtype_constraint() -> None:
    v = cv.to_value(T.VARIABLE_TYPE_TENSOR, [[1, 2], [3, 4]], dtype="float32")
    assert v.tensor_value.dtype == "float32"
    assert list(v.tensor_value.shape) == [2, 2]
    v = cv.to_value(T.VARIABLE_TYPE_TENSOR, [[1, 2], [3, 4]])
    assert v.tensor_value.dtype == "int64"


def test_tensor_refuses_unsupported_dtypes() -> None:
    for bad in (np.array(["a"]), np.array([1 + 2j]), np.array([1], dtype=object)):
        with pytest.raises(varbridge.InvalidValue):
            cv.to_value(T.VARIABLE_TYPE_TENSOR, bad)
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_TENSOR, [[1, 2], [3]])


@pytest.mark.parametrize("dtype", TENSOR_DTYPES)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (2, 0, 2)], ids=str)
def test_tensor_without_numpy(no_numpy: None, dtype: str, shape: tuple[int, ...]) -> None:
    # Build the expected bytes with numpy, convert without it.
    arr = sample(dtype, shape)
    t = varbridge.Tensor(shape, dtype, arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    out = roundtrip(T.VARIABLE_TYPE_TENSOR, t)
    assert isinstance(out, varbridge.Tensor)
    assert out == t
    expect = arr.tolist()
    got = out.tolist()
    if dtype.startswith("float"):
        np.testing.assert_array_equal(np.array(got, dtype=dtype).reshape(shape), arr)
    else:
        assert got == expect


def test_tensor_from_lists_without_numpy(no_numpy: None) -> None:
    out = roundtrip(T.VARIABLE_TYPE_TENSOR, [[1, 2, 3], [4, 5, 6]])
    assert isinstance(out, varbridge.Tensor)
    assert out.dtype == "int64"
    assert out.shape == (2, 3)
    assert out.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert roundtrip(T.VARIABLE_TYPE_TENSOR, [True, False]).dtype == "bool"  # type: ignore[attr-defined]
    f = roundtrip(T.VARIABLE_TYPE_TENSOR, [[0.5], [1]])
    assert f.dtype == "float64"  # type: ignore[attr-defined]
    assert f.tolist() == [[0.5], [1.0]]  # type: ignore[attr-defined]
    u8 = cv.to_value(T.VARIABLE_TYPE_TENSOR, [1, 255], dtype="uint8")
    assert u8.tensor_value.data == b"\x01\xff"
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_TENSOR, [1, 256], dtype="uint8")
    with pytest.raises(varbridge.InvalidValue):
        cv.to_value(T.VARIABLE_TYPE_TENSOR, [1.5], dtype="int32")


def test_tensor_dataclass_validates() -> None:
    with pytest.raises(varbridge.InvalidValue, match="needs 8"):
        varbridge.Tensor((2,), "float32", b"\x00" * 7)
    with pytest.raises(varbridge.InvalidValue, match="dtype"):
        varbridge.Tensor((1,), "complex64", b"\x00" * 8)
    t = varbridge.Tensor([2, 2], "int8", bytes([1, 2, 3, 0xFF]))  # type: ignore[arg-type]
    assert t.shape == (2, 2)
    assert t.tolist() == [[1, 2], [3, -1]]
    assert np.array_equal(t.numpy(), np.array([[1, 2], [3, -1]], dtype=np.int8))
    assert varbridge.Tensor((), "float64", struct.pack("<d", 2.5)).tolist() == 2.5


def test_tensor_accepted_as_input_with_numpy() -> None:
    t = varbridge.Tensor((2,), "int16", struct.pack("<2h", -1, 7))
    out = roundtrip(T.VARIABLE_TYPE_TENSOR, t)
    assert isinstance(out, np.ndarray)
    assert out.tolist() == [-1, 7]
    assert out.dtype == np.int16


def test_unset_value_is_none() -> None:
    assert cv.from_value(pb.Value()) is None
    assert cv.from_value(None) is None


def test_constraints_roundtrip() -> None:
    c = {
        "min": 0,
        "max": 2.5,
        "min_length": 1,
        "max_length": 9,
        "pattern": "^a",
        "choices": ["x", "y"],
        "allowed_modules": ["m"],
        "dimensions": 4,
        "shape": [2, -1],
        "dtype": "float32",
    }
    msg = cv.constraints_to_pb(c)
    assert msg is not None
    back = cv.constraints_from_pb(pb.Constraints.FromString(msg.SerializeToString()))
    assert back == {**c, "min": 0.0}
    assert cv.constraints_from_pb(pb.Constraints()) == {}
    assert cv.constraints_to_pb(None) is None
    # min = 0 is set (proto3 optional), not dropped
    assert cv.constraints_from_pb(cv.constraints_to_pb({"min": 0})) == {"min": 0.0}
    with pytest.raises(varbridge.InvalidArgument, match="unknown constraint") as ei:
        cv.constraints_to_pb({"maximum": 3})
    assert not isinstance(ei.value, varbridge.ConstraintViolation)


def test_infer_type() -> None:
    assert cv.infer_type(True) == T.VARIABLE_TYPE_BOOLEAN
    assert cv.infer_type(3) == T.VARIABLE_TYPE_INTEGER
    assert cv.infer_type(3.0) == T.VARIABLE_TYPE_FLOAT
    assert cv.infer_type("x") == T.VARIABLE_TYPE_STRING
    assert cv.infer_type([1.0, 2.0]) == T.VARIABLE_TYPE_EMBEDDING
    assert cv.infer_type(np.zeros(3)) == T.VARIABLE_TYPE_EMBEDDING
    assert cv.infer_type(np.zeros((2, 2))) == T.VARIABLE_TYPE_TENSOR
    assert cv.infer_type(np.zeros(3, dtype=np.int8)) == T.VARIABLE_TYPE_TENSOR


def test_timestamps() -> None:
    ts = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_456_789)
    dt = cv.timestamp_to_datetime(ts)
    assert dt is not None
    assert dt.tzinfo is timezone.utc
    assert dt.microsecond == 123_456
    assert cv.timestamp_to_datetime(timestamp_pb2.Timestamp()) is None


def test_models_from_pb() -> None:
    var = pb.Variable(
        id="var_1",
        name="t",
        type=T.VARIABLE_TYPE_EMBEDDING,
        value=pb.Value(embedding_value=pb.Embedding(values=[1.0, 2.0])),
        version=3,
        revision=9,
        metadata={"k": "v"},
        source="go",
    )
    v = varbridge.Variable.from_pb(var)
    assert (v.id, v.name, v.type, v.version, v.revision, v.source) == (
        "var_1",
        "t",
        "embedding",
        3,
        9,
        "go",
    )
    assert v.value.tolist() == [1.0, 2.0]
    assert v.metadata == {"k": "v"}
    u = varbridge.VariableUpdate.from_pb(
        pb.VariableUpdate(
            variable_id="var_1",
            variable=var,
            old_value=pb.Value(embedding_value=pb.Embedding(values=[0.0, 0.0])),
            update_type=T.UPDATE_TYPE_VALUE_CHANGE,
            revision=9,
            update_source="go",
            update_metadata={"why": "test"},
            variable_name="t",
            last_in_revision=True,
        )
    )
    assert u.update_type == "value_change"
    assert u.old_value.tolist() == [0.0, 0.0]
    assert u.value.tolist() == [1.0, 2.0]
    assert not u.initial
    assert not u.resync
    assert u.metadata == {"why": "test"}
    d = varbridge.VariableUpdate.from_pb(
        pb.VariableUpdate(variable_id="var_1", variable=var, update_type=T.UPDATE_TYPE_DELETED)
    )
    assert d.deleted
    assert d.value is None
    assert d.old_value.tolist() == [1.0, 2.0]
    assert d.variable_name == "t"
