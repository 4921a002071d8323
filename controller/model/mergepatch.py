"""JSON merge patch (RFC 7396), used by PATCH /v1/scaleSets/{name}.

A patch object changes only the members it names; ``null`` removes a member;
anything that is not an object (arrays included) replaces the target whole.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """The result of applying ``patch`` to ``target`` as RFC 7396 section 2
    defines it. Neither argument is changed, and the result shares no mutable
    value with either."""
    return _apply(copy.deepcopy(target), patch)


def _apply(target: Any, patch: Any) -> Any:
    """RFC 7396's MergePatch on a ``target`` this module owns (changed in place)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = target if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _apply(result.get(name), value)
    return result
