"""The Prometheus alert rules: promtool checks and unit tests pass, every alert is tested
firing and not firing, the tests catch a broken alert, and the rules only use metrics
the agent exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from vipmgr.agent.metrics import AgentMetrics

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "vipmgr-alerts.yml"
TESTS = sorted((PROM / "tests").glob("*.yml"))
DOCS = ROOT / "docs" / "monitoring.md"
REQUIRED_ALERTS = {
    "VipmgrGatewayNoActive", "VipmgrGatewaySplitBrain", "VipmgrGatewayFlapping",
    "VipmgrGatewayNoStandby", "VipmgrEtcdUnreachable", "VipmgrHeartbeatPathDown",
    "VipmgrNodeIneligible",
}

promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                              reason="promtool missing: install the Debian 'prometheus' package")


def alerts() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def run_promtool(*args: str | Path, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@promtool
def test_promtool_check_rules():
    proc = run_promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@promtool
def test_promtool_test_rules():
    assert TESTS
    proc = run_promtool("test", "rules", *TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_required_alerts_have_severity_and_annotations():
    by_name = {rule["alert"]: rule for rule in alerts()}
    assert REQUIRED_ALERTS <= set(by_name)
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert anchor == name.lower(), name


def test_every_runbook_anchor_exists_in_the_docs():
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in DOCS.read_text().splitlines() if line.startswith("#")}
    for rule in alerts():
        assert rule["alert"].lower() in headings, f"docs/monitoring.md lacks ### {rule['alert']}"


def test_every_alert_is_tested_firing_and_not_firing():
    firing, quiet = set(), set()
    for path in TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


@promtool
def test_unit_tests_catch_a_broken_alert(tmp_path):
    """Replace one alert's expression by one that never / always fires: the unit tests
    must notice every time. The promtool runs go in parallel to keep this quick."""
    runs = {}
    for rule in alerts():
        for broken in ("vector(1) == 0", "vector(1)"):
            work = tmp_path / f"{rule['alert']}-{len(runs)}"
            (work / "tests").mkdir(parents=True)
            doc = yaml.safe_load(RULES.read_text())
            for group in doc["groups"]:
                for other in group["rules"]:
                    if other.get("alert") == rule["alert"]:
                        other["expr"] = broken
            (work / RULES.name).write_text(yaml.safe_dump(doc))
            for path in TESTS:
                shutil.copy(path, work / "tests" / path.name)
            runs[(rule["alert"], broken)] = subprocess.Popen(
                ["promtool", "test", "rules", *(f"tests/{p.name}" for p in TESTS)], cwd=work,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    survived = [key for key, proc in runs.items() if proc.wait(timeout=120) == 0]
    assert survived == [], "broken alerts that passed the unit tests"


def test_rules_only_use_metrics_the_agent_exports():
    families = {fam.name for fam in AgentMetrics("n", CollectorRegistry()).registry.collect()}
    used = {name for rule in alerts() for name in re.findall(r"\bvipmgr_[a-z_]+", rule["expr"])}
    assert used
    unknown = {name for name in used
               if name not in families and name.removesuffix("_total") not in families
               and name.removesuffix("_info") not in families}
    assert unknown == set()
