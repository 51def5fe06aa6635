"""The issue's tables through the CLI: apply against a real etcd, and `agent --config`."""

import subprocess
import sys
import time

import pytest

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/resources")
from test_crosscheck import INVENTORY, POLICY, PRIMARY_GW, gw  # noqa: E402
from test_hostile_input import alias_bomb  # noqa: E402

VM2 = INVENTORY.split("---\n")[3].replace("vm-backend", "vm-2")  # vm-backend's address again


@pytest.fixture
def stored(vipmgr, tmp_path):
    f = tmp_path / "inventory.yaml"
    f.write_text(INVENTORY)
    vipmgr("apply", "-f", str(f))
    return tmp_path


def apply_text(vipmgr, tmp_path, text, *args, code=0):
    f = tmp_path / "new.yaml"
    f.write_text(text)
    return vipmgr("apply", "-f", str(f), *args, code=code)


@pytest.mark.etcd
@pytest.mark.parametrize("ip, hint", [
    ("192.0.2.11", "is the address of Node gw-a on eth1 (stored)"),
    ("192.0.2.1", "is a router of Node gw-a (stored)"),
    ("198.18.1.2", "is an address of VirtualMachine default/vm-backend (stored)"),
    ("192.0.2.255", "is the broadcast address of 192.0.2.0/24"),
    ("203.0.113.50", "is in no subnet of the gateway's nodes"),
])
def test_vip_conflicts_with_stored_objects_refuse_the_apply(vipmgr, stored, ip, hint):
    res = apply_text(vipmgr, stored, gw(ip), code=1)
    assert f"error: {stored}/new.yaml:8: spec.sourceIP.virtualIPAddress.ip: {ip} {hint}" in res.output
    assert "nothing was changed" in res.output and "Traceback" not in res.output
    assert "No egressgateways found" in vipmgr("get", "egw").output


@pytest.mark.etcd
def test_two_gateways_selecting_one_vm_is_refused_naming_both(vipmgr, stored):
    apply_text(vipmgr, stored, gw("192.0.2.100", "gw-one") + "---\n" + gw("192.0.2.101", "gw-two")
               + "---\n" + POLICY.format(name="p-one", cidr="0.0.0.0/0", gw="gw-one", app="backend"))
    res = apply_text(vipmgr, stored, POLICY.format(name="p-two", cidr="0.0.0.0/0", gw="gw-two",
                                                   app="backend"), code=1)
    assert "'p-one' (gateway gw-one)" in res.output and "'p-two' (gateway gw-two)" in res.output
    assert "default/vm-backend" in res.output


@pytest.mark.etcd
def test_primary_interface_no_node_has_is_refused(vipmgr, stored):
    res = apply_text(vipmgr, stored, PRIMARY_GW, code=1)
    assert "has an IPv4 address on eth9" in res.output


@pytest.mark.etcd
def test_warnings_are_printed_exit_0_and_strict_refuses(vipmgr, stored):
    risky = "---\n".join([
        POLICY.format(name="p", cidr="0.0.0.0/0", gw="egress-gx", app="nothing"),
        gw("192.0.2.100").replace("node-role.deckhouse.io/egress", "egress"),
        VM2.replace("worker-a", "worker-z"),
        INVENTORY.split("---\n")[2].replace("worker-a", "worker-b").replace("198.51.100.21",
                                                                              "198.51.100.11"),
    ])
    res = apply_text(vipmgr, stored, risky, "--strict", code=1)
    assert res.output.count("(an error with --strict)") == 6, res.output
    assert "nothing was changed" in res.output
    res = apply_text(vipmgr, stored, risky)
    for hint in ("spec.egressGatewayName: gateway 'egress-gx' does not exist",
                 "spec.selectors: select no VirtualMachine",
                 "spec.nodeSelector: matches no Node (egress=)",
                 "spec.nodeName: Node 'worker-z' does not exist",
                 "spec.addresses[0]: 198.18.1.2 is also an address of VirtualMachine default/vm-backend",
                 "spec.internalIP: 198.51.100.11 is also the address of Node gw-a on eth0"):
        assert f"warning: {stored}/new.yaml:" in res.output and hint in res.output, (hint, res.output)
    assert "egressgatewaypolicy/p created" in res.output


@pytest.mark.etcd
def test_hostile_files_through_apply(vipmgr, tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    res = vipmgr("apply", "-f", str(binary), code=1)
    assert res.output == f"error: {binary}: is a binary file (NUL byte at offset 7), not YAML or JSON text\nnothing was changed\n"
    start = time.perf_counter()
    res = vipmgr("apply", "-f", "-", "--dry-run", input=alias_bomb(9), code=1)
    assert time.perf_counter() - start < 5 and "expands to more than 100,000 values" in res.output
    big = tmp_path / "label.yaml"
    big.write_text(VM2.replace("app: backend", "app: " + "x" * 5_000_000))
    res = vipmgr("apply", "-f", str(big), code=1)
    assert len(res.output) < 1000 and "bytes)" in res.output
    assert "Traceback" not in res.output


def test_apply_checks_files_before_contacting_etcd(tmp_path):
    """No etcd at all: a bad file is still one clear error (exit 1, not 2)."""
    f = tmp_path / "bad.yaml"
    f.write_bytes(b"kind: Node\nname: caf\xe9\n")
    proc = subprocess.run([sys.executable, "-m", "vipmgr.cli", "apply", "-f", str(f), "--etcd",
                           "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "is not UTF-8 text" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content, hint", [
    (b"\x00\x01\x02\x03", "is a binary file"),
    (b"node: gw-a\nauthKeyFile: /nonexistent/heartbeat.keys\n", "authKeyFile: /nonexistent/heartbeat.keys: cannot read: No such file"),
])
def test_agent_config_errors_are_one_line(tmp_path, content, hint):
    f = tmp_path / "agent.yaml"
    f.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "vipmgr.cli", "agent", "--config", str(f)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and hint in proc.stderr and str(f) in proc.stderr, proc.stderr


@pytest.mark.etcd
def test_label_that_puts_a_vm_into_two_gateways_is_refused(vipmgr, stored):
    apply_text(vipmgr, stored, gw("192.0.2.100", "gw-one") + "---\n" + gw("192.0.2.101", "gw-two")
               + "---\n" + POLICY.format(name="p-one", cidr="0.0.0.0/0", gw="gw-one", app="backend")
               + "---\n" + POLICY.format(name="p-two", cidr="0.0.0.0/0", gw="gw-two", app="db"))
    res = vipmgr("label", "vm", "vm-backend", "app=db", "--overwrite")  # one gateway: fine
    assert "labeled" in res.output
    res = vipmgr("label", "vm", "vm-backend", "tier=x")  # still one
    vipmgr("apply", "-f", "-", input=POLICY.format(name="p-two", cidr="0.0.0.0/0", gw="gw-two",
                                                   app="db").replace("{app: db}", "{tier: x}"))
    res = vipmgr("label", "vm", "vm-2", "x=y", code=1)  # not found
    res = vipmgr("label", "vm", "vm-backend", "app=backend", "--overwrite", code=1)
    assert "'p-one' (gateway gw-one)" in res.output and "'p-two' (gateway gw-two)" in res.output
    assert "nothing was changed" in res.output


@pytest.mark.etcd
def test_corrupt_stored_object_is_one_line_and_apply_repairs_it(vipmgr, stored, etcd_server,
                                                                etcd_prefix):
    import asyncio

    from vipmgr.store.client import EtcdSettings, connect

    async def corrupt():
        client = await connect(EtcdSettings.from_options(etcd_server.url, etcd_prefix))
        try:
            await client.put(f"{etcd_prefix}/resources/virtualmachines/default/vm-backend".encode(),
                             b"\xff not json")
        finally:
            await client.close()

    asyncio.run(corrupt())
    res = vipmgr("get", "vm", code=1)
    assert res.output.count("\n") == 1 and "virtualmachines/default/vm-backend is not JSON" in res.output
    vipmgr("apply", "-f", str(stored / "inventory.yaml"))  # replaces the corrupt value
    assert "vm-backend" in vipmgr("get", "vm").output


@pytest.mark.etcd
def test_delete_f_of_conflicting_objects_is_possible(vipmgr, tmp_path):
    """A file whose objects conflict with each other cannot be applied, but can be deleted
    (e.g. what was stored before the checks existed)."""
    f = tmp_path / "bad.yaml"
    f.write_text(INVENTORY + "---\n" + gw("192.0.2.11"))
    vipmgr("apply", "-f", str(f), code=1)
    out = vipmgr("delete", "-f", str(f), code=1).output  # nothing stored: all "not found"
    assert "egressgateway/egress-gw not found" in out and "nothing was changed" not in out
