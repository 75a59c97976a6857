"""Decoding of the google.rpc error details the server attaches to a status.

The server sends ``grpc-status-details-bin`` (a ``google.rpc.Status``) with
an ``ErrorInfo`` on every error (domain "varbridge.dev", ``reason`` one of
the proto's ErrorReason names without the ERROR_REASON_ prefix, and
``metadata`` such as the session id, the constraint or the revisions), and
besides it ``ResourceInfo`` (NOT_FOUND: resource_type "session" or
"variable"), ``BadRequest`` (INVALID_ARGUMENT: the field, and reason
CONSTRAINT_VIOLATION for a broken constraint) or ``QuotaFailure``
(RESOURCE_EXHAUSTED: the limit). The typed exceptions are chosen from these
details, never from the message text, which is for people and may change.

To stay free of a googleapis-common-protos dependency the few messages are
declared here in a private descriptor pool (field numbers as in
google/rpc/status.proto and google/rpc/error_details.proto).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

DETAILS_KEY = "grpc-status-details-bin"

_F = descriptor_pb2.FieldDescriptorProto


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    any_file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_file)
    pool.Add(any_file)

    fd = descriptor_pb2.FileDescriptorProto(
        name="varbridge/_private/google_rpc.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )

    def msg(name: str, fields: Iterable[tuple[str, int, int, int, str]]) -> None:
        m = fd.message_type.add(name=name)
        for fname, num, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    s, i32, m = _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_MESSAGE
    msg(
        "Status",
        [
            ("code", 1, i32, opt, ""),
            ("message", 2, s, opt, ""),
            ("details", 3, m, rep, ".google.protobuf.Any"),
        ],
    )
    msg(
        "ResourceInfo",
        [
            ("resource_type", 1, s, opt, ""),
            ("resource_name", 2, s, opt, ""),
            ("owner", 3, s, opt, ""),
            ("description", 4, s, opt, ""),
        ],
    )
    msg(
        "FieldViolation",
        [
            ("field", 1, s, opt, ""),
            ("description", 2, s, opt, ""),
            ("reason", 3, s, opt, ""),
        ],
    )
    msg("BadRequest", [("field_violations", 1, m, rep, ".google.rpc.FieldViolation")])
    msg("QuotaViolation", [("subject", 1, s, opt, ""), ("description", 2, s, opt, "")])
    msg("QuotaFailure", [("violations", 1, m, rep, ".google.rpc.QuotaViolation")])
    info = fd.message_type.add(name="ErrorInfo")
    entry = info.nested_type.add(name="MetadataEntry")
    entry.field.add(name="key", number=1, type=s, label=opt)
    entry.field.add(name="value", number=2, type=s, label=opt)
    entry.options.map_entry = True
    info.field.add(name="reason", number=1, type=s, label=opt)
    info.field.add(name="domain", number=2, type=s, label=opt)
    info.field.add(
        name="metadata",
        number=3,
        type=m,
        label=rep,
        type_name=".google.rpc.ErrorInfo.MetadataEntry",
    )
    pool.Add(fd)
    return pool


_pool = _build_pool()


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(name))


_Status = _cls("google.rpc.Status")
_ResourceInfo = _cls("google.rpc.ResourceInfo")
_BadRequest = _cls("google.rpc.BadRequest")
_QuotaFailure = _cls("google.rpc.QuotaFailure")
_ErrorInfo = _cls("google.rpc.ErrorInfo")

DOMAIN = "varbridge.dev"
"""The ErrorInfo domain of varbridge's own reasons."""


@dataclass
class FieldViolation:
    field: str
    description: str
    reason: str = ""


@dataclass
class StatusDetails:
    """What the google.rpc details of an error say."""

    reason: str = ""
    """ErrorInfo reason ("SESSION_CLOSED", "VERSION_CONFLICT", ...); "" without one."""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    """ErrorInfo metadata (session_id, constraint, start_revision, ...)."""
    resource_type: str = ""
    resource_name: str = ""
    field_violations: list[FieldViolation] = field(default_factory=list)
    quota_subjects: list[str] = field(default_factory=list)


def parse(metadata: Any) -> StatusDetails | None:
    """Decode ``grpc-status-details-bin`` from trailing metadata, if present."""
    raw = None
    try:
        for item in metadata or ():
            key, value = item[0], item[1]
            if key == DETAILS_KEY:
                raw = value
                break
    except (TypeError, IndexError):
        return None
    if not isinstance(raw, (bytes, bytearray)):
        return None
    try:
        st = _Status.FromString(bytes(raw))
    except Exception:
        return None
    out = StatusDetails()
    for d in st.details:
        type_name = d.type_url.rsplit("/", 1)[-1]
        try:
            if type_name == "google.rpc.ErrorInfo":
                ei = _ErrorInfo.FromString(d.value)
                if not out.reason:  # the first one decides
                    out.reason = ei.reason
                    out.domain = ei.domain
                    out.metadata = dict(ei.metadata)
            elif type_name == "google.rpc.ResourceInfo":
                ri = _ResourceInfo.FromString(d.value)
                if not out.resource_type:  # one per missing identifier: same type
                    out.resource_type = ri.resource_type
                    out.resource_name = ri.resource_name
            elif type_name == "google.rpc.BadRequest":
                br = _BadRequest.FromString(d.value)
                out.field_violations.extend(
                    FieldViolation(v.field, v.description, v.reason) for v in br.field_violations
                )
            elif type_name == "google.rpc.QuotaFailure":
                qf = _QuotaFailure.FromString(d.value)
                out.quota_subjects.extend(v.subject for v in qf.violations)
        except Exception:
            continue
    return out
