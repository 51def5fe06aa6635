"""Kubernetes label selectors: matchLabels, matchExpressions, and the ``-l`` string form.

Semantics follow Kubernetes exactly (users carry their intuition over from
``kubectl get -l``): all requirements are ANDed; ``NotIn`` and
``DoesNotExist`` match objects that lack the key; an empty selector matches
everything (so places where that would be an accident reject it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from vipmgr.resources.errors import Problems

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None."""
    if not isinstance(key, str) or not key:
        return "label key must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return f"label key {key!r} has an empty prefix before '/'"
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.match(prefix)):
        return (f"label key prefix {prefix!r} must be a DNS subdomain "
                "(lowercase letters, digits, '-' and '.', at most 253 characters)")
    if len(name) > 63 or not _NAME_RE.match(name):
        return (f"label key name {name!r} must be 1-63 characters of letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit")
    return None


def label_value_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid label value (may be empty), or None."""
    if not isinstance(value, str):
        return f"label value must be a string (quote it: \"{value}\")"
    if value == "":
        return None
    if len(value) > 63 or not _NAME_RE.match(value):
        return (f"label value {value!r} must be at most 63 characters of letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit")
    return None


def check_labels(labels: Any, path: str, problems: Problems) -> dict[str, str]:
    """Validate a labels mapping, recording problems under ``path``."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        problems.add(path, "must be a mapping of label keys to string values")
        return {}
    out: dict[str, str] = {}
    for key, value in labels.items():
        why = label_key_problem(key) if isinstance(key, str) else "label key must be a string"
        if why:
            problems.add(f"{path}.{key}", why)
            continue
        why = label_value_problem(value)
        if why:
            problems.add(f"{path}.{key}", why)
            continue
        out[key] = value
    return out


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.operator in ("In", "NotIn"):
            out["values"] = list(self.values)
        return out

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(self.values)})"


@dataclass(frozen=True)
class LabelSelector:
    """matchLabels plus matchExpressions, ANDed."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (all(labels.get(k) == v and k in labels for k, v in self.match_labels)
                and all(r.matches(labels) for r in self.match_expressions))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [r.to_dict() for r in self.match_expressions]
        return out

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts += [str(r) for r in self.match_expressions]
        return ",".join(parts) or "<everything>"

    @classmethod
    def from_match_labels(cls, labels: Mapping[str, str]) -> "LabelSelector":
        return cls(match_labels=tuple(sorted(labels.items())))

    @classmethod
    def parse_obj(cls, data: Any, path: str, problems: Problems) -> "LabelSelector":
        """From the ``{matchLabels, matchExpressions}`` form."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            problems.add(path, "must be a mapping with matchLabels and/or matchExpressions")
            return cls()
        for key in data:
            if key not in ("matchLabels", "matchExpressions"):
                problems.add(f"{path}.{key}", "unknown field; expected matchLabels or matchExpressions")
        labels = check_labels(data.get("matchLabels"), f"{path}.matchLabels", problems)
        exprs = []
        raw_exprs = data.get("matchExpressions") or []
        if not isinstance(raw_exprs, list):
            problems.add(f"{path}.matchExpressions", "must be a list of {key, operator, values}")
            raw_exprs = []
        for i, raw in enumerate(raw_exprs):
            req = _parse_requirement(raw, f"{path}.matchExpressions[{i}]", problems)
            if req is not None:
                exprs.append(req)
        return cls(tuple(sorted(labels.items())), tuple(exprs))

    @classmethod
    def parse_from_labels(cls, data: Any, path: str, problems: Problems) -> "LabelSelector":
        """From a bare ``{key: value}`` mapping (EgressGateway.spec.nodeSelector)."""
        return cls.from_match_labels(check_labels(data, path, problems))


def _parse_requirement(raw: Any, path: str, problems: Problems) -> Requirement | None:
    if not isinstance(raw, Mapping):
        problems.add(path, "must be a mapping with key, operator and values")
        return None
    for k in raw:
        if k not in ("key", "operator", "values"):
            problems.add(f"{path}.{k}", "unknown field; expected key, operator or values")
    key, op, values = raw.get("key"), raw.get("operator"), raw.get("values")
    ok = True
    why = label_key_problem(key) if isinstance(key, str) else "is required: the label key to test"
    if why:
        problems.add(f"{path}.key", why)
        ok = False
    if op not in OPERATORS:
        problems.add(f"{path}.operator", f"must be one of {', '.join(OPERATORS)}, not {op!r}")
        return None
    if op in ("In", "NotIn"):
        if not isinstance(values, list) or not values:
            problems.add(f"{path}.values", f"operator {op} needs a non-empty list of values")
            return None
        for j, v in enumerate(values):
            why = label_value_problem(v)
            if why:
                problems.add(f"{path}.values[{j}]", why)
                ok = False
    elif values:
        problems.add(f"{path}.values", f"operator {op} takes no values; remove the list")
        ok = False
    if not ok:
        return None
    return Requirement(key, op, tuple(str(v) for v in values) if values else ())


_TOKEN_SET_RE = re.compile(r"^\s*(!?)\s*([^\s=!,()]+)\s*(?:(==|=|!=)\s*([^\s,()]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def parse_selector_string(text: str) -> LabelSelector:
    """The ``kubectl -l`` syntax: ``a=b,c!=d,e in (x,y),f notin (z),g,!h``.

    Raises ValueError with the offending term and the accepted forms.
    """
    terms = _split_terms(text)
    labels: dict[str, str] = {}
    exprs: list[Requirement] = []
    for term in terms:
        m = _TOKEN_SET_RE.match(term)
        if not m:
            raise ValueError(f"selector term {term!r} not understood; use key=value, key!=value, "
                             "key in (a,b), key notin (a,b), key or !key")
        neg, key, eq_op, eq_val, set_op, set_vals = m.groups()
        why = label_key_problem(key)
        if why:
            raise ValueError(f"selector term {term!r}: {why}")
        if neg and (eq_op or set_op):
            raise ValueError(f"selector term {term!r}: '!' only goes with a bare key (!key)")
        if eq_op in ("=", "=="):
            _check_value(term, eq_val)
            labels[key] = eq_val
        elif eq_op == "!=":
            _check_value(term, eq_val)
            exprs.append(Requirement(key, "NotIn", (eq_val,)))
        elif set_op:
            values = tuple(v.strip() for v in set_vals.split(",") if v.strip())
            for v in values:
                _check_value(term, v)
            if not values:
                raise ValueError(f"selector term {term!r}: the set needs at least one value")
            exprs.append(Requirement(key, "In" if set_op == "in" else "NotIn", values))
        else:
            exprs.append(Requirement(key, "DoesNotExist" if neg else "Exists"))
    return LabelSelector(tuple(sorted(labels.items())), tuple(exprs))


def _check_value(term: str, value: str) -> None:
    why = label_value_problem(value)
    if why:
        raise ValueError(f"selector term {term!r}: {why}")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]
