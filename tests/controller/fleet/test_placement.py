"""Where new instances go, which ids they get, and which go on scale-in."""

from __future__ import annotations

import pytest

from controller.fleet.placement import (
    PlacementError,
    ids_to_remove,
    new_instance_ids,
    place,
    update_domain,
)


def test_update_domains_are_round_robin_by_id_value() -> None:
    assert [update_domain(str(i)) for i in range(12)] == [i % 5 for i in range(12)]


def test_a_placed_instance_keeps_its_update_domain_whatever_the_others() -> None:
    # after a scale-in of 1..4, the new ids 8 and 9 still get their own domains
    where = place(["8", "9"], ["h1", "h2"], {"0": "h1", "5": "h2", "7": "h1"})
    assert {iid: ud for iid, (_host, ud, _fd) in where.items()} == {"8": 3, "9": 4}


def test_new_instances_go_to_the_least_loaded_host_and_the_host_is_the_fault_domain() -> None:
    where = place(["3", "4", "5"], ["b", "a"], {"0": "a", "1": "a", "2": "b"})
    assert where == {"3": ("b", 3, 1), "4": ("a", 4, 0), "5": ("b", 0, 1)}


def test_no_host_is_a_placement_error_naming_the_way_out() -> None:
    with pytest.raises(PlacementError, match="POST /v1/hosts"):
        place(["0"], [], {})
    assert place([], [], {}) == {}


def test_ids_are_never_reused_and_scale_in_removes_the_highest() -> None:
    assert new_instance_ids(["0", "1"], 4, next_id=7) == ["7", "8"]
    assert new_instance_ids(["0", "1"], 1, next_id=7) == []
    assert ids_to_remove(["2", "10", "9", "0"], 2) == ["10", "9"]
    assert ids_to_remove(["0"], 3) == []
