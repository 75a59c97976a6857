"""The variable types a session has seen, for converting values on writes."""

from __future__ import annotations

from varbridge.v1 import varbridge_pb2 as pb

__all__ = ["TypeCache", "TypeInfo"]

TypeInfo = tuple[int, "str | None"]
"""A variable's type (the wire enum) and its dtype constraint, if any."""


class TypeCache(dict[str, TypeInfo]):
    """Identifier (id or name, or the identifier a caller used) -> the
    variable's :data:`TypeInfo`. A session keeps one and shares it with its
    watches, which file the variables they see and forget the deleted ones.
    A variable's type and constraints never change, so one tuple is filed
    under each of its identifiers.

    ``filed``: variable ids whose tuple is filed under both the id and the
    name, as :meth:`remember` left them; emptied by every change, so a watch
    that finds an id in it knows, with one lookup, that there is nothing to
    file."""

    def __init__(self) -> None:
        super().__init__()
        self.filed: set[str] = set()

    def remember(self, v: pb.Variable, *also: str) -> None:
        info: TypeInfo = (v.type, v.constraints.dtype if v.constraints.HasField("dtype") else None)
        self[v.id] = info
        self[v.name] = info
        for ident in also:
            self[ident] = info
        filed = self.filed
        filed.clear()
        filed.add(v.id)

    def forget(self, *idents: str) -> None:
        for ident in idents:
            self.pop(ident, None)
        self.filed.clear()

    def clear(self) -> None:
        super().clear()
        self.filed.clear()
