"""Two or three real Election instances over an in-memory link and etcd model
(the simulator's World, with hand-written fault timelines instead of random ones)."""

from __future__ import annotations

import pytest

from vipmgr.config.timers import Timers
from vipmgr.sim.schedule import Episode, Schedule
from vipmgr.sim.world import World

T = Timers()


def world(episodes, nodes=3, policy="hold", end=None):
    names = [f"n{i + 1}" for i in range(nodes)]
    sched = Schedule(seed=7, nodes=names, gateways=["gw1"], policy=policy,
                     drift=[0.0] * nodes, offsets=[0.0] * nodes, episodes=episodes,
                     faults_end=end if end is not None else max(e.start + e.duration
                                                                for e in episodes))
    w = World(sched, T, trace=True)
    return w, w.run()


def active_now(w):
    return [n for n, exp in w.kernel["gw1"].items() if exp > w.t]


def programs_after(out, t_ms):
    return [line for line in out.trace if "datapath programmed" in line
            and float(line.split()[0]) > t_ms]


def test_crash_of_the_active_fails_over_within_suspect_plus_window():
    w, out = world([Episode("crash_active", 0.8, 0.4)])
    assert out.violations == []
    (took,) = out.crash_failover
    assert T.suspect_time < took < T.suspect_time + T.challenge_window + T.advert_interval + 0.02
    assert len(active_now(w)) == 1


@pytest.mark.parametrize("kind", ["switchover", "shutdown_active", "cordon_active",
                                  "health_active"])
def test_graceful_handover_is_immediate(kind):
    w, out = world([Episode(kind, 0.8, 0.4)])
    assert out.violations == [] and len(out.graceful) == 1 and out.graceful[0] < 0.02


def test_heartbeat_split_with_etcd_keeps_the_holder():
    w, out = world([Episode("hb_split", 0.8, 1.0, other=1)], nodes=2)
    assert out.violations == []
    assert programs_after(out, 100) == []  # nobody else ever took the datapath
    assert any("heartbeat-path-broken" in line for line in out.trace)


def holder_index(nodes=3) -> int:
    w0, _ = world([Episode("leader_change", 0.5, 0.0)], nodes=nodes)
    return int(active_now(w0)[0][1:]) - 1


@pytest.mark.parametrize("nodes", [3, 5])
def test_link_down_of_the_holder_fails_over_in_the_first_challenge(nodes):
    """Its heartbeat interface loses carrier (nothing in, nothing out) while etcd is
    fine: it hears nobody when the first challenge comes, so once three standby adverts
    of every member are missing it yields to the challenger, before the challenge window
    would have ended (instead of answering on stale hearing: one backoff, ~1.1 s)."""
    holder = f"n{holder_index(nodes) + 1}"
    w, out = world([Episode("isolate_active", 0.8, 0.4)], nodes=nodes)
    assert out.violations == []
    (took,) = out.link_down
    assert took < 3 * T.standby_advert_interval + T.advert_interval  # heard <= the cut
    assert took < T.suspect_time + T.challenge_window  # sooner than a depose would be
    (new,) = active_now(w)
    assert new != holder
    assert any(f"{holder} gw1   active -> releasing (release: isolated" in line
               for line in out.trace)


def test_holder_that_only_lost_its_transmit_path_keeps_the_role():
    """Adverts from the holder are lost, it still hears both peers: the path is broken,
    not the holder; it answers (status: heartbeat path broken) and keeps serving."""
    idx = holder_index()
    w, out = world([Episode("hb_oneway", 0.8, 1.5, node=idx, other=o)
                    for o in range(3) if o != idx])
    assert out.violations == []
    assert programs_after(out, 100) == [] and active_now(w) == [f"n{idx + 1}"]
    assert any("heartbeat-path-broken" in line for line in out.trace)
    assert not any("release: isolated" in line for line in out.trace)


@pytest.mark.parametrize("episode", ["standby_isolated", "split_two_two"])
def test_holder_that_hears_a_peer_keeps_the_role(episode):
    """A standby's own link is down, or the network splits 2 | 2: the holder still
    hears someone and keeps the role; nobody else programs the datapath."""
    nodes = 3 if episode == "standby_isolated" else 4
    idx = holder_index(nodes)
    ep = Episode("hb_isolate", 0.8, 1.5, node=(idx + 1) % nodes) \
        if episode == "standby_isolated" else Episode("hb_split", 0.8, 1.5, other=2)
    w, out = world([ep], nodes=nodes)
    assert out.violations == []
    assert programs_after(out, 100) == [] and active_now(w) == [f"n{idx + 1}"]


def test_etcd_outage_under_hold_keeps_the_active_serving():
    w, out = world([Episode("etcd_outage", 0.8, 2.5)])
    assert out.violations == []
    assert programs_after(out, 100) == []
    assert not any("-> fenced" in line for line in out.trace)


def test_frozen_active_is_fenced_by_its_kernel_before_the_takeover():
    w0, _ = world([Episode("leader_change", 0.5, 0.0)])
    idx = int(active_now(w0)[0][1:]) - 1
    w, out = world([Episode("freeze", 0.8, 0.6, node=idx)])
    assert out.violations == []
    assert any("resumes" in line for line in out.trace)
    assert len(active_now(w)) == 1


def test_unlabelling_a_standby_is_applied_live_without_a_role_change():
    w0, _ = world([Episode("leader_change", 0.5, 0.0)])
    holder = active_now(w0)[0]
    other = next(i for i in range(3) if f"n{i + 1}" != holder)
    w, out = world([Episode("unlabel", 0.8, 1.0, node=other)])
    assert out.violations == []
    assert active_now(w) == [holder] and programs_after(out, 100) == []
    after = [line for line in out.trace if float(line.split()[0]) > 790]
    assert any(f"{holder} gw1   note members-changed" in line for line in after)
    assert not any("->" in line and "etcd" not in line and f" {holder} " in line
                   for line in after)  # the active never changed role


def test_unlabelling_the_active_hands_over_gracefully():
    w0, _ = world([Episode("leader_change", 0.5, 0.0)])
    holder = active_now(w0)[0]
    w, out = world([Episode("unlabel", 0.8, 1.0, node=int(holder[1:]) - 1)])
    assert out.violations == []
    assert any(f"{holder} gw1   active -> releasing (release: shutdown" in line
               for line in out.trace)
    took = [float(line.split()[0]) for line in programs_after(out, 800)]
    assert took and took[0] < 800 + 20 + 20  # propagation (<= 20 ms) + a graceful handover
