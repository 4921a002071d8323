"""Rolling upgrades (docs/design.md "Rolling upgrade rules"): starting one by
hand (rule 9), the latest one's status, cancelling it (rule 7), the dry-run
plan, a manual upgrade of named instances, and the history (rule 11)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Response, params

from controller.api.inputs import ManualUpgradeIn
from controller.api.responses import errors, send
from controller.api.upgradestatus import (
    CancelAccepted,
    RollingUpgradeStatusInfo,
    UpgradeAccepted,
    UpgradePlan,
    VirtualMachineScaleSetListOSUpgradeHistory,
)
from controller.service.controller import Controller
from controller.store.facade import UpgradeRecord

_CANCEL_REQUESTED = CancelAccepted(status="CancelRequested")


def router(ctl: Controller, authed: Sequence[params.Depends]) -> APIRouter:
    r = APIRouter(prefix="/v1/scaleSets/{name}", dependencies=authed, tags=["upgrades"])

    @r.post(
        "/osRollingUpgrade",
        status_code=202,
        response_model=UpgradeAccepted,
        responses=errors(401, 404, 409),
    )
    def os_rolling_upgrade(name: str) -> Response:
        """To the latest version, started by the user: no automatic rollback."""
        up = ctl.start_upgrade(name, "User")
        return send(_accepted(up), 202)

    @r.get(
        "/rollingUpgrades/latest",
        response_model=RollingUpgradeStatusInfo,
        responses=errors(401, 404),
    )
    async def latest(name: str) -> Response:
        return send(ctl.latest_status(name))

    @r.post(
        "/rollingUpgrades/cancel",
        status_code=202,
        response_model=CancelAccepted,
        responses=errors(401, 404, 409),
    )
    def cancel(name: str) -> Response:
        ctl.cancel(name)
        return send(_CANCEL_REQUESTED, 202)

    @r.get("/rollingUpgrades/plan", response_model=UpgradePlan, responses=errors(401, 404))
    def plan(name: str) -> Response:
        return send(ctl.plan(name))

    @r.post(
        "/manualUpgrade",
        status_code=202,
        response_model=UpgradeAccepted,
        responses=errors(400, 401, 404, 409),
    )
    def manual_upgrade(name: str, body: ManualUpgradeIn) -> Response:
        """The named instances, and every instance of the named update
        domains, to the model's image, all at once, in any mode."""
        up = ctl.manual_upgrade(name, body.instanceIds, body.updateDomains)
        return send(_accepted(up), 202)

    @r.get(
        "/osUpgradeHistory",
        response_model=VirtualMachineScaleSetListOSUpgradeHistory,
        responses=errors(401, 404),
    )
    async def history(name: str) -> Response:
        """The last 5 upgrades within 60 days, newest first."""
        return send(ctl.history(name))

    return r


def _accepted(up: UpgradeRecord) -> UpgradeAccepted:
    return UpgradeAccepted.model_validate({"upgradeId": up.id, "status": up.status})
