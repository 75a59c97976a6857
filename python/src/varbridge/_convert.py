"""Conversion between Python values and the wire's ``Value``/``Constraints``.

Values travel as native protobuf fields. Per declared type:

=========  =======================  ==========================================
type       wire                     Python
=========  =======================  ==========================================
integer    ``int_value`` (int64)    ``int`` (``bool`` is refused)
float      ``float_value`` (double) ``float`` (``int`` accepted on input)
string     ``string_value``         ``str``
boolean    ``bool_value``           ``bool``
choice     ``string_value``         ``str``
module     ``string_value``         ``str``
embedding  ``embedding_value``      numpy ``float64`` array, else ``list[float]``
tensor     ``tensor_value``         numpy array (dtype, shape), else ``Tensor``
=========  =======================  ==========================================
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc

from varbridge.errors import InvalidArgument, InvalidValue
from varbridge.v1 import varbridge_pb2 as pb

_np: Any
try:  # numpy is optional
    import numpy

    _np = numpy
except ImportError:  # pragma: no cover - exercised by monkeypatching in tests
    _np = None
# Tests set _np to None to exercise the pure-Python paths.

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# dtype name -> (struct format character, item size)
DTYPES: dict[str, tuple[str, int]] = {
    "bool": ("?", 1),
    "int8": ("b", 1),
    "int16": ("h", 2),
    "int32": ("i", 4),
    "int64": ("q", 8),
    "uint8": ("B", 1),
    "uint16": ("H", 2),
    "uint32": ("I", 4),
    "uint64": ("Q", 8),
    "float16": ("e", 2),
    "float32": ("f", 4),
    "float64": ("d", 8),
}

TYPE_NAMES: dict[str, int] = {
    "integer": pb.VARIABLE_TYPE_INTEGER,
    "int": pb.VARIABLE_TYPE_INTEGER,
    "int64": pb.VARIABLE_TYPE_INTEGER,
    "float": pb.VARIABLE_TYPE_FLOAT,
    "double": pb.VARIABLE_TYPE_FLOAT,
    "float64": pb.VARIABLE_TYPE_FLOAT,
    "string": pb.VARIABLE_TYPE_STRING,
    "str": pb.VARIABLE_TYPE_STRING,
    "boolean": pb.VARIABLE_TYPE_BOOLEAN,
    "bool": pb.VARIABLE_TYPE_BOOLEAN,
    "choice": pb.VARIABLE_TYPE_CHOICE,
    "module": pb.VARIABLE_TYPE_MODULE,
    "embedding": pb.VARIABLE_TYPE_EMBEDDING,
    "tensor": pb.VARIABLE_TYPE_TENSOR,
}

# enum -> canonical name
CANONICAL: dict[int, str] = {
    pb.VARIABLE_TYPE_UNSPECIFIED: "unspecified",
    pb.VARIABLE_TYPE_INTEGER: "integer",
    pb.VARIABLE_TYPE_FLOAT: "float",
    pb.VARIABLE_TYPE_STRING: "string",
    pb.VARIABLE_TYPE_BOOLEAN: "boolean",
    pb.VARIABLE_TYPE_CHOICE: "choice",
    pb.VARIABLE_TYPE_MODULE: "module",
    pb.VARIABLE_TYPE_EMBEDDING: "embedding",
    pb.VARIABLE_TYPE_TENSOR: "tensor",
}

_CONSTRAINT_KEYS = frozenset(
    {
        "min",
        "max",
        "min_length",
        "max_length",
        "pattern",
        "choices",
        "allowed_modules",
        "dimensions",
        "shape",
        "dtype",
    }
)


def have_numpy() -> bool:
    """Whether embedding and tensor values come back as numpy arrays."""
    return _np is not None


@dataclass(frozen=True)
class Tensor:
    """An n-dimensional array as it travels: shape, dtype and little-endian bytes.

    Returned for tensor variables when numpy is not installed; accepted on
    input either way. ``tolist()`` gives nested lists (a scalar for shape ``()``).
    """

    shape: tuple[int, ...]
    dtype: str
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InvalidValue(f"unknown tensor dtype {self.dtype!r}; one of {sorted(DTYPES)}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise InvalidValue(f"tensor shape {self.shape} has a negative dimension")
        want = math.prod(self.shape) * DTYPES[self.dtype][1]
        if len(self.data) != want:
            raise InvalidValue(
                f"tensor data is {len(self.data)} bytes; shape {self.shape} of "
                f"{self.dtype} needs {want}"
            )

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def flat(self) -> list[Any]:
        """The elements in row-major order."""
        fmt, _ = DTYPES[self.dtype]
        return list(struct.unpack(f"<{self.size}{fmt}", self.data))

    def tolist(self) -> Any:
        """Nested lists of Python numbers (bool for dtype bool)."""
        return _nest(self.flat(), self.shape)

    def numpy(self) -> Any:
        """The array as a numpy ndarray (needs numpy)."""
        if _np is None:
            raise RuntimeError("numpy is not installed")
        return _tensor_to_numpy(self.shape, self.dtype, self.data)

    @classmethod
    def from_list(cls, values: Any, dtype: str | None = None) -> Tensor:
        """Build a Tensor from (nested) lists of numbers, without numpy.

        ``dtype`` defaults to bool if every element is a bool, int64 if every
        element is an int, else float64.
        """
        shape, flat = _flatten(values)
        if dtype is None:
            if flat and all(isinstance(x, bool) for x in flat):
                dtype = "bool"
            elif all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
                dtype = "int64"
            else:
                dtype = "float64"
        if dtype not in DTYPES:
            raise InvalidValue(f"unknown tensor dtype {dtype!r}; one of {sorted(DTYPES)}")
        fmt, _ = DTYPES[dtype]
        try:
            if dtype == "bool":
                items: list[Any] = [bool(x) for x in flat]
            elif fmt in "efd":
                items = [float(x) for x in flat]
            else:
                items = [_as_int(x) for x in flat]
            data = struct.pack(f"<{len(items)}{fmt}", *items)
        except (struct.error, TypeError, OverflowError) as e:
            raise InvalidValue(f"cannot pack {dtype} tensor: {e}") from e
        return cls(shape, dtype, data)


def _as_int(x: Any) -> int:
    if isinstance(x, float):
        if not x.is_integer():
            raise TypeError(f"{x!r} is not an integer")
        return int(x)
    return int(x)


def _nest(flat: list[Any], shape: Sequence[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _flatten(values: Any) -> tuple[tuple[int, ...], list[Any]]:
    """Shape and row-major elements of nested lists (must be rectangular)."""
    if not isinstance(values, (list, tuple)):
        _check_number(values)
        return (), [values]
    if len(values) == 0:
        return (0,), []
    parts = [_flatten(v) for v in values]
    inner = parts[0][0]
    if any(p[0] != inner for p in parts):
        raise InvalidValue("ragged nested lists cannot form a tensor")
    flat: list[Any] = []
    for p in parts:
        flat.extend(p[1])
    return (len(values), *inner), flat


def _check_number(x: Any) -> None:
    if not isinstance(x, (int, float, bool)) and not (
        _np is not None and isinstance(x, (_np.number, _np.bool_))
    ):
        raise InvalidValue(f"tensor element {x!r} is not a number")


def type_enum(type_: str | int) -> int:
    """The VariableType enum for a type name ("float", "int", ...) or enum value.

    An unknown name is a malformed argument, not a value breaking a rule: it
    raises :class:`InvalidArgument` (a ``ValueError``), never a
    ConstraintViolation, before anything is sent.
    """
    if isinstance(type_, int) and not isinstance(type_, bool):
        if type_ in CANONICAL and type_ != pb.VARIABLE_TYPE_UNSPECIFIED:
            return type_
        raise _bad_argument(f"unknown variable type {type_!r}")
    if isinstance(type_, str):
        key = type_.strip().lower()
        if key.startswith("variable_type_"):
            key = key[len("variable_type_") :]
        if key in TYPE_NAMES:
            return TYPE_NAMES[key]
    raise _bad_argument(
        f"unknown variable type {type_!r}; one of integer, float, string, boolean, "
        "choice, module, embedding, tensor"
    )


def _bad_argument(msg: str) -> InvalidArgument:
    return InvalidArgument(msg, grpc.StatusCode.INVALID_ARGUMENT)


def type_name(type_: int) -> str:
    return CANONICAL.get(type_, f"unknown({type_})")


def infer_type(value: Any) -> int:
    """Guess a type from a Python value (used when the variable's type is unknown)."""
    if isinstance(value, bool) or (_np is not None and isinstance(value, _np.bool_)):
        return pb.VARIABLE_TYPE_BOOLEAN
    if isinstance(value, int) or (_np is not None and isinstance(value, _np.integer)):
        return pb.VARIABLE_TYPE_INTEGER
    if isinstance(value, float) or (_np is not None and isinstance(value, _np.floating)):
        return pb.VARIABLE_TYPE_FLOAT
    if isinstance(value, str):
        return pb.VARIABLE_TYPE_STRING
    if isinstance(value, Tensor):
        return pb.VARIABLE_TYPE_TENSOR
    if _np is not None and isinstance(value, _np.ndarray):
        if value.ndim == 1 and value.dtype.kind in "f":
            return pb.VARIABLE_TYPE_EMBEDDING
        return pb.VARIABLE_TYPE_TENSOR
    if isinstance(value, (list, tuple)):
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            return pb.VARIABLE_TYPE_EMBEDDING
        return pb.VARIABLE_TYPE_TENSOR
    raise InvalidValue(f"cannot infer a variable type for {type(value).__name__}")


# ---------------------------------------------------------------------------
# Python -> wire


def to_value(type_: int, value: Any, *, dtype: str | None = None, name: str = "") -> pb.Value:
    """Convert a Python value to a wire ``Value`` for a variable of ``type_``.

    ``dtype``: the variable's dtype constraint, used to pack lists for tensors.
    Raises :class:`InvalidValue` (a TypeError) when the value does not fit.
    """
    what = f"variable {name!r}" if name else "value"
    t = type_
    if t == pb.VARIABLE_TYPE_INTEGER:
        return pb.Value(int_value=_to_int64(value, what))
    if t == pb.VARIABLE_TYPE_FLOAT:
        return pb.Value(float_value=_to_float(value, what))
    if t in (pb.VARIABLE_TYPE_STRING, pb.VARIABLE_TYPE_CHOICE, pb.VARIABLE_TYPE_MODULE):
        if not isinstance(value, str):
            raise InvalidValue(
                f"{what} is a {type_name(t)}: expected str, got {type(value).__name__}"
            )
        return pb.Value(string_value=value)
    if t == pb.VARIABLE_TYPE_BOOLEAN:
        if isinstance(value, bool):
            return pb.Value(bool_value=value)
        if _np is not None and isinstance(value, _np.bool_):
            return pb.Value(bool_value=bool(value))
        raise InvalidValue(f"{what} is a boolean: expected bool, got {type(value).__name__}")
    if t == pb.VARIABLE_TYPE_EMBEDDING:
        return pb.Value(embedding_value=pb.Embedding(values=_to_float_list(value, what)))
    if t == pb.VARIABLE_TYPE_TENSOR:
        tensor = to_tensor(value, dtype=dtype)
        return pb.Value(
            tensor_value=pb.Tensor(shape=list(tensor.shape), dtype=tensor.dtype, data=tensor.data)
        )
    raise InvalidValue(f"unknown variable type {t!r}")


def _to_int64(value: Any, what: str) -> int:
    if isinstance(value, bool) or (_np is not None and isinstance(value, _np.bool_)):
        raise InvalidValue(f"{what} is an integer: bool {value!r} is not accepted as int")
    if isinstance(value, int):
        v = value
    elif _np is not None and isinstance(value, _np.integer):
        v = int(value)
    else:
        raise InvalidValue(f"{what} is an integer: expected int, got {type(value).__name__}")
    if not INT64_MIN <= v <= INT64_MAX:
        raise InvalidValue(f"{what} is an int64: {v} is out of range")
    return v


def _to_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or (_np is not None and isinstance(value, _np.bool_)):
        raise InvalidValue(f"{what} is a float: bool {value!r} is not accepted")
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError as e:
            raise InvalidValue(f"{what} is a float: {value} is out of range") from e
    if _np is not None and isinstance(value, (_np.floating, _np.integer)):
        return float(value)
    raise InvalidValue(f"{what} is a float: expected float or int, got {type(value).__name__}")


def _to_float_list(value: Any, what: str) -> list[float]:
    if (isinstance(value, (str, bytes)) or not isinstance(value, Iterable)) and not (
        _np is not None and isinstance(value, _np.ndarray)
    ):
        raise InvalidValue(
            f"{what} is an embedding: expected a sequence of numbers, got {type(value).__name__}"
        )
    if isinstance(value, Tensor):
        value = value.tolist()
    if _np is not None and isinstance(value, _np.ndarray):
        if value.ndim != 1:
            raise InvalidValue(f"{what} is an embedding: expected a 1-D array, got {value.shape}")
        if value.dtype.kind not in "iuf":
            raise InvalidValue(f"{what} is an embedding: dtype {value.dtype} is not numeric")
        return [float(x) for x in value.astype(_np.float64, copy=False).tolist()]
    out: list[float] = []
    for x in value:
        if isinstance(x, bool) or (_np is not None and isinstance(x, _np.bool_)):
            raise InvalidValue(f"{what} is an embedding: element {x!r} is a bool")
        if isinstance(x, (int, float)) or (
            _np is not None and isinstance(x, (_np.floating, _np.integer))
        ):
            out.append(float(x))
        else:
            raise InvalidValue(f"{what} is an embedding: element {x!r} is not a number")
    return out


def to_tensor(value: Any, *, dtype: str | None = None) -> Tensor:
    """A :class:`Tensor` from an ndarray, a Tensor, a numpy scalar or nested lists.

    Arrays keep their dtype; lists are packed as ``dtype`` when given (the
    variable's dtype constraint), else as inferred.
    """
    if isinstance(value, Tensor):
        return value
    if _np is not None and isinstance(value, (_np.ndarray, _np.generic)):
        arr = _np.asarray(value)
        return _numpy_to_tensor(arr)
    if isinstance(value, (list, tuple, int, float)):
        if _np is not None:
            try:
                arr = _np.asarray(value, dtype=dtype) if dtype else _np.asarray(value)
            except (ValueError, TypeError, OverflowError) as e:
                raise InvalidValue(f"cannot make a tensor from {value!r}: {e}") from e
            if arr.dtype.name not in DTYPES:
                raise InvalidValue(f"cannot make a tensor of dtype {arr.dtype} from {value!r}")
            return _numpy_to_tensor(arr)
        return Tensor.from_list(value, dtype)
    raise InvalidValue(f"expected a tensor (ndarray, Tensor or nested lists), got {value!r}")


def _numpy_to_tensor(arr: Any) -> Tensor:
    name = arr.dtype.name
    if name not in DTYPES:
        raise InvalidValue(f"tensor dtype {arr.dtype} is not supported; one of {sorted(DTYPES)}")
    le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return Tensor(tuple(int(d) for d in arr.shape), name, le.tobytes(order="C"))


def constraints_to_pb(constraints: Mapping[str, Any] | None) -> pb.Constraints | None:
    """A ``Constraints`` message from a dict such as ``{"min": 0.0, "max": 2.0}``."""
    if not constraints:
        return None
    unknown = set(constraints) - _CONSTRAINT_KEYS
    if unknown:
        raise _bad_argument(
            f"unknown constraint(s) {sorted(unknown)}; known: {sorted(_CONSTRAINT_KEYS)}"
        )
    c = pb.Constraints()
    try:
        for key in ("min", "max"):
            if constraints.get(key) is not None:
                setattr(c, key, float(constraints[key]))
        for key in ("min_length", "max_length", "dimensions"):
            if constraints.get(key) is not None:
                setattr(c, key, int(constraints[key]))
        for key in ("pattern", "dtype"):
            if constraints.get(key) is not None:
                setattr(c, key, str(constraints[key]))
        for key in ("choices", "allowed_modules"):
            if constraints.get(key) is not None:
                getattr(c, key).extend(str(x) for x in constraints[key])
        if constraints.get("shape") is not None:
            c.shape.extend(int(x) for x in constraints["shape"])
    except (TypeError, ValueError) as e:
        raise _bad_argument(f"bad constraints {dict(constraints)!r}: {e}") from e
    return c


# ---------------------------------------------------------------------------
# wire -> Python


_SCALAR_KINDS = frozenset({"int_value", "float_value", "string_value", "bool_value"})


def from_value(v: pb.Value | None) -> Any:
    """The Python value of a wire ``Value`` (None when unset)."""
    if v is None:
        return None
    # A set member of a oneof that is not its default is the one set (the
    # others read as their defaults): four plain reads are cheaper than
    # WhichOneof, which builds the member's name as a new string.
    x = v.int_value or v.float_value or v.string_value or v.bool_value
    if x:
        return x
    kind = v.WhichOneof("kind")
    if kind is None:
        return None
    if kind in _SCALAR_KINDS:
        return getattr(v, kind)
    if kind == "embedding_value":
        values = list(v.embedding_value.values)
        if _np is not None:
            return _np.array(values, dtype=_np.float64)
        return values
    if kind == "tensor_value":
        t = v.tensor_value
        shape = tuple(int(d) for d in t.shape)
        if _np is not None and t.dtype in DTYPES:
            try:
                return _tensor_to_numpy(shape, t.dtype, t.data)
            except ValueError:
                pass  # malformed; hand back the raw tensor below
        return _raw_tensor(shape, t.dtype, bytes(t.data))
    raise InvalidValue(f"unknown value kind {kind!r}")  # pragma: no cover


def _raw_tensor(shape: tuple[int, ...], dtype: str, data: bytes) -> Tensor:
    try:
        return Tensor(shape, dtype, data)
    except InvalidValue:
        # Keep what the server sent even if it does not add up.
        t = object.__new__(Tensor)
        object.__setattr__(t, "shape", shape)
        object.__setattr__(t, "dtype", dtype)
        object.__setattr__(t, "data", data)
        return t


def _tensor_to_numpy(shape: tuple[int, ...], dtype: str, data: bytes) -> Any:
    le = _np.dtype(dtype).newbyteorder("<")
    arr = _np.frombuffer(data, dtype=le).reshape(shape)
    # A writable array in native byte order.
    return arr.astype(_np.dtype(dtype), copy=True)


def constraints_from_pb(c: pb.Constraints | None) -> dict[str, Any]:
    """The set constraints as a dict (absent and empty ones left out)."""
    if c is None:
        return {}
    return {fd.name: list(v) if fd.is_repeated else v for fd, v in c.ListFields()}


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp_to_datetime(ts: Any) -> datetime | None:
    """An aware UTC datetime, or None for an unset timestamp."""
    if ts is None:
        return None
    seconds, nanos = ts.seconds, ts.nanos
    if seconds == 0 and nanos == 0:
        return None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
