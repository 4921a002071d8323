"""The agent's files that hold secrets are readable by root (and, through
libvirt, the guest's QEMU process) only: the instance spec and the seed
(customData, protectedSettings, the guest's report token) and the key the
guest tokens derive from."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostagent.guest import seed
from tests.fixtures import storage_root
from tests.security.agentenv import AgentEnv, agent_env


@pytest.fixture
def agent() -> Iterator[AgentEnv]:
    with storage_root("sec-rest") as root, agent_env(root) as env:
        env.create("rest-0", osProfile={"computerName": "rest", "customData": "U0VDUkVU"})
        yield env


def _others_can_read(p: Path) -> bool:
    return bool(stat.S_IMODE(p.stat().st_mode) & 0o044)


def test_the_spec_the_disks_and_the_guest_key_are_private(agent: AgentEnv) -> None:
    storage = agent.root / "agent"
    instance_dir = storage / "instances" / "rest-0"
    disks = list(instance_dir.glob("*.qcow2"))
    assert len(disks) >= 2, disks  # the OS disk and the data disk
    for p in (instance_dir / "spec.json", storage / "guest-secret", *disks):
        assert not _others_can_read(p), p


def test_the_seed_is_private(agent: AgentEnv) -> None:
    instance_dir = agent.root / "agent" / "instances" / "rest-0"
    seeds = list(instance_dir.glob("seed-*.iso"))
    assert seeds
    assert not any(_others_can_read(p) for p in seeds)
    assert {_mode(p) for p in seeds} == {0o600}
    # the QEMU user traverses to the disks; nobody lists an instance's files
    assert _mode(instance_dir) == 0o711
    assert _mode(instance_dir.parent) == 0o711


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_an_older_agents_seeds_and_directories_are_tightened_at_start() -> None:
    """An agent of before 0600 seeds left them 0644 in 0755 directories (and
    maybe a crashed write's .part): the next agent start tightens them, and
    leaves the disks' modes to what libvirt needs."""
    with storage_root("sec-old") as root:
        instances = root / "agent" / "instances"
        old = instances / "old-0"
        old.mkdir(parents=True)
        seed.write_seed_iso(old / "seed-1.iso", _OLD_SEED)
        seed.write_seed_iso(old / "seed-2.iso", _OLD_SEED)
        (old / "seed-2.iso").rename(old / "seed-2.iso.part")
        (old / "os-1.qcow2").write_bytes(b"not a secret")
        loose = [old / "seed-1.iso", old / "seed-2.iso.part", old / "os-1.qcow2"]
        for p in loose:
            p.chmod(0o644)
        for d in (instances, old):
            d.chmod(0o755)

        with agent_env(root):
            assert _mode(instances) == 0o711
            assert _mode(old) == 0o711
            assert _mode(old / "seed-1.iso") == 0o600
            assert _mode(old / "seed-2.iso.part") == 0o600
            assert _mode(old / "os-1.qcow2") == 0o600  # a disk: the guest's data
            assert seed.read_seed_iso(old / "seed-1.iso") == _OLD_SEED


_OLD_SEED = seed.SeedContent(
    meta_data=seed.meta_data("i-old-0-g1-abcdef", "old"),
    user_data="#!/bin/sh\nKVMSS_TOKEN_B64='c2VjcmV0'\n",
    network_config="version: 2\n",
)
