"""What a node hears from its peers, and the predicates built on it.

Hearing decides everything a standby does without etcd: whether the active is
silent (suspicion), who outranks us (the stagger and start-up placement), whether
a VRRP fallback active may still be effective (rule 13 of docs/architecture.md),
and whether a peer reaches etcd (the handover of rule 14). Only reads state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vipmgr.core.messages import ROLE_ACTIVE, Advert
from vipmgr.core.placement import rank_key
from vipmgr.core.roles import Role


NEVER = -math.inf


@dataclass(slots=True)
class _Peer:
    advert: Advert
    heard_at: float
    since: float            # start of the current unbroken run of hearing it
    echo: float = NEVER     # latest stamp of ours this peer echoed while we were active


class Hearing:
    """Read-only predicates over the peers an Election has heard."""

    def _silent_for(self, span: float) -> bool:
        """No active heard for ``span``; compared the way the timers add up (heard + span),
        so a timer set for that instant finds it true when it fires."""
        return self._now >= self._active_heard_at + span

    def _preempting(self) -> bool:
        """Our challenge is a preempt request: it expects to hear the active."""
        return self.role is Role.CHALLENGING and self._challenge is not None \
            and self._challenge[2]

    def _heard_peers(self) -> tuple[str, ...]:
        """The members heard within ``suspectAfter`` of their own advert intervals: the
        interval each advert carries (the sender's period), else ours for its role."""
        now, k, t = self._now, self.cfg.timers.suspect_after, self.cfg.timers
        out = []
        peers = self._peers
        for name in self._others:
            peer = peers.get(name)
            if peer is None:
                continue
            interval = peer.advert.interval or (
                t.advert_interval if peer.advert.role == ROLE_ACTIVE
                else t.standby_advert_interval)
            if now - peer.heard_at < k * interval:
                out.append(name)
        return tuple(out)

    def _best_peer(self) -> str | None:
        """The best-ranked eligible standby we hear: the natural switchover target."""
        heard = set(self._heard_peers())
        best = min((rank_key(p.advert.priority, name) for name, p in self._peers.items()
                    if name in heard and p.advert.eligible), default=None)
        return best[1] if best else None

    def _outranked_by(self) -> list[_Peer]:
        """The eligible standbys we hear that rank better than us."""
        mine = rank_key(self.cfg.priority, self.cfg.node)
        now, horizon, peers = self._now, self._listen, self._peers
        return [p for p in (peers[m] for m in self._others if m in peers)
                if now - p.heard_at < horizon and p.advert.eligible
                and p.advert.role != ROLE_ACTIVE
                and rank_key(p.advert.priority, p.advert.node) < mine]

    def _rank(self, via_etcd: bool = False) -> int:
        """0 when no eligible standby we hear outranks us: it acts first, others skew.
        ``via_etcd``: for a challenge, peers that cannot reach etcd do not count (they
        cannot challenge; e.g. the holder that handed over because it is cut off)."""
        return sum(1 for p in self._outranked_by() if p.advert.etcd_ok or not via_etcd)

    def _listen_until(self, vacated_by: str | None) -> float:
        """Placement needs ranks: act on free authority only once we know who outranks
        us (every member heard since Start, else the listen time since Start; and the
        listen time since our own priority last changed: gateways created in a batch
        reach the agents one by one, so placement moves while it settles), and give
        a better-ranked peer we only just began to hear (it may have just started) the
        same listen time to learn its own rank and act first — unless it is the one
        that just gave the authority up (it lets others go first)."""
        until = NEVER if all(m in self._peers for m in self._others) \
            else self._started_at + self._listen
        return max([until, self._ranks_since + self._listen]
                   + [p.since + self._listen for p in self._outranked_by()
                      if p.advert.node != vacated_by])

    def _awaits_first_choice(self) -> bool:
        """The placement's first choice is another member we have not heard yet, or heard
        but not eligible yet: it may have joined the gateway a moment after us (its agent
        was busy), or be advertising before its own first health and dataplane checks
        passed, so a gateway never held waits a bounded time for it before going
        elsewhere."""
        first = self.cfg.first_choice
        if first is None or first == self.cfg.node or first not in self._others:
            return False
        return first not in self._heard_peers() or not self._peers[first].advert.eligible

    def _withdrawn_holder(self, adv: Advert) -> bool:
        """A standby advert, newer than its last active one, from the node we followed as
        the etcd holder, which cannot reach etcd (etcd-cut handover, or fenced)."""
        view = self.view
        return adv.node == self._active_node and adv.stamp > self._active_stamp \
            and adv.epoch > 0 and not adv.etcd_ok and adv.node in (view.holder, view.term_node)

    def _etcd_peer(self) -> str | None:
        """An eligible standby we hear that reaches etcd: it can take over through etcd,
        so neither a VRRP fallback nor an active cut from etcd is needed."""
        peers = self._peers
        for name in self._heard_peers():
            adv = peers[name].advert
            if adv.etcd_ok and adv.eligible and adv.role != ROLE_ACTIVE:
                return name
        return None

    def _fallback_active(self) -> str | None:
        """A peer serving as VRRP fallback (its latest advert: active, not etcd-backed)
        whose kernel state may still be live. The one guard of every path by which this
        node becomes effective through etcd (acquire after free authority or a depose,
        confirm after a fence or an adopt): the etcd path is safe against etcd-backed
        holders by the evidence rule, but a fallback active follows no evidence, so we
        let it yield first (it does when etcd answers it or it hears an etcd active)."""
        now, horizon = self._now, self._fallback_horizon
        for name, peer in self._peers.items():
            adv = peer.advert
            if adv.role == ROLE_ACTIVE and not adv.etcd_ok and name != self.cfg.node \
                    and now < peer.heard_at + horizon:
                return name
        return None

    def _fallback_gone_at(self) -> float:
        """When no fallback active we heard so far can still be effective."""
        return max((p.heard_at + self._fallback_horizon for p in self._peers.values()
                    if p.advert.role == ROLE_ACTIVE and not p.advert.etcd_ok), default=NEVER)

    def _vrrp_outranked_by(self, adv: Advert) -> bool:
        """A VRRP fallback active yields to an etcd-backed active or a better VRRP master."""
        if adv.epoch > 0 and adv.etcd_ok:
            return True
        return rank_key(adv.priority, adv.node) < rank_key(self.cfg.priority, self.cfg.node)
