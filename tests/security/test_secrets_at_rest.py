"""The agent's files that hold secrets are readable by root (and, through
libvirt, the guest's QEMU process) only: the instance spec and the seed
(customData, protectedSettings, the guest's report token) and the key the
guest tokens derive from."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import storage_root
from tests.security.agentenv import AgentEnv, agent_env


@pytest.fixture
def agent() -> Iterator[AgentEnv]:
    with storage_root("sec-rest") as root, agent_env(root) as env:
        env.create("rest-0", osProfile={"computerName": "rest", "customData": "U0VDUkVU"})
        yield env


def _others_can_read(p: Path) -> bool:
    return bool(stat.S_IMODE(p.stat().st_mode) & 0o044)


def test_the_spec_and_the_guest_key_are_private(agent: AgentEnv) -> None:
    storage = agent.root / "agent"
    for p in (storage / "instances" / "rest-0" / "spec.json", storage / "guest-secret"):
        assert not _others_can_read(p), p


@pytest.mark.xfail(
    strict=True,
    reason="hostagent/seed.py write_seed_iso creates seeds mode 0644 in 0755 directories:"
    " every local user can read customData, protectedSettings and the guest token; fix: 0600"
    " (libvirt's dynamic_ownership gives it to the QEMU user while the guest runs; check with"
    " a guest test) and instance directories 0711",
)
def test_the_seed_is_private(agent: AgentEnv) -> None:
    seeds = list((agent.root / "agent" / "instances" / "rest-0").glob("seed-*.iso"))
    assert seeds
    assert not any(_others_can_read(p) for p in seeds)
