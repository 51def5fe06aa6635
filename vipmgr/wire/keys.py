"""Heartbeat HMAC keys: read from a file, one sending key plus one more accepted.

Two keys at once make rotation hitless: deploy ``new`` as the second line
everywhere (still sending with ``old``), then swap the lines everywhere, then
drop ``old``. At every step each sender's key is accepted by every receiver.

File format (text, UTF-8)::

    # comments and blank lines are ignored
    hex:00112233445566778899aabbccddeeff...     <- first key: used to send
    base64:q83vASNFZ4mrze8BI0VniQ==...          <- optional: also accepted

Each key is at least 16 bytes once decoded; at most two keys.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path

KEY_MIN_BYTES = 16
KEYS_MAX = 2
HMAC_LEN = 32


class KeyFileError(ValueError):
    """The key file is unreadable as keys; the message names the line."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Keys in preference order: ``keys[0]`` signs, every key verifies."""

    keys: tuple[bytes, ...] = ()
    require_auth: bool = False

    def __post_init__(self) -> None:
        if len(self.keys) > KEYS_MAX:
            raise KeyFileError(f"at most {KEYS_MAX} keys, got {len(self.keys)}")
        if any(len(k) < KEY_MIN_BYTES for k in self.keys):
            raise KeyFileError(f"every key must be at least {KEY_MIN_BYTES} bytes")
        if self.require_auth and not self.keys:
            raise KeyFileError("require_auth needs at least one key")

    @property
    def signing_key(self) -> bytes | None:
        return self.keys[0] if self.keys else None

    def sign(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` with the signing key: the tag any agent-to-agent channel
        appends (heartbeats, and replication when it comes; docs/security.md)."""
        if not self.keys:
            raise ValueError("no key to sign with")
        return hmac.digest(self.keys[0], data, "sha256")

    def verify(self, data: bytes, mac: bytes) -> int | None:
        """Index of the key whose HMAC of ``data`` is ``mac`` (constant-time compare), or None."""
        for i, key in enumerate(self.keys):
            if hmac.compare_digest(hmac.digest(key, data, "sha256"), mac):
                return i
        return None


def channel_tag(label: str) -> bytes:
    """What a non-heartbeat channel prefixes to the bytes it MACs. It starts with ``v``
    (0x76), never 0x31 like a heartbeat's VRRP header, so a tag from one channel never
    verifies a message of another or a heartbeat (domain separation)."""
    if not label or "\0" in label:
        raise ValueError("a channel label is a non-empty string without NUL")
    return b"vipmgr/" + label.encode() + b"\0"


def seal(ring: KeyRing, label: str, payload: bytes) -> bytes:
    """``payload`` + its 32-byte HMAC for channel ``label``, with the heartbeat keys: any
    agent-to-agent channel (conntrack replication, …) uses this, so it follows the same
    rotation with no key of its own. Replay protection (a sequence in the payload) is the
    channel's."""
    return payload + ring.sign(channel_tag(label) + payload)


def unseal(ring: KeyRing, label: str, data: bytes) -> bytes | None:
    """The payload of a :func:`seal` ed message, or None when it does not verify (check
    before reading any of it)."""
    if len(data) < HMAC_LEN or not ring.keys:
        return None
    payload, mac = data[:-HMAC_LEN], data[-HMAC_LEN:]
    return payload if ring.verify(channel_tag(label) + payload, mac) is not None else None


def parse_keys(text: str, *, source: str = "<keys>") -> tuple[bytes, ...]:
    keys: list[bytes] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scheme, sep, value = line.partition(":")
        try:
            if sep and scheme == "hex":
                key = bytes.fromhex(value)
            elif sep and scheme == "base64":
                key = base64.b64decode(value, validate=True)
            else:
                raise KeyFileError(f"{source}:{lineno}: expected 'hex:…' or 'base64:…'")
        except (ValueError, binascii.Error) as exc:
            raise KeyFileError(f"{source}:{lineno}: cannot decode key: {exc}") from exc
        keys.append(key)
    return tuple(keys)


def load_keyring(path: str | Path, *, require_auth: bool = False) -> KeyRing:
    """Read a key file (format in the module docstring) into a :class:`KeyRing`."""
    p = Path(path)
    return KeyRing(parse_keys(p.read_text(encoding="utf-8"), source=str(p)), require_auth)
