"""What the benchmark's API clients ask, and how often.

The mix is what people and dashboards do with scale sets: mostly reads of
one scale set and of its instances (a listing walks every page, as
``kvmss vmss list-instances`` does), polling the latest upgrade's status
(what ``kvmss vmss rolling-upgrade start --wait`` and a dashboard do every
second or so), reading history; then writes: tagging, the most common model
change, and now and then starting or cancelling a rolling upgrade. Starts
are rare (one request in a thousand, a dozen a minute at 200 requests/s):
each upgrade they start keeps running in the controller for minutes,
polling every instance of its current batch every second, so a minute's
run ends with about ten upgrades going at once, several teams rolling out
together. (All fifty at once, as when a new image reaches every scale set,
is ``--weights start_upgrade=1``.) Weights are per cent of requests.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

# kind -> (weight in %, statuses that are a correct answer)
MIX: dict[str, tuple[float, frozenset[int]]] = {
    "get_scale_set": (20, frozenset({200})),
    "instance_view": (25, frozenset({200})),
    "list_instances": (10, frozenset({200})),
    "list_scale_sets": (3, frozenset({200})),
    "rolling_latest": (18, frozenset({200})),
    "upgrade_history": (12, frozenset({200})),
    "patch_tag": (11.85, frozenset({200})),
    # 409: one runs already / none runs; a correct answer, counted apart
    "start_upgrade": (0.1, frozenset({202, 409})),
    "cancel_upgrade": (0.05, frozenset({202, 409})),
}
assert abs(sum(w for w, _ in MIX.values()) - 100) < 1e-9
KINDS = list(MIX)


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    body: bytes | None = None


def scale_set_name(i: int) -> str:
    return f"bench{i:03d}"


class Picker:
    """Draws requests from :data:`MIX` over ``scale_sets`` sets of ``capacity``."""

    def __init__(
        self,
        rng: random.Random,
        scale_sets: int,
        capacity: int,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.rng = rng
        self.scale_sets = scale_sets
        self.capacity = capacity
        given = weights or {}
        self._weights = [given.get(k, w) for k, (w, _) in MIX.items()]
        self._tag = 0

    def next(self) -> Request:
        kind = self.rng.choices(KINDS, self._weights)[0]
        base = f"/v1/scaleSets/{scale_set_name(self.rng.randrange(self.scale_sets))}"
        if kind == "get_scale_set":
            return Request(kind, "GET", base)
        if kind == "instance_view":
            return Request(
                kind, "GET", f"{base}/virtualMachines/{self.rng.randrange(self.capacity)}"
            )
        if kind == "list_instances":
            return Request(kind, "GET", f"{base}/virtualMachines")
        if kind == "list_scale_sets":
            return Request(kind, "GET", "/v1/scaleSets")
        if kind == "rolling_latest":
            return Request(kind, "GET", f"{base}/rollingUpgrades/latest")
        if kind == "upgrade_history":
            return Request(kind, "GET", f"{base}/osUpgradeHistory")
        if kind == "patch_tag":
            self._tag += 1
            body = json.dumps({"tags": {"dashboard": f"seen-{self._tag}"}}).encode()
            return Request(kind, "PATCH", base, body)
        if kind == "start_upgrade":
            return Request(kind, "POST", f"{base}/osRollingUpgrade", b"")
        return Request(kind, "POST", f"{base}/rollingUpgrades/cancel", b"")


def parse_weights(text: str) -> dict[str, float]:
    """``kind=weight,...`` (e.g. ``start_upgrade=0,cancel_upgrade=0``): weights
    replacing those of :data:`MIX`; ValueError naming what is wrong."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = item.partition("=")
        if kind not in MIX:
            raise ValueError(f"{kind!r} is not a request kind (use {', '.join(KINDS)})")
        try:
            out[kind] = float(value) if sep else math.nan
        except ValueError:
            out[kind] = math.nan
        if not out[kind] >= 0:
            raise ValueError(f"{kind}: the weight must be a number >= 0, got {value!r}")
    if sum(({k: float(w) for k, (w, _) in MIX.items()} | out).values()) <= 0:
        raise ValueError("at least one kind needs a weight above 0")
    return out


def next_link_path(body: bytes) -> str | None:
    """The path of a listing's ``nextLink``, if it has one."""
    try:
        link = json.loads(body).get("nextLink")
    except (ValueError, AttributeError):
        return None
    if not isinstance(link, str) or not link:
        return None
    i = link.find("/v1/")
    return link[i:] if i >= 0 else None
