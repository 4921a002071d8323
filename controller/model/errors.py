""":class:`ModelError`, the one error of the scale set model, and how a
pydantic ValidationError becomes one without echoing the input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from controller.model.body import IDENTITY_FIELDS, ScaleSetBody
from controller.model.fields import Rule

_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_$@-]{1,64}$")


class ModelError(ValueError):
    """A scale set body that is not a valid model.

    ``field`` is the dotted path (``properties.upgradePolicy.mode``), ``reason``
    what is wrong with it, ``message`` the one line "<field>: <reason>". None of
    them contains a secret value of the body.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        self.message = f"{field}: {reason}"
        super().__init__(self.message)


def model_error(e: ValidationError) -> ModelError:
    """The first error of ``e`` as a ModelError, built from its location, type
    and context only (pydantic's own text may carry the input)."""
    err = e.errors(include_url=False, include_input=False)[0]
    loc: tuple[str | int, ...] = tuple(err["loc"])
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    kind = err["type"]
    cause = ctx.get("error")
    if isinstance(cause, Rule):
        return ModelError(_field(loc + cause.path), cause.reason)
    if kind in ("value_error", "assertion_error") and cause is not None:
        return ModelError(_field(loc), str(cause))
    if kind == "extra_forbidden":
        known = _known_fields(loc[:-1])
        hint = f" (known fields here: {', '.join(known)})" if known else ""
        return ModelError(_field(loc), "is not a field of the scale set model" + hint)
    return ModelError(_field(loc), _REASONS.get(kind, _generic_reason)(ctx))


def _generic_reason(ctx: Mapping[str, Any]) -> str:
    return "is invalid"


_REASONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda c: "is required",
    "int_type": lambda c: "must be an integer",
    "bool_type": lambda c: "must be true or false",
    "string_type": lambda c: "must be a string",
    "dict_type": lambda c: "must be an object",
    "model_type": lambda c: "must be an object",
    "model_attributes_type": lambda c: "must be an object",
    "list_type": lambda c: "must be an array",
    "literal_error": lambda c: f"must be {c.get('expected', 'one of the allowed values')}",
    "too_long": lambda c: f"must have at most {c.get('max_length')} items",
    "too_short": lambda c: f"must have at least {c.get('min_length')} items",
    "string_too_long": lambda c: f"must be at most {c.get('max_length')} characters",
    "string_too_short": lambda c: f"must be at least {c.get('min_length')} characters",
}


def _field(loc: Sequence[str | int]) -> str:
    return ".".join(_loc_part(p) for p in loc) if loc else "body"


def _loc_part(part: str | int) -> str:
    """A location step as it appears in a dotted path: plain names as they
    are, anything else quoted on one line and cut to 64 characters."""
    if isinstance(part, int) or _PLAIN_KEY_RE.fullmatch(part):
        return str(part)
    return json.dumps(part[:64])


def _known_fields(loc: Sequence[str | int]) -> list[str]:
    """The fields of the model at ``loc`` (list indices skipped); [] when
    ``loc`` does not lead to a model."""
    cls: type[BaseModel] = ScaleSetBody
    for part in loc:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(part)
        inner = _model_in(info.annotation) if info is not None else None
        if inner is None:
            return []
        cls = inner
    fields = list(cls.model_fields)
    return fields if loc else [*IDENTITY_FIELDS, *fields]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
