"""One line per state change, with gateway and node, in text or JSON."""

import json
import logging

from vipmgr.agent.logs import LOGGER, setup_logging, state_change


def test_json_lines_carry_the_fields(capsys):
    setup_logging("json")
    try:
        state_change("egress-gw", "gw-a", "standby", "active", "acquired", 42)
    finally:
        LOGGER.handlers.clear()
    line = json.loads(capsys.readouterr().err.strip())
    assert line["msg"] == "egress-gw: standby -> active (acquired)"
    assert (line["gateway"], line["node"], line["from"], line["to"], line["epoch"]) == \
        ("egress-gw", "gw-a", "standby", "active", 42)
    assert line["level"] == "info"


def test_text_lines_are_one_line_with_fields(capsys):
    setup_logging("text", "info")
    try:
        state_change("egress-gw", "gw-b", "active", "releasing", "cordoned", 7)
        logging.getLogger("vipmgr.member").debug("not shown at info")
    finally:
        LOGGER.handlers.clear()
    out = capsys.readouterr().err.strip().splitlines()
    assert len(out) == 1
    assert "egress-gw: active -> releasing (cordoned)" in out[0]
    assert "gateway=egress-gw node=gw-b" in out[0] and "epoch=7" in out[0]
