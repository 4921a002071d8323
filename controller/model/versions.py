"""Image versions: dotted integers, compared part by part.

A version is 1 to 4 parts of ASCII digits separated by dots, at most 64
characters in all (the limit of an image reference part on the wire), e.g.
``2016.127.20180613``. Versions order as integers, part by part, so
``1.10`` > ``1.9`` and ``2016.127.20180613`` > ``2016.127.20180601``.

Missing trailing parts count as 0 for ordering, so ``1.0`` and ``1.0.0`` (and
``1.01`` and ``1.1``) are equally new, but they stay distinct versions: the
catalog keeps them apart and an instance on ``1.0`` is not on ``1.0.0``. Such
ties are broken by comparing the strings, so the order never depends on the
order of the input: of ``1.0`` and ``1.0.0``, ``1.0.0`` is the newer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_PARTS = 4
MAX_LENGTH = 64

_VERSION_RE = re.compile(rf"[0-9]+(?:\.[0-9]+){{0,{MAX_PARTS - 1}}}")

VersionKey = tuple[tuple[int, ...], str]


def parse_version(v: str) -> tuple[int, ...]:
    """The integer parts of ``v``; ``ValueError`` naming ``v`` and the rule it breaks."""
    if not isinstance(v, str):
        raise ValueError(f"version {v!r}: must be a string")
    if len(v) > MAX_LENGTH:
        raise ValueError(f"version {v[:16]!r}...: must be at most {MAX_LENGTH} characters")
    if not _VERSION_RE.fullmatch(v):
        raise ValueError(
            f"version {v!r}: must be 1 to {MAX_PARTS} dot-separated parts of digits 0-9 "
            "with no empty part, e.g. '2016.127.20180613'"
        )
    return tuple(int(part) for part in v.split("."))


def is_version(v: str) -> bool:
    """Whether ``v`` is a valid dotted-integer version."""
    try:
        parse_version(v)
    except ValueError:
        return False
    return True


def version_key(v: str) -> VersionKey:
    """A sort key: integer parts padded with zeros to 4, then the string as tie-break."""
    parts = parse_version(v)
    return (parts + (0,) * (MAX_PARTS - len(parts)), v)


def newest(versions: Iterable[str]) -> str | None:
    """The newest of ``versions``, or None when there are none.

    Raises ``ValueError`` if any of them is not a version: a catalog holding
    one is a bug to report, not an entry to skip silently.
    """
    keys = [version_key(v) for v in versions]
    if not keys:
        return None
    return max(keys)[1]


def sort_newest_first(versions: Iterable[str]) -> list[str]:
    """``versions`` newest first (``ValueError`` if any is not a version)."""
    return [key[1] for key in sorted((version_key(v) for v in versions), reverse=True)]
