"""What every store module shares about keys and values: etcd prefix ranges, the name a
key carries after its prefix, and reading a stored JSON value with an error that names
the key instead of a traceback.

Light on purpose (no etcd client, no resource models): the simulator, the CLI and the
agent all import it.
"""

from __future__ import annotations

import json
from typing import Any


class CorruptObjectError(ValueError):
    """A stored value vipmgr cannot read (written by something other than vipmgr, or by a
    version that wrote another format); the message names the key and the fix."""


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for ``prefix``: the first key after every key starting with it
    (the last byte below 0xff incremented, what follows it dropped; ``b"\\0"``, every key
    from ``prefix`` on, when there is none)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"


def key_suffix(key: bytes | str, prefix: str) -> str:
    """What a key read under ``prefix`` names after it (``{prefix}authority/egw`` -> ``egw``)."""
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(prefix):
        raise ValueError(f"key {text!r} is not under {prefix!r}")
    return text[len(prefix):]


def load_json(raw: bytes | str, where: str, what: str = "value",
              fix: str = "delete the key with etcdctl") -> Any:
    """``raw`` as JSON; a value that is not JSON raises CorruptObjectError naming ``where``."""
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CorruptObjectError(f"stored {what} at {where} is not JSON ({exc}); {fix}") from None


def load_object(raw: bytes | str, where: str, what: str = "value",
                fix: str = "delete the key with etcdctl") -> dict[str, Any]:
    """``raw`` as a JSON object (CorruptObjectError for anything else)."""
    data = load_json(raw, where, what, fix)
    if not isinstance(data, dict):
        raise CorruptObjectError(f"stored {what} at {where} is not a JSON object "
                                 f"({type(data).__name__}); {fix}")
    return data
