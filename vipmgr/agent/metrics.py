"""The agent's Prometheus metrics: every family, and one method per event the agent reports.

Naming follows Prometheus conventions: ``vipmgr_`` prefix, base units
(seconds), ``_total`` counters, and state only ever as a gauge value or a
gauge label (never a label of a counter, whose series would never go away).
Every agent exports its own view; the alert rules in
``deploy/prometheus/vipmgr-alerts.yml`` aggregate across agents, which is why
a few gauges exist mainly for them (``vipmgr_gateway_info`` says a gateway
exists even when no member reports it; ``vipmgr_gateway_eligible`` says which
members could take over). docs/monitoring.md lists the families and what
the agent must call to keep them right.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as package_version
from threading import Thread
from typing import ContextManager, Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from vipmgr.agent.events import REASONS
from vipmgr.health.eligibility import NODE_CRITERIA, Eligibility
from vipmgr.health.monitor import ProbeStatus
from vipmgr.health.state import Status

DEFAULT_METRICS_ADDR = "127.0.0.1:9750"
ETCD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Why conntrack entries were deleted: the node took the gateway (its flows now leave with
# the egress IP), left it (flows SNATed to it), or a worker steers newly selected VMs.
CONNTRACK_REASONS = ("take", "leave", "steer")
HEARTBEAT_AUTH_MODES = ("etcd", "file", "insecure")
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP server (a daemon thread); ``close()`` stops it."""

    host: str
    port: int
    server: WSGIServer
    thread: Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def parse_metrics_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as given to ``--metrics-addr``."""
    host, sep, port = addr.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics address {addr!r} must be HOST:PORT, e.g. {DEFAULT_METRICS_ADDR} "
                         "(0.0.0.0:9750 to listen on every address)")
    return host, int(port)


class AgentMetrics:
    """Metric families of one agent (``node``); pass a private registry in tests."""

    def __init__(self, node: str, registry: CollectorRegistry | None = None, *,
                 failover_reasons: Iterable[str] = ()):
        """``failover_reasons``: the core's causes, transition label values created at 0 when
        a gateway is joined, so ``increase()`` in the alert rules sees the first change after
        a restart; failovers are counted by :data:`vipmgr.agent.events.REASONS`."""
        self.node = node
        self.registry = REGISTRY if registry is None else registry
        self.failover_reasons = tuple(failover_reasons)
        r = self.registry

        self.build_info = Info("vipmgr_build", "vipmgr version running on this node.", registry=r)
        self.build_info.info({"version": _vipmgr_version(), "python": platform.python_version()})

        gw, gw_node = ["gateway"], ["gateway", "node"]
        self.gateway_info = Gauge(
            "vipmgr_gateway_info", "1 for every EgressGateway in the store, as this agent sees it.",
            ["gateway", "mode"], registry=r)
        self.gateway_active = Gauge(
            "vipmgr_gateway_active", "1 while this node is the gateway's active node, else 0; "
            "one series per member node.", gw_node, registry=r)
        self.gateway_role = Gauge(
            "vipmgr_gateway_role", "1 for this node's current role in the gateway, 0 for roles "
            "it held before.", [*gw_node, "role"], registry=r)
        self.gateway_eligible = Gauge(
            "vipmgr_gateway_eligible", "1 while this node may be active for the gateway "
            "(ready, not cordoned, datapath ready, selected).", gw_node, registry=r)
        self.gateway_epoch = Gauge(
            "vipmgr_gateway_epoch", "Fencing epoch (etcd create_revision of the authority key) "
            "this agent last saw for the gateway; 0 when nobody holds it.", gw, registry=r)
        self.heartbeat_path_ok = Gauge(
            "vipmgr_gateway_heartbeat_path_ok", "0 while etcd says the peer is alive but this "
            "node's heartbeats with it are broken (the heartbeat network, not the node, failed).",
            gw_node, registry=r)
        self.etcd_loss_mode = Gauge(
            "vipmgr_gateway_etcd_loss_mode_active", "1 while onEtcdLoss: vrrp fallback election "
            "is engaged for the gateway (a double fault may then give two actives).", gw,
            registry=r)
        self.snat_sources = Gauge(
            "vipmgr_snat_sources", "Source addresses in the gateway's SNAT set on this node.", gw,
            registry=r)
        self.snat_cidrs = Gauge(
            "vipmgr_snat_cidrs", "Destination CIDRs in the gateway's SNAT set on this node.", gw,
            registry=r)
        self.transitions = Counter(
            "vipmgr_gateway_transitions", "Role changes of this node in the gateway, by reason.",
            ["gateway", "reason"], registry=r)
        self.failovers = Counter(
            "vipmgr_gateway_failovers", "Times this node took over the gateway's active role "
            "from another (or no) node, by the reason the previous holder lost it (silence, "
            "link-down, cordon, health, switchover, shutdown, preempt, rebalance, etcd, "
            "restart, initial, released, superseded).", ["gateway", "reason"], registry=r)
        self.history_failures = Counter(
            "vipmgr_history_write_failures", "Gateway history events (vipmgr events) this agent "
            "could not write to etcd.", ["gateway"], registry=r)
        self.heartbeats_sent = Counter(
            "vipmgr_heartbeats_sent", "Heartbeat advertisements sent.", ["gateway", "interface"],
            registry=r)
        self.heartbeats_received = Counter(
            "vipmgr_heartbeats_received", "Heartbeat advertisements accepted.", gw, registry=r)
        self._sent: dict[tuple[str, str], Counter] = {}
        self._received: dict[str, Counter] = {}
        self.heartbeats_rejected = Counter(
            "vipmgr_heartbeats_rejected", "Received datagrams dropped, by reason.", ["reason"],
            registry=r)
        self.heartbeat_auth_mode = Gauge(
            "vipmgr_heartbeat_auth_mode", "1 for the way this agent authenticates heartbeats "
            "now (etcd: keys from etcd, file: a key file, insecure: none), 0 for the others.",
            ["mode"], registry=r)
        self.heartbeat_insecure = Gauge(
            "vipmgr_heartbeat_insecure", "1 while this agent sends and accepts unauthenticated "
            "heartbeats (heartbeat.insecure).", registry=r)
        self.garps_sent = Counter(
            "vipmgr_garp_sent", "Gratuitous ARPs sent for the gateway's egress IP.",
            ["gateway", "interface"], registry=r)
        self.conntrack_deleted = Counter(
            "vipmgr_conntrack_entries_deleted", "Conntrack entries of the gateway's flows deleted "
            "on a role change, by reason: take (this node became active), leave (it stopped "
            "being active), steer (a worker steers newly selected VMs).", ["gateway", "reason"],
            registry=r)
        self.dropped = Counter(
            "vipmgr_dropped_packets", "Packets of the gateway's selected traffic this node "
            "dropped instead of letting them leave with a wrong source, by reason: fenced "
            "(standby gate), failclosed (worker, no active node), misrouted (active node, the "
            "route leaves by another interface than the gateway's).", ["gateway", "reason"],
            registry=r)
        self._drops_seen: dict[tuple[str, str], int] = {}
        self.deadman_refreshes = Counter(
            "vipmgr_deadman_refreshes", "Refreshes of the self-expiring kernel state while active.",
            gw, registry=r)
        self.etcd_moves = Counter(
            "vipmgr_etcd_member_moves", "Times this agent's etcd client moved to another member "
            "(the one it used died, was partitioned or lagged).", registry=r)
        self.loop_lag_seconds = Histogram(
            "vipmgr_event_loop_lag_seconds", "How late the agent's event loop ran a 10 ms timer "
            "(the elections' timers are late by as much).", buckets=LOOP_LAG_BUCKETS, registry=r)
        self.sync_entries = Counter(
            "vipmgr_conntrack_sync_entries", "Conntrack entries replicated for the gateway, by "
            "direction (sent by the active node, received by a standby).",
            ["gateway", "direction"], registry=r)
        self.sync_cached = Gauge(
            "vipmgr_conntrack_sync_cached_entries", "Replicated entries a standby holds for "
            "the gateway (bounded: 65536).", gw, registry=r)
        self.sync_lag = Gauge(
            "vipmgr_conntrack_sync_lag_seconds", "Receive time minus send stamp of the last "
            "replicated delta (wall clocks: needs NTP).", gw, registry=r)
        self.sync_resyncs = Counter(
            "vipmgr_conntrack_sync_resyncs", "Full snapshots the active node sent, by reason "
            "(requested, overrun).", ["gateway", "reason"], registry=r)
        self.sync_injected = Counter(
            "vipmgr_conntrack_sync_injected", "Replicated entries written into the kernel on "
            "takeover, by outcome (created, existed, failed).", ["gateway", "outcome"],
            registry=r)
        self.sync_inject_seconds = Gauge(
            "vipmgr_conntrack_sync_inject_seconds", "Duration of the last takeover's injection.",
            gw, registry=r)
        self.sync_rejected = Counter(
            "vipmgr_conntrack_sync_rejected", "Replication datagrams dropped, by reason (auth, "
            "stale, malformed, unknown-gateway).", ["reason"], registry=r)
        self.sync_overflow = Counter(
            "vipmgr_conntrack_sync_overflow", "Replicated entries a standby dropped because "
            "its cache was full.", gw, registry=r)
        self.etcd_up = Gauge(
            "vipmgr_etcd_up", "1 while this agent's etcd session is healthy.", registry=r)
        self.etcd_duration = Histogram(
            "vipmgr_etcd_request_duration_seconds", "etcd request latency, by operation.",
            ["operation"], buckets=ETCD_BUCKETS, registry=r)
        self.node_eligible = Gauge(
            "vipmgr_node_eligible", "1 while this node meets the criterion (ready, not_cordoned, "
            "datapath_ready; eligible = all three).", ["node", "criterion"], registry=r)
        self.probe_up = Gauge(
            "vipmgr_probe_up", "1 while the health probe is up (pending and down are 0).",
            ["probe", "kind"], registry=r)
        self.active_gateways = Gauge(
            "vipmgr_node_active_gateways", "Gateways this node serves (active) now.", ["node"],
            registry=r)
        self.placement_share = Gauge(
            "vipmgr_node_placement_share", "Gateways placement puts on this node (its fair "
            "share: it is their first choice; docs/placement.md).", ["node"], registry=r)
        self._serving: set[str] = set()

    # --- gateways in the store and membership -------------------------------------------

    def gateway_exists(self, gateway: str, mode: str) -> None:
        """Any gateway in the store, joined or not: lets alerts see gateways nobody serves."""
        self.gateway_info.remove_by_labels({"gateway": gateway})
        self.gateway_info.labels(gateway, mode).set(1)

    def gateway_deleted(self, gateway: str) -> None:
        self.gateway_info.remove_by_labels({"gateway": gateway})

    def gateway_joined(self, gateway: str, eligible: bool = False) -> None:
        """This node became a member (its labels match the nodeSelector): every per-gateway
        gauge gets a value now, standby, ``eligible`` as the agent evaluated it at join."""
        self.gateway_active.labels(gateway, self.node).set(0)
        self.gateway_role.labels(gateway, self.node, "standby").set(1)
        self.gateway_eligible.labels(gateway, self.node).set(1 if eligible else 0)
        self.gateway_epoch.labels(gateway)
        self.heartbeat_path_ok.labels(gateway, self.node).set(1)
        self.etcd_loss_mode.labels(gateway).set(0)
        self.snat_sources.labels(gateway)
        self.snat_cidrs.labels(gateway)
        for cause in self.failover_reasons:
            self.transitions.labels(gateway, cause)
        for reason in REASONS:
            self.failovers.labels(gateway, reason)
        for reason in CONNTRACK_REASONS:
            self.conntrack_deleted.labels(gateway, reason)
        self.history_failures.labels(gateway)

    def gateway_left(self, gateway: str) -> None:
        """Drop this node's per-gateway state series; counters keep their history."""
        for family in (self.gateway_active, self.gateway_role, self.gateway_eligible,
                       self.gateway_epoch, self.heartbeat_path_ok, self.etcd_loss_mode,
                       self.snat_sources, self.snat_cidrs, self.sync_cached, self.sync_lag,
                       self.sync_inject_seconds):
            family.remove_by_labels({"gateway": gateway})

    # --- election -------------------------------------------------------------------------

    def role_changed(self, gateway: str, old: str, new: str, reason: str, *, active: bool) -> None:
        """One call per role change, the same moment the agent logs it."""
        self.gateway_role.labels(gateway, self.node, old).set(0)
        self.gateway_role.labels(gateway, self.node, new).set(1)
        self.gateway_active.labels(gateway, self.node).set(1 if active else 0)
        self.transitions.labels(gateway, reason).inc()
        (self._serving.add if active else self._serving.discard)(gateway)
        self.active_gateways.labels(self.node).set(len(self._serving))

    def placement(self, share: int) -> None:
        """Placement recomputed: how many gateways are this node's first choice."""
        self.placement_share.labels(self.node).set(share)

    def failover_completed(self, gateway: str, reason: str) -> None:
        """This node took over the active role; ``reason`` says why the previous holder lost it."""
        self.failovers.labels(gateway, reason).inc()

    def epoch_seen(self, gateway: str, epoch: int) -> None:
        """The fencing epoch etcd holds for the gateway (0: nobody holds it), as this member
        last saw it; every member reports the same value once its watch caught up."""
        self.gateway_epoch.labels(gateway).set(epoch)

    def history_write_failed(self, gateway: str) -> None:
        self.history_failures.labels(gateway).inc()

    def etcd_loss_mode_changed(self, gateway: str, engaged: bool) -> None:
        self.etcd_loss_mode.labels(gateway).set(1 if engaged else 0)

    # --- heartbeats -----------------------------------------------------------------------

    def heartbeat_sent(self, gateway: str, interface: str) -> None:
        child = self._sent.get((gateway, interface))
        if child is None:
            child = self._sent[gateway, interface] = self.heartbeats_sent.labels(gateway, interface)
        child.inc()

    def heartbeat_received(self, gateway: str) -> None:
        """Once per record heard (thousands a second at many gateways): the labelled child
        is looked up once per gateway, not per call (counters are never removed)."""
        child = self._received.get(gateway)
        if child is None:
            child = self._received[gateway] = self.heartbeats_received.labels(gateway)
        child.inc()

    def heartbeat_rejected(self, reason: str) -> None:
        """``reason``: a :class:`vipmgr.wire.message.Reject` value."""
        self.heartbeats_rejected.labels(reason).inc()

    def heartbeat_auth(self, mode: str, key_id: str | None = None) -> None:
        """At every change of the heartbeat keys; ``key_id`` is for logs, never a label."""
        for known in HEARTBEAT_AUTH_MODES:
            self.heartbeat_auth_mode.labels(known).set(1 if known == mode else 0)
        self.heartbeat_insecure.set(1 if mode == "insecure" else 0)

    def heartbeat_path_changed(self, gateway: str, ok: bool) -> None:
        """False when etcd says the peer is alive but heartbeats with it are missing."""
        self.heartbeat_path_ok.labels(gateway, self.node).set(1 if ok else 0)

    # --- etcd -----------------------------------------------------------------------------

    def etcd_connection(self, up: bool) -> None:
        self.etcd_up.set(1 if up else 0)

    def etcd_request(self, operation: str) -> ContextManager:
        """``with metrics.etcd_request("txn"): ...`` observes the request's duration."""
        return self.etcd_duration.labels(operation).time()

    def etcd_member_moved(self) -> None:
        self.etcd_moves.inc()

    def loop_lag(self, seconds: float) -> None:
        """How late a periodic 10 ms timer fired (vipmgr.agent.looplag)."""
        self.loop_lag_seconds.observe(seconds)

    # --- conntrack replication (vipmgr.agent.ctsync) ------------------------------------

    def ctsync_replicated(self, gateway: str, direction: str, count: int) -> None:
        self.sync_entries.labels(gateway, direction).inc(count)

    def ctsync_entries(self, gateway: str, count: int) -> None:
        self.sync_cached.labels(gateway).set(count)

    def ctsync_lag(self, gateway: str, seconds: float) -> None:
        self.sync_lag.labels(gateway).set(seconds)

    def ctsync_resync(self, gateway: str, reason: str) -> None:
        self.sync_resyncs.labels(gateway, reason).inc()

    def ctsync_committed(self, gateway: str, created: int, existed: int, failed: int,
                         seconds: float) -> None:
        for outcome, n in (("created", created), ("existed", existed), ("failed", failed)):
            self.sync_injected.labels(gateway, outcome).inc(n)
        self.sync_inject_seconds.labels(gateway).set(seconds)

    def ctsync_rejected(self, reason: str) -> None:
        self.sync_rejected.labels(reason).inc()

    def ctsync_overflow(self, gateway: str, count: int) -> None:
        self.sync_overflow.labels(gateway).inc(count)

    # --- eligibility and health -----------------------------------------------------------

    def node_eligibility(self, eligibility: Eligibility) -> None:
        """The node-wide criteria (``selected`` is per gateway: see gateway_eligibility)."""
        for criterion in NODE_CRITERIA:
            self.node_eligible.labels(self.node, criterion).set(
                1 if getattr(eligibility, criterion) else 0)
        self.node_eligible.labels(self.node, "eligible").set(1 if eligibility.node_eligible else 0)

    def gateway_eligibility(self, gateway: str, eligible: bool) -> None:
        self.gateway_eligible.labels(gateway, self.node).set(1 if eligible else 0)

    def probes_updated(self, statuses: Iterable[ProbeStatus]) -> None:
        """Replace the probe series (probes come and go with SIGHUP)."""
        self.probe_up.clear()
        for status in statuses:
            self.probe_up.labels(status.name, status.kind).set(
                1 if status.status is Status.UP else 0)

    # --- dataplane ------------------------------------------------------------------------

    def garp_sent(self, gateway: str, interface: str, count: int = 1) -> None:
        self.garps_sent.labels(gateway, interface).inc(count)

    def conntrack_entries_deleted(self, gateway: str, count: int, reason: str) -> None:
        """``reason``: one of CONNTRACK_REASONS (anything else counts as ``other``: the label
        stays bounded whatever the caller passes)."""
        if reason not in CONNTRACK_REASONS:
            reason = "other"
        self.conntrack_deleted.labels(gateway, reason).inc(count)

    def snat_sets(self, gateway: str, sources: int, cidrs: int) -> None:
        self.snat_sources.labels(gateway).set(sources)
        self.snat_cidrs.labels(gateway).set(cidrs)

    def deadman_refreshed(self, gateway: str) -> None:
        self.deadman_refreshes.labels(gateway).inc()

    def drops_read(self, counts: Mapping[tuple[str, str], int]) -> None:
        """The kernel's drop counters now, per (gateway, reason). A kernel counter is
        recreated at 0 when its role comes back, so only the increase since the last read
        is added, and a lower value counts from 0."""
        for key, packets in counts.items():
            last = self._drops_seen.get(key, 0)
            self.dropped.labels(*key).inc(packets - last if packets >= last else packets)
        self._drops_seen = dict(counts)

    # --- exposition -----------------------------------------------------------------------

    def serve(self, addr: str = DEFAULT_METRICS_ADDR) -> MetricsEndpoint:
        """Start ``/metrics`` on ``addr`` (port 0 picks a free port) in a daemon thread."""
        host, port = parse_metrics_addr(addr)
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsEndpoint(host, server.server_address[1], server, thread)


def _vipmgr_version() -> str:
    try:
        return package_version("vipmgr")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
