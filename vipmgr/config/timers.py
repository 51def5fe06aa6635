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

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Iterable, Mapping

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

    def problems(self, path: str = "spec.failover.timers",
                 written: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """Relations that, if broken, could allow two actives or constant flapping.

        ``written`` are the camelCase names the user set (None: all of them). Each broken
        relation is blamed on a field the user wrote, with a value that makes every
        relation hold; unwritten fields keep their defaults and are never blamed.
        """
        names = [f.name for f in fields(self)]
        mine = set(names) if written is None else {_snake(w) for w in written} & set(names)
        p = lambda name: f"{path}.{_camel(name)}"  # noqa: E731
        zero = [n for n in names if n in mine and n != "max_clock_drift" and getattr(self, n) <= 0]
        if zero:
            return [(p(n), f"must be greater than zero, e.g. {_show(Timers(), n)} (the default)")
                    for n in zero]
        blamed: dict[str, list[str]] = {}
        suggestion: dict[str, str] = {}
        for rule in _RULES:
            if rule.holds(self):
                continue
            candidates = [n for n in (rule.blame, *rule.fields) if n in mine]
            fixes = {n: self._fix(n) for n in dict.fromkeys(candidates)}
            name = next((n for n in fixes if fixes[n] is not None), candidates[0])
            blamed.setdefault(name, []).append(rule.text(self, mine))
            if fixes.get(name) is not None:
                suggestion[name] = fixes[name]
        out = []
        for name, reasons in blamed.items():
            fix = (f"use {suggestion[name]}" if name in suggestion else
                   "no value of it alone fits the other timers: change them together")
            more = f"; and {len(reasons) - 2} more" if len(reasons) > 2 else ""
            out.append((p(name), f"{_show(self, name)} does not fit: {fix} "
                                 f"({'; '.join(reasons[:2])}{more})"))
        return out

    def _fix(self, name: str) -> str | None:
        """The candidate value of ``name`` nearest to its current one for which every
        relation holds (the other fields unchanged), spelled as the user writes it."""
        current = getattr(self, name)
        candidates = _CANDIDATES.get(name, _DURATIONS)
        for value in sorted(candidates, key=lambda v: abs(math.log((v or 1e-9) / (current or 1e-9)))):
            trial = replace(self, **{name: value})
            if all(rule.holds(trial) for rule in _RULES):
                return _show(trial, name)
        return None


@dataclass(frozen=True)
class _Rule:
    """One relation: the fields it reads, whether it holds, and how to say it with values."""

    blame: str  # the field blamed when the user wrote every field
    fields: tuple[str, ...]
    holds: Callable[[Timers], bool]
    says: str  # str.format over {name} -> value as shown, {why}

    def text(self, t: Timers, written: set[str]) -> str:
        said = self.says.format(**{_camel(n): _show(t, n) for n in _FIELD_NAMES})
        defaults = [_camel(n) for n in self.fields if n not in written]
        return said + (f" [{', '.join(defaults)}: default]" if defaults else "")


def _show(t: Timers, name: str) -> str:
    value = getattr(t, name)
    if name in _COUNTS:
        return str(value)
    if name == "max_clock_drift":
        return f"{value:g}"
    return format_duration(value)


_COUNTS = ("suspect_after", "lease_ttl")
_FIELD_NAMES = tuple(f.name for f in fields(Timers))

S_PLUS_W = "suspectAfter x advertInterval + challengeWindow ({suspectAfter} x {advertInterval} + {challengeWindow})"
_RULES = (
    _Rule("suspect_after", ("suspect_after",), lambda t: t.suspect_after >= 2,
          "suspectAfter ({suspectAfter}) must be at least 2, or one lost advert makes a standby "
          "suspect the active"),
    _Rule("standby_advert_interval", ("standby_advert_interval", "advert_interval"),
          lambda t: t.standby_advert_interval >= t.advert_interval,
          "standbyAdvertInterval ({standbyAdvertInterval}) must not be shorter than "
          "advertInterval ({advertInterval})"),
    _Rule("standby_advert_interval", ("standby_advert_interval", "suspect_after",
                                      "advert_interval", "fence_deadline"),
          lambda t: t.standby_advert_interval < t.suspect_time + t.fence_deadline,
          "standbyAdvertInterval ({standbyAdvertInterval}) must be shorter than suspectAfter x "
          "advertInterval + fenceDeadline ({suspectAfter} x {advertInterval} + {fenceDeadline}), "
          "so the active keeps proof from its peers between their adverts"),
    _Rule("fence_deadline", ("fence_deadline", "suspect_after", "advert_interval",
                             "challenge_window", "max_clock_drift"),
          lambda t: (t.suspect_time + t.fence_deadline) * t.drift_factor
          < t.suspect_time + t.challenge_window,
          "fenceDeadline ({fenceDeadline}) must end before a standby can take over, "
          "within challengeWindow ({challengeWindow}) with clock drift {maxClockDrift}; "
          "suspect time is {suspectAfter} x {advertInterval}"),
    _Rule("deadman_timeout", ("deadman_timeout", "suspect_after", "advert_interval",
                              "challenge_window", "max_clock_drift"),
          lambda t: t.deadman_timeout * t.drift_factor < t.suspect_time + t.challenge_window,
          "deadmanTimeout ({deadmanTimeout}) must be shorter than " + S_PLUS_W + " with clock "
          "drift {maxClockDrift}, or a frozen active's kernel could still answer for the "
          "address when a standby takes over"),
    _Rule("deadman_timeout", ("deadman_timeout", "advert_interval"),
          lambda t: t.deadman_timeout >= 2 * t.advert_interval,
          "deadmanTimeout ({deadmanTimeout}) must be at least 2 x advertInterval "
          "({advertInterval}): the active refreshes kernel state once per advert"),
    _Rule("etcd_timeout", ("etcd_timeout", "challenge_window"),
          lambda t: t.etcd_timeout < t.challenge_window,
          "etcdTimeout ({etcdTimeout}) must be shorter than challengeWindow "
          "({challengeWindow}), or an answer cannot arrive in time"),
    _Rule("confirm_lead", ("confirm_lead", "etcd_timeout"),
          lambda t: t.confirm_lead > t.etcd_timeout,
          "confirmLead ({confirmLead}) must be longer than etcdTimeout ({etcdTimeout}), or the "
          "active fences itself while a confirmation etcd answers in time is in flight"),
    _Rule("confirm_lead", ("confirm_lead", "fence_deadline", "advert_interval"),
          lambda t: t.fence_deadline - t.confirm_lead >= t.advert_interval,
          "confirmLead ({confirmLead}) + advertInterval ({advertInterval}) must not exceed "
          "fenceDeadline ({fenceDeadline}): an active living on etcd confirms once per advert"),
    _Rule("lease_ttl", ("lease_ttl", "suspect_after", "advert_interval", "challenge_window"),
          lambda t: t.lease_ttl >= 2 * (t.suspect_time + t.challenge_window),
          "leaseTTL ({leaseTTL}) must be at least twice " + S_PLUS_W + ": lease expiry is the "
          "slow backstop"),
    _Rule("max_clock_drift", ("max_clock_drift",), lambda t: 0 <= t.max_clock_drift < 0.2,
          "maxClockDrift ({maxClockDrift}) must be a fraction from 0 to 0.2"),
)

# Values suggested as fixes: round numbers, nearest to what the user wrote.
_DURATIONS = tuple(sorted({m * 10.0 ** e / 1000 for e in range(0, 5)
                           for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)} - {0}))
_CANDIDATES = {
    "suspect_after": tuple(range(2, 101)),
    "lease_ttl": tuple(range(1, 3601)),
    "max_clock_drift": (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15),
}


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel.replace("TTL", "Ttl"))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join("TTL" if part == "ttl" else part.title() for part in rest)
