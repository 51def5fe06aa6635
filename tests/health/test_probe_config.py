"""Probe config parsing: defaults, every kind, and errors that name the field and the fix."""

from __future__ import annotations

import pytest
import yaml

from vipmgr.config.errors import ConfigError
from vipmgr.health.probes import (
    CarrierProbe,
    ExecProbe,
    FileProbe,
    HttpProbe,
    RouteProbe,
    TcpProbe,
    parse_probes,
)

EXAMPLE = """
probes:
  - {name: web, kind: http, url: "http://127.0.0.1:8080/healthz", expectStatus: [200, 204]}
  - {name: dns, kind: tcp, address: "192.0.2.53:53", interval: 5s, timeout: 500ms}
  - {name: script, kind: exec, command: [/usr/local/bin/check, --quick], rise: 1, fall: 1}
  - {name: fwd, kind: file, path: /proc/sys/net/ipv4/ip_forward, content: "1"}
  - {name: maint, kind: file, path: /etc/vipmgr/maintenance, exists: false}
  - {name: uplink, kind: carrier, interface: eth1}
  - {name: egress, kind: route, destination: 198.51.100.1, interface: eth1}
"""


def problems_of(data) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_probes(data)
    return info.value.problems


def test_every_kind_parses_with_defaults():
    probes = parse_probes(yaml.safe_load(EXAMPLE)["probes"])
    web, dns, script, fwd, maint, uplink, egress = probes
    assert web == HttpProbe(name="web", url="http://127.0.0.1:8080/healthz",
                            expect_status=(200, 204), interval=2.0, timeout=1.0, rise=2, fall=3)
    assert dns == TcpProbe(name="dns", host="192.0.2.53", port=53, interval=5.0, timeout=0.5)
    assert script == ExecProbe(name="script", command=("/usr/local/bin/check", "--quick"),
                               rise=1, fall=1)
    assert fwd == FileProbe(name="fwd", path="/proc/sys/net/ipv4/ip_forward", content="1")
    assert maint.exists is False
    assert uplink == CarrierProbe(name="uplink", interface="eth1")
    assert egress == RouteProbe(name="egress", destination="198.51.100.1", interface="eth1")
    assert uplink.describe() == "probe 'uplink' (carrier eth1)"
    assert egress.describe() == "probe 'egress' (route 198.51.100.1 dev eth1)"


def test_no_probes_is_fine():
    assert parse_probes(None) == ()
    assert parse_probes([]) == ()


def test_default_timeout_is_capped_below_a_short_interval():
    (probe,) = parse_probes([{"name": "a", "kind": "carrier", "interface": "eth1", "interval": "1s"}])
    assert probe.timeout == 0.5


def test_tcp_ipv6_address():
    (probe,) = parse_probes([{"name": "a", "kind": "tcp", "address": "[2001:db8::1]:443"}])
    assert (probe.host, probe.port, probe.target) == ("2001:db8::1", 443, "[2001:db8::1]:443")


def test_timeout_must_be_shorter_than_interval():
    probes = yaml.safe_load(EXAMPLE)["probes"]
    probes[2]["interval"], probes[2]["timeout"] = "1s", "1s"
    assert problems_of(probes) == [
        ("probes[2].timeout", "must be shorter than interval (1s), "
                              "so a slow check never overlaps the next one")]


@pytest.mark.parametrize("item, path, fragment", [
    ({"name": "a", "kind": "ping"}, "probes[0].kind", "must be one of http, tcp, exec, file, carrier, route"),
    ({"kind": "carrier", "interface": "eth1"}, "probes[0].name", "is required"),
    ({"name": "a b", "kind": "carrier", "interface": "eth1"}, "probes[0].name", "letters, digits"),
    ({"name": "a", "kind": "carrier", "interface": "eth1", "port": 1}, "probes[0].port", "unknown field"),
    ({"name": "a", "kind": "carrier"}, "probes[0].interface", "is required"),
    ({"name": "a", "kind": "carrier", "interface": "a-very-long-interface"}, "probes[0].interface", "longer than 15"),
    ({"name": "a", "kind": "http", "url": "https://192.0.2.1/"}, "probes[0].url", "only http://"),
    ({"name": "a", "kind": "http", "url": "http://192.0.2.1/", "expectStatus": 700}, "probes[0].expectStatus", "100-599"),
    ({"name": "a", "kind": "tcp", "address": "192.0.2.1"}, "probes[0].address", "HOST:PORT"),
    ({"name": "a", "kind": "tcp", "address": "192.0.2.1:70000"}, "probes[0].address", "1-65535"),
    ({"name": "a", "kind": "exec", "command": "check --quick"}, "probes[0].command", "without a shell"),
    ({"name": "a", "kind": "exec", "command": []}, "probes[0].command", "list of non-empty strings"),
    ({"name": "a", "kind": "file", "path": "run/flag"}, "probes[0].path", "must be absolute"),
    ({"name": "a", "kind": "file", "path": "/f", "content": 1}, "probes[0].content", "quote numbers"),
    ({"name": "a", "kind": "file", "path": "/f", "exists": False, "content": "x"}, "probes[0].content", "exists: false"),
    ({"name": "a", "kind": "route", "destination": "198.51.100.0/24"}, "probes[0].destination", "single IP address"),
    ({"name": "a", "kind": "carrier", "interface": "eth1", "interval": "soon"}, "probes[0].interval", "duration"),
    ({"name": "a", "kind": "carrier", "interface": "eth1", "interval": 0}, "probes[0].interval", "positive"),
    ({"name": "a", "kind": "carrier", "interface": "eth1", "rise": 0}, "probes[0].rise", ">= 1"),
    ({"name": "a", "kind": "carrier", "interface": "eth1", "fall": True}, "probes[0].fall", ">= 1"),
])
def test_bad_field_is_named_with_a_fix(item, path, fragment):
    problems = problems_of([item])
    assert any(p == path and fragment in msg for p, msg in problems), problems


def test_all_problems_reported_at_once_and_duplicates_named():
    problems = problems_of([
        {"name": "a", "kind": "carrier", "interface": "eth1"},
        {"name": "a", "kind": "carrier", "interface": "eth2"},
        {"name": "b", "kind": "tcp"},
        "carrier",
    ])
    paths = [p for p, _ in problems]
    assert paths == ["probes[1].name", "probes[2].address", "probes[3]"]
    assert "also probes[0]" in problems[0][1]


def test_not_a_list():
    assert problems_of({"name": "a"})[0][0] == "probes"
