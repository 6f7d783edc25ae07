"""The URL policy: where an image or video may be fetched from and how much may be read.

``FetchPolicy`` holds the limits; ``resolve_checked`` resolves a host once and refuses it when any of its
addresses is private, loopback, link-local, multicast, reserved or otherwise non-global (unless the policy
allows private URLs or names the host). The fetcher connects only to the addresses checked here.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field as dc_field

from vlrank.errors import ImageFetchError, InvalidInputError

MiB = 1024 * 1024
#: one video file: minutes of 1080p H.264 (sampling keeps at most 64 frames of it anyway), a bound on what
#: one request can make the process hold
DEFAULT_MAX_VIDEO_BYTES = 256 * MiB

@dataclass(frozen=True)
class FetchPolicy:
    """Where images may come from and how much may be read.

    ``allowed_private_hosts`` exempts exact host names (as written in the URL, e.g. an internal image
    service) from the private-address refusal; redirects to any other private host are still refused.
    Proxy environment variables are ignored on purpose: the address that was checked is the one connected.

    ``max_bytes`` caps one image; ``max_video_bytes`` caps one video file (data URL, http(s), local file or
    bytes). Videos get their own cap because a container holds many frames: 256 MiB keeps a 1080p H.264
    clip of several minutes (the official sampling keeps at most 64 frames of it) while bounding what one
    request can make the process hold; frame lists are images and use ``max_bytes`` per frame.
    """

    allow_local_files: bool = True
    allow_private_urls: bool = False
    timeout_s: float = 10.0
    max_bytes: int = 20 * MiB
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    allowed_private_hosts: frozenset[str] = dc_field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise InvalidInputError(
                f"timeout_s must be > 0 seconds, got {self.timeout_s!r}; pass e.g. timeout_s=10.0",
                field="timeout_s",
            )
        if not isinstance(self.max_bytes, int) or self.max_bytes <= 0:
            raise InvalidInputError(
                f"max_bytes must be a positive int, got {self.max_bytes!r}; pass e.g. max_bytes=20 * 1024 * 1024",
                field="max_bytes",
            )
        if isinstance(self.max_video_bytes, bool) or not isinstance(self.max_video_bytes, int) \
                or self.max_video_bytes <= 0:
            raise InvalidInputError(
                f"max_video_bytes must be a positive int, got {self.max_video_bytes!r}; pass e.g. "
                "max_video_bytes=256 * 1024 * 1024",
                field="max_video_bytes",
            )
        object.__setattr__(self, "allowed_private_hosts", frozenset(h.lower() for h in self.allowed_private_hosts))


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Most specific first: is_private also covers loopback, link-local and unspecified ranges.
    for name in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved", "is_private"):
        if getattr(ip, name):
            return name[3:].replace("_", "-")
    if not ip.is_global:  # e.g. 100.64.0.0/10 shared address space
        return "non-global"
    return None


def resolve_checked(host: str, port: int, *, field: str, policy: FetchPolicy) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing if any is private (unless allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:  # ValueError: e.g. an embedded NUL
        raise ImageFetchError(f"{field}: cannot resolve host {host!r} ({exc}); pass a reachable URL", field=field) from exc
    addrs: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise ImageFetchError(f"{field}: host {host!r} has no address; pass a reachable URL", field=field)
    if policy.allow_private_urls or host.lower() in policy.allowed_private_hosts:
        return addrs
    for addr in addrs:
        why = address_refusal(ipaddress.ip_address(addr))
        if why is not None:
            raise ImageFetchError(
                f"{field}: refusing to fetch from {host!r}: it resolves to {why} address {addr}; pass a public "
                "http(s) URL or a data:image/...;base64 URL (private addresses need allow_private_urls=True)",
                field=field,
            )
    return addrs



__all__ = ["MiB", "FetchPolicy", "address_refusal", "resolve_checked"]
