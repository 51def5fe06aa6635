"""The heartbeat key document: which key signs and which are accepted when (pure)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vipmgr.store.keys import (ACTIVATION_DELAY, OVERLAP, ROTATE_EVERY, SECRET_BYTES, KeyDoc,
                               KeyDocError, new_key)

T0 = 1_764_628_200.0


def test_first_key_signs_at_once_with_auth_required():
    doc = KeyDoc(new_key(T0, T0))
    ring = doc.ring(T0)
    assert ring.keys == (doc.current.secret,) and ring.require_auth
    assert len(doc.current.secret) == SECRET_BYTES and doc.current.id.startswith("20251201T")
    assert doc.next_change(T0) is None and doc.rotation_due() == T0 + ROTATE_EVERY


def test_rotation_accepts_the_new_key_first_signs_it_later_then_retires_the_old():
    old = KeyDoc(new_key(T0, T0))
    now = T0 + 1000
    doc = old.rotated(now)
    new, prev = doc.current.secret, old.current.secret
    act, ret = now + ACTIVATION_DELAY, now + ACTIVATION_DELAY + OVERLAP
    assert (doc.current.activates, doc.previous.retires) == (act, ret)
    assert doc.ring(now).keys == (prev, new)              # old signs, new already accepted
    assert doc.next_change(now) == act
    assert doc.ring(act).keys == (new, prev)              # new signs, old still accepted
    assert doc.next_change(act) == ret
    assert doc.ring(ret).keys == (new,)                   # old retired
    assert doc.next_change(ret) is None
    assert doc.signing(act - 0.001).id == old.current.id and doc.signing(act).id == doc.current.id


def test_a_second_rotation_waits_until_the_previous_key_retired():
    doc = KeyDoc(new_key(T0, T0)).rotated(T0 + 10)
    why = doc.rotation_blocked(T0 + 10 + ACTIVATION_DELAY)
    assert why and doc.previous.id in why and "rotate after" in why
    assert doc.rotation_blocked(doc.previous.retires) is None


def test_json_round_trip_and_errors_name_the_field():
    doc = KeyDoc(new_key(T0, T0)).rotated(T0 + 5, rotate_every=3600)
    assert KeyDoc.from_json(doc.to_json(), "k") == doc
    assert "secret" not in doc.current.public()
    good = json.loads(doc.to_json())
    cases = [(b"{", "not JSON"), (b"[]", "format must be 1"),
             ({"rotateEvery": -1}, "rotateEvery"),
             ({"current": None}, "current must be an object"),
             ({"current": {**good["current"], "id": ""}}, "current.id"),
             ({"current": {**good["current"], "secret": "c2hvcnQ="}}, "current.secret"),
             ({"previous": {**good["previous"], "activates": "soon"}}, "previous.activates")]
    for patch, words in cases:
        raw = patch if isinstance(patch, bytes) else json.dumps({**good, **patch}).encode()
        with pytest.raises(KeyDocError, match=words) as err:
            KeyDoc.from_json(raw, "/vipmgr/keys/heartbeat")
        assert str(err.value).startswith("/vipmgr/keys/heartbeat")


def test_every_key_is_new_randomness():
    keys = {new_key(T0, T0) for _ in range(50)}
    assert len({k.secret for k in keys}) == len({k.id for k in keys}) == 50
    assert dataclasses.replace(next(iter(keys)), retires=1.0).retires == 1.0


def test_agent_modes_file_and_insecure_install_at_once(tmp_path, caplog):
    from types import SimpleNamespace

    from vipmgr.agent.keys import HeartbeatKeys
    from vipmgr.wire.codec import Encoder
    from vipmgr.wire.receiver import Receiver
    path = tmp_path / "hb.keys"
    path.write_text("hex:" + "ab" * 32 + "\n")
    enc, rx, states = Encoder(), Receiver("gw-a", {}), []
    keys = HeartbeatKeys("gw-a", "/vipmgr", enc, rx, on_state=lambda *s: states.append(s))
    keys.apply_config(SimpleNamespace(auth_key_file=str(path), require_auth=True,
                                      heartbeat_insecure=False))
    assert (keys.mode, enc.signing_key, rx.keyring.require_auth) == ("file", b"\xab" * 32, True)
    keys.apply_config(SimpleNamespace(auth_key_file=str(path), require_auth=False,
                                      heartbeat_insecure=False))
    assert "unsigned ones are believed" in caplog.text     # keys, yet forgeable: said loudly
    keys.apply_config(SimpleNamespace(auth_key_file=None, require_auth=False,
                                      heartbeat_insecure=True))
    assert (keys.mode, enc.signing_key, rx.keyring.keys) == ("insecure", None, ())
    assert "NOT authenticated" in caplog.text
    assert states == [("file", "file"), ("insecure", "file"), ("insecure", None)]
    keys.apply_config(SimpleNamespace(auth_key_file=None, require_auth=False,
                                      heartbeat_insecure=False))
    assert keys.mode == "etcd"          # keys come with start(); tests/store/test_keys_etcd.py
