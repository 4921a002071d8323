"""The committed example models: each is a scale set the controller accepts,
and each shows what its name says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.model.scaleset import ScaleSetModel, parse_scale_set

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ["demo", "tcp-probe", "sequenced-extensions", "manual-mode"]


def load(name: str) -> ScaleSetModel:
    body: Any = json.loads((EXAMPLES / f"{name}.json").read_text())
    return parse_scale_set(name, body)


def test_every_example_is_listed_here() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_controller_accepts_the_example(name: str) -> None:
    model = load(name)
    assert model.capacity >= 1
    ref = model.image_reference
    assert (ref.publisher, ref.offer, ref.sku) == ("kvmss", "tiny", "1")


def test_demo_is_six_instances_rolling_with_automatic_os_upgrades() -> None:
    m = load("demo")
    assert m.capacity == 6
    assert m.mode == "Rolling"
    assert m.automatic.enable
    assert m.image_reference.version == "latest"
    assert m.rolling.health_timeout_seconds == 120
    probe = m.health_probe
    assert probe is not None
    assert (probe.protocol, probe.port, probe.requestPath) == ("Http", 8080, "/health")
    assert [(d.lun, d.diskSizeGB) for d in m.data_disks] == [(0, 1)]
    [ext] = m.extensions
    assert "busybox httpd -p 8080" in json.dumps(ext.model_dump())
    assert "per-boot" in json.dumps(ext.model_dump())


def test_tcp_probe_example_probes_tcp() -> None:
    probe = load("tcp-probe").health_probe
    assert probe is not None
    assert (probe.protocol, probe.port) == ("Tcp", 8080)


def test_sequenced_extensions_example_orders_its_extensions() -> None:
    exts = load("sequenced-extensions").extensions
    assert len(exts) == 2
    by_name = {e.name: e for e in exts}
    later = [e for e in exts if e.provisionAfterExtensions]
    assert len(later) == 1
    assert all(dep in by_name for dep in later[0].provisionAfterExtensions)


def test_manual_mode_example_waits_for_manual_upgrade() -> None:
    m = load("manual-mode")
    assert m.mode == "Manual"
    assert not m.automatic.enable
    assert m.image_reference.version != "latest"
