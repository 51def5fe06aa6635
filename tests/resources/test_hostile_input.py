"""Hostile files end in one clear error naming the file, fast, never a traceback."""

import re
import time

import pytest

from vipmgr.agent.config import MAX_CONFIG_BYTES, load_config
from vipmgr.config.errors import ConfigError
from vipmgr.resources.errors import ValidationError, clip
from vipmgr.resources.loader import load_documents, parse_documents
from vipmgr.resources.textinput import (
    MAX_ALIASES,
    MAX_MANIFEST_BYTES,
    InputError,
    read_text_file,
)

VM = """\
apiVersion: vipmgr.io/v1alpha1
kind: VirtualMachine
metadata: {{name: vm-a, labels: {{app: {label}}}}}
spec: {{nodeName: worker-a, addresses: [198.18.1.2]}}
"""


def alias_bomb(levels: int, fan: int = 9) -> str:
    """The issue's bomb: each level lists the previous one ``fan`` times (600 bytes, 9 levels)."""
    lines = ["l0: &l0 [" + ",".join(['"lol"'] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        parse_documents(load_documents(text, "f.yaml"))
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize("levels", [7, 9])
def test_alias_bomb_is_refused_at_once(levels):
    text = alias_bomb(levels)
    assert len(text) < 700
    start = time.perf_counter()
    [p] = problems_of(text)
    assert time.perf_counter() - start < 5  # it ran > 90 s (9 levels) before
    assert p.startswith("f.yaml:1:1") and "expands to more than" in p


def test_many_aliases_are_refused():
    text = "a: &a x\nb: [" + ",".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    [p] = problems_of(text)
    assert f"more than {MAX_ALIASES} aliases" in p


def test_a_few_aliases_are_fine():
    text = VM.format(label="backend").replace("app: backend", "app: &app backend, tier: *app")
    [vm] = [o for _, o in parse_documents(load_documents(text, "f.yaml"))]
    assert vm.labels == {"app": "backend", "tier": "backend"}


@pytest.mark.parametrize("text, hint", [
    ("a: &a [*a]\n", "recursive alias"),
    ("[" * 5000 + "]" * 5000, "nest"),
    ("[" * 100 + "]" * 100, "nested more than 64 levels deep"),
    ("a: " + "1" * 5000 + "\n", "5,000 digits"),
    ("a: !!binary aGVsbG8=\n", "!!binary"),
    ("a: !!set {x}\n", "!!set"),
    ("a: \x07\n", "0x07"),
])
def test_hostile_yaml_is_one_problem(text, hint):
    [p] = problems_of(text)
    assert p.startswith("f.yaml") and hint in p, p


def test_timestamps_stay_strings():
    """An implicit timestamp used to become a date (invalid dates: a ValueError traceback)."""
    [doc] = load_documents("a: 2001-13-45\nb: 2001-01-01\n", "f.yaml")
    assert doc.data == {"a": "2001-13-45", "b": "2001-01-01"}


def test_long_values_are_cut_in_messages():
    """The issue's 5 MB label: the error echoed all of it."""
    label = "x" * 5_000_000 + "!"
    [p] = problems_of(VM.format(label=label))
    assert "metadata.labels.app" in p and re.search(r"… \(5,000,00\d bytes\)", p)
    assert len(p) < 500, len(p)


def test_clip_keeps_short_messages():
    assert clip("must be true or false") == "must be true or false"
    assert clip("y" * 100) == "y" * 60 + "… (100 bytes)"


def test_file_size_limit(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(MAX_MANIFEST_BYTES + 1)
        fh.seek(0)
        fh.write(b"# ")
    with pytest.raises(InputError) as exc:
        read_text_file(str(big))
    assert str(exc.value).startswith(f"{big}: is larger than the {MAX_MANIFEST_BYTES:,}-byte limit")


@pytest.mark.parametrize("data, hint", [
    (b"\x7fELF\x02\x01\x01\x00\x00", "is a binary file"),
    (b"kind: Node\nname: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 20)"),
])
def test_binary_and_non_utf8_are_one_line(tmp_path, data, hint):
    f = tmp_path / "in.yaml"
    f.write_bytes(data)
    with pytest.raises(InputError) as exc:
        read_text_file(str(f))
    assert str(exc.value).startswith(f"{f}: {hint}") and "\n" not in str(exc.value)


# --- the agent config and the key file it names ------------------------------------------


def config_problems(tmp_path, data: bytes, environ=None) -> list[tuple[str, str]]:
    f = tmp_path / "agent.yaml"
    f.write_bytes(data)
    with pytest.raises(ConfigError) as exc:
        load_config(str(f), environ=environ or {})
    return exc.value.problems


@pytest.mark.parametrize("data, field, hint", [
    (b"\x00\x01\x02", "<file>", "is a binary file"),
    (b"node: gw-\xff\n", "<file>", "is not UTF-8"),
    (alias_bomb(9).encode(), "line 1, column 1", "expands to more than"),
    (b"node: gw-a\netcd: {endpoints: 5}\n", "etcd.endpoints", "list of URLs"),
    (b"node: gw-a\netcd: {prefix: [x]}\n", "etcd.prefix", "string"),
    (b"node: gw-a\nheartbeat: {peers: 5}\n", "heartbeat.peers", "list of IPv4"),
    (b"node: gw-a\nmetricsAddress: [1]\n", "metricsAddress", "HOST:PORT"),
    (b"node: gw-a\nauthKeyFile: 7\n", "authKeyFile", "path"),
    (b"- just\n- a list\n", "<file>", "mapping"),
    (b"node: gw-a\nx: " + b"z" * (MAX_CONFIG_BYTES + 1), "<file>", "limit"),
])
def test_agent_config_problems_are_one_field_each(tmp_path, data, field, hint):
    [(path, message)] = config_problems(tmp_path, data)
    assert path == field and hint in message, (path, message)


def test_missing_key_file_names_config_field_and_file(tmp_path):
    """It was a 49-line traceback once the agent started."""
    missing = tmp_path / "nope.keys"
    [(path, message)] = config_problems(tmp_path, f"node: gw-a\nauthKeyFile: {missing}\n".encode())
    assert path == "authKeyFile" and str(missing) in message and "No such file" in message


@pytest.mark.parametrize("content, hint", [
    (b"\x00\x00\x00\x00", "binary"),
    (b"hex:zz\n", ":1: cannot decode key"),
    (b"hex:0011\n", "at least 16 bytes"),
    (b"# only a comment\n", "needs at least one key"),
])
def test_bad_key_file_is_one_line(tmp_path, content, hint):
    keys = tmp_path / "hb.keys"
    keys.write_bytes(content)
    [(path, message)] = config_problems(
        tmp_path, f"node: gw-a\nauthKeyFile: {keys}\nrequireAuth: true\n".encode())
    assert path == "authKeyFile" and hint in message and str(keys) in message, message


def test_good_key_file_loads(tmp_path):
    keys = tmp_path / "hb.keys"
    keys.write_text("hex:" + "ab" * 16 + "\n")
    f = tmp_path / "agent.yaml"
    f.write_text(f"node: gw-a\nauthKeyFile: {keys}\nrequireAuth: true\n")
    assert load_config(str(f), environ={}).auth_key_file == str(keys)


def test_internal_interface_missing_on_the_node_is_said_clearly():
    """Issue: `internalInterface: eth9` registered a Node with no internalIP, nothing logged.
    The agent calls this with the interfaces it read before registering (and logs it)."""
    import ipaddress

    from vipmgr.agent.config import internal_interface_problem, parse_config

    config = parse_config({"node": "gw-a", "internalInterface": "eth9"}, environ={})
    interfaces = {"eth0": ipaddress.IPv4Interface("198.51.100.11/24"),
                  "eth1": ipaddress.IPv4Interface("192.0.2.11/24")}
    why = internal_interface_problem(config, interfaces)
    assert why.startswith("internalInterface eth9 has no IPv4 address on node gw-a")
    assert "(interfaces with one: eth0, eth1)" in why and "without internalIP" in why
    assert internal_interface_problem(parse_config({"node": "gw-a"}, environ={}), interfaces) is None


def test_heartbeat_insecure_switch():
    from vipmgr.agent.config import parse_config

    assert parse_config({"node": "gw-a"}, environ={}).heartbeat_insecure is False
    assert parse_config({"node": "gw-a", "heartbeat": {"insecure": True}},
                        environ={}).heartbeat_insecure is True
    for bad, field in (({"insecure": "yes"}, "heartbeat.insecure"),
                       ({"insecure": True, "x": 1}, "heartbeat.x")):
        with pytest.raises(ConfigError) as exc:
            parse_config({"node": "gw-a", "heartbeat": bad}, environ={})
        assert [p for p, _ in exc.value.problems] == [field]
    with pytest.raises(ConfigError) as exc:
        parse_config({"node": "gw-a", "heartbeat": {"insecure": True}, "authKeyFile": "/k"},
                     environ={})
    assert exc.value.problems == [("heartbeat.insecure",
                                   "heartbeat.insecure: true contradicts authKeyFile; drop one")]
