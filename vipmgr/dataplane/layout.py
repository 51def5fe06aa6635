"""Everything vipmgr creates in a node's kernel, named in one place (docs/dataplane.md).

vipmgr only ever touches what is listed here, and everything listed here is
vipmgr's: ``flush`` removes exactly this, ``show`` prints exactly this.
"""

from __future__ import annotations

import zlib

TABLE = "vipmgr"  # nftables: table inet vipmgr, table arp vipmgr

# Steering: fwmark byte 2 carries the gateway slot (1..255); other mark bits are preserved.
MARK_SHIFT = 16
MARK_MASK = 0x00FF0000

# Policy routing: our own route tables and rule priorities (below main's 32766).
RETURN_TABLE = 7600  # active node: VM IP/32 via the VM's node
STEER_TABLE_BASE = 7600  # steering: table 7600 + slot = 7601..7855
RETURN_RULE_PRIORITY = 7600
STEER_RULE_PRIORITY = 7610
OWN_TABLES = range(RETURN_TABLE, STEER_TABLE_BASE + 256)
OWN_RULE_PRIORITIES = (RETURN_RULE_PRIORITY, STEER_RULE_PRIORITY)

# Route and address "protocol" marking our objects (0x76, 'v'); the kernel keeps it for us.
RT_PROTO = 0x76
IFA_PROTO = 0x76

# nftables base chains: (family, name, type, hook, priority).
INET_CHAINS = (
    ("inet", "vm_steer", "filter", "prerouting", "mangle"),  # worker: mark or drop selected
    ("inet", "gw_gate", "filter", "forward", "filter"),  # member: drop selected unless armed
    ("inet", "gw_snat", "nat", "postrouting", "srcnat - 10"),  # active: before a node masquerade
    ("inet", "gw_out", "filter", "postrouting", "filter"),  # active: selected, wrong interface: drop
    ("inet", "gw_in", "filter", "input", "filter"),  # VIP: stateless packets to it: drop, not RST
)
ARP_CHAINS = (
    ("arp", "vip_in", "filter", "input", "filter"),  # requests for a VIP unless armed: drop
    ("arp", "vip_out", "filter", "output", "filter"),  # our ARP with a VIP as sender unless armed
)
CLUSTER = "cluster"  # inet set: in-cluster destinations, excluded from every rule
ARP_VIPS = "vips"
ARP_ARMED = "armed"

_NAME_MAX = 255  # NFT_SET_MAXNAMELEN - 1


def mark(slot: int) -> int:
    return slot << MARK_SHIFT


def steer_table(slot: int) -> int:
    return STEER_TABLE_BASE + slot


def ident(kind: str, name: str, suffix: str) -> str:
    """An nft object name: readable ``p-<policy>-all``; hashed when a long name would not fit."""
    out = f"{kind}-{name}-{suffix}"
    if len(out) <= _NAME_MAX:
        return out
    return f"{kind}-{zlib.crc32(name.encode()):08x}-{suffix}"


def policy_all(policy: str) -> str:
    """Every source the policy selects (gate and SNAT on the gateway's nodes)."""
    return ident("p", policy, "all")


def policy_local(policy: str) -> str:
    """The policy's sources that run on this node (steering)."""
    return ident("p", policy, "local")


def policy_dst(policy: str) -> str:
    return ident("p", policy, "dst")


def gateway_armed(gateway: str) -> str:
    """Dead-man set: holds ``ipv4`` with a timeout only while the agent keeps refreshing."""
    return ident("g", gateway, "armed")


def gateway_egress(gateway: str) -> str:
    """Present iff this node is active for the gateway; holds the egress IP."""
    return ident("g", gateway, "egress")


def gateway_chain(gateway: str, part: str) -> str:
    """A gateway's own regular chain (``gate``, ``snat``, ``out``): its per-policy rules,
    reached by one jump from the base chain of the same part."""
    return ident("g", gateway, part)


def gateway_fenced(gateway: str) -> str:
    """Counter: selected packets dropped at a member because it was not (or no longer) armed."""
    return ident("g", gateway, "fenced")


def gateway_failclosed(gateway: str) -> str:
    """Counter: selected packets dropped at a worker because the gateway had no active node."""
    return ident("g", gateway, "failclosed")


def gateway_misrouted(gateway: str) -> str:
    """Counter: selected packets dropped at the active node because the node's routes would
    send them out of another interface than the gateway's (where they would not be SNATed)."""
    return ident("g", gateway, "misrouted")


def gateway_nostate(gateway: str) -> str:
    """Counter: packets to the gateway's VIP that no conntrack entry knows (mid-failover
    retransmissions), dropped instead of answered with a RST by the local stack."""
    return ident("g", gateway, "nostate")


# Drop counters per gateway, by the reason a metric reports (docs/monitoring.md).
DROP_COUNTERS = (("fenced", gateway_fenced), ("failclosed", gateway_failclosed),
                 ("misrouted", gateway_misrouted), ("nostate", gateway_nostate))
