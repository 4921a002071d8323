"""Plain-text output for people: aligned columns and dotted key/value listings.

Every value goes through :func:`cell`, which keeps one value on one line and
drops terminal control characters (messages come from guests and agents).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

EMPTY = "-"


def one_line(text: str) -> str:
    """``text`` with newlines and tabs as spaces and other control characters
    (escape sequences included) as ``?``."""
    out = []
    for ch in text:
        if ch in "\r\n\t":
            out.append(" ")
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def cell(value: Any) -> str:
    """One value as table text: None is ``-``, booleans are yes/no, lists are
    comma-joined, objects are ``key=value`` pairs."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items()) or EMPTY
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or EMPTY
    return one_line(str(value))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart, a dashed rule under the headers::

    NAME   CAPACITY
    -----  --------
    web    3
    """
    text_rows = [[cell(v) for v in row] for row in rows]
    for row in text_rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells for {len(headers)} columns")
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in text_rows)
    return "\n".join(out)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Leaves of a JSON document as (dotted path, text): the paths are the
    ones ``kvmss vmss update --set`` takes; list items are ``path[i]``."""
    if isinstance(value, Mapping) and value:
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out.extend(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = []
        for i, v in enumerate(value):
            out.extend(flatten(v, f"{prefix}[{i}]"))
        return out
    if isinstance(value, Mapping | list):
        return [(prefix, "{}" if isinstance(value, Mapping) else "[]")]
    return [(prefix, cell(value))]


def render_fields(doc: Mapping[str, Any]) -> str:
    """A document as ``path  value`` lines, paths aligned."""
    pairs = [(one_line(k), v) for k, v in flatten(doc)]
    if not pairs:
        return ""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in pairs)


def image_urn(ref: Mapping[str, Any] | None) -> str:
    """``publisher:offer:sku:version`` (Azure's URN form) of an image reference."""
    if not ref:
        return EMPTY
    parts = [ref.get("publisher"), ref.get("offer"), ref.get("sku"), ref.get("version")]
    if all(p is None for p in parts):
        # A custom image carries an id instead.
        return cell(ref.get("id"))
    return ":".join(one_line(str(p)) if p is not None else "?" for p in parts)


def human_bytes(n: Any) -> str:
    """``1536`` -> ``1.5 KiB``; non-numbers pass through :func:`cell`."""
    if isinstance(n, bool) or not isinstance(n, int | float):
        return cell(n)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --- the API's documents as people read them ---------------------------------------


def as_object(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (renderers never crash
    on a field the server left out)."""
    return value if isinstance(value, Mapping) else {}


def values_of(doc: Any) -> list[Mapping[str, Any]]:
    """The objects of a ``{"value": [...]}`` list answer."""
    items = as_object(doc).get("value")
    return [x for x in items if isinstance(x, Mapping)] if isinstance(items, list) else []


def images_table(doc: Any) -> str:
    """``GET /v1/images``: one row per sku with its latest version."""
    rows = []
    for e in values_of(doc):
        versions = e.get("versions")
        count = len(versions) if isinstance(versions, list) else 0
        rows.append([e.get("publisher"), e.get("offer"), e.get("sku"), e.get("latest"), count])
    return render_table(["PUBLISHER", "OFFER", "SKU", "LATEST", "VERSIONS"], rows)


def image_versions_table(doc: Any) -> str:
    """``GET /v1/images/{p}/{o}/{s}/versions``: manifests, newest first."""
    rows = [
        [
            m.get("version"),
            m.get("publishedAt"),
            human_bytes(m.get("sizeBytes")),
            human_bytes(m.get("virtualSizeBytes")),
            str(m.get("sha256") or "")[:16],
        ]
        for m in values_of(doc)
    ]
    return render_table(["VERSION", "PUBLISHED", "SIZE", "VIRTUAL SIZE", "SHA256"], rows)


def hosts_table(doc: Any) -> str:
    """``GET /v1/hosts``."""
    keys = ("name", "url", "hypervisor", "capacity", "instanceCount", "reachable")
    rows = [[h.get(k) for k in keys] for h in values_of(doc)]
    return render_table(["NAME", "URL", "HYPERVISOR", "CAPACITY", "INSTANCES", "REACHABLE"], rows)


def scale_sets_table(sets: Sequence[Mapping[str, Any]]) -> str:
    """Scale set models, one row each: capacity, image URN, upgrade mode."""
    rows = []
    for s in sets:
        props = as_object(s.get("properties"))
        policy = as_object(props.get("upgradePolicy"))
        profile = as_object(props.get("virtualMachineProfile"))
        ref = as_object(as_object(profile.get("storageProfile")).get("imageReference"))
        auto = as_object(policy.get("automaticOSUpgradePolicy")).get("enableAutomaticOSUpgrade")
        rows.append(
            [
                s.get("name"),
                as_object(s.get("sku")).get("capacity"),
                image_urn(ref),
                policy.get("mode"),
                bool(auto),
                props.get("provisioningState"),
            ]
        )
    return render_table(["NAME", "CAPACITY", "IMAGE", "UPGRADE MODE", "AUTO OS", "STATE"], rows)


def _health(view: Mapping[str, Any]) -> str:
    health = cell(view.get("health"))
    reasons = view.get("healthReasons")
    if isinstance(reasons, list) and reasons:
        return f"{health} ({cell(reasons)})"
    return health


def instances_table(doc: Any) -> str:
    """``GET /v1/scaleSets/{name}/virtualMachines``."""
    rows = [
        [
            v.get("instanceId"),
            v.get("host"),
            v.get("updateDomain"),
            v.get("faultDomain"),
            v.get("imageVersion"),
            v.get("powerState"),
            _health(v),
        ]
        for v in values_of(doc)
    ]
    return render_table(["INSTANCE", "HOST", "UD", "FD", "VERSION", "POWER", "HEALTH"], rows)


def history_table(doc: Any) -> str:
    """``GET /v1/scaleSets/{name}/osUpgradeHistory``, newest first."""
    rows = []
    for entry in values_of(doc):
        props = as_object(entry.get("properties"))
        rs = as_object(props.get("runningStatus"))
        progress = as_object(props.get("progress"))
        rollback = as_object(props.get("rollbackInfo"))
        rolled = cell(rollback.get("successfullyRolledbackInstanceCount"))
        failed_rb = rollback.get("failedRolledbackInstanceCount")
        if isinstance(failed_rb, int) and failed_rb > 0:
            rolled += f" ({failed_rb} failed)"
        rows.append(
            [
                rs.get("startTime"),
                rs.get("endTime"),
                rs.get("code"),
                props.get("startedBy"),
                image_urn(as_object(props.get("targetImageReference"))),
                progress.get("successfulInstanceCount"),
                progress.get("failedInstanceCount"),
                rolled,
            ]
        )
    return render_table(
        ["START", "END", "CODE", "STARTED BY", "TARGET", "SUCCEEDED", "FAILED", "ROLLED BACK"],
        rows,
    )


def plan_text(doc: Any) -> str:
    """``GET .../rollingUpgrades/plan``: the batches in the order they would run."""
    plan = as_object(doc)
    target = image_urn(as_object(plan.get("targetImageReference")))
    batches = plan.get("batches")
    batches = batches if isinstance(batches, list) else []
    if not batches:
        return f"nothing to upgrade: every instance runs {target}"
    lines = [f"target {target}, batch size {cell(plan.get('batchSize'))}, {len(batches)} batches"]
    lines.extend(f"batch {i + 1}: {cell(batch)}" for i, batch in enumerate(batches))
    return "\n".join(lines)
