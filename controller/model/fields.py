"""The building blocks every part of the scale set model is made of.

:class:`StrictModel` is the base of each part (unknown fields refused, no
coercion, JSON ``null`` taken as "not given"); :class:`Rule` names the member
at fault below the field a validator checks; the rest are the checks the
parts share.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from hostagent.contract import names

REDACTED = "(redacted)"
REQUEST_PATH_RE = re.compile(r"^/?[!-~]*$")


class Rule(ValueError):
    """A rule broken at ``path`` below the model or field being validated.

    Pydantic places a validator's error at the field (or model) it validates;
    this says which member below it is at fault, so the message can name it.
    """

    def __init__(self, path: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return AfterValidator(check)


def matching(pattern: re.Pattern[str], reason: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(reason)
        return value

    return AfterValidator(check)


_PART_REASON = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
ImagePart = Annotated[str, matching(names.IMAGE_PART_RE, _PART_REASON)]


def not_placeholder(value: object) -> None:
    if value == REDACTED:
        raise ValueError(
            f'holds the placeholder "{REDACTED}" from an API response; send the real value'
        )


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


def is_base64(text: str) -> bool:
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
