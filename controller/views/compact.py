"""Instance views packed into tuples of plain values, which the garbage
collector leaves alone however many the controller keeps
(docs/performance-notes.md, "Packed views").

:func:`pack` and :func:`unpack` cover every field of the view; a test checks
that they still do when the wire contract grows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hostagent.contract import instancespec
from hostagent.contract.views import (
    DataDiskView,
    ExtensionStatus,
    GenerationView,
    Health,
    InstanceView,
    ProbeStatus,
)

Packed = tuple[Any, ...]

# The fields pack() handles, in its order (checked against the wire model).
VIEW_FIELDS = (
    "name",
    "powerState",
    "address",
    "current",
    "previous",
    "dataDisks",
    "extensions",
    "probe",
    "applicationHealth",
    "health",
    "operation",
)


class Listed(NamedTuple):
    """What a listing shows of an instance's view."""

    image_version: str
    power_state: str
    health: str
    reasons: tuple[str, ...]
    address: str
    extensions: tuple[tuple[str, str, int | None], ...]  # name, status, exitCode


def _gen(g: GenerationView) -> Packed:
    i = g.image
    return (
        g.generation,
        g.instanceId,
        i.publisher,
        i.offer,
        i.sku,
        i.version,
        g.imageSha256,
        g.osDisk,
    )


def _ungen(p: Packed) -> GenerationView:
    ref = instancespec.ImageReference.model_construct(
        publisher=p[2], offer=p[3], sku=p[4], version=p[5]
    )
    return GenerationView.model_construct(
        generation=p[0], instanceId=p[1], image=ref, imageSha256=p[6], osDisk=p[7]
    )


def pack(v: InstanceView) -> Packed:
    probe = v.probe
    return (
        v.name,
        v.powerState,
        v.address,
        _gen(v.current),
        None if v.previous is None else _gen(v.previous),
        tuple((d.lun, d.diskSizeGB, d.path) for d in v.dataDisks),
        tuple(
            (e.name, e.status, e.exitCode, e.message, e.instanceId, e.time) for e in v.extensions
        ),
        None
        if probe is None
        else (
            probe.healthy,
            probe.consecutiveSuccesses,
            probe.consecutiveFailures,
            probe.lastError,
            probe.lastProbeTime,
        ),
        v.applicationHealth,
        (v.health.state, tuple(v.health.reasons)),
        v.operation,
    )


def unpack(p: Packed) -> InstanceView:
    """The view :func:`pack` was given (built without validating again: it
    was validated when it came from the agent)."""
    name, power, address, current, previous, disks, exts, probe, app, health, op = p
    return InstanceView.model_construct(
        name=name,
        powerState=power,
        address=address,
        current=_ungen(current),
        previous=None if previous is None else _ungen(previous),
        dataDisks=[
            DataDiskView.model_construct(lun=d[0], diskSizeGB=d[1], path=d[2]) for d in disks
        ],
        extensions=[
            ExtensionStatus.model_construct(
                name=e[0], status=e[1], exitCode=e[2], message=e[3], instanceId=e[4], time=e[5]
            )
            for e in exts
        ],
        probe=None
        if probe is None
        else ProbeStatus.model_construct(
            healthy=probe[0],
            consecutiveSuccesses=probe[1],
            consecutiveFailures=probe[2],
            lastError=probe[3],
            lastProbeTime=probe[4],
        ),
        applicationHealth=app,
        health=Health.model_construct(state=health[0], reasons=list(health[1])),
        operation=op,
    )


def listed(p: Packed) -> Listed:
    """The part of a packed view a listing shows."""
    health_state, reasons = p[9]
    return Listed(p[3][5], p[1], health_state, reasons, p[2], tuple(e[:3] for e in p[6]))
