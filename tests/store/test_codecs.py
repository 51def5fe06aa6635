"""The store's key and value codecs without etcd: round trips, and a malformed value is one
clear error naming its key, never a traceback from json."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from vipmgr.store.authority import GatewayKeys, Holder, decode_holder, read_holders
from vipmgr.store.codec import CorruptObjectError, key_suffix, load_object, prefix_end
from vipmgr.store.events import events_prefix
from vipmgr.store.placement import (
    PlacementRecord, decode_placement_record, encode_placement_record, read_records,
)
from vipmgr.store.resources import CorruptObjectError as ResourcesCorrupt
from vipmgr.store.resources import KeyLayout
from vipmgr.store.roles import Grant
from vipmgr.store.switchover import (
    SwitchoverRequest, decode_switchover, encode_switchover, read_requests, switchover_key,
)


@dataclass
class KV:  # what aetcd's get_prefix returns, as far as the codecs look
    key: bytes
    value: bytes
    create_revision: int = 1
    mod_revision: int = 1


class FakeClient:
    def __init__(self, kvs: dict[str, bytes]):
        self.kvs = kvs

    async def get_prefix(self, prefix: bytes):
        return [KV(k.encode(), v, i + 7) for i, (k, v) in enumerate(sorted(self.kvs.items()))
                if k.encode().startswith(prefix)]


# --- keys ------------------------------------------------------------------------------


def test_prefix_end_is_etcds_range_end():
    assert prefix_end(b"/vipmgr/authority/") == b"/vipmgr/authority0"
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"          # trailing 0xff bytes carry over
    assert prefix_end(b"\xff\xff") == b"\0"      # nothing after: every key from here on
    assert Grant("/p/authority/", True, "readwrite").range_end == "/p/authority0"
    assert Grant("/p/status/nodes/a", False, "readwrite").range_end == ""


def test_key_layout_names_every_prefix_once():
    layout = KeyLayout("/p")
    assert layout.authority_prefix == "/p/authority/"
    assert GatewayKeys("/p", "egw").authority == layout.authority_prefix + "egw"
    assert layout.switchover_prefix == "/p/switchover/"
    assert switchover_key("/p", "egw") == layout.switchover_prefix + "egw"
    assert layout.gateway_status_names(layout.gateway_status_key("egw", "gw-a").encode()) \
        == ("egw", "gw-a")
    assert key_suffix(b"/p/authority/egw", layout.authority_prefix) == "egw"
    assert events_prefix("/p", "egw") == "/p/events/egw/"
    with pytest.raises(ValueError, match="not under"):
        key_suffix("/q/authority/egw", layout.authority_prefix)


def test_one_corrupt_error_for_every_store_value():
    assert ResourcesCorrupt is CorruptObjectError      # the CLI prints it as one line
    assert issubclass(CorruptObjectError, ValueError)
    with pytest.raises(CorruptObjectError, match=r"/k is not a JSON object \(list\)"):
        load_object(b"[1]", "/k")


# --- authority holders -----------------------------------------------------------------


def test_holder_round_trip_with_the_election_encoding():
    # the value the election writes (store.authority.plan's Acquire)
    kv = KV(b"/p/authority/egw", json.dumps({"lease": 5, "node": "gw-a"}).encode(), 42)
    assert decode_holder(kv) == Holder("gw-a", 42)
    assert decode_holder(kv).node == "gw-a" and decode_holder(kv)[1] == 42


@pytest.mark.parametrize("raw, says", [
    (b"not json", "is not JSON"),
    (b"\xff\xfe", "is not JSON"),
    (b'"gw-a"', "is not a JSON object"),
    (b'{"lease": 5}', "names no node"),
    (b'{"node": 3}', "names no node"),
    (b'{"node": ""}', "names no node"),
])
def test_a_malformed_authority_value_is_a_clear_error(raw, says):
    with pytest.raises(CorruptObjectError) as err:
        decode_holder(KV(b"/p/authority/egw", raw))
    assert says in str(err.value) and "/p/authority/egw" in str(err.value)
    assert "etcdctl" in str(err.value)


def test_read_holders_raises_or_skips_what_it_cannot_read():
    client = FakeClient({"/p/authority/a": b'{"node": "n1", "lease": 1}',
                         "/p/authority/b": b"garbage",
                         "/p/term/a": b'{"state": "held"}'})
    with pytest.raises(CorruptObjectError, match="/p/authority/b"):
        asyncio.run(read_holders(client, "/p"))
    skipped: list[CorruptObjectError] = []
    holders = asyncio.run(read_holders(client, "/p", skipped.append))
    assert holders == {"a": Holder("n1", 7)}
    assert len(skipped) == 1 and "/p/authority/b" in str(skipped[0])


# --- switchover requests ---------------------------------------------------------------


@pytest.mark.parametrize("to", ["gw-b", None])
def test_switchover_round_trip(to):
    raw = encode_switchover(to, 1700000000.5)
    assert json.loads(raw) == {"to": to, "requested": 1700000000.5}  # the stored format
    assert decode_switchover(raw, "/p/switchover/egw") == SwitchoverRequest(to, 1700000000.5)


def test_switchover_decoding_is_lenient_about_the_informational_time():
    assert decode_switchover(b'{"to": "gw-b"}', "k") == SwitchoverRequest("gw-b", None)
    assert decode_switchover(b'{"to": null, "requested": "soon"}', "k").requested is None


@pytest.mark.parametrize("raw, says", [
    (b"{", "is not JSON"),
    (b"null", "is not a JSON object"),
    (b'{"to": 7}', '"to" must be a node name or null, not int'),
])
def test_a_malformed_switchover_request_is_a_clear_error(raw, says):
    with pytest.raises(CorruptObjectError) as err:
        decode_switchover(raw, "/p/switchover/egw")
    assert says in str(err.value) and "/p/switchover/egw" in str(err.value)


def test_read_requests_by_gateway():
    client = FakeClient({"/p/switchover/a": b'{"to": null}', "/p/switchover/b": b"x",
                         "/p/switchoverx": b"not ours"})
    assert asyncio.run(read_requests(client, "/p")) == {"a": b'{"to": null}', "b": b"x"}


# --- placement records -----------------------------------------------------------------


def test_placement_record_round_trip():
    raw = encode_placement_record(100.0, 10.0)
    assert json.loads(raw) == {"since": 100.0, "holdDown": 10.0}
    assert decode_placement_record(raw, "k") == PlacementRecord(100.0, 10.0)


def test_any_json_placement_record_counts_and_only_non_json_is_refused():
    assert decode_placement_record(b"{}", "k") == PlacementRecord(None, None)
    assert decode_placement_record(b"[1]", "k") == PlacementRecord(None, None)
    assert decode_placement_record(b'{"since": true}', "k").since is None
    with pytest.raises(CorruptObjectError, match="placement record at /p/status/placement/b "
                                                 "is not JSON"):
        decode_placement_record(b"not json", "/p/status/placement/b")


def test_read_records_by_node():
    layout = KeyLayout("/p")
    client = FakeClient({layout.placement_key("a"): b"{}", layout.placement_key("b"): b"x",
                         layout.node_status_key("a"): b"{}"})
    assert asyncio.run(read_records(client, layout.placement_prefix)) == {"a": b"{}", "b": b"x"}


# --- status documents (what the CLI reads) -----------------------------------------------


def test_member_statuses_by_gateway_and_node_and_a_corrupt_one_names_its_key():
    from vipmgr.cli.resources import StatusView
    from vipmgr.store.resources import ResourceStore

    layout = KeyLayout("/p")
    docs = {n: json.dumps({"gateway": "egw", "node": n, "role": r}).encode()
            for n, r in (("gw-a", "active"), ("gw-b", "standby"))}
    client = FakeClient({layout.gateway_status_key("egw", "gw-a"): docs["gw-a"],
                         layout.gateway_status_key("egw", "gw-b"): docs["gw-b"],
                         layout.node_status_key("gw-a"): b'{"node": "gw-a"}',
                         layout.authority_prefix + "egw": b'{"node": "gw-a", "lease": 1}'})
    client.transactions = None
    store = ResourceStore(client, layout)
    assert asyncio.run(store.gateway_statuses()) == {
        "egw": {n: json.loads(d) for n, d in docs.items()}}
    view = asyncio.run(StatusView.read(store))
    assert view.holders["egw"][0] == "gw-a" and set(view.members["egw"]) == {"gw-a", "gw-b"}
    client.kvs[layout.gateway_status_key("egw", "gw-b")] = b"{broken"
    with pytest.raises(CorruptObjectError, match="status at /p/status/gateways/egw/gw-b is "
                                                 "not JSON"):
        asyncio.run(store.gateway_statuses())
    client.kvs[layout.gateway_status_key("egw", "gw-b")] = docs["gw-b"]
    client.kvs[layout.authority_prefix + "egw"] = b"[]"
    with pytest.raises(CorruptObjectError, match="/p/authority/egw"):
        asyncio.run(StatusView.read(store))
