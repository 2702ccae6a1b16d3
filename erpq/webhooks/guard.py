"""The SSRF guard: may erpq POST to this URL, and to which addresses?

A webhook URL comes from a tenant, so it must not make erpq talk to its own
network: loopback, private ranges, link-local (cloud metadata at
169.254.169.254), carrier-grade NAT, and IPv6 forms that embed any of those.
``check(url, allow, resolve)`` decides without sending anything:

- only ``http`` and ``https``;
- a literal IP is checked as is; a host spelled as a non-canonical IPv4
  number (``2130706433``, ``0x7f000001``, ``127.1``, ``0177.0.0.1``) is
  refused outright: browsers and C resolvers read those as addresses, and no
  honest receiver uses them;
- a host name is resolved once (``resolve`` is injectable, so tests never ask
  real DNS) and every address must pass;
- an address passes when it is globally routable (``ipaddress.is_global``,
  and the IPv4 inside IPv4-mapped, 6to4, Teredo and NAT64 addresses is too)
  or when it is in ``webhooks.allow_hosts`` (addresses, networks or host
  names).

The returned ``Target`` carries the checked addresses; the sender connects to
those, never resolving the name again, so DNS rebinding between check and
connect cannot redirect the request.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Sequence[str]]

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class Refused(ValueError):
    """The URL may not be requested; the message is the reason, for the delivery row."""


class Unresolvable(Refused):
    """DNS gave no answer: unlike a policy refusal, worth retrying later."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # as written in the URL (lower case, no brackets)
    port: int
    addresses: tuple[IPAddress, ...]  # checked; empty only when not resolved (resolve=None)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class Allowlist:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        networks, hosts = [], set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(entry.strip().lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, host: str, address: IPAddress) -> bool:
        if host.rstrip(".") in self.hosts:
            return True
        return any(address.version == n.version and address in n for n in self.networks)


@functools.lru_cache(maxsize=64)
def _parsed(entries: tuple[str, ...]) -> Allowlist:
    """The allowlist from config, parsed once (it is checked on every delivery)."""
    return Allowlist.parse(entries)


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the OS resolver (production only: tests inject their own)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check(url: str, allow: Allowlist | Iterable[str] = (),
          resolve: Resolver | None = system_resolver) -> Target:
    """The checked target of ``url``, or ``Refused`` with the reason.

    ``resolve=None`` checks only what can be checked without DNS (syntax and
    literal addresses): what a subscription is validated with when created.
    """
    allow = allow if isinstance(allow, Allowlist) else _parsed(tuple(allow))
    known = _without_dns(url, allow)
    if isinstance(known, Refused):
        raise type(known)(str(known))
    if known is not None:
        return known
    scheme, host, port = _split(url)
    if resolve is None:
        return Target(url, scheme, host, port, ())
    return _checked(url, scheme, host, port, _resolve(resolve, host, port), allow, literal=False)


@functools.lru_cache(maxsize=1024)
def _without_dns(url: str, allow: Allowlist) -> Target | Refused | None:
    """The decision on ``url`` when it needs no DNS (bad syntax, a literal
    address), or None for a host name. Cached: it is the same on every delivery."""
    try:
        scheme, host, port = _split(url)
        literal = _literal_address(host)
        if literal is None:
            return None
        return _checked(url, scheme, host, port, (literal,), allow, literal=True)
    except Refused as exc:
        return exc.with_traceback(None)


def _checked(url: str, scheme: str, host: str, port: int, addresses: tuple[IPAddress, ...],
             allow: Allowlist, *, literal: bool) -> Target:
    for address in addresses:
        if not allow.allows(host, address):
            problem = address_problem(address)
            if problem is not None:
                shown = f"address {address}" if literal else f"{host} resolves to {address}, which"
                raise Refused(f"{shown} is {problem} (not globally routable; allow it in webhooks.allow_hosts)")
    return Target(url, scheme, host, port, addresses)


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "an IPv6 address with a zone"
        for kind, inner in _embedded_ipv4(address):
            problem = address_problem(inner)
            if problem is not None:
                return f"{kind} {inner}, which is {problem}"
    for label, bad in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT (100.64.0.0/10)", address.version == 4 and address in _CGNAT),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if bad:
            return label
    return None if address.is_global else "not globally routable"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    found = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped", address.ipv4_mapped))
    if address.sixtofour is not None:
        found.append(("6to4 of", address.sixtofour))
    if address.teredo is not None:
        found.extend(("Teredo of", a) for a in address.teredo)
    if any(address in n for n in _NAT64):
        found.append(("NAT64 of", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def _split(url: str) -> tuple[str, str, int]:
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise Refused(f"not a URL: {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a URL: {url!r} ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"scheme {scheme or '(none)'!r} is not allowed (http or https only)")
    host = (parts.hostname or "").lower()
    if not host:
        raise Refused(f"no host in URL {url!r}")
    if "%" in host:
        raise Refused(f"host {host!r} has an IPv6 zone, which is not allowed")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _literal_address(host: str) -> IPAddress | None:
    """The address a literal host names; Refused for non-canonical IPv4 spellings."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # WHATWG URL rules: a host whose last label is numeric is an IPv4 address.
        value = _legacy_ipv4(labels)
        if value is None:
            raise Refused(f"host {host!r} is neither a host name nor a valid IPv4 address")
        raise Refused(f"host {host!r} is a non-canonical IPv4 form of {value}; write the address as {value} if it is meant")
    if not _HOST_NAME.match(host):
        raise Refused(f"host {host!r} is not a valid host name")
    return None


def _legacy_ipv4(labels: list[str]) -> ipaddress.IPv4Address | None:
    """Parse ``inet_aton`` forms (decimal, octal, hex, 1 to 4 parts); None if invalid."""
    if not 1 <= len(labels) <= 4 or not all(_NUMERIC_LABEL.match(p) for p in labels):
        return None
    try:
        nums = [int(p[2:] or "0", 16) if p.startswith("0x") else int(p, 8) if len(p) > 1 and p[0] == "0"
                else int(p) for p in labels]
    except ValueError:  # e.g. 09 is not octal
        return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _resolve(resolve: Resolver, host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        found = list(resolve(host, port))
    except OSError as exc:
        raise Unresolvable(f"cannot resolve host {host!r}: {exc}") from None
    addresses = []
    for text in found:
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise Refused(f"host {host!r} resolved to something that is not an address: {text!r}") from None
    if not addresses:
        raise Unresolvable(f"cannot resolve host {host!r}: no addresses")
    return tuple(addresses)
