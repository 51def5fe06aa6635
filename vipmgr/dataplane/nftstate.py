"""nftables side of the plan: desired objects, the same read back from the kernel, and
the one batch that turns one into the other.

Rules are compared by a fingerprint kept in their comment (a hash of the rule
text we generated), chains are rewritten whole (flush + add, inside the same
transaction) when any rule differs, and set elements are added/removed one by
one so that one VM joining costs one element. CIDR sets are written collapsed
(no overlaps), so the kernel holds exactly our elements and deletions are exact.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from vipmgr.dataplane import ctsync
from vipmgr.dataplane import layout as L
from vipmgr.dataplane.plan import NodePlan, collapse_cidrs

CHAINS = {(fam, name): (typ, hook, prio) for fam, name, typ, hook, prio
          in (*L.INET_CHAINS, *L.ARP_CHAINS)}

# types of the dead-man's sets (their elements: ArmTarget)
ARMED_TYPE = "nf_proto"  # g-*-armed: holds ``ipv4`` while armed
ARP_ARMED_TYPE = "ipv4_addr"  # arp armed: holds the VIP while armed
EGRESS_TYPE = "ipv4_addr"  # g-*-egress: holds the egress IP while active


@dataclass(frozen=True)
class SetSpec:
    type: str
    interval: bool = False
    timeout: bool = False  # dead-man sets: elements are refreshed, never diffed


@dataclass
class NftState:
    """Objects in ``table inet vipmgr`` / ``table arp vipmgr``; keys are (family, name)."""

    tables: set[str] = field(default_factory=set)
    sets: dict[tuple[str, str], SetSpec] = field(default_factory=dict)
    elements: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    counters: set[tuple[str, str]] = field(default_factory=set)
    chains: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # rule texts
    standby: dict[str, str] = field(default_factory=dict)  # member, not active: armed -> egress
    # the comment a set is created with: the gateway owning a g-*-egress set (set_owner)
    comments: dict[tuple[str, str], str] = field(default_factory=dict)

    def fingerprints(self, key: tuple[str, str]) -> tuple[str, ...]:
        return tuple(_fp(rule) for rule in self.chains.get(key, ()))


@dataclass
class ObservedNft:
    """What the kernel holds: like NftState but rules known only by fingerprint."""

    tables: set[str] = field(default_factory=set)
    sets: dict[tuple[str, str], SetSpec] = field(default_factory=dict)
    elements: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    counters: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    chains: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # fingerprints
    # sets' comments: a g-*-egress set's is the gateway it was created for (``set_owner``);
    # none on a set whose gateway name is too long for one, or left by an older vipmgr
    comments: dict[tuple[str, str], str] = field(default_factory=dict)


# nft keeps at most 128 characters of a comment; the name of a gateway whose set names
# are hashed (layout.ident) is longer than that, so its sets carry no comment
COMMENT_MAX = 128
_COMMENT_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def set_owner(gateway: str) -> str | None:
    """The comment recording ``gateway`` on its sets, when nft can hold it."""
    return gateway if len(gateway) <= COMMENT_MAX and _COMMENT_SAFE.match(gateway) else None


def _fp(rule: str) -> str:
    return hashlib.sha1(rule.encode()).hexdigest()[:16]


def desired(plan: NodePlan) -> NftState:
    """The nft objects ``plan`` needs on this node."""
    st = NftState()
    inet: dict[str, list[str]] = {"vm_steer": [], "gw_gate": [], "gw_snat": [], "gw_out": [],
                                  "gw_in": []}

    def add_set(fam: str, name: str, spec: SetSpec, elements: Iterable[str] | None) -> None:
        st.sets[(fam, name)] = spec
        if elements is not None:
            st.elements[(fam, name)] = frozenset(elements)

    if plan.gateways or plan.steering:
        add_set("inet", L.CLUSTER, SetSpec("ipv4_addr"), plan.in_cluster)
    outside = f"ip daddr != @{L.CLUSTER}"  # in-cluster traffic never uses the gateway
    for gw in plan.gateways:
        armed = L.gateway_armed(gw.name)
        add_set("inet", armed, SetSpec(ARMED_TYPE, timeout=True), None)
        st.counters.add(("inet", L.gateway_fenced(gw.name)))
        gate = L.gateway_chain(gw.name, "gate")
        inet["gw_gate"].append(f"jump {gate}")
        inet[gate] = []
        for sel in gw.selections:
            src, dst = L.policy_all(sel.policy), L.policy_dst(sel.policy)
            add_set("inet", src, SetSpec("ipv4_addr"), sel.sources)
            add_set("inet", dst, SetSpec("ipv4_addr", interval=True), sel.cidrs)
            inet[gate].append(f"ct original ip saddr @{src} ct original ip daddr @{dst} "
                              f"ct original ip daddr != @{L.CLUSTER} "
                              f"meta nfproto != @{armed} "
                              f"counter name \"{L.gateway_fenced(gw.name)}\" drop")
            # a packet conntrack calls invalid has no ct tuple for the rule above, and no NAT:
            # it would leave with the VM's address
            inet[gate].append(f"ip saddr @{src} ip daddr @{dst} ip daddr != @{L.CLUSTER} "
                              f"ct state invalid "
                              f"counter name \"{L.gateway_fenced(gw.name)}\" drop")
        # SNAT and the leak guard are ready on every member that could serve; a take
        # links them in (one jump each), so its cost does not grow with the policies
        role = gw.active or gw.role
        if role is not None:
            snat, out = L.gateway_chain(gw.name, "snat"), L.gateway_chain(gw.name, "out")
            misrouted = L.gateway_misrouted(gw.name)
            st.counters.add(("inet", misrouted))
            inet[snat], inet[out] = [], []
            for sel in gw.selections:
                match = (f"ip saddr @{L.policy_all(sel.policy)} "
                         f"ip daddr @{L.policy_dst(sel.policy)} {outside}")
                inet[snat].append(f"oifname \"{role.interface}\" {match} "
                                  f"snat ip to {role.egress_ip}")
                # no leak: what the node's routes send out of another interface would not be
                # SNATed (the node's own masquerade, or the VM's address): drop and count it
                inet[out].append(f"ct direction original {match} "
                                 f"oifname != \"{role.interface}\" counter name \"{misrouted}\" drop")
            if role.add_address:
                # a retransmission reaching a new active before its flows are injected is
                # dropped (retried), not reset; on every member, so no take can race it
                nostate = L.gateway_nostate(gw.name)
                st.counters.add(("inet", nostate))
                inet["gw_in"] += ctsync.vip_input_rules(role.egress_ip, nostate)
        if gw.active is None:
            st.standby[armed] = L.gateway_egress(gw.name)
            continue
        egress = L.gateway_egress(gw.name)
        add_set("inet", egress, SetSpec(EGRESS_TYPE), [gw.active.egress_ip])
        if (owner := set_owner(gw.name)) is not None:
            # the kernel's record of whose set this is: a set name is hashed for a long
            # gateway name, and a leave flush must name the gateway after its config is gone
            st.comments[("inet", egress)] = owner
        inet["gw_snat"].append(f"jump {L.gateway_chain(gw.name, 'snat')}")
        inet["gw_out"].append(f"jump {L.gateway_chain(gw.name, 'out')}")
    for sp in plan.steering:
        counter = L.gateway_failclosed(sp.name)
        st.counters.add(("inet", counter))
        for sel in sp.selections:
            src, dst = L.policy_local(sel.policy), L.policy_dst(sel.policy)
            add_set("inet", src, SetSpec("ipv4_addr"), sel.sources)
            add_set("inet", dst, SetSpec("ipv4_addr", interval=True), sel.cidrs)
            match = f"ip saddr @{src} ip daddr @{dst} {outside}"
            if sp.next_hop is None:
                inet["vm_steer"].append(f"{match} counter name \"{counter}\" drop")
            else:
                # flows NATed by this node before the VM was selected must not ride the
                # steering with the node's own address: drop them (the flush then clears them)
                inet["vm_steer"].append(f"{match} ct status snat counter name \"{counter}\" drop")
                inet["vm_steer"].append(f"{match} meta mark set meta mark & 0x{~L.MARK_MASK & 0xFFFFFFFF:08x} "
                                     f"| 0x{L.mark(sp.slot):08x}")
    if st.sets:
        st.tables.add("inet")
        for name, rules in inet.items():
            st.chains[("inet", name)] = tuple(rules)
    vips = [gw.active.egress_ip for gw in plan.active if gw.active and gw.active.add_address]
    if vips:
        st.tables.add("arp")
        add_set("arp", L.ARP_VIPS, SetSpec("ipv4_addr"), vips)
        add_set("arp", L.ARP_ARMED, SetSpec(ARP_ARMED_TYPE, timeout=True), None)
        st.chains[("arp", "vip_in")] = (f"arp daddr ip @{L.ARP_VIPS} arp daddr ip != @{L.ARP_ARMED} "
                                    "counter drop",)
        st.chains[("arp", "vip_out")] = (f"arp saddr ip @{L.ARP_VIPS} arp saddr ip != @{L.ARP_ARMED} "
                                     "counter drop",)
    return st


def parse(objects: list[dict[str, Any]]) -> ObservedNft:
    """``nft -j list table …`` objects (of our tables only) → ObservedNft."""
    ob = ObservedNft()
    for obj in objects:
        if "table" in obj:
            ob.tables.add(obj["table"]["family"])
        elif "set" in obj:
            s = obj["set"]
            key = (s["family"], s["name"])
            flags = s.get("flags", [])
            spec = SetSpec(s["type"], "interval" in flags, "timeout" in flags)
            ob.sets[key] = spec
            if s.get("comment"):
                ob.comments[key] = s["comment"]
            if not spec.timeout:
                ob.elements[key] = frozenset(_elements(s.get("elem", []), spec.interval))
        elif "counter" in obj:
            c = obj["counter"]
            ob.counters[(c["family"], c["name"])] = (c.get("packets", 0), c.get("bytes", 0))
        elif "chain" in obj:
            ob.chains.setdefault((obj["chain"]["family"], obj["chain"]["name"]), ())
        elif "rule" in obj:
            r = obj["rule"]
            key = (r["family"], r["chain"])
            ob.chains[key] = ob.chains.get(key, ()) + (r.get("comment", ""),)
    return ob


def _elements(raw: list[Any], interval: bool) -> Iterable[str]:
    if not interval:
        return [e["elem"]["val"] if isinstance(e, dict) else e for e in raw]
    nets: list[ipaddress.IPv4Network] = []
    for e in raw:
        if isinstance(e, str):
            nets.append(ipaddress.IPv4Network(e))
        elif "prefix" in e:
            nets.append(ipaddress.IPv4Network(f"{e['prefix']['addr']}/{e['prefix']['len']}"))
        elif "range" in e:
            lo, hi = (ipaddress.IPv4Address(a) for a in e["range"])
            nets.extend(ipaddress.summarize_address_range(lo, hi))
    return collapse_cidrs(str(n) for n in nets)


@dataclass
class Batch:
    """One nft transaction plus the human-readable changes it makes."""

    lines: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def diff(ob: ObservedNft, want: NftState) -> Batch:
    """The batch that makes ``ob`` into ``want``; empty when they already match."""
    b = Batch()
    t = L.TABLE
    for fam in sorted(want.tables - ob.tables):
        b.lines.append(f"add table {fam} {t}")
        b.changes.append(f"nft: add table {fam} {t}")
    for (fam, name), (typ, hook, prio) in CHAINS.items():
        if fam in want.tables and (fam, name) not in ob.chains:
            b.lines.append(f"add chain {fam} {t} {name} {{ type {typ} hook {hook} "
                           f"priority {prio}; policy accept; }}")
    for fam, name in sorted(k for k in want.chains if k not in CHAINS and k not in ob.chains):
        b.lines.append(f"add chain {fam} {t} {name}")  # a regular chain, reached by a jump
    for key, spec in sorted(want.sets.items()):
        fam, name = key
        if key in ob.sets and ob.sets[key] != spec:
            raise ValueError(f"set {fam} {t} {name} exists with another type/flags; "
                             "run 'vipmgr dataplane flush' to reset vipmgr's kernel state")
        if key not in ob.sets:
            flags = [f for f, on in (("interval", spec.interval), ("timeout", spec.timeout)) if on]
            body = f"type {spec.type};" + (f" flags {','.join(flags)};" if flags else "")
            if key in want.comments:
                body += f" comment \"{want.comments[key]}\";"
            b.lines.append(f"add set {fam} {t} {name} {{ {body} }}")
            b.changes.append(f"nft: add set {fam} {name}")
    for key in sorted(want.counters - set(ob.counters)):
        b.lines.append(f"add counter {key[0]} {t} {key[1]}")
    for key, elems in sorted(want.elements.items()):
        fam, name = key
        have = ob.elements.get(key, frozenset())
        if elems == have:
            continue
        if want.sets[key].interval:
            if have:
                b.lines.append(f"flush set {fam} {t} {name}")
            _add_elements(b, fam, name, sorted(elems))
            b.changes.append(f"nft: set {fam} {name} = {len(elems)} CIDRs (was {len(have)})")
            continue
        added, removed = sorted(elems - have), sorted(have - elems)
        _add_elements(b, fam, name, added)
        if removed:
            b.lines.append(f"delete element {fam} {t} {name} {{ {', '.join(removed)} }}")
        b.changes.append(f"nft: set {fam} {name} +{len(added)} -{len(removed)}")
    for key in sorted(k for k in want.chains if k[0] in want.tables):
        if want.fingerprints(key) == ob.chains.get(key, ()):
            continue
        fam, name = key
        if ob.chains.get(key):
            b.lines.append(f"flush chain {fam} {t} {name}")
        for rule in want.chains[key]:
            b.lines.append(f"add rule {fam} {t} {name} {rule} comment \"{_fp(rule)}\"")
        b.changes.append(f"nft: chain {fam} {name} = {len(want.chains[key])} rules")
    for fam, name in sorted(k for k in ob.chains if k not in CHAINS and k not in want.chains):
        if fam in want.tables:  # the jumps to it are gone from the rewritten base chains above
            b.lines += [f"flush chain {fam} {t} {name}", f"delete chain {fam} {t} {name}"]
            b.changes.append(f"nft: delete chain {fam} {name}")
    for armed, egress in sorted(want.standby.items()):
        if ("inet", egress) in ob.sets and ("inet", armed) in ob.sets:
            b.lines.append(f"flush set inet {t} {armed}")  # stepped down: disarm in the same batch
    for key in sorted(set(ob.sets) - set(want.sets)):
        if key[0] in want.tables:
            b.lines.append(f"delete set {key[0]} {t} {key[1]}")
            b.changes.append(f"nft: delete set {key[0]} {key[1]}")
    for key in sorted(set(ob.counters) - want.counters):
        if key[0] in want.tables:
            b.lines.append(f"delete counter {key[0]} {t} {key[1]}")
    for fam in sorted(ob.tables - want.tables):
        b.lines.append(f"delete table {fam} {t}")
        b.changes.append(f"nft: delete table {fam} {t}")
    return b


def _add_elements(b: Batch, fam: str, name: str, elems: list[str]) -> None:
    if elems:
        b.lines.append(f"add element {fam} {L.TABLE} {name} {{ {', '.join(elems)} }}")


@dataclass(frozen=True)
class ArmElement:
    """One set element of the dead-man, as both renderers see it: the nft text one
    (``ArmTarget.arm_lines``) and the netlink one (vipmgr.dataplane.nftarm)."""

    family: str  # "inet" or "arp"
    set_name: str
    key_type: str  # the set's type (how the key is encoded): ARMED_TYPE, EGRESS_TYPE, ...
    key: str  # in nft syntax: "ipv4", "192.0.2.100"
    timeout_ms: int | None = None  # None: a plain element (the guard)

    def nft(self) -> str:
        """``{ … }`` of an nft element command; ``expires`` also moves an existing
        element's expiry."""
        if self.timeout_ms is None:
            return f"{{ {self.key} }}"
        return f"{{ {self.key} timeout {self.timeout_ms}ms expires {self.timeout_ms}ms }}"


@dataclass(frozen=True)
class ArmTarget:
    """One active gateway's dead-man: the elements that keep it serving (``elements``).
    A refresh re-adds them guarded by the egress element (``guard``: deleted and re-added
    in the same transaction, which fails with ENOENT once a reconcile has withdrawn the
    gateway), i.e. only while the kernel still says this node serves the gateway
    (vipmgr.dataplane.nftarm). The reconcile arms unguarded: its own transaction adds
    the egress element."""

    gateway: str
    egress_ip: str
    vip: bool  # VirtualIPAddress mode: the ARP guard for the VIP is armed too
    max_seconds: float  # the gateway's deadmanTimeout: no arm or refresh lasts longer

    def guard(self) -> ArmElement:
        """The element present iff this node serves the gateway."""
        return ArmElement("inet", L.gateway_egress(self.gateway), EGRESS_TYPE, self.egress_ip)

    def elements(self, ms: int) -> list[ArmElement]:
        """What arming for ``ms`` milliseconds sets, in order."""
        out = [ArmElement("inet", L.gateway_armed(self.gateway), ARMED_TYPE, "ipv4", ms)]
        if self.vip:
            out.append(ArmElement("arp", L.ARP_ARMED, ARP_ARMED_TYPE, self.egress_ip, ms))
        return out

    def arm_lines(self, ms: int, guarded: bool = False) -> list[str]:
        """Arm for ``ms`` milliseconds, as nft commands; ``guarded``: the refresh's
        transaction (the guard first), as nftarm sends it over netlink."""
        lines = []
        if guarded:
            g = self.guard()
            lines += [f"delete element {g.family} {L.TABLE} {g.set_name} {g.nft()}",
                      f"add element {g.family} {L.TABLE} {g.set_name} {g.nft()}"]
        lines += [f"add element {e.family} {L.TABLE} {e.set_name} {e.nft()}"
                  for e in self.elements(ms)]
        return lines


def arm_targets(plan: NodePlan) -> dict[str, ArmTarget]:
    """The gateways ``plan`` serves here, as dead-man targets."""
    return {gw.name: ArmTarget(gw.name, gw.active.egress_ip, gw.active.add_address,
                               gw.active.deadman_timeout)
            for gw in plan.active if gw.active is not None}


class Refresh(enum.Enum):
    """What one dead-man refresh did; true only when it armed."""

    ARMED = "armed"
    LATE = "late"   # its deadline had passed before it ran (a loaded machine): not armed
    GONE = "gone"   # the gateway is not served here (withdrawn, or our table was flushed)

    def __bool__(self) -> bool:
        return self is Refresh.ARMED
