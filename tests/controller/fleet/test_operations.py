"""Waiting for an agent's operation, on a fake clock."""

from __future__ import annotations

from typing import cast

from controller.base.settings import Settings
from controller.fleet.agents import AgentPort
from controller.fleet.operations import OperationWaiter
from hostagent.contract import operations
from hostagent.contract.client import AgentUnreachable
from kvmss.base.clock import FakeClock


def _op(status: str) -> operations.Operation:
    return operations.Operation.model_validate(
        {"id": "op-1", "kind": "reimage", "instance": "web-0", "status": status, "startTime": "t"}
    )


class Agents:
    """Answers polls from a script; an exception in it is raised."""

    def __init__(self, *answers: operations.Operation | Exception) -> None:
        self.answers = list(answers)
        self.polls = 0

    def operation(self, host: str, op_id: str) -> operations.Operation:
        self.polls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


SETTINGS = Settings("http://c", b"s", poll_seconds=2.0, op_timeout_seconds=10.0)


def _waiter(agents: Agents, clock: FakeClock, stop: bool = False) -> OperationWaiter:
    return OperationWaiter(cast(AgentPort, agents), clock, SETTINGS, lambda: stop)


def test_an_ended_operation_is_not_polled() -> None:
    agents = Agents()
    assert _waiter(agents, FakeClock()).wait("h", _op("Succeeded")).status == "Succeeded"
    assert agents.polls == 0


def test_polled_every_interval_through_an_unanswered_poll_until_it_ends() -> None:
    clock = FakeClock()
    agents = Agents(_op("InProgress"), AgentUnreachable("h", "down"), _op("Failed"))
    assert _waiter(agents, clock).wait("h", _op("InProgress")).status == "Failed"
    assert agents.polls == 3 and clock.monotonic() == 6.0


def test_given_up_at_the_timeout_or_when_the_controller_stops() -> None:
    clock = FakeClock()
    agents = Agents(*[_op("InProgress")] * 10)
    assert _waiter(agents, clock).wait("h", _op("InProgress")).status == "InProgress"
    assert clock.monotonic() == 10.0 and agents.polls == 5
    agents = Agents()
    assert _waiter(agents, clock, stop=True).wait("h", _op("InProgress")).status == "InProgress"
    assert agents.polls == 0
