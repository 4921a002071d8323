"""The agent's API refusing bad input with a clear 4xx and changing nothing,
and a busy instance's 409; against test:///default like test_agent_lifecycle,
whose fixture and helpers it uses."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostagent.daemon.api import create_app
from kvmss.base import qemuimg
from tests.fixtures import make_qcow2, sha256_file
from tests.hostagent.lifecycle.test_agent_lifecycle import AUTH, Env, create, env, name, spec, wait

__all__ = ["env"]  # the fixture, used by name


# -- bad input: a clear 4xx and nothing changed ----------------------------------


def _nothing_for(env: Env, n: str) -> None:
    assert env.agent.hv.get(n) is None
    assert not env.agent.layout.instance_dir(n).exists()


@pytest.mark.parametrize(
    "path",
    ["/v1/instances/Bad_Name", "/v1/instances/..%2Fetc", "/v1/instances/a%00b", "/v1/instances/-x"],
)
def test_malformed_names_are_400(env: Env, path: str) -> None:
    r = env.api.put(path, json=spec(env), headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "InvalidName"
    assert "instance name" in r.json()["error"]["message"]


def test_unknown_instance_is_404(env: Env) -> None:
    for method, path in [
        ("GET", "/v1/instances/nope"),
        ("POST", "/v1/instances/nope/rollback"),
        ("POST", "/v1/instances/nope/commit"),
    ]:
        r = env.api.request(method, path, headers=AUTH, json={})
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "NotFound"


def test_extension_cycle_is_400_and_names_the_field(env: Env) -> None:
    n = name()
    exts = [
        {"name": "a", "settings": {"commandToExecute": "true"}, "provisionAfterExtensions": ["b"]},
        {"name": "b", "settings": {"commandToExecute": "true"}, "provisionAfterExtensions": ["a"]},
    ]
    r = env.api.put(f"/v1/instances/{n}", json=spec(env, extensions=exts), headers=AUTH)
    assert r.status_code == 400
    assert "provisionAfterExtensions" in r.json()["error"]["message"]
    _nothing_for(env, n)


def test_field_errors_name_the_field(env: Env) -> None:
    n = name()
    r = env.api.put(
        f"/v1/instances/{n}", json=spec(env, dataDisks=[{"lun": 99, "diskSizeGB": 1}]), headers=AUTH
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("dataDisks.0.lun")
    _nothing_for(env, n)


@pytest.mark.parametrize("field", ["settings", "protectedSettings"])
def test_extension_settings_nested_too_deeply_are_400(env: Env, field: str) -> None:
    # regression: 300 levels were accepted (202) and the create then crashed
    # storing the spec (pydantic's serialisation depth): an InternalError
    n = name()
    deep: Any = "x"
    for _ in range(300):
        deep = {"a": deep}
    ext = {"name": "app", "settings": {"commandToExecute": "true"}, field: {"deep": deep}}
    r = env.api.put(f"/v1/instances/{n}", json=spec(env, extensions=[ext]), headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        f"extensions.0.{field}: must not nest deeper than 64 levels"
    )
    _nothing_for(env, n)


def _bad_image(env: Env, kind: str) -> dict[str, Any]:
    served = env.root / "served"
    good = env.images["1"]
    if kind == "sha":
        return good.model_copy(update={"sha256": "0" * 64}).model_dump(mode="json")
    p = served / f"bad-{kind}.qcow2"
    if kind == "backing":
        qemuimg.create_overlay(p, served / "base-1.qcow2")
    elif kind == "truncated":
        make_qcow2(p, b"x" * 65536 * 3, size_mib=16)
        with p.open("r+b") as f:
            f.truncate(p.stat().st_size // 2)
    sha = sha256_file(p)
    return good.model_copy(update={"sha256": sha, "url": env.files.url(p.name)}).model_dump(
        mode="json"
    )


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("sha", "ImageSha256Mismatch"),
        ("backing", "ImageBackingFile"),
        ("truncated", "ImageCheckFailed"),
    ],
)
def test_bad_images_are_422_and_touch_nothing(env: Env, kind: str, code: str) -> None:
    n = name()
    body = spec(env)
    body["image"] = _bad_image(env, kind)
    r = env.api.put(f"/v1/instances/{n}", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    _nothing_for(env, n)
    cached = sorted(p.name for p in env.agent.layout.cache_dir.iterdir())
    assert all(not c.endswith(".part") for c in cached)
    # an existing instance asked to reimage to it is untouched too
    m = name()
    view = create(env, m)
    r = env.api.post(f"/v1/instances/{m}/reimage", json={"image": body["image"]}, headers=AUTH)
    assert r.status_code == 422
    after = env.api.get(f"/v1/instances/{m}", headers=AUTH).json()
    assert after["current"] == view["current"] and after["previous"] is None


def test_management_api_refuses_peers_on_the_guest_subnet(env: Env) -> None:
    from_guest = TestClient(create_app(env.agent), client=("10.250.0.7", 40000))
    r = from_guest.get("/v1/instances", headers=AUTH)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "Forbidden"
    from_host = TestClient(create_app(env.agent), client=("127.0.0.1", 40000))
    assert from_host.get("/v1/instances", headers=AUTH).status_code == 200


def test_busy_instance_is_409(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    n = name()
    create(env, n)
    gate = threading.Event()
    real_stop = env.agent.hv.stop

    def slow_stop(nm: str, timeout: float) -> bool:
        gate.wait(10)
        return real_stop(nm, timeout)

    monkeypatch.setattr(env.agent.hv, "stop", slow_stop)
    body = {"image": env.images["2"].model_dump(mode="json", exclude_none=True)}
    r1 = env.api.post(f"/v1/instances/{n}/reimage", json=body, headers=AUTH)
    assert r1.status_code == 202
    r2 = env.api.post(f"/v1/instances/{n}/commit", headers=AUTH)
    assert r2.status_code == 409
    assert r2.json()["error"]["code"] == "Conflict"
    gate.set()
    assert wait(env, r1)["status"] == "Succeeded"
