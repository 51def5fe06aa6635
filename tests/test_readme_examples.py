"""The README's manifests are valid, including the commented-out failover extension."""

import re
from pathlib import Path

from vipmgr.resources.loader import load_documents, parse_documents

README = Path(__file__).resolve().parents[1] / "README.md"


def yaml_blocks():
    return re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)


def test_readme_manifests_parse_with_the_extension_enabled():
    blocks = [b for b in yaml_blocks() if "kind:" in b]
    assert blocks
    for block in blocks:
        enabled = re.sub(r"^(\s*)# ", r"\1", block, flags=re.M)
        enabled = re.sub(r"\s+#[^\n]*", "", enabled)
        objects = [o for _, o in parse_documents(load_documents(enabled, "README.md"))]
        assert objects
        for gw in (o for o in objects if o.KIND == "EgressGateway"):
            assert gw.failover.vrid == 42 and gw.failover.timers.suspect_after == 4
