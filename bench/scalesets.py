"""Scale set bodies as the benchmarks and the tests send them: Rolling
upgrades gated on an HTTP health probe, CustomScript extensions, 1 GiB data
disks. What they vary is an argument; the rest is written here once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def image_reference(
    publisher: str, offer: str, sku: str, version: str = "latest"
) -> dict[str, str]:
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}


def custom_script(name: str, command: str, after: Sequence[str] = ()) -> dict[str, Any]:
    """An extension running ``command``, after the extensions named ``after``."""
    props: dict[str, Any] = {"type": "CustomScript", "settings": {"commandToExecute": command}}
    if after:
        props["provisionAfterExtensions"] = list(after)
    return {"name": name, "properties": props}


def http_probe(*, interval: int, probes: int, port: int = 8080) -> dict[str, Any]:
    """``GET /health`` every ``interval`` seconds, ``probes`` passes in a row."""
    return {
        "protocol": "Http",
        "port": port,
        "requestPath": "/health",
        "intervalInSeconds": interval,
        "numberOfProbes": probes,
    }


def scale_set_body(
    capacity: int,
    image: tuple[str, str, str],
    *,
    prefix: str,
    probe: dict[str, Any],
    extensions: Sequence[dict[str, Any]],
    sku_name: str = "tiny",
    memory_mb: int = 192,
    data_disks: int = 0,
    health_timeout: str = "PT60S",
    automatic: bool = True,
    max_unhealthy_percent: int = 20,
    max_unhealthy_upgraded_percent: int = 20,
) -> dict[str, Any]:
    """``capacity`` instances of ``latest`` of ``image`` (publisher, offer,
    sku), upgraded in batches of 20 % without pause, automatically on publish
    unless ``automatic`` is False."""
    storage: dict[str, Any] = {"imageReference": image_reference(*image)}
    if data_disks:
        storage["dataDisks"] = [{"lun": lun, "diskSizeGB": 1} for lun in range(data_disks)]
    return {
        "sku": {"name": sku_name, "capacity": capacity},
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {
                    "maxBatchInstancePercent": 20,
                    "maxUnhealthyInstancePercent": max_unhealthy_percent,
                    "maxUnhealthyUpgradedInstancePercent": max_unhealthy_upgraded_percent,
                    "pauseTimeBetweenBatches": "PT0S",
                    "healthTimeout": health_timeout,
                },
                "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": automatic},
            },
            "virtualMachineProfile": {
                "hardwareProfile": {"vCPUs": 1, "memoryMB": memory_mb},
                "storageProfile": storage,
                "osProfile": {"computerNamePrefix": prefix},
                "networkProfile": {"healthProbe": probe},
                "extensionProfile": {"extensions": list(extensions)},
            },
        },
    }
