"""SSRF defence: a webhook URL may only reach public addresses (unless allow-listed).

The host is resolved once, *every* address it resolves to is checked, and the request is
then sent to the checked address (the `Host` header and TLS SNI keep the name). Checking
a name and letting the HTTP client resolve it again would allow DNS rebinding: a second
answer pointing at 127.0.0.1 or the cloud metadata service.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shelfwise.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class UnsafeWebhookTarget(InvalidInput):
    code = "webhook_target_refused"
    title = "The webhook URL points to an address that is not allowed"


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def refusal(address: IPAddress, allowed: Sequence[Network]) -> str | None:
    """Why `address` may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in allowed):
        return None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for label, flag in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a private address", address.is_private),
        ("a multicast address", address.is_multicast),
        ("a reserved address", address.is_reserved),
        ("an unspecified address", address.is_unspecified),
        ("not a public address", not address.is_global),
    ):
        if flag:
            return label
    return None


def split_url(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise UnsafeWebhookTarget("The URL cannot be parsed") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookTarget("Only http and https URLs are allowed")
    if not parts.hostname:
        raise UnsafeWebhookTarget("The URL has no host")
    if parts.username or parts.password:
        raise UnsafeWebhookTarget("Credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeWebhookTarget("The URL has an invalid port") from exc
    return parts.scheme, parts.hostname, port


def check_host_name(host: str) -> None:
    """A host name must encode to a valid DNS name (IDNA): no empty label (`a..b`), no
    label over 63 octets, at most 253 in all, nothing that the resolver cannot encode."""
    try:
        encoded = host.rstrip(".").encode("idna")
    except UnicodeError as exc:
        raise UnsafeWebhookTarget(f"The host {host!r} is not a valid DNS name") from exc
    labels = encoded.split(b".")
    if len(encoded) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        raise UnsafeWebhookTarget(f"The host {host!r} is not a valid DNS name")
    if any(byte < 0x21 or byte > 0x7E for byte in encoded):
        raise UnsafeWebhookTarget(f"The host {host!r} is not a valid DNS name")


async def resolve_target(url: str, allowed: Sequence[Network]) -> Target:
    """Resolve and check `url`'s host; raises `UnsafeWebhookTarget`."""
    scheme, host, port = split_url(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        check_host_name(host)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError) as exc:
            # UnicodeError: the resolver's IDNA encoding refused the name; ValueError: a
            # NUL byte. Both are the caller's URL, not our failure: a 422, never a 500.
            raise UnsafeWebhookTarget(f"The host {host!r} does not resolve") from exc
        addresses = tuple(
            dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
        )
        if not addresses:
            raise UnsafeWebhookTarget(f"The host {host!r} does not resolve")
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            raise UnsafeWebhookTarget(f"The host {host!r} resolves to {reason} ({address})")
    return Target(scheme, host, port, addresses)
