"""The store's field handling: records to rows and back, and the checks of
the values written (shared by the repositories)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from controller.store.records import (
    INSTANCE_ID_RE,
    IllegalTransition,
    InstanceRecord,
    UpgradeInstanceRecord,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_R = TypeVar("_R", bound="DataclassInstance")
_E = TypeVar("_E", bound=StrEnum)


def _check_fields(what: str, fields: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if not fields:
        raise ValueError(f"{what}: no fields to update")
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"{what}: {unknown[0]}: not an updatable field (use {sorted(allowed)})")


def _member(cls: type[_E], what: str, value: str) -> _E:
    """``value`` as a member of ``cls``; ValueError naming ``what`` otherwise."""
    try:
        return cls(value)
    except ValueError:
        pass
    # (raised outside the except block: the value's own error is no context)
    raise ValueError(f"{what}: {str(value)[:40]!r} is not one of {sorted(m.value for m in cls)}")


def _check_transition(table: Mapping[_E, frozenset[_E]], what: str, old: _E, new: _E) -> None:
    """Every persisted state change goes through here (a bug if it fails)."""
    if new not in table[old]:
        raise IllegalTransition(f"{what}: {old} -> {new} is not a declared transition")


def _check_instance_id(instance_id: str) -> None:
    if not isinstance(instance_id, str) or not INSTANCE_ID_RE.fullmatch(instance_id):
        raise ValueError(
            f"instance_id: {str(instance_id)[:40]!r} is not a decimal instance id"
            " (1-18 digits, no sign or leading zeros)"
        )


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: cannot be stored as JSON ({type(e).__name__})") from None


def _record(cls: type[_R], m: Mapping[Any, Any], **override: Any) -> _R:
    """A record from a row whose columns are named as the record's fields."""
    names = (f.name for f in dataclasses.fields(cls))
    return cls(**{n: m[n] for n in names if n not in override}, **override)


def _row(rec: DataclassInstance, **override: Any) -> dict[str, Any]:
    return {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)} | override


def _instance_sort_key(rec: InstanceRecord | UpgradeInstanceRecord) -> tuple[int, str]:
    return (len(rec.instance_id), rec.instance_id)  # numeric order of canonical decimals
