"""Scale set models as the API writes and reads them: put, merge patch
(compare-and-swap on the generation), delete, and the bodies GET shows."""

from __future__ import annotations

import threading
from typing import Any, Final

from controller.base.errors import ControllerError, not_found
from controller.fleet.models import ScaleSetModels
from controller.fleet.reconciler import Reconciler
from controller.images.catalog import CatalogError
from controller.images.specs import ImageSpecs
from controller.model.errors import ModelError
from controller.model.scaleset import ScaleSetModel, parse_scale_set, patch_scale_set
from controller.store.facade import Conflict, ScaleSetRecord, Store
from controller.store.states import StartedBy
from controller.upgrade.starts import UpgradeStarts

PATCH_ATTEMPTS: Final = 5


class _Unread:
    """Not read yet (distinct from None, "there is none")."""


UNREAD = _Unread()


class ScaleSets:
    """The scale set models: put, patch, delete, and their bodies as shown."""

    def __init__(
        self,
        store: Store,
        models: ScaleSetModels,
        images: ImageSpecs,
        reconciler: Reconciler,
        upgrades: UpgradeStarts,
    ) -> None:
        self._store = store
        self._models = models
        self._images = images
        self._reconciler = reconciler
        self._upgrades = upgrades
        self._lock = threading.Lock()
        self._shown_bodies: dict[str, tuple[tuple[float, int], dict[str, Any]]] = {}

    def put_scale_set(self, name: str, body: Any) -> tuple[ScaleSetModel, bool]:
        try:
            model = parse_scale_set(name, body)
        except ModelError as e:
            raise ControllerError(400, "InvalidParameter", e.message) from None
        return self._save(model)

    def body(self, name: str) -> dict[str, Any]:
        """The scale set as GET shows it (customData redacted). Read-only: the
        dict is shared by every caller until the model changes."""
        rec = self._store.scale_sets.get(name)
        if rec is None:
            raise not_found(f"scale set {name[:80]!r}")
        return self._shown(rec)

    def bodies(self) -> list[dict[str, Any]]:
        """Every scale set as GET shows it, by name (read-only, as :meth:`body`)."""
        return [self._shown(r) for r in self._store.scale_sets.all()]

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
            old = self._store.scale_sets.get(name)
            if old is None:
                raise not_found(f"scale set {name[:80]!r}")
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
            self._images.resolve(ref)
        except CatalogError:
            raise ControllerError(
                400,
                "InvalidParameter",
                "properties.virtualMachineProfile.storageProfile.imageReference: no published"
                f" image {ref.publisher}/{ref.offer}/{ref.sku}/{ref.version}",
            ) from None
        expected: int | None = None
        if isinstance(old, _Unread):
            old = self._store.scale_sets.get(model.name)
        else:
            expected = old.generation if old is not None else 0
        before = parse_scale_set(model.name, old.body) if old else None
        old_ref = before.image_reference if before else None
        image_changed = old_ref is not None and old_ref != ref
        if image_changed and self._store.upgrades.running(model.name) is not None:
            raise ControllerError(
                409,
                "OperationNotAllowed",
                f"scale set {model.name} has a rolling upgrade running; cancel it before"
                " changing properties.virtualMachineProfile.storageProfile.imageReference",
            )
        self._store.scale_sets.put(model.name, model.to_body(defaults=False), expected)
        if before is None or before.capacity != model.capacity or self._unsettled(model):
            self._reconciler.reconcile_later(model.name)
        if image_changed:
            self._apply_model_image(model)
        return model, old is None

    def _unsettled(self, model: ScaleSetModel) -> bool:
        """Whether reconciling has work: instances short of or above the
        capacity, or left Creating (most changes, a tag, leave none)."""
        count, creating = self._store.instances.counts(model.name)
        return count != model.capacity or creating > 0

    def _apply_model_image(self, model: ScaleSetModel) -> None:
        """An explicit image change (version, sku or another image) reaches the
        existing instances by the upgrade mode: Manual waits for manualUpgrade,
        Automatic reimages them all at once, Rolling runs a rolling upgrade."""
        if model.mode == "Manual" or not self._store.instances.of(model.name):
            return
        target = self._images.resolve(model.image_reference)
        if model.mode == "Automatic":
            self._upgrades.start_upgrade(
                model.name,
                StartedBy.USER,
                target,
                policy=model.rolling.all_at_once(),
                all_at_once=True,
            )
        else:
            self._upgrades.start_upgrade(model.name, StartedBy.USER, target)

    def delete_scale_set(self, name: str) -> None:
        self._models.must_exist(name)
        if self._store.upgrades.running(name) is not None:
            raise ControllerError(409, "Conflict", f"scale set {name} has an upgrade running")
        # The reconcile creates instances under the same lock: none can
        # appear between the listing and the delete.
        with self._reconciler.set_lock(name):
            for inst in self._store.instances.of(name):
                self._reconciler.delete_instance(inst)
            try:
                self._store.scale_sets.delete(name)
            except Conflict:
                raise ControllerError(
                    409, "Conflict", f"scale set {name} is changing; try again"
                ) from None
        with self._lock:
            self._shown_bodies.pop(name, None)
