"""Health probes that decide node eligibility (the seed's Ready criterion).

Pure parts: probe definitions (:mod:`.probes`), the rise/fall state machine
(:mod:`.state`), aggregation (:mod:`.monitor`) and eligibility
(:mod:`.eligibility`). I/O: :mod:`.checks` runs probes under asyncio.
"""

from vipmgr.health.eligibility import Eligibility, evaluate_eligibility
from vipmgr.health.monitor import HealthMonitor, ProbeStatus, Transition
from vipmgr.health.probes import Probe, parse_probes
from vipmgr.health.state import CheckResult, Status

__all__ = ["CheckResult", "Eligibility", "HealthMonitor", "Probe", "ProbeStatus", "Status",
           "Transition", "evaluate_eligibility", "parse_probes"]
