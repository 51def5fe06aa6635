"""Applies and deletes of any size: batched under etcd's --max-txn-ops, all or nothing."""

import asyncio
import time

import pytest

from vipmgr.resources.loader import load_documents, parse_documents
from vipmgr.store.client import EtcdSettings, connect
from vipmgr.resources.models import KIND_BY_KIND
from vipmgr.store.resources import KeyLayout, ResourceStore

pytestmark = pytest.mark.etcd
VM_KIND = KIND_BY_KIND["VirtualMachine"]

NODE = """\
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {{name: worker-{i}}}
spec: {{internalIP: 198.51.100.{i}}}
"""
VM = """\
apiVersion: vipmgr.io/v1alpha1
kind: VirtualMachine
metadata: {{name: vm-{i}, labels: {{app: {app}}}}}
spec: {{nodeName: worker-1, addresses: [198.18.{hi}.{lo}]}}
"""


def vms(count: int, app: str = "backend", start: int = 0) -> str:
    docs = [NODE.format(i=1)]
    docs += [VM.format(i=i, app=app, hi=i // 250, lo=i % 250 + 1) for i in range(start, start + count)]
    return "---\n".join(docs)


def test_ten_thousand_vms_in_one_apply(vipmgr, tmp_path, capsys):
    """The issue: > 128 objects was a raw InvalidArgumentError traceback (79 applies for 10k)."""
    f = tmp_path / "vms.yaml"
    f.write_text(vms(10_000))
    start = time.perf_counter()
    res = vipmgr("apply", "-f", str(f))
    took = time.perf_counter() - start
    assert res.output.count(" created") == 10_001
    assert "wrote 10,001/10,001 objects" in res.output  # progress on stderr (mixed in by CliRunner)
    dry = vipmgr("apply", "-f", str(f), "--dry-run")
    assert dry.output.count("unchanged (dry run)") == 10_001
    start = time.perf_counter()
    assert vipmgr("get", "vm", "-o", "name").output.count("virtualmachine/") == 10_000
    listed = time.perf_counter() - start
    start = time.perf_counter()
    out = vipmgr("delete", "vm", "--all").output
    deleted = time.perf_counter() - start
    assert out.count(" deleted") == 10_000 and "deleted 10,000/10,000 objects" in out
    assert vipmgr("get", "nodes", "-o", "name").output.split() == ["node/worker-1"]
    with capsys.disabled():
        print(f"\n10,000 VMs + 1 node: apply {took:.1f} s, get {listed:.1f} s, "
              f"delete --all {deleted:.1f} s")


def test_small_txn_limit_still_applies_everything(vipmgr, tmp_path):
    f = tmp_path / "vms.yaml"
    f.write_text(vms(50))
    out = vipmgr("apply", "-f", str(f), "--max-txn-ops", "4").output
    assert out.count(" created") == 51 and "wrote 51/51 objects" in out
    out = vipmgr("delete", "-f", str(f), "--max-txn-ops", "4").output
    assert out.count(" deleted") == 51


def test_delete_by_selector_and_namespace(vipmgr, tmp_path):
    f = tmp_path / "vms.yaml"
    f.write_text(vms(3, "backend") + "---\n" + vms(2, "frontend", start=10).split("---\n", 1)[1]
                 + "---\n" + VM.format(i=99, app="backend", hi=9, lo=9).replace(
                     "name: vm-99,", "name: vm-99, namespace: other,"))
    vipmgr("apply", "-f", str(f))
    out = vipmgr("delete", "vm", "-l", "app=backend").output
    assert sorted(out.split("\n")[:-1]) == [f"virtualmachine/default/vm-{i} deleted" for i in range(3)]
    assert vipmgr("get", "vm", "-A", "-o", "name").output.split() == [
        "virtualmachine/vm-10", "virtualmachine/vm-11", "virtualmachine/vm-99"]
    assert "No virtualmachines found" in vipmgr("delete", "vm", "-l", "app=nothing").output
    assert "virtualmachine/other/vm-99 deleted" in vipmgr("delete", "vm", "--all", "-A").output
    assert vipmgr("get", "vm", "-A", "-o", "name").output == ""
    vipmgr("delete", "vm", code=1)                  # nothing said
    vipmgr("delete", "-l", "app=x", code=1)         # -l needs a kind
    vipmgr("delete", "vm", "x", "--all", code=1)    # two ways at once
    vipmgr("delete", "vm", "-l", "a in (", code=1)  # bad selector: one line


async def _store(etcd_server, etcd_prefix):
    client = await connect(EtcdSettings.from_options(etcd_server.url, etcd_prefix))
    return client, ResourceStore(client, KeyLayout(etcd_prefix))


def _objects(text):
    return [o for _, o in parse_documents(load_documents(text, "f.yaml"))]


def test_failed_guard_rolls_back_the_batches_written(etcd_server, etcd_prefix):
    """Batch 2's guard fails (another writer created vm-15 meanwhile): batch 1 is undone,
    the other writer's vm-15 is kept, commit says False so the caller re-plans."""
    async def main():
        client, store = await _store(etcd_server, etcd_prefix)
        try:
            plan = await store.plan_apply(_objects(vms(20)))
            theirs = _objects(VM.format(i=15, app="theirs", hi=0, lo=16))
            await store.apply(theirs)  # lands after phase one: plan's guard for vm-15 is stale
            ok = await store.commit(plan.writes, max_txn_ops=20)  # 10 objects per batch
            left = {o.key_name: o.labels for o in await store.list(VM_KIND)}
            return ok, left
        finally:
            await client.close()

    ok, left = asyncio.run(main())
    assert ok is False
    assert left == {"default/vm-15": {"app": "theirs"}}


def test_apply_retries_after_a_concurrent_write_and_converges(etcd_server, etcd_prefix):
    async def main():
        client, store = await _store(etcd_server, etcd_prefix)
        real = client.transaction
        calls = 0

        async def meddling(compare, success, failure):
            nonlocal calls
            calls += 1
            if calls == 2:  # between batch 1 and batch 2 of the first attempt
                client.transaction = real
                await store.apply(_objects(VM.format(i=15, app="theirs", hi=0, lo=16)))
                client.transaction = meddling
            return await real(compare=compare, success=success, failure=failure)

        try:
            client.transaction = meddling
            outcomes = await store.apply(_objects(vms(20)), max_txn_ops=20)
            client.transaction = real
            left = {o.key_name: o.labels for o in await store.list(VM_KIND)}
            return calls, outcomes, left
        finally:
            await client.close()

    calls, outcomes, left = asyncio.run(main())
    assert calls >= 5  # batch 1, failed batch 2, roll-back, then two batches again
    assert len(outcomes) == 21 and len(left) == 20
    assert all(labels == {"app": "backend"} for labels in left.values())
