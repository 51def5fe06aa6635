"""Failover timers and the relations between them that keep "at most one active" true.

Every takeover path goes through the same steps: a standby stops hearing the
active for the suspect time ``S = suspectAfter * advertInterval``, posts a
challenge in etcd and waits the challenge window ``W`` for an answer. So no
standby can take authority sooner than ``S + W`` after it last heard the
holder, nor sooner than ``W`` after the holder last saw etcd free of
unanswered challenges. The holder keeps its datapath only ``fenceDeadline``
past such evidence, and programs kernel state that expires by itself within
``deadmanTimeout``; both must end before ``S + W`` (resp. ``W``) even when the
two clocks drift apart by ``maxClockDrift``. ``problems()`` rejects any
configuration where that chain breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from vipmgr.config.durations import format_duration, parse_duration
from vipmgr.config.errors import ConfigError


@dataclass(frozen=True)
class Timers:
    """Seconds unless said otherwise. Defaults give a crash failover well under 300 ms."""

    advert_interval: float = 0.020
    standby_advert_interval: float = 0.050
    suspect_after: int = 4  # missed active adverts before "suspect"
    challenge_window: float = 0.130
    fence_deadline: float = 0.120
    confirm_lead: float = 0.080  # confirm through etcd this long before evidence runs out
    deadman_timeout: float = 0.100
    lease_ttl: int = 2  # whole seconds, etcd's granularity; the slow backstop only
    etcd_timeout: float = 0.050  # one etcd request; past it the node counts as cut off
    max_clock_drift: float = 0.01  # relative rate difference between any two clocks

    @property
    def suspect_time(self) -> float:
        return self.suspect_after * self.advert_interval

    @property
    def drift_factor(self) -> float:
        """How much longer a span may look on one clock than the same span on another."""
        return (1 + self.max_clock_drift) / (1 - self.max_clock_drift)

    @property
    def listen_time(self) -> float:
        """How long a node that just started (or just began hearing a peer) listens before
        it trusts its view of who outranks whom: suspectAfter standby adverts, the same
        horizon within which a standby peer counts as heard."""
        return self.suspect_after * self.standby_advert_interval

    @property
    def liveness_bound(self) -> float:
        """After every fault heals, an eligible node is active within this (lease expiry
        plus one suspect-challenge round plus a few etcd round trips; a node that restarts
        at the heal listens for ``listen_time`` first)."""
        return self.lease_ttl + 2 * (self.suspect_time + self.challenge_window) \
            + 8 * self.etcd_timeout + 2 * self.standby_advert_interval + self.listen_time

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "spec.failover.timers") -> "Timers":
        """Parse camelCase keys; durations as "20ms"/"1.5s"/seconds. Raises ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError([(path, "must be a mapping of timer names to values, e.g. "
                                      "{advertInterval: 20ms}")])
        problems: list[tuple[str, str]] = []
        values: dict[str, Any] = {}
        known = {_camel(f.name): f for f in fields(cls)}
        for key, raw in data.items():
            field_path = f"{path}.{key}"
            spec = known.get(key)
            if spec is None:
                problems.append((field_path, f"unknown timer; known: {', '.join(sorted(known))}"))
            elif spec.name in _COUNTS:
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                    problems.append((field_path, f"must be a whole number >= 1, not {raw!r}"))
                else:
                    values[spec.name] = raw
            elif spec.name == "max_clock_drift":
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) \
                        or not 0 <= raw < 0.5:
                    problems.append((field_path, f"must be a fraction like 0.01 (1%), "
                                                 f"not {raw!r}"))
                else:
                    values[spec.name] = float(raw)
            else:
                try:
                    values[spec.name] = parse_duration(raw, field_path)
                except ConfigError as exc:
                    problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of from_mapping, with durations spelled "20ms"."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in _COUNTS and f.name != "max_clock_drift":
                value = format_duration(value)
            out[_camel(f.name)] = value
        return out

    def problems(self, path: str = "spec.failover.timers") -> list[tuple[str, str]]:
        """Relations that, if broken, could allow two actives or constant flapping."""
        out: list[tuple[str, str]] = []
        p = lambda name: f"{path}.{_camel(name)}"  # noqa: E731
        for f in fields(self):
            if f.name not in ("max_clock_drift",) and getattr(self, f.name) <= 0:
                out.append((p(f.name), "must be greater than zero"))
        if out:
            return out
        s, w, k = self.suspect_time, self.challenge_window, self.drift_factor
        if self.suspect_after < 2:
            out.append((p("suspect_after"), "must be at least 2: one lost advert must not "
                                            "make a standby suspect the active"))
        if self.standby_advert_interval < self.advert_interval:
            out.append((p("standby_advert_interval"), "must not be shorter than "
                        f"advertInterval ({format_duration(self.advert_interval)})"))
        if self.standby_advert_interval >= s + self.fence_deadline:
            out.append((p("standby_advert_interval"),
                        f"must be shorter than suspect time + fenceDeadline "
                        f"({format_duration(s + self.fence_deadline)}) so the active keeps "
                        "proof from its peers between their adverts"))
        if (s + self.fence_deadline) * k >= s + w:
            out.append((p("fence_deadline"),
                        f"too long: with drift {self.max_clock_drift:g} the active could still "
                        f"serve when a standby takes over; set it below "
                        f"{int(max(0.0, (s + w) / k - s) * 1000)}ms or raise "
                        "challengeWindow"))
        if self.deadman_timeout * k >= s + w:
            out.append((p("deadman_timeout"),
                        f"must be shorter than suspect time + challengeWindow "
                        f"({format_duration(s + w)}) with drift margin, or a frozen active's "
                        "kernel could still answer for the address when a standby takes over"))
        if self.deadman_timeout < 2 * self.advert_interval:
            out.append((p("deadman_timeout"),
                        f"must be at least 2 x advertInterval "
                        f"({format_duration(2 * self.advert_interval)}): the active refreshes "
                        "kernel state once per advert"))
        if self.etcd_timeout >= w:
            out.append((p("etcd_timeout"), "must be shorter than challengeWindow, or an "
                                            "answer cannot arrive in time"))
        if self.confirm_lead <= self.etcd_timeout:
            out.append((p("confirm_lead"), f"must be longer than etcdTimeout "
                        f"({format_duration(self.etcd_timeout)}), or the active fences itself "
                        "while a confirmation etcd answers in time is still in flight"))
        if self.fence_deadline - self.confirm_lead < self.advert_interval:
            out.append((p("confirm_lead"), f"must be at most fenceDeadline - advertInterval "
                        f"({format_duration(self.fence_deadline - self.advert_interval)}): "
                        "an active living on etcd confirms one per advert at most"))
        if self.lease_ttl * 1.0 < 2 * (s + w):
            out.append((p("lease_ttl"), "must be at least twice suspect time + challengeWindow: "
                                        "lease expiry is the slow backstop"))
        if not 0 <= self.max_clock_drift < 0.2:
            out.append((p("max_clock_drift"), "must be a fraction from 0 to 0.2"))
        return out


_COUNTS = ("suspect_after", "lease_ttl")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join("TTL" if part == "ttl" else part.title() for part in rest)
