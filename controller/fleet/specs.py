"""From the scale set model to what a host agent is sent: the wire
:class:`~hostagent.contract.instancespec.InstanceSpec` of one instance."""

from __future__ import annotations

from pydantic import ValidationError

from controller.model.scaleset import ScaleSetModel
from hostagent.contract import instancespec, names


class SpecError(ValueError):
    """The model and arguments do not make a valid agent spec. The message
    names the wire field and the reason, never a value."""


def instance_spec(
    model: ScaleSetModel,
    instance_name: str,
    image: instancespec.ImageSpec,
    computer_name: str,
    *,
    operation_id: str | None = None,
) -> instancespec.InstanceSpec:
    """The spec that creates (or converges) instance ``instance_name`` of
    ``model`` on the resolved ``image`` with host name ``computer_name``.

    ``image`` is the caller's: it need not be the model's image reference (an
    instance kept on its previous image in Manual mode, a rollback target).
    """
    names.check_instance_name(instance_name)
    if not instance_name.startswith(model.name + "-"):
        raise SpecError(
            f"instance name {instance_name!r} does not belong to scale set {model.name!r}"
            f" (expected '{model.name}-<instance id>')"
        )
    os_profile = model.os_profile
    try:
        # One model_validate of the whole spec, so an error's location is
        # complete (osProfile.computerName rather than computerName).
        return instancespec.InstanceSpec.model_validate(
            {
                "image": image,
                "vcpus": model.vcpus,
                "memoryMB": model.memory_mb,
                "dataDisks": model.data_disks,
                "osProfile": {
                    "computerName": computer_name,
                    "adminUsername": os_profile.adminUsername,
                    "sshPublicKeys": os_profile.sshPublicKeys,
                    "customData": os_profile.customData,
                },
                "extensions": model.extensions,
                "healthProbe": model.health_probe,
                "operationId": operation_id,
            }
        )
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        # pydantic's msg never holds the input (str(e) does).
        reason = first["msg"].removeprefix("Value error, ")
    # Raised outside the except block, so the ValidationError (which shows the
    # input, customData included) is not attached as __context__.
    raise SpecError(f"{where}: {reason}")
