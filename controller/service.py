"""The controller's behaviour behind its API: the image catalog with automatic
upgrades on publish, hosts, scale sets and their instances, and the rolling
upgrades (run by one thread each, resumed when the controller restarts).

Every public method either returns what the API shows or raises
:class:`ControllerError` with a 4xx status, a code and a one-line message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from controller import placement, planner, specs, status
from controller.agents import AgentPort
from controller.catalog import Catalog, CatalogError
from controller.instanceviews import (
    InstanceViews,
    ObservingPort,
    SeenListed,
    host_lister,
    listing,
)
from controller.model import ModelError, ScaleSetModel, parse_scale_set, patch_scale_set
from controller.orchestrator import Orchestrator, Policy
from controller.store import (
    Conflict,
    HostRecord,
    ImageRecord,
    InstanceRecord,
    ScaleSetRecord,
    Store,
    UpgradeRecord,
    instance_name,
)
from controller.versions import version_key
from hostagent import wire
from hostagent.client import AgentClient, AgentError
from kvmss.clock import Clock

log = logging.getLogger(__name__)


class ControllerError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Settings:
    public_url: str  # how agents reach this controller (blob downloads)
    blob_secret: bytes  # signs blob URLs handed to agents
    poll_seconds: float = 1.0
    op_timeout_seconds: float = 900.0
    # how often listings' instance views are refreshed from each host
    view_refresh_seconds: float = 5.0


PATCH_ATTEMPTS = 5


class _Unread:
    """Not read yet (distinct from None, "there is none")."""


UNREAD = _Unread()

# How long a host's URL and token are taken from memory before the store is
# asked again: every agent call needs them, a host never changes them (it is
# removed and registered again), and another controller replica may do that.
HOST_ENDPOINT_TTL_SECONDS = 5.0


class Controller:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        agents: AgentPort,
        clock: Clock,
        settings: Settings,
        probe_host: Callable[[str, str], wire.HostView] | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.agents = agents
        self.clock = clock
        self.settings = settings
        self.views = InstanceViews(
            agents,
            host_lister(agents),
            lambda: [h.name for h in store.list_hosts()],
            clock,
            settings.view_refresh_seconds,
        )
        self.orch = Orchestrator(store, ObservingPort(agents, self.views), self.image_spec, clock)
        self._probe_host = probe_host or (lambda url, token: AgentClient(url, token).host())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._set_locks: dict[str, threading.Lock] = {}
        self._dirty: set[str] = set()
        self._endpoints: dict[str, tuple[float, tuple[str, str]]] = {}
        self._shown_bodies: dict[str, tuple[tuple[float, int], dict[str, Any]]] = {}

    # -- lifecycle ---------------------------------------------------------------

    def resume(self) -> None:
        """After a restart: every upgrade still RollingForward continues."""
        for up in self.store.running_upgrades():
            log.warning("resuming upgrade %s of %s", up.id, up.scale_set)
            self._spawn(up.id)
        for ss in self.store.list_scale_sets():
            self._reconcile_later(ss.name)

    def close(self) -> None:
        self._stop.set()
        self.views.close()
        for t in list(self._threads.values()):
            t.join(timeout=30)

    def _background(self, key: str, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("%s failed", key)
            finally:
                with self._lock:
                    if self._threads.get(key) is threading.current_thread():
                        del self._threads[key]

        with self._lock:
            if key in self._threads:
                return
            t = threading.Thread(target=run, name=key, daemon=True)
            self._threads[key] = t
        t.start()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for background work (tests and the lab)."""
        for t in list(self._threads.values()):
            t.join(timeout)

    # -- images ------------------------------------------------------------------

    def blob_signature(self, sha256: str) -> str:
        return hmac.new(self.settings.blob_secret, sha256.encode(), hashlib.sha256).hexdigest()

    def image_spec(self, rec: ImageRecord) -> wire.ImageSpec:
        base = (
            f"{self.settings.public_url.rstrip('/')}/v1/images/"
            f"{rec.publisher}/{rec.offer}/{rec.sku}/{rec.version}"
        )

        def art(part: str, sha: str | None) -> wire.Artifact | None:
            if sha is None:
                return None
            return wire.Artifact(url=f"{base}/{part}?sig={self.blob_signature(sha)}", sha256=sha)

        return wire.ImageSpec(
            reference=wire.ImageReference(
                publisher=rec.publisher, offer=rec.offer, sku=rec.sku, version=rec.version
            ),
            url=f"{base}/blob?sig={self.blob_signature(rec.sha256)}",
            sha256=rec.sha256,
            kernel=art("kernel", rec.kernel_sha256),
            initrd=art("initrd", rec.initrd_sha256),
            cmdline=rec.cmdline,
        )

    def publish(
        self,
        ref: tuple[str, str, str, str],
        source: Path | BinaryIO,
        *,
        kernel: Path | None = None,
        initrd: Path | None = None,
        cmdline: str | None = None,
        sha256: str | None = None,
    ) -> ImageRecord:
        try:
            rec = self.catalog.publish(
                *ref, source, kernel=kernel, initrd=initrd, cmdline=cmdline, sha256=sha256
            )
        except CatalogError as e:
            raise ControllerError(e.status, e.code, e.message) from None
        self.on_published(rec)
        return rec

    def resolve(self, ref: wire.ImageReference) -> ImageRecord:
        try:
            return self.catalog.resolve(ref.publisher, ref.offer, ref.sku, ref.version)
        except CatalogError as e:
            raise ControllerError(e.status, e.code, e.message) from None

    def on_published(self, rec: ImageRecord) -> None:
        """Rule 9: a new latest version starts an upgrade (startedBy Platform)
        on every scale set that follows ``latest`` of that sku automatically."""
        newest = self.catalog.resolve(rec.publisher, rec.offer, rec.sku, "latest")
        if newest.version != rec.version:
            return
        for ss in self.store.list_scale_sets():
            model = parse_scale_set(ss.name, ss.body)
            if self._follows(model, rec):
                self._start_platform(model, rec)

    @staticmethod
    def _follows(model: ScaleSetModel, rec: ImageRecord) -> bool:
        ref = model.image_reference
        return (
            model.automatic.enable
            and ref.version.lower() == "latest"
            and (ref.publisher, ref.offer, ref.sku) == (rec.publisher, rec.offer, rec.sku)
        )

    def _start_platform(self, model: ScaleSetModel, target: ImageRecord) -> None:
        if self.store.running_upgrade(model.name) is not None:
            log.info("%s: version %s waits for the running upgrade", model.name, target.version)
            return
        insts = self.store.list_instances(model.name)
        if not insts or all(i.image_version == target.version for i in insts):
            return
        try:
            self.start_upgrade(model.name, "Platform", target)
        except ControllerError as e:
            log.warning("%s: automatic upgrade not started: %s", model.name, e.message)

    # -- hosts -------------------------------------------------------------------

    def host_endpoint(self, host: str) -> tuple[str, str]:
        now = self.clock.monotonic()
        with self._lock:
            known = self._endpoints.get(host)
        if known is not None and now - known[0] < HOST_ENDPOINT_TTL_SECONDS:
            return known[1]
        rec = self.store.get_host(host)
        if rec is None:
            raise AgentError(404, "HostNotFound", f"host {host[:80]!r} is not registered")
        with self._lock:
            self._endpoints[host] = (now, (rec.url, rec.token))
        return rec.url, rec.token

    def _forget_endpoint(self, host: str) -> None:
        with self._lock:
            self._endpoints.pop(host, None)

    def add_host(self, name: str, url: str, token: str) -> dict[str, Any]:
        if not (url.startswith("http://") or url.startswith("https://")):
            raise ControllerError(400, "InvalidParameter", "url: must be an http(s) URL")
        try:
            view = self._probe_host(url, token)
        except AgentError as e:
            raise ControllerError(
                400, "HostUnreachable", f"url: the agent at {url} did not answer ({e.code})"
            ) from None
        if view.name != name:
            raise ControllerError(
                400, "InvalidParameter", f"name: the agent at {url} calls itself {view.name}"
            )
        if self.store.get_host(name) is not None:
            raise ControllerError(409, "Conflict", f"host {name} is already registered")
        self.store.add_host(HostRecord(name, url, token, self.clock.now()))
        self._forget_endpoint(name)
        return self.host_view(name)

    def host_view(self, name: str) -> dict[str, Any]:
        rec = self.store.get_host(name)
        if rec is None:
            raise ControllerError(404, "NotFound", f"host {name[:80]!r} is not registered")
        out: dict[str, Any] = {"name": rec.name, "url": rec.url, "reachable": False}
        try:
            v = self._probe_host(rec.url, rec.token)
            out.update(
                reachable=True,
                hypervisor=v.hypervisor,
                capacity=v.capacity.model_dump(),
                instanceCount=v.instanceCount,
                libvirtVersion=v.libvirtVersion,
            )
        except AgentError as e:
            out["error"] = e.code
        return out

    def list_hosts(self) -> list[dict[str, Any]]:
        return [self.host_view(h.name) for h in self.store.list_hosts()]

    def remove_host(self, name: str) -> None:
        if self.store.get_host(name) is None:
            raise ControllerError(404, "NotFound", f"host {name[:80]!r} is not registered")
        for ss in self.store.list_scale_sets():
            used = [i.name for i in self.store.list_instances(ss.name) if i.host == name]
            if used:
                raise ControllerError(
                    409,
                    "HostInUse",
                    f"host {name} still runs {len(used)} instances ({used[0]}, ...)",
                )
        self.store.delete_host(name)
        self._forget_endpoint(name)

    # -- scale sets --------------------------------------------------------------

    def model(self, name: str) -> ScaleSetModel:
        rec = self.store.get_scale_set(name)
        if rec is None:
            raise ControllerError(404, "NotFound", f"scale set {name[:80]!r} does not exist")
        return parse_scale_set(name, rec.body)

    def _must_exist(self, name: str) -> None:
        """404 unless the scale set exists (cheaper than parsing its model)."""
        if self.store.get_scale_set(name) is None:
            raise ControllerError(404, "NotFound", f"scale set {name[:80]!r} does not exist")

    def put_scale_set(self, name: str, body: Any) -> tuple[ScaleSetModel, bool]:
        try:
            model = parse_scale_set(name, body)
        except ModelError as e:
            raise ControllerError(400, "InvalidParameter", e.message) from None
        return self._save(model)

    def body(self, name: str) -> dict[str, Any]:
        """The scale set as GET shows it (customData redacted). Read-only: the
        dict is shared by every caller until the model changes."""
        rec = self.store.get_scale_set(name)
        if rec is None:
            raise ControllerError(404, "NotFound", f"scale set {name[:80]!r} does not exist")
        return self._shown(rec)

    def bodies(self) -> list[dict[str, Any]]:
        """Every scale set as GET shows it, by name (read-only, as :meth:`body`)."""
        return [self._shown(r) for r in self.store.list_scale_sets()]

    def _shown(self, rec: ScaleSetRecord) -> dict[str, Any]:
        # Dashboards read the same models over and over; parsing and showing
        # one costs more than reading it, so what is shown is kept per version
        # (a set deleted and made again starts its generations again: the
        # creation time tells them apart).
        version = (rec.created_at, rec.generation)
        with self._lock:
            known = self._shown_bodies.get(rec.name)
        if known is not None and known[0] == version:
            return known[1]
        body = parse_scale_set(rec.name, rec.body).to_body(redact=True)
        with self._lock:
            self._shown_bodies[rec.name] = (version, body)
        return body

    def patch(self, name: str, patch: Any) -> ScaleSetModel:
        """A JSON merge patch, applied atomically: the result is stored only
        over the generation it was computed from, else computed again from
        the newer one, so two clients patching at once both keep their change."""
        for _ in range(PATCH_ATTEMPTS):
            old = self.store.get_scale_set(name)
            if old is None:
                raise ControllerError(404, "NotFound", f"scale set {name[:80]!r} does not exist")
            try:
                model = patch_scale_set(parse_scale_set(name, old.body), patch)
            except ModelError as e:
                raise ControllerError(400, "InvalidParameter", e.message) from None
            try:
                return self._save(model, old)[0]
            except Conflict:
                continue
        raise ControllerError(
            409, "Conflict", f"scale set {name} kept changing while being patched; try again"
        )

    def _save(
        self, model: ScaleSetModel, old: ScaleSetRecord | _Unread | None = UNREAD
    ) -> tuple[ScaleSetModel, bool]:
        """Store ``model``; with ``old`` (what it was computed from, None for
        nothing) only over that generation, else :class:`Conflict`."""
        ref = model.image_reference
        try:
            self.catalog.resolve(ref.publisher, ref.offer, ref.sku, ref.version)
        except CatalogError:
            raise ControllerError(
                400,
                "InvalidParameter",
                "properties.virtualMachineProfile.storageProfile.imageReference: no published"
                f" image {ref.publisher}/{ref.offer}/{ref.sku}/{ref.version}",
            ) from None
        expected: int | None = None
        if isinstance(old, _Unread):
            old = self.store.get_scale_set(model.name)
        else:
            expected = old.generation if old is not None else 0
        before = parse_scale_set(model.name, old.body) if old else None
        old_ref = before.image_reference if before else None
        image_changed = old_ref is not None and old_ref != ref
        if image_changed and self.store.running_upgrade(model.name) is not None:
            raise ControllerError(
                409,
                "OperationNotAllowed",
                f"scale set {model.name} has a rolling upgrade running; cancel it before"
                " changing properties.virtualMachineProfile.storageProfile.imageReference",
            )
        self.store.put_scale_set(model.name, model.to_body(defaults=False), expected)
        if before is None or before.capacity != model.capacity or self._unsettled(model):
            self._reconcile_later(model.name)
        if image_changed:
            self._apply_model_image(model)
        return model, old is None

    def _unsettled(self, model: ScaleSetModel) -> bool:
        """Whether reconciling has work: instances short of or above the
        capacity, or left Creating (most changes, a tag, leave none)."""
        count, creating = self.store.instance_counts(model.name)
        return count != model.capacity or creating > 0

    def _apply_model_image(self, model: ScaleSetModel) -> None:
        """An explicit image change (version, sku or another image) reaches the
        existing instances by the upgrade mode: Manual waits for manualUpgrade,
        Automatic reimages them all at once, Rolling runs a rolling upgrade."""
        if model.mode == "Manual" or not self.store.list_instances(model.name):
            return
        target = self.resolve(model.image_reference)
        if model.mode == "Automatic":
            self.start_upgrade(
                model.name, "User", target, policy=self.all_at_once(model), all_at_once=True
            )
        else:
            self.start_upgrade(model.name, "User", target)

    def all_at_once(self, model: ScaleSetModel) -> Policy:
        """Upgrade mode Automatic and manualUpgrade: one batch, no stop rules."""
        return Policy(
            max_batch_instance_percent=100,
            max_unhealthy_instance_percent=100,
            max_unhealthy_upgraded_instance_percent=100,
            health_timeout_seconds=model.rolling.health_timeout_seconds,
            automatic_rollback=False,
        )

    def _reconcile_later(self, name: str) -> None:
        """Reconcile in the background; a request made while one runs makes it
        run again, so the last model always wins."""
        key = f"reconcile-{name}"
        with self._lock:
            self._dirty.add(name)

        def work() -> None:
            while True:
                with self._lock:
                    if name not in self._dirty or self._stop.is_set():
                        if self._threads.get(key) is threading.current_thread():
                            del self._threads[key]
                        return
                    self._dirty.discard(name)
                self.reconcile(name)

        self._background(key, work)

    def delete_scale_set(self, name: str) -> None:
        self.model(name)
        if self.store.running_upgrade(name) is not None:
            raise ControllerError(409, "Conflict", f"scale set {name} has an upgrade running")
        # The reconcile creates instances under the same lock: none can
        # appear between the listing and the delete.
        with self._set_lock(name):
            for inst in self.store.list_instances(name):
                self._delete_instance(inst)
            try:
                self.store.delete_scale_set(name)
            except Conflict:
                raise ControllerError(
                    409, "Conflict", f"scale set {name} is changing; try again"
                ) from None
        with self._lock:
            self._shown_bodies.pop(name, None)

    def _set_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._set_locks.setdefault(name, threading.Lock())

    def reconcile(self, name: str) -> None:
        """Bring the instances to ``sku.capacity``: create missing ones on the
        model's image, finish ones left Creating, remove the highest extras."""
        with self._set_lock(name):
            try:
                model = self.model(name)
            except ControllerError:
                return
            insts = self.store.list_instances(name)
            extra = placement.ids_to_remove([i.instance_id for i in insts], model.capacity)
            for iid in extra:
                inst = next(i for i in insts if i.instance_id == iid)
                self._delete_instance(inst)
            if extra:
                insts = self.store.list_instances(name)
            next_id = max((int(i.instance_id) for i in insts), default=-1) + 1
            new = placement.new_instance_ids(
                [i.instance_id for i in insts], model.capacity, next_id
            )
            if not new and all(i.state != "Creating" for i in insts):
                return  # the common case: a change that leaves the capacity alone
            target = self.resolve(model.image_reference)
            hosts = [h.name for h in self.store.list_hosts()]
            try:
                where = placement.place(new, hosts, {i.instance_id: i.host for i in insts})
            except placement.PlacementError as e:
                log.error("%s: %s", name, e)
                return
            self.store.add_instances(
                [
                    InstanceRecord(
                        name,
                        iid,
                        instance_name(name, iid),
                        host,
                        ud,
                        fd,
                        target.version,
                        "Creating",
                    )
                    for iid, (host, ud, fd) in where.items()
                ]
            )
            pending = [i for i in self.store.list_instances(name) if i.state == "Creating"]
            spec_image = self.image_spec(target)
            ops = []
            for inst in pending:
                spec = specs.instance_spec(
                    model,
                    inst.name,
                    spec_image,
                    f"{model.computer_name_prefix}{int(inst.instance_id):06d}",
                )
                try:
                    ops.append((inst, self.agents.put_instance(inst.host, inst.name, spec)))
                except AgentError as e:
                    log.error("%s: create failed: %s", inst.name, e)
                    self.store.update_instance(name, inst.instance_id, state="Failed")
            # One write for every outcome known, made before each wait: a
            # scale-out of hundreds is a few commits, not hundreds.
            settled: dict[str, str] = {}
            for inst, op in ops:
                if op.status == "InProgress" and settled:
                    self.store.set_instance_states(name, settled)
                    settled = {}
                done = self._wait_op(inst.host, op)
                settled[inst.instance_id] = "Running" if done.status == "Succeeded" else "Failed"
            if settled:
                self.store.set_instance_states(name, settled)

    def _wait_op(self, host: str, op: wire.Operation) -> wire.Operation:
        deadline = self.clock.monotonic() + self.settings.op_timeout_seconds
        while op.status == "InProgress" and self.clock.monotonic() < deadline:
            if self._stop.is_set():
                return op
            self.clock.sleep(self.settings.poll_seconds)
            try:
                op = self.agents.operation(host, op.id)
            except AgentError as e:
                log.warning("polling %s on %s: %s", op.id, host, e)
        return op

    def _delete_instance(self, inst: InstanceRecord) -> None:
        try:
            op = self.agents.delete(inst.host, inst.name, f"del-{inst.name}")
            self._wait_op(inst.host, op)
        except AgentError as e:
            log.warning("deleting %s on %s: %s", inst.name, inst.host, e)
        self.store.delete_instance(inst.scale_set, inst.instance_id)

    def instance_views(self, name: str) -> list[dict[str, Any]]:
        """Every instance with what its agent reported at most a few seconds
        ago (see :mod:`controller.instanceviews`)."""
        self._must_exist(name)
        insts = self.store.list_instances(name)
        seen = self.views.many([(i.host, i.name) for i in insts])
        return [self._instance_view(i, s) for i, s in zip(insts, seen, strict=True)]

    def known_instance_views(self, name: str) -> list[dict[str, Any]] | None:
        """:meth:`instance_views` if no agent needs asking for it, else None."""
        self._must_exist(name)
        insts = self.store.list_instances(name)
        seen = self.views.known([(i.host, i.name) for i in insts])
        if seen is None:
            return None
        return [self._instance_view(i, s) for i, s in zip(insts, seen, strict=True)]

    def instance_view(self, name: str, instance_id: str) -> dict[str, Any]:
        self._must_exist(name)
        inst = self.store.get_instance(name, instance_id) if instance_id.isdigit() else None
        if inst is None:
            raise ControllerError(
                404, "NotFound", f"instance {instance_id[:80]!r} of {name[:80]!r} does not exist"
            )
        return self._instance_view(inst, listing(self.views.one(inst.host, inst.name)))

    def _instance_view(self, inst: InstanceRecord, v: SeenListed) -> dict[str, Any]:
        out: dict[str, Any] = {
            "instanceId": inst.instance_id,
            "name": inst.name,
            "host": inst.host,
            "updateDomain": inst.update_domain,
            "faultDomain": inst.fault_domain,
            "imageVersion": inst.image_version,
            "provisioningState": inst.state,
            "powerState": "unknown",
            "health": "Unknown",
            "healthReasons": [],
            "extensions": [],
        }
        if isinstance(v, AgentError):
            out["healthReasons"] = [f"host agent: {v.code}"]
            return out
        if v is None:
            out["healthReasons"] = ["not found on its host"]
            return out
        out.update(
            imageVersion=v.image_version,
            powerState=v.power_state,
            health=v.health,
            healthReasons=list(v.reasons),
            address=v.address,
            extensions=[
                {"name": name, "status": status, "exitCode": code}
                for name, status, code in v.extensions
            ],
        )
        return out

    # -- upgrades ----------------------------------------------------------------

    def policy(self, model: ScaleSetModel, started_by: str) -> Policy:
        r = model.rolling
        return Policy(
            max_batch_instance_percent=r.max_batch_instance_percent,
            max_unhealthy_instance_percent=r.max_unhealthy_instance_percent,
            max_unhealthy_upgraded_instance_percent=r.max_unhealthy_upgraded_instance_percent,
            pause_seconds=r.pause_seconds,
            health_timeout_seconds=r.health_timeout_seconds,
            prioritize_unhealthy=r.prioritize_unhealthy_instances,
            automatic_rollback=started_by == "Platform" and not model.automatic.disable_rollback,
        )

    def latest_image(self, model: ScaleSetModel) -> ImageRecord:
        ref = model.image_reference
        return self.resolve(
            wire.ImageReference(
                publisher=ref.publisher, offer=ref.offer, sku=ref.sku, version="latest"
            )
        )

    def start_upgrade(
        self,
        name: str,
        started_by: str,
        target: ImageRecord | None = None,
        *,
        policy: Policy | None = None,
        only: set[str] | None = None,
        all_at_once: bool = False,
    ) -> UpgradeRecord:
        model = self.model(name)
        target = target or self.latest_image(model)
        busy = ControllerError(
            409, "OperationNotAllowed", f"scale set {name} already has a rolling upgrade running"
        )
        # Refused before planning, which asks about every instance; the
        # store's one-running-upgrade index still settles a race.
        if self.store.running_upgrade(name) is not None:
            raise busy
        try:
            with self._planning(name):
                up = self.orch.start(
                    name,
                    target,
                    policy or self.policy(model, started_by),
                    started_by,
                    only=only,
                    all_at_once=all_at_once,
                )
        except Conflict:
            raise busy from None
        self._spawn(up.id)
        return up

    @contextmanager
    def _planning(self, name: str) -> Iterator[None]:
        """Plan from the instance views of the last few seconds (asked for
        now, host by host, where there are none): every instance taken is
        observed again before it is touched (rule 3), so a plan needs no
        fresher view than a listing shows."""
        if self.views.watched:
            self.views.many([(i.host, i.name) for i in self.store.list_instances(name)])
        with self.views.cached_reads():
            yield

    def _spawn(self, upgrade_id: str) -> None:
        def run() -> None:
            up = self.orch.run(
                upgrade_id, poll_seconds=self.settings.poll_seconds, should_stop=self._stop.is_set
            )
            if up.status != "RollingForward":
                self._after_upgrade(up)

        self._background(f"upgrade-{upgrade_id}", run)

    def _after_upgrade(self, up: UpgradeRecord) -> None:
        """Rule 8: a version published while an upgrade ran is picked up next."""
        try:
            model = self.model(up.scale_set)
            newest = self.latest_image(model)
        except ControllerError:
            return
        if (
            model.automatic.enable
            and model.image_reference.version.lower() == "latest"
            and version_key(newest.version) > version_key(up.target.version)
        ):
            self._start_platform(model, newest)

    def _named(self, name: str, instance_ids: list[str]) -> list[InstanceRecord]:
        have = {i.instance_id: i for i in self.store.list_instances(name)}
        if not instance_ids:
            raise ControllerError(400, "InvalidParameter", "instanceIds: name at least one")
        unknown = [i for i in instance_ids if i not in have]
        if unknown:
            raise ControllerError(
                400,
                "InvalidParameter",
                f"instanceIds: {unknown[0][:20]!r} is not an instance of {name}",
            )
        return [have[i] for i in dict.fromkeys(instance_ids)]

    def manual_upgrade(self, name: str, instance_ids: list[str]) -> UpgradeRecord:
        """Bring the named instances to the model's image (any upgrade mode),
        all at once, as a recorded upgrade started by the user."""
        model = self.model(name)
        self._named(name, instance_ids)
        target = self.resolve(model.image_reference)
        return self.start_upgrade(
            name,
            "User",
            target,
            policy=self.all_at_once(model),
            only=set(instance_ids),
            all_at_once=True,
        )

    def reimage(self, name: str, instance_ids: list[str]) -> None:
        """A fresh OS disk from the image each named instance runs now; data
        disks kept. Runs in the background; each agent journals its reimage."""
        model = self.model(name)
        insts = self._named(name, instance_ids)
        ref = model.image_reference
        jobs = []
        for inst in insts:
            version = inst.image_version or self.resolve(ref).version
            try:
                rec = self.catalog.resolve(ref.publisher, ref.offer, ref.sku, version)
            except CatalogError as e:
                raise ControllerError(e.status, e.code, e.message) from None
            jobs.append((inst, self.image_spec(rec)))

        def work() -> None:
            for inst, spec in jobs:
                op_id = f"reimage-{inst.name}-{int(self.clock.now() * 1000)}"
                try:
                    op = self._wait_op(
                        inst.host, self.agents.reimage(inst.host, inst.name, spec, op_id)
                    )
                    if op.status == "Succeeded":
                        self.agents.commit(inst.host, inst.name, f"{op_id}-commit")
                    else:
                        log.error("reimage of %s failed: %s", inst.name, op.error)
                except AgentError as e:
                    log.error("reimage of %s: %s", inst.name, e)

        self._background(f"reimage-{name}-{self.clock.now()}", work)

    def cancel(self, name: str) -> None:
        self.model(name)
        if not self.store.request_cancel(name):
            raise ControllerError(
                409, "OperationNotAllowed", f"scale set {name} has no upgrade running"
            )

    def latest_status(self, name: str) -> dict[str, Any]:
        model = self.model(name)
        ups = self.store.history(name, self.clock.now(), limit=1)
        if not ups:
            raise ControllerError(
                404, "NotFound", f"scale set {name[:80]!r} has had no rolling upgrade"
            )
        up = ups[0]
        return status.latest(
            up,
            self.store.list_upgrade_instances(up.id),
            self.store.decisions(up.id),
            model.location,
        )

    def history(self, name: str) -> dict[str, Any]:
        model = self.model(name)
        ups = self.store.history(name, self.clock.now())
        return {"value": [status.history_entry(u, model.location) for u in ups]}

    def plan(self, name: str) -> dict[str, Any]:
        """The batches an upgrade to latest would run now; touches nothing."""
        model = self.model(name)
        target = self.latest_image(model)
        insts = self.store.list_instances(name)
        with self._planning(name):
            batches = self.orch.plan(
                insts,
                target.version,
                model.rolling.max_batch_instance_percent,
                prioritize_unhealthy=model.rolling.prioritize_unhealthy_instances,
            )
        ref = target.ref
        return {
            "targetImageReference": {
                "publisher": ref.publisher,
                "offer": ref.offer,
                "sku": ref.sku,
                "version": ref.version,
            },
            "batchSize": planner.batch_size(len(insts), model.rolling.max_batch_instance_percent),
            "batches": batches,
        }
