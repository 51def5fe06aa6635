"""What a heartbeat says, as plain data: the codec turns these into bytes and back.

Kept free of scapy and sockets so the election core and the simulator can use
the same types without importing the I/O layers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

VRRP_PROTO = 112
VRRP_GROUP = "224.0.0.18"
VRRP_TTL = 255

NAME_MAX = 253          # a Kubernetes-style object name, in UTF-8 bytes
HEARD_MAX = 32          # peers listed per advert; more would not fit one MTU
RECORDS_MAX = 255       # adverts (records) per datagram: the trailer's u8 record count
STAMP_MAX = 2**33        # seconds (~272 years): below it every whole µs is a distinct float


class Role(enum.IntEnum):
    STANDBY = 0
    ACTIVE = 1


class Reject(enum.StrEnum):
    """Why a received datagram was dropped; the values are the metric label values."""

    TRUNCATED = "truncated"        # shorter than its headers or lengths claim
    MALFORMED = "malformed"        # not IPv4/112, bad lengths or UTF-8, records not adding up
    TTL = "ttl"                    # IP TTL != 255: it crossed a router (RFC 5798 5.1.1.3)
    CHECKSUM = "checksum"          # IPv4 header or VRRP (pseudo-header) checksum wrong
    VERSION = "version"            # VRRP version != 3, or vipmgr trailer version != 3
    TYPE = "type"                  # VRRP type != 1 (advertisement)
    FOREIGN = "foreign"            # valid VRRPv3 without the vipmgr trailer (e.g. keepalived)
    AUTH = "auth"                  # HMAC missing when required, unknown scheme, or wrong
    UNKNOWN_GATEWAY = "unknown_gateway"  # no record for a gateway configured here
    VRID = "vrid"                  # no record for us, and a known gateway's VRID differs
    OWN = "own"                    # our own node name: a loop or a spoof
    REPLAY = "replay"              # sequence already seen or older than the window
    CAPACITY = "capacity"          # too many distinct sender nodes


@dataclass(frozen=True, slots=True)
class Advert:
    """One node's heartbeat for one gateway: one record of a datagram.

    A datagram carries the records of many gateways of one sending node, so
    ``node`` and ``stamp`` are the datagram's: every advert encoded together
    shares them (the encoder refuses otherwise).

    ``epoch`` is the etcd ``create_revision`` of the authority key the sender
    believes in (0: none). ``heard`` lists the peers of this gateway the sender
    currently hears, which the election core uses to tell the isolated side.
    ``priority`` is the VRRP priority byte (0 means "releasing", as in VRRP).

    ``stamp`` is the sender's monotonic clock at sending (seconds). The sender
    echoes, as ``echo_stamp``, the latest ``stamp`` it received from
    ``echo_node`` (the node it considers active; None and 0.0 when none), which
    tells that node, in its own clock, since when this sender has heard it.
    Stamps travel as whole microseconds, rounded down.

    The agent maps the election core's ``Advert`` onto this one: ``eligible``
    is ``healthy``, ``etcd_ok`` is ``etcd_reachable``, role "active"/"standby"
    is :class:`Role`; ``vrid``, ``interval_ms`` and ``egress_ip`` are wire-only.
    """

    node: str
    gateway: str
    vrid: int
    role: Role
    epoch: int
    priority: int
    interval_ms: int
    egress_ip: str | None
    healthy: bool
    etcd_reachable: bool
    heard: tuple[str, ...] = ()
    stamp: float = 0.0
    echo_node: str | None = None
    echo_stamp: float = 0.0


@dataclass(frozen=True, slots=True)
class Frame:
    """A datagram that parsed cleanly: its adverts (in wire order, all of one node and
    stamp) plus what the envelope said."""

    adverts: tuple[Advert, ...]
    seq: int
    src: str
    dst: str
    authenticated: bool    # carried an HMAC (verified only when decoded with a keyring)
    key_index: int | None = None   # which key of the keyring verified it
