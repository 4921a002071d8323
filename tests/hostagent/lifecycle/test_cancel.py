"""POST /v1/operations/{id}/cancel: an operation that has not reached the
agent yet never runs once cancelled, even when its request arrives while the
cancel is answered (a SIGSTOPped agent resumed with a reimage queued, the
controller having given it up). Real agent on libvirt's test:///default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hostagent.contract import instancespec
from tests.hostagent.lifecycle.test_agent_lifecycle import AUTH, Env, create, env, name, wait

__all__ = ["env"]  # the fixture, used by name


def reimage_body(env: Env) -> dict[str, Any]:
    return {"image": env.images["2"].model_dump(mode="json", exclude_none=True)}


def cancel(env: Env, op_id: str, instance: str, kind: str = "reimage") -> Any:
    body = {"kind": kind, "instance": instance}
    return env.api.post(f"/v1/operations/{op_id}/cancel", json=body, headers=AUTH)


def generation(env: Env, n: str) -> int:
    return int(env.api.get(f"/v1/instances/{n}", headers=AUTH).json()["current"]["generation"])


def test_a_reimage_cancelled_before_it_arrives_never_runs(env: Env) -> None:
    n = name()
    create(env, n)
    r = cancel(env, "late-reimage-1", n)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Failed" and r.json()["error"]["code"] == "Cancelled"
    body = {**reimage_body(env), "operationId": "late-reimage-1"}
    op = wait(env, env.api.post(f"/v1/instances/{n}/reimage", json=body, headers=AUTH))
    assert op["status"] == "Failed" and op["error"]["code"] == "Cancelled", op
    assert generation(env, n) == 1
    assert not env.agent.layout.os_disk(n, 2).exists()
    # a new reimage (another id) still runs
    op = wait(env, env.api.post(f"/v1/instances/{n}/reimage", json=reimage_body(env), headers=AUTH))
    assert op["status"] == "Succeeded", op
    assert generation(env, n) == 2


def test_a_cancel_answered_while_the_reimage_fetches_its_image_wins(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is in its handler (fetching the image) when the cancel
    comes: the handler then finds the cancelled record and does nothing."""
    n = name()
    create(env, n)
    builder = env.agent.instances.builder
    fetch = builder.fetch
    answers: list[Any] = []

    def fetch_then_cancel(image: instancespec.ImageSpec) -> tuple[Path, Path | None, Path | None]:
        got = fetch(image)
        if not answers:
            answers.append(cancel(env, "racing-reimage", n))
        return got

    monkeypatch.setattr(builder, "fetch", fetch_then_cancel)
    body = {**reimage_body(env), "operationId": "racing-reimage"}
    op = wait(env, env.api.post(f"/v1/instances/{n}/reimage", json=body, headers=AUTH))
    assert answers and answers[0].json()["error"]["code"] == "Cancelled", answers
    assert op["status"] == "Failed" and op["error"]["code"] == "Cancelled", op
    assert generation(env, n) == 1


def test_a_cancel_of_a_known_operation_changes_nothing(env: Env) -> None:
    n = name()
    create(env, n)
    body = {**reimage_body(env), "operationId": "done-reimage"}
    done = wait(env, env.api.post(f"/v1/instances/{n}/reimage", json=body, headers=AUTH))
    assert done["status"] == "Succeeded", done
    r = cancel(env, "done-reimage", n)
    assert r.status_code == 200 and r.json() == done, r.text
    assert generation(env, n) == 2
    # the same id as another kind or instance is a conflict, and records nothing
    assert cancel(env, "done-reimage", n, kind="rollback").status_code == 409
    assert cancel(env, "done-reimage", name()).status_code == 409
    assert env.api.get("/v1/operations/done-reimage", headers=AUTH).json() == done


@pytest.mark.parametrize(
    ("op_id", "body", "field"),
    [
        ("bad id!", {"kind": "reimage", "instance": "vm-a"}, "operationId"),
        ("ok-id", {"kind": "explode", "instance": "vm-a"}, "kind"),
        ("ok-id", {"kind": "reimage", "instance": "../etc"}, "instance"),
        ("ok-id", {"kind": "reimage"}, "instance"),
    ],
)
def test_bad_cancels_are_400_and_name_the_field(
    env: Env, op_id: str, body: dict[str, Any], field: str
) -> None:
    r = env.api.post(f"/v1/operations/{op_id}/cancel", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert field in r.text
    assert env.api.get("/v1/operations/ok-id", headers=AUTH).status_code == 404
    assert env.api.post("/v1/operations/ok-id/cancel", json=body).status_code == 401
