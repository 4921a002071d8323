"""The routes that need no token (docs/design.md "Processes"): ``/healthz``
for a supervisor and ``/metrics`` in Prometheus' text format."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from controller.api.responses import Health, errors, send
from controller.service.controller import Controller

_OK = Health(status="ok")
# Documented by hand: with PlainTextResponse as the route's response class,
# FastAPI would document the JSON errors as text too.
_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus' text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def router(ctl: Controller) -> APIRouter:
    r = APIRouter(tags=["monitoring"])

    @r.get("/healthz", response_model=Health, responses=errors())
    async def healthz() -> Response:
        """Answers while the controller serves."""
        return send(_OK)

    @r.get("/metrics", response_class=Response, responses={**_TEXT, **errors()})
    def metrics() -> PlainTextResponse:
        """Scale sets, instances by scale set, rolling upgrades running."""
        return PlainTextResponse(_metrics(ctl))

    return r


def _metrics(ctl: Controller) -> str:
    gauges = ctl.gauges()
    lines = [
        "# HELP kvmss_scale_sets Scale sets defined.",
        "# TYPE kvmss_scale_sets gauge",
        f"kvmss_scale_sets {len(gauges.instances)}",
        "# HELP kvmss_instances Instances by scale set.",
        "# TYPE kvmss_instances gauge",
    ]
    for name, count in gauges.instances.items():
        lines.append(f'kvmss_instances{{scale_set="{name}"}} {count}')
    lines += [
        "# HELP kvmss_rolling_upgrades_running Rolling upgrades in progress.",
        "# TYPE kvmss_rolling_upgrades_running gauge",
        f"kvmss_rolling_upgrades_running {gauges.rolling_upgrades}",
    ]
    return "\n".join(lines) + "\n"
