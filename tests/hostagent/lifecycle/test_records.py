"""The stored spec and the owned domain of an instance (libvirt test:///default)."""

from __future__ import annotations

import pytest

from hostagent.contract import instancespec
from hostagent.lifecycle.records import NotFound, generation_numbers, meta
from tests.hostagent.lifecycle.test_agent_lifecycle import (
    Env,
    create,
    env,
    foreign_domain_xml,
    name,
    spec,
)

__all__ = ["env"]  # the fixture, used by name


def test_the_stored_spec_drops_its_operation_id_and_is_private(env: Env) -> None:
    records = env.agent.instances.records
    n = name()
    assert records.spec(n) is None
    given = instancespec.InstanceSpec(**spec(env), operationId="op-kept-out")
    records.save_spec(n, given)
    stored = records.spec(n)
    assert stored == given.model_copy(update={"operationId": None})
    assert env.agent.layout.spec(n).stat().st_mode & 0o777 == 0o600


def test_domain_is_not_found_unless_this_agent_owns_it(env: Env) -> None:
    records = env.agent.instances.records
    with pytest.raises(NotFound, match="does not exist on this host"):
        records.domain(name())
    foreign = name()
    env.agent.hv.conn().defineXML(foreign_domain_xml(foreign))
    try:
        with pytest.raises(NotFound) as e:
            records.domain(foreign)
        assert e.value.code == "NotFound"
    finally:
        env.agent.hv.conn().lookupByName(foreign).undefine()


def test_generation_numbers_are_the_current_and_the_previous(env: Env) -> None:
    n = name()
    create(env, n)
    m = meta(env.agent.instances.records.domain(n))
    assert generation_numbers(m) == {1}
    env.agent.instances.reimage("op-reimage", n, env.images["2"])
    m = meta(env.agent.instances.records.domain(n))
    assert (m.current.number, m.previous.number if m.previous else None) == (2, 1)
    assert generation_numbers(m) == {1, 2}
