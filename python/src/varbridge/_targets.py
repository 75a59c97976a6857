"""Server addresses: one server, or several that share their sessions.

:func:`channel_target` turns what :func:`varbridge.connect` was given into
the target gRPC's C core dials, and says whether the channel balances over
several servers (then it gets the ``round_robin`` policy through its service
config, see :func:`varbridge.client.service_config`):

- a list or tuple of ``"host:port"`` addresses, or one string of them
  separated by commas (``"h1:p1,h2:p2"``), becomes an ``ipv4:`` or ``ipv6:``
  target, the C core's static address lists. Host names are resolved here,
  once, when the bridge is made (the C core's lists take IP addresses only);
  for servers whose addresses change, give a DNS name with a record per
  server instead;
- ``"dns:///name:port"`` and ``ipv4:``/``ipv6:`` lists of several addresses
  are gRPC's own, kept as they are, and balanced;
- anything else (one ``"host:port"``, ``unix:``, ...) is kept as it is, with
  gRPC's default ``pick_first``, exactly as with one server.

A list of one address is that address alone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import NamedTuple

import grpc

from varbridge.errors import InvalidArgument

__all__ = ["ChannelTarget", "channel_target", "split_address"]


def _bad(target: object, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"server address list {target!r}: {why}; want host:port,host:port,...",
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def split_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[v6]:port"`` for IPv6) into host and port.

    Raises :class:`ValueError` when it is not one.
    """
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {address!r}: want host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {address!r}: put an IPv6 address in brackets, [addr]:port")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: the port is not a number from 1 to 65535")
    return host, int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int, family: socket.AddressFamily) -> str | None:
    """The first address of ``family`` that ``host`` resolves to, or None."""
    try:
        infos = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for info in infos:
        return str(info[4][0])
    return None


def _static_target(target: object, addresses: Sequence[str]) -> str:
    """An ``ipv4:`` or ``ipv6:`` target for ``addresses``, names resolved."""
    if not addresses:
        raise _bad(target, "no address")
    parsed: list[tuple[str, int]] = []
    for a in addresses:
        if not a.strip():
            raise _bad(target, "an empty address")
        try:
            parsed.append(split_address(a))
        except ValueError as e:
            raise _bad(target, str(e)) from None
    for family, scheme in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        out: list[str] = []
        for host, port in parsed:
            ip = _ip(host)
            if ip is not None:
                addr = str(ip) if ip.version == (4 if family == socket.AF_INET else 6) else None
            else:
                addr = _resolve(host, port, family)
            if addr is None:
                break
            out.append(f"[{addr}]:{port}" if family == socket.AF_INET6 else f"{addr}:{port}")
        else:
            return f"{scheme}:{','.join(out)}"
    raise _bad(
        target,
        "its addresses do not all resolve to IPv4, nor all to IPv6 "
        "(gRPC's address lists hold one family)",
    )


class ChannelTarget(NamedTuple):
    """What a bridge's channel dials."""

    target: str
    """The gRPC target."""
    balanced: bool
    """Whether it names several servers (round_robin)."""
    authority: str | None
    """For a list: its first address as given, the ``:authority`` the
    channel sends and, with TLS, the name the servers' certificates are
    checked against (the list itself is no valid authority); else None."""


def channel_target(target: str | Sequence[str]) -> ChannelTarget:
    """The gRPC target for ``target``, whether it names several servers, and
    the authority of a list.

    Raises :class:`~varbridge.errors.InvalidArgument` for a malformed list.
    """
    if not isinstance(target, str):
        addresses = list(target)
        if len(addresses) == 1:
            return channel_target(addresses[0])
        return ChannelTarget(_static_target(target, addresses), True, addresses[0].strip())
    if target.startswith(("ipv4:", "ipv6:")):
        return ChannelTarget(target, "," in target, None)
    if target.startswith("dns:"):
        return ChannelTarget(target, True, None)
    if "," in target and "://" not in target:
        addresses = target.split(",")
        return ChannelTarget(_static_target(target, addresses), True, addresses[0].strip())
    return ChannelTarget(target, False, None)
