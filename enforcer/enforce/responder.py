"""The responder: blocks, freezes and kills, and the protect-mode response the detector
calls (the `ProtectResponse` port).

State lives in the database (blocks, freezes) and is pushed into the kernel (nftables,
cgroup freezer). At start the kernel is left exactly as it is until the inventory has
synchronised with Docker (so no block is lifted for a moment because the container list
is still empty); then the kernel is reconciled with the database: missing set elements
and freezes are re-applied, elements of containers that are gone are removed. Later the
firewall follows the inventory (a restarted container gets its new address blocked) and a
periodic check repairs the table if someone else changed it.

Actions the enforcer takes on its own (protect mode) are written to the audit log as
uid 0, user "stockade"; actions asked over the socket are audited by the server.

The automatic blocks of one container are a budget (MAX_AUTO_BLOCKS) so that protect mode
never grows the ruleset without bound. A spent budget fails closed, never open: the
container is cut off from every peer (one block of 0.0.0.0/0 and ::/0, both directions;
frozen instead if it cannot be blocked), with a critical alert and an audit record.
Blocking rather than freezing: it closes exactly what the budget guards, it follows the
container across restarts (a restarted container is thawed, a block finds its new
address), and it is listed and lifted like every other block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..inventory import Inventory
from ..models import Container, iso_time
from ..ports import AlertSink, AuditTrail, ContainerChanged, ModeLookup, Network, NetworkPolicySource, ThreatNetworks
from ..server import OpError
from ..sensors.events import ExecEvent, NetworkEvent
from ..store import StoreError
from ..store.enforcement import BlockRow, DuplicateBlock, EnforcementRepo, FreezeRow
from . import freezer as fz
from ..models import BadPeer, check_port, split_peer_port
from .blocks import BlockInput, BlockView, as_network, desired_ruleset
from .firewall import Firewall
from .netpolicy import PeerRule, allows, policy_elements
from .nft import NftError
from .processes import ProcessError, kill_in_container, parse_signal
from .refusals import RefusalWatch

log = logging.getLogger(__name__)

SYSTEM_UID = 0
SYSTEM_USER = "stockade"
APPLY_DEBOUNCE = 0.05  # seconds: inventory bursts (compose up) become one firewall change
MODE_POLL = 2.0  # seconds between checks of which containers are in protect mode
VERIFY_INTERVAL = 30.0  # seconds between checks that our table is still what we applied
SYNC_WAIT = 60.0  # seconds to wait for the first inventory sync before reconciling anyway
MAX_AUTO_BLOCKS = 64  # per container: protect mode never grows the ruleset without bound
CUT_OFF_PEERS = ("0.0.0.0/0", "::/0")  # a spent budget blocks these (every port, both ways)


class Responder:
    def __init__(self, nft_table: str, inventory: Inventory, repo: EnforcementRepo, modes: ModeLookup,
                 audit: AuditTrail, changed: ContainerChanged, threats: ThreatNetworks | None = None,
                 policies: NetworkPolicySource | None = None, alerts: AlertSink | None = None) -> None:
        self.inventory = inventory
        self.repo = repo
        self.modes = modes
        self.audit = audit
        self.changed = changed
        self.threat_source = threats
        self.alert_sink = alerts  # for what the responder itself must report (a spent budget)
        self.cut_offs = 0
        self.policy_source = policies
        self.policy_containers = 0  # containers under default-deny in the last desired state
        self.firewall = Firewall(nft_table)
        # Refused inbound connections: the kernel's NFLOG of the deny-in rules -> alerts.
        self.refusals = RefusalWatch(nft_table, inventory, alerts, self.firewall.unlogged_refusals)
        self.blocks: dict[int, BlockRow] = {}
        self.views: dict[int, BlockView] = {}
        self.freezes: dict[str, FreezeRow] = {}  # container id -> freeze
        self.reconciled = asyncio.Event()
        self.reconcile_report: dict[str, Any] = {}
        self.bridge_netfilter = _bridge_netfilter()
        self.auto_actions = 0
        self.errors = 0
        self.last_error = ""
        self._threats: list[Network] = []
        # Guarded networks (netpolicy.policy_elements): protected container name -> the
        # (network, host address) pairs it was seen on; kept while it is stopped, so that
        # its restart on that network is refused until its policy is in place.
        self._guard: dict[str, set[tuple[str, str]]] = {}
        self._host_ifaces: list[Any] = []  # ipaddress interfaces of the host (bridges' gateways)
        self._protect: frozenset[str] = frozenset()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._action_locks: dict[str, asyncio.Lock] = {}

    # -- component ------------------------------------------------------------------------
    async def start(self) -> None:
        self.blocks = {b.id: b for b in await self.repo.blocks()}
        self.freezes = {f.container_id: f for f in await self.repo.freezes()}
        try:
            # Adopt what the kernel holds; reconcile once the inventory is known.
            opened = await self.firewall.open()
            self.reconcile_report = {"table_existed": opened.table_existed}
        except NftError as e:
            self._note_error(f"nftables unavailable: {e}")
            log.error("enforcement: %s; blocks cannot be enforced", e)
        if self.bridge_netfilter != "1":
            log.warning("enforcement: net.bridge.bridge-nf-call-iptables is %s; container-to-container "
                        "blocks rely on the bridge table", self.bridge_netfilter or "unavailable")
        if self.firewall.available and self.policy_source is not None:
            await self.refusals.start()
        self.inventory.subscribe(self._on_inventory_change)
        if self.threat_source is not None:
            self.threat_source.on_change(self._on_feeds_change)
        if self.policy_source is not None:
            self.policy_source.on_policy_change(self._dirty.set)
        self._tasks = [asyncio.create_task(self._startup_reconcile(), name="enforce-reconcile")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.refusals.stop()
        # The table stays in the kernel: blocks hold while the enforcer is down.
        await self.firewall.stop()

    def describe_container(self, c: Container) -> dict[str, Any]:
        blocked = sum(1 for b in self.blocks.values() if b.container_name == c.name)
        return {"frozen": fz.is_frozen(c), "blocks": blocked}

    def status(self) -> dict[str, Any]:
        fw = self.firewall
        return {"enforcement": {
            "nftables": {"table": fw.table, "available": fw.available, "error": fw.error,
                         "elements": fw.element_count(), "transactions": fw.stats.transactions,
                         "repairs": fw.stats.repairs, "last_apply_ms": round(fw.stats.last_apply_ms, 3)},
            "bridge_nf_call_iptables": self.bridge_netfilter,
            "blocks": len(self.blocks), "blocks_active": sum(1 for v in self.views.values() if v.active),
            "freezes": len(self.freezes), "auto_actions": self.auto_actions, "cut_offs": self.cut_offs,
            "policy_containers": self.policy_containers, "refusals": self.refusals.status(),
            "reconciled": self.reconciled.is_set(), "reconcile": self.reconcile_report,
            "errors": self.errors, "error": self.last_error,
        }}

    # -- keeping the kernel in step ------------------------------------------------------------
    async def _startup_reconcile(self) -> None:
        try:
            await asyncio.wait_for(self.inventory.synced.wait(), SYNC_WAIT)
        except asyncio.TimeoutError:
            # Docker is down: keep what the kernel holds (stale is safer than lifted).
            log.warning("enforcement: no inventory after %gs; keeping the kernel's blocks as they are", SYNC_WAIT)
            await self.inventory.synced.wait()
        await self._refresh_threats()
        await self._refresh_host_interfaces()
        self._protect = self._protect_addresses()
        if self.firewall.available:
            try:
                report = await self.firewall.reconcile(self._desired())
                self.reconcile_report = {**report.to_dict(), **self.reconcile_report}
                log.info("enforcement: nftables table %s reconciled: %d elements re-applied, %d stale removed",
                         self.firewall.table, report.missing, report.stale)
            except NftError as e:
                self._note_error(f"reconcile failed: {e}")
        await self._reconcile_freezes()
        self.reconciled.set()
        self._tasks += [asyncio.create_task(self._apply_loop(), name="enforce-apply"),
                        asyncio.create_task(self._watch_loop(), name="enforce-watch")]

    async def _reconcile_freezes(self) -> None:
        for cid, row in list(self.freezes.items()):
            c = self.inventory.containers.get(cid)
            if c is None:
                await self.repo.remove_freeze(cid)
                self.freezes.pop(cid, None)
                log.info("enforcement: container %s is gone; its freeze is dropped", row.container_name)
                continue
            if c.state == "paused" or c.state != "running":
                continue  # Docker's pause is Docker's; a stopped container has nothing to freeze
            try:
                f = fz.freezer_for(c, prefer=row.backend or "v1")
                if await asyncio.to_thread(f.state) != fz.FROZEN:
                    await asyncio.to_thread(f.freeze)
                    log.info("enforcement: re-froze %s (stored freeze)", c.name)
            except fz.FreezerError as e:
                self._note_error(f"re-freezing {c.name}: {e}")


    def _protect_addresses(self) -> frozenset[str]:
        if not self._threats:
            return frozenset()
        out: set[str] = set()
        for c in self.inventory.containers.values():
            if c.state == "running" and self.modes.container_mode(c) == "protect":
                out.update(c.addresses())
        return frozenset(out)

    def _desired(self) -> Any:
        inputs = [BlockInput(b.id, b.container_name, b.peer, b.peer_kind, b.port, b.proto) for b in self.blocks.values()]
        # Only a running (or paused) container has addresses worth blocking.
        live = {c.name: c.addresses() for c in self.inventory.containers.values() if c.state in ("running", "paused")}
        # Feed networks go into the kernel only while some container is in protect mode.
        threats = self._threats if self._protect else []
        ruleset, self.views = desired_ruleset(inputs, lambda name: live.get(name, []), self._protect, threats)
        if self.policy_source is not None:
            ruleset.update(self._policy_sets(live))
        return ruleset

    def _policy_sets(self, live: dict[str, list[str]]) -> dict[str, frozenset[Any]]:
        """Default-deny of protected containers: their profiles' flows as set elements."""
        assert self.policy_source is not None
        policies = {name: [PeerRule(*flow) for flow in flows]
                    for name, flows in self.policy_source.network_policies().items()}
        services: dict[str, list[str]] = {}
        for c in self.inventory.containers.values():
            if c.state in ("running", "paused"):
                services.setdefault(f"{c.app}/{c.service}", []).extend(c.addresses())
        containers = [a for addrs in live.values() for a in addrs]
        elements = policy_elements(policies, lambda name: live.get(name, []), lambda s: services.get(s, []),
                                   containers, self._guarded(policies, live))
        self.policy_containers = sum(1 for name in policies if live.get(name))
        return {k: frozenset(v) for k, v in elements.items()}

    def _guarded(self, policies: dict[str, Any], live: dict[str, list[str]]) -> set[tuple[str, str]]:
        """The networks of protected containers, running or (re)starting: (network, host address)."""
        for name in policies:
            seen = {(str(i.network), str(i.ip)) for a in live.get(name, []) for i in self._host_ifaces
                    if _contains(i.network, a)}
            if seen:
                self._guard.setdefault(name, set()).update(seen)
        by_name = {c.name: c for c in self.inventory.containers.values()}
        for name in list(self._guard):
            c = by_name.get(name)
            if c is None or self.modes.container_mode(c) != "protect":
                del self._guard[name]  # removed, or no longer protected: its networks are not guarded
        return set().union(*self._guard.values()) if self._guard else set()

    async def _refresh_host_interfaces(self) -> None:
        if self.policy_source is None:
            return
        try:
            self._host_ifaces = await asyncio.to_thread(host_interfaces)
        except Exception as e:  # noqa: BLE001 - keep the last known (guarding stays as it was)
            self._note_error(f"reading the host's addresses: {e}")

    def refused_by_policy(self, c: Container, ev: NetworkEvent) -> bool:
        """True if the applied default-deny refused this flow at its first packet."""
        if ev.direction not in ("out", "in"):
            return False
        remote, local_ip = (_unmapped(x) for x in (ev.remote_ip, ev.local_ip))
        port = ev.remote_port if ev.direction == "out" else ev.local_port
        local = as_network(local_ip) if local_ip else None
        own = [local_ip] if local is not None and not local.network_address.is_unspecified else c.addresses()
        return any(allows(self.firewall.applied, ev.direction, a, remote, ev.proto, port) is False for a in own)

    async def sync_firewall(self) -> None:
        """Push the desired state now (ops call this so their effect is in force on return)."""
        if not self.firewall.available:
            raise OpError(f"nftables is not available: {self.firewall.error or 'see the enforcer log'}", "unavailable")
        await self._refresh_host_interfaces()
        try:
            await self.firewall.apply(self._desired())
        except NftError as e:
            self._note_error(str(e))
            raise OpError(f"nftables refused the change: {e}", "failed") from None

    def _on_inventory_change(self, change: Any) -> None:
        if change.change == "removed" and change.container.id in self.freezes:
            asyncio.create_task(self._drop_freeze(change.container.id))
        self._dirty.set()

    async def _drop_freeze(self, cid: str) -> None:
        self.freezes.pop(cid, None)
        await self.repo.remove_freeze(cid)

    def _on_feeds_change(self) -> None:
        asyncio.get_running_loop().create_task(self._refresh_threats(mark=True))

    async def _refresh_threats(self, mark: bool = False) -> None:
        if self.threat_source is None:
            return
        try:
            self._threats = await asyncio.to_thread(self.threat_source.ip_networks)
        except Exception as e:  # noqa: BLE001 - the per-event response still works
            self._note_error(f"reading threat-feed networks: {e}")
            return
        if mark:
            self._protect = self._protect_addresses()
            self._dirty.set()

    async def _apply_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(APPLY_DEBOUNCE)
            self._dirty.clear()
            if not self.firewall.available:
                continue
            await self._refresh_host_interfaces()
            try:
                await self.firewall.apply(self._desired())
            except NftError as e:
                self._note_error(f"applying blocks: {e}")

    async def _watch_loop(self) -> None:
        last_verify = time.monotonic()
        while True:
            await asyncio.sleep(MODE_POLL)
            protect = self._protect_addresses()
            if protect != self._protect:
                self._protect = protect
                self._dirty.set()
            if self.firewall.available and time.monotonic() - last_verify >= VERIFY_INTERVAL:
                last_verify = time.monotonic()
                try:
                    if not await self.firewall.verify():
                        log.warning("enforcement: table %s was changed outside Stockade; restoring it",
                                    self.firewall.table)
                        await self.firewall.reconcile(self._desired())
                except NftError as e:
                    self._note_error(f"verifying table: {e}")

    def _note_error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message[:300]
        log.warning("enforcement: %s", message)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._action_locks.setdefault(key, asyncio.Lock())

    # -- blocks ---------------------------------------------------------------------------------
    def block_view(self, b: BlockRow) -> dict[str, Any]:
        view = self.views.get(b.id, BlockView())
        return {"id": b.id, "container": b.container_name, "container_id": b.container_id, "peer": b.peer,
                "peer_kind": b.peer_kind, "port": b.port or None, "proto": b.proto, "created": iso_time(b.created),
                "reason": b.reason, "source": b.source, "alert_id": b.alert_id, "active": view.active,
                "addresses": view.own, "peer_addresses": view.peers}

    def parse_peer(self, c: Container, peer: Any, port: Any) -> tuple[str, str, int]:
        """(peer, peer_kind, port) from what a person or the protect response gave."""
        if not isinstance(peer, str) or not peer.strip() or len(peer) > 256:
            raise OpError("peer must be a container, an address or a CIDR", "bad_request")
        try:
            text, embedded = split_peer_port(peer)
            if port in (None, "", 0):
                port_n = embedded or 0
            elif isinstance(port, int) and not isinstance(port, bool):
                port_n = check_port(port)
            elif isinstance(port, str) and port.isdigit():
                port_n = check_port(int(port))
            else:
                raise BadPeer("port must be a number from 1 to 65535")
            if embedded and port_n != embedded:
                raise BadPeer(f"two ports given ({embedded} and {port_n})")
        except BadPeer as e:
            raise OpError(str(e), "bad_request") from None
        net = as_network(text)
        if net is not None:
            return str(net), "network", port_n
        other = self.inventory.resolve(text)
        if other is None:
            raise OpError(f"peer {text[:128]!r} is neither a container on this host nor an address or CIDR",
                          "not_found")
        if other.id == c.id:
            raise OpError("a container cannot be blocked from itself", "bad_request")
        return other.name, "container", port_n

    async def add_block(self, c: Container, peer: str, peer_kind: str, port: int, proto: str,
                        reason: str = "", source: str = "manual", alert_id: int | None = None) -> tuple[BlockRow, bool]:
        """Store and enforce a block; (block, created). An identical block is returned as is."""
        if proto not in ("tcp", "udp", "any"):
            raise OpError("proto must be tcp, udp or any", "bad_request")
        if "host" in {n.network for n in c.networks} and not c.addresses():
            raise OpError(f"container {c.name} uses the host network: it has no address of its own to block",
                          "conflict")
        if not self.firewall.available:
            raise OpError(f"nftables is not available: {self.firewall.error or 'see the enforcer log'}", "unavailable")
        async with self._lock("blocks"):
            existing = await self.repo.find_block(c.name, peer, port, proto)
            if existing is not None:
                self.blocks[existing.id] = existing
                await self.sync_firewall()
                return existing, False
            try:
                row = await self.repo.add_block(c.name, c.id, peer, peer_kind, port, proto, reason[:500], source,
                                                alert_id)
            except DuplicateBlock as e:
                raise OpError(str(e), "conflict") from None
            except StoreError as e:
                # Stored before applied: a block that could not be recorded is not applied.
                raise OpError(f"{e}; the block is not applied", "unavailable") from None
            self.blocks[row.id] = row
            try:
                await self.sync_firewall()
            except OpError:
                # Not in force: do not keep a block that would only look applied.
                self.blocks.pop(row.id, None)
                await self.repo.remove_blocks([row.id])
                raise
            return row, True

    async def remove_blocks(self, rows: list[BlockRow]) -> int:
        async with self._lock("blocks"):
            try:
                n = await self.repo.remove_blocks([b.id for b in rows])
            except StoreError as e:
                raise OpError(f"{e}; the block stays", "unavailable") from None
            for b in rows:
                self.blocks.pop(b.id, None)
            await self.sync_firewall()
            return n

    def blocks_of(self, name: str) -> list[BlockRow]:
        return [b for b in self.blocks.values() if b.container_name == name]

    # -- freezes -------------------------------------------------------------------------------
    async def freeze(self, c: Container, reason: str = "") -> dict[str, Any]:
        if c.state == "paused":
            # Docker paused it (with the same freezer): already frozen, and Docker's to undo.
            return {"container": c.name, "state": fz.FROZEN, "paused_by_docker": True}
        try:
            f = fz.freezer_for(c)
        except fz.FreezerError as e:
            raise OpError(str(e), "conflict") from None
        async with self._lock(f"freeze:{c.id}"):
            # Stored first: if the enforcer dies mid-way, the next start finishes the freeze.
            try:
                self.freezes[c.id] = await self.repo.add_freeze(c.id, c.name, f.backend, reason)
            except StoreError as e:
                raise OpError(f"{e}; {c.name} is not frozen", "unavailable") from None
            try:
                state = await asyncio.to_thread(f.freeze)
            except fz.FreezerError as e:
                raise OpError(f"freezing {c.name} failed: {e}", "failed") from None
        self.changed(c)
        return {"container": c.name, "state": state, "backend": f.backend}

    async def unfreeze(self, c: Container) -> dict[str, Any]:
        if c.state == "paused":
            raise OpError(f"container {c.name} is paused by Docker: use docker unpause", "conflict")
        if c.state != "running":
            await self._drop_freeze(c.id)
            raise OpError(f"container {c.name} is {c.state}, not running", "conflict")
        async with self._lock(f"freeze:{c.id}"):
            state = fz.THAWED
            for backend in ("v1", "v2"):  # whichever froze it (an older run may have used the other)
                try:
                    f = fz.freezer_for(c, prefer=backend)
                except fz.FreezerError:
                    continue
                if f.backend != backend:
                    continue
                try:
                    if await asyncio.to_thread(f.state) != fz.THAWED:
                        state = await asyncio.to_thread(f.thaw)
                except fz.FreezerError as e:
                    raise OpError(f"thawing {c.name} failed: {e}", "failed") from None
            await self._drop_freeze(c.id)
        self.changed(c)
        return {"container": c.name, "state": state}

    # -- processes ------------------------------------------------------------------------------
    async def kill(self, c: Container, pid: int, sig: Any = None) -> dict[str, Any]:
        if c.state not in ("running", "paused") or not c.cgroup_path:
            raise OpError(f"container {c.name} is {c.state}, not running", "conflict")
        try:
            signum = parse_signal(sig)
            await asyncio.to_thread(kill_in_container, pid, c.cgroup_path, c.name, signum)
        except ProcessError as e:
            raise OpError(str(e), e.code) from None
        result: dict[str, Any] = {"pid": pid, "signal": signum.name.removeprefix("SIG")}
        if fz.is_frozen(c):
            result["note"] = "the container is frozen: the signal takes effect when it is unfrozen"
        return result

    # -- protect mode -----------------------------------------------------------------------------
    async def respond(self, c: Container, event: Any, alert: Any) -> str | None:
        """The detector's protect-mode hook: stop what an alert is about. Returns "killed",
        "blocked" or None (nothing this layer can stop, e.g. a file write)."""
        if isinstance(event, ExecEvent):
            if event.killed:
                return "killed"
            if not event.pid:
                return None
            try:
                await self.kill(c, event.pid)
            except OpError as e:
                await self._audit_auto("kill", c, {"pid": event.pid, "alert_id": alert.id}, f"error: {e}")
                return None
            await self._audit_auto("kill", c, {"pid": event.pid, "signal": "KILL", "alert_id": alert.id}, "ok")
            return "killed"
        if isinstance(event, NetworkEvent):
            return await self._respond_network(c, event, alert)
        return None

    async def _respond_network(self, c: Container, ev: NetworkEvent, alert: Any) -> str | None:
        if alert.kind != "threat" and self.refused_by_policy(c, ev):
            # The kernel refused the first packet: nothing moved, no block to add.
            return "blocked"
        proto = ev.proto if ev.proto in ("tcp", "udp") else "any"
        if ev.direction == "listen":
            if not ev.local_port:
                return None
            peer_text, port = ("0.0.0.0/0" if ev.family == 4 else "::/0"), ev.local_port
        else:
            ip = ev.remote_ip[7:] if ev.remote_ip.startswith("::ffff:") and "." in ev.remote_ip else ev.remote_ip
            net = as_network(ip)
            if net is None or net.network_address.is_loopback or net.network_address.is_unspecified:
                return None
            peer_text = ip
            remote = self.inventory.containers.get(ev.remote_container_id) if ev.remote_container_id else None
            if remote is not None and remote.id != c.id:
                peer_text = remote.name
            # A threat-feed address is cut off on every port; an unexpected peer only on that one.
            port = 0 if alert.kind == "threat" else (ev.remote_port if ev.direction == "out" else ev.local_port)
        args = {"peer": peer_text, "port": port or None, "proto": proto if port else "any", "alert_id": alert.id}
        # Counted and added under one lock: concurrent responses cannot overshoot the budget.
        async with self._lock(f"budget:{c.id}"):
            if sum(1 for b in self.blocks_of(c.name) if b.source == "protect") >= MAX_AUTO_BLOCKS:
                return await self._cut_off(c, alert)
            try:
                peer, kind, port_n = self.parse_peer(c, peer_text, port or None)
                row, _ = await self.add_block(c, peer, kind, port_n, proto if port_n else "any",
                                              reason=f"protect: alert {alert.id}: {alert.summary}"[:500],
                                              source="protect", alert_id=alert.id)
            except OpError as e:
                await self._audit_auto("block", c, args, f"error: {e}")
                return None
        await self._audit_auto("block", c, {**args, "block_id": row.id}, "ok")
        return "blocked"

    async def _cut_off(self, c: Container, alert: Any) -> str | None:
        """The automatic-block budget is spent: fail closed (see the module's comment)."""
        reason = f"protect: {MAX_AUTO_BLOCKS} automatic blocks spent: cut off (alert {alert.id})"
        created: list[int] = []
        errors: list[str] = []
        for net in CUT_OFF_PEERS:
            try:
                row, new = await self.add_block(c, net, "network", 0, "any", reason=reason, source="protect",
                                                alert_id=alert.id)
            except OpError as e:
                errors.append(str(e))
                continue
            if new:
                created.append(row.id)
        if not created and not errors:
            return "blocked"  # already cut off: this alert's peer is blocked with everything else
        action, how = "blocked", "cut off from every peer (blocked both ways, every port)"
        if errors:
            try:
                await self.freeze(c, reason=reason)
                action, how = "frozen", f"frozen: it could not be blocked ({errors[0]})"
            except OpError as e:
                action, how = "alerted", f"NOT stopped: blocking failed ({errors[0]}), freezing failed ({e})"
        self.cut_offs += 1
        log.error("enforcement: %s spent its %d automatic blocks; %s", c.name, MAX_AUTO_BLOCKS, how)
        await self._audit_auto("cut_off", c, {"budget": MAX_AUTO_BLOCKS, "peers": list(CUT_OFF_PEERS),
                                              "block_ids": created, "alert_id": alert.id},
                               "ok" if action != "alerted" else f"error: {how}")
        if self.alert_sink is not None:
            self.alert_sink.raise_alert(
                c, "network", "critical", f"{MAX_AUTO_BLOCKS} automatic blocks spent: {how}",
                {"budget": MAX_AUTO_BLOCKS, "peers": list(CUT_OFF_PEERS), "block_ids": created,
                 "errors": errors, "alert_id": alert.id, "action": action},
                subject="budget:auto-blocks", rule="budget", action=action, fold_burst=False)
        return None if action == "alerted" else action

    async def _audit_auto(self, action: str, c: Container, args: dict[str, Any], result: str) -> None:
        self.auto_actions += 1
        try:
            await self.audit.record(SYSTEM_UID, SYSTEM_USER, action, c.name, {**args, "automatic": True}, result)
        except Exception as e:  # noqa: BLE001 - the action stands; say the record failed
            log.warning("enforcement: audit of automatic %s failed: %s", action, e)


def host_interfaces() -> list[Any]:
    """The addresses, with their networks, the host holds on Docker's bridges (`docker0`,
    `br-<network id>`, of kind bridge): a bridge network's gateway and subnet. Only those:
    guarding the host's own LAN (a macvlan container's address is on it) would refuse the
    host's own connections. Link-local and loopback left out."""
    import ipaddress

    from pyroute2 import IPRoute

    out = []
    with IPRoute() as ipr:
        bridges = set()
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if kind == "bridge" and (name == "docker0" or name.startswith("br-")):
                bridges.add(link["index"])
        for msg in ipr.get_addr():
            if msg["index"] not in bridges:
                continue
            addr = msg.get_attr("IFA_ADDRESS")
            if not addr:
                continue
            try:
                iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
            except ValueError:
                continue
            if iface.ip.is_loopback or iface.ip.is_link_local or iface.network.prefixlen == iface.max_prefixlen:
                continue
            out.append(iface)
    return out


def _contains(network: Any, address: str) -> bool:
    net = as_network(address)
    return net is not None and net.version == network.version and net.network_address in network


def _unmapped(ip: str) -> str:
    """An IPv4-mapped IPv6 address (a v4 flow on a v6 socket) as the IPv4 address."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def _bridge_netfilter() -> str:
    """net.bridge.bridge-nf-call-iptables: "1" when bridged IPv4 passes the inet hooks too."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            return f.read().strip()
    except OSError:
        return ""

