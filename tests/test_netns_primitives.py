import pytest

from vipmgr.lab.netns import list_namespaces
from waiting import wait_for

pytestmark = pytest.mark.netns


def test_two_hosts_on_a_bridge_ping_and_teardown_leaves_nothing(netns_lab):
    br = netns_lab.add_bridge("br")
    a, b = netns_lab.add("a"), netns_lab.add("b")
    netns_lab.link("a", "eth0", "br", "a-eth0")
    netns_lab.link("b", "eth0", "br", "b-eth0")
    a.set_addr("eth0", "192.0.2.1/24")
    b.set_addr("eth0", "192.0.2.2/24")
    out = a.run(["ping", "-c", "1", "-W", "2", "192.0.2.2"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert br.name in list_namespaces()
    netns_lab.close()
    assert not [n for n in list_namespaces() if n.startswith(netns_lab.prefix)]
    netns_lab.close()  # idempotent


def test_processes_started_in_a_namespace_are_stopped_on_close(netns_lab):
    ns = netns_lab.add("p")
    proc = ns.popen(["sleep", "300"])
    # `ip netns exec` joins the namespace a moment after Popen returns.
    wait_for(ns.pids, 5, "the sleep to appear in the namespace")
    netns_lab.close()
    assert proc.poll() is not None
