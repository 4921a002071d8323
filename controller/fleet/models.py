"""A scale set's stored model as the controller's parts read it: parsed, or
a 404 naming it; and the instances a request names."""

from __future__ import annotations

from controller.base.errors import ControllerError, not_found
from controller.model.scaleset import ScaleSetModel, parse_scale_set
from controller.store.facade import InstanceRecord, Store


class ScaleSetModels:
    def __init__(self, store: Store) -> None:
        self._store = store

    def model(self, name: str) -> ScaleSetModel:
        rec = self._store.scale_sets.get(name)
        if rec is None:
            raise not_found(f"scale set {name[:80]!r}")
        return parse_scale_set(name, rec.body)

    def must_exist(self, name: str) -> None:
        """404 unless the scale set exists (cheaper than parsing its model)."""
        if self._store.scale_sets.get(name) is None:
            raise not_found(f"scale set {name[:80]!r}")

    def named_instances(self, name: str, instance_ids: list[str]) -> list[InstanceRecord]:
        """The instances of ``name`` with these ids, each once; 400 naming the
        first id that is not one of them."""
        have = {i.instance_id: i for i in self._store.instances.of(name)}
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
