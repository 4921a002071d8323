"""Instance views packed into plain tuples: every field kept, none tracked
by the garbage collector."""

from __future__ import annotations

import gc

from controller.views.compact import VIEW_FIELDS, listed, pack, unpack
from hostagent.contract.views import InstanceView
from tests.controller.views.test_instances import full_view


def test_a_packed_view_unpacks_to_the_same_view_and_covers_every_field() -> None:
    v = full_view()
    assert unpack(pack(v)) == v
    assert unpack(pack(v)).model_dump() == v.model_dump()
    assert set(VIEW_FIELDS) == set(InstanceView.model_fields), "pack() misses a new field"
    assert listed(pack(v)) == (
        "1",
        "running",
        "Unhealthy",
        ("probe",),
        "10.0.0.2",
        (("app", "Failed", 3),),
    )


def test_packed_views_are_left_out_of_garbage_collections() -> None:
    packed = {f"web-{i}": (1.0, pack(full_view())) for i in range(3)}
    for _ in range(4):
        gc.collect()
    assert not any(gc.is_tracked(p) for p in packed.values())
    assert gc.is_tracked(full_view())  # what it replaces is tracked
