"""Validation of names and IPv4 values, each returning why a value is wrong (or None)."""

from __future__ import annotations

import ipaddress
import re

_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

IFNAMSIZ = 16  # includes the terminating NUL, so at most 15 characters


def dns1123_subdomain_problem(name: object) -> str | None:
    """Object names follow Kubernetes: a lowercase RFC 1123 subdomain, ≤ 253 chars."""
    if not isinstance(name, str) or not name:
        return "is required: a lowercase name such as egress-gw"
    if len(name) > 253 or not _DNS1123_SUBDOMAIN_RE.match(name):
        suggestion = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.") or "egress-gw"
        return (f"{name!r} is not a valid name: use lowercase letters, digits, '-' and '.', "
                f"starting and ending with a letter or digit (e.g. {suggestion!r})")
    return None


def dns1123_label_problem(name: object) -> str | None:
    """Namespaces are RFC 1123 labels (no dots, ≤ 63 chars)."""
    if not isinstance(name, str) or not name:
        return "is required: a lowercase name such as default"
    if len(name) > 63 or not _DNS1123_LABEL_RE.match(name):
        return (f"{name!r} is not a valid namespace: at most 63 lowercase letters, digits "
                "and '-', starting and ending with a letter or digit")
    return None


def ifname_problem(name: object) -> str | None:
    """What Linux' dev_valid_name() refuses."""
    if not isinstance(name, str) or not name:
        return "is required: the interface name, e.g. eth1"
    if len(name.encode()) >= IFNAMSIZ:
        return f"{name!r} is longer than {IFNAMSIZ - 1} bytes, which Linux refuses for interface names"
    if name in (".", ".."):
        return f"{name!r} is not allowed as an interface name"
    bad = [c for c in name if c == "/" or c == ":" or c.isspace()]
    if bad:
        return f"{name!r} contains {bad[0]!r}; Linux interface names cannot contain '/', ':' or whitespace"
    return None


def unicast_ipv4_problem(value: object) -> str | None:
    """A virtual IP must be a plain unicast IPv4 host address."""
    if not isinstance(value, str):
        return "must be an IPv4 address written as a string, e.g. 192.0.2.100"
    if "/" in value:
        return f"{value!r} has a prefix length; write the bare address, e.g. {value.split('/')[0]!r}"
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return f"{value!r} is not an IPv4 address (dotted quad without leading zeros, e.g. 192.0.2.100)"
    for flag, what in ((addr.is_unspecified, "the unspecified address"),
                       (addr.is_loopback, "a loopback address"),
                       (addr.is_multicast, "a multicast address"),
                       (addr == ipaddress.IPv4Address("255.255.255.255"), "the broadcast address"),
                       (addr.is_link_local, "a link-local address"),
                       (addr in ipaddress.IPv4Network("240.0.0.0/4"), "a reserved (class E) address")):
        if flag:
            return f"{value} is {what}; a virtual IP must be a unicast host address"
    return None


def ipv4_cidr_problem(value: object) -> str | None:
    """A destination CIDR: IPv4, explicit prefix length, no host bits set (canonical)."""
    if not isinstance(value, str):
        return "must be a CIDR written as a string, e.g. 203.0.113.0/24"
    if "/" not in value:
        return f"{value!r} has no prefix length; write {value}/32 for one address"
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an IPv4 CIDR (e.g. 203.0.113.0/24)"
    if net.version != 4:
        return f"{value!r} is IPv6; vipmgr gateways are IPv4 only"
    if str(net) != value:
        return f"{value!r} is not canonical; write {str(net)!r}"
    return None
