"""Records for the store's tests, each valid as it is."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from controller.store.facade import (
    ImageRecord,
    ImageRef,
    InstanceRecord,
    UpgradeRecord,
    instance_name,
    new_upgrade_id,
)
from controller.store.states import (
    ProvisioningState,
    StartedBy,
    UpgradeStatus,
)

DAY = 86400.0
SHA = "ab" * 32
TARGET = ImageRef("kvmss", "tiny", "busybox", "1.2.3")


def an_image(version: str = "1.0.0", **kw: object) -> ImageRecord:
    rec = ImageRecord(
        publisher="kvmss",
        offer="tiny",
        sku="busybox",
        version=version,
        sha256=SHA,
        size_bytes=1 << 20,
        virtual_size=1 << 30,
        path=Path(f"/blobs/{SHA}.qcow2"),
        published_at=1000.0,
    )
    return dataclasses.replace(rec, **kw)  # type: ignore[arg-type]


def an_instance(scale_set: str, instance_id: str, **kw: object) -> InstanceRecord:
    rec = InstanceRecord(
        scale_set=scale_set,
        instance_id=instance_id,
        name=instance_name(scale_set, instance_id),
        host="host1",
        update_domain=int(instance_id) % 5,
        fault_domain=0,
        image_version="1.0.0",
        state=ProvisioningState.CREATING,
    )
    return dataclasses.replace(rec, **kw)  # type: ignore[arg-type]


def an_upgrade(scale_set: str, start: float, **kw: object) -> UpgradeRecord:
    rec = UpgradeRecord(
        id=new_upgrade_id(),
        scale_set=scale_set,
        started_by=StartedBy.PLATFORM,
        target=TARGET,
        status=UpgradeStatus.ROLLING_FORWARD,
        start_time=start,
        policy={"maxBatchInstancePercent": 20, "pauseTimeBetweenBatches": "PT0S"},
        batches=[["0", "1"], ["2"]],
    )
    return dataclasses.replace(rec, **kw)  # type: ignore[arg-type]
