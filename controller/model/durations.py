"""ISO 8601 durations, the subset Azure's Compute API uses (``PT0S``, ``PT5M``,
``PT1H30M``, ``PT1.5S``, ``P1DT2H``).

Days, hours, minutes and seconds only: years, months and weeks have no fixed
length in seconds (or, for weeks, are not used by Azure), so they are refused
rather than guessed.
"""

from __future__ import annotations

import math
import re

HINT = "must be an ISO 8601 duration such as PT5M"

# One number per unit; ',' is ISO 8601's other decimal sign. Only the last
# (smallest) component may carry a fraction, which the parser checks.
_NUMBER = r"(\d{1,12}(?:[.,]\d{1,9})?)"
_DURATION_RE = re.compile(
    rf"^P(?:{_NUMBER}D)?(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?$",
)
_UNIT_SECONDS = (86400.0, 3600.0, 60.0, 1.0)


class DurationError(ValueError):
    """``text`` of ``field`` is not a duration this module reads.

    The message names the field and the reason, never the value.
    """

    def __init__(self, field: str, reason: str = HINT) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_duration(text: str, field: str) -> float:
    """Seconds in the ISO 8601 duration ``text``; DurationError naming ``field`` if
    it is not one (or uses years, months or weeks)."""
    if not isinstance(text, str) or len(text) > 64:
        raise DurationError(field)
    m = _DURATION_RE.fullmatch(text)
    if m is None or text.endswith("T"):
        raise DurationError(field)
    parts = m.groups()
    present = [i for i, p in enumerate(parts) if p is not None]
    if not present:
        raise DurationError(field)
    if any(_has_fraction(parts[i]) for i in present[:-1]):
        raise DurationError(field, HINT + " (only the last component may have a fraction)")
    total = 0.0
    for i in present:
        value = parts[i]
        assert value is not None
        total += float(value.replace(",", ".")) * _UNIT_SECONDS[i]
    return total


def _has_fraction(part: str | None) -> bool:
    return part is not None and ("." in part or "," in part)


def format_duration(seconds: float) -> str:
    """``seconds`` as an ISO 8601 duration (``PT0S``, ``PT5M``, ``P1DT1H30M``,
    ``PT1.5S``), to the millisecond; ValueError for negative or non-finite."""
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError("duration seconds must be a finite number >= 0")
    millis = round(seconds * 1000)
    days, millis = divmod(millis, 86_400_000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    out = "P"
    if days:
        out += f"{days}D"
    time = ""
    if hours:
        time += f"{hours}H"
    if minutes:
        time += f"{minutes}M"
    if secs or millis:
        time += f"{secs}.{millis:03d}".rstrip("0").rstrip(".") + "S"
    if time:
        out += "T" + time
    elif not days:
        out += "T0S"
    return out
