"""Create and converge, called directly (libvirt test:///default)."""

from __future__ import annotations

from typing import Any

import pytest

from hostagent.contract import instancespec
from hostagent.disks.imagecache import ImageRejected
from hostagent.domxml.metadata import Generation
from hostagent.hypervisor.virt import HypervisorError
from hostagent.lifecycle.operations import OperationFailed
from hostagent.lifecycle.records import meta
from kvmss.base import qemuimg
from tests.hostagent.lifecycle.test_agent_lifecycle import Env, create, env, name, spec

__all__ = ["env"]  # the fixture, used by name


def _spec(env: Env, **kw: Any) -> instancespec.InstanceSpec:
    return instancespec.InstanceSpec(**spec(env, **kw))


def test_create_journals_its_address_before_it_builds_anything(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = name()
    creation, journal = env.agent.instances.creation, env.agent.instances.journal
    seen: list[tuple[str, str, bool]] = []
    build = creation.builder.build

    def recorded_first(nm: str, number: int, *a: Any) -> Generation:
        entry = journal.get(nm)
        assert entry is not None
        seen.append(
            (entry.step, str(entry.data["address"]), env.agent.layout.os_disk(nm, 1).exists())
        )
        return build(nm, number, *a)

    monkeypatch.setattr(creation.builder, "build", recorded_first)
    creation.create("op-create", n, _spec(env))
    m = meta(env.agent.instances.domain(n))
    assert seen == [("preparing", m.address, False)]
    done = journal.get(n)
    assert done is not None and done.step == "done"


def test_a_rejected_image_undoes_the_create_but_keeps_an_existing_data_disk(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = name()
    layout, creation = env.agent.layout, env.agent.instances.creation
    layout.make_instance_dir(n)
    kept = layout.data_disk(n, 0)
    qemuimg.create(kept, 1 << 30, fmt="qcow2")

    def rejected(*_a: Any) -> Generation:
        raise ImageRejected("Sha256Mismatch", "the image is not the one named")

    monkeypatch.setattr(creation.builder, "build", rejected)
    with pytest.raises(OperationFailed) as e:
        creation.create("op-create", n, _spec(env))
    assert e.value.code == "ImageSha256Mismatch"
    assert kept.exists()
    assert not layout.data_disk(n, 1).exists()
    assert not layout.spec(n).exists()
    assert env.agent.instances.journal.get(n) is None
    assert env.agent.hv.state(n) == "absent"


def test_a_domain_libvirt_refuses_undoes_the_create(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = name()
    layout, creation = env.agent.layout, env.agent.instances.creation

    def refused(_dom: object) -> None:
        raise HypervisorError("defining domain: refused")

    monkeypatch.setattr(creation.hv, "define", refused)
    with pytest.raises(OperationFailed) as e:
        creation.create("op-create", n, _spec(env))
    assert e.value.code == "DefineFailed"
    left = {p.name for p in layout.instance_dir(n).iterdir()}
    assert not left & {"os-1.qcow2", "seed-1.iso", "spec.json", "data-lun0.qcow2"}, left
    assert env.agent.instances.journal.get(n) is None


def test_converge_adds_data_disks_and_keeps_the_ones_there(env: Env) -> None:
    n = name()
    view = create(env, n)
    lun0 = env.agent.layout.data_disk(n, 0)
    before = lun0.read_bytes()
    disks = [{"lun": 0, "diskSizeGB": 1}, {"lun": 3, "diskSizeGB": 1}]
    dom = env.agent.instances.domain(n)
    env.agent.instances.creation.converge(dom, _spec(env, dataDisks=disks, vcpus=2))
    after = env.agent.instances.domain(n)
    assert [d.lun for d in meta(after).data_disks] == [0, 1, 3]  # lun 1 is never removed
    assert env.agent.layout.data_disk(n, 3).exists()
    assert after.vcpus == 2
    assert meta(after).current == meta(dom).current
    assert lun0.read_bytes() == before
    assert view["current"]["generation"] == 1
