"""Start and stop, and the probe that follows them (libvirt test:///default)."""

from __future__ import annotations

import pytest

from hostagent.hypervisor.virt import HypervisorError
from hostagent.lifecycle.operations import OperationFailed
from hostagent.lifecycle.records import NotFound
from tests.hostagent.lifecycle.test_agent_lifecycle import Env, create, env, name

__all__ = ["env"]  # the fixture, used by name

PROBE = {"protocol": "Tcp", "port": 8080}


def test_stop_ends_the_probe_and_start_brings_it_back(env: Env) -> None:
    n = name()
    create(env, n, healthProbe=PROBE)
    power, prober = env.agent.instances.power, env.agent.prober
    assert n in prober.names()
    power.stop(n)
    assert not env.agent.hv.is_running(n)
    assert n not in prober.names()
    power.start(n)
    assert env.agent.hv.is_running(n)
    assert n in prober.names()


def test_an_instance_without_a_probe_is_not_probed(env: Env) -> None:
    n = name()
    create(env, n)
    env.agent.instances.power.start(n)
    assert n not in env.agent.prober.names()


def test_power_of_an_unknown_instance_is_not_found(env: Env) -> None:
    with pytest.raises(NotFound):
        env.agent.instances.power.start(name())
    with pytest.raises(NotFound):
        env.agent.instances.power.stop(name())


def test_libvirt_errors_are_start_and_stop_failures(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = name()
    create(env, n)
    power = env.agent.instances.power

    def refused(*_a: object) -> bool:
        raise HypervisorError("libvirt said no")

    monkeypatch.setattr(power.hv, "stop", refused)
    monkeypatch.setattr(power.hv, "start", refused)
    with pytest.raises(OperationFailed) as e:
        power.stop(n)
    assert (e.value.code, e.value.message) == ("StopFailed", "libvirt said no")
    with pytest.raises(OperationFailed) as e:
        power.start(n)
    assert e.value.code == "StartFailed"
