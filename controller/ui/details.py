"""One instance as its details panel shows it: where it runs, its
extensions with exit codes, why it is (un)healthy, and its OS disk
generation (asked of its agent now)."""

from __future__ import annotations

from typing import Any

from controller.service.controller import Controller
from hostagent.contract.client import AgentError


def instance_details(ctl: Controller, name: str, instance_id: str) -> dict[str, Any]:
    inst = ctl.instance_record(name, instance_id)
    out = ctl.instance_view(inst)
    seen = ctl.views.one(inst.host, inst.name)
    if seen is not None and not isinstance(seen, AgentError):
        out["osDisk"] = {
            "generation": seen.current.generation,
            "imageVersion": seen.current.image.version,
            "previousGeneration": None if seen.previous is None else seen.previous.generation,
        }
        out["extensions"] = [
            {"name": e.name, "status": e.status, "exitCode": e.exitCode, "message": e.message}
            for e in seen.extensions
        ]
    return out
