"""The named guards: conditions under which a move is taken, each stated once so that
every site that takes (or schedules) the move asks the same question.

What we hear is in ``peers.py``; these combine it with etcd's view and the policy.
Only reads state.
"""

from __future__ import annotations


class Guards:
    """Read-only predicates shared by the standby, holder and etcd-result sides."""

    def _authority_free(self) -> bool:
        """Nobody holds the authority and its term is free to take: never held, or
        vacated (released or deposed). An expired lease (key absent, term still held)
        is not free: taking over then needs suspicion, a challenge and the window."""
        view = self.view
        return view.epoch == 0 and (view.vacated or view.term_rev == 0)

    def _may_preempt(self) -> bool:
        """Preempt (or rebalance) is on, we hear the active, it is worse placed than we
        are, and no eligible standby we hear outranks us (that one asks first)."""
        if not (self.cfg.preempt or self.cfg.rebalance) or self._active_node not in self._peers:
            return False
        active = self._peers[self._active_node].advert
        return self.cfg.priority > active.priority and self._rank() == 0

    def _vrrp_policy(self) -> bool:
        """``onEtcdLoss: vrrp``: serving without etcd is allowed (rule 13)."""
        return self.cfg.on_etcd_loss == "vrrp"

    def _etcd_lost(self) -> bool:
        """The VRRP fallback applies: the policy allows it and etcd does not answer us."""
        return self._vrrp_policy() and not self.etcd_ok

    def _may_fall_back(self) -> bool:
        """Etcd lost and no eligible peer we hear reaches it: that peer would take over
        through etcd instead (a fallback next to an etcd path is a dual active)."""
        return self._etcd_lost() and not self._etcd_peer()
