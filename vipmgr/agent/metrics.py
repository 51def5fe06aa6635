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

from vipmgr.health.eligibility import NODE_CRITERIA, Eligibility
from vipmgr.health.monitor import ProbeStatus
from vipmgr.health.state import Status

DEFAULT_METRICS_ADDR = "127.0.0.1:9750"
ETCD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        """``failover_reasons``: reason label values created at 0 when a gateway is joined,
        so ``increase()`` in the alert rules sees the first failover after a restart."""
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
            "from another (or no) node, by reason.", ["gateway", "reason"], registry=r)
        self.heartbeats_sent = Counter(
            "vipmgr_heartbeats_sent", "Heartbeat advertisements sent.", ["gateway", "interface"],
            registry=r)
        self.heartbeats_received = Counter(
            "vipmgr_heartbeats_received", "Heartbeat advertisements accepted.", gw, registry=r)
        self.heartbeats_rejected = Counter(
            "vipmgr_heartbeats_rejected", "Received datagrams dropped, by reason.", ["reason"],
            registry=r)
        self.garps_sent = Counter(
            "vipmgr_garp_sent", "Gratuitous ARPs sent for the gateway's egress IP.",
            ["gateway", "interface"], registry=r)
        self.conntrack_deleted = Counter(
            "vipmgr_conntrack_entries_deleted", "Conntrack entries of the gateway's flows deleted "
            "on failover.", gw, registry=r)
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

    # --- gateways in the store and membership -------------------------------------------

    def gateway_exists(self, gateway: str, mode: str) -> None:
        """Any gateway in the store, joined or not: lets alerts see gateways nobody serves."""
        self.gateway_info.remove_by_labels({"gateway": gateway})
        self.gateway_info.labels(gateway, mode).set(1)

    def gateway_deleted(self, gateway: str) -> None:
        self.gateway_info.remove_by_labels({"gateway": gateway})

    def gateway_joined(self, gateway: str) -> None:
        """This node became a member (its labels match the nodeSelector): standby, not yet eligible."""
        self.gateway_active.labels(gateway, self.node).set(0)
        self.gateway_eligible.labels(gateway, self.node).set(0)
        self.heartbeat_path_ok.labels(gateway, self.node).set(1)
        self.etcd_loss_mode.labels(gateway).set(0)
        for reason in self.failover_reasons:
            self.failovers.labels(gateway, reason)
            self.transitions.labels(gateway, reason)

    def gateway_left(self, gateway: str) -> None:
        """Drop this node's per-gateway state series; counters keep their history."""
        for family in (self.gateway_active, self.gateway_role, self.gateway_eligible,
                       self.gateway_epoch, self.heartbeat_path_ok, self.etcd_loss_mode,
                       self.snat_sources, self.snat_cidrs):
            family.remove_by_labels({"gateway": gateway})

    # --- election -------------------------------------------------------------------------

    def role_changed(self, gateway: str, old: str, new: str, reason: str, *, active: bool) -> None:
        """One call per role change, the same moment the agent logs it."""
        self.gateway_role.labels(gateway, self.node, old).set(0)
        self.gateway_role.labels(gateway, self.node, new).set(1)
        self.gateway_active.labels(gateway, self.node).set(1 if active else 0)
        self.transitions.labels(gateway, reason).inc()

    def failover_completed(self, gateway: str, reason: str) -> None:
        """This node took over the active role; ``reason`` says why the previous holder lost it."""
        self.failovers.labels(gateway, reason).inc()

    def epoch_seen(self, gateway: str, epoch: int) -> None:
        self.gateway_epoch.labels(gateway).set(epoch)

    def etcd_loss_mode_changed(self, gateway: str, engaged: bool) -> None:
        self.etcd_loss_mode.labels(gateway).set(1 if engaged else 0)

    # --- heartbeats -----------------------------------------------------------------------

    def heartbeat_sent(self, gateway: str, interface: str) -> None:
        self.heartbeats_sent.labels(gateway, interface).inc()

    def heartbeat_received(self, gateway: str) -> None:
        self.heartbeats_received.labels(gateway).inc()

    def heartbeat_rejected(self, reason: str) -> None:
        """``reason``: a :class:`vipmgr.wire.message.Reject` value."""
        self.heartbeats_rejected.labels(reason).inc()

    def heartbeat_path_changed(self, gateway: str, ok: bool) -> None:
        """False when etcd says the peer is alive but heartbeats with it are missing."""
        self.heartbeat_path_ok.labels(gateway, self.node).set(1 if ok else 0)

    # --- etcd -----------------------------------------------------------------------------

    def etcd_connection(self, up: bool) -> None:
        self.etcd_up.set(1 if up else 0)

    def etcd_request(self, operation: str) -> ContextManager:
        """``with metrics.etcd_request("txn"): ...`` observes the request's duration."""
        return self.etcd_duration.labels(operation).time()

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

    def conntrack_entries_deleted(self, gateway: str, count: int) -> None:
        self.conntrack_deleted.labels(gateway).inc(count)

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
