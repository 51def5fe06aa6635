"""A stand-in agent for the dead-man test: take the pickled plan, then refresh forever.

Run inside the gateway's namespace (``ip netns exec``); the test freezes it.
"""

import pickle
import sys
import time

from vipmgr.dataplane.reconcile import Dataplane

with open(sys.argv[1], "rb") as f:
    plan = pickle.load(f)
period = float(sys.argv[2])
dp = Dataplane()
dp.reconcile(plan, arm=True)
print("ready", flush=True)
while True:
    for gw in plan.active:
        dp.refresh(gw.name, gw.active.deadman_timeout)
    time.sleep(period)
