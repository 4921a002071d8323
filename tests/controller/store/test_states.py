"""The declared transitions of controller.store.states, as the store enforces
them on every persisted change of a state."""

from __future__ import annotations

import itertools

import pytest

from controller.store.facade import IllegalTransition, Store, UpgradeInstanceRecord
from controller.store.states import (
    INSTANCE_TRANSITIONS,
    UPGRADE_TRANSITIONS,
    UpgradeInstanceState,
    UpgradeStatus,
)
from tests.controller.store.builders import an_upgrade

R = UpgradeInstanceState
S = UpgradeStatus


@pytest.fixture
def store(store: Store) -> Store:
    store.scale_sets.put("web", {}, None)
    return store


def _row_in(store: Store, state: UpgradeInstanceState) -> str:
    """A new upgrade (ended, so that another can follow) with instance 0 in ``state``."""
    up = an_upgrade("web", 0.0, status=S.FAULTED)
    store.upgrades.create(up)
    store.upgrade_instances.add([UpgradeInstanceRecord(up.id, "0", 0, state=state)])
    return up.id


def test_every_state_has_its_row_in_each_table() -> None:
    assert set(UPGRADE_TRANSITIONS) == set(UpgradeStatus)
    assert set(INSTANCE_TRANSITIONS) == set(UpgradeInstanceState)


def test_the_strings_are_those_of_the_wire_and_the_database() -> None:
    assert [s.value for s in UpgradeStatus] == [
        "RollingForward",
        "Cancelled",
        "Completed",
        "Faulted",
    ]
    assert [str(s) for s in (R.WAITING_HEALTH, R.ROLLBACK_FAILED)] == [
        "WaitingHealth",
        "RollbackFailed",
    ]


@pytest.mark.parametrize(("old", "new"), list(itertools.product(R, R)))
def test_an_instance_row_moves_only_along_a_declared_transition(
    store: Store, old: UpgradeInstanceState, new: UpgradeInstanceState
) -> None:
    up_id = _row_in(store, old)
    if new in INSTANCE_TRANSITIONS[old]:
        assert store.upgrade_instances.update(up_id, "0", old, state=new)
    else:
        with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
            store.upgrade_instances.update(up_id, "0", old, state=new)
        with pytest.raises(IllegalTransition):  # without compare-and-swap too
            store.upgrade_instances.update(up_id, "0", None, state=new)
    (row,) = store.upgrade_instances.of(up_id)
    assert row.state == (new if new in INSTANCE_TRANSITIONS[old] else old)
    assert isinstance(row.state, UpgradeInstanceState)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)))
def test_an_upgrade_moves_only_along_a_declared_transition(
    store: Store, old: UpgradeStatus, new: UpgradeStatus
) -> None:
    up = an_upgrade("web", 0.0, status=old)
    store.upgrades.create(up)
    if new in UPGRADE_TRANSITIONS[old]:
        assert store.upgrades.update(up.id, expected_status=old, status=new).status == new
    else:
        with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
            store.upgrades.update(up.id, expected_status=old, status=new)
    got = store.upgrades.get(up.id)
    assert got is not None and isinstance(got.status, UpgradeStatus)
    assert got.status == (new if new in UPGRADE_TRANSITIONS[old] else old)


def test_a_failed_compare_and_swap_is_not_a_transition(store: Store) -> None:
    up_id = _row_in(store, R.SUCCEEDED)
    # (Succeeded -> Reimaging is illegal, but the row is not Pending: no move is tried)
    assert not store.upgrade_instances.update(up_id, "0", R.PENDING, state=R.REIMAGING)


def test_fields_other_than_the_state_are_written_in_any_state(store: Store) -> None:
    up_id = _row_in(store, R.ROLLBACK_FAILED)
    assert store.upgrade_instances.update(up_id, "0", R.ROLLBACK_FAILED, reason="superseded")
    (row,) = store.upgrade_instances.of(up_id)
    assert (row.state, row.reason) == (R.ROLLBACK_FAILED, "superseded")
